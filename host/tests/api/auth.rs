//! Keys, tenants and who may see what.

use std::num::NonZeroU32;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::server::{Client, TestServer};

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
        json!({ "name": "a\u{0}b" }),
        json!({ "name": "line\nbreak" }),
        json!({ "name": "pay\u{202E}roll" }),
        json!({ "name": "\u{2067}Acme" }),
    ] {
        admin.post("/api/v1/tenants", body).await.expect_invalid("name");
    }
    // Marks that only hint a direction, and scripts written right to left, are names like any other.
    admin.post("/api/v1/tenants", json!({ "name": "שלום\u{200F} Acme" })).await.expect_status(201);
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

    for body in [json!({}), json!({ "name": "" }), json!({ "name": "x".repeat(201) }), json!({ "name": "a\u{202E}b" })]
    {
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
    assert!(created.str("key").starts_with("syp_"), "{}", created.text);
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

    // Every route but publishing, with a body it would accept from a full key where it takes one.
    let event_id = published.str("id");
    let routes = tenant_routes(&alice, &endpoint.str("id"), &event_id, &created.str("id")).await;
    for (method, path, body) in routes {
        let mut request = checkout.request(method.clone(), &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let refused = checkout.send(request).await;
        assert_eq!(refused.status, 403, "{method} {path}: {}", refused.text);
        refused.expect_error(403, "forbidden", None);
    }
    alice.get(&format!("/api/v1/endpoints/{}", endpoint.str("id"))).await.expect_status(200);
    // Its tenant is still its own: naming another is a 404 as for any key.
    let bob = server.tenant("Bob").await;
    let elsewhere = checkout
        .request(Method::POST, "/api/v1/events")
        .header("Switchyard-Tenant", bob.tenant_id())
        .json(&json!({ "type": "order.paid", "data": {} }));
    checkout.send(elsewhere).await.expect_error(404, "not_found", None);

    let audit = alice.get("/api/v1/audit-log?action=api_key.created").await.expect_status(200);
    assert_eq!(audit.json["data"][0]["details"]["scope"], "publish", "{}", audit.text);
    alice.post("/api/v1/api-keys", json!({ "name": "x", "scope": "write" })).await.expect_invalid("scope");
    alice.post("/api/v1/api-keys", json!({ "name": "x", "scope": null })).await.expect_invalid("scope");
}

/// A key may be limited to the networks a service runs in: from anywhere else it is refused with a `403` that
/// says from where, whatever its scope. The tests' requests come from 127.0.0.1.
#[tokio::test]
async fn a_key_with_allowed_networks_is_refused_from_anywhere_else() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let body = json!({ "name": "office", "allowed_networks": ["203.0.113.0/24", "2001:db8::1"] });
    let elsewhere = alice.post("/api/v1/api-keys", body).await.expect_status(201);
    assert_eq!(elsewhere.json["allowed_networks"], json!(["203.0.113.0/24", "2001:db8::1/128"]), "{}", elsewhere.text);
    let refused = alice.with_key(&elsewhere.str("key")).get("/api/v1/endpoints").await;
    refused.expect_error(403, "forbidden", None);
    assert!(refused.text.contains("may not be used from 127.0.0.1"), "{}", refused.text);
    let publisher = json!({ "name": "checkout", "scope": "publish", "allowed_networks": ["198.51.100.0/24"] });
    let publisher = alice.post("/api/v1/api-keys", publisher).await.expect_status(201);
    let event = json!({ "type": "order.paid", "data": {} });
    alice.with_key(&publisher.str("key")).post("/api/v1/events", event.clone()).await.expect_error(
        403,
        "forbidden",
        None,
    );

    let here = alice.post("/api/v1/api-keys", json!({ "name": "ci", "allowed_networks": ["127.0.0.0/8"] })).await;
    let here = alice.with_key(&here.expect_status(201).str("key"));
    here.get("/api/v1/endpoints").await.expect_status(200);
    here.post("/api/v1/events", event).await.expect_status(202);
    // It makes keys only within its own networks, or a key taken inside once would make one usable anywhere.
    for wider in [json!([]), json!(["10.0.0.0/8"]), json!(["127.0.0.0/7"]), json!(["127.0.0.1", "0.0.0.0/0"])] {
        let body = json!({ "name": "wider", "allowed_networks": wider });
        here.post("/api/v1/api-keys", body).await.expect_invalid("allowed_networks");
    }
    // An IPv4-mapped entry is its IPv4 network, which the client's address is compared with.
    let mapped = json!({ "name": "narrower", "allowed_networks": ["::ffff:127.0.0.1"] });
    let narrower = here.post("/api/v1/api-keys", mapped).await.expect_status(201);
    assert_eq!(narrower.json["allowed_networks"], json!(["127.0.0.1/32"]));
    alice.with_key(&narrower.str("key")).get("/api/v1/endpoints").await.expect_status(200);
    // A key is listed with its networks, and one made without any may be used from anywhere.
    let listed = alice.get("/api/v1/api-keys").await.expect_status(200);
    let networks: Vec<&Value> =
        listed.json["data"].as_array().unwrap().iter().map(|k| &k["allowed_networks"]).collect();
    assert!(networks.contains(&&json!(["127.0.0.0/8"])) && networks.contains(&&json!([])), "{}", listed.text);
    let audit = alice.get("/api/v1/audit-log?action=api_key.created").await.expect_status(200);
    assert!(audit.text.contains("198.51.100.0/24"), "{}", audit.text);

    for bad in [json!(["10.0.0.0/33"]), json!(["office"]), json!("10.0.0.0/8"), json!(vec!["10.0.0.1"; 101])] {
        let body = json!({ "name": "x", "allowed_networks": bad });
        alice.post("/api/v1/api-keys", body).await.expect_invalid("allowed_networks");
    }
    let huge = json!({ "name": "x", "allowed_networks": ["1".repeat(100_000)] });
    let refused = alice.post("/api/v1/api-keys", huge).await;
    refused.expect_invalid("allowed_networks");
    assert!(refused.text.len() < 300, "the entry is not repeated whole: {} bytes", refused.text.len());
}

