//! Transform: turn an event into a Slack incoming-webhook body `{"text": ...}`.
//! Config (optional): `{"template": "{type} for {tenant}: {payload.customer.name}"}`. Placeholders: `{id}`,
//! `{type}`, `{tenant}`, `{payload}` (compact JSON) and `{payload.<path>}`.

use exports::switchyard::plugin::transform::{Guest, Request};
use switchyard::plugin::types::{Endpoint, Event};
use switchyard_plugin_sdk as sdk;

const DEFAULT_TEMPLATE: &str = "*{type}* ({id}) for {tenant}: {payload}";

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    template: Option<String>,
}

fn placeholder(name: &str, id: &str, event_type: &str, tenant: &str, payload: &sdk::serde_json::Value) -> String {
    match name {
        "id" => id.to_string(),
        "type" => event_type.to_string(),
        "tenant" => tenant.to_string(),
        "payload" => payload.to_string(),
        _ => match name.strip_prefix("payload.").and_then(|path| sdk::field(payload, path)) {
            Some(sdk::serde_json::Value::String(text)) => text.clone(),
            Some(value) => value.to_string(),
            None => String::new(),
        },
    }
}

/// The Slack message text for an event.
pub fn text(id: &str, event_type: &str, tenant: &str, payload: &str, config: &str) -> Result<String, String> {
    let config: Config = sdk::config(config)?;
    let payload = sdk::payload(payload)?;
    let template = config.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        out.push_str(&rest[..open]);
        out.push_str(&placeholder(&rest[open + 1..open + close], id, event_type, tenant, &payload));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

struct SlackMessage;

impl Guest for SlackMessage {
    fn transform(event: Event, endpoint: Endpoint) -> Result<Request, String> {
        let text = text(&event.id, &event.event_type, &event.tenant, &event.payload, &endpoint.config)?;
        let body = sdk::serde_json::json!({ "text": text }).to_string();
        Ok(Request { body: body.into_bytes(), content_type: "application/json".into(), headers: Vec::new() })
    }
}

sdk::transform_plugin!(SlackMessage);

#[cfg(test)]
mod tests {
    use super::text;

    #[test]
    fn default_template_mentions_type_id_and_tenant() {
        let out = text("evt_1", "invoice.paid", "acme", r#"{"a":1}"#, "{}").unwrap();
        assert_eq!(out, r#"*invoice.paid* (evt_1) for acme: {"a":1}"#);
    }

    #[test]
    fn custom_template_reads_payload_fields() {
        let config = r#"{"template": "{payload.customer.name} paid {payload.amount} {payload.nope}!"}"#;
        let out = text("e", "t", "x", r#"{"customer": {"name": "Ada"}, "amount": 12.5}"#, config).unwrap();
        assert_eq!(out, "Ada paid 12.5 !");
    }
}
