//! The dispatcher: claims due deliveries from the store and runs one attempt per delivery, at most
//! `concurrency` at a time.
//!
//! Deliveries are leased, not locked: a claim sets `lease_owner = node_id` until `now + lease`, and an attempt is
//! recorded only if the lease is still ours. A process that dies mid-attempt therefore loses nothing; its leases
//! expire and any node picks the deliveries up again. Delivery is at-least-once: a receiver may see an event
//! again (same `webhook-id`) when an attempt's result could not be recorded.
//!
//! Most deliveries are never claimed: the ingest writer stores a fresh event's deliveries already leased to this
//! node when the dispatcher has free slots and nothing older waiting, and hands them over through [`Handoff`]
//! right after the commit. Claims serve the rest: retries that came due, a backlog, another node's expired leases.
//!
//! - `attempt`: one delivery attempt (plugins, secrets, request, classification);
//! - `send`: the HTTP client and request/response handling;
//! - `outcome`: pure classification of an answer and the delivery's next state;
//! - `throttle`: endpoints' rate limits;
//! - `endpoint_cap`: each endpoint's share of the attempts in flight.

mod attempt;
mod endpoint_cap;
mod failing;
pub mod outcome;
pub mod send;
mod throttle;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::attempt::Worker;
use self::endpoint_cap::{Admission, EndpointCaps, Ticket};
use self::throttle::{Limit, Throttle, Turn};
use crate::config::Config;
use crate::destinations::Destinations;
use crate::model::{now_millis, Millis};
use crate::plugin::PluginRegistry;
use crate::secrets::MasterKey;
use crate::store::{DispatchJob, Lease, Store, StoreResult};
use crate::writer::Recorder;

pub use crate::secrets::{NO_SIGNING_SECRET, UNDECRYPTABLE_SECRET};

/// How long shutdown waits for attempts in flight before aborting them and giving their leases back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for more slots to free up before claiming for the few that are free.
const CLAIM_LINGER: Duration = Duration::from_millis(2);
/// Shortest idle sleep, so a store whose `next_due_at` disagrees with `claim_due` cannot make the loop spin.
const MIN_IDLE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct Settings {
    /// Attempts in flight at once in this process.
    pub concurrency: usize,
    /// Attempts in flight at once in this process to any one endpoint (see `endpoint_cap`).
    pub endpoint_concurrency: usize,
    /// How long a claim is leased; longer than any endpoint timeout (the configuration enforces it).
    pub lease: Duration,
    /// Longest idle sleep, so deliveries made due by another process are noticed.
    pub poll_interval: Duration,
    /// Cap on a receiver's `Retry-After`.
    pub max_retry_after: Duration,
    /// How long an endpoint may fail every attempt before it is disabled (see `failing`); None: never.
    pub disable_failing_after: Option<Duration>,
    /// How many attempts in a row may fail before the endpoint is disabled; None: no such limit.
    pub disable_failing_attempts: Option<u32>,
    pub shutdown_grace: Duration,
    /// Pause after a store error before asking again.
    pub error_backoff: Duration,
    /// Trusted for receivers' TLS besides the bundled public roots.
    pub extra_root_certificates: Vec<reqwest::Certificate>,
    /// Where deliveries may go.
    pub destinations: Arc<Destinations>,
    /// Delays between attempts for endpoints without a schedule of their own.
    pub retry_schedule_ms: Vec<i64>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            concurrency: config.dispatch_concurrency.max(1),
            endpoint_concurrency: config.endpoint_concurrency.max(1),
            lease: config.lease,
            poll_interval: config.poll_interval,
            max_retry_after: config.max_retry_after,
            disable_failing_after: config.disable_failing_after,
            disable_failing_attempts: config.disable_failing_attempts,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            error_backoff: Duration::from_secs(1),
            extra_root_certificates: config.extra_root_certificates.clone(),
            destinations: Arc::new(config.destinations()),
            retry_schedule_ms: config.retry_schedule_ms.clone(),
        }
    }
}