/// A key's networks can change without handing its users a new key: it is refused or accepted at once by the
/// new list. Once limited it stays limited, and a limited key moves keys only within its own networks.
#[tokio::test]
async fn a_keys_networks_change_without_a_new_key() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let created = alice.post("/api/v1/api-keys", json!({ "name": "ci" })).await.expect_status(201);
    let ci = alice.with_key(&created.str("key"));
    let ci_path = format!("/api/v1/api-keys/{}", created.str("id"));
    ci.get("/api/v1/endpoints").await.expect_status(200);

    let moved = alice.patch(&ci_path, json!({ "allowed_networks": ["203.0.113.0/24"] })).await.expect_status(200);
    assert_eq!(moved.json["allowed_networks"], json!(["203.0.113.0/24"]), "{}", moved.text);
    assert_eq!(moved.json["name"], "ci");
    assert!(moved.json.get("key").is_none(), "the key's text is never shown again: {}", moved.text);
    let refused = ci.get("/api/v1/endpoints").await;
    refused.expect_error(403, "forbidden", None);
    assert!(refused.text.contains("may not be used from 127.0.0.1"), "{}", refused.text);
    let shown = alice.get(&ci_path).await.expect_status(200);
    assert_eq!(shown.json, moved.json);

    let body = json!({ "name": "office", "allowed_networks": ["127.0.0.0/8", "2001:db8::/32"] });
    let back = alice.patch(&ci_path, body).await.expect_status(200);
    assert_eq!(back.json["name"], "office");
    ci.get("/api/v1/endpoints").await.expect_status(200);
    alice.patch(&ci_path, json!({ "allowed_networks": [] })).await.expect_invalid("allowed_networks");
    alice.patch(&ci_path, json!({ "allowed_networks": null })).await.expect_invalid("allowed_networks");
    alice.patch(&ci_path, json!({ "allowed_networks": ["10.0.0.0/33"] })).await.expect_invalid("allowed_networks");
    alice.patch(&ci_path, json!({ "name": null })).await.expect_invalid("name");
    alice.patch(&ci_path, json!({ "name": "" })).await.expect_invalid("name");
    alice.patch(&ci_path, json!({ "scope": "read" })).await.expect_status(400);

    // Now limited, it may narrow another key into its own networks, but not send it elsewhere.
    let other = alice.post("/api/v1/api-keys", json!({ "name": "deploy" })).await.expect_status(201);
    let other_path = format!("/api/v1/api-keys/{}", other.str("id"));
    ci.patch(&other_path, json!({ "allowed_networks": ["10.0.0.0/8"] })).await.expect_invalid("allowed_networks");
    ci.patch(&other_path, json!({ "name": "deploy 2" })).await.expect_status(200);
    ci.patch(&other_path, json!({ "allowed_networks": ["127.0.0.1"] })).await.expect_status(200);
    alice.with_key(&other.str("key")).get("/api/v1/endpoints").await.expect_status(200);
    // `::/0` holds every IPv4 address through the mapped range, as an operator reading it expects.
    alice.patch(&other_path, json!({ "allowed_networks": ["::/0"] })).await.expect_status(200);
    alice.with_key(&other.str("key")).get("/api/v1/endpoints").await.expect_status(200);

    let audit = alice.get("/api/v1/audit-log?action=api_key.updated").await.expect_status(200);
    let entries = audit.json["data"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{}", audit.text);
    assert!(audit.text.contains("203.0.113.0/24") && audit.text.contains("::/0"), "{}", audit.text);

    let bob = server.tenant("Bob").await;
    bob.get(&ci_path).await.expect_status(404);
    bob.patch(&ci_path, json!({ "name": "mine" })).await.expect_status(404);
    alice.delete(&other_path).await.expect_status(204);
    alice.patch(&other_path, json!({ "name": "again" })).await.expect_error(409, "conflict", None);
    alice.get(&other_path).await.expect_status(200);
}

