//! The dispatcher against the real SQL store (SQLite in a temporary directory) and a local receiver: events
//! published through the store are delivered, retried on a short per-endpoint schedule, dead-lettered, and a
//! 410 disables the endpoint. The retry arithmetic itself is proven by `retry`'s unit tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::tests::Receiver;
use super::Settings;
use crate::model::{
    new_id, now_millis, Attempt, Delivery, DeliveryStatus, Endpoint, EndpointStatus, Event, SignatureScheme,
    Subscription, Tenant,
};
use crate::secrets::{generate_signing_secret, secret_aad, secret_hint, MasterKey};
use crate::signing;
use crate::store::sql::SqlStore;
use crate::store::{NewDelivery, NewEvent, NewSecret, Store};

struct World {
    _dir: tempfile::TempDir,
    store: Arc<SqlStore>,
    tenant_id: String,
    endpoint_id: String,
    secret: String,
    stop: CancellationToken,
    dispatcher: tokio::task::JoinHandle<()>,
    wakeup: Arc<Notify>,
    /// Publishes as the API does: fresh deliveries are handed straight to the dispatcher.
    ingest: crate::writer::Ingest,
}

impl World {
    /// A tenant with one endpoint at `url` retried every 200 ms, up to `max_attempts` attempts, and a running
    /// dispatcher.
    async fn start(url: &str, max_attempts: i64, shutdown_grace: Duration) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqlStore::connect(&format!("sqlite://{}/x.db", dir.path().display())).await.unwrap());
        let key = MasterKey::parse(&"ab".repeat(32)).unwrap();
        let now = now_millis();
        let tenant = Tenant { id: new_id("ten"), name: "Acme".into(), rate_limit: None, created_at: now };
        store.create_tenant(&tenant).await.unwrap();
        let endpoint = Endpoint {
            id: new_id("ep"),
            tenant_id: tenant.id.clone(),
            url: url.into(),
            description: String::new(),
            status: EndpointStatus::Active,
            status_reason: None,
            timeout_ms: 5_000,
            headers: BTreeMap::new(),
            retry_schedule_ms: Some(vec![200]),
            max_attempts: Some(max_attempts),
            rate_limit: None,
            signature_scheme: SignatureScheme::Standard,
            signature_header: None,
            metadata: BTreeMap::new(),
            plugins: Default::default(),
            subscriptions: vec![Subscription { event_type: "*".into(), filter: None }],
            created_at: now,
            updated_at: now,
        };
        let secret = generate_signing_secret();
        let secret_id = new_id("sec");
        let sealed = NewSecret {
            ciphertext: key.seal(secret.as_bytes(), &secret_aad(&endpoint.id, &secret_id)),
            id: secret_id,
            hint: secret_hint(&secret),
        };
        store.create_endpoint(&endpoint, &sealed).await.unwrap();

        let settings = Settings {
            concurrency: 4,
            endpoint_concurrency: 4,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(3600),
            disable_failing_after: None,
            disable_failing_attempts: None,
            shutdown_grace,
            error_backoff: Duration::from_millis(100),
            extra_root_certificates: Vec::new(),
            destinations: Arc::new(crate::destinations::Destinations::new(Vec::new(), true)),
            retry_schedule_ms: crate::retry::DEFAULT_SCHEDULE_MS.to_vec(),
        };
        let wakeup = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (dispatcher, ingest) =
            super::with_writer(store.clone(), key, settings, new_id("node"), wakeup.clone(), Arc::default());
        let dispatcher = dispatcher.run(stop.clone());
        World {
            _dir: dir,
            store,
            tenant_id: tenant.id,
            endpoint_id: endpoint.id,
            secret,
            stop,
            dispatcher: tokio::spawn(dispatcher),
            wakeup,
            ingest,
        }
    }

    fn event(&self) -> Event {
        Event {
            id: new_id("evt"),
            tenant_id: self.tenant_id.clone(),
            event_type: "payment.succeeded".into(),
            data: RawValue::from_string(r#"{"amount":1500}"#.into()).unwrap(),
            idempotency_key: None,
            received_at: now_millis(),
        }
    }

    /// Publishes one event for the endpoint straight into the store, matched by hand, and returns (event id,
    /// delivery id). Nothing is handed over: the dispatcher claims it.
    async fn publish(&self) -> (String, String) {
        let event = self.event();
        let delivery_id = new_id("dlv");
        let event_id = event.id.clone();
        let delivery = NewDelivery { id: delivery_id.clone(), endpoint_id: self.endpoint_id.clone(), lease: None };
        let new = NewEvent { event, deliveries: vec![delivery] };
        self.store.publish(&[new]).await.unwrap();
        self.wakeup.notify_one();
        (event_id, delivery_id)
    }

    /// Publishes one event through the writer, as the API does; returns the event id and what the writer reported.
    async fn publish_through_writer(&self) -> (String, crate::store::Published) {
        let event = self.event();
        let event_id = event.id.clone();
        let mut published =
            self.ingest.publish(vec![event], crate::ingest::Route::Subscriptions(Vec::new())).await.unwrap();
        (event_id, published.remove(0))
    }

    async fn delivery(&self, id: &str) -> Delivery {
        self.store.get_delivery(&self.tenant_id, id).await.unwrap().unwrap()
    }

    async fn attempts(&self, id: &str) -> Vec<Attempt> {
        self.store.list_attempts(&self.tenant_id, id).await.unwrap()
    }

    async fn wait_status(&self, id: &str, status: DeliveryStatus) -> Delivery {
        wait_for(&format!("delivery {status}"), || async {
            let delivery = self.delivery(id).await;
            (delivery.status == status).then_some(delivery)
        })
        .await
    }

    async fn stop(self) -> (Arc<SqlStore>, String, tempfile::TempDir) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.dispatcher).await.unwrap().unwrap();
        (self.store, self.tenant_id, self._dir)
    }
}

