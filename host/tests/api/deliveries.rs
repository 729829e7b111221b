//! Deliveries, manual retry, dead letters and the audit log. These tests do not depend on how a delivery goes:
//! endpoints point at a loopback port nothing listens on, or at a listener that never answers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::receiver::{Receiver, Reply};
use crate::support::server::{Answer, Client, TestServer};

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

async fn publish(client: &Client, event_type: &str) -> String {
    client.post("/api/v1/events", json!({ "type": event_type, "data": {} })).await.expect_status(202).str("id")
}

/// Retries until the delivery is not in the middle of an attempt (the dispatcher may be trying it).
async fn retry_when_idle(client: &Client, id: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client.post(&format!("/api/v1/deliveries/{id}/retry"), json!({})).await;
        if answer.status != 409 || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deliveries_are_listed_filtered_and_shown_with_attempts() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let a = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    let b = alice
        .create_endpoint(json!({ "subscriptions": [{ "event_type": "user.*" }] }))
        .await
        .expect_status(201)
        .str("id");
    let payment = publish(&alice, "payment.succeeded").await;
    let user = publish(&alice, "user.created").await;

    let all = alice.all_pages("/api/v1/deliveries", 1).await;
    assert_eq!(all.len(), 3);
    let to_a = alice.all_pages(&format!("/api/v1/deliveries?endpoint_id={a}"), 10).await;
    assert_eq!(to_a.len(), 2);
    let of_user = alice.all_pages(&format!("/api/v1/deliveries?event_id={user}"), 10).await;
    assert_eq!(of_user.len(), 2);
    let typed = alice.all_pages("/api/v1/deliveries?event_type=payment.succeeded", 10).await;
    assert_eq!(typed.len(), 1);
    assert_eq!(typed[0]["event_id"], payment.as_str());
    assert_eq!(typed[0]["endpoint_id"], a.as_str());
    let both = alice.all_pages(&format!("/api/v1/deliveries?endpoint_id={b}&event_id={user}"), 10).await;
    assert_eq!(both.len(), 1);
    let none = alice.get("/api/v1/deliveries?since=2999-01-01T00:00:00Z").await.expect_status(200);
    assert_eq!(none.json["data"], json!([]));
    for status in ["pending", "delivering", "succeeded", "failed", "dead"] {
        let page = alice.all_pages(&format!("/api/v1/deliveries?status={status}"), 100).await;
        assert!(page.iter().all(|d| d["status"] == status), "{status}: {page:?}");
    }
    alice.get("/api/v1/deliveries?status=lost").await.expect_invalid("status");
    alice.get("/api/v1/deliveries?until=noon").await.expect_invalid("until");
    alice.get("/api/v1/deliveries?endpoint=ep_1").await.expect_invalid("endpoint");

    let id = typed[0]["id"].as_str().unwrap();
    let detail = alice.get(&format!("/api/v1/deliveries/{id}")).await.expect_status(200);
    for field in [
        "id",
        "event_id",
        "endpoint_id",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "updated_at",
        "transform_output",
        "attempts_log",
    ] {
        assert!(detail.json.get(field).is_some(), "delivery without `{field}`: {}", detail.text);
    }
    assert!(detail.json["attempts_log"].is_array());
    assert!(detail.json["transform_output"].is_null(), "no transform, nothing to show: {}", detail.text);
    alice.get("/api/v1/deliveries/dlv_unknown").await.expect_error(404, "not_found", None);
    let bob = server.tenant("Bob").await;
    bob.get(&format!("/api/v1/deliveries/{id}")).await.expect_error(404, "not_found", None);
    bob.post(&format!("/api/v1/deliveries/{id}/retry"), json!({})).await.expect_error(404, "not_found", None);
    assert_eq!(bob.get("/api/v1/deliveries").await.json["data"], json!([]));
}

#[tokio::test]
async fn an_event_is_sent_to_an_endpoint_by_hand_once() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let event = publish(&alice, "invoice.paid").await;
    let endpoint = alice.create_endpoint(json!({ "subscriptions": [{ "event_type": "other.*" }] })).await;
    let endpoint = endpoint.expect_status(201).str("id");
    let path = format!("/api/v1/events/{event}/deliveries");

    let created = alice.post(&path, json!({ "endpoint_id": endpoint })).await.expect_status(201);
    assert_eq!(created.json["event_id"], event.as_str());
    assert_eq!(created.json["endpoint_id"], endpoint.as_str());
    assert_eq!(created.json["event_type"], "invoice.paid", "sent whatever the endpoint's subscriptions");
    alice.post(&path, json!({ "endpoint_id": endpoint })).await.expect_error(409, "conflict", None);
    alice.post(&path, json!({ "endpoint_id": "ep_unknown" })).await.expect_invalid("endpoint_id");
    alice.post(&path, json!({})).await.expect_invalid("endpoint_id");
    alice.post(&path, json!({ "endpoint_id": endpoint, "status": "dead" })).await.expect_invalid("status");
    let unknown = json!({ "endpoint_id": endpoint });
    alice.post("/api/v1/events/evt_unknown/deliveries", unknown).await.expect_error(404, "not_found", None);
    let bob = server.tenant("Bob").await;
    let bobs = bob.create_endpoint(json!({})).await.expect_status(201).str("id");
    bob.post(&path, json!({ "endpoint_id": bobs })).await.expect_error(404, "not_found", None);
    alice.post(&path, json!({ "endpoint_id": bobs })).await.expect_invalid("endpoint_id");
}

