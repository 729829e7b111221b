//! Plugins in real deliveries: a real Switchyard (in-process through `switchyard::run`), the example plugins built
//! for wasm32-wasip2, and a real local receiver. Everything goes through the REST API, the plugins directory and
//! the receiver, as an operator and a platform team would.
//!
//! The plugins are built by `./tests/run`; without them these tests skip locally and fail under `CI=true`.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/plugins.rs"]
mod plugins;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/store_pg.rs"]
mod store_pg;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use harness::{attempts_log, str_field, Api, Server};
use receiver::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(30);

struct World {
    server: Server,
    admin: Api,
    api: Api,
    receiver: Receiver,
}

async fn world() -> World {
    // The shipped 50 ms deadline is for release builds on a quiet machine; these tests run a debug host next to
    // other test binaries, and each failure mode must show as itself rather than as a missed deadline.
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let server =
        Server::start_configured(dir, |config| config.plugin_limits.deadline = Duration::from_millis(500)).await;
    let admin = Api::admin(&server.base_url);
    let api = Api::new_tenant(&server.base_url, "plugins").await;
    let receiver = Receiver::start().await;
    World { server, admin, api, receiver }
}

/// `PUT /api/v1/plugins/{name}`; returns the sha256 of the new latest version.
async fn upload(admin: &Api, name: &str, bytes: &[u8]) -> String {
    let (status, body) = admin.send_bytes(Method::PUT, &format!("/api/v1/plugins/{name}"), bytes.to_vec()).await;
    assert!(status == 200 || status == 201, "uploading {name}: HTTP {status}: {body}");
    str_field(&body, "latest").to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Waits until `admin`'s node serves `sha256` as the latest version of plugin `name`, or (with `None`) no longer
/// knows the plugin.
async fn wait_for_plugin(admin: &Api, name: &str, sha256: Option<&str>) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, body) = admin.send(Method::GET, &format!("/api/v1/plugins/{name}"), None).await;
        let latest = (status == 200).then(|| body["latest"].as_str().map(String::from)).flatten();
        if latest.as_deref() == sha256 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "plugin {name}: HTTP {status} {body} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates an endpoint at the receiver (`/hook`) with `extra` merged in; returns its id.
async fn endpoint(world: &World, extra: Value) -> String {
    let mut body = json!({ "url": world.receiver.url("/hook"), "retry": { "schedule": ["1s"], "max_attempts": 10 } });
    for (key, value) in extra.as_object().expect("extra fields as an object") {
        body[key] = value.clone();
    }
    let created = world.api.create_endpoint(body).await;
    str_field(&created, "id").to_string()
}

/// The same component with a custom section appended: identical behaviour, a different sha256 (a "new version").
fn rebuilt(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"switchyard-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(payload.len()).expect("short tag")); // LEB128 size, < 128
    out.extend_from_slice(&payload);
    out
}

fn transform_sha(delivery: &Value) -> &str {
    delivery["plugin_versions"]["transform"]["sha256"].as_str().unwrap_or_else(|| panic!("no transform: {delivery}"))
}

#[tokio::test]
async fn filter_keeps_and_drops_through_real_deliveries() {
    let Some([filter]) = plugins::plugins(["amount-threshold"]) else { return };
    let w = world().await;
    let sha = upload(&w.admin, "amount-threshold", &filter).await;
    let config = json!({ "field": "amount", "above": 100 });
    let ep = endpoint(&w, json!({ "filter": { "plugin": "amount-threshold", "config": config } })).await;

    let big = w.api.publish("payment.succeeded", json!({ "amount": 150 })).await;
    let small = w.api.publish("payment.succeeded", json!({ "amount": 50 })).await;
    let big = w.api.delivery_of(str_field(&big, "id"), &ep).await;
    let small = w.api.delivery_of(str_field(&small, "id"), &ep).await;

    let dropped = w.api.wait_status(str_field(&small, "id"), "dropped", WAIT).await;
    assert!(str_field(&dropped, "last_error").contains("dropped by filter `amount-threshold`"), "{dropped}");
    assert_eq!(dropped["plugin_versions"]["filter"]["sha256"], sha.as_str());
    assert!(attempts_log(&dropped).is_empty(), "a dropped delivery is never sent: {dropped}");
    let kept = w.api.wait_status(str_field(&big, "id"), "succeeded", WAIT).await;
    assert_eq!(kept["plugin_versions"]["filter"]["sha256"], sha.as_str());

    let requests = w.receiver.requests();
    assert_eq!(requests.len(), 1, "only the kept event reaches the receiver");
    assert_eq!(requests[0].json()["data"]["amount"], 150);
    // Dropped deliveries are listed (and so counted) by status.
    let listed = w.api.get(&format!("/api/v1/deliveries?status=dropped&endpoint_id={ep}")).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    let stats = w.admin.get("/api/v1/plugins/amount-threshold").await;
    assert_eq!(stats["versions"][0]["calls"], 2, "{stats}");
    assert_eq!(stats["versions"][0]["interfaces"], json!(["filter"]));
    let metrics = harness::scrape_metrics(&w.server.base_url).await;
    assert!(metrics.lines().any(|line| line == "switchyard_deliveries_dropped_total 1"), "{metrics}");
    let calls =
        r#"switchyard_plugin_call_duration_seconds_count{plugin="amount-threshold",interface="filter",result="ok"} 2"#;
    assert!(metrics.lines().any(|line| line == calls), "{metrics}");
}