pub struct Dispatcher {
    worker: Arc<Worker>,
    wakeup: Arc<Notify>,
    retries: Arc<RetrySchedule>,
    /// One permit per attempt in flight, whether claimed here or handed over.
    slots: Arc<Semaphore>,
    /// Set while deliveries may be waiting to be claimed (see [`Handoff::reserve`]).
    backlog: Arc<AtomicBool>,
    handed_tx: mpsc::UnboundedSender<HandedOver>,
    handed: mpsc::UnboundedReceiver<HandedOver>,
}

type HandedOver = (DispatchJob, OwnedSemaphorePermit);

/// The earliest retry the writer has recorded since the dispatch loop last looked, so the loop can claim it on
/// time without asking the store after every commit.
#[derive(Debug)]
struct RetrySchedule {
    earliest: AtomicI64,
    changed: Notify,
}

const NO_RETRY: Millis = Millis::MAX;

impl Default for RetrySchedule {
    fn default() -> Self {
        Self { earliest: AtomicI64::new(NO_RETRY), changed: Notify::new() }
    }
}

impl RetrySchedule {
    fn take_earliest(&self) -> Option<Millis> {
        Some(self.earliest.swap(NO_RETRY, Ordering::AcqRel)).filter(|&due| due != NO_RETRY)
    }
}

/// How the ingest writer gives the dispatcher the deliveries it has just stored leased to this node. Cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    slots: Arc<Semaphore>,
    backlog: Arc<AtomicBool>,
    jobs: mpsc::UnboundedSender<HandedOver>,
    wakeup: Arc<Notify>,
    retries: Arc<RetrySchedule>,
    owner: String,
    lease: Duration,
    concurrency: usize,
}

impl Handoff {
    /// The most attempts in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Up to `wanted` free attempt slots, for deliveries about to be stored leased (see [`Handoff::lease`]). None
    /// while older deliveries may be waiting to be claimed: those go first, and claims take them in batches.
    pub fn reserve(&self, wanted: usize) -> Vec<OwnedSemaphorePermit> {
        if self.backlog.load(Ordering::Acquire) || self.jobs.is_closed() {
            return Vec::new();
        }
        std::iter::from_fn(|| self.slots.clone().try_acquire_owned().ok()).take(wanted).collect()
    }

    /// The lease to store reserved deliveries under, from `now`.
    pub fn lease(&self, now: Millis) -> Lease {
        Lease { owner: self.owner.clone(), until: lease_until(now, self.lease) }
    }

    /// Starts the attempt of a delivery stored under [`Handoff::lease`] in the slot reserved for it. If the
    /// dispatcher has stopped, returns the delivery's id: the caller must then release its lease.
    pub fn start(&self, job: DispatchJob, slot: OwnedSemaphorePermit) -> Result<(), String> {
        self.jobs.send((job, slot)).map_err(|mpsc::error::SendError((job, _))| job.delivery.id)
    }

    /// Says that deliveries were stored waiting, not handed over: the dispatcher claims them, and takes no
    /// more handovers until they are done.
    pub fn deliveries_waiting(&self) {
        self.backlog.store(true, Ordering::Release);
        self.wakeup.notify_one();
    }

    /// Says that a recorded attempt scheduled its delivery's next attempt `at`.
    pub fn retry_scheduled(&self, at: Millis) {
        if at < self.retries.earliest.fetch_min(at, Ordering::AcqRel) {
            self.retries.changed.notify_one();
        }
    }

    /// Gives back leases of deliveries that could not be handed over, so they are claimed at once instead of
    /// when the lease expires.
    pub async fn release(&self, store: &dyn Store, delivery_ids: &[String]) {
        if let Err(e) = store.release(&self.owner, delivery_ids).await {
            tracing::error!(error = %e, "could not release leases; they will expire instead");
        }
        self.deliveries_waiting();
    }
}

