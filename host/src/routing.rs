//! Which endpoints an event goes to: event-type names and patterns, and JSONPath subscription filters.
//!
//! A filter is an RFC 9535 query evaluated against a one-element array holding the delivery envelope
//! `{id, type, timestamp, tenant_id, data}`. RFC 9535 filter selectors (`[?…]`) select *children*, so wrapping
//! the envelope lets a merchant test the event itself (`$[?@.data.amount > 1000]`) as well as search inside it
//! (`$..items[?@.qty > 2]`). The event matches when the query selects at least one node.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use crate::model::{Endpoint, Event, Subscription};

pub const MAX_EVENT_TYPE_LEN: usize = 100;
pub const MAX_FILTER_LEN: usize = 1000;

/// The type of the events `POST /endpoints/{id}/test` sends. Publishers cannot use it (nor anything under
/// `switchyard.`, which also holds [`notices`](crate::notices)), so a receiver can tell a test from a real event,
/// and replaying what an endpoint missed skips it.
pub const TEST_EVENT_TYPE: &str = "switchyard.test";
const RESERVED_PREFIX: &str = "switchyard.";

/// Whether `name` is one of Switchyard's own event types, which only Switchyard sends.
pub fn is_reserved_event_type(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// A type a publisher may use: well formed, and not one of Switchyard's own.
pub fn validate_publishable_event_type(name: &str) -> Result<(), String> {
    if is_reserved_event_type(name) {
        return Err(format!(
            "`{RESERVED_PREFIX}` types are Switchyard's own (its test events); choose another resource"
        ));
    }
    validate_event_type(name)
}

/// Event type names are `resource.action`: two or more dot-separated segments of lowercase ASCII letters,
/// digits, `_` and `-`, at most 100 characters in all. Listings filter on any such name.
pub fn validate_event_type(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_EVENT_TYPE_LEN {
        return Err(format!("must be 1 to {MAX_EVENT_TYPE_LEN} characters"));
    }
    let segments: Vec<&str> = name.split('.').collect();
    if segments.len() < 2 {
        return Err(format!("`{name}` must have the form resource.action, e.g. payment.succeeded"));
    }
    if let Some(bad) = segments.iter().find(|s| !is_segment(s)) {
        return Err(format!("segment `{bad}` of `{name}` must be non-empty lowercase letters, digits, `_` or `-`"));
    }
    Ok(())
}

fn is_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A parsed event-type pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern<'a> {
    /// `*`: every event but Switchyard's own, which an endpoint gets only by naming them (`switchyard.*`): a
    /// merchant's catch-all receiver is not sent the server's notices about its endpoints.
    Any,
    /// `payment.*`: every type below `payment.`; holds `payment.`.
    Prefix(&'a str),
    Exact(&'a str),
}

fn parse_pattern(pattern: &str) -> Result<Pattern<'_>, String> {
    if pattern == "*" {
        return Ok(Pattern::Any);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        let Some(resource) = prefix.strip_suffix('.') else {
            return Err(format!("`{pattern}`: `*` may only stand alone or as a whole last segment, e.g. payment.*"));
        };
        if pattern.len() > MAX_EVENT_TYPE_LEN || resource.split('.').any(|s| !is_segment(s)) {
            return Err(format!("`{pattern}`: the part before `.*` must be lowercase segments, e.g. payment.*"));
        }
        return Ok(Pattern::Prefix(prefix));
    }
    validate_event_type(pattern)?;
    Ok(Pattern::Exact(pattern))
}

impl Pattern<'_> {
    fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::Any => !is_reserved_event_type(event_type),
            Pattern::Prefix(prefix) => event_type.starts_with(prefix),
            Pattern::Exact(name) => *name == event_type,
        }
    }
}

/// Every subscription pattern that selects `event_type` by its type: the type itself, each `prefix.*` above it,
/// and `*` unless the type is one of Switchyard's own. For finding the endpoints subscribed to a type; their
/// JSONPath filters may still turn a given event away.
pub fn patterns_matching(event_type: &str) -> Vec<String> {
    let mut patterns = vec![event_type.to_string()];
    for (at, _) in event_type.match_indices('.') {
        patterns.push(format!("{}*", &event_type[..=at]));
    }
    if !is_reserved_event_type(event_type) {
        patterns.push("*".to_string());
    }
    patterns
}