#[tokio::test]
async fn manual_retry_schedules_now_unless_in_flight() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    alice.create_endpoint(json!({})).await.expect_status(201);
    let event = publish(&alice, "payment.succeeded").await;
    let delivery = alice.all_pages(&format!("/api/v1/deliveries?event_id={event}"), 10).await.remove(0);
    let id = delivery["id"].as_str().unwrap();
    let retried = retry_when_idle(&alice, id).await.expect_status(202);
    assert_eq!(retried.json["id"], id);
    assert_eq!(retried.json["status"], "pending");
    alice.post("/api/v1/deliveries/dlv_unknown/retry", json!({})).await.expect_error(404, "not_found", None);
    let retry = format!("/api/v1/deliveries/{id}/retry");
    alice.post(&retry, json!({ "rerun_plugins": "yes" })).await.expect_invalid("rerun_plugins");
    alice.post(&retry, json!({ "rerun": true })).await.expect_invalid("rerun");

    // A receiver that accepts the connection and never answers keeps an attempt in flight.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let slow = alice
        .post(
            "/api/v1/endpoints",
            json!({ "url": url, "timeout_secs": 60, "subscriptions": [{ "event_type": "slow.event" }] }),
        )
        .await;
    let slow = slow.expect_status(201).str("id");
    let event = publish(&alice, "slow.event").await;
    let delivery =
        alice.all_pages(&format!("/api/v1/deliveries?event_id={event}&endpoint_id={slow}"), 10).await.remove(0);
    let path = format!("/api/v1/deliveries/{}", delivery["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while alice.get(&path).await.json["status"] != "delivering" {
        assert!(Instant::now() < deadline, "the delivery never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.post(&format!("{path}/retry"), json!({})).await.expect_error(409, "conflict", None);
}

/// Stats counts apart from their `mean_attempt_ms`.
fn timed(mut counts: Value) -> (Value, Value) {
    let mean = counts.as_object_mut().and_then(|c| c.remove("mean_attempt_ms")).expect("mean_attempt_ms");
    (counts, mean)
}

/// Reads `path` (a `200`) until `done` holds of its answer, for up to 20 s; the last answer either way.
async fn read_until(client: &Client, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client.get(path).await.expect_status(200).json;
        if done(&answer) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the dead-letter queue until it holds `count` deliveries.
async fn wait_dead(client: &Client, query: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dead = client.all_pages(&format!("/api/v1/dead-letters{query}"), 2).await;
        if dead.len() >= count || Instant::now() > deadline {
            assert_eq!(dead.len(), count, "{dead:?}");
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /stats` counts the caller's tenant only: its dead letters and endpoints, nothing of another tenant's.
#[tokio::test]
async fn stats_count_the_tenants_own_deliveries_and_endpoints() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let bob = server.tenant("Bob").await;
    let failing = alice.create_endpoint(json!({ "retry": { "schedule": ["1s"], "max_attempts": 1 } })).await;
    let failing = failing.expect_status(201).str("id");
    let held = alice.create_endpoint(json!({ "subscriptions": [{ "event_type": "held.event" }] })).await;
    let held = held.expect_status(201).str("id");
    alice.post(&format!("/api/v1/endpoints/{held}/pause"), json!({})).await.expect_status(200);
    bob.create_endpoint(json!({})).await.expect_status(201);
    for event_type in ["a.one", "a.two"] {
        publish(&alice, event_type).await;
    }
    wait_dead(&alice, &format!("?endpoint_id={failing}"), 2).await;
    publish(&bob, "b.one").await;

    let stats = alice.get("/api/v1/stats").await.expect_status(200).json;
    assert_eq!(stats["deliveries"], json!({ "pending": 0, "delivering": 0, "failed": 0, "dead": 2, "dropped": 0 }));
    assert_eq!(stats["endpoints"], json!({ "active": 1, "paused": 1, "disabled": 0 }));
    assert_eq!(stats["count_limit"], 10000);
    let bobs = bob.get("/api/v1/stats").await.expect_status(200).json;
    assert_eq!(bobs["endpoints"], json!({ "active": 1, "paused": 0, "disabled": 0 }));
    assert_eq!(server.admin().for_tenant(alice.tenant_id()).get("/api/v1/stats").await.json, stats);
    server.admin().get("/api/v1/stats").await.expect_error(400, "invalid_request", Some("Switchyard-Tenant"));
    server.anonymous().get("/api/v1/stats").await.expect_error(401, "unauthorized", None);
}

/// The last day's attempts, counted once their records commit: `GET /stats` sums the tenant's, `GET /stats/hourly`
/// gives them hour by hour, for the tenant or one endpoint. A delivery that needed a retry still counts as
/// delivered; the success rate is of the deliveries that finished.
#[tokio::test]
async fn the_last_days_attempts_and_success_rate_are_counted() {
    let receiver = Receiver::start().await;
    // The one slow attempt: the mean attempt time of the endpoint's four is at least a quarter of it.
    receiver.push([Reply::status(500).delay(Duration::from_millis(400))]);
    let server = TestServer::start_with(|config| config.stats_interval = Duration::from_millis(50)).await;
    let alice = server.tenant("Alice").await;
    let bob = server.tenant("Bob").await;
    let body = json!({
        "url": receiver.url("/hook"),
        "retry": { "schedule": ["1s"] },
        "subscriptions": [{ "event_type": "order.created" }],
    });
    let delivered = alice.post("/api/v1/endpoints", body).await.expect_status(201).str("id");
    let failing = alice
        .create_endpoint(json!({
            "retry": { "schedule": ["1s"], "max_attempts": 1 },
            "subscriptions": [{ "event_type": "order.failed" }],
        }))
        .await
        .expect_status(201)
        .str("id");
    for event_type in ["order.created", "order.created", "order.created", "order.failed"] {
        publish(&alice, event_type).await;
    }

    let stats = read_until(&alice, "/api/v1/stats", |s| s["last_24h"]["succeeded"] == 3 && s["last_24h"]["dead"] == 1);
    let day = stats.await["last_24h"].clone();
    // `retried`: finished deliveries that needed more than one attempt, a share of those finished.
    let counts = |attempts: u64, failed: u64, succeeded: u64, dead: u64, rate: Value, retried: u64| {
        let finished = succeeded + dead;
        let retry_rate = if finished == 0 { Value::Null } else { json!(retried as f64 / finished as f64) };
        json!({ "attempts": attempts, "failed_attempts": failed, "succeeded": succeeded, "dead": dead,
                "success_rate": rate, "retried": retried, "retry_rate": retry_rate })
    };
    // The counts without `mean_attempt_ms`, which is the machine's: checked on its own.
    let (day, day_mean) = timed(day);
    assert_eq!(day, counts(5, 2, 3, 1, json!(0.75), 1), "one delivery retried, one dead letter");

    let hourly = alice.get(&format!("/api/v1/stats/hourly?endpoint_id={delivered}")).await.expect_status(200).json;
    assert_eq!(hourly["endpoint_id"], delivered.as_str());
    let (total, mean) = timed(hourly["total"].clone());
    assert_eq!(total, counts(4, 1, 3, 0, json!(1.0), 1));
    assert!((100.0..400.0).contains(&mean.as_f64().unwrap()), "{mean}: a 400 ms attempt and three quick ones");
    assert!(day_mean.as_f64().unwrap() < mean.as_f64().unwrap(), "{day_mean}: a refused connection is quicker");
    let hours = hourly["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24, "every hour of the day, counted or not");
    let attempts: u64 = hours.iter().map(|hour| hour["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 4);
    let (first, last) = (hours[0]["hour_start"].as_str().unwrap(), hours[23]["hour_start"].as_str().unwrap());
    assert!(first.ends_with(":00:00.000Z") && first < last, "{first} … {last}");
    let two_hours = alice.get(&format!("/api/v1/stats/hourly?endpoint_id={failing}&hours=2")).await.expect_status(200);
    assert_eq!(timed(two_hours.json["total"].clone()).0, counts(1, 1, 0, 1, json!(0.0), 0));
    assert_eq!(two_hours.json["hours"].as_array().unwrap().len(), 2);
    let listed = format!("/api/v1/stats/endpoints?endpoint_ids={delivered},{failing},ep_unknown");
    let mut totals = alice.get(&listed).await.expect_status(200).json;
    for endpoint in totals["endpoints"].as_array_mut().unwrap() {
        let (counts, mean) = timed(endpoint.clone());
        assert_eq!(mean.is_null(), endpoint["endpoint_id"] == "ep_unknown", "{endpoint}");
        *endpoint = counts;
    }
    let with_id = |id: &str, mut counts: Value| {
        counts["endpoint_id"] = Value::from(id);
        counts
    };
    let expected = json!([
        with_id(&delivered, counts(4, 1, 3, 0, json!(1.0), 1)),
        with_id(&failing, counts(1, 1, 0, 1, json!(0.0), 0)),
        with_id("ep_unknown", counts(0, 0, 0, 0, Value::Null, 0)),
    ]);
    assert_eq!((&totals["hours"], &totals["endpoints"]), (&json!(24), &expected), "in the order asked");
    let bobs = bob.get(&listed).await.expect_status(200).json;
    assert!(bobs["endpoints"].as_array().unwrap().iter().all(|e| e["attempts"] == 0), "{bobs}");
    let too_many = vec!["ep_x"; 101].join(",");
    for bad in ["", "endpoint_ids=", "endpoint_ids=a,,b", &format!("endpoint_ids={too_many}")] {
        let answer = alice.get(&format!("/api/v1/stats/endpoints?{bad}")).await;
        answer.expect_error(400, "invalid_request", Some("endpoint_ids"));
    }
    alice.get("/api/v1/stats/endpoints?endpoint_ids=a&hours=0").await.expect_error(
        400,
        "invalid_request",
        Some("hours"),
    );
    let whole = alice.get("/api/v1/stats/hourly?hours=168").await.expect_status(200).json;
    assert_eq!(timed(whole["total"].clone()), (day, day_mean));

    let bobs = bob.get("/api/v1/stats").await.expect_status(200).json;
    assert_eq!(timed(bobs["last_24h"].clone()), (counts(0, 0, 0, 0, Value::Null, 0), Value::Null), "another tenant's");
    bob.get(&format!("/api/v1/stats/hourly?endpoint_id={delivered}")).await.expect_error(404, "not_found", None);
    alice.get("/api/v1/stats/hourly?endpoint_id=ep_unknown").await.expect_error(404, "not_found", None);
    let quiet = alice.create_endpoint(json!({ "subscriptions": [{ "event_type": "never.sent" }] })).await;
    let quiet = alice.get(&format!("/api/v1/stats/hourly?endpoint_id={}", quiet.str("id"))).await.expect_status(200);
    assert_eq!(timed(quiet.json["total"].clone()).0, counts(0, 0, 0, 0, Value::Null, 0), "an endpoint without traffic");
    // A deleted endpoint's attempts stay readable.
    alice.delete(&format!("/api/v1/endpoints/{failing}")).await.expect_status(204);
    let gone = alice.get(&format!("/api/v1/stats/hourly?endpoint_id={failing}")).await.expect_status(200);
    assert_eq!(timed(gone.json["total"].clone()).0, counts(1, 1, 0, 1, json!(0.0), 0));
    for bad in ["hours=0", "hours=169", "hours=day", "hours=1&hours=2"] {
        alice.get(&format!("/api/v1/stats/hourly?{bad}")).await.expect_error(400, "invalid_request", Some("hours"));
    }
    alice.get("/api/v1/stats/hourly?endpoint=x").await.expect_error(400, "invalid_request", Some("endpoint"));
}

/// `GET /stats/event-types`: the types the tenant published most, with the deliveries each was routed to, counted
/// once their publish commits. An event an idempotency key answered with an earlier one is not counted again.
#[tokio::test]
async fn the_event_types_published_most_are_counted() {
    let server = TestServer::start_with(|config| config.stats_interval = Duration::from_millis(50)).await;
    let alice = server.tenant("Alice").await;
    let bob = server.tenant("Bob").await;
    // Orders go to both endpoints, other events to the second only.
    alice.create_endpoint(json!({ "subscriptions": [{ "event_type": "order.*" }] })).await.expect_status(201);
    let catch_all = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    // A test event is Switchyard's own, not a type the tenant publishes: not counted.
    alice.post(&format!("/api/v1/endpoints/{catch_all}/test"), json!({})).await.expect_status(202);
    for event_type in ["order.paid", "order.paid", "order.paid", "user.created"] {
        publish(&alice, event_type).await;
    }
    let batch = json!({ "events": [{ "type": "order.sent", "data": {} }, { "type": "order.sent", "data": {} }] });
    alice.post("/api/v1/events/batch", batch).await.expect_status(202);
    let keyed = json!({ "type": "order.paid", "data": { "n": 1 }, "idempotency_key": "order-1" });
    alice.post("/api/v1/events", keyed.clone()).await.expect_status(202);
    let again = alice.post("/api/v1/events", keyed).await.expect_status(202);
    assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    bob.create_endpoint(json!({})).await.expect_status(201);
    publish(&bob, "order.paid").await;

    let counted = read_until(&alice, "/api/v1/stats/event-types", |counted| counted["events"] == 7).await;
    let types = json!([
        { "event_type": "order.paid", "events": 4, "deliveries": 8 },
        { "event_type": "order.sent", "events": 2, "deliveries": 4 },
        { "event_type": "user.created", "events": 1, "deliveries": 1 },
    ]);
    let expected = json!({ "hours": 24, "events": 7, "deliveries": 13, "types": 3, "event_types": types });
    assert_eq!(counted, expected, "most published first");
    let top = alice.get("/api/v1/stats/event-types?limit=1&hours=168").await.expect_status(200).json;
    assert_eq!((&top["events"], &top["types"], &top["hours"]), (&json!(7), &json!(3), &json!(168)), "{top}");
    assert_eq!(top["event_types"], json!([types[0]]), "the totals are of every type, the list of the top one");

    let bobs = read_until(&bob, "/api/v1/stats/event-types", |bobs| bobs["events"] == 1).await;
    let only = json!([{ "event_type": "order.paid", "events": 1, "deliveries": 1 }]);
    assert_eq!(bobs["event_types"], only, "another tenant's own");

    for bad in ["limit=0", "limit=101", "limit=ten", "limit=-1"] {
        let answer = alice.get(&format!("/api/v1/stats/event-types?{bad}")).await;
        answer.expect_error(400, "invalid_request", Some("limit"));
    }
    for bad in ["hours=0", "hours=169"] {
        let answer = alice.get(&format!("/api/v1/stats/event-types?{bad}")).await;
        answer.expect_error(400, "invalid_request", Some("hours"));
    }
    let answer = alice.get("/api/v1/stats/event-types?type=order.paid").await;
    answer.expect_error(400, "invalid_request", Some("type"));
    server.admin().get("/api/v1/stats/event-types").await.expect_error(
        400,
        "invalid_request",
        Some("Switchyard-Tenant"),
    );
    server.anonymous().get("/api/v1/stats/event-types").await.expect_error(401, "unauthorized", None);
}

#[tokio::test]
async fn dead_letters_are_listed_and_requeued() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    // One attempt only, to a port nothing listens on: every delivery goes straight to the dead-letter queue.
    let failing = alice.create_endpoint(json!({ "retry": { "schedule": ["1s"], "max_attempts": 1 } })).await;
    let failing = failing.expect_status(201).str("id");
    let kept = alice.create_endpoint(json!({ "subscriptions": [{ "event_type": "keep.me" }] })).await;
    let kept = kept.expect_status(201).str("id");
    alice.post(&format!("/api/v1/endpoints/{kept}/pause"), json!({})).await.expect_status(200);
    for event_type in ["a.one", "a.two", "b.one"] {
        publish(&alice, event_type).await;
    }
    let dead = wait_dead(&alice, "", 3).await;
    assert!(dead.iter().all(|d| d["status"] == "dead" && d["endpoint_id"] == failing.as_str()));
    // Held while paused, so requeued deliveries stay put for the assertions below.
    alice.post(&format!("/api/v1/endpoints/{failing}/pause"), json!({})).await.expect_status(200);

    assert_eq!(alice.all_pages(&format!("/api/v1/dead-letters?endpoint_id={kept}"), 10).await.len(), 0);
    assert_eq!(alice.all_pages(&format!("/api/v1/dead-letters?endpoint_id={failing}"), 10).await.len(), 3);
    assert_eq!(alice.all_pages("/api/v1/dead-letters?event_type=a.one", 10).await.len(), 1);
    assert_eq!(alice.get("/api/v1/dead-letters?until=2000-01-01T00:00:00Z").await.json["data"], json!([]));
    let died_lately = alice.all_pages("/api/v1/dead-letters?updated_since=2000-01-01T00:00:00Z", 10).await;
    assert_eq!(died_lately.len(), 3);
    assert_eq!(alice.get("/api/v1/dead-letters?updated_until=2000-01-01T00:00:00Z").await.json["data"], json!([]));
    alice.get("/api/v1/dead-letters?updated_since=today").await.expect_invalid("updated_since");
    let none_died_then = json!({ "updated_until": "2000-01-01T00:00:00Z" });
    assert_eq!(alice.post("/api/v1/dead-letters/requeue", none_died_then).await.expect_status(200).json["requeued"], 0);
    alice.get("/api/v1/dead-letters?status=dead").await.expect_invalid("status");
    alice.get("/api/v1/dead-letters?event_type=a.*").await.expect_invalid("event_type");
    alice.get("/api/v1/deliveries?event_type=*").await.expect_invalid("event_type");
    alice.post("/api/v1/dead-letters/requeue", json!({ "event_type": "a.*" })).await.expect_invalid("event_type");

    let bob = server.tenant("Bob").await;
    let b_one = dead.iter().find(|d| d["event_type"] == "b.one").unwrap()["id"].as_str().unwrap().to_string();
    let bobs = bob.post("/api/v1/dead-letters/requeue", json!({ "delivery_ids": [b_one] })).await.expect_status(200);
    assert_eq!(bobs.json, json!({ "requeued": 0 }));
    assert_eq!(bob.post("/api/v1/dead-letters/requeue", json!({})).await.expect_status(200).json["requeued"], 0);

    let one = alice.post("/api/v1/dead-letters/requeue", json!({ "delivery_ids": [b_one, "dlv_unknown"] })).await;
    assert_eq!(one.expect_status(200).json, json!({ "requeued": 1 }));
    let requeued = alice.get(&format!("/api/v1/deliveries/{b_one}")).await.expect_status(200);
    assert_eq!(requeued.json["status"], "pending");
    let none_before = json!({ "until": "2000-01-01T00:00:00Z", "since": "1999-01-01T00:00:00+01:00" });
    assert_eq!(alice.post("/api/v1/dead-letters/requeue", none_before).await.expect_status(200).json["requeued"], 0);
    alice.post("/api/v1/dead-letters/requeue", json!({ "since": "yesterday" })).await.expect_invalid("since");
    let a_one = dead.iter().find(|d| d["event_type"] == "a.one").unwrap();
    let by_event = format!("/api/v1/dead-letters?event_id={}", a_one["event_id"].as_str().unwrap());
    assert_eq!(alice.all_pages(&by_event, 10).await, vec![a_one.clone()]);
    let by_event = alice.post("/api/v1/dead-letters/requeue", json!({ "event_id": a_one["event_id"] })).await;
    assert_eq!(by_event.expect_status(200).json["requeued"], 1);
    let typed =
        alice.post("/api/v1/dead-letters/requeue", json!({ "event_type": "a.two", "endpoint_id": failing })).await;
    assert_eq!(typed.expect_status(200).json["requeued"], 1);
    let rest = alice.post("/api/v1/dead-letters/requeue", json!({ "since": "2000-01-01T00:00:00Z" })).await;
    assert_eq!(rest.expect_status(200).json["requeued"], 0, "all requeued already");
    assert_eq!(alice.all_pages("/api/v1/dead-letters", 100).await, Vec::<Value>::new());

    // Deleting an endpoint turns its unfinished deliveries into dead letters, which have nowhere to go back to.
    alice.delete(&format!("/api/v1/endpoints/{failing}")).await.expect_status(204);
    let orphans = wait_dead(&alice, "", 3).await;
    assert!(orphans.iter().all(|d| d["last_error"] == "endpoint deleted"), "{orphans:?}");
    assert_eq!(alice.post("/api/v1/dead-letters/requeue", json!({})).await.expect_status(200).json["requeued"], 0);

    alice.post("/api/v1/dead-letters/requeue", json!({ "delivery_ids": [] })).await.expect_invalid("delivery_ids");
    let too_many: Vec<String> = (0..1001).map(|i| format!("dlv_{i}")).collect();
    alice
        .post("/api/v1/dead-letters/requeue", json!({ "delivery_ids": too_many }))
        .await
        .expect_invalid("delivery_ids");
    let mixed = json!({ "delivery_ids": ["dlv_1"], "endpoint_id": kept });
    alice.post("/api/v1/dead-letters/requeue", mixed).await.expect_invalid("delivery_ids");
    let mixed = json!({ "delivery_ids": ["dlv_1"], "since": "2000-01-01T00:00:00Z" });
    alice.post("/api/v1/dead-letters/requeue", mixed).await.expect_invalid("delivery_ids");
    alice.post("/api/v1/dead-letters/requeue", json!({ "delivery_ids": "dlv_1" })).await.expect_invalid("delivery_ids");
    alice.post("/api/v1/dead-letters/requeue", json!({ "status": "dead" })).await.expect_invalid("status");
    let rerun = json!({ "rerun_plugins": 1 });
    alice.post("/api/v1/dead-letters/requeue", rerun).await.expect_invalid("rerun_plugins");
}

#[tokio::test]
async fn management_actions_are_audited_without_secrets() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let actor = alice.key_id.clone().unwrap();
    let extra_key = alice.post("/api/v1/api-keys", json!({ "name": "temp" })).await.expect_status(201);
    alice.delete(&format!("/api/v1/api-keys/{}", extra_key.str("id"))).await.expect_status(204);
    let endpoint = alice
        .post(
            "/api/v1/endpoints",
            json!({ "url": "https://hooks.example.com/T000/B000/tok3n-in-path?sig=qu3ry-t0ken", "headers": { "Authorization": "Bearer hunter2-header" } }),
        )
        .await
        .expect_status(201);
    let id = endpoint.str("id");
    let path = format!("/api/v1/endpoints/{id}");
    alice
        .patch(&path, json!({ "description": "d", "headers": { "Authorization": "Bearer hunter3-header" } }))
        .await
        .expect_status(200);
    alice.post(&format!("{path}/pause"), json!({})).await.expect_status(200);
    alice.post(&format!("{path}/activate"), json!({})).await.expect_status(200);
    let rotated =
        alice.post(&format!("{path}/rotate-secret"), json!({ "grace_period": "1h" })).await.expect_status(200);
    alice
        .put(&format!("{path}/subscriptions"), json!({ "subscriptions": [{ "event_type": "a.*" }] }))
        .await
        .expect_status(200);
    alice.post("/api/v1/event-types", json!({ "name": "a.b" })).await.expect_status(201);
    let event = publish(&alice, "a.b").await;
    let delivery = alice.all_pages(&format!("/api/v1/deliveries?event_id={event}"), 10).await.remove(0);
    retry_when_idle(&alice, delivery["id"].as_str().unwrap()).await.expect_status(202);
    alice.delete(&path).await.expect_status(204);
    alice.post("/api/v1/dead-letters/requeue", json!({})).await.expect_status(200);

    let log = alice.all_pages("/api/v1/audit-log", 3).await;
    let mut actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            "tenant.created",
            "api_key.created",
            "api_key.created",
            "api_key.revoked",
            "endpoint.created",
            "endpoint.updated",
            "endpoint.paused",
            "endpoint.activated",
            "endpoint.secret_rotated",
            "endpoint.subscriptions_replaced",
            "event_type.created",
            "delivery.retried",
            "endpoint.deleted",
            "dead_letters.requeued",
        ]
    );
    // The tenant and its first key were made with the admin key; everything after with the tenant key.
    let actors: Vec<&str> = log.iter().rev().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors[..2], ["admin", "admin"]);
    assert!(actors[2..].iter().all(|a| *a == actor), "{actors:?}");
    let created = log.iter().find(|e| e["action"] == "endpoint.created").unwrap();
    assert_eq!(created["resource_type"], "endpoint");
    assert_eq!(created["resource_id"], id.as_str());
    assert_eq!(created["details"]["host"], "hooks.example.com");
    for entry in &log {
        assert!(entry["id"].as_str().unwrap().starts_with("aud_"));
        assert!(entry["at"].as_str().unwrap().ends_with('Z'));
    }

    let text = serde_json::to_string(&log).unwrap();
    for secret in [
        endpoint.str("secret"),
        rotated.str("secret"),
        extra_key.str("key"),
        "hunter2".to_string(),
        "hunter3".to_string(),
        "tok3n".to_string(),
        "qu3ry".to_string(),
    ] {
        assert!(!text.contains(&secret), "the audit log shows `{secret}`: {text}");
    }
    let paused = alice.all_pages("/api/v1/audit-log?action=endpoint.paused", 10).await;
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["resource_id"], id.as_str());
    assert_eq!(paused[0]["details"], json!({ "previous_status": "active", "previous_reason": null }));
    let of_endpoint = alice.all_pages(&format!("/api/v1/audit-log?resource_id={id}"), 10).await;
    assert_eq!(
        of_endpoint.len(),
        7,
        "created, updated, paused, activated, rotated, subscriptions, deleted: {of_endpoint:#?}"
    );

    let bob = server.tenant("Bob").await;
    let bobs = bob.all_pages("/api/v1/audit-log", 100).await;
    assert!(bobs.iter().all(|e| e["resource_id"] != id.as_str()));
    assert!(!ids(&bobs).is_empty(), "Bob's log has his own tenant's creation");
}

#[tokio::test]
async fn a_delivery_of_a_deleted_endpoint_cannot_be_retried() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let endpoint = alice.create_endpoint(json!({})).await.expect_status(201).str("id");
    let event = publish(&alice, "payment.succeeded").await;
    alice.delete(&format!("/api/v1/endpoints/{endpoint}")).await.expect_status(204);

    let deliveries = alice.all_pages(&format!("/api/v1/deliveries?event_id={event}"), 10).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["status"], "dead");
    assert_eq!(deliveries[0]["last_error"], "endpoint deleted");
    let id = deliveries[0]["id"].as_str().unwrap();
    let refused = alice.post(&format!("/api/v1/deliveries/{id}/retry"), json!({})).await;
    refused.expect_error(409, "conflict", None);
    assert!(refused.text.contains("endpoint was deleted"), "{}", refused.text);
    assert_eq!(alice.get(&format!("/api/v1/deliveries/{id}")).await.expect_status(200).str("status"), "dead");
}

/// Parses a CSV export into its header and rows.
fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().iter().map(str::to_string).collect();
    let rows = reader.records().map(|row| row.unwrap().iter().map(str::to_string).collect()).collect();
    (header, rows)
}

/// `GET /deliveries/export` and `GET /dead-letters/export`: every row the filters select, not one page (1,100
/// deliveries take three reads of 500), newest first, as CSV, with the listings' validation of their filters.
#[tokio::test]
async fn deliveries_and_dead_letters_are_exported_as_csv() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    // Its first attempts fail (nothing listens) and the next is an hour away: the deliveries stay put.
    let held = alice.create_endpoint(json!({
        "subscriptions": [{ "event_type": "order.*" }],
        "retry": { "schedule": ["1h"], "max_attempts": 2 }
    }));
    let held = held.await.expect_status(201).str("id");
    for batch in 0..11 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let event_type = if i % 10 == 0 { "order.refunded" } else { "order.created" };
                json!({ "type": event_type, "data": { "n": batch * 100 + i } })
            })
            .collect();
        alice.post("/api/v1/events/batch", json!({ "events": events })).await.expect_status(202);
    }

    let exported = alice.get("/api/v1/deliveries/export").await.expect_status(200);
    assert_eq!(exported.headers["content-type"], "text/csv; charset=utf-8");
    let disposition = exported.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment; filename=\"deliveries-") && disposition.ends_with(".csv\""));
    let (header, rows) = csv_rows(&exported.text);
    let column = |name: &str| header.iter().position(|c| c == name).unwrap_or_else(|| panic!("no {name}: {header:?}"));
    let (id, event_type, status) = (column("id"), column("event_type"), column("status"));
    assert_eq!(rows.len(), 1_100);
    let exported_ids: Vec<String> = rows.iter().map(|row| row[id].clone()).collect();
    assert_eq!(exported_ids, ids(&alice.all_pages("/api/v1/deliveries", 100).await), "the listing's rows, in order");
    assert!(rows.iter().all(|row| row[column("endpoint_id")] == held && row[status] != "dead"), "{rows:?}");

    let refunds = alice.get("/api/v1/deliveries/export?event_type=order.refunded").await.expect_status(200);
    let (_, refunds) = csv_rows(&refunds.text);
    assert_eq!(refunds.len(), 110);
    assert!(refunds.iter().all(|row| row[event_type] == "order.refunded"));
    let future = alice.get("/api/v1/deliveries/export?since=2999-01-01T00:00:00Z").await.expect_status(200);
    assert_eq!(csv_rows(&future.text), (header.clone(), vec![]), "nothing selected: the columns alone");
    alice.get("/api/v1/deliveries/export?status=lost").await.expect_invalid("status");
    alice.get("/api/v1/deliveries/export?until=noon").await.expect_invalid("until");
    alice.get("/api/v1/deliveries/export?limit=10").await.expect_invalid("limit");
    let bob = server.tenant("Bob").await;
    assert_eq!(csv_rows(&bob.get("/api/v1/deliveries/export").await.expect_status(200).text).1.len(), 0);
    server.anonymous().get("/api/v1/deliveries/export").await.expect_status(401);

    // One attempt, to a port nothing listens on: dead letters, with the error they died of.
    let failing = alice.create_endpoint(json!({ "retry": { "schedule": ["1s"], "max_attempts": 1 } })).await;
    let failing = failing.expect_status(201).str("id");
    for n in 0..3 {
        alice.post("/api/v1/events", json!({ "type": "order.created", "data": { "n": n } })).await.expect_status(202);
    }
    let dead = wait_dead(&alice, "", 3).await;
    let dead_export = alice.get("/api/v1/dead-letters/export").await.expect_status(200);
    assert!(dead_export.headers["content-disposition"].to_str().unwrap().contains("filename=\"dead-letters-"));
    let (dead_header, dead_rows) = csv_rows(&dead_export.text);
    assert_eq!(dead_header, header);
    assert_eq!(dead_rows.iter().map(|row| row[id].clone()).collect::<Vec<_>>(), ids(&dead));
    for row in &dead_rows {
        assert_eq!((row[status].as_str(), row[column("endpoint_id")].as_str()), ("dead", failing.as_str()));
        assert_eq!(row[column("attempts")], "1");
        assert!(!row[column("last_error")].is_empty(), "{row:?}");
    }
    let none = alice.get(&format!("/api/v1/dead-letters/export?endpoint_id={held}")).await.expect_status(200);
    assert!(csv_rows(&none.text).1.is_empty());
    alice.get("/api/v1/dead-letters/export?status=dead").await.expect_invalid("status");
}
