//! The guest side of Switchyard's plugin contract (`wit/`, package `switchyard:plugin@0.1.0`).
//!
//! One macro call binds the contract and exports your type: [`filter_plugin!`], [`transform_plugin!`] or
//! [`retry_policy_plugin!`] (or [`plugin!`] for all three). Each generates the contract's types in your crate
//! from the repository's `wit/` folder, so there is exactly one source of the contract:
//!
//! * `exports::switchyard::plugin::filter::{Guest, Decision}` (and `transform::{Guest, Request}`,
//!   `retry_policy::{Guest, Attempt, Outcome, ErrorKind, Decision}`),
//! * `switchyard::plugin::types::{Event, Endpoint}`,
//! * `switchyard::plugin::log::{log, Level}`, the only host function.
//!
//! The helpers below parse what the host passes as JSON text and are plain functions, testable natively.

use std::borrow::Cow;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

pub use serde_json;
pub use wit_bindgen;

#[doc(hidden)]
#[macro_export]
macro_rules! __bind {
    ($world:literal, $plugin:ident) => {
        $crate::wit_bindgen::generate!({
            // Relative to the plugin crate's manifest: plugins live in `plugins/<name>/` next to `wit/`.
            path: "../../wit",
            world: $world,
            runtime_path: "::switchyard_plugin_sdk::wit_bindgen::rt",
        });
        // Natively (unit tests, clippy) the exports would be C symbols named like `switchyard:plugin/filter@0.1.0#filter`,
        // which native linkers reject; the plugin's logic is tested through plain functions there instead.
        #[cfg(target_arch = "wasm32")]
        export!($plugin);
    };
}

/// Binds the `filter-plugin` world and exports `$plugin`, which implements
/// `exports::switchyard::plugin::filter::Guest`.
#[macro_export]
macro_rules! filter_plugin {
    ($plugin:ident) => {
        $crate::__bind!("switchyard:plugin/filter-plugin@0.1.0", $plugin);
    };
}

/// Binds the `transform-plugin` world and exports `$plugin` (implements `exports::...::transform::Guest`).
#[macro_export]
macro_rules! transform_plugin {
    ($plugin:ident) => {
        $crate::__bind!("switchyard:plugin/transform-plugin@0.1.0", $plugin);
    };
}

/// Binds the `retry-policy-plugin` world and exports `$plugin` (implements `exports::...::retry_policy::Guest`).
#[macro_export]
macro_rules! retry_policy_plugin {
    ($plugin:ident) => {
        $crate::__bind!("switchyard:plugin/retry-policy-plugin@0.1.0", $plugin);
    };
}

/// Binds the `plugin` world (all three interfaces) and exports `$plugin`, which implements all three `Guest`s.
#[macro_export]
macro_rules! plugin {
    ($plugin:ident) => {
        $crate::__bind!("switchyard:plugin/plugin@0.1.0", $plugin);
    };
}

/// Parses the endpoint's plugin configuration (`endpoint.config`). Unknown fields are the plugin's business:
/// use `#[serde(deny_unknown_fields)]` on `T` to reject them. The error names what is wrong and where, but not the
/// offending value: a config may hold a credential, and the error lands in delivery records and the host's log.
pub fn config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid plugin config: {}", without_quoted_values(&e.to_string())))
}

/// serde_json quotes a string value in double quotes (`invalid type: string "…", expected u64`); field and
/// variant names are in backticks and stay.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    out.push_str(parts.next().unwrap_or_default());
    let mut inside = true;
    for part in parts {
        out.push_str(if inside { "\"…\"" } else { part });
        inside = !inside;
    }
    out
}

/// Parses the event's payload (`event.payload`).
pub fn payload(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid event payload: {e}"))
}

/// The value at `path` (JSON pointer or dotted) in the payload text, without building the rest of the payload:
/// siblings along the way are only scanned (the whole text is still checked to be JSON). For a filter that reads
/// one field this is several times cheaper than [`payload`] + [`field`], which allocate every key and value.
pub fn payload_field(json: &str, path: &str) -> Result<Option<Value>, String> {
    let invalid = |e: serde_json::Error| format!("invalid event payload: {e}");
    let mut current: &RawValue = serde_json::from_str(json).map_err(invalid)?;
    for key in segments(path) {
        let mut deserializer = serde_json::Deserializer::from_str(current.get());
        match serde::Deserializer::deserialize_any(&mut deserializer, Child(&key)).map_err(invalid)? {
            Some(child) => current = child,
            None => return Ok(None),
        }
    }
    serde_json::from_str(current.get()).map(Some).map_err(invalid)
}