fn parse_filter(filter: &str) -> Result<JpQuery, String> {
    if filter.len() > MAX_FILTER_LEN {
        return Err(format!("must be at most {MAX_FILTER_LEN} characters"));
    }
    let query = parse_json_path(filter).map_err(|e| format!("invalid JSONPath `{filter}`: {e}"))?;
    let shape = FilterShape::of(filter);
    if shape.descendants > MAX_DESCENDANT_SEGMENTS {
        return Err(format!(
            "may select descendants (`..`) at most {MAX_DESCENDANT_SEGMENTS} time: each more multiplies the nodes \
             visited per event by the payload's depth, and a few use gigabytes on a deep payload"
        ));
    }
    if shape.unions > 0 {
        return Err("may not use unions (`[a,b]`): each one multiplies the nodes visited per event by its size, and \
             a few in a row use gigabytes; combine conditions with `||` in a filter expression instead"
            .into());
    }
    check_regexes(filter, &shape)?;
    Ok(query)
}

/// Descendant segments a filter may have, in all its queries (see [`FilterShape`]).
const MAX_DESCENDANT_SEGMENTS: usize = 1;

/// What makes a filter's cost grow faster than the payload, read from its text outside string literals. A
/// descendant segment (`..`) visits every node below where it starts, so two in a row visit every node below
/// each node the first found; a union (`[a,b]`) yields a node once per member that selects it, so k of them in a
/// row yield it 2^k times. A stored subscription's filter from before these limits matches nothing (see
/// [`FilterCache`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct FilterShape {
    descendants: usize,
    /// Commas between the selectors of a bracket (not between a function's arguments).
    unions: usize,
    /// Filter selectors (`[?`).
    filter_selectors: usize,
    /// Wildcards (`*`).
    wildcards: usize,
    /// Calls of `match()` and `search()`.
    regex_calls: usize,
    /// Their patterns that are a string literal and nothing else, as written between the quotes.
    regex_literals: Vec<String>,
}

/// Where a `match()`/`search()` call's scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegexArgument {
    /// In the first argument.
    Subject,
    /// Past the comma, before the pattern.
    Awaited,
    /// Past a string literal: only `)` may follow.
    Read,
    /// Anything but one string literal.
    NotLiteral,
}

/// An open bracket or parenthesis while scanning a filter's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Bracket,
    Paren,
    RegexCall(RegexArgument),
}

impl FilterShape {
    fn of(filter: &str) -> Self {
        let mut shape = FilterShape::default();
        let (mut quote, mut escaped, mut previous) = (None, false, ' ');
        let mut open: Vec<Open> = Vec::new();
        let (mut word, mut literal) = (String::new(), String::new());
        for c in filter.chars() {
            if let Some(closing) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == closing {
                    quote = None;
                    if let Some(Open::RegexCall(stage @ RegexArgument::Awaited)) = open.last_mut() {
                        *stage = RegexArgument::Read;
                        shape.regex_literals.push(std::mem::take(&mut literal));
                    }
                    continue;
                }
                literal.push(c);
                continue;
            }
            if let Some(Open::RegexCall(stage)) = open.last_mut() {
                // The pattern argument must be one string literal and nothing else.
                let allowed = match *stage {
                    RegexArgument::Awaited => c.is_whitespace() || c == '\'' || c == '"',
                    RegexArgument::Read => c.is_whitespace() || c == ')',
                    RegexArgument::Subject | RegexArgument::NotLiteral => true,
                };
                if !allowed {
                    *stage = RegexArgument::NotLiteral;
                }
            }
            match c {
                '\'' | '"' => {
                    quote = Some(c);
                    literal.clear();
                }
                '.' if previous == '.' => {
                    shape.descendants += 1;
                    previous = ' ';
                    word.clear();
                    continue;
                }
                '?' if previous == '[' => shape.filter_selectors += 1,
                '*' => shape.wildcards += 1,
                '[' => open.push(Open::Bracket),
                '(' if word == "match" || word == "search" => {
                    shape.regex_calls += 1;
                    open.push(Open::RegexCall(RegexArgument::Subject));
                }
                '(' => open.push(Open::Paren),
                ']' | ')' => {
                    open.pop();
                }
                ',' => match open.last_mut() {
                    Some(Open::Bracket) => shape.unions += 1,
                    Some(Open::RegexCall(stage @ RegexArgument::Subject)) => *stage = RegexArgument::Awaited,
                    _ => {}
                },
                _ => {}
            }
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else if !c.is_whitespace() {
                word.clear();
            }
            if !c.is_whitespace() {
                previous = c;
            }
        }
        shape
    }
}

/// Work a filter costs besides reading the payload, in payload bytes of a plain filter's: each `match()` or
/// `search()` compiles its pattern, up to about a third of a millisecond.
pub(crate) fn filter_fixed_work(filter: &str) -> usize {
    FilterShape::of(filter).regex_calls * REGEX_WORK
}

const REGEX_WORK: usize = 2 << 10;