/// An event as large as the API accepts must fit a plugin call too: the plugin limits follow `max_payload_bytes`.
#[tokio::test]
async fn a_payload_above_a_mebibyte_passes_through_a_filter() {
    let Some([filter]) = plugins::plugins(["amount-threshold"]) else { return };
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let server = Server::start_configured(dir, |config| {
        config.plugin_limits.deadline = Duration::from_millis(500);
        config.max_payload_bytes = 4 << 20;
    })
    .await;
    let admin = Api::admin(&server.base_url);
    let api = Api::new_tenant(&server.base_url, "large").await;
    let receiver = Receiver::start().await;
    upload(&admin, "amount-threshold", &filter).await;
    let created = api
        .create_endpoint(json!({
            "url": receiver.url("/hook"),
            "retry": { "schedule": ["1s"] },
            "filter": { "plugin": "amount-threshold", "config": { "field": "amount", "above": 100 } },
        }))
        .await;
    let ep = str_field(&created, "id").to_string();

    let padding = "x".repeat(3 << 19);
    let event = api.publish("payment.succeeded", json!({ "amount": 150, "padding": padding })).await;
    let delivery = api.delivery_of(str_field(&event, "id"), &ep).await;
    let delivered = api.wait_status(str_field(&delivery, "id"), "succeeded", WAIT).await;
    assert_eq!(attempts_log(&delivered).len(), 1, "the first attempt passes the filter: {delivered}");
    assert_eq!(receiver.requests()[0].json()["data"]["padding"].as_str().map(str::len), Some(3 << 19));
}

#[tokio::test]
async fn transform_output_is_stored_signed_and_resent_identically() {
    let Some([slack]) = plugins::plugins(["slack-message"]) else { return };
    let w = world().await;
    let sha = upload(&w.admin, "slack-message", &slack).await;
    let created = w
        .api
        .create_endpoint(json!({
            "url": w.receiver.url("/hook"),
            "retry": { "schedule": ["1s"] },
            "transform": { "plugin": "slack-message", "config": { "template": "{type}: {payload.amount}" } },
        }))
        .await;
    let ep = str_field(&created, "id");
    let secret = str_field(&created, "secret");
    w.receiver.push([Reply::status(500)]);

    let event = w.api.publish("invoice.paid", json!({ "amount": 42 })).await;
    let delivery = w.api.delivery_of(str_field(&event, "id"), ep).await;
    // Changing the binding after the first attempt must not change what the retry sends.
    w.receiver.wait_for_requests(1, WAIT).await;
    let changed = json!({ "transform": { "plugin": "slack-message", "config": { "template": "changed" } } });
    w.api.expect(Method::PATCH, &format!("/api/v1/endpoints/{ep}"), Some(changed), 200).await;
    let done = w.api.wait_status(str_field(&delivery, "id"), "succeeded", WAIT).await;
    assert_eq!(attempts_log(&done).len(), 2, "{done}");
    assert_eq!(transform_sha(&done), sha);

    let requests = w.receiver.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.json(), json!({ "text": "invoice.paid: 42" }));
        // The transformed body is what is signed.
        let id = request.header("webhook-id").expect("webhook-id");
        let timestamp: i64 = request.header("webhook-timestamp").expect("timestamp").parse().expect("seconds");
        let signature = request.header("webhook-signature").expect("signature");
        assert!(switchyard::signing::verify_standard(secret, id, timestamp, &request.body, signature));
    }
    assert_eq!(requests[0].body, requests[1].body, "a retry resends the stored bytes");
}

