//! The group commits both store benchmarks write (`benches/store.rs` times them, `examples/group_commits.rs`
//! runs a fixed number for an instruction count): each stores `EVENTS` new events (or as many as
//! [`GroupCommits::with_events`] says), each fanned out to every
//! endpoint (stored leased, as handed-over deliveries are), and records a successful first attempt for every
//! delivery of the commit before, so the tables grow and every delivery is inserted once and updated once, as in
//! a real run. The fsync of `synchronous = FULL` is included.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use switchyard::model::{
    new_id, now_millis, Attempt, DeliveryStatus, Endpoint, EndpointStatus, Event, PreparedRequest, SignatureScheme,
    Subscription, Tenant,
};
use switchyard::store::sql::SqlStore;
use switchyard::store::{AttemptOutcome, Lease, NewDelivery, NewEvent, NewSecret, Store};

/// Events per commit: the closed-loop harness runs 50 publishers.
pub const EVENTS: usize = 50;
const OWNER: &str = "node_bench";
const PAYLOAD: &str = r#"{"sent_at_ns":1795000000000000000,"seq":42,"parity":0,"amount":1234,"currency":"EUR","customer":{"id":"cus_123","country":"DE"},"items":[{"sku":"a","qty":1},{"sku":"b","qty":3}]}"#;

pub struct GroupCommits {
    store: Arc<SqlStore>,
    tenant_id: String,
    endpoint_ids: Vec<String>,
    /// The deliveries of the previous commit, whose attempts the next one records.
    in_flight: Vec<NewDelivery>,
    payload: String,
    events: usize,
    _dir: tempfile::TempDir,
}

impl GroupCommits {
    pub async fn new(endpoints: usize) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.expect("SQLite store"));
        let tenant = Tenant { id: new_id("ten"), name: "bench".into(), rate_limit: None, created_at: now_millis() };
        store.create_tenant(&tenant).await.expect("tenant");
        let mut endpoint_ids = Vec::new();
        for _ in 0..endpoints {
            let endpoint = Endpoint {
                id: new_id("ep"),
                tenant_id: tenant.id.clone(),
                url: "http://127.0.0.1:9/hook".into(),
                description: String::new(),
                status: EndpointStatus::Active,
                status_reason: None,
                timeout_ms: 10_000,
                headers: BTreeMap::new(),
                retry_schedule_ms: None,
                max_attempts: None,
                rate_limit: None,
                signature_scheme: SignatureScheme::Standard,
                signature_header: None,
                metadata: BTreeMap::new(),
                plugins: Default::default(),
                subscriptions: vec![Subscription { event_type: "bench.*".into(), filter: None }],
                created_at: now_millis(),
                updated_at: now_millis(),
            };
            let secret = NewSecret { id: new_id("sec"), ciphertext: vec![0; 60], hint: "whsec_…".into() };
            store.create_endpoint(&endpoint, &secret).await.expect("endpoint");
            endpoint_ids.push(endpoint.id);
        }
        GroupCommits {
            store,
            tenant_id: tenant.id,
            endpoint_ids,
            in_flight: Vec::new(),
            payload: PAYLOAD.into(),
            events: EVENTS,
            _dir: dir,
        }
    }

    /// Pads every event's payload to at least `bytes` with a string field (the default payload is 178 bytes).
    pub fn with_payload_of(mut self, bytes: usize) -> Self {
        if bytes <= PAYLOAD.len() {
            return self;
        }
        let padding = bytes.saturating_sub(PAYLOAD.len() + r#","padding":"""#.len());
        self.payload = format!(r#"{},"padding":"{}"}}"#, &PAYLOAD[..PAYLOAD.len() - 1], "x".repeat(padding));
        self
    }

    /// Stores `events` events per commit instead of `EVENTS`: the router's commits are smaller when publishers
    /// wait on each commit (about 20 in `single`).
    pub fn with_events(mut self, events: usize) -> Self {
        self.events = events;
        self
    }

    pub async fn commit(&mut self) {
        let now = now_millis();
        let lease = Lease { owner: OWNER.into(), until: now + 360_000 };
        let events: Vec<NewEvent> = (0..self.events)
            .map(|_| NewEvent {
                event: Event {
                    id: new_id("evt"),
                    tenant_id: self.tenant_id.clone(),
                    event_type: "bench.tick".into(),
                    data: RawValue::from_string(self.payload.clone()).expect("valid JSON"),
                    idempotency_key: None,
                    received_at: now,
                },
                deliveries: self
                    .endpoint_ids
                    .iter()
                    .map(|endpoint_id| NewDelivery {
                        id: new_id("dlv"),
                        endpoint_id: endpoint_id.clone(),
                        lease: Some(lease.clone()),
                    })
                    .collect(),
            })
            .collect();
        let outcomes: Vec<AttemptOutcome> = self
            .in_flight
            .iter()
            .map(|delivery| AttemptOutcome {
                attempt: Attempt {
                    id: new_id("att"),
                    tenant_id: self.tenant_id.clone(),
                    delivery_id: delivery.id.clone(),
                    attempt_number: 1,
                    started_at: now,
                    duration_ms: 1,
                    status_code: Some(204),
                    response_body: Some(String::new()),
                    error: None,
                    outcome: "succeeded".into(),
                },
                endpoint_id: delivery.endpoint_id.clone(),
                status: DeliveryStatus::Succeeded,
                next_attempt_at: None,
                disable_endpoint: None,
                // What the dispatcher records for a first attempt on an endpoint without plugins: a preparation
                // with nothing in it, so a retry sends the same even if plugins are bound in between.
                prepared: Some(PreparedRequest::default()),
            })
            .collect();
        let (published, recorded) = self.store.write_batch(&events, OWNER, &outcomes).await;
        let published = published.expect("publish");
        assert_eq!(published.len(), self.events);
        assert!(recorded.expect("records").into_iter().all(|r| r), "every lease was held");
        self.in_flight = events.into_iter().flat_map(|new| new.deliveries).collect();
    }
}