/// Largest compiled `match()`/`search()` pattern, in bytes. The JSONPath library compiles the pattern again for
/// every node it tests, so its compile time is paid per node: about 0.3 ms at this size, where `(\w{30}){10}`
/// took 75 ms.
const MAX_REGEX_BYTES: usize = 64 << 10;

/// Why a `match()`/`search()` in a filter is refused, if it is. The JSONPath library compiles the pattern
/// again for every node it tests, so a filter using them must test the event itself (`$[?…]`, with no other
/// filter selector, wildcard or descendant segment, which would test a node per element), its pattern must be
/// a string literal (one from the event would be the publisher's to choose), written without `\\u` escapes (so
/// what is checked here is what is compiled) and compiling small.
fn check_regexes(filter: &str, shape: &FilterShape) -> Result<(), String> {
    if shape.regex_calls == 0 {
        return Ok(());
    }
    if !filter.trim_start().starts_with("$[?")
        || shape.filter_selectors > 1
        || shape.wildcards > 0
        || shape.descendants > 0
    {
        return Err("may use `match()` and `search()` only to test the event itself, e.g. \
                    $[?match(@.data.currency, 'EUR|USD')], with no other filter selector, wildcard or `..`: the \
                    pattern is compiled again for every node tested"
            .into());
    }
    if shape.regex_literals.len() < shape.regex_calls {
        return Err("`match()` and `search()` take their pattern as one string literal, e.g. \
                    match(@.data.currency, 'EUR|USD')"
            .into());
    }
    for pattern in &shape.regex_literals {
        if pattern.contains("\\u") {
            return Err(format!("the pattern `{pattern}` may not use `\\u` escapes: write the character itself"));
        }
        let pattern = unescape_literal(pattern);
        regex::RegexBuilder::new(&pattern).size_limit(MAX_REGEX_BYTES).build().map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!(
                "the pattern `{pattern}` compiles to more than {} KiB; it is compiled for every event, so keep it \
                 small (e.g. `[0-9]` rather than `\\d`, which is every Unicode digit)",
                MAX_REGEX_BYTES >> 10
            ),
            other => format!("the pattern `{pattern}` is not a regular expression: {other}"),
        })?;
    }
    Ok(())
}

/// A string literal's text as the JSONPath parser reads it: the escapes of quotes, `\\` and `/` resolved (a
/// regex escape such as `\\d` passes through as written).
fn unescape_literal(literal: &str) -> String {
    let mut text = String::with_capacity(literal.len());
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('\'' | '"' | '\\' | '/'))) => {
                text.push(next);
                chars.next();
            }
            _ => text.push(c),
        }
    }
    text
}

/// Checks a subscription before it is stored. On failure names the field at fault (`event_type` or `filter`).
pub fn validate_subscription(sub: &Subscription) -> Result<(), (&'static str, String)> {
    parse_pattern(&sub.event_type).map_err(|e| ("event_type", e))?;
    if let Some(filter) = &sub.filter {
        parse_filter(filter).map_err(|e| ("filter", e))?;
    }
    Ok(())
}

/// The endpoints among `endpoints` that have a subscription matching `event`, in the given order.
pub fn matching_endpoints<'a>(endpoints: &'a [Endpoint], event: &Event) -> Vec<&'a Endpoint> {
    FilterCache::default().matching_endpoints(endpoints, event)
}

/// What an event's distinct subscription filters select, by filter text: worked out before the event reaches
/// the writer (see [`filter_work`](crate::filter_work)), so the writer's serial loop does not pay for them.
pub type FilterVerdicts = HashMap<String, bool>;

/// The distinct filters of the subscriptions in `endpoints` whose type pattern matches `event`: what matching it
/// evaluates at most.
pub fn candidate_filters<'a>(endpoints: &'a [Endpoint], event: &Event) -> BTreeSet<&'a str> {
    endpoints
        .iter()
        .flat_map(|endpoint| &endpoint.subscriptions)
        .filter(|sub| parse_pattern(&sub.event_type).is_ok_and(|p| p.matches(&event.event_type)))
        .filter_map(|sub| sub.filter.as_deref())
        .collect()
}

/// Whether a parsed filter selects anything in an envelope from [`wrap_envelope`].
pub(crate) fn selects(query: &JpQuery, wrapped_envelope: &Value) -> bool {
    js_path_process(query, wrapped_envelope).is_ok_and(|nodes| !nodes.is_empty())
}

/// Parsed JSONPath filters by their text, so matching many events does not parse every filter again for each
/// one (parsing costs several times what evaluating does). Cleared when it outgrows its bound: filters change
/// rarely, and a clear only costs parsing them again.
#[derive(Default)]
pub struct FilterCache {
    /// `None` for a stored filter that does not parse (written by another version): it matches nothing.
    parsed: HashMap<String, Option<Arc<JpQuery>>>,
}

