//! Endpoints: validation, defaults, secrets (shown once, masked after), updates, status and subscriptions.

use reqwest::Method;
use serde_json::{json, Value};

use switchyard::store::Store;

use crate::support::server::{Client, TestServer};

async fn setup() -> (TestServer, Client) {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    (server, alice)
}

#[tokio::test]
async fn create_applies_defaults_and_shows_the_secret_once() {
    let (_server, alice) = setup().await;
    let created = alice.create_endpoint(json!({})).await.expect_status(201);
    let ep = &created.json;
    assert!(ep["id"].as_str().unwrap().starts_with("ep_"));
    assert_eq!(ep["url"], "http://127.0.0.1:9/hook");
    assert_eq!(ep["description"], "");
    assert_eq!(ep["status"], "active");
    assert!(ep["status_reason"].is_null());
    assert_eq!(ep["timeout_secs"], 10);
    assert_eq!(ep["headers"], json!({}));
    assert!(ep["retry"].is_null());
    assert!(ep["rate_limit"].is_null(), "no limit unless one is set");
    assert_eq!(ep["signature_scheme"], "standard");
    assert_eq!(ep["metadata"], json!({}));
    assert_eq!(ep["subscriptions"], json!([{ "event_type": "*" }]));
    let secret = created.str("secret");
    assert!(secret.starts_with("whsec_") && secret.len() > 30, "{secret}");
    let secrets = ep["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["version"], 1);
    assert_eq!(secrets[0]["status"], "active");
    assert!(secrets[0]["expires_at"].is_null());
    let hint = secrets[0]["hint"].as_str().unwrap();
    assert!(secret.starts_with(hint.trim_end_matches('…')) && hint.len() < secret.len(), "{hint}");
    assert_eq!(secrets[0].as_object().unwrap().len(), 5, "only version, status, hint, created_at, expires_at");

    let path = format!("/api/v1/endpoints/{}", created.str("id"));
    for answer in [alice.get(&path).await, alice.get("/api/v1/endpoints").await] {
        let answer = answer.expect_status(200);
        assert!(!answer.text.contains(&secret), "the secret must not be shown again: {}", answer.text);
        assert!(!answer.text.contains("\"secret\""), "{}", answer.text);
        assert!(!answer.text.contains("ciphertext"), "{}", answer.text);
    }
    let fetched = alice.get(&path).await.json;
    let mut expected = ep.clone();
    expected.as_object_mut().unwrap().remove("secret");
    assert_eq!(fetched, expected);
}

#[tokio::test]
async fn create_keeps_every_given_field() {
    let (_server, alice) = setup().await;
    let body = json!({
        "url": "https://example.com/hooks?team=billing",
        "description": "Billing",
        "timeout_secs": 30,
        "rate_limit": 25,
        "headers": { "X-Team": "billing" },
        "retry": { "schedule": ["30s", "5m", "90m"], "max_attempts": 6 },
        "signature_scheme": "stripe",
        "metadata": { "owner": "ana" },
        "subscriptions": [{ "event_type": "payment.*", "filter": "$[?@.data.amount > 1000]" }, { "event_type": "refund.created" }]
    });
    let created = alice.post("/api/v1/endpoints", body.clone()).await.expect_status(201);
    let ep = &created.json;
    for field in
        ["url", "description", "timeout_secs", "rate_limit", "headers", "signature_scheme", "metadata", "subscriptions"]
    {
        assert_eq!(ep[field], body[field], "{field}");
    }
    assert_eq!(ep["retry"], json!({ "schedule": ["30s", "5m", "1h 30m"], "max_attempts": 6 }));
    let defaulted = alice.create_endpoint(json!({ "retry": { "schedule": ["1m", "2m"] } })).await.expect_status(201);
    assert_eq!(defaulted.json["retry"], json!({ "schedule": ["1m", "2m"], "max_attempts": 3 }));
}

#[tokio::test]
async fn every_validation_rule_names_its_field() {
    let (_server, alice) = setup().await;
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let too_many_headers: serde_json::Map<String, Value> = (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let too_much_metadata: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let many_subscriptions: Vec<Value> = (0..101).map(|i| json!({ "event_type": format!("a.b{i}") })).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "url": "not a url" }), "url"),
        (json!({ "url": "ftp://example.com/" }), "url"),
        (json!({ "url": "https://user:pw@example.com/" }), "url"),
        (json!({ "url": long_url }), "url"),
        (json!({ "url": "http://example.com/" }), "url"),
        (json!({ "url": "http://10.1.2.3/" }), "url"),
        (json!({ "url": 5 }), "url"),
        (json!({ "description": "d".repeat(1001) }), "description"),
        (json!({ "timeout_secs": 0 }), "timeout_secs"),
        (json!({ "timeout_secs": 301 }), "timeout_secs"),
        (json!({ "timeout_secs": "10" }), "timeout_secs"),
        (json!({ "rate_limit": 0 }), "rate_limit"),
        (json!({ "rate_limit": 10_001 }), "rate_limit"),
        (json!({ "rate_limit": 2.5 }), "rate_limit"),
        (json!({ "rate_limit": "10" }), "rate_limit"),
        (json!({ "headers": { "Content-Type": "text/plain" } }), "headers.Content-Type"),
        (json!({ "headers": { "webhook-id": "x" } }), "headers.webhook-id"),
        (json!({ "headers": { "Switchyard-Tenant": "x" } }), "headers.Switchyard-Tenant"),
        (json!({ "headers": { "User-Agent": "x" } }), "headers.User-Agent"),
        (json!({ "headers": { "Idempotency-Key": "x" } }), "headers.Idempotency-Key"),
        (json!({ "headers": { "Stripe-Signature": "t=1,v1=ab" } }), "headers.Stripe-Signature"),
        (json!({ "headers": { "Expect": "100-continue" } }), "headers.Expect"),
        (json!({ "headers": { "Proxy-Authorization": "Basic eA==" } }), "headers.Proxy-Authorization"),
        (json!({ "headers": { "bad header": "x" } }), "headers.bad header"),
        (json!({ "headers": { "X-Ok": "new\nline" } }), "headers.X-Ok"),
        (json!({ "headers": { "X-Ok": 1 } }), "headers.X-Ok"),
        (json!({ "headers": too_many_headers }), "headers"),
        (json!({ "retry": { "schedule": [] } }), "retry.schedule"),
        (json!({ "retry": { "schedule": vec!["1m"; 21] } }), "retry.schedule"),
        (json!({ "retry": { "schedule": ["1m", "later"] } }), "retry.schedule[1]"),
        (json!({ "retry": { "schedule": ["100ms"] } }), "retry.schedule[0]"),
        (json!({ "retry": { "schedule": ["8d"] } }), "retry.schedule[0]"),
        (json!({ "retry": { "schedule": ["1m"], "max_attempts": 0 } }), "retry.max_attempts"),
        (json!({ "retry": { "schedule": ["1m"], "max_attempts": 51 } }), "retry.max_attempts"),
        (json!({ "retry": { "max_attempts": 3 } }), "retry.schedule"),
        (json!({ "retry": { "schedule": ["1m"], "jitter": true } }), "retry.jitter"),
        (json!({ "signature_scheme": "hmac-sha512" }), "signature_scheme"),
        (json!({ "metadata": too_much_metadata }), "metadata"),
        (json!({ "metadata": { "k": 1 } }), "metadata.k"),
        (json!({ "subscriptions": [] }), "subscriptions"),
        (json!({ "subscriptions": many_subscriptions }), "subscriptions"),
        (
            json!({ "subscriptions": [{ "event_type": "*" }, { "event_type": "Bad Type!" }] }),
            "subscriptions[1].event_type",
        ),
        (json!({ "subscriptions": [{ "event_type": "*", "filter": "$[?" }] }), "subscriptions[0].filter"),
        (json!({ "subscriptions": [{ "event_type": "*", "filter": 3 }] }), "subscriptions[0].filter"),
        (json!({ "subscriptions": [{ "type": "*" }] }), "subscriptions[0].type"),
        (json!({ "subscriptions": [{}] }), "subscriptions[0].event_type"),
        (json!({ "colour": "red" }), "colour"),
    ];
    for (extra, field) in cases {
        let answer = alice.create_endpoint(extra.clone()).await;
        assert_eq!(answer.status, 400, "{extra} should be rejected: {}", answer.text);
        answer.expect_invalid(field);
    }
    alice.post("/api/v1/endpoints", json!({ "description": "no url" })).await.expect_invalid("url");
    let listed = alice.get("/api/v1/endpoints").await.expect_status(200);
    assert_eq!(listed.json["data"], json!([]), "nothing invalid was stored");
}

