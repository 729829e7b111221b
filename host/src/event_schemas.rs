//! Event types' JSON Schemas: checked when they are registered, and against each published event's `data`.
//!
//! Publishing asks for its tenant's schemas on every request. Each node keeps, per tenant and for
//! [`SCHEMAS_TTL`], which of its types have a schema and that schema's digest (a tenant without schemas costs one
//! cache lookup a request), and compiled schemas by digest, compiled when an event of their type is first checked.
//! So a refresh reads names and digests, never the schemas' text again, and a tenant with many schemas pays to
//! compile only those it publishes. A registration through this node applies to its next publish; one through
//! another node sharing the database within the TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::api::validate::MAX_DATA_DEPTH;
use crate::model::schema_digest;
use crate::store::sql::ACTIVE_ENDPOINTS_TTL;
use crate::store::{Store, StoreResult};

/// As long as another node's endpoint changes take to apply here.
pub const SCHEMAS_TTL: Duration = ACTIVE_ENDPOINTS_TTL;
/// Largest schema, as the JSON text sent: schemas are compiled on every node, and kept by each.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
const TENANTS: u64 = 10_000;
/// Total bytes of schema text whose compiled form is kept.
const COMPILED_BYTES: u64 = 64 << 20;

/// Which of a tenant's event types have a schema: its digest, by type name.
pub type TenantSchemas = HashMap<String, String>;

/// A compiled schema, and the size of the text it came from (what the cache weighs it by).
struct Compiled {
    schema: Option<Arc<Schema>>,
    text_bytes: usize,
}

pub struct EventSchemas {
    tenants: Cache<String, Arc<TenantSchemas>>,
    /// Bumped by every registration through this node: a read that began before it may hold what it replaced.
    generation: AtomicU64,
    /// By digest; `schema` is None for a stored schema this version cannot compile.
    compiled: Cache<String, Arc<Compiled>>,
}

impl Default for EventSchemas {
    fn default() -> Self {
        EventSchemas {
            tenants: Cache::builder().max_capacity(TENANTS).time_to_live(SCHEMAS_TTL).build(),
            generation: AtomicU64::new(0),
            compiled: Cache::builder()
                .max_capacity(COMPILED_BYTES)
                .weigher(|_, compiled: &Arc<Compiled>| u32::try_from(compiled.text_bytes).unwrap_or(u32::MAX))
                .build(),
        }
    }
}

impl EventSchemas {
    /// Which of the tenant's types have a schema, read from `store` when not cached.
    pub async fn of_tenant(&self, store: &dyn Store, tenant_id: &str) -> StoreResult<Arc<TenantSchemas>> {
        if let Some(cached) = self.tenants.get(tenant_id) {
            return Ok(cached);
        }
        let read_at = self.generation.load(Ordering::Acquire);
        let schemas: Arc<TenantSchemas> = Arc::new(store.event_type_schemas(tenant_id).await?.into_iter().collect());
        if self.generation.load(Ordering::Acquire) == read_at {
            self.tenants.insert(tenant_id.to_string(), schemas.clone());
        }
        Ok(schemas)
    }

    /// The compiled schema of `event_type`, listed in [`EventSchemas::of_tenant`] with `digest`; its text is read
    /// from `store` the first time the digest is met. None for a type whose schema is gone by then, or that this
    /// version cannot compile (stored by another): its events are let through rather than refused for a fault
    /// that is not theirs.
    pub async fn validator(
        &self,
        store: &dyn Store,
        tenant_id: &str,
        event_type: &str,
        digest: &str,
    ) -> StoreResult<Option<Arc<Schema>>> {
        if let Some(compiled) = self.compiled.get(digest) {
            return Ok(compiled.schema.clone());
        }
        let Some(text) = store.get_event_type(tenant_id, event_type).await?.and_then(|t| t.schema) else {
            return Ok(None);
        };
        let validator = match serde_json::from_str(&text).map_err(|e| e.to_string()).and_then(|schema| compile(&schema))
        {
            Ok(validator) => Some(Arc::new(validator)),
            Err(problem) => {
                tracing::warn!(event_type, problem, "a stored event type schema does not compile; not checking it");
                None
            }
        };
        // Kept under the digest of the text read, which may be newer than the one listed.
        let compiled = Compiled { schema: validator.clone(), text_bytes: text.len() };
        self.compiled.insert(schema_digest(&text), Arc::new(compiled));
        Ok(validator)
    }