const MAX_CACHED_FILTERS: usize = 10_000;

impl FilterCache {
    /// The endpoints with a subscription that selects `event`: its type pattern matches and its filter, if any,
    /// selects at least one node.
    pub fn matching_endpoints<'a>(&mut self, endpoints: &'a [Endpoint], event: &Event) -> Vec<&'a Endpoint> {
        self.matching_endpoints_given(endpoints, event, &FilterVerdicts::new())
    }

    /// [`FilterCache::matching_endpoints`], taking each filter's verdict from `known` where it is there. Each
    /// other filter is evaluated once per event, however many subscriptions share it.
    pub fn matching_endpoints_given<'a>(
        &mut self,
        endpoints: &'a [Endpoint],
        event: &Event,
        known: &FilterVerdicts,
    ) -> Vec<&'a Endpoint> {
        let mut unlimited = usize::MAX;
        self.matching_endpoints_within(endpoints, event, known, &mut unlimited).unwrap_or_default()
    }

    /// [`FilterCache::matching_endpoints_given`], evaluating filters not in `known` only while `allowance` lasts:
    /// each takes the payload's size from it. None when one more was needed: the caller refuses the event rather
    /// than pay for it (the writer, whose loop every tenant shares).
    pub fn matching_endpoints_within<'a>(
        &mut self,
        endpoints: &'a [Endpoint],
        event: &Event,
        known: &FilterVerdicts,
        allowance: &mut usize,
    ) -> Option<Vec<&'a Endpoint>> {
        // Built lazily: most subscriptions have no filter, and the envelope costs a parse of the payload.
        let mut wrapped_envelope: Option<Option<Value>> = None;
        let mut evaluated: HashMap<&str, bool> = HashMap::new();
        let mut matched = Vec::new();
        let cost = event.data.get().len().max(1);
        for endpoint in endpoints {
            let mut selected = false;
            for sub in &endpoint.subscriptions {
                if !parse_pattern(&sub.event_type).is_ok_and(|p| p.matches(&event.event_type)) {
                    continue;
                }
                selected = match sub.filter.as_deref() {
                    None => true,
                    Some(filter) => match known.get(filter).or_else(|| evaluated.get(filter)) {
                        Some(verdict) => *verdict,
                        None => {
                            *allowance = allowance.checked_sub(cost)?;
                            let verdict = self.query(filter, &endpoint.id).is_some_and(|query| {
                                wrapped_envelope
                                    .get_or_insert_with(|| wrap_envelope(event))
                                    .as_ref()
                                    .is_some_and(|doc| selects(&query, doc))
                            });
                            evaluated.insert(filter, verdict);
                            verdict
                        }
                    },
                };
                if selected {
                    break;
                }
            }
            if selected {
                matched.push(endpoint);
            }
        }
        Some(matched)
    }

    /// The parsed filter, or None (logged once) for a stored filter that does not parse.
    pub(crate) fn query(&mut self, filter: &str, endpoint_id: &str) -> Option<Arc<JpQuery>> {
        if !self.parsed.contains_key(filter) {
            if self.parsed.len() >= MAX_CACHED_FILTERS {
                self.parsed.clear();
            }
            let parsed = parse_filter(filter)
                .inspect_err(|error| {
                    // Filters are validated before they are stored, so this means a row written by another version.
                    tracing::warn!(endpoint_id, %error, "stored subscription filter does not parse; treating as no match");
                })
                .ok()
                .map(Arc::new);
            self.parsed.insert(filter.to_string(), parsed);
        }
        self.parsed.get(filter).cloned().flatten()
    }
}

/// The envelope in an array, as filters select among a node's children. None when its payload nests deeper than
/// serde_json reads: the publish API refuses such data, but an event stored before it did can still come here
/// (a replay), and its filters then match nothing rather than stop the writer.
pub(crate) fn wrap_envelope(event: &Event) -> Option<Value> {
    match serde_json::from_str(&event.envelope()) {
        Ok(envelope) => Some(Value::Array(vec![envelope])),
        Err(error) => {
            tracing::warn!(event_id = %event.id, %error, "the event cannot be read for its filters; they match nothing");
            None
        }
    }
}

