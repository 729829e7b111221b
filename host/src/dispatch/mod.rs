//! The dispatcher: claims due deliveries from the store and runs one attempt per delivery, at most
//! `concurrency` at a time.
//!
//! Deliveries are leased, not locked: a claim sets `lease_owner = node_id` until `now + lease`, and an attempt is
//! recorded only if the lease is still ours. A process that dies mid-attempt therefore loses nothing; its leases
//! expire and any node picks the deliveries up again. Delivery is at-least-once: a receiver may see an event
//! again (same `webhook-id`) when an attempt's result could not be recorded.
//!
//! - `attempt`: one delivery attempt (plugins, secrets, request, classification);
//! - `recorder`: group commit of the attempts' records;
//! - `send`: the HTTP client and request/response handling;
//! - `outcome`: pure classification of an answer and the delivery's next state.

mod attempt;
pub mod outcome;
mod recorder;
pub mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use self::attempt::Worker;
use crate::config::Config;
use crate::model::now_millis;
use crate::plugin::PluginRegistry;
use crate::secrets::MasterKey;
use crate::store::{Store, StoreResult};

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
    /// How long a claim is leased; longer than any endpoint timeout (the configuration enforces it).
    pub lease: Duration,
    /// Longest idle sleep, so deliveries made due by another process are noticed.
    pub poll_interval: Duration,
    /// Cap on a receiver's `Retry-After`.
    pub max_retry_after: Duration,
    pub shutdown_grace: Duration,
    /// Pause after a store error before asking again.
    pub error_backoff: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            concurrency: config.dispatch_concurrency.max(1),
            lease: config.lease,
            poll_interval: config.poll_interval,
            max_retry_after: config.max_retry_after,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            error_backoff: Duration::from_secs(1),
        }
    }
}

pub struct Dispatcher {
    worker: Arc<Worker>,
    wakeup: Arc<Notify>,
}

/// Attempt tasks and the delivery each one holds a lease on, so leftovers can be released at shutdown.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<()>,
    deliveries: HashMap<Id, String>,
}

impl InFlight {
    /// Forgets a finished task. Returns the delivery id of one that did not run to completion.
    fn finished(&mut self, joined: Result<(Id, ()), JoinError>) -> Option<String> {
        match joined {
            Ok((id, ())) => {
                self.deliveries.remove(&id);
                None
            }
            Err(e) => {
                let delivery_id = self.deliveries.remove(&e.id());
                if e.is_panic() {
                    // Its lease expires and the delivery is attempted again then.
                    tracing::error!(delivery_id = delivery_id.as_deref().unwrap_or("?"), "delivery attempt panicked");
                }
                delivery_id
            }
        }
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
    ) -> Self {
        let client = send::http_client();
        let recorder = recorder::Recorder::start(store.clone(), node_id.clone());
        Self { worker: Arc::new(Worker { store, master_key, client, settings, node_id, plugins, recorder }), wakeup }
    }

    /// Delivers until `stop` is cancelled, then drains (see [`Settings::shutdown_grace`]) and returns.
    pub async fn run(self, stop: CancellationToken) {
        let settings = &self.worker.settings;
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let mut in_flight = InFlight::default();
        let claim_batch = (settings.concurrency / 8).max(1);
        let mut lingered = false;
        tracing::info!(node_id = %self.worker.node_id, concurrency = settings.concurrency, "dispatcher started");
        loop {
            while let Some(joined) = in_flight.tasks.try_join_next_with_id() {
                in_flight.finished(joined);
            }
            if stop.is_cancelled() {
                break;
            }
            // Registered before looking for work, so a publish that lands while we query still wakes us.
            let notified = self.wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let free = slots.available_permits();
            // A claim is a transaction; taking one per freed slot would spend the store's time on claims. While
            // most slots are busy, let a few more attempts finish first (they wake the loop), but never wait long.
            if free > 0 && free < claim_batch && free < settings.concurrency && !lingered {
                lingered = true;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(joined) = in_flight.tasks.join_next_with_id() => {
                        in_flight.finished(joined);
                    }
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(CLAIM_LINGER) => {}
                }
                continue;
            }
            lingered = false;
            let pause = if free == 0 {
                None // Every slot is busy: only a finishing attempt (or stop) matters.
            } else {
                match self.claim(free, &slots, &mut in_flight).await {
                    Ok(claimed) if claimed == free => continue, // There may be more due right now.
                    Ok(_) => Some(self.idle_pause().await),
                    Err(e) => {
                        tracing::error!(error = %e, "could not claim deliveries; backing off");
                        Some(settings.error_backoff)
                    }
                }
            };
            // A finishing attempt frees a slot, so it wakes the loop to claim again at once.
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(joined) = in_flight.tasks.join_next_with_id(), if !in_flight.tasks.is_empty() => {
                    in_flight.finished(joined);
                }
                _ = &mut notified => {}
                _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
            }
        }
        self.shutdown(in_flight).await;
    }

    /// Claims up to `free` deliveries and starts an attempt for each. Returns how many were claimed.
    async fn claim(&self, free: usize, slots: &Arc<Semaphore>, in_flight: &mut InFlight) -> StoreResult<usize> {
        let worker = &self.worker;
        let now = now_millis();
        let lease_until = now.saturating_add(i64::try_from(worker.settings.lease.as_millis()).unwrap_or(i64::MAX));
        let jobs = worker.store.claim_due(&worker.node_id, now, lease_until, free as i64).await?;
        let claimed = jobs.len();
        let mut surplus = Vec::new();
        for job in jobs {
            // Only this loop takes slots, so `free` are available; a store handing out more than asked for gets
            // the extra leases straight back instead of overloading us.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                surplus.push(job.delivery.id);
                continue;
            };
            let delivery_id = job.delivery.id.clone();
            let task = in_flight.tasks.spawn(worker.clone().attempt(job, slot));
            in_flight.deliveries.insert(task.id(), delivery_id);
        }
        if !surplus.is_empty() {
            worker.store.release(&worker.node_id, &surplus).await?;
        }
        Ok(claimed.min(free))
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
    async fn shutdown(self, mut in_flight: InFlight) {
        let worker = &self.worker;
        if in_flight.tasks.is_empty() {
            tracing::info!("dispatcher stopped");
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
        tracing::info!("dispatcher stopped");
    }
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
mod fake_store;
#[cfg(test)]
mod tests;
