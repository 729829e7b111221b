//! The group-commit writer. One task takes every publish and every attempt record queued at a moment and writes
//! them together with one [`Store::write_batch`]: on SQLite one transaction and one fsync for the lot, instead of
//! a transaction per request queueing for the single writer connection. A publish waits for its own commit:
//! `202 Accepted` means the event is durably stored. An attempt does not: its task hands the record over and ends,
//! and the writer acts on what the commit found (a retry to schedule, a lease lost). Until the record is committed
//! the delivery stays leased, so a record that never lands (a crash, a failed commit) means the delivery is
//! attempted again when the lease expires, never that it is lost. A record whose commit failed is written again
//! for a minute first: after a passing failure (a full disk freed, a database restarted) the attempt is kept on
//! record, and the receiver does not get the delivery again a lease later.
//!
//! The publish side (fan-out, handing fresh deliveries to the dispatcher) is [`ingest`](crate::ingest).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dispatch::Handoff;
use crate::hourly::HourlyTally;
use crate::ingest::{PublishReply, Publishes, Route};
use crate::metrics::Metrics;
use crate::model::Event;
use crate::routing::FilterCache;
use crate::store::{AttemptOutcome, Published, Store, StoreError, StoreResult};

/// At most this many events share one transaction, so a flood of batch publishes still commits in steps.
const MAX_EVENTS_PER_COMMIT: usize = 1000;
/// Nor more payload than this, so a group of large events does not hold gigabytes in one transaction.
const MAX_PAYLOAD_BYTES_PER_COMMIT: usize = 8 << 20;
/// At most this many attempt records share one transaction, or the dispatch concurrency if that is larger: an
/// attempt frees its slot before its record is committed, so up to `concurrency` records can arrive during one
/// commit, and a smaller cap would let them pile up.
const MIN_RECORDS_PER_COMMIT: usize = 512;
/// How long after a failed commit its attempt records are written again, and how many times: a minute in all, far
/// inside the shortest lease (longer than the 300 s endpoint timeout), so no other attempt of the delivery can
/// have started meanwhile.
const RECORD_RETRY_DELAY: Duration = Duration::from_millis(500);
const RECORD_RETRIES: u32 = 120;

enum Work {
    Publish(Vec<Event>, Route, PublishReply),
    Record(Box<AttemptOutcome>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Why an attempt could not be handed to the writer. The delivery's lease then expires and it is attempted again.
#[derive(Debug, thiserror::Error)]
#[error("the writer has stopped")]
pub struct WriterStopped;

/// The request handlers' handle; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::UnboundedSender<Work>,
}

impl Ingest {
    /// Matches the events against their tenant's active endpoints and stores them with their deliveries (grouped
    /// with whatever else is waiting). Returns their results in input order.
    /// With [`Route::Only`], each event gets one delivery, to that endpoint, whatever its subscriptions; if the
    /// endpoint is not active nothing is stored and the answer is a conflict.
    pub async fn publish(&self, events: Vec<Event>, route: Route) -> StoreResult<Vec<Published>> {
        let (reply, stored) = oneshot::channel();
        self.queue.send(Work::Publish(events, route, reply)).map_err(|_| stopped())?;
        stored.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the writer failed while storing this request (see the server log); it may have been stored: send it \
                 again with an idempotency key"
                    .into(),
            ))
        })
    }

    /// Whether the writer's task has ended: only at shutdown, or if it panicked, after which nothing this node
    /// accepts can be stored and only a restart helps.
    pub fn is_stopped(&self) -> bool {
        self.queue.is_closed()
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the writer has stopped".into())
}

/// The dispatcher's handle for attempt records.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::UnboundedSender<Work>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// Queues the outcome to be recorded with the next group commit. Nothing waits for that commit: an attempt
    /// task used to, and with fan-out every commit then woke a few hundred of them only to let them end, on the
    /// same two cores the publishers' answers needed (BENCHMARKS.md, sixteenth round).
    pub fn submit(&self, outcome: AttemptOutcome) -> Result<(), WriterStopped> {
        self.queue.send(Work::Record(Box::new(outcome))).map_err(|_| WriterStopped)
    }

    /// Where attempts are counted.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits until every outcome submitted before this call has been written (or its commit has failed).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Work::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// The writer before it starts: hand out its [`Ingest`] and [`Recorder`], then [`Writer::start`] it. The task
