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

use jsonschema::Validator;
use moka::sync::Cache;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::model::schema_digest;
use crate::store::sql::ACTIVE_ENDPOINTS_TTL;
use crate::store::{Store, StoreResult};

/// As long as another node's endpoint changes take to apply here.
pub const SCHEMAS_TTL: Duration = ACTIVE_ENDPOINTS_TTL;
/// Largest schema, as the JSON text sent: schemas are compiled on every node, and kept by each.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Violations a refusal lists; the rest are counted.
const ERRORS_SHOWN: usize = 3;
const TENANTS: u64 = 10_000;
/// Total bytes of schema text whose compiled form is kept.
const COMPILED_BYTES: u64 = 64 << 20;

/// Which of a tenant's event types have a schema: its digest, by type name.
pub type TenantSchemas = HashMap<String, String>;

/// A compiled schema, and the size of the text it came from (what the cache weighs it by).
struct Compiled {
    validator: Option<Arc<Validator>>,
    text_bytes: usize,
}

pub struct EventSchemas {
    tenants: Cache<String, Arc<TenantSchemas>>,
    /// Bumped by every registration through this node: a read that began before it may hold what it replaced.
    generation: AtomicU64,
    /// By digest; `validator` is None for a stored schema this version cannot compile.
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
    ) -> StoreResult<Option<Arc<Validator>>> {
        if let Some(compiled) = self.compiled.get(digest) {
            return Ok(compiled.validator.clone());
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
        let compiled = Compiled { validator: validator.clone(), text_bytes: text.len() };
        self.compiled.insert(schema_digest(&text), Arc::new(compiled));
        Ok(validator)
    }

    /// Call once a registration that may have changed a schema of the tenant has committed.
    pub fn changed(&self, tenant_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.tenants.invalidate(tenant_id);
    }
}

/// Compiles a schema given at registration: a JSON object (or `true`/`false`) in any draft the `$schema` keyword
/// names, 2020-12 when it names none. A `$ref` may only point inside the schema: nothing is fetched.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err("must be a JSON Schema: an object, or true or false".into());
    }
    jsonschema::validator_for(schema).map_err(|e| format!("is not a valid JSON Schema: {e}"))
}

/// Checks an event's `data` against its type's schema. On failure, says where and why for the first few
/// violations, naming places in `data` by JSON Pointer; `data`'s values are not repeated.
pub fn check(validator: &Validator, data: &RawValue) -> Result<(), String> {
    let instance: Value = serde_json::from_str(data.get()).map_err(|e| format!("cannot be read: {e}"))?;
    if validator.is_valid(&instance) {
        return Ok(());
    }
    let mut shown = Vec::new();
    let mut more = 0usize;
    for error in validator.iter_errors(&instance) {
        if shown.len() < ERRORS_SHOWN {
            let at = error.instance_path().as_str();
            let at = if at.is_empty() { "the top level".to_string() } else { at.to_string() };
            shown.push(format!("at {at}: {}", error.masked()));
        } else {
            more += 1;
        }
    }
    let mut message = format!("does not match its event type's schema: {}", shown.join("; "));
    if more > 0 {
        message.push_str(&format!(" (and {more} more)"));
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(value: Value) -> Box<RawValue> {
        RawValue::from_string(value.to_string()).unwrap()
    }

    fn payment_schema() -> Validator {
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
        assert!(problem.contains("at /currency: "), "{problem}");
        assert!(problem.contains("at /items/1: "), "{problem}");
        assert!(!problem.contains(secret) && !problem.contains("euro"), "values are not echoed: {problem}");

        let missing = check(&schema, &raw(json!({}))).unwrap_err();
        assert!(missing.contains("at the top level: "), "{missing}");
        assert!(missing.contains("\"amount\" is a required property"), "{missing}");
    }

    #[test]
    fn only_the_first_violations_are_listed() {
        let schema = compile(&json!({"additionalProperties": {"type": "string"}})).unwrap();
        let data = json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5});
        let problem = check(&schema, &raw(data)).unwrap_err();
        assert_eq!(problem.matches("at /").count(), ERRORS_SHOWN, "{problem}");
        assert!(problem.ends_with(" (and 2 more)"), "{problem}");
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