#[tokio::test]
async fn plain_http_needs_dev_mode_and_loopback() {
    let (_server, alice) = setup().await;
    for url in ["http://localhost:8080/x", "http://127.0.0.2/x", "http://[::1]:3000/x"] {
        alice.post("/api/v1/endpoints", json!({ "url": url })).await.expect_status(201);
    }
    let production = TestServer::start_with(|config| config.dev_mode = false).await;
    let bob = production.tenant("Bob").await;
    bob.post("/api/v1/endpoints", json!({ "url": "http://127.0.0.1/x" })).await.expect_invalid("url");
    bob.post("/api/v1/endpoints", json!({ "url": "https://example.com/x" })).await.expect_status(201);
    // Without dev mode loopback is no destination at all, unless the operator allows it; http stays dev-only.
    bob.post("/api/v1/endpoints", json!({ "url": "https://127.0.0.1/x" })).await.expect_invalid("url");
    let allowing = TestServer::start_with(|config| {
        config.dev_mode = false;
        config.allowed_private_networks = vec!["127.0.0.0/8".parse().expect("a network")];
    })
    .await;
    let carol = allowing.tenant("Carol").await;
    carol.post("/api/v1/endpoints", json!({ "url": "https://127.0.0.1/x" })).await.expect_status(201);
    carol.post("/api/v1/endpoints", json!({ "url": "http://127.0.0.1/x" })).await.expect_invalid("url");
    carol.post("/api/v1/endpoints", json!({ "url": "https://10.0.0.1/x" })).await.expect_invalid("url");
}