/// Behind a trusted proxy the client is the address the proxy names in `X-Forwarded-For`, for tenant keys and for
/// the admin key's own `admin_allowed_networks`; a client not behind it cannot name itself another address.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_checked() {
    let server = TestServer::start_with(|config| {
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        config.admin_allowed_networks = vec!["192.0.2.0/24".parse().unwrap()];
    })
    .await;
    let admin = server.admin();
    let from = |client: &Client, address: &str| {
        client.request(Method::GET, "/api/v1/tenants").header("x-forwarded-for", address)
    };
    admin.send(admin.request(Method::GET, "/api/v1/tenants")).await.expect_error(403, "forbidden", None);
    let refused = admin.send(from(&admin, "203.0.113.9")).await;
    refused.expect_error(403, "forbidden", None);
    assert!(refused.text.contains("the admin key may not be used from 203.0.113.9"), "{}", refused.text);
    admin.send(from(&admin, "192.0.2.10")).await.expect_status(200);
    // A client's own entries come before the proxy's: the proxy's last one counts.
    admin.send(from(&admin, "192.0.2.10, 203.0.113.9")).await.expect_error(403, "forbidden", None);
    admin.send(from(&admin, "not an address")).await.expect_error(403, "forbidden", None);

    let tenant = admin
        .send(
            admin
                .request(Method::POST, "/api/v1/tenants")
                .header("x-forwarded-for", "192.0.2.10")
                .json(&json!({ "name": "Alice" })),
        )
        .await;
    let alice_id = tenant.expect_status(201).str("id");
    let body = json!({ "name": "office", "allowed_networks": ["203.0.113.0/24"] });
    let create = admin
        .request(Method::POST, "/api/v1/api-keys")
        .header("x-forwarded-for", "192.0.2.10")
        .header("Switchyard-Tenant", &alice_id)
        .json(&body);
    let office = server.anonymous().with_key(&admin.send(create).await.expect_status(201).str("key"));
    let endpoints = |address: &str| office.request(Method::GET, "/api/v1/endpoints").header("x-forwarded-for", address);
    office.send(endpoints("203.0.113.77")).await.expect_status(200);
    office.send(endpoints("198.51.100.1")).await.expect_error(403, "forbidden", None);
    office.send(office.request(Method::GET, "/api/v1/endpoints")).await.expect_error(403, "forbidden", None);
}

