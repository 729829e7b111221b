//! Keys, tenants and who may see what.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::server::TestServer;

#[tokio::test]
async fn missing_or_unknown_keys_are_401() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    for client in [server.anonymous(), server.admin().with_key("sy_not-a-key"), alice.with_key("")] {
        client.get("/api/v1/endpoints").await.expect_error(401, "unauthorized", None);
        client.get("/api/v1/tenants").await.expect_error(401, "unauthorized", None);
    }
    let anonymous = server.anonymous();
    let basic = anonymous.request(Method::GET, "/api/v1/endpoints").basic_auth("user", Some("pw"));
    anonymous.send(basic).await.expect_error(401, "unauthorized", None);
    // Two keys at once is ambiguous, even when one of them is valid.
    let twice = alice.request(Method::GET, "/api/v1/endpoints").header("authorization", "Bearer sy_other");
    alice.send(twice).await.expect_error(401, "unauthorized", None);
    // Authentication is checked before the body is looked at.
    server.anonymous().send_raw(Method::POST, "/api/v1/endpoints", "{").await.expect_error(401, "unauthorized", None);
}

#[tokio::test]
async fn tenant_routes_are_admin_only() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    alice.get("/api/v1/tenants").await.expect_error(403, "forbidden", None);
    alice.post("/api/v1/tenants", json!({ "name": "Mallory" })).await.expect_error(403, "forbidden", None);
    alice.get(&format!("/api/v1/tenants/{}", alice.tenant_id())).await.expect_error(403, "forbidden", None);

    let admin = server.admin();
    let created = admin.post("/api/v1/tenants", json!({ "name": "Bob" })).await.expect_status(201);
    assert!(created.str("id").starts_with("ten_"));
    assert_eq!(created.str("name"), "Bob");
    assert!(created.str("created_at").ends_with('Z'));
    let fetched = admin.get(&format!("/api/v1/tenants/{}", created.str("id"))).await.expect_status(200);
    assert_eq!(fetched.json, created.json);
    admin.get("/api/v1/tenants/ten_nope").await.expect_error(404, "not_found", None);
    let all = admin.all_pages("/api/v1/tenants", 1).await;
    assert_eq!(all.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(), ["Bob", "Alice"]);
}

#[tokio::test]
async fn tenant_names_are_validated() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for body in [
        json!({ "name": "" }),
        json!({ "name": "   " }),
        json!({ "name": "x".repeat(201) }),
        json!({}),
        json!({ "name": 5 }),
    ] {
        admin.post("/api/v1/tenants", body).await.expect_invalid("name");
    }
    admin.post("/api/v1/tenants", json!({ "name": "A", "plan": "gold" })).await.expect_invalid("plan");
}

#[tokio::test]
async fn the_admin_key_must_name_an_existing_tenant() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let admin = server.admin();
    admin.get("/api/v1/endpoints").await.expect_invalid("Switchyard-Tenant");
    admin.for_tenant("ten_missing").get("/api/v1/endpoints").await.expect_error(404, "not_found", None);
    admin.for_tenant("").get("/api/v1/endpoints").await.expect_invalid("Switchyard-Tenant");
    admin.for_tenant(alice.tenant_id()).get("/api/v1/endpoints").await.expect_status(200);
    // Admin-only routes take no tenant header into account.
    admin.for_tenant("ten_missing").get("/api/v1/tenants").await.expect_status(200);
}

#[tokio::test]
async fn a_tenant_key_cannot_reach_another_tenant() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let bob = server.tenant("Bob").await;
    // Naming its own tenant is fine; naming another is a tenant that "does not exist".
    alice.for_tenant(alice.tenant_id()).get("/api/v1/endpoints").await.expect_status(200);
    alice.for_tenant(bob.tenant_id()).get("/api/v1/endpoints").await.expect_error(404, "not_found", None);
    alice.for_tenant("").get("/api/v1/endpoints").await.expect_error(404, "not_found", None);

    let endpoint = alice.create_endpoint(json!({})).await.expect_status(201);
    let path = format!("/api/v1/endpoints/{}", endpoint.str("id"));
    bob.get(&path).await.expect_error(404, "not_found", None);
    bob.patch(&path, json!({ "description": "mine" })).await.expect_error(404, "not_found", None);
    bob.post(&format!("{path}/pause"), json!({})).await.expect_error(404, "not_found", None);
    bob.post(&format!("{path}/rotate-secret"), json!({})).await.expect_error(404, "not_found", None);
    bob.put(&format!("{path}/subscriptions"), json!({ "subscriptions": [{ "event_type": "*" }] })).await.expect_error(
        404,
        "not_found",
        None,
    );
    bob.delete(&path).await.expect_error(404, "not_found", None);
    assert!(bob.get("/api/v1/endpoints").await.json["data"].as_array().unwrap().is_empty());
    alice.get(&path).await.expect_status(200);

    let key_id = alice.key_id.clone().unwrap();
    bob.delete(&format!("/api/v1/api-keys/{key_id}")).await.expect_error(404, "not_found", None);
    alice.get("/api/v1/endpoints").await.expect_status(200);
}