/// ends once every handle is dropped and the queue is written.
pub struct Writer {
    queue: mpsc::UnboundedSender<Work>,
    queued: mpsc::UnboundedReceiver<Work>,
    metrics: Arc<Metrics>,
    hourly: Arc<HourlyTally>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new(Arc::default(), Arc::default())
    }
}

impl Writer {
    /// Counting commits and attempts in `metrics`, and the attempts it records in `hourly`.
    pub fn new(metrics: Arc<Metrics>, hourly: Arc<HourlyTally>) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        Writer { queue, queued, metrics, hourly }
    }

    pub fn ingest(&self) -> Ingest {
        Ingest { queue: self.queue.clone() }
    }

    pub fn recorder(&self) -> Recorder {
        Recorder { queue: self.queue.clone(), metrics: self.metrics.clone() }
    }

    /// `owner`: the node id attempts are recorded for (their lease holder). `dispatch`: where fresh deliveries
    /// are handed over; without it they are all stored waiting to be claimed. The task ends once every handle
    /// is dropped and what was queued is written.
    pub fn start(self, store: Arc<dyn Store>, owner: String, dispatch: Option<Handoff>) -> JoinHandle<()> {
        let Writer { queue, queued, metrics, hourly } = self;
        drop(queue);
        tokio::spawn(run(store, owner, dispatch, queued, metrics, hourly))
    }
}

async fn run(
    store: Arc<dyn Store>,
    owner: String,
    dispatch: Option<Handoff>,
    mut queued: mpsc::UnboundedReceiver<Work>,
    metrics: Arc<Metrics>,
    hourly: Arc<HourlyTally>,
) {
    let mut filters = FilterCache::default();
    let max_records = dispatch.as_ref().map_or(0, Handoff::concurrency).max(MIN_RECORDS_PER_COMMIT);
    // Records whose commit failed, with how often, and when to write them again.
    let mut failed: Vec<(AttemptOutcome, u32)> = Vec::new();
    let mut retry_at = Instant::now();
    let mut open = true;
    while open || !failed.is_empty() {
        let first = if failed.is_empty() {
            queued.recv().await
        } else if open {
            tokio::select! {
                work = queued.recv() => work,
                () = tokio::time::sleep_until(retry_at) => None,
            }
        } else {
            // Stopping: one last try for the failed records, then they are left to their leases.
            None
        };
        open &= first.is_some() || !queued.is_closed() || !queued.is_empty();
        if first.is_none() && failed.is_empty() {
            break;
        }
        let mut publishes = Vec::new();
        let mut records = Vec::new();
        let mut failures = Vec::new();
        let mut flushes = Vec::new();
        let (mut events, mut payload_bytes) = (0, 0);
        if !failed.is_empty() && (Instant::now() >= retry_at || !open) {
            (records, failures) = std::mem::take(&mut failed).into_iter().unzip();
        }
        // Records still waiting for their retry keep its time; a first failure sets it.
        let retry_set = !failed.is_empty();
        let mut next = first;
        while let Some(work) = next.take() {
            match work {
                Work::Publish(batch, route, reply) => {
                    events += batch.len();
                    payload_bytes += batch.iter().map(|event| event.data.get().len()).sum::<usize>();
                    publishes.push((batch, route, reply));
                }
                Work::Record(outcome) => {
                    records.push(*outcome);
                    failures.push(0);
                }
                Work::Flush(done) => flushes.push(done),
            }
            let room = events < MAX_EVENTS_PER_COMMIT
                && payload_bytes < MAX_PAYLOAD_BYTES_PER_COMMIT
                && records.len() < max_records;
            if room {
                next = queued.try_recv().ok();
            }
        }
        let started = Instant::now();
        let committing = commit(store.as_ref(), &mut filters, &owner, dispatch.as_ref(), &hourly, publishes, &records);
        // A bug in one commit fails that commit alone. Were the task to end, every later publish of this node
        // would fail until a restart. Its requests are answered (their replies dropped), its records left to
        // their leases.
        let unrecorded = match AssertUnwindSafe(committing).catch_unwind().await {
            Ok(unrecorded) => unrecorded,
            Err(panic) => {
                let what = panic.downcast_ref::<&str>().copied().or(panic.downcast_ref::<String>().map(String::as_str));
                tracing::error!(
                    panic = what.unwrap_or("?"),
                    attempts = records.len(),
                    "a group commit panicked; its publishes were answered 503 and its attempts will be retried"
                );
                filters = FilterCache::default();
                Vec::new()
            }
        };
        metrics.committed(started.elapsed());
        for done in flushes {
            let _ = done.send(());
        }
        for (index, error) in unrecorded {
            let delivery_id = &records[index].attempt.delivery_id;
            let failures = failures[index] + 1;
            if failures <= RECORD_RETRIES && open {
                if failures == 1 {
                    tracing::warn!(%delivery_id, %error, "could not record the attempt; trying again");
                }
                failed.push((records[index].clone(), failures));
            } else {
                // The lease expires and the delivery is attempted again: at-least-once, never lost.
                tracing::error!(%delivery_id, %error, failures,
                    "could not record the attempt; the delivery will be retried when its lease expires");
            }
        }
        if !retry_set && !failed.is_empty() {
            retry_at = Instant::now() + RECORD_RETRY_DELAY;
        }
    }
}