/// Whether `filter` selects anything in `event`: the single-subscription form of [`matching_endpoints`], for
/// explaining a match.
pub fn filter_matches(filter: &str, event: &Event) -> Result<bool, String> {
    let query = parse_filter(filter)?;
    let Some(doc) = wrap_envelope(event) else { return Ok(false) };
    Ok(selects(&query, &doc))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use serde_json::value::RawValue;

    use super::*;
    use crate::model::{EndpointStatus, SignatureScheme};

    #[test]
    fn the_patterns_matching_a_type_are_those_that_select_it() {
        assert_eq!(
            patterns_matching("payment.card.captured"),
            ["payment.card.captured", "payment.*", "payment.card.*", "*"]
        );
        assert_eq!(
            patterns_matching("switchyard.delivery.dead"),
            ["switchyard.delivery.dead", "switchyard.*", "switchyard.delivery.*"]
        );
        let candidates = [
            "*",
            "payment.*",
            "payment.card.*",
            "payment.card.captured",
            "pay.*",
            "payment.card.captured.*",
            "payments.*",
            "payment.cards.*",
            "switchyard.*",
            "switchyard.delivery.*",
            "invoice.paid",
        ];
        for event_type in ["payment.card.captured", "switchyard.delivery.dead", "invoice.paid"] {
            let mut selecting: Vec<&str> =
                candidates.into_iter().filter(|pattern| parse_pattern(pattern).unwrap().matches(event_type)).collect();
            let mut listed = patterns_matching(event_type);
            listed.retain(|pattern| candidates.contains(&pattern.as_str()));
            selecting.sort_unstable();
            listed.sort_unstable();
            assert_eq!(listed, selecting, "{event_type}");
        }
    }

    pub(crate) fn event(event_type: &str, data: &str) -> Event {
        Event {
            id: "evt_1".into(),
            tenant_id: "ten_1".into(),
            event_type: event_type.into(),
            data: RawValue::from_string(data.into()).unwrap(),
            idempotency_key: None,
            received_at: 0,
        }
    }

    pub(crate) fn endpoint(id: &str, subscriptions: &[(&str, Option<&str>)]) -> Endpoint {
        Endpoint {
            id: id.into(),
            tenant_id: "ten_1".into(),
            url: "https://example.com".into(),
            description: String::new(),
            status: EndpointStatus::Active,
            status_reason: None,
            timeout_ms: 10_000,
            headers: BTreeMap::new(),
            retry_schedule_ms: None,
            max_attempts: None,
            rate_limit: None,
            signature_scheme: SignatureScheme::Standard,
            signature_header: None,
            metadata: BTreeMap::new(),
            plugins: Default::default(),
            subscriptions: subscriptions
                .iter()
                .map(|(t, f)| Subscription { event_type: t.to_string(), filter: f.map(str::to_string) })
                .collect(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn matched(endpoints: &[Endpoint], event: &Event) -> Vec<String> {
        matching_endpoints(endpoints, event).into_iter().map(|e| e.id.clone()).collect()
    }

    #[test]
    fn switchyard_types_are_reserved_for_test_events() {
        assert!(is_reserved_event_type(TEST_EVENT_TYPE));
        assert!(validate_publishable_event_type("switchyard.test").unwrap_err().contains("Switchyard's own"));
        assert!(validate_publishable_event_type("switchyard.anything").is_err());
        assert!(validate_publishable_event_type("switchyards.test").is_ok());
        assert!(validate_event_type("switchyard.test").is_ok(), "listings may filter on it");
    }

    #[test]
    fn the_filter_cache_matches_like_fresh_parsing_and_skips_broken_filters() {
        let endpoints = vec![
            endpoint("ep_big", &[("payment.*", Some("$[?@.data.amount > 1000]"))]),
            endpoint("ep_eur", &[("payment.*", Some("$[?@.data.currency == 'EUR']"))]),
            // As if written by another version: does not parse, so it matches nothing (and does not panic).
            endpoint("ep_broken", &[("payment.*", Some("$[?@.data.amount >"))]),
            endpoint("ep_all", &[("*", None)]),
        ];
        let mut cache = FilterCache::default();
        for (data, expected) in [
            (r#"{"amount": 5000, "currency": "EUR"}"#, vec!["ep_big", "ep_eur", "ep_all"]),
            (r#"{"amount": 5, "currency": "USD"}"#, vec!["ep_all"]),
            (r#"{"amount": 5000, "currency": "USD"}"#, vec!["ep_big", "ep_all"]),
        ] {
            let event = event("payment.succeeded", data);
            let ids = |matched: Vec<&Endpoint>| matched.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(cache.matching_endpoints(&endpoints, &event)), expected);
            assert_eq!(ids(matching_endpoints(&endpoints, &event)), expected);
        }
        assert_eq!(cache.parsed.len(), 3, "each filter parsed once, the broken one remembered as such");
    }

    /// The writer takes a filter's verdict from the request that evaluated it, and evaluates only the filters it
    /// was not given (one created in between), once per event whatever the subscriptions sharing it.
    #[test]
    fn given_verdicts_are_taken_as_found_and_the_rest_evaluated() {
        let big = "$[?@.data.amount > 1000]";
        let endpoints = vec![
            endpoint("ep_big", &[("payment.*", Some(big))]),
            endpoint("ep_big_too", &[("payment.*", Some(big))]),
            endpoint("ep_eur", &[("payment.*", Some("$[?@.data.currency == 'EUR']"))]),
        ];
        let event = event("payment.succeeded", r#"{"amount": 5000, "currency": "EUR"}"#);
        let ids = |matched: Vec<&Endpoint>| matched.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let mut cache = FilterCache::default();
        // Told the (true) `big` filter selects nothing: so the writer, trusting the request, delivers to neither.
        let given = FilterVerdicts::from([(big.to_string(), false)]);
        assert_eq!(ids(cache.matching_endpoints_given(&endpoints, &event, &given)), ["ep_eur"]);
        assert_eq!(cache.parsed.len(), 1, "only the filter it was not given was parsed");
        assert_eq!(ids(cache.matching_endpoints(&endpoints, &event)), ["ep_big", "ep_big_too", "ep_eur"]);
        assert_eq!(candidate_filters(&endpoints, &event).len(), 2, "distinct filters");
        assert!(candidate_filters(&endpoints, &super::tests::event("order.created", "{}")).is_empty());
    }

    /// The writer evaluates a filter it was not given only within its allowance, a payload's size per filter, so
    /// a request whose endpoints changed after it was matched cannot hand it seconds of work.
    #[test]
    fn filters_not_given_are_evaluated_only_within_the_allowance() {
        let endpoints = vec![
            endpoint("ep_big", &[("payment.*", Some("$[?@.data.amount > 1000]"))]),
            endpoint("ep_eur", &[("payment.*", Some("$[?@.data.currency == 'EUR']"))]),
            endpoint("ep_all", &[("*", None)]),
        ];
        let data = r#"{"amount": 5000, "currency": "EUR"}"#;
        let event = event("payment.succeeded", data);
        let mut cache = FilterCache::default();
        let mut allowance = 2 * data.len() - 1;
        assert!(cache.matching_endpoints_within(&endpoints, &event, &FilterVerdicts::new(), &mut allowance).is_none());
        let mut allowance = 2 * data.len();
        let matched = cache.matching_endpoints_within(&endpoints, &event, &FilterVerdicts::new(), &mut allowance);
        assert_eq!(matched.unwrap().len(), 3);
        assert_eq!(allowance, 0);
        let given = FilterVerdicts::from([("$[?@.data.amount > 1000]".to_string(), true)]);
        let mut allowance = data.len();
        assert_eq!(cache.matching_endpoints_within(&endpoints, &event, &given, &mut allowance).unwrap().len(), 3);
    }

    /// An event stored before publishing refused deep data: its filters match nothing, and the writer that
    /// routes it goes on (it panicked, and every publish of the node failed after).
    #[test]
    fn data_too_deep_to_read_matches_no_filter_and_panics_nothing() {
        let deep = format!("{}1{}", r#"{"a":"#.repeat(127), "}".repeat(127));
        let event = event("deep.x", &deep);
        let endpoints =
            vec![endpoint("ep_filtered", &[("*", Some("$[?@.data.a]"))]), endpoint("ep_all", &[("*", None)])];
        assert_eq!(matched(&endpoints, &event), ["ep_all"]);
        assert_eq!(filter_matches("$[?@.data.a]", &event), Ok(false));
        let shallow = format!("{}1{}", r#"{"a":"#.repeat(60), "}".repeat(60));
        assert_eq!(matched(&endpoints, &self::event("deep.x", &shallow)), ["ep_filtered", "ep_all"]);
    }

    #[test]
    fn filters_select_descendants_once_at_most_and_use_no_unions() {
        let descendants = |filter: &str| FilterShape::of(filter).descendants;
        assert_eq!(descendants("$[?@.data.a == 'x..y']"), 0);
        assert_eq!(descendants(r#"$[?@..a == "..\"..."]"#), 1);
        assert_eq!(descendants("$..a..a..a"), 3);
        assert_eq!(descendants("$[?count(@..*) > 5 && @.data..b]"), 2);
        let unions = |filter: &str| FilterShape::of(filter).unions;
        assert_eq!(unions("$[0].data[*,*][*,*].zz"), 2);
        assert_eq!(unions("$[?match(@.data.s, 'a.*') && @.data.t == 'x,y']"), 0, "arguments and strings");
        assert_eq!(unions("$.data['a','b']"), 1);
        for allowed in ["$..a", "$[?@..a]", "$[?@.data.note == '..']", "$[?@.data.x > 1.5]", "$[?match(@.data.s, 'a')]"]
        {
            assert!(parse_filter(allowed).is_ok(), "{allowed}");
        }
        for (refused, why) in [
            ("$..a..a", "descendants"),
            ("$..a..a..a..a..a", "descendants"),
            ("$[?@..a && @..b]", "descendants"),
            ("$[0].data[*,*][*,*].zz", "unions"),
            ("$.data['a','b']", "unions"),
        ] {
            let subscription = Subscription { event_type: "*".into(), filter: Some(refused.into()) };
            let (field, message) = validate_subscription(&subscription).unwrap_err();
            assert_eq!(field, "filter");
            assert!(message.contains(why), "{refused}: {message}");
        }
        // Stored before the limits: they match nothing instead of exhausting memory.
        let deep = format!("{}1{}", r#"{"a":"#.repeat(64), "}".repeat(64));
        let doubling = format!("$[0].data{}.zz", "[*,*]".repeat(30));
        let endpoints = vec![
            endpoint("ep_descending", &[("*", Some("$..a..a..a..a..a"))]),
            endpoint("ep_doubling", &[("*", Some(doubling.as_str()))]),
        ];
        assert!(matched(&endpoints, &event("deep.x", &deep)).is_empty());
    }

    /// The JSONPath library compiles a `match()`/`search()` pattern for every node it tests: `(\w{30}){10}` took
    /// 75 ms a node, a 64 KiB pattern 80 µs, and a pattern read from the event would be the publisher's to choose.
    /// So they test the event itself, once, with a small literal pattern.
    #[test]
    fn regex_patterns_are_small_literals_testing_the_event() {
        for allowed in [
            "$[?match(@.data.currency, 'EUR|USD')]",
            "$[?search(@.data.email, \"@example\\\\.com$\")]",
            "$[?match(@.data.day, '[0-9]{4}-[0-9]{2}-[0-9]{2}') && @.data.n > 1]",
            "$[?match( @.data.c , 'a' ) || search(@.data.d, 'b')]",
            "$[?@.data.note == 'match(x, y)']",
            "$..items[?@.note == 'search(@, x)']",
        ] {
            assert!(parse_filter(allowed).is_ok(), "{allowed}: {:?}", parse_filter(allowed).err());
        }
        for (refused, why) in [
            ("$[?search(@.data.s, '(\\\\w{30}){10}')]", "compiles to more than"),
            ("$[?search(@.data.s, '\\\\w{30}')]", "compiles to more than"),
            ("$[?search(@.data.s, '(\\u005cw{30}){10}')]", "escapes"),
            ("$[?match(@.data.s, @.data.pattern)]", "one string literal"),
            ("$[?search(@.data.s, $.x)]", "one string literal"),
            ("$[?search(@.data.a, !@.data.q || 'x' == 'y') || search(@.data.s, $[0].data.r)]", "one string literal"),
            ("$[?match(@.data.s, '(')]", "not a regular expression"),
            ("$..[?search(@, 'a')]", "the event itself"),
            ("$[0].data.items[?search(@.s, 'a')]", "the event itself"),
            ("$[?@.data.items[?search(@.s, 'a')]]", "the event itself"),
            ("$[?search(@.data.items[*].s, 'a')]", "the event itself"),
        ] {
            let message = parse_filter(refused).map(|_| String::new()).unwrap_or_else(|e| e);
            assert!(message.contains(why), "{refused}: {message}");
        }
        assert_eq!(filter_fixed_work("$[?@.data.n > 1]"), 0);
        assert_eq!(filter_fixed_work("$[?match(@.a, 'x') || search(@.b, 'y')]"), 2 * REGEX_WORK);
        assert_eq!(unescape_literal(r"a\'b\\\\c\\d"), r"a'b\\c\d");
    }

    #[test]
    fn event_type_names() {
        for good in ["payment.succeeded", "invoice.payment.failed", "a.b", "user_v2.created-now"] {
            assert_eq!(validate_event_type(good), Ok(()), "{good}");
        }
        for bad in ["", "payment", "Payment.succeeded", "payment..x", ".x", "x.", "pay ment.x", "payment.*"] {
            assert!(validate_event_type(bad).is_err(), "{bad}");
        }
        assert!(validate_event_type(&format!("a.{}", "b".repeat(98))).is_ok());
        assert!(validate_event_type(&format!("a.{}", "b".repeat(99))).is_err());
    }

    #[test]
    fn patterns_exact_prefix_and_star() {
        let endpoints = [
            endpoint("exact", &[("payment.succeeded", None)]),
            endpoint("prefix", &[("payment.*", None)]),
            endpoint("star", &[("*", None)]),
            endpoint("other", &[("invoice.created", None), ("refund.*", None)]),
        ];
        assert_eq!(matched(&endpoints, &event("payment.succeeded", "{}")), ["exact", "prefix", "star"]);
        assert_eq!(matched(&endpoints, &event("payment.refund.created", "{}")), ["prefix", "star"]);
        assert_eq!(matched(&endpoints, &event("paymentx.created", "{}")), ["star"]);
        assert_eq!(matched(&endpoints, &event("refund.created", "{}")), ["star", "other"]);
    }

    /// Switchyard's own events reach only the endpoints that name them: a catch-all `*` does not get them.
    #[test]
    fn switchyard_events_go_only_to_subscriptions_that_name_them() {
        let endpoints = [
            endpoint("star", &[("*", None)]),
            endpoint("all-notices", &[("switchyard.*", None)]),
            endpoint("endpoints", &[("switchyard.endpoint.*", None)]),
            endpoint("disabled", &[("switchyard.endpoint.disabled", None)]),
            endpoint("both", &[("*", None), ("switchyard.*", None)]),
        ];
        let notice = event("switchyard.endpoint.disabled", "{}");
        assert_eq!(matched(&endpoints, &notice), ["all-notices", "endpoints", "disabled", "both"]);
        assert_eq!(matched(&endpoints, &event("order.created", "{}")), ["star", "both"]);
    }

    #[test]
    fn pattern_validation() {
        let check = |t: &str| validate_subscription(&Subscription { event_type: t.into(), filter: None });
        for good in ["*", "payment.*", "invoice.payment.*", "payment.succeeded"] {
            assert!(check(good).is_ok(), "{good}");
        }
        for bad in ["payment*", "*.succeeded", "pay*.x", "PAYMENT.*", "", ".*", "payment"] {
            assert_eq!(check(bad).unwrap_err().0, "event_type", "{bad}");
        }
    }

    // The two forms the README documents; if these break, so does the documentation.
    #[test]
    fn documented_filter_examples() {
        let big_eur = r#"$[?@.data.amount > 1000 && @.data.currency == 'EUR']"#;
        let bulk_items = r#"$..items[?@.qty > 2]"#;
        let endpoints =
            [endpoint("big-eur", &[("payment.*", Some(big_eur))]), endpoint("bulk", &[("*", Some(bulk_items))])];

        let big = event("payment.succeeded", r#"{"amount": 1500, "currency": "EUR"}"#);
        let small = event("payment.succeeded", r#"{"amount": 500, "currency": "EUR"}"#);
        let usd = event("payment.succeeded", r#"{"amount": 5000, "currency": "USD"}"#);
        let order = event("order.created", r#"{"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 3}]}"#);
        let small_order = event("order.created", r#"{"items": [{"sku": "a", "qty": 1}]}"#);

        assert_eq!(matched(&endpoints, &big), ["big-eur"]);
        assert!(matched(&endpoints, &small).is_empty());
        assert!(matched(&endpoints, &usd).is_empty());
        assert_eq!(matched(&endpoints, &order), ["bulk"]);
        assert!(matched(&endpoints, &small_order).is_empty());
    }

    #[test]
    fn filters_see_the_whole_envelope() {
        let by_type = endpoint("t", &[("*", Some("$[?@.type == 'payment.failed']"))]);
        let by_tenant = endpoint("n", &[("*", Some("$[?@.tenant_id == 'ten_1']"))]);
        let missing_field = endpoint("m", &[("*", Some("$[?@.data.nope > 1]"))]);
        let endpoints = [by_type, by_tenant, missing_field];
        assert_eq!(matched(&endpoints, &event("payment.failed", "{}")), ["t", "n"]);
    }

    #[test]
    fn any_one_subscription_is_enough_and_type_gates_the_filter() {
        let endpoints = [endpoint(
            "e",
            &[("invoice.created", Some("$[?@.data.total > 10]")), ("payment.*", Some("$[?@.data.amount > 10]"))],
        )];
        assert_eq!(matched(&endpoints, &event("payment.succeeded", r#"{"amount": 11}"#)), ["e"]);
        // The invoice filter would select this, but the type does not match that subscription.
        assert!(matched(&endpoints, &event("payment.succeeded", r#"{"total": 11}"#)).is_empty());
    }

    #[test]
    fn invalid_filters_are_rejected_with_the_problem() {
        for bad in ["$[?@.amount >]", "amount > 5", "$[?(@.a ==]", "$.."] {
            let err =
                validate_subscription(&Subscription { event_type: "*".into(), filter: Some(bad.into()) }).unwrap_err();
            assert_eq!(err.0, "filter", "{bad}");
            assert!(err.1.contains("invalid JSONPath"), "{bad}: {}", err.1);
        }
        assert!(filter_matches("$[?@.data.x == 1]", &event("a.b", r#"{"x": 1}"#)).unwrap());
    }
}