/// When a delivery put off for `wait` is due: rounded up, and a millisecond more for the clock's own rounding
/// down, so it is not claimed again a moment before its turn and put off anew.
fn due_after(wait: Duration) -> Millis {
    let wait_ms = i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i64::MAX).saturating_add(1);
    now_millis().saturating_add(wait_ms)
}

fn lease_until(now: Millis, lease: Duration) -> Millis {
    now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// Attempt tasks and the delivery each one holds a lease on, so leftovers can be released at shutdown; and
/// deliveries put off until their turn (an endpoint's rate limit, or its share of the attempts in flight), whose
/// leases are still ours until they are given back (see [`Dispatcher::give_back_put_off`]).
struct InFlight {
    tasks: JoinSet<()>,
    running: HashMap<Id, Running>,
    throttle: Throttle,
    caps: EndpointCaps,
    /// `(delivery id, due at)`.
    put_off: Vec<(String, Millis)>,
    /// Endpoints, `(tenant id, endpoint id)`, whose deliveries put off are to be brought forward (see
    /// `endpoint_cap`).
    bring_forward: Vec<(String, String)>,
}

struct Running {
    delivery_id: String,
    endpoint: Arc<crate::store::JobEndpoint>,
    ticket: Ticket,
}

impl InFlight {
    fn new(endpoint_concurrency: usize, concurrency: usize) -> Self {
        Self {
            tasks: JoinSet::new(),
            running: HashMap::new(),
            throttle: Throttle::default(),
            caps: EndpointCaps::new(endpoint_concurrency, concurrency),
            put_off: Vec::new(),
            bring_forward: Vec::new(),
        }
    }

    /// Forgets a finished task. Returns the delivery id of one that did not run to completion.
    fn finished(&mut self, joined: Result<(Id, ()), JoinError>) -> Option<String> {
        let id = match &joined {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let running = self.running.remove(&id);
        if let Some(Running { endpoint, ticket, .. }) = &running {
            if self.caps.finished(&endpoint.id, *ticket, std::time::Instant::now()) {
                self.bring_forward.push((endpoint.tenant_id.clone(), endpoint.id.clone()));
            }
        }
        let Err(e) = joined else { return None };
        let delivery_id = running.map(|running| running.delivery_id);
        if e.is_panic() {
            // Its lease expires and the delivery is attempted again then.
            tracing::error!(delivery_id = delivery_id.as_deref().unwrap_or("?"), "delivery attempt panicked");
        }
        delivery_id
    }
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        master_key: MasterKey,
        settings: Settings,
        node_id: String,
        wakeup: Arc<Notify>,
        plugins: Arc<PluginRegistry>,
        recorder: Recorder,
    ) -> Self {
        let outbound = send::Outbound::new(&settings.extra_root_certificates, settings.destinations.clone());
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let (handed_tx, handed) = mpsc::unbounded_channel();
        Self {
            worker: Arc::new(Worker {
                failing: failing::FailingEndpoints::new(
                    settings.disable_failing_after,
                    settings.disable_failing_attempts,
                ),
                store,
                master_key,
                outbound,
                settings,
                node_id,
                plugins,
                recorder,
            }),
            wakeup,
            retries: Arc::default(),
            slots,
            // Until the first claim says otherwise: a previous run may have left deliveries waiting.
            backlog: Arc::new(AtomicBool::new(true)),
            handed_tx,
            handed,
        }
    }

    /// The ingest writer's handle for handing over fresh deliveries.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            slots: self.slots.clone(),
            backlog: self.backlog.clone(),
            jobs: self.handed_tx.clone(),
            wakeup: self.wakeup.clone(),
            retries: self.retries.clone(),
            owner: self.worker.node_id.clone(),
            lease: self.worker.settings.lease,
            concurrency: self.worker.settings.concurrency,
        }
    }

    /// Delivers until `stop` is cancelled, then drains (see [`Settings::shutdown_grace`]) and returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let settings = self.worker.settings.clone();
        let slots = self.slots.clone();
        let mut in_flight = InFlight::new(settings.endpoint_concurrency, settings.concurrency);
        let claim_batch = (settings.concurrency / 8).max(1);
        // Set while a claim waits for more slots to free up (see below), until when.
        let mut linger_until: Option<Instant> = None;
        // Whether a claim may find work: at start, after a wake-up, when the next due time comes, and for as long
        // as claims come back full. A freed slot alone is no reason to ask the store.
        let mut look = true;
        let mut look_at = Instant::now();
        tracing::info!(node_id = %self.worker.node_id, concurrency = settings.concurrency,
            endpoint_concurrency = settings.endpoint_concurrency.min(settings.concurrency), "dispatcher started");
        loop {
            while let Some(joined) = in_flight.tasks.try_join_next_with_id() {
                in_flight.finished(joined);
            }
            if stop.is_cancelled() {
                break;
            }
            if self.bring_forward(&mut in_flight).await {
                look = true;
            }
            // Registered before reading the schedule, so a retry recorded meanwhile still wakes us.
            let retry_recorded = self.retries.changed.notified();
            tokio::pin!(retry_recorded);
            retry_recorded.as_mut().enable();
            // A failed attempt may have scheduled a retry before the time we meant to look next.
            if let Some(due) = self.retries.take_earliest() {
                let wait = Duration::from_millis(u64::try_from(due - now_millis()).unwrap_or(0));
                look_at = look_at.min(Instant::now() + wait);
            }
            // Registered before looking for work, so a publish that lands while we query still wakes us.
            let notified = self.wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let free = slots.available_permits();
            let mut lingering = false;
            // With no slot free, only a finishing attempt (or stop) lets us claim.
            if look
                && free > 0
                && free < claim_batch
                && free < settings.concurrency
                && linger_until.is_none_or(|until| Instant::now() < until)
            {
                // A claim is a transaction; taking one per freed slot would spend the store's time on claims.
                // While most slots are busy, let a batch of them free up first, but never wait long. Attempts end
                // as soon as their slot is free, so the first one to end is no sign that more have.
                look_at = *linger_until.get_or_insert_with(|| Instant::now() + CLAIM_LINGER);
                lingering = true;
            } else if look && free > 0 {
                linger_until = None;
                match self.claim(free, &slots, &mut in_flight).await {
                    Ok(claimed) if claimed == free => {
                        self.backlog.store(true, Ordering::Release);
                        continue; // There may be more due right now.
                    }
                    Ok(_) => {
                        self.backlog.store(false, Ordering::Release);
                        look = false;
                        look_at = Instant::now() + self.idle_pause().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not claim deliveries; backing off");
                        look = false;
                        look_at = Instant::now() + settings.error_backoff;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                Some((job, slot)) = self.handed.recv() => {
                    self.spawn(job, slot, &mut in_flight);
                    // One commit hands over many; take them all so those put off go back in one transaction.
                    while let Ok((job, slot)) = self.handed.try_recv() {
                        self.spawn(job, slot, &mut in_flight);
                    }
                    self.give_back_put_off(&mut in_flight).await;
                }
                Some(joined) = in_flight.tasks.join_next_with_id(), if !in_flight.tasks.is_empty() => {
                    in_flight.finished(joined);
                }
                _ = &mut notified => look = true,
                _ = &mut retry_recorded => {}
                _ = tokio::time::sleep_until(look_at), if !look || lingering => look = true,
            }
        }
        self.shutdown(in_flight).await;
    }

    /// Starts the attempt of a leased delivery, or puts it off if its endpoint is at its share of the attempts
    /// in flight or its rate limit says so.
    fn spawn(&self, job: DispatchJob, slot: OwnedSemaphorePermit, in_flight: &mut InFlight) {
        let now = std::time::Instant::now();
        // Asked first: a rate limit's turn is handed out for good, where a slot not used is given back.
        let ticket = match in_flight.caps.admit(&job.endpoint.id, now) {
            Admission::Start(ticket) => ticket,
            Admission::PutOff(wait) => return in_flight.put_off.push((job.delivery.id, due_after(wait))),
        };
        let limit = job.endpoint.rate_limit.and_then(|limit| NonZeroU32::new(u32::try_from(limit).ok()?));
        if limit.is_none() {
            in_flight.throttle.lifted(&job.endpoint.id, job.endpoint.updated_at);
        }
        if let Some(per_second) = limit {
            let limit = Limit { endpoint_id: &job.endpoint.id, per_second, version: job.endpoint.updated_at };
            if let Turn::After(wait) = in_flight.throttle.turn(limit, &job.delivery.id, now) {
                in_flight.caps.cancel(&job.endpoint.id, ticket);
                return in_flight.put_off.push((job.delivery.id, due_after(wait)));
            }
        }
        let delivery_id = job.delivery.id.clone();
        let endpoint = job.endpoint.clone();
        let task = in_flight.tasks.spawn(self.worker.clone().attempt(job, slot));
        in_flight.running.insert(task.id(), Running { delivery_id, endpoint, ticket });
    }

    /// Claims up to `free` deliveries and starts an attempt for each, or puts it off until its endpoint's rate
    /// limit allows. Returns how many were claimed and not put off: a claim that found only a rate-limited
    /// endpoint's backlog is no reason to claim again at once (and keep handovers off meanwhile) rather than after
    /// the idle pause.
    async fn claim(&self, free: usize, slots: &Arc<Semaphore>, in_flight: &mut InFlight) -> StoreResult<usize> {
        let worker = &self.worker;
        let now = now_millis();
        let lease_until = lease_until(now, worker.settings.lease);
        let jobs = worker.store.claim_due(&worker.node_id, now, lease_until, free as i64).await?;
        let claimed = jobs.len();
        let mut surplus = Vec::new();
        for job in jobs {
            // Handovers may have taken slots since `free` was read; a delivery without one goes straight back.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                surplus.push(job.delivery.id);
                continue;
            };
            self.spawn(job, slot, in_flight);
        }
        let released = if surplus.is_empty() { Ok(()) } else { worker.store.release(&worker.node_id, &surplus).await };
        let put_off = self.give_back_put_off(in_flight).await;
        released?;
        Ok(claimed.min(free).saturating_sub(put_off))
    }

    /// Gives the deliveries put off for their endpoint's rate limit back to the store, due at their turn, and
    /// makes sure the loop looks for them then. Returns how many there were.
    async fn give_back_put_off(&self, in_flight: &mut InFlight) -> usize {
        if in_flight.put_off.is_empty() {
            return 0;
        }
        let put_off = std::mem::take(&mut in_flight.put_off);
        match self.worker.store.defer(&self.worker.node_id, &put_off).await {
            Ok(()) => {
                let first_due = put_off.iter().map(|&(_, due_at)| due_at).min().unwrap_or(NO_RETRY);
                self.retries.earliest.fetch_min(first_due, Ordering::AcqRel);
            }
            // Still leased to us: they are claimed again when the leases expire, later than their turn but never lost.
            Err(e) => tracing::error!(error = %e, count = put_off.len(),
                "could not give back deliveries put off for their endpoint's rate limit; they will wait for their leases to expire"),
        }
        put_off.len()
    }

    /// Has the store bring forward the deliveries put off for endpoints that answer quickly again (see
    /// `endpoint_cap`). Returns whether any were: they are due now.
    async fn bring_forward(&self, in_flight: &mut InFlight) -> bool {
        let mut moved = 0;
        for (tenant_id, endpoint_id) in std::mem::take(&mut in_flight.bring_forward) {
            match self.worker.store.bring_forward(&tenant_id, &endpoint_id, now_millis()).await {
                Ok(n) => moved += n,
                // They keep their turns: later than need be, never lost.
                Err(e) => tracing::error!(error = %e, endpoint_id,
                    "could not bring forward the deliveries put off for a slow endpoint; they wait for their turns"),
            }
        }
        moved > 0
    }

    /// How long to sleep when nothing is due: until the next scheduled attempt, at most `poll_interval`.
    async fn idle_pause(&self) -> Duration {
        let poll = self.worker.settings.poll_interval;
        match self.worker.store.next_due_at().await {
            Ok(Some(at)) => {
                let wait = Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0));
                wait.clamp(MIN_IDLE, poll.max(MIN_IDLE))
            }
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the next due time; polling");
                poll
            }
        }
    }

    /// Waits up to the grace period for attempts in flight to finish and be recorded; aborts the rest and gives
    /// their leases back so another run delivers them without waiting for the leases to expire.
    async fn shutdown(self, in_flight: InFlight) {
        let recorder = self.worker.recorder.clone();
        self.stop_attempts(in_flight).await;
        // Finished attempts hand their records to the writer without waiting for them.
        recorder.flush().await;
        tracing::info!("dispatcher stopped");
    }

    async fn stop_attempts(mut self, mut in_flight: InFlight) {
        let worker = self.worker.clone();
        // Handed over but not started: nobody will attempt them now.
        self.handed.close();
        let mut not_started = Vec::new();
        while let Ok((job, _slot)) = self.handed.try_recv() {
            not_started.push(job.delivery.id);
        }
        if !not_started.is_empty() {
            if let Err(e) = worker.store.release(&worker.node_id, &not_started).await {
                tracing::error!(error = %e, "could not release leases; they will expire instead");
            }
        }
        if in_flight.tasks.is_empty() {
            return;
        }
        tracing::info!(in_flight = in_flight.tasks.len(), grace = ?worker.settings.shutdown_grace,
            "waiting for deliveries in flight");
        let mut unfinished = Vec::new();
        let drain = async {
            while let Some(joined) = in_flight.tasks.join_next_with_id().await {
                unfinished.extend(in_flight.finished(joined));
            }
        };
        if tokio::time::timeout(worker.settings.shutdown_grace, drain).await.is_err() {
            in_flight.tasks.abort_all();
            while let Some(joined) = in_flight.tasks.join_next_with_id().await {
                unfinished.extend(in_flight.finished(joined));
            }
        }
        if !unfinished.is_empty() {
            tracing::warn!(count = unfinished.len(), "giving back leases of deliveries not finished in time");
            if let Err(e) = worker.store.release(&worker.node_id, &unfinished).await {
                tracing::error!(error = %e, "could not release leases; they will expire instead");
            }
        }
    }
}