#[tokio::test]
async fn simulate_returns_what_a_real_delivery_sends() {
    let Some([redact, filter]) = plugins::plugins(["redact", "amount-threshold"]) else { return };
    let w = world().await;
    upload(&w.admin, "redact", &redact).await;
    upload(&w.admin, "amount-threshold", &filter).await;
    let ep = endpoint(
        &w,
        json!({
            "headers": { "x-team": "payments" },
            "subscriptions": [{ "event_type": "card.*" }],
            "filter": { "plugin": "amount-threshold", "config": { "field": "amount", "above": 10 } },
            "transform": { "plugin": "redact", "config": { "fields": ["card.number"] } },
        }),
    )
    .await;
    let data = json!({ "amount": 99, "card": { "number": "4242424242424242", "brand": "visa" } });
    let simulate = |event_type: &str, data: Value| {
        let path = format!("/api/v1/endpoints/{ep}/simulate");
        let body = json!({ "type": event_type, "data": data });
        let api = w.api.clone();
        async move { api.expect(Method::POST, &path, Some(body), 200).await }
    };

    let simulated = simulate("card.charged", data.clone()).await;
    assert_eq!(simulated["matched"], true);
    assert_eq!(simulated["filter_decision"], "keep");
    assert!(simulated["plugin_error"].is_null());
    let logs: Vec<&str> = simulated["logs"].as_array().unwrap().iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(logs.contains(&"redacted 1 field(s)"), "{simulated}");
    let request = &simulated["request"];
    assert_eq!(request["url"], w.receiver.url("/hook"));
    let simulated_body: Value = serde_json::from_str(str_field(request, "body")).unwrap();
    assert_eq!(simulated_body, json!({ "amount": 99, "card": { "brand": "visa" } }));
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "x-team"] {
        assert!(request["headers"][header].is_string(), "simulate shows `{header}`: {simulated}");
    }
    // Nothing was stored or sent.
    assert_eq!(w.api.get("/api/v1/deliveries").await["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(w.receiver.count(), 0);

    // A real delivery of the same event sends the same body and the same set of headers.
    let event = w.api.publish("card.charged", data).await;
    let delivery = w.api.delivery_of(str_field(&event, "id"), &ep).await;
    w.api.wait_status(str_field(&delivery, "id"), "succeeded", WAIT).await;
    let sent = &w.receiver.requests()[0];
    assert_eq!(sent.body, str_field(request, "body").as_bytes());
    let simulated_names: BTreeSet<String> = request["headers"].as_object().unwrap().keys().cloned().collect();
    let sent_names: BTreeSet<String> = sent
        .headers
        .keys()
        .filter(|name| simulated_names.contains(*name) || name.starts_with("webhook-"))
        .cloned()
        .collect();
    assert_eq!(simulated_names.iter().filter(|n| n.starts_with("webhook-")).count(), 3);
    assert!(simulated_names.is_superset(&sent_names), "{simulated_names:?} vs {sent_names:?}");

    let dropped = simulate("card.charged", json!({ "amount": 1 })).await;
    assert_eq!(dropped["filter_decision"], "drop");
    assert!(dropped["request"].is_null());
    assert!(str_field(&dropped, "dropped_reason").contains("amount-threshold"));
    let unmatched = simulate("invoice.paid", json!({ "amount": 99 })).await;
    assert_eq!(unmatched["matched"], false);
    assert!(unmatched["request"].is_null());

    // Only the simulation that returned signatures is in the audit log, with the webhook-id it signed.
    let audited = w.api.get("/api/v1/audit-log?action=endpoint.simulated").await;
    let audited = audited["data"].as_array().unwrap();
    assert_eq!(audited.len(), 1, "{audited:#?}");
    assert_eq!(audited[0]["resource_id"], ep.as_str());
    assert_eq!(audited[0]["details"]["webhook_id"], request["headers"]["webhook-id"]);
    assert_eq!(audited[0]["details"]["event_type"], "card.charged");
}

/// One version bound as filter and transform logs from two calls into one ring; the simulation shows each line once.
#[tokio::test]
async fn simulate_shows_each_log_line_once_when_one_version_has_two_roles() {
    let Some([misbehave]) = plugins::plugins(["misbehave"]) else { return };
    let w = world().await;
    upload(&w.admin, "misbehave", &misbehave).await;
    let config = json!({ "mode": "log", "count": 2 });
    let ep = endpoint(
        &w,
        json!({
            "filter": { "plugin": "misbehave", "config": config },
            "transform": { "plugin": "misbehave", "config": config },
        }),
    )
    .await;
    let body = json!({ "type": "card.charged", "data": { "amount": 1 } });
    let simulated = w.api.expect(Method::POST, &format!("/api/v1/endpoints/{ep}/simulate"), Some(body), 200).await;
    let logs: Vec<&str> = simulated["logs"].as_array().unwrap().iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(logs, ["line 0", "line 1", "line 0", "line 1"], "two lines from each of the two calls: {simulated}");
}

#[tokio::test]
async fn retry_policy_decides_and_a_failing_policy_falls_back_to_the_default() {
    let Some([hours, misbehave]) = plugins::plugins(["business-hours", "misbehave"]) else { return };
    let w = world().await;
    let hours_sha = upload(&w.admin, "business-hours", &hours).await;
    upload(&w.admin, "misbehave", &misbehave).await;
    // Always open, but give up at once: the first failure is final.
    let always_open =
        json!({ "open_hour": 0, "close_hour": 24, "days": [1, 2, 3, 4, 5, 6, 7], "give_up_after_secs": 0 });
    let give_up = endpoint(&w, json!({ "retry_policy": { "plugin": "business-hours", "config": always_open } })).await;
    let trapping =
        endpoint(&w, json!({ "retry_policy": { "plugin": "misbehave", "config": { "mode": "trap" } } })).await;
    w.receiver.set_default(Reply::status(503));

    let event = w.api.publish("order.created", json!({})).await;
    let given_up = w.api.delivery_of(str_field(&event, "id"), &give_up).await;
    let given_up = w.api.wait_status(str_field(&given_up, "id"), "dead", WAIT).await;
    assert_eq!(attempts_log(&given_up).len(), 1, "{given_up}");
    assert!(str_field(&given_up, "last_error").contains("retry policy gave up"), "{given_up}");
    assert_eq!(given_up["plugin_versions"]["retry_policy"]["sha256"], hours_sha.as_str());

    let fallback = w.api.delivery_of(str_field(&event, "id"), &trapping).await;
    let fallback = w
        .api
        .wait_delivery(str_field(&fallback, "id"), "a failed attempt", WAIT, |d| d["attempts"].as_i64() >= Some(1))
        .await;
    assert_eq!(fallback["status"], "failed", "the default schedule (1s, 10 attempts) retries: {fallback}");
    assert!(str_field(&fallback, "last_error").contains("default retry schedule applied"), "{fallback}");
    assert!(str_field(&fallback, "last_error").contains("trapped"), "{fallback}");
}

#[tokio::test]
async fn misbehaving_plugins_fail_their_own_deliveries_only_and_a_fixed_version_recovers_them() {
    let Some([misbehave, slack]) = plugins::plugins(["misbehave", "slack-message"]) else { return };
    let w = world().await;
    upload(&w.admin, "misbehave", &misbehave).await;
    let mut broken = BTreeMap::new();
    for (mode, expected) in [
        ("trap", &["trapped"][..]),
        ("loop", &["deadline"]),
        // On a loaded machine growing to the limit, or writing 2 MB out, can take longer than the deadline;
        // either stops it.
        ("memory", &["memory limit", "deadline"]),
        ("oversized", &["output too large", "deadline"]),
        ("invalid-json", &["invalid output"]),
        ("bad-header", &["invalid output"]),
        ("error", &["returned an error"]),
    ] {
        let binding = json!({ "plugin": "misbehave", "config": { "mode": mode } });
        broken.insert(endpoint(&w, json!({ "transform": binding })).await, expected);
    }
    let healthy = endpoint(&w, json!({})).await;
    // A transform that fails until a fixed version of the plugin is loaded. Retried for a minute: on a loaded
    // machine compiling the fixed version took 20 s once, and ten attempts a second apart ran out first.
    upload(&w.admin, "fixable", &misbehave).await;
    let retried_for_a_minute = json!({ "schedule": ["2s"], "max_attempts": 30 });
    let fixable =
        endpoint(&w, json!({ "transform": { "plugin": "fixable", "config": {} }, "retry": retried_for_a_minute }))
            .await;

    let mut events = Vec::new();
    for n in 0..5 {
        events.push(str_field(&w.api.publish("order.created", json!({ "n": n })).await, "id").to_string());
    }
    // The fix first, so the delivery is still being retried: a new version of `fixable` that accepts the config.
    let stuck = w.api.delivery_of(&events[0], &fixable).await;
    let stuck = w
        .api
        .wait_delivery(str_field(&stuck, "id"), "a failed attempt", WAIT, |d| d["attempts"].as_i64() >= Some(1))
        .await;
    assert!(str_field(&stuck, "last_error").contains("invalid plugin config"), "{stuck}");
    let fixed = upload(&w.admin, "fixable", &slack).await;

    for event in &events {
        let delivery = w.api.delivery_of(event, &healthy).await;
        w.api.wait_status(str_field(&delivery, "id"), "succeeded", WAIT).await;
    }
    for (ep, expected) in &broken {
        let delivery = w.api.delivery_of(&events[0], ep).await;
        let failed = w
            .api
            .wait_delivery(str_field(&delivery, "id"), "a failed attempt", WAIT, |d| d["attempts"].as_i64() >= Some(1))
            .await;
        let error = str_field(&failed, "last_error");
        assert!(expected.iter().any(|e| error.contains(e)), "endpoint {ep}: expected {expected:?} in `{error}`");
        assert_eq!(attempts_log(&failed)[0]["outcome"], "retry", "plugin failures are retried: {failed}");
        assert!(attempts_log(&failed)[0]["status_code"].is_null(), "nothing was sent: {failed}");
    }

    // The retries pick the fixed version up.
    let recovered = w.api.wait_status(str_field(&stuck, "id"), "succeeded", Duration::from_secs(60)).await;
    assert_eq!(transform_sha(&recovered), fixed);
    let healthy_requests = w.receiver.requests().iter().filter(|r| r.json().get("text").is_none()).count();
    assert!(healthy_requests >= 5);
}

#[tokio::test]
async fn bindings_are_validated_against_loaded_plugins() {
    let Some([filter, slack]) = plugins::plugins(["amount-threshold", "slack-message"]) else { return };
    let w = world().await;
    let sha = upload(&w.admin, "amount-threshold", &filter).await;
    upload(&w.admin, "slack-message", &slack).await;
    let url = w.receiver.url("/hook");
    let cases = [
        (json!({ "filter": { "plugin": "nope" } }), "filter.plugin", "no plugin `nope` is loaded"),
        (json!({ "transform": { "plugin": "amount-threshold" } }), "transform.plugin", "does not export `transform`"),
        (json!({ "retry_policy": { "plugin": "slack-message" } }), "retry_policy.plugin", "does not export"),
        (json!({ "filter": { "plugin": "amount-threshold", "version": "abc" } }), "filter.version", "sha256"),
        (
            json!({ "filter": { "plugin": "amount-threshold", "version": "0".repeat(64) } }),
            "filter.version",
            "has no loaded version",
        ),
        (json!({ "filter": { "plugin": "../etc" } }), "filter.plugin", "letters, digits"),
        (json!({ "filter": { "plugin": "amount-threshold", "confg": {} } }), "filter.confg", "unknown field"),
    ];
    for (extra, field, message) in cases {
        let mut body = json!({ "url": url });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, answer) = w.api.send(Method::POST, "/api/v1/endpoints", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
        assert!(str_field(&answer["error"], "message").contains(message), "{body} → {answer}");
    }
    // A pinned, loaded version is fine, and PATCH binds and unbinds.
    let ep = endpoint(&w, json!({ "filter": { "plugin": "amount-threshold", "version": sha } })).await;
    let path = format!("/api/v1/endpoints/{ep}");
    let patched = w.api.expect(Method::PATCH, &path, Some(json!({ "filter": null })), 200).await;
    assert!(patched["filter"].is_null());
    let (status, answer) =
        w.api.send(Method::PATCH, &path, Some(json!({ "transform": { "plugin": "amount-threshold" } }))).await;
    assert_eq!((status.as_u16(), &answer["error"]["field"]), (400, &json!("transform.plugin")));
    let patched =
        w.api.expect(Method::PATCH, &path, Some(json!({ "transform": { "plugin": "slack-message" } })), 200).await;
    assert_eq!(patched["transform"]["plugin"], "slack-message");
}

#[tokio::test]
async fn pinned_versions_keep_their_behaviour_after_an_upgrade() {
    let Some([redact, slack]) = plugins::plugins(["redact", "slack-message"]) else { return };
    let w = world().await;
    // Version 1 of `shape` redacts; version 2 turns events into Slack messages. Both accept `{"fields": …}`?
    // No: slack-message rejects unknown config fields, so each endpoint passes the config its version reads.
    let v1 = upload(&w.admin, "shape", &redact).await;
    let pinned =
        endpoint(&w, json!({ "transform": { "plugin": "shape", "version": v1, "config": { "fields": ["secret"] } } }))
            .await;
    let v2 = upload(&w.admin, "shape", &slack).await;
    assert_ne!(v1, v2);
    let latest = endpoint(&w, json!({ "transform": { "plugin": "shape", "config": { "template": "{type}" } } })).await;

    let event = w.api.publish("user.updated", json!({ "secret": "x", "name": "Ada" })).await;
    let pinned_delivery = w.api.delivery_of(str_field(&event, "id"), &pinned).await;
    let latest_delivery = w.api.delivery_of(str_field(&event, "id"), &latest).await;
    let pinned_delivery = w.api.wait_status(str_field(&pinned_delivery, "id"), "succeeded", WAIT).await;
    let latest_delivery = w.api.wait_status(str_field(&latest_delivery, "id"), "succeeded", WAIT).await;
    assert_eq!(transform_sha(&pinned_delivery), v1);
    assert_eq!(transform_sha(&latest_delivery), v2);
    let bodies: BTreeSet<String> = w.receiver.requests().iter().map(|r| r.body_text().to_string()).collect();
    assert_eq!(bodies, BTreeSet::from([r#"{"name":"Ada"}"#.to_string(), r#"{"text":"user.updated"}"#.to_string()]));
}

#[tokio::test]
async fn plugins_api_lists_versions_and_refuses_to_delete_a_bound_plugin() {
    let Some([redact]) = plugins::plugins(["redact"]) else { return };
    let w = world().await;
    let (status, _) = w.api.send_bytes(Method::PUT, "/api/v1/plugins/redact", redact.clone()).await;
    assert_eq!(status, 403, "tenant keys cannot install plugins");
    let (status, answer) = w.admin.send_bytes(Method::PUT, "/api/v1/plugins/redact", b"not wasm".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(!w.server.data_dir().join("plugins/redact.wasm").exists(), "a broken upload never reaches the directory");
    let (status, answer) = w.admin.send_bytes(Method::PUT, "/api/v1/plugins/bad%20name", redact.clone()).await;
    assert_eq!((status.as_u16(), &answer["error"]["field"]), (400, &json!("name")));

    let sha = upload(&w.admin, "redact", &redact).await;
    assert_eq!(std::fs::read(w.server.data_dir().join("plugins/redact.wasm")).unwrap(), redact);
    let ep = endpoint(&w, json!({ "transform": { "plugin": "redact", "config": { "fields": ["pan"] } } })).await;
    let event = w.api.publish("card.added", json!({ "pan": "4242" })).await;
    let delivery = w.api.delivery_of(str_field(&event, "id"), &ep).await;
    w.api.wait_status(str_field(&delivery, "id"), "succeeded", WAIT).await;

    let listed = w.admin.get("/api/v1/plugins").await;
    let plugin = &listed["data"][0];
    assert_eq!(plugin["name"], "redact");
    assert_eq!(plugin["latest"], sha.as_str());
    let version = &plugin["versions"][0];
    assert_eq!(version["sha256"], sha.as_str());
    assert_eq!(version["size_bytes"], redact.len());
    assert_eq!(version["interfaces"], json!(["transform"]));
    assert_eq!(version["calls"], 1);
    assert_eq!(version["errors"], 0);
    assert!(version["p50_us"].as_u64().is_some() && version["p99_us"].as_u64().is_some(), "{version}");
    assert_eq!(version["recent_logs"][0]["message"], "redacted 1 field(s)");
    assert_eq!(version["recent_logs"][0]["event_id"], event["id"]);
    assert!(version["loaded_at"].is_string());

    let (status, answer) = w.admin.send(Method::DELETE, "/api/v1/plugins/redact", None).await;
    assert_eq!(status, 409, "{answer}");
    assert!(str_field(&answer["error"], "message").contains(&ep));
    w.api.expect(Method::PATCH, &format!("/api/v1/endpoints/{ep}"), Some(json!({ "transform": null })), 200).await;
    w.admin.expect(Method::DELETE, "/api/v1/plugins/redact", None, 204).await;
    w.admin.expect(Method::GET, "/api/v1/plugins/redact", None, 404).await;
    assert!(!w.server.data_dir().join("plugins/redact.wasm").exists());
    w.admin.expect(Method::DELETE, "/api/v1/plugins/redact", None, 404).await;

    // Plugin changes belong to no tenant: the admin key reads them when it names none.
    let server_log = w.admin.get("/api/v1/audit-log").await;
    let actions: Vec<(&Value, &Value, &Value)> =
        server_log["data"].as_array().unwrap().iter().map(|e| (&e["action"], &e["resource_id"], &e["actor"])).collect();
    assert_eq!(
        actions,
        [
            (&json!("plugin.deleted"), &json!("redact"), &json!("admin")),
            (&json!("plugin.uploaded"), &json!("redact"), &json!("admin"))
        ],
        "{server_log:#}"
    );
    let uploads = w.admin.get("/api/v1/audit-log?action=plugin.uploaded&resource_id=redact").await;
    assert_eq!(uploads["data"].as_array().unwrap().len(), 1, "{uploads:#}");
    let tenant_log = w.api.get("/api/v1/audit-log?action=plugin.uploaded").await;
    assert_eq!(tenant_log["data"], json!([]), "no tenant's log lists them");
}

/// The hot-swap guarantee under load: a new version dropped into the plugins directory while 5,000 events flow.
/// Every event is delivered exactly once, each delivery records the version it used, the versions change over at
/// one point in time, and a broken file afterwards leaves the new version live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_during_a_stream_of_5000_events() {
    const EVENTS: usize = 5_000;
    const BATCH: usize = 100;
    let Some([slack]) = plugins::plugins(["slack-message"]) else { return };
    let w = world().await;
    let dir = w.server.data_dir().join("plugins");
    let v1_bytes = rebuilt(&slack, "v1");
    let v2_bytes = rebuilt(&slack, "v2");
    let v1 = upload(&w.admin, "hot", &v1_bytes).await;
    let ep = endpoint(&w, json!({ "transform": { "plugin": "hot", "config": { "template": "{id}" } } })).await;

    let mut published = BTreeSet::new();
    let mut swapped_after = None;
    for batch in 0..EVENTS / BATCH {
        if batch == EVENTS / BATCH - 10 {
            // The stream goes on while the new version loads; its last 1,000 events wait for it to serve, so
            // some surely run on it however fast the router delivers the rest.
            harness_wait_latest(&w.admin, "hot", &v1, WAIT).await;
        }
        let events: Vec<Value> =
            (0..BATCH).map(|n| json!({ "type": "metric.tick", "data": { "n": batch * BATCH + n } })).collect();
        let answer = w.api.expect(Method::POST, "/api/v1/events/batch", Some(json!({ "events": events })), 202).await;
        for item in answer["data"].as_array().expect("batch results") {
            published.insert(str_field(item, "id").to_string());
        }
        if batch == EVENTS / BATCH / 2 {
            // What an operator does: write the file next to the old one and rename it into place.
            let temporary = dir.join(".hot.wasm.partial");
            std::fs::write(&temporary, &v2_bytes).unwrap();
            std::fs::rename(&temporary, dir.join("hot.wasm")).unwrap();
            swapped_after = Some(published.len());
        }
    }
    assert_eq!(published.len(), EVENTS);
    let v2 = harness_wait_latest(&w.admin, "hot", &v1, WAIT).await;
    assert_eq!(v2, plugin_sha(&v2_bytes));

    // The receiver sees each event once (the transform puts the event id in the body).
    let requests = w.receiver.wait_for_requests(EVENTS, Duration::from_secs(180)).await;
    let mut seen = BTreeMap::new();
    for request in &requests {
        *seen.entry(request.json()["text"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), EVENTS, "every event arrived");
    assert!(seen.values().all(|&n| n == 1), "no event arrived twice");
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), published);

    // The router's record: one successful attempt per delivery, each with the version it used. A receiver sees
    // a request before its attempt's record is committed, so the last few may still be recording.
    let deliveries = settled_deliveries(&w.api, &ep, WAIT).await;
    assert_eq!(deliveries.len(), EVENTS);
    let mut by_version: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for delivery in &deliveries {
        assert_eq!(delivery["status"], "succeeded", "{delivery}");
        if delivery["attempts"] != 1 {
            // On a loaded machine a transform can miss its deadline; that attempt fails before sending anything
            // and is retried. Exactly one attempt per delivery reached the receiver.
            let detail = w.api.delivery(str_field(delivery, "id")).await;
            let answered = attempts_log(&detail).iter().filter(|a| !a["status_code"].is_null()).count();
            assert_eq!(answered, 1, "{detail}");
        }
        by_version.entry(transform_sha(delivery).to_string()).or_default().push(delivery);
    }
    assert_eq!(by_version.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([v1.clone(), v2.clone()]));
    // One changeover: no attempt started on v1 after the first one on v2, up to the scheduling jitter between an
    // attempt reading the clock and resolving the version. Only the attempts near the boundary need looking at.
    let last_v1 = attempt_starts(&w.api, &by_version[&v1], Boundary::Last).await.into_iter().max().unwrap();
    let first_v2 = attempt_starts(&w.api, &by_version[&v2], Boundary::First).await.into_iter().min().unwrap();
    assert!(last_v1 <= first_v2 + 50, "an attempt started on v1 at {last_v1}, after v2 first served at {first_v2}");
    println!(
        "hot swap after {} published events: {} deliveries on v1, {} on v2",
        swapped_after.unwrap(),
        by_version[&v1].len(),
        by_version[&v2].len()
    );

    // A broken file does not replace the live version.
    std::fs::write(dir.join("hot.wasm"), b"\0asm broken").unwrap();
    let plugin = wait_plugin(&w.admin, "hot", WAIT, |p| !p["last_load_error"].is_null()).await;
    assert_eq!(plugin["latest"], v2.as_str());
    let event = w.api.publish("metric.tick", json!({ "n": "after" })).await;
    let delivery = w.api.delivery_of(str_field(&event, "id"), &ep).await;
    let delivery = w.api.wait_status(str_field(&delivery, "id"), "succeeded", WAIT).await;
    assert_eq!(transform_sha(&delivery), v2);
}

enum Boundary {
    First,
    Last,
}

/// Start times (ms) of the successful attempts of the 100 deliveries that finished first (or last): the attempts of
/// the others started before (or after) those finished.
async fn attempt_starts(api: &Api, deliveries: &[&Value], boundary: Boundary) -> Vec<i64> {
    let finished = |d: &&&Value| str_field(d, "updated_at").to_string();
    let mut sorted: Vec<&&Value> = deliveries.iter().collect();
    sorted.sort_by_key(finished);
    let near: Vec<&&Value> = match boundary {
        Boundary::First => sorted.into_iter().take(100).collect(),
        Boundary::Last => sorted.into_iter().rev().take(100).collect(),
    };
    let mut starts = Vec::new();
    for delivery in near {
        let detail = api.delivery(str_field(delivery, "id")).await;
        // The last attempt is the one that prepared the delivery (earlier ones failed before sending).
        let started = str_field(attempts_log(&detail).last().expect("an attempt"), "started_at");
        starts.push(chrono::DateTime::parse_from_rfc3339(started).unwrap().timestamp_millis());
    }
    starts
}

fn plugin_sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn wait_plugin(admin: &Api, name: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let plugin = admin.get(&format!("/api/v1/plugins/{name}")).await;
        if done(&plugin) {
            return plugin;
        }
        assert!(std::time::Instant::now() < deadline, "plugin {name}: timed out; last: {plugin}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the plugin's latest version is no longer `old`; returns the new sha256.
async fn harness_wait_latest(admin: &Api, name: &str, old: &str, timeout: Duration) -> String {
    let plugin = wait_plugin(admin, name, timeout, |p| p["latest"].as_str().is_some_and(|latest| latest != old)).await;
    str_field(&plugin, "latest").to_string()
}

/// The endpoint's deliveries once none is waiting or in flight any more (or after `timeout`, as they are then).
async fn settled_deliveries(api: &Api, endpoint_id: &str, timeout: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let deliveries = all_deliveries(api, endpoint_id).await;
        let unsettled =
            deliveries.iter().any(|d| ["pending", "delivering", "failed"].contains(&str_field(d, "status")));
        if !unsettled || tokio::time::Instant::now() > deadline {
            return deliveries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_deliveries(api: &Api, endpoint_id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/deliveries?endpoint_id={endpoint_id}&limit=100");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = api.get(&path).await;
        all.extend(page["data"].as_array().expect("data").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
}

/// Retry and requeue resend what the first attempt prepared, unless told to run the plugins again: after a
/// transform's config was fixed, the operator gets the new output to a receiver that rejected the old one.
#[tokio::test]
async fn a_resend_runs_the_transform_again_only_when_asked() {
    let Some([redact]) = plugins::plugins(["redact"]) else { return };
    let w = world().await;
    upload(&w.admin, "redact", &redact).await;
    let ep = endpoint(&w, json!({ "transform": { "plugin": "redact", "config": { "fields": ["secret"] } } })).await;
    w.receiver.push([Reply::status(400)]);
    let event = w.api.publish("user.updated", json!({ "secret": "x", "name": "Ada" })).await;
    let delivery = w.api.delivery_of(str_field(&event, "id"), &ep).await;
    let id = str_field(&delivery, "id").to_string();
    let dead = w.api.wait_status(&id, "dead", WAIT).await;
    assert_eq!(dead["transform_output"]["body"], r#"{"name":"Ada"}"#, "what the transform made is shown: {dead:#}");
    assert_eq!(dead["transform_output"]["content_type"], "application/json", "{dead:#}");
    let fixed = json!({ "transform": { "plugin": "redact", "config": { "fields": ["name"] } } });
    w.api.expect(Method::PATCH, &format!("/api/v1/endpoints/{ep}"), Some(fixed), 200).await;

    let requeue = json!({ "delivery_ids": [id] });
    w.api.expect(Method::POST, "/api/v1/dead-letters/requeue", Some(requeue), 200).await;
    w.api.wait_status(&id, "succeeded", WAIT).await;
    let rerun = Some(json!({ "rerun_plugins": true }));
    w.api.expect(Method::POST, &format!("/api/v1/deliveries/{id}/retry"), rerun, 202).await;
    let rerun =
        w.api.wait_delivery(&id, "a third attempt", WAIT, |d| d["attempts"] == 3 && d["status"] == "succeeded").await;
    assert_eq!(rerun["transform_output"]["body"], r#"{"secret":"x"}"#, "{rerun:#}");
    let bodies: Vec<String> = w.receiver.requests().iter().map(|r| r.body_text().to_string()).collect();
    assert_eq!(
        bodies,
        [r#"{"name":"Ada"}"#, r#"{"name":"Ada"}"#, r#"{"secret":"x"}"#],
        "the same bytes, then new ones"
    );
}

/// Two nodes on one PostgreSQL database: events published through either are delivered once. A plugin file
/// copied into one node's directory is that node's alone: the other refuses to bind it, but does not let a binding
/// made elsewhere block unrelated changes to the endpoint. A plugin uploaded through the API to one node is soon
/// live on the other too, and so is its deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_deliveries_and_plugins_uploaded_through_the_api() {
    const EVENTS: usize = 60;
    let Some([redact, slack]) = plugins::plugins(["redact", "slack-message"]) else { return };
    let Some(db) = store_pg::PostgresTestDatabase::create("plugin_delivery::two_nodes").await else { return };
    let node = |url: String| {
        move |config: &mut switchyard::config::Config| {
            config.database_url = url;
            config.plugin_limits.deadline = Duration::from_millis(500);
        }
    };
    let dir_a = tempfile::tempdir().unwrap();
    let plugins_a = dir_a.path().join("plugins");
    let a = Server::start_configured(dir_a, node(db.url.clone())).await;
    let dir_b = tempfile::tempdir().unwrap();
    let plugins_b = dir_b.path().join("plugins");
    let b = Server::start_configured(dir_b, node(db.url.clone())).await;
    let api_a = Api::new_tenant(&a.base_url, "two-nodes").await;
    let api_b = api_a.at(&b.base_url);
    let receiver = Receiver::start().await;

    let plain = api_a.create_endpoint(json!({ "url": receiver.url("/plain") })).await;
    let plain = str_field(&plain, "id").to_string();
    let mut published = BTreeSet::new();
    for n in 0..EVENTS {
        let api = if n % 2 == 0 { &api_a } else { &api_b };
        published.insert(str_field(&api.publish("order.created", json!({ "n": n })).await, "id").to_string());
    }
    receiver.wait_for_requests(EVENTS, WAIT).await;
    // By the router's record: every delivery succeeded at its first attempt, so neither node sent one twice.
    let deliveries = all_deliveries(&api_a, &plain).await;
    assert_eq!(deliveries.len(), EVENTS);
    for delivery in &deliveries {
        let delivery = api_b.wait_status(str_field(delivery, "id"), "succeeded", WAIT).await;
        assert_eq!(delivery["attempts"], 1, "{delivery:#}");
    }
    let ids: Vec<String> =
        receiver.requests().iter().filter_map(|r| r.header("webhook-id").map(String::from)).collect();
    assert_eq!(ids.len(), EVENTS, "each event once, through either node");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), published);

    let (admin_a, admin_b) = (Api::admin(&a.base_url), Api::admin(&b.base_url));
    std::fs::write(plugins_a.join("redact.wasm"), &redact).unwrap();
    wait_for_plugin(&admin_a, "redact", Some(&sha256_hex(&redact))).await;
    let endpoint_path = format!("/api/v1/endpoints/{plain}");
    let bind = json!({ "transform": { "plugin": "redact", "config": { "fields": ["n"] } } });
    let (status, answer) = api_b.send(Method::PATCH, &endpoint_path, Some(bind.clone())).await;
    assert_eq!((status.as_u16(), &answer["error"]["field"]), (400, &json!("transform.plugin")), "{answer}");
    api_a.expect(Method::PATCH, &endpoint_path, Some(bind.clone()), 200).await;
    let renamed = json!({ "description": "edited on the node without the plugin" });
    let edited = api_b.expect(Method::PATCH, &endpoint_path, Some(renamed), 200).await;
    assert_eq!(edited["transform"]["plugin"], "redact", "{edited:#}");

    // Uploaded through node A's API: node B installs it into its own directory, and binds it.
    let unbind = json!({ "transform": null });
    api_a.expect(Method::PATCH, &endpoint_path, Some(unbind.clone()), 200).await;
    std::fs::remove_file(plugins_a.join("redact.wasm")).unwrap();
    admin_a.expect(Method::DELETE, "/api/v1/plugins/redact", None, 204).await;
    let sha256 = upload(&admin_a, "redact", &redact).await;
    wait_for_plugin(&admin_b, "redact", Some(&sha256)).await;
    // Replaced through B, then uploaded again through A before B's next round: both end on the last upload
    // (B once skipped it as the version it had already installed).
    upload(&admin_b, "redact", &slack).await;
    assert_eq!(upload(&admin_a, "redact", &redact).await, sha256);
    wait_for_plugin(&admin_b, "redact", Some(&sha256)).await;
    wait_for_plugin(&admin_a, "redact", Some(&sha256)).await;
    // Both files carry the time of the upload, not of their writing: B's sync wrote its copy later.
    let modified = |dir: &std::path::Path| std::fs::metadata(dir.join("redact.wasm")).unwrap().modified().unwrap();
    assert_eq!(modified(&plugins_a), modified(&plugins_b));
    api_b.expect(Method::PATCH, &endpoint_path, Some(bind), 200).await;
    let n = api_b.publish("order.created", json!({ "n": "hidden" })).await;
    let redacted = receiver.wait_for_requests(EVENTS + 1, WAIT).await;
    let last = redacted.iter().find(|r| r.header("webhook-id") == Some(str_field(&n, "id"))).expect("sent");
    assert!(!last.body_text().contains("hidden"), "transformed by the uploaded plugin: {}", last.body_text());

    // Deleted through node B's API: gone from node A too.
    api_b.expect(Method::PATCH, &endpoint_path, Some(unbind), 200).await;
    admin_b.expect(Method::DELETE, "/api/v1/plugins/redact", None, 204).await;
    wait_for_plugin(&admin_a, "redact", None).await;
    assert!(!plugins_a.join("redact.wasm").exists(), "its file removed from node A's directory");

    // Node A is down while another version is uploaded and deleted through node B: A still has the first
    // version's file, and drops it before it answers a request again.
    upload(&admin_b, "redact", &redact).await;
    wait_for_plugin(&admin_a, "redact", Some(&sha256)).await;
    let (_, dir_a) = a.stop(Duration::from_secs(10)).await;
    assert_eq!(upload(&admin_b, "redact", &slack).await, sha256_hex(&slack));
    admin_b.expect(Method::DELETE, "/api/v1/plugins/redact", None, 204).await;
    assert!(plugins_a.join("redact.wasm").exists());
    let a = Server::start_configured(dir_a, node(db.url.clone())).await;
    Api::admin(&a.base_url).expect(Method::GET, "/api/v1/plugins/redact", None, 404).await;
    assert!(!plugins_a.join("redact.wasm").exists());

    a.stop(Duration::from_secs(10)).await;
    b.stop(Duration::from_secs(10)).await;
    db.drop_database().await;
}

/// On one node too, the database keeps what was uploaded: a node whose plugins directory was lost (a fresh
/// container with only the database on a volume) installs the uploaded plugins before it answers a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_plugins_come_back_from_the_database_at_start() {
    let Some([redact]) = plugins::plugins(["redact"]) else { return };
    let server = Server::start().await;
    let sha256 = upload(&Api::admin(&server.base_url), "redact", &redact).await;
    let (_, dir) = server.stop(Duration::from_secs(10)).await;
    let plugins_dir = dir.path().join("plugins");
    std::fs::remove_dir_all(&plugins_dir).unwrap();

    let server = Server::start_in(dir).await;
    let plugin = Api::admin(&server.base_url).expect(Method::GET, "/api/v1/plugins/redact", None, 200).await;
    assert_eq!(plugin["latest"], sha256.as_str(), "{plugin:#}");
    assert_eq!(std::fs::read(plugins_dir.join("redact.wasm")).unwrap(), redact, "written back to the directory");
}

/// The newer wins: a file copied into the directory by hand after the last upload of its name stays at the next
/// start, until the name is uploaded (or deleted) through the API again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_copied_by_hand_after_an_upload_stays_until_the_next_one() {
    let Some([redact, slack]) = plugins::plugins(["redact", "slack-message"]) else { return };
    let server = Server::start().await;
    let uploaded = upload(&Api::admin(&server.base_url), "shaper", &redact).await;
    let (_, dir) = server.stop(Duration::from_secs(10)).await;
    let file = dir.path().join("plugins").join("shaper.wasm");
    std::fs::write(&file, &slack).unwrap();

    let server = Server::start_in(dir).await;
    let admin = Api::admin(&server.base_url);
    let plugin = admin.expect(Method::GET, "/api/v1/plugins/shaper", None, 200).await;
    assert_eq!(plugin["latest"], sha256_hex(&slack).as_str(), "the copy is newer than the upload: {plugin:#}");
    assert_eq!(upload(&admin, "shaper", &redact).await, uploaded);
    assert_eq!(std::fs::read(&file).unwrap(), redact, "uploading again replaced the copy");
}