    /// Call once a registration that may have changed a schema of the tenant has committed.
    pub fn changed(&self, tenant_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.tenants.invalidate(tenant_id);
    }
}

/// A compiled schema.
#[derive(Debug)]
pub struct Schema {
    validator: jsonschema::Validator,
    /// What following its `$ref`s reaches (see [`reach`]): a bound on the subschemas a check visits for each place
    /// in the data.
    reach: usize,
    /// Its `pattern`s' and `patternProperties`' summed [`pattern_weight`]: matching a string costs about that times
    /// the string's length.
    patterns: usize,
}

/// Compiles a schema given at registration: a JSON object (or `true`/`false`) in any draft the `$schema` keyword
/// names, 2020-12 when it names none. A `$ref` may only point inside the schema: nothing is fetched. `pattern`s
/// are the `regex` crate's, which matches in linear time: a pattern needing backtracking (a backreference, a
/// lookaround) is refused rather than left to take exponential time on a publisher's string.
pub fn compile(schema: &Value) -> Result<Schema, String> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err("must be a JSON Schema: an object, or true or false".into());
    }
    references_are_pointers(schema)?;
    let reach = reach(schema, MAX_REACH);
    if reach > MAX_REACH {
        return Err(format!(
            "branches too much to check events against it in reasonable time: following its `$ref`s (recursion \
             unfolded {MAX_UNFOLD} times, as deep as data may nest) reaches more than {MAX_REACH} subschemas"
        ));
    }
    let validator = jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| format!("is not a valid JSON Schema: {}", shortened(&e.to_string())))?;
    Ok(Schema { validator, reach, patterns: patterns_weight(schema) })
}

/// Most JSON values a schema may reach, its `$ref`s followed (see [`reach`]). Checking an event visits at most
/// that many subschemas for each place in the data: the limit keeps out schemas whose checks take exponential
/// time, such as nested `anyOf`s whose branches share a `$ref` (1.4 KB of them took 38 s and 11 GB to refuse one
/// event), while a schema of [`MAX_SCHEMA_BYTES`] without `$ref`s, or one recursing once per level, stays far
/// below it.
const MAX_REACH: usize = 1_000_000;
/// Reach up to which a refusal names the violation: naming it keeps every failed branch's errors.
const LISTED_REACH: usize = 100_000;
/// The schema's reach times the data's bytes up to which a refusal names the violation.
const LISTED_WORK: usize = 1 << 21;
/// How often [`reach`] follows a `$ref` back into a schema it is within: data nests at most this deep.
const MAX_UNFOLD: usize = MAX_DATA_DEPTH;
/// Most `$ref`s [`reach`] follows one inside another, so that its recursion stays well within a thread's stack.
const MAX_REF_CHAIN: usize = 1_000;
/// Longest violation, or place, shown: a key of `data` may be as long as `data`.
const MAX_SHOWN_CHARS: usize = 200;

/// The summed [`pattern_weight`] of every `pattern` and `patternProperties` key in `schema`.
fn patterns_weight(schema: &Value) -> usize {
    match schema {
        Value::Object(members) => members.iter().fold(0, |sum: usize, (key, value)| {
            let own = match (key.as_str(), value) {
                ("pattern", Value::String(pattern)) => pattern_weight(pattern),
                ("patternProperties", Value::Object(patterns)) => {
                    patterns.keys().map(|pattern| pattern_weight(pattern)).fold(0, usize::saturating_add)
                }
                _ => 0,
            };
            sum.saturating_add(own).saturating_add(patterns_weight(value))
        }),
        Value::Array(items) => items.iter().map(patterns_weight).fold(0, usize::saturating_add),
        _ => 0,
    }
}

/// About how many states matching `pattern` keeps: a repetition counts its body as often as it may repeat
/// (`a[ab]{1000}c` weighs 1,002), so weight times the string's length bounds the matching's work.
fn pattern_weight(pattern: &str) -> usize {
    use regex_syntax::hir::{Hir, HirKind};
    fn weight(hir: &Hir) -> usize {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) | HirKind::Class(_) => 1,
            HirKind::Literal(literal) => literal.0.len().max(1),
            HirKind::Repetition(repetition) => {
                let times = repetition.max.unwrap_or(repetition.min).max(1);
                weight(&repetition.sub).saturating_mul(usize::try_from(times).unwrap_or(usize::MAX))
            }
            HirKind::Capture(capture) => weight(&capture.sub),
            HirKind::Concat(parts) | HirKind::Alternation(parts) => {
                parts.iter().map(weight).fold(0, usize::saturating_add)
            }
        }
    }
    // One that does not parse here is refused when the schema compiles.
    regex_syntax::Parser::new().parse(pattern).map_or(1, |hir| weight(&hir))
}