/// A dispatcher with its own writer, as `run()` wires them: the handle returned publishes through the writer,
/// which hands fresh deliveries over.
#[cfg(test)]
pub(crate) fn with_writer(
    store: Arc<dyn Store>,
    master_key: MasterKey,
    settings: Settings,
    node_id: String,
    wakeup: Arc<Notify>,
    hourly: Arc<crate::hourly::HourlyTally>,
) -> (Dispatcher, crate::writer::Ingest) {
    let writer = crate::writer::Writer::new(Arc::default(), hourly);
    let dispatcher = Dispatcher::new(
        store.clone(),
        master_key,
        settings,
        node_id.clone(),
        wakeup,
        empty_plugin_registry(),
        writer.recorder(),
    );
    let ingest = writer.ingest();
    writer.start(store, node_id, Some(dispatcher.handoff()));
    (dispatcher, ingest)
}

/// A registry with no plugins loaded, for dispatcher tests whose endpoints bind none.
#[cfg(test)]
pub(crate) fn empty_plugin_registry() -> Arc<PluginRegistry> {
    let cache = std::env::temp_dir().join(format!("switchyard-unit-plugin-cache-{}", std::process::id()));
    let limits = crate::plugin::PluginLimits { max_concurrent_calls: 2, ..Default::default() };
    Arc::new(PluginRegistry::new(crate::plugin::PluginEngine::new(cache, limits).expect("engine with default limits")))
}

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
pub(crate) mod fake_store;
#[cfg(test)]
mod tests;
