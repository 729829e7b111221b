//! Transform: remove configured fields from the payload; the body sent (and signed) is the redacted payload.
//! Config: `{"fields": ["card.number", "/customer/ssn"]}`.

use exports::switchyard::plugin::transform::{Guest, Request};
use switchyard::plugin::log::{log, Level};
use switchyard::plugin::types::{Endpoint, Event};
use switchyard_plugin_sdk as sdk;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fields: Vec<String>,
}

/// The redacted payload and how many fields were removed.
pub fn redact(payload: &str, config: &str) -> Result<(String, usize), String> {
    let config: Config = sdk::config(config)?;
    let mut payload = sdk::payload(payload)?;
    let removed = config.fields.iter().filter(|path| sdk::remove_field(&mut payload, path)).count();
    Ok((payload.to_string(), removed))
}

struct Redact;

impl Guest for Redact {
    fn transform(event: Event, endpoint: Endpoint) -> Result<Request, String> {
        let (body, removed) = redact(&event.payload, &endpoint.config)?;
        log(Level::Info, &format!("redacted {removed} field(s)"));
        Ok(Request { body: body.into_bytes(), content_type: "application/json".into(), headers: Vec::new() })
    }
}

sdk::transform_plugin!(Redact);

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn removes_configured_fields_only() {
        let payload = r#"{"card": {"number": "4242", "brand": "visa"}, "customer": {"ssn": "1", "name": "Ada"}}"#;
        let (body, removed) = redact(payload, r#"{"fields": ["card.number", "/customer/ssn", "absent"]}"#).unwrap();
        assert_eq!(removed, 2);
        assert_eq!(body, r#"{"card":{"brand":"visa"},"customer":{"name":"Ada"}}"#);
    }

    #[test]
    fn requires_the_field_list() {
        assert!(redact("{}", "{}").is_err());
    }
}