/// Refuses references [`reach`] could not follow, so that it never underestimates: every `$ref`, `$dynamicRef`
/// and `$recursiveRef` must be `#` or `#/…`, a JSON Pointer into the schema as written (no `%` escapes), and no
/// subschema may set its own base with `$id` (nor, under draft 4, `id`), which would make such a pointer mean
/// another place. Anchors and relative URIs are refused with them.
fn references_are_pointers(schema: &Value) -> Result<(), String> {
    let draft4 = schema.get("$schema").and_then(Value::as_str).is_some_and(|uri| uri.contains("draft-04"));
    fn walk(root: &Value, node: &Value, draft4: bool) -> Result<(), String> {
        match node {
            Value::Object(members) => {
                for (key, value) in members {
                    if matches!(key.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef") {
                        let resolves =
                            value.as_str().and_then(|reference| reference.strip_prefix('#')).is_some_and(|pointer| {
                                pointer.is_empty()
                                    || (pointer.starts_with('/')
                                        && !pointer.contains('%')
                                        && root.pointer(pointer).is_some())
                            });
                        if !resolves {
                            return Err(format!(
                                "`{key}`: {}: only `#` or a JSON Pointer to a place in this schema (`#/$defs/…`) may be \
                                 referenced",
                                shortened(&value.to_string())
                            ));
                        }
                    }
                    let sets_base = key == "$id" || (draft4 && key == "id");
                    if sets_base && value.is_string() && !std::ptr::eq(node, root) {
                        return Err(format!("`{key}` may only be set at the top level of the schema"));
                    }
                    walk(root, value, draft4)?;
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|item| walk(root, item, draft4)),
            _ => Ok(()),
        }
    }
    walk(schema, schema, draft4)
}

/// How many JSON values walking `schema` visits, up to `limit` + 1, following every `$ref` (and `$dynamicRef`,
/// `$recursiveRef`) to a place within it (`#…`), and one back into a schema it is already within at most
/// [`MAX_UNFOLD`] times. Keyword meanings are ignored: two references to one schema under different properties
/// count twice though no data reaches both, so this overestimates what a check costs, never underestimates it.
fn reach(schema: &Value, limit: usize) -> usize {
    fn walk<'a>(root: &'a Value, node: &'a Value, within: &mut Vec<*const Value>, left: &mut usize) -> bool {
        if *left == 0 {
            return true;
        }
        *left -= 1;
        match node {
            Value::Object(members) => members.iter().any(|(key, value)| {
                let target = matches!(key.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef")
                    .then(|| value.as_str().and_then(|reference| reference.strip_prefix('#')))
                    .flatten()
                    .and_then(|pointer| if pointer.is_empty() { Some(root) } else { root.pointer(pointer) });
                let Some(target) = target else { return walk(root, value, within, left) };
                // A chain this long counts as beyond the limit: the walk recurses once per reference.
                if within.len() >= MAX_REF_CHAIN {
                    *left = 0;
                    return true;
                }
                let target_id = target as *const Value;
                if within.iter().filter(|&&id| id == target_id).count() >= MAX_UNFOLD {
                    return false;
                }
                within.push(target_id);
                let beyond = walk(root, target, within, left);
                within.pop();
                beyond
            }),
            Value::Array(items) => items.iter().any(|item| walk(root, item, within, left)),
            _ => false,
        }
    }
    let mut left = limit + 1;
    walk(schema, schema, &mut Vec::new(), &mut left);
    limit + 1 - left
}

/// Checks an event's `data` against its type's schema. On failure, says where and why for the first violation,
/// naming its place in `data` by JSON Pointer; `data`'s values are not repeated (its keys may be, where a place
/// or an unexpected property is named). Runs as long as the schema makes it: see [`check_where_it_fits`].
pub fn check(schema: &Schema, data: &RawValue) -> Result<(), String> {
    let instance: Value = serde_json::from_str(data.get())
        .map_err(|e| format!("cannot be checked against its event type's schema: {e}"))?;
    if schema.validator.is_valid(&instance) {
        return Ok(());
    }
    // Naming the violation keeps the errors of every failed branch on the way to it (an `anyOf`'s, say): for a
    // schema that branches a lot, or a big one over big data, that took gigabytes.
    if schema.reach > LISTED_REACH || schema.reach.saturating_mul(data.get().len()) > LISTED_WORK {
        return Err("does not match its event type's schema (the violation is not named: the schema and the data \
                    are too big for that)"
            .into());
    }
    let Err(error) = schema.validator.validate(&instance) else {
        return Err("does not match its event type's schema".into());
    };
    let at = error.instance_path().as_str();
    let at = if at.is_empty() { "the top level".to_string() } else { shortened(at) };
    Err(format!("does not match its event type's schema: at {at}: {}", shortened(&error.masked().to_string())))
}

/// Up to this much work (the schema's [`reach`] times the data's bytes) a check runs in the request's task:
/// microseconds for a usual schema and event. More runs on a blocking thread, as the runtime's few threads serve
/// every tenant's requests; the hand-over costs tens of microseconds, more than a usual check.
const INLINE_WORK: usize = 1 << 20;
/// [`check`], on a blocking thread when the schema and the data could make it long: by the subschemas it visits,
/// or by its patterns, whose cost [`reach`] does not see (`a[ab]{1000}c` on a 350 KB key: 4.5 s).
pub async fn check_where_it_fits(schema: &Arc<Schema>, data: &RawValue) -> Result<(), String> {
    let bytes = data.get().len();
    if schema.reach.saturating_mul(bytes) <= INLINE_WORK && schema.patterns.saturating_mul(bytes) <= INLINE_WORK {
        return check(schema, data);
    }
    let (schema, data) = (schema.clone(), data.to_owned());
    tokio::task::spawn_blocking(move || check(&schema, &data))
        .await
        .unwrap_or_else(|e| Err(format!("could not be checked against its event type's schema: {e}")))
}

fn shortened(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(value: Value) -> Box<RawValue> {
        RawValue::from_string(value.to_string()).unwrap()
    }

    fn payment_schema() -> Schema {
        compile(&json!({
            "type": "object",
            "required": ["amount", "currency"],
            "properties": {
                "amount": {"type": "integer", "minimum": 1},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn data_that_matches_passes() {
        let schema = payment_schema();
        assert_eq!(check(&schema, &raw(json!({"amount": 5, "currency": "EUR", "extra": true}))), Ok(()));
    }

    #[test]
    fn violations_are_named_by_place_without_their_values() {
        let schema = payment_schema();
        let secret = "4111111111111111";
        let problem =
            check(&schema, &raw(json!({"amount": secret, "currency": "euro", "items": [{"sku": 1}, {}]}))).unwrap_err();
        assert!(problem.starts_with("does not match its event type's schema: "), "{problem}");
        assert!(problem.contains("at /amount: value is not of type \"integer\""), "{problem}");
        assert!(!problem.contains(secret) && !problem.contains("euro"), "values are not echoed: {problem}");
        let item = check(&schema, &raw(json!({"amount": 1, "currency": "EUR", "items": [{"sku": "a"}, {}]})));
        assert!(item.unwrap_err().contains("at /items/1: \"sku\" is a required property"));

        let missing = check(&schema, &raw(json!({}))).unwrap_err();
        assert!(missing.contains("at the top level: "), "{missing}");
        assert!(missing.contains("\"amount\" is a required property"), "{missing}");
    }

    #[test]
    fn patterns_match_in_linear_time_and_backtracking_ones_are_refused() {
        let nested = compile(&json!({"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}})).unwrap();
        let long = format!("{}!", "a".repeat(200_000));
        let started = std::time::Instant::now();
        assert!(check(&nested, &raw(json!({"s": long}))).is_err());
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        for pattern in [r"^(a+)+\1$", "(?=a)b", "(?<!a)b"] {
            let refused = compile(&json!({"pattern": pattern})).unwrap_err();
            assert!(refused.starts_with("is not a valid JSON Schema"), "{pattern}: {refused}");
        }
    }

    /// Nested `anyOf`s whose branches all lead to the same failing schema: telling valid from invalid visits
    /// every path, and listing the violations would keep every failed branch's errors (gigabytes at 22 levels).
    fn compile_branching(levels: usize) -> Result<Schema, String> {
        let mut defs = serde_json::Map::new();
        for i in 0..levels {
            let next = json!({"$ref": format!("#/$defs/a{}", i + 1)});
            defs.insert(format!("a{i}"), json!({"anyOf": [next.clone(), next]}));
        }
        defs.insert(format!("a{levels}"), json!(false));
        compile(&json!({"$defs": defs, "$ref": "#/$defs/a0"}))
    }

    fn branching_schema(levels: usize) -> Schema {
        compile_branching(levels).unwrap()
    }

    #[test]
    fn violations_are_not_named_when_the_schema_branches_too_much() {
        let small = check(&branching_schema(4), &raw(json!({"x": 1}))).unwrap_err();
        assert!(small.contains("at the top level"), "{small}");
        // 2^15 paths: under the limit, checked, but the violation is not named.
        let listed_not = check(&branching_schema(15), &raw(json!({"x": 1}))).unwrap_err();
        assert!(listed_not.contains("the violation is not named"), "{listed_not}");
        // 2^30 paths (11 s for one check): refused when registered, in no time.
        let started = std::time::Instant::now();
        let refused = compile_branching(30).unwrap_err();
        assert!(refused.starts_with("branches too much"), "{refused}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        // Two recursive branches per level of data: 2^64 paths through 64 levels of nested arrays.
        let branch = json!({"type": "array", "items": {"$ref": "#"}});
        assert!(compile(&json!({"anyOf": [branch.clone(), branch]})).unwrap_err().starts_with("branches too much"));
        // References the walk could not follow are refused, so it never underestimates.
        let anchored = json!({"$defs": {"a": {"$anchor": "a", "type": "string"}}, "$ref": "#a"});
        assert!(compile(&anchored).unwrap_err().starts_with("`$ref`"));
        assert!(compile(&json!({"$defs": {"a": true}, "$ref": "#/%24defs/a"})).unwrap_err().starts_with("`$ref`"));
        let relative = json!({"$id": "https://x.example/root", "$defs": {"a": {"$id": "a.json"}}, "$ref": "a.json"});
        assert!(compile(&relative).is_err());
        let relative_alone = json!({"$id": "https://x.example/root", "$ref": "other.json"});
        assert!(compile(&relative_alone).unwrap_err().starts_with("`$ref`"));
        let nested_base = json!({"$defs": {"a": {"$id": "a.json", "$ref": "#/$defs/b", "$defs": {"b": true}}}});
        assert!(compile(&nested_base).unwrap_err().contains("only be set at the top level"));
        assert!(compile(&json!({"$id": "https://x.example/root", "$defs": {"a": true}, "$ref": "#/$defs/a"})).is_ok());
        // A cycle of 800 references, unfolded: refused, not a stack overflow.
        let cycle: serde_json::Map<String, Value> =
            (0..800).map(|i| (format!("a{i}"), json!({"$ref": format!("#/$defs/a{}", (i + 1) % 800)}))).collect();
        assert!(compile(&json!({"$defs": cycle, "$ref": "#/$defs/a0"})).unwrap_err().starts_with("branches too much"));
        // A schema recursing once per level of data, and a big plain one, are listed.
        assert!(compile(&json!({"properties": {"children": {"items": {"$ref": "#"}}}})).unwrap().reach <= LISTED_REACH);
        let wide: serde_json::Map<String, Value> =
            (0..2_000).map(|i| (format!("field_{i}"), json!({"type": "integer", "minimum": 0}))).collect();
        assert!(compile(&json!({"properties": wide})).unwrap().reach <= LISTED_REACH);
    }

    #[test]
    fn long_places_and_violations_are_shortened() {
        let key = "k".repeat(5_000);
        let closed = compile(&json!({"properties": {"a": {}}, "additionalProperties": false})).unwrap();
        let problem = check(&closed, &raw(json!({ key.clone(): 1 }))).unwrap_err();
        assert!(problem.len() < 1_000, "{} chars", problem.len());
        assert!(problem.contains('…'), "{problem}");
        let out_of_range = check(&closed, &RawValue::from_string(r#"{"n": 1e999}"#.into()).unwrap()).unwrap_err();
        assert!(out_of_range.starts_with("cannot be checked against its event type's schema"), "{out_of_range}");
    }

    #[tokio::test]
    async fn checks_too_big_for_the_request_task_give_the_same_answers() {
        let schema = Arc::new(payment_schema());
        let small = raw(json!({"amount": "5", "currency": "EUR"}));
        let big = raw(json!({"amount": "5", "currency": "EUR", "note": "x".repeat(INLINE_WORK)}));
        assert_eq!((schema.patterns, compile(&json!({"type": "object"})).unwrap().patterns), (5, 0));
        assert_eq!(pattern_weight("a[ab]{1000}c"), 1_002);
        assert_eq!(patterns_weight(&json!({"patternProperties": {"^x": {}, "^y": {"pattern": "z{3}"}}})), 7);
        assert!(schema.reach.saturating_mul(small.get().len()) <= INLINE_WORK);
        assert!(schema.reach.saturating_mul(big.get().len()) > INLINE_WORK);
        assert_eq!(check_where_it_fits(&schema, &small).await, check(&schema, &small));
        let answer = check_where_it_fits(&schema, &big).await.unwrap_err();
        assert_eq!(answer, check(&schema, &big).unwrap_err());
        assert!(check_where_it_fits(&schema, &small).await.unwrap_err().contains("at /amount"));
    }

    #[test]
    fn only_the_first_violation_is_named_and_only_while_that_is_cheap() {
        let schema = compile(&json!({"additionalProperties": {"type": "string"}})).unwrap();
        let data = json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5});
        let problem = check(&schema, &raw(data)).unwrap_err();
        assert_eq!(problem.matches("at /").count(), 1, "{problem}");
        // Thousands of violations a place, over thousands of places: named, that took 37 s and 13 GB.
        let minimum: Vec<Value> = (0..3_850).map(|_| json!({"minimum": 1})).collect();
        let many = compile(&json!({"properties": {"a": {"items": {"allOf": minimum}}}})).unwrap();
        let started = std::time::Instant::now();
        let refused = check(&many, &raw(json!({"a": vec![0; 10_000]}))).unwrap_err();
        assert!(refused.contains("the violation is not named"), "{refused}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(check(&many, &raw(json!({"a": [0]}))).unwrap_err().contains("at /a/0: "));
    }

    #[test]
    fn schemas_that_do_not_compile_are_refused() {
        assert!(compile(&json!([])).unwrap_err().contains("an object, or true or false"));
        assert!(compile(&json!("string")).is_err());
        assert!(compile(&json!({"type": "integr"})).unwrap_err().starts_with("is not a valid JSON Schema: "));
        assert!(compile(&json!({"minimum": "five"})).is_err());
        // Nothing is fetched or read from disk.
        assert!(compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
        assert!(compile(&json!({"$ref": "file:///etc/passwd"})).is_err());
        // A reference inside the schema is fine, and so is another draft.
        let defs = json!({"$defs": {"id": {"type": "string"}}, "properties": {"id": {"$ref": "#/$defs/id"}}});
        let with_defs = compile(&defs).unwrap();
        assert!(check(&with_defs, &raw(json!({"id": 3}))).is_err());
        let draft7 = compile(&json!({"$schema": "http://json-schema.org/draft-07/schema#", "maxProperties": 1}));
        assert!(check(&draft7.unwrap(), &raw(json!({"a": 1, "b": 2}))).is_err());
        assert_eq!(check(&compile(&json!(true)).unwrap(), &raw(json!({"x": 1}))), Ok(()));
        // References that lead back to themselves are not followed forever, when compiled or checking.
        for looping in [
            json!({"$ref": "#"}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        ] {
            if let Ok(validator) = compile(&looping) {
                let _ = check(&validator, &raw(json!({"a": {"b": [1, {"c": 2}]}})));
            }
        }
        // A tree: recursion through the data, as deep as the data goes.
        let tree = compile(&json!({
            "type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}
        }))
        .unwrap();
        let mut deep = json!({"children": []});
        for _ in 0..60 {
            deep = json!({"children": [deep]});
        }
        assert_eq!(check(&tree, &raw(deep)), Ok(()));
        assert!(check(&tree, &raw(json!({"children": [{"children": 3}]}))).is_err());
        assert!(check(&compile(&json!(false)).unwrap(), &raw(json!({}))).is_err());
    }
}
