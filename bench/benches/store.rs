//! The SQLite group commit on its own: what one `Store::write_batch` costs the database for a publish group and
//! the attempt records that share its transaction, in the shape the router writes them under load. Each commit
//! stores `EVENTS` new events, each fanned out to every endpoint (stored leased, as handed-over deliveries are),
//! and records a successful first attempt for every delivery of the commit before, so the tables grow and every
//! delivery is inserted once and updated once, as in a real run. The fsync of `synchronous = FULL` is included.
//!
//! `cargo bench -p switchyard-bench --bench store`; the time is per commit, so divide by `EVENTS × endpoints`
//! for the cost per delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::value::RawValue;
use switchyard::model::{
    new_id, now_millis, Attempt, DeliveryStatus, Endpoint, EndpointStatus, Event, SignatureScheme, Subscription, Tenant,
};
use switchyard::store::sql::SqlStore;
use switchyard::store::{AttemptOutcome, Lease, NewDelivery, NewEvent, NewSecret, Store};

/// Events per commit: the closed-loop harness runs 50 publishers.
const EVENTS: usize = 50;
const OWNER: &str = "node_bench";
const PAYLOAD: &str = r#"{"sent_at_ns":1795000000000000000,"seq":42,"parity":0,"amount":1234,"currency":"EUR","customer":{"id":"cus_123","country":"DE"},"items":[{"sku":"a","qty":1},{"sku":"b","qty":3}]}"#;

struct GroupCommits {
    store: Arc<SqlStore>,
    tenant_id: String,
    endpoint_ids: Vec<String>,
    /// The deliveries of the previous commit, whose attempts the next one records.
    in_flight: Vec<NewDelivery>,
    _dir: tempfile::TempDir,
}

impl GroupCommits {
    async fn new(endpoints: usize) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.expect("SQLite store"));
        let tenant = Tenant { id: new_id("ten"), name: "bench".into(), created_at: now_millis() };
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
                signature_scheme: SignatureScheme::Standard,
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
        GroupCommits { store, tenant_id: tenant.id, endpoint_ids, in_flight: Vec::new(), _dir: dir }
    }

    async fn commit(&mut self) {
        let now = now_millis();
        let lease = Lease { owner: OWNER.into(), until: now + 360_000 };
        let events: Vec<NewEvent> = (0..EVENTS)
            .map(|_| NewEvent {
                event: Event {
                    id: new_id("evt"),
                    tenant_id: self.tenant_id.clone(),
                    event_type: "bench.tick".into(),
                    data: RawValue::from_string(PAYLOAD.into()).expect("valid JSON"),
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
                status: DeliveryStatus::Succeeded,
                next_attempt_at: None,
                disable_endpoint: None,
                prepared: None,
            })
            .collect();
        let (published, recorded) = self.store.write_batch(&events, OWNER, &outcomes).await;
        let published = published.expect("publish");
        assert_eq!(published.len(), EVENTS);
        assert!(recorded.expect("records").into_iter().all(|r| r), "every lease was held");
        self.in_flight = events.into_iter().flat_map(|new| new.deliveries).collect();
    }
}

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("store");
    group.measurement_time(Duration::from_secs(10));
    for endpoints in [1, 10] {
        let mut commits = runtime.block_on(GroupCommits::new(endpoints));
        // Tables of a realistic size, and a delivery set in flight for the first measured commit.
        runtime.block_on(async {
            for _ in 0..200 {
                commits.commit().await;
            }
        });
        group.bench_function(format!("group_commit_{EVENTS}_events_x{endpoints}_endpoints"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        commits.commit().await;
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