/// Finds one member of an object (by key) or element of an array (by index) as raw JSON, skipping the others.
struct Child<'k>(&'k str);

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if found.is_none() && key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let index = self.0.parse::<usize>().ok();
        let (mut found, mut at) = (None, 0);
        while found.is_none() && Some(at) <= index {
            match seq.next_element::<&'de RawValue>()? {
                Some(element) if Some(at) == index => found = Some(element),
                Some(_) => at += 1,
                None => return Ok(None),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(found)
    }

    // A scalar has no children.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Splits a field path: either a JSON pointer (`/order/total`) or dotted (`order.total`).
fn segments(path: &str) -> Vec<String> {
    match path.strip_prefix('/') {
        Some(pointer) => pointer.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect(),
        None => path.split('.').map(str::to_string).collect(),
    }
}

/// The value at `path` (JSON pointer or dotted); array elements by index.
pub fn field<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path).iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Removes the value at `path`; returns whether something was removed.
pub fn remove_field(value: &mut Value, path: &str) -> bool {
    let mut keys = segments(path);
    let Some(last) = keys.pop() else { return false };
    let parent = keys.iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    });
    match parent {
        Some(Value::Object(map)) => map.remove(&last).is_some(),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A number, or a string holding one (amounts often arrive as `"12.50"`).
pub fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A header's value by case-insensitive name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `Retry-After` as a delay in milliseconds: delta-seconds or an HTTP date relative to `now_ms`. A date in the
/// past means "now" (0).
pub fn retry_after_ms(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(at_ms.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors_do_not_repeat_the_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Config {
            port: u16,
        }
        let error = config::<Config>(r#"{"port": "hunter2"}"#).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.starts_with("invalid plugin config: invalid type: string") && error.contains("u16"), "{error}");
        let missing = config::<Config>("{}").unwrap_err();
        assert!(missing.contains("missing field `port`"), "{missing}");
    }

    #[test]
    fn fields_by_dotted_path_or_pointer() {
        let v = json!({"order": {"total": 12, "items": [{"sku": "a/b"}]}});
        assert_eq!(field(&v, "order.total"), Some(&json!(12)));
        assert_eq!(field(&v, "/order/items/0/sku"), Some(&json!("a/b")));
        assert_eq!(field(&v, "order.missing"), None);
    }

    #[test]
    fn payload_field_agrees_with_field() {
        let text = r#"{"order": {"total": 12, "items": [{"sku": "a/b"}, {"sku": "c"}], "note": "x\"y"},
                       "esc\u0061ped": 1, "n": null, "order2": [1, 2]}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        for path in [
            "order.total",
            "/order/items/1/sku",
            "/order/items/0",
            "order.missing",
            "order.items.7",
            "order.total.deeper",
            "order.items.x",
            "escaped",
            "n",
            "order2.1",
            "/",
            "order.note",
        ] {
            assert_eq!(payload_field(text, path).unwrap().as_ref(), field(&value, path), "{path}");
        }
    }

    #[test]
    fn payload_field_still_rejects_invalid_json() {
        assert!(payload_field(r#"{"a": 1, "b": [}"#, "a").unwrap_err().contains("invalid event payload"));
        assert!(payload_field(r#"{"a": 1} trailing"#, "a").is_err());
        assert!(payload_field(r#"[1, 2, oops]"#, "0").is_err());
    }

    #[test]
    fn removes_nested_fields() {
        let mut v = json!({"card": {"number": "4242", "brand": "visa"}, "list": [1, 2]});
        assert!(remove_field(&mut v, "card.number"));
        assert!(remove_field(&mut v, "/list/0"));
        assert!(!remove_field(&mut v, "card.cvc"));
        assert_eq!(v, json!({"card": {"brand": "visa"}, "list": [2]}));
    }

    #[test]
    fn numbers_and_headers() {
        assert_eq!(as_number(&json!("12.5")), Some(12.5));
        assert_eq!(as_number(&json!(true)), None);
        let headers = vec![("Retry-After".to_string(), "7".to_string())];
        assert_eq!(header(&headers, "retry-after"), Some("7"));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(retry_after_ms("120", 0), Some(120_000));
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777 s.
        assert_eq!(retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_767_000), Some(10_000));
        assert_eq!(retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_787_000), Some(0));
        assert_eq!(retry_after_ms("soon", 0), None);
    }
}