/// Every tenant and admin route but publishing, each with a body a full key could send. Looks up a delivery of
/// `event_id` with `owner`.
async fn tenant_routes(
    owner: &Client,
    endpoint_id: &str,
    event_id: &str,
    key_id: &str,
) -> Vec<(Method, String, Option<Value>)> {
    let endpoint_path = format!("/api/v1/endpoints/{endpoint_id}");
    let delivery = owner.get(&format!("/api/v1/deliveries?event_id={event_id}")).await.expect_status(200);
    let delivery_id = delivery.json["data"][0]["id"].as_str().unwrap().to_string();
    vec![
        (Method::GET, "/api/v1/events".into(), None),
        (Method::GET, format!("/api/v1/events/{event_id}"), None),
        (Method::POST, format!("/api/v1/events/{event_id}/deliveries"), Some(json!({ "endpoint_ids": [endpoint_id] }))),
        (Method::GET, "/api/v1/event-types".into(), None),
        (Method::GET, "/api/v1/event-types/order.paid".into(), None),
        (Method::POST, "/api/v1/event-types".into(), Some(json!({ "name": "order.refunded" }))),
        (Method::GET, "/api/v1/endpoints".into(), None),
        (Method::POST, "/api/v1/endpoints".into(), Some(json!({ "url": "https://example.com/hook" }))),
        (Method::GET, endpoint_path.clone(), None),
        (Method::PATCH, endpoint_path.clone(), Some(json!({ "description": "mine" }))),
        (Method::DELETE, endpoint_path.clone(), None),
        (Method::POST, format!("{endpoint_path}/pause"), None),
        (Method::POST, format!("{endpoint_path}/activate"), None),
        (Method::POST, format!("{endpoint_path}/rotate-secret"), Some(json!({}))),
        (Method::PUT, format!("{endpoint_path}/subscriptions"), Some(json!([{ "event_type": "*" }]))),
        (Method::POST, format!("{endpoint_path}/test"), Some(json!({}))),
        (Method::POST, format!("{endpoint_path}/simulate"), Some(json!({ "type": "order.paid", "data": {} }))),
        (Method::POST, format!("{endpoint_path}/replay-missing"), Some(json!({ "since": "2026-01-01T00:00:00Z" }))),
        (Method::GET, "/api/v1/deliveries".into(), None),
        (Method::GET, format!("/api/v1/deliveries/{delivery_id}"), None),
        (Method::POST, format!("/api/v1/deliveries/{delivery_id}/retry"), None),
        (Method::GET, "/api/v1/dead-letters".into(), None),
        (Method::POST, "/api/v1/dead-letters/requeue".into(), Some(json!({}))),
        (Method::GET, "/api/v1/api-keys".into(), None),
        (Method::POST, "/api/v1/api-keys".into(), Some(json!({ "name": "mine" }))),
        (Method::GET, format!("/api/v1/api-keys/{key_id}"), None),
        (Method::PATCH, format!("/api/v1/api-keys/{key_id}"), Some(json!({ "name": "renamed" }))),
        (Method::DELETE, format!("/api/v1/api-keys/{key_id}"), None),
        (Method::GET, "/api/v1/audit-log".into(), None),
        (Method::GET, "/api/v1/stats".into(), None),
        (Method::GET, "/api/v1/stats/event-types".into(), None),
        (Method::GET, "/api/v1/tenants".into(), None),
        (Method::GET, "/api/v1/plugins".into(), None),
        (Method::PUT, "/api/v1/plugins/mine".into(), None),
        (Method::GET, "/metrics".into(), None),
    ]
}