#[tokio::test]
async fn api_keys_are_shown_once_and_revocation_is_immediate() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let created = alice.post("/api/v1/api-keys", json!({ "name": "ci" })).await.expect_status(201);
    let key = created.str("key");
    assert!(key.starts_with("sy_"), "{key}");
    assert!(created.str("id").starts_with("key_"));
    assert!(key.starts_with(&created.str("prefix")));
    assert!(created.str("prefix").len() < key.len());
    assert!(created.json["revoked_at"].is_null());

    let ci = alice.with_key(&key);
    ci.get("/api/v1/endpoints").await.expect_status(200);
    let listed = alice.get("/api/v1/api-keys").await.expect_status(200);
    assert!(!listed.text.contains(&key), "a listed key must not show its text");
    let entry = listed.json["data"].as_array().unwrap().iter().find(|k| k["id"] == created.json["id"]).cloned();
    let entry = entry.expect("the new key is listed");
    assert!(entry.get("key").is_none());
    assert_eq!(entry["name"], "ci");

    let path = format!("/api/v1/api-keys/{}", created.str("id"));
    alice.delete(&path).await.expect_status(204);
    ci.get("/api/v1/endpoints").await.expect_error(401, "unauthorized", None);
    alice.delete(&path).await.expect_error(404, "not_found", None);
    alice.delete("/api/v1/api-keys/key_unknown").await.expect_error(404, "not_found", None);

    for body in [json!({}), json!({ "name": "" }), json!({ "name": "x".repeat(201) })] {
        alice.post("/api/v1/api-keys", body).await.expect_invalid("name");
    }
}

/// A service that only publishes gets a key that can do nothing else: not read payloads, not change endpoints,
/// not see secrets, not make itself a better key.
#[tokio::test]
async fn a_publish_key_only_publishes() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let endpoint = alice.create_endpoint(json!({})).await.expect_status(201);
    let created =
        alice.post("/api/v1/api-keys", json!({ "name": "checkout", "scope": "publish" })).await.expect_status(201);
    assert_eq!(created.json["scope"], "publish");
    let listed = alice.get("/api/v1/api-keys").await.expect_status(200);
    let scopes: Vec<&Value> = listed.json["data"].as_array().unwrap().iter().map(|k| &k["scope"]).collect();
    assert!(scopes.contains(&&json!("publish")) && scopes.contains(&&json!("all")), "{}", listed.text);

    let checkout = server.anonymous().with_key(&created.str("key"));
    let event = json!({ "type": "order.paid", "data": { "n": 1 }, "idempotency_key": "o-1" });
    let published = checkout.post("/api/v1/events", event.clone()).await.expect_status(202);
    assert_eq!(checkout.post("/api/v1/events", event).await.expect_status(202).json, published.json);
    let batch = json!({ "events": [{ "type": "order.paid", "data": { "n": 2 } }] });
    checkout.post("/api/v1/events/batch", batch).await.expect_status(202);
    let stored = alice.get(&format!("/api/v1/events/{}", published.str("id"))).await.expect_status(200);
    assert_eq!(stored.json["data"], json!({ "n": 1 }));

    let endpoint_path = format!("/api/v1/endpoints/{}", endpoint.str("id"));
    for path in [
        "/api/v1/events".to_string(),
        format!("/api/v1/events/{}", published.str("id")),
        "/api/v1/endpoints".to_string(),
        endpoint_path.clone(),
        "/api/v1/deliveries".to_string(),
        "/api/v1/api-keys".to_string(),
        "/api/v1/audit-log".to_string(),
        "/api/v1/stats".to_string(),
    ] {
        let refused = checkout.get(&path).await;
        refused.expect_error(403, "forbidden", None);
        assert!(refused.text.contains("publish"), "{path}: {}", refused.text);
    }
    checkout.post("/api/v1/api-keys", json!({ "name": "mine" })).await.expect_error(403, "forbidden", None);
    checkout.create_endpoint(json!({})).await.expect_error(403, "forbidden", None);
    checkout.post(&format!("{endpoint_path}/test"), json!({})).await.expect_error(403, "forbidden", None);
    checkout.delete(&endpoint_path).await.expect_error(403, "forbidden", None);
    checkout.post(&format!("{endpoint_path}/rotate-secret"), json!({})).await.expect_error(403, "forbidden", None);
    alice.get(&endpoint_path).await.expect_status(200);
    // Its tenant is still its own: naming another is a 404 as for any key.
    let bob = server.tenant("Bob").await;
    let elsewhere = checkout
        .request(Method::POST, "/api/v1/events")
        .header("Switchyard-Tenant", bob.tenant_id())
        .json(&json!({ "type": "order.paid", "data": {} }));
    checkout.send(elsewhere).await.expect_error(404, "not_found", None);

    let audit = alice.get("/api/v1/audit-log?action=api_key.created").await.expect_status(200);
    assert_eq!(audit.json["data"][0]["details"]["scope"], "publish", "{}", audit.text);
    alice.post("/api/v1/api-keys", json!({ "name": "x", "scope": "read" })).await.expect_invalid("scope");
}

#[tokio::test]
async fn the_admin_can_create_keys_for_a_tenant() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let admin = server.admin().for_tenant(alice.tenant_id());
    let created = admin.post("/api/v1/api-keys", json!({ "name": "ops" })).await.expect_status(201);
    let ops = server.anonymous().with_key(&created.str("key"));
    let endpoint = ops.create_endpoint(json!({})).await.expect_status(201);
    alice.get(&format!("/api/v1/endpoints/{}", endpoint.str("id"))).await.expect_status(200);
}