async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn published_event_is_delivered_signed() {
    let receiver = Receiver::default();
    let world = World::start(&receiver.serve().await, 3, Duration::from_secs(5)).await;
    let (event_id, delivery_id) = world.publish().await;
    let delivery = world.wait_status(&delivery_id, DeliveryStatus::Succeeded).await;
    assert_eq!((delivery.attempts, delivery.last_status_code, delivery.lease_owner), (1, Some(200), None));
    let attempts = world.attempts(&delivery_id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].attempt_number, attempts[0].outcome.as_str()), (1, "succeeded"));

    let (headers, body) = receiver.requests.lock().unwrap()[0].clone();
    let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(get("webhook-id"), event_id);
    let timestamp = get("webhook-timestamp").parse().unwrap();
    assert!(signing::verify_standard(&world.secret, &event_id, timestamp, &body, &get("webhook-signature")));
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(envelope["data"]["amount"], 1500);
    world.stop().await;
}

#[tokio::test]
async fn failing_receiver_is_retried_on_schedule_then_dead_lettered() {
    let receiver = Receiver::answering(&[500, 500, 500]);
    let world = World::start(&receiver.serve().await, 3, Duration::from_secs(5)).await;
    let (_, delivery_id) = world.publish().await;
    let delivery = world.wait_status(&delivery_id, DeliveryStatus::Dead).await;
    assert_eq!((delivery.attempts, delivery.last_status_code, delivery.next_attempt_at), (3, Some(500), None));
    let attempts = world.attempts(&delivery_id).await;
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry", "dead"]);
    assert_eq!(attempts.iter().map(|a| a.attempt_number).collect::<Vec<_>>(), [1, 2, 3]);
    for pair in attempts.windows(2) {
        let gap = pair[1].started_at - (pair[0].started_at + pair[0].duration_ms);
        assert!(gap >= 155, "200 ms schedule with at most 20 % jitter, got {gap} ms");
    }
    assert_eq!(receiver.hits(), 3);
    world.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let receiver = Receiver::answering(&[410]);
    let world = World::start(&receiver.serve().await, 3, Duration::from_secs(5)).await;
    let (_, delivery_id) = world.publish().await;
    world.wait_status(&delivery_id, DeliveryStatus::Dead).await;
    assert_eq!(world.attempts(&delivery_id).await[0].outcome, "gone");
    let endpoint = world.store.get_endpoint(&world.tenant_id, &world.endpoint_id).await.unwrap().unwrap();
    assert_eq!(endpoint.status, EndpointStatus::Disabled);
    assert_eq!(endpoint.status_reason.as_deref(), Some(super::outcome::GONE_REASON));
    world.stop().await;
}