#[tokio::test]
async fn duplicate_subscriptions_are_a_conflict() {
    let (_server, alice) = setup().await;
    let twice = json!([{ "event_type": "a.b", "filter": "$[?@.x]" }, { "event_type": "*" }, { "event_type": "a.b", "filter": "$[?@.x]" }]);
    alice.create_endpoint(json!({ "subscriptions": twice })).await.expect_error(409, "conflict", None);
    let same_type_other_filter = json!([{ "event_type": "a.b" }, { "event_type": "a.b", "filter": "$[?@.x]" }]);
    let created = alice.create_endpoint(json!({ "subscriptions": same_type_other_filter })).await.expect_status(201);
    let path = format!("/api/v1/endpoints/{}/subscriptions", created.str("id"));
    alice.put(&path, json!({ "subscriptions": twice })).await.expect_error(409, "conflict", None);
}

#[tokio::test]
async fn subscriptions_are_replaced_whole() {
    let (_server, alice) = setup().await;
    let created = alice.create_endpoint(json!({})).await.expect_status(201);
    let path = format!("/api/v1/endpoints/{}/subscriptions", created.str("id"));
    let subscriptions =
        json!([{ "event_type": "invoice.*" }, { "event_type": "user.created", "filter": "$[?@.data.vip == true]" }]);
    let replaced = alice.put(&path, json!({ "subscriptions": subscriptions })).await.expect_status(200);
    assert_eq!(replaced.json["subscriptions"], subscriptions);
    assert_eq!(
        alice.get(&format!("/api/v1/endpoints/{}", created.str("id"))).await.json["subscriptions"],
        subscriptions
    );
    alice.put(&path, json!({ "subscriptions": [] })).await.expect_invalid("subscriptions");
    alice.put(&path, json!({})).await.expect_invalid("subscriptions");
    alice
        .put(&path, json!({ "subscriptions": [{ "event_type": "x" }] }))
        .await
        .expect_invalid("subscriptions[0].event_type");
    alice
        .put("/api/v1/endpoints/ep_unknown/subscriptions", json!({ "subscriptions": [{ "event_type": "*" }] }))
        .await
        .expect_error(404, "not_found", None);
}