/// Writes one group commit; returns the records that could not be written (by index into `outcomes`).
async fn commit(
    store: &dyn Store,
    filters: &mut FilterCache,
    owner: &str,
    dispatch: Option<&Handoff>,
    hourly: &HourlyTally,
    publishes: Vec<(Vec<Event>, Route, PublishReply)>,
    outcomes: &[AttemptOutcome],
) -> Vec<(usize, StoreError)> {
    let had_publishes = !publishes.is_empty();
    let mut publishes = Publishes::fan_out(store, filters, dispatch, publishes).await;
    let (published, recorded) = publishes.write(store, owner, outcomes).await;
    let shared = had_publishes && !outcomes.is_empty();
    publishes.finish(store, dispatch, published, shared, hourly).await;
    let mut unrecorded = Vec::new();
    let mut stored = Vec::with_capacity(outcomes.len());
    let mut recorded_one = |outcome, held| {
        if recorded_one(dispatch, outcome, held) {
            stored.push(outcome);
        }
    };
    match recorded {
        Ok(recorded) => {
            for (outcome, held) in outcomes.iter().zip(recorded) {
                recorded_one(outcome, held);
            }
        }
        // Nothing of the batch was kept. One bad outcome (or a deadlock victim on PostgreSQL) must not fail the
        // others: write them one by one.
        Err(e) if outcomes.len() > 1 || shared => {
            // Debug only: while the database refuses writes this happens at every retry, and each record that
            // still fails is reported by the caller once.
            tracing::debug!(error = %e, attempts = outcomes.len(), "batched attempt records failed; writing one by one");
            for (index, outcome) in outcomes.iter().enumerate() {
                match store.record_attempt(owner, outcome).await {
                    Ok(held) => recorded_one(outcome, held),
                    Err(e) => unrecorded.push((index, e)),
                }
            }
        }
        Err(e) => {
            if !outcomes.is_empty() {
                unrecorded.push((0, e));
            }
        }
    }
    hourly.count(stored);
    unrecorded
}