#[tokio::test]
async fn shutdown_hands_unfinished_deliveries_back() {
    let receiver = Receiver { delay: Duration::from_secs(30), ..Receiver::default() };
    let world = World::start(&receiver.serve().await, 3, Duration::from_millis(200)).await;
    let (_, delivery_id) = world.publish().await;
    wait_for("request in flight", || async { (receiver.hits() == 1).then_some(()) }).await;
    assert_eq!(world.delivery(&delivery_id).await.status, DeliveryStatus::Delivering);
    let (store, tenant_id, _dir) = world.stop().await;
    let delivery = store.get_delivery(&tenant_id, &delivery_id).await.unwrap().unwrap();
    assert_eq!((delivery.status, delivery.attempts, delivery.lease_owner), (DeliveryStatus::Pending, 0, None));
    assert!(store.list_attempts(&tenant_id, &delivery_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_fresh_delivery_is_stored_leased_and_handed_over_without_a_claim() {
    let receiver = Receiver { delay: Duration::from_millis(300), ..Receiver::default() };
    let world = World::start(&receiver.serve().await, 3, Duration::from_secs(5)).await;
    // The dispatcher takes handovers once its first claim has found nothing older waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (event_id, published) = world.publish_through_writer().await;
    assert_eq!((published.deliveries, published.leased.len()), (1, 1));
    // Already leased when the 202 would go out, and nobody woke the dispatcher: no claim could have done it.
    let stored = world.delivery(&published.leased[0]).await;
    assert_eq!(stored.status, DeliveryStatus::Delivering);
    assert!(stored.lease_owner.as_deref().is_some_and(|owner| owner.starts_with("node_")), "{stored:?}");
    assert!(stored.lease_expires_at.unwrap() >= now_millis() + 50_000, "a full lease: {stored:?}");

    let delivery = world.wait_status(&published.leased[0], DeliveryStatus::Succeeded).await;
    assert_eq!((delivery.attempts, delivery.lease_owner), (1, None));
    let (headers, body) = receiver.requests.lock().unwrap()[0].clone();
    let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(get("webhook-id"), event_id);
    let timestamp = get("webhook-timestamp").parse().unwrap();
    assert!(signing::verify_standard(&world.secret, &event_id, timestamp, &body, &get("webhook-signature")));
    assert_eq!(receiver.hits(), 1);
    world.stop().await;
}

#[tokio::test]
async fn handed_over_deliveries_are_given_back_at_shutdown() {
    let receiver = Receiver { delay: Duration::from_secs(30), ..Receiver::default() };
    let world = World::start(&receiver.serve().await, 3, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, published) = world.publish_through_writer().await;
    assert_eq!(published.leased.len(), 1);
    wait_for("request in flight", || async { (receiver.hits() == 1).then_some(()) }).await;
    let (store, tenant_id, _dir) = world.stop().await;
    let delivery = store.get_delivery(&tenant_id, &published.leased[0]).await.unwrap().unwrap();
    assert_eq!((delivery.status, delivery.attempts, delivery.lease_owner), (DeliveryStatus::Pending, 0, None));
}
