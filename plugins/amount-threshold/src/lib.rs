//! Filter: keep an event when a JSON field of its payload is above a threshold.
//! Config: `{"field": "order.total", "above": 100}` (`field` is dotted or a JSON pointer).

use exports::switchyard::plugin::filter::{Decision, Guest};
use switchyard::plugin::log::{log, Level};
use switchyard::plugin::types::{Endpoint, Event};
use switchyard_plugin_sdk as sdk;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
    above: f64,
}

/// Keep when the field is a number (or numeric string) strictly above the threshold; a missing or non-numeric
/// field drops the event: it cannot be above anything.
pub fn keep(payload: &str, config: &str) -> Result<bool, String> {
    let config: Config = sdk::config(config)?;
    let value = sdk::payload_field(payload, &config.field)?;
    Ok(value.as_ref().and_then(sdk::as_number).is_some_and(|value| value > config.above))
}

struct AmountThreshold;

impl Guest for AmountThreshold {
    fn filter(event: Event, endpoint: Endpoint) -> Result<Decision, String> {
        let keep = keep(&event.payload, &endpoint.config)?;
        log(Level::Debug, &format!("event {}: {}", event.id, if keep { "keep" } else { "drop" }));
        Ok(if keep { Decision::Keep } else { Decision::Drop })
    }
}

sdk::filter_plugin!(AmountThreshold);

#[cfg(test)]
mod tests {
    use super::keep;

    const CONFIG: &str = r#"{"field": "order.total", "above": 100}"#;

    #[test]
    fn keeps_only_amounts_above_the_threshold() {
        assert_eq!(keep(r#"{"order": {"total": 150}}"#, CONFIG), Ok(true));
        assert_eq!(keep(r#"{"order": {"total": "100.01"}}"#, CONFIG), Ok(true));
        assert_eq!(keep(r#"{"order": {"total": 100}}"#, CONFIG), Ok(false));
        assert_eq!(keep(r#"{"order": {}}"#, CONFIG), Ok(false));
    }

    #[test]
    fn bad_config_is_an_error() {
        assert!(keep("{}", "{}").unwrap_err().contains("invalid plugin config"));
        assert!(keep("{}", r#"{"field": "a", "above": 1, "typo": 2}"#).is_err());
    }
}