/// Acts on what recording one attempt found: a retry it scheduled is the dispatcher's to wake up for. Returns
/// whether the attempt was stored.
fn recorded_one(dispatch: Option<&Handoff>, outcome: &AttemptOutcome, held: bool) -> bool {
    if !held {
        tracing::warn!(delivery_id = %outcome.attempt.delivery_id,
            "lease was lost before the attempt was recorded (its endpoint was deleted, or the lease expired and \
             another worker may own the delivery now); the attempt is not recorded");
    } else if let (Some(at), Some(dispatch)) = (outcome.next_attempt_at, dispatch) {
        dispatch.retry_scheduled(at);
    }
    held
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::model::{new_id, Tenant};
    use crate::store::sql::SqlStore;

    fn event(tenant: &str) -> Event {
        Event {
            id: new_id("evt"),
            tenant_id: tenant.into(),
            event_type: "order.created".into(),
            data: RawValue::from_string("{}".into()).unwrap(),
            idempotency_key: None,
            received_at: 1_700_000_000_000,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_whose_task_ended_says_so() {
        let (_dir, _store, _tenant, ingest) = started().await;
        assert!(!ingest.is_stopped());
        let unstarted = Writer::default();
        let orphan = unstarted.ingest();
        drop(unstarted);
        assert!(orphan.is_stopped());
        assert!(matches!(
            orphan.publish(Vec::new(), Route::Subscriptions(Vec::new())).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_commit_that_panics_fails_alone_and_the_writer_goes_on() {
        use crate::dispatch::fake_store::FakeStore;

        let store = Arc::new(FakeStore::with(|state| state.panicking_records = 1));
        let writer = Writer::default();
        let (ingest, recorder) = (writer.ingest(), writer.recorder());
        writer.start(store.clone(), "node_test".into(), None);
        let outcome = |n: i64| AttemptOutcome {
            attempt: crate::model::Attempt {
                id: new_id("att"),
                tenant_id: "ten_1".into(),
                delivery_id: format!("dlv_{n}"),
                attempt_number: 1,
                started_at: 0,
                duration_ms: 1,
                status_code: Some(204),
                response_body: None,
                error: None,
                outcome: "succeeded".into(),
            },
            endpoint_id: "ep_1".into(),
            status: crate::model::DeliveryStatus::Succeeded,
            next_attempt_at: None,
            disable_endpoint: None,
            prepared: None,
        };
        recorder.submit(outcome(1)).unwrap();
        recorder.flush().await;
        recorder.submit(outcome(2)).unwrap();
        recorder.flush().await;
        let state = store.state.lock().unwrap();
        assert_eq!((state.panicking_records, state.record_calls), (0, 2), "the second commit ran");
        assert!(!ingest.is_stopped());
    }

    /// A writer started on a fresh SQLite database holding one tenant.
    async fn started() -> (tempfile::TempDir, Arc<dyn Store>, Tenant, Ingest) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("writer.db").display());
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.unwrap());
        let tenant = Tenant { id: new_id("ten"), name: "t".into(), rate_limit: None, created_at: 0 };
        store.create_tenant(&tenant).await.unwrap();
        let writer = Writer::default();
        let ingest = writer.ingest();
        writer.start(store.clone(), "node_test".into(), None);
        (dir, store, tenant, ingest)
    }

    /// Requests queued together share a commit; one that fails is stored on its own, and the others still are.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_requests_share_a_commit_and_a_bad_one_fails_alone() {
        let (_dir, store, tenant, ingest) = started().await;

        // An event id that is already stored: the database refuses the whole transaction that holds it.
        let earlier = event(&tenant.id);
        store.publish(&[crate::store::NewEvent { event: earlier.clone(), deliveries: Vec::new() }]).await.unwrap();
        let bad = earlier;
        let good: Vec<Event> = (0..3).map(|_| event(&tenant.id)).collect();
        let ids: Vec<String> = good.iter().map(|e| e.id.clone()).collect();
        let (a, b, c, bad) = tokio::join!(
            ingest.publish(vec![good[0].clone()], Route::Subscriptions(Vec::new())),
            ingest.publish(vec![good[1].clone(), good[2].clone()], Route::Subscriptions(Vec::new())),
            ingest.publish(Vec::new(), Route::Subscriptions(Vec::new())),
            ingest.publish(vec![bad], Route::Subscriptions(Vec::new())),
        );
        assert_eq!(a.unwrap().iter().map(|p| &p.event_id).collect::<Vec<_>>(), vec![&ids[0]]);
        assert_eq!(b.unwrap().iter().map(|p| &p.event_id).collect::<Vec<_>>(), vec![&ids[1], &ids[2]]);
        assert!(c.unwrap().is_empty());
        assert!(matches!(bad, Err(StoreError::Conflict(_))), "{bad:?}");
        for id in &ids {
            assert!(store.get_event(&tenant.id, id).await.unwrap().is_some(), "{id} was stored");
        }
    }

    /// A test event goes to its one endpoint whatever the subscriptions, and to nothing if that endpoint stopped
    /// being active after the API checked it (a pause racing the request): refused, not stored without delivery.
    #[tokio::test(flavor = "current_thread")]
    async fn a_route_to_one_endpoint_ignores_subscriptions_and_refuses_an_inactive_one() {
        use crate::model::{Endpoint, EndpointStatus, Subscription};
        use crate::store::{NewSecret, Page};

        let (_dir, store, tenant, ingest) = started().await;
        for id in ["ep_target", "ep_everything"] {
            let endpoint = Endpoint {
                id: id.into(),
                tenant_id: tenant.id.clone(),
                subscriptions: match id {
                    "ep_target" => vec![Subscription { event_type: "invoice.paid".into(), filter: None }],
                    _ => vec![Subscription { event_type: "*".into(), filter: None }],
                },
                ..crate::dispatch::send::tests::endpoint("https://receiver.example/hook", &[])
            };
            let secret = NewSecret { id: new_id("sec"), ciphertext: vec![1, 2, 3], hint: "whsec_1".into() };
            store.create_endpoint(&endpoint, &secret).await.unwrap();
        }

        let sent = event(&tenant.id);
        let published = ingest.publish(vec![sent.clone()], Route::Only("ep_target".into())).await.unwrap();
        assert_eq!(published[0].deliveries, 1);
        let deliveries =
            store.list_deliveries(&tenant.id, &Default::default(), &Page { cursor: None, limit: 10 }).await.unwrap();
        assert_eq!(deliveries.iter().map(|d| d.endpoint_id.as_str()).collect::<Vec<_>>(), ["ep_target"]);

        store.set_endpoint_status(&tenant.id, "ep_target", EndpointStatus::Paused, None, 1).await.unwrap();
        store.set_endpoint_status(&tenant.id, "ep_everything", EndpointStatus::Disabled, None, 1).await.unwrap();
        // Paused, disabled, and gone (deleted or never there).
        for endpoint_id in ["ep_target", "ep_everything", "ep_unknown"] {
            let refused = event(&tenant.id);
            let answer = ingest.publish(vec![refused.clone()], Route::Only(endpoint_id.into())).await;
            assert!(matches!(answer, Err(StoreError::Conflict(_))), "{endpoint_id}: {answer:?}");
            assert_eq!(store.get_event(&tenant.id, &refused.id).await.unwrap(), None);
        }
        assert!(store.get_event(&tenant.id, &sent.id).await.unwrap().is_some());
    }

    /// A request matched against the endpoints it read: its deliveries go to those of them still active at the
    /// commit, by the verdicts it brought (the writer evaluates no filter), and one created since gets none.
    #[tokio::test(flavor = "current_thread")]
    async fn a_matched_route_goes_to_the_endpoints_still_active_by_the_requests_verdicts() {
        use crate::model::{Endpoint, EndpointStatus, Subscription};
        use crate::routing::FilterVerdicts;
        use crate::store::{NewSecret, Page};

        let (_dir, store, tenant, ingest) = started().await;
        let filter = "$[?@.data.never == true]";
        let add = |id: &'static str| {
            let store = store.clone();
            let tenant_id = tenant.id.clone();
            async move {
                let endpoint = Endpoint {
                    id: id.into(),
                    tenant_id,
                    subscriptions: vec![Subscription { event_type: "*".into(), filter: Some(filter.into()) }],
                    ..crate::dispatch::send::tests::endpoint("https://receiver.example/hook", &[])
                };
                let secret = NewSecret { id: new_id("sec"), ciphertext: vec![1, 2, 3], hint: "whsec_1".into() };
                store.create_endpoint(&endpoint, &secret).await.unwrap();
            }
        };
        add("ep_kept").await;
        add("ep_paused").await;
        let read = store.active_endpoints(&tenant.id).await.unwrap();
        store.set_endpoint_status(&tenant.id, "ep_paused", EndpointStatus::Paused, None, 1).await.unwrap();
        add("ep_new").await;

        // The request found that the filter selects the event (it does not: the verdict is what is used).
        let verdicts = vec![FilterVerdicts::from([(filter.to_string(), true)])];
        let route = Route::Matched { endpoints: read, verdicts };
        let published = ingest.publish(vec![event(&tenant.id)], route).await.unwrap();
        assert_eq!(published[0].deliveries, 1);
        let deliveries =
            store.list_deliveries(&tenant.id, &Default::default(), &Page { cursor: None, limit: 10 }).await.unwrap();
        assert_eq!(deliveries.iter().map(|d| d.endpoint_id.as_str()).collect::<Vec<_>>(), ["ep_kept"]);
    }
}