/// A header that carries a credential is write-only, as a signing secret is: no response shows its value.
#[tokio::test]
async fn credential_headers_are_never_shown() {
    let (_server, alice) = setup().await;
    let headers = json!({ "Authorization": "Bearer hunter2", "X-Api-Key": "k-hunter2", "X-Team": "billing" });
    let created = alice.create_endpoint(json!({ "headers": headers })).await.expect_status(201);
    let shown = json!({ "Authorization": "<redacted>", "X-Api-Key": "<redacted>", "X-Team": "billing" });
    assert_eq!(created.json["headers"], shown);
    let path = format!("/api/v1/endpoints/{}", created.str("id"));
    assert_eq!(alice.get(&path).await.expect_status(200).json["headers"], shown);
    let listed = alice.all_pages("/api/v1/endpoints", 10).await;
    assert!(!serde_json::to_string(&listed).unwrap().contains("hunter2"), "{listed:?}");
    // Sending back what a GET showed would store the placeholder as the credential.
    alice.patch(&path, json!({ "headers": shown })).await.expect_invalid("headers.Authorization");
}

#[tokio::test]
async fn patch_changes_only_what_it_names() {
    let (_server, alice) = setup().await;
    let created = alice
        .create_endpoint(json!({ "description": "old", "retry": { "schedule": ["1m"] }, "headers": { "X-A": "1" } }))
        .await
        .expect_status(201);
    let path = format!("/api/v1/endpoints/{}", created.str("id"));
    let patched = alice.patch(&path, json!({ "description": "new", "timeout_secs": 60 })).await.expect_status(200);
    assert_eq!(patched.json["description"], "new");
    assert_eq!(patched.json["timeout_secs"], 60);
    assert_eq!(patched.json["retry"], created.json["retry"]);
    assert_eq!(patched.json["headers"], json!({ "X-A": "1" }));
    assert!(patched.json.get("secret").is_none());

    let limited = alice.patch(&path, json!({ "rate_limit": 5 })).await.expect_status(200);
    assert_eq!(limited.json["rate_limit"], 5);
    assert_eq!(limited.json["description"], "new");

    let cleared = alice.patch(&path, json!({ "retry": null, "rate_limit": null })).await.expect_status(200);
    assert!(cleared.json["retry"].is_null());
    assert!(cleared.json["rate_limit"].is_null(), "null lifts the limit");
    let unchanged = alice.patch(&path, json!({})).await.expect_status(200);
    assert_eq!(unchanged.json, cleared.json);

    alice.patch(&path, json!({ "url": null })).await.expect_invalid("url");
    alice.patch(&path, json!({ "url": "ftp://x/" })).await.expect_invalid("url");
    alice.patch(&path, json!({ "timeout_secs": 0 })).await.expect_invalid("timeout_secs");
    alice.patch(&path, json!({ "rate_limit": 0 })).await.expect_invalid("rate_limit");
    alice.patch(&path, json!({ "headers": { "Host": "x" } })).await.expect_invalid("headers.Host");
    alice.patch(&path, json!({ "retry": { "schedule": ["x"] } })).await.expect_invalid("retry.schedule[0]");
    alice.patch(&path, json!({ "subscriptions": [{ "event_type": "*" }] })).await.expect_invalid("subscriptions");
    alice.patch(&path, json!({ "status": "paused" })).await.expect_invalid("status");
    alice.patch("/api/v1/endpoints/ep_unknown", json!({ "description": "x" })).await.expect_error(
        404,
        "not_found",
        None,
    );
    assert_eq!(alice.get(&path).await.json, cleared.json, "rejected patches change nothing");
}