/// A `read` key gets what a full key gets on every GET, and a 403 on everything else: publishing, every change,
/// the POSTs that only answer (a simulation's real signature), and the admin's routes. Nothing it tries changes
/// anything.
#[tokio::test]
async fn a_read_key_reads_everything_and_changes_nothing() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let endpoint = alice.create_endpoint(json!({})).await.expect_status(201);
    let created =
        alice.post("/api/v1/api-keys", json!({ "name": "auditor", "scope": "read" })).await.expect_status(201);
    assert_eq!(created.json["scope"], "read");
    assert!(created.str("key").starts_with("syr_"), "{}", created.text);
    let event = json!({ "type": "order.paid", "data": { "n": 1 } });
    let published = alice.post("/api/v1/events", event.clone()).await.expect_status(202);
    let endpoint_path = format!("/api/v1/endpoints/{}", endpoint.str("id"));
    let before = alice.get(&endpoint_path).await.expect_status(200);
    let audit_before = alice.get("/api/v1/audit-log").await.expect_status(200);

    let auditor = server.anonymous().with_key(&created.str("key"));
    let mut routes = tenant_routes(&alice, &endpoint.str("id"), &published.str("id"), &created.str("id")).await;
    routes.push((Method::POST, "/api/v1/events".into(), Some(event)));
    routes.push((
        Method::POST,
        "/api/v1/events/batch".into(),
        Some(json!({ "events": [{ "type": "a.b", "data": {} }] })),
    ));
    let mut read = 0;
    for (method, path, body) in routes {
        let mut request = auditor.request(method.clone(), &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = auditor.send(request).await;
        if method == Method::GET {
            let full = alice.get(&path).await;
            assert_eq!(answer.status, full.status, "GET {path}: {} against {}", answer.text, full.text);
            read += usize::from(answer.status == 200);
        } else {
            assert_eq!(answer.status, 403, "{method} {path}: {}", answer.text);
            answer.expect_error(403, "forbidden", None);
            // The admin's routes say they need the admin key; the tenant's say what this key may do.
            let admin_route = path.contains("/tenants") || path.contains("/plugins") || path == "/metrics";
            assert!(admin_route || answer.text.contains("scope is `read`"), "{method} {path}: {}", answer.text);
        }
    }
    assert!(read >= 12, "{read} GETs answered");
    let events = auditor.get("/api/v1/events").await.expect_status(200);
    assert_eq!(events.json["data"][0]["data"], json!({ "n": 1 }), "it reads payloads: {}", events.text);

    assert_eq!(alice.get(&endpoint_path).await.expect_status(200).json, before.json, "the endpoint is unchanged");
    assert_eq!(alice.get("/api/v1/audit-log").await.expect_status(200).json, audit_before.json, "nothing recorded");
    let events = alice.get("/api/v1/events").await.expect_status(200);
    assert_eq!(events.json["data"].as_array().map(Vec::len), Some(1), "nothing published: {}", events.text);
    let keys = alice.get("/api/v1/api-keys").await.expect_status(200);
    assert_eq!(keys.json["data"].as_array().map(Vec::len), Some(2), "no key made: {}", keys.text);
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

/// With `tenant_rate_limit`, a tenant's keys get a second's worth of requests at once, then 429s that say when to
/// come back; another tenant and the admin key are not held back, and the tenant gets in again after the wait.
#[tokio::test]
async fn a_tenant_over_its_request_rate_is_told_when_to_come_back() {
    let server = TestServer::start_with(|config| config.tenant_rate_limit = NonZeroU32::new(1)).await;
    // Made with the admin key, which is not limited: Alice's budget is whole.
    let alice = server.tenant("Alice").await;
    let bob = server.tenant("Bob").await;
    let as_admin = server.admin().for_tenant(alice.tenant_id());
    let publisher = as_admin.post("/api/v1/api-keys", json!({ "name": "checkout", "scope": "publish" })).await;
    let publisher = alice.with_key(&publisher.expect_status(201).str("key"));

    // Twelve at once: one passes, and another only if the twelve took over a second.
    let answers = join_all((0..12).map(|_| alice.get("/api/v1/endpoints"))).await;
    let passed = answers.iter().filter(|a| a.status == 200).count();
    assert!((1..=2).contains(&passed), "{passed} of 12 passed");
    for refused in answers.iter().filter(|a| a.status != 200) {
        refused.expect_error(429, "rate_limited", None);
        assert_eq!(refused.header("retry-after"), Some("1"), "at most a second, in whole seconds");
    }
    // The key that may only publish draws on the same budget: it is the tenant that is limited.
    let event = json!({ "type": "order.created", "data": {} });
    publisher.post("/api/v1/events", event.clone()).await.expect_error(429, "rate_limited", None);
    bob.get("/api/v1/endpoints").await.expect_status(200);
    as_admin.get("/api/v1/endpoints").await.expect_status(200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    publisher.post("/api/v1/events", event).await.expect_status(202);
    alice.get("/api/v1/endpoints").await.expect_error(429, "rate_limited", None);
}

/// An operator can give a tenant a request rate of its own, above the server's `tenant_rate_limit` or where the
/// server sets none, and give it the server's again with `null`; the change applies on the node at once.
#[tokio::test]
async fn a_tenant_can_be_given_a_request_rate_of_its_own() {
    let server = TestServer::start_with(|config| config.tenant_rate_limit = NonZeroU32::new(1)).await;
    let alice = server.tenant("Alice").await;
    let bob = server.tenant("Bob").await;
    let admin = server.admin();
    let alice_path = format!("/api/v1/tenants/{}", alice.tenant_id());
    let patched = admin.patch(&alice_path, json!({ "rate_limit": 1000 })).await.expect_status(200);
    assert_eq!((&patched.json["rate_limit"], patched.str("name").as_str()), (&json!(1000), "Alice"));
    assert_eq!(admin.get(&alice_path).await.expect_status(200).json, patched.json);

    assert_eq!(passed_of_twelve(&alice).await, 12, "Alice's own 1000 a second");
    assert!((1..=2).contains(&passed_of_twelve(&bob).await), "Bob is held to the server's 1 a second");

    // Sent again, or with the name it has: nothing changes, and nothing is recorded.
    let same = json!({ "name": "Alice", "rate_limit": 1000 });
    assert_eq!(admin.patch(&alice_path, same).await.expect_status(200).json, patched.json);
    let restored = admin.patch(&alice_path, json!({ "rate_limit": null })).await.expect_status(200);
    assert_eq!(restored.json["rate_limit"], Value::Null);
    assert!((1..=2).contains(&passed_of_twelve(&alice).await), "the server's limit again");
    let audit = admin.for_tenant(alice.tenant_id()).get("/api/v1/audit-log?action=tenant.updated").await;
    let entries = audit.expect_status(200).json["data"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["details"]["fields"], json!(["rate_limit"]));
    assert_eq!(entries[1]["details"]["rate_limit"], 1000);

    // Set when the tenant is created, on a server that limits no one else.
    let unlimited = TestServer::start().await;
    let admin = unlimited.admin();
    let carol = admin.post("/api/v1/tenants", json!({ "name": "Carol", "rate_limit": 1 })).await.expect_status(201);
    assert_eq!(carol.json["rate_limit"], 1);
    let key = admin.for_tenant(&carol.str("id")).post("/api/v1/api-keys", json!({ "name": "ops" })).await;
    let carol = unlimited.anonymous().with_key(&key.expect_status(201).str("key"));
    assert!((1..=2).contains(&passed_of_twelve(&carol).await), "Carol's own 1 a second");
    let dave = unlimited.tenant("Dave").await;
    assert_eq!(passed_of_twelve(&dave).await, 12, "no limit for the others");
    assert_eq!(admin.get("/api/v1/tenants").await.json["data"][1]["rate_limit"], 1, "listed with it");

    let dave_path = format!("/api/v1/tenants/{}", dave.tenant_id());
    for (body, field) in [
        (json!({ "rate_limit": 0 }), "rate_limit"),
        (json!({ "rate_limit": 1_000_001 }), "rate_limit"),
        (json!({ "rate_limit": "fast" }), "rate_limit"),
        (json!({ "name": null }), "name"),
        (json!({ "name": " " }), "name"),
    ] {
        admin.patch(&dave_path, body).await.expect_invalid(field);
    }
    admin.patch("/api/v1/tenants/ten_nope", json!({ "rate_limit": 5 })).await.expect_error(404, "not_found", None);
    dave.patch(&dave_path, json!({ "rate_limit": 5 })).await.expect_error(403, "forbidden", None);
    let created = admin.post("/api/v1/tenants", json!({ "name": "Erin", "rate_limit": -1 })).await;
    created.expect_invalid("rate_limit");
}

/// How many of twelve requests sent at once pass.
async fn passed_of_twelve(client: &Client) -> usize {
    let answers = join_all((0..12).map(|_| client.get("/api/v1/endpoints"))).await;
    answers.iter().filter(|a| a.status == 200).count()
}