#[tokio::test]
async fn pause_activate_and_status_filter() {
    let (_server, alice) = setup().await;
    let first = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    let second = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    let paused = alice.post(&format!("/api/v1/endpoints/{first}/pause"), json!({})).await.expect_status(200);
    assert_eq!(paused.json["status"], "paused");
    // The action routes take no body; an empty one is fine too.
    let bare = alice.request(Method::POST, &format!("/api/v1/endpoints/{first}/pause"));
    alice.send(bare).await.expect_status(200);

    let ids = |answer: crate::support::server::Answer| -> Vec<String> {
        answer.json["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(alice.get("/api/v1/endpoints?status=paused").await), [first.as_str()]);
    assert_eq!(ids(alice.get("/api/v1/endpoints?status=active").await), [second.as_str()]);
    assert_eq!(ids(alice.get("/api/v1/endpoints?status=").await), [second.as_str(), first.as_str()]);
    alice.get("/api/v1/endpoints?status=sleeping").await.expect_invalid("status");

    let active = alice.post(&format!("/api/v1/endpoints/{first}/activate"), json!({})).await.expect_status(200);
    assert_eq!(active.json["status"], "active");
    assert!(active.json["status_reason"].is_null());
    alice.post("/api/v1/endpoints/ep_unknown/pause", json!({})).await.expect_error(404, "not_found", None);
    alice.post("/api/v1/endpoints/ep_unknown/activate", json!({})).await.expect_error(404, "not_found", None);
}

/// "Who gets `invoice.paid`?": endpoints listed by the type their subscriptions select, beside the status filter;
/// a pattern in the query is refused, as it names no one type.
#[tokio::test]
async fn endpoints_are_listed_by_the_event_type_they_would_receive() {
    let (_server, alice) = setup().await;
    let subscribed = |patterns: &[&str]| {
        let subscriptions: Vec<_> = patterns.iter().map(|pattern| json!({ "event_type": pattern })).collect();
        json!({ "subscriptions": subscriptions })
    };
    let invoices = alice.create_endpoint(subscribed(&["invoice.*"])).await.expect_status(201).str("id");
    let payments = alice.create_endpoint(subscribed(&["payment.succeeded"])).await.expect_status(201).str("id");
    let everything = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    alice.post(&format!("/api/v1/endpoints/{everything}/pause"), json!({})).await.expect_status(200);
    let ids = |answer: crate::support::server::Answer| -> Vec<String> {
        answer.json["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
    };
    let listed = alice.get("/api/v1/endpoints?event_type=invoice.paid").await.expect_status(200);
    assert_eq!(ids(listed), [everything.as_str(), invoices.as_str()]);
    let listed = alice.get("/api/v1/endpoints?event_type=payment.succeeded&status=active").await;
    assert_eq!(ids(listed.expect_status(200)), [payments.as_str()]);
    let listed = alice.get("/api/v1/endpoints?event_type=switchyard.delivery.dead").await;
    assert!(ids(listed.expect_status(200)).is_empty(), "`*` does not take Switchyard's own events");
    alice.get("/api/v1/endpoints?event_type=invoice.*").await.expect_invalid("event_type");
    alice.get("/api/v1/endpoints?event_type=Invoice%20Paid").await.expect_invalid("event_type");
}

#[tokio::test]
async fn rotation_returns_the_new_secret_once_and_retires_the_old() {
    let (_server, alice) = setup().await;
    let created = alice.create_endpoint(json!({})).await.expect_status(201);
    let id = created.str("id");
    let first_secret = created.str("secret");
    let path = format!("/api/v1/endpoints/{id}/rotate-secret");

    let rotated = alice.post(&path, json!({ "grace_period": "2h" })).await.expect_status(200);
    let second_secret = rotated.str("secret");
    assert!(second_secret.starts_with("whsec_") && second_secret != first_secret);
    let secrets = rotated.json["secrets"].as_array().unwrap().clone();
    assert_eq!(secrets.iter().map(|s| s["version"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(secrets[0]["status"], "active");
    assert_eq!(secrets[1]["status"], "retiring");
    let expires = chrono::DateTime::parse_from_rfc3339(secrets[1]["expires_at"].as_str().unwrap()).unwrap();
    let in_two_hours = chrono::Utc::now() + chrono::Duration::hours(2);
    assert!((expires.timestamp() - in_two_hours.timestamp()).abs() < 60, "{expires}");

    // No body at all takes the configured grace period.
    let bare = alice.send(alice.request(Method::POST, &path)).await.expect_status(200);
    let third_secret = bare.str("secret");
    let revoked = alice.post(&path, json!({ "grace_period": "0s" })).await.expect_status(200);
    let statuses: Vec<&str> =
        revoked.json["secrets"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses[..2], ["active", "revoked"]);

    let shown = alice.get(&format!("/api/v1/endpoints/{id}")).await.expect_status(200);
    for secret in [&first_secret, &second_secret, &third_secret, &revoked.str("secret")] {
        assert!(!shown.text.contains(secret.as_str()));
    }
    alice.post(&path, json!({ "grace_period": "31d" })).await.expect_invalid("grace_period");
    // A secret brought along must have the form of one; the refusal does not repeat it.
    for bad in ["whsec_c2hvcnQ=", "no-prefix-MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64 at all!!"] {
        let refused = alice.post(&path, json!({ "secret": bad })).await;
        refused.expect_invalid("secret");
        assert!(!refused.text.contains(bad), "{}", refused.text);
        alice.create_endpoint(json!({ "secret": bad })).await.expect_invalid("secret");
    }
    let brought = alice.post(&path, json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" })).await;
    assert_eq!(brought.expect_status(200).str("secret"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let log = alice.get("/api/v1/audit-log?action=endpoint.secret_rotated").await.expect_status(200);
    assert_eq!(log.json["data"][0]["details"]["secret"], "provided");
    assert!(!log.text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    alice.post(&path, json!({ "grace_period": "soon" })).await.expect_invalid("grace_period");
    alice.post(&path, json!({ "grace": "1h" })).await.expect_invalid("grace");
    let text = alice.request(Method::POST, &path).header("content-type", "text/plain").body("1h");
    alice.send(text).await.expect_error(415, "unsupported_media_type", None);
    alice.post("/api/v1/endpoints/ep_unknown/rotate-secret", json!({})).await.expect_error(404, "not_found", None);
}

/// An endpoint may sign with an Ed25519 key (Standard Webhooks' `v1a`): made or brought, shown only by its
/// public key, kept by rotations, and only with the `standard` scheme, which alone signs with one.
#[tokio::test]
async fn an_ed25519_key_is_shown_by_its_public_key_and_only_signs_standard() {
    let (_server, alice) = setup().await;
    let created = alice.create_endpoint(json!({ "asymmetric": true })).await.expect_status(201);
    assert!(created.json.get("secret").is_none(), "the private key never leaves: {}", created.text);
    let public_key = created.str("public_key");
    assert!(public_key.starts_with("whpk_") && public_key.len() == 49, "{public_key}");
    assert_eq!(created.json["secrets"][0]["public_key"], json!(public_key));
    assert!(!created.text.contains("whsk_"), "{}", created.text);
    let id = created.str("id");
    let path = format!("/api/v1/endpoints/{id}");
    let shown = alice.get(&path).await.expect_status(200);
    assert_eq!(shown.json["secrets"][0]["public_key"], json!(public_key));
    assert!(shown.json.get("public_key").is_none(), "only create and rotate answer with it: {}", shown.text);

    // A rotation keeps the active secret's kind unless told otherwise.
    let rotate = format!("{path}/rotate-secret");
    let rotated = alice.post(&rotate, json!({ "grace_period": "1h" })).await.expect_status(200);
    assert_ne!(rotated.str("public_key"), public_key);
    let keys: Vec<&Value> = rotated.json["secrets"].as_array().unwrap().iter().map(|s| &s["public_key"]).collect();
    assert_eq!(keys[1], &json!(public_key), "the old key, retiring, still listed with its public key");
    // The HMAC schemes cannot sign with it: a scheme change waits for a shared secret.
    let to_stripe = alice.patch(&path, json!({ "signature_scheme": "stripe" })).await;
    to_stripe.expect_invalid("signature_scheme");
    let message = to_stripe.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(r#"{"asymmetric": false}"#), "{message}");
    alice.patch(&path, json!({ "signature_scheme": "hmac" })).await.expect_invalid("signature_scheme");
    let shared = alice.post(&rotate, json!({ "asymmetric": false })).await.expect_status(200);
    assert!(shared.str("secret").starts_with("whsec_") && shared.json.get("public_key").is_none());
    alice.patch(&path, json!({ "signature_scheme": "stripe" })).await.expect_status(200);
    alice.post(&rotate, json!({ "asymmetric": true })).await.expect_invalid("asymmetric");
    let log = alice.get(&format!("/api/v1/audit-log?action=endpoint.secret_rotated&resource_id={id}")).await;
    let flags: Vec<&Value> = log.json["data"].as_array().unwrap().iter().map(|e| &e["details"]["asymmetric"]).collect();
    assert_eq!(flags, [&json!(false), &json!(true)], "{}", log.text);

    // A key brought along: a 32-byte seed or libsodium's 64 bytes; never echoed.
    let seed = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    let brought = alice.create_endpoint(json!({ "secret": seed })).await.expect_status(201);
    assert_eq!(brought.str("public_key"), "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    assert!(!brought.text.contains(seed), "{}", brought.text);
    for bad in ["whsk_c2hvcnQ=", "whsk_not base64!!"] {
        let refused = alice.create_endpoint(json!({ "secret": bad })).await;
        refused.expect_invalid("secret");
        assert!(!refused.text.contains(bad), "{}", refused.text);
    }
    // `whsk_` is refused with the HMAC schemes even on text that is no key, so no new secret is ambiguous.
    let text = json!({ "secret": "whsk_my-hmac-secret-12345", "signature_scheme": "hmac" });
    alice.create_endpoint(text).await.expect_invalid("secret");
    for scheme in ["stripe", "hmac"] {
        alice.create_endpoint(json!({ "secret": seed, "signature_scheme": scheme })).await.expect_invalid("secret");
        let asked = json!({ "asymmetric": true, "signature_scheme": scheme });
        alice.create_endpoint(asked).await.expect_invalid("asymmetric");
    }
    let contradicted = json!({ "secret": seed, "asymmetric": false });
    alice.create_endpoint(contradicted).await.expect_invalid("asymmetric");
    let contradicted = json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "asymmetric": true });
    alice.create_endpoint(contradicted).await.expect_invalid("asymmetric");
    alice.create_endpoint(json!({ "asymmetric": "yes" })).await.expect_invalid("asymmetric");
}

#[tokio::test]
async fn concurrent_rotations_leave_only_secrets_that_can_sign() {
    let (server, alice) = setup().await;
    let id = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    let path = format!("/api/v1/endpoints/{id}/rotate-secret");
    let rotations = (0..8).map(|_| alice.post(&path, json!({ "grace_period": "1h" })));
    let answers = futures_util::future::join_all(rotations).await;
    let mut shown = Vec::new();
    for answer in answers {
        assert_eq!(answer.status, 200, "{}", answer.text);
        shown.push(answer.str("secret"));
    }

    // Straight from the database: every secret that signs must open with the master key, and the active one
    // must be a secret some client was given.
    let store = switchyard::store::sql::SqlStore::connect(&server.config.database_url).await.unwrap();
    let master_key =
        switchyard::secrets::MasterKey::load_or_create(&server.config.data_dir.join("master.key")).unwrap().0;
    let signing = store.signing_secrets(&id, chrono::Utc::now().timestamp_millis()).await.unwrap();
    assert_eq!(signing.len(), 9, "the active secret and eight retiring ones: {signing:?}");
    for secret in &signing {
        let aad = switchyard::secrets::secret_aad(&id, &secret.id);
        let plain = master_key
            .open(&secret.ciphertext, &aad)
            .unwrap_or_else(|_| panic!("version {} cannot be opened", secret.version));
        if secret.status == switchyard::model::SecretStatus::Active {
            assert!(shown.contains(&String::from_utf8(plain).unwrap()), "the active secret was never shown");
        }
    }
}

#[tokio::test]
async fn delete_is_final() {
    let (_server, alice) = setup().await;
    let id = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    let path = format!("/api/v1/endpoints/{id}");
    let deleted = alice.delete(&path).await.expect_status(204);
    assert!(deleted.text.is_empty());
    alice.get(&path).await.expect_error(404, "not_found", None);
    alice.delete(&path).await.expect_error(404, "not_found", None);
}
