//! Subscription filters evaluated before a publish reaches the writer. The writer commits every tenant's
//! publishes in one serial loop, and a filter's cost grows with the payload times the filters that look at it: a
//! 1 MiB event through a hundred filters took 20 s of CPU. Paid in the writer, that stalled every tenant's
//! publishes; paid in a request task, it held one of the runtime's few threads. Here the request that brings the
//! work pays for it:
//! - a little work runs inline;
//! - more runs on a blocking thread, one event at a time per tenant (requests take turns event by event), on no
//!   more threads at once than the node has cores to spare, so one tenant's filters cannot take the whole machine;
//! - a publish whose filters take longer than the budget is refused before anything of it is stored.
//!
//! The writer then takes each filter's verdict from here, and evaluates only a filter that appeared in between.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use jsonpath_rust::parser::model::JpQuery;
use tokio::sync::Semaphore;

use crate::model::{Endpoint, Event};
use crate::routing::{self, FilterCache, FilterVerdicts};

/// Up to this much work (payload bytes times filters, summed over a request's events, and 2 KiB more for each
/// `match()` or `search()`) runs in the request's task: microseconds for the usual small event, and at most a few
/// milliseconds.
const INLINE_WORK: usize = 32 << 10;

/// An event's filters took longer than the budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "matching it against the tenant's subscription filters took more than {} ms ({filters} distinct {} look at it)",
    budget.as_millis(),
    if *filters == 1 { "filter" } else { "filters" }
)]
pub struct OverBudget {
    /// The index of the event being matched when the budget ran out.
    pub event: usize,
    /// How many distinct filters look at that event.
    pub filters: usize,
    pub budget: Duration,
}

pub struct FilterWork {
    parsed: Mutex<FilterCache>,
    spare_cores: Arc<Semaphore>,
    /// One lock per tenant with work under way, so a tenant's requests queue behind each other, not before others.
    tenants: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    budget: Duration,
}

/// What a budget bounds.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// The time of all the request's events together.
    PerRequest(Duration),
    /// Each event's time alone.
    PerEvent(Duration),
}

impl Budget {
    fn limit(self) -> Duration {
        match self {
            Budget::PerRequest(limit) | Budget::PerEvent(limit) => limit,
        }
    }

    /// What counts against the next event, `spent` having gone on the events before it.
    fn spent(self, spent: Duration) -> Duration {
        match self {
            Budget::PerRequest(_) => spent,
            Budget::PerEvent(_) => Duration::ZERO,
        }
    }
}

/// The filters to evaluate on the `index`-th event.
struct Job {
    index: usize,
    filters: Vec<(String, Option<Arc<JpQuery>>)>,
    /// The filters' summed [`routing::filter_fixed_work`].
    fixed_work: usize,
}

impl FilterWork {
    /// `budget` bounds a publish's filter work (wall time while it has a core).
    pub fn new(budget: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_threads(cores.saturating_sub(1).max(1), budget)
    }

    fn with_threads(threads: usize, budget: Duration) -> Self {
        FilterWork {
            parsed: Mutex::new(FilterCache::default()),
            spare_cores: Arc::new(Semaphore::new(threads)),
            tenants: Mutex::new(HashMap::new()),
            budget,
        }
    }

    /// Each event's filter verdicts, in order, for [`Route::Matched`](crate::ingest::Route): every distinct
    /// filter of the `endpoints`' subscriptions whose type pattern matches it (one set per event, empty for an event
    /// no filter looks at).
    pub async fn verdicts(
        &self,
        tenant_id: &str,
        endpoints: &[Endpoint],
        events: &[Event],
    ) -> Result<Vec<FilterVerdicts>, OverBudget> {
        self.work(tenant_id, endpoints, events, Budget::PerRequest(self.budget), &HashSet::new()).await
    }

    /// [`FilterWork::verdicts`], where the events under `stored_keys` (idempotency keys already used) are
    /// repeats the writer will not store again: their filters are taken to select nothing, unevaluated, so a
    /// retry is answered as a repeat even when its first try's filter work would no longer fit the budget.
    pub async fn verdicts_for_new(
        &self,
        tenant_id: &str,
        endpoints: &[Endpoint],
        events: &[Event],
        stored_keys: &HashSet<String>,
    ) -> Result<Vec<FilterVerdicts>, OverBudget> {
        self.work(tenant_id, endpoints, events, Budget::PerRequest(self.budget), stored_keys).await
    }

    /// [`FilterWork::verdicts`] for a replay, whose events are already stored: each event alone must match
    /// within the budget (as its publish would have had to), rather than all of them together.
    pub async fn replay_verdicts(
        &self,
        tenant_id: &str,
        endpoints: &[Endpoint],
        events: &[Event],
    ) -> Result<Vec<FilterVerdicts>, OverBudget> {
        self.work(tenant_id, endpoints, events, Budget::PerEvent(self.budget), &HashSet::new()).await
    }

    async fn work(
        &self,
        tenant_id: &str,
        endpoints: &[Endpoint],
        events: &[Event],
        budget: Budget,
        stored_keys: &HashSet<String>,
    ) -> Result<Vec<FilterVerdicts>, OverBudget> {
        let mut verdicts = vec![FilterVerdicts::new(); events.len()];
        let mut jobs = self.jobs(endpoints, events);
        if jobs.is_empty() {
            // The usual publish: no filter looks at these events.
            return Ok(verdicts);
        }
        let stored =
            |job: &Job| events[job.index].idempotency_key.as_ref().is_some_and(|key| stored_keys.contains(key));
        for job in jobs.iter().filter(|job| stored(job)) {
            verdicts[job.index] = job.filters.iter().map(|(filter, _)| (filter.clone(), false)).collect();
        }
        jobs.retain(|job| !stored(job));
        let work_of = |job: &Job| {
            job.filters.len().saturating_mul(events[job.index].data.get().len()).saturating_add(job.fixed_work)
        };
        let mut spent = Duration::ZERO;
        if jobs.iter().map(work_of).sum::<usize>() <= INLINE_WORK {
            for job in jobs {
                let index = job.index;
                (verdicts[index], spent) = evaluate(&events[index], job, budget, spent)?;
            }
            return Ok(verdicts);
        }
        // Events go to a blocking thread in runs of about the inline work, so a batch of small events does not pay
        // a thread handoff each, and a turn is never much longer than one event's work.
        let mut runs: Vec<Vec<Job>> = Vec::new();
        let mut run_work = 0;
        for job in jobs {
            let work = work_of(&job);
            match runs.last_mut() {
                Some(run) if run_work + work <= INLINE_WORK => run.push(job),
                _ => {
                    runs.push(vec![job]);
                    run_work = 0;
                }
            }
            run_work += work;
        }
        let tenant = self.tenant_lock(tenant_id);
        for run in runs {
            // Taken per run, so a replay's long series of events lets the tenant's publishes in between.
            let _turn = tenant.lock().await;
            let run_events: Vec<Event> = run.iter().map(|job| events[job.index].clone()).collect();
            // If the JSONPath library panics, the run's filters match nothing (none is left to the writer).
            let none_selects: Vec<(usize, FilterVerdicts)> = run
                .iter()
                .map(|job| (job.index, job.filters.iter().map(|(filter, _)| (filter.clone(), false)).collect()))
                .collect();
            let core = self.spare_cores.clone().acquire_owned().await.expect("the semaphore is never closed");
            let spent_before = spent;
            let evaluated = tokio::task::spawn_blocking(move || {
                let _core = core;
                let mut spent = spent_before;
                let mut found = Vec::with_capacity(run.len());
                for (job, event) in run.into_iter().zip(&run_events) {
                    let index = job.index;
                    let verdicts;
                    (verdicts, spent) = evaluate(event, job, budget, spent)?;
                    found.push((index, verdicts));
                }
                Ok((found, spent))
            })
            .await
            .unwrap_or_else(|panicked| {
                tracing::error!(error = %panicked, "evaluating filters panicked; they match nothing");
                Ok((none_selects, spent_before))
            });
            let found;
            (found, spent) = evaluated?;
            for (index, found) in found {
                verdicts[index] = found;
            }
        }
        Ok(verdicts)
    }

    fn jobs(&self, endpoints: &[Endpoint], events: &[Event]) -> Vec<Job> {
        if endpoints.iter().all(|endpoint| endpoint.subscriptions.iter().all(|sub| sub.filter.is_none())) {
            return Vec::new();
        }
        let mut parsed = self.parsed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| {
                let filters: Vec<(String, Option<Arc<JpQuery>>)> = routing::candidate_filters(endpoints, event)
                    .into_iter()
                    .map(|filter| (filter.to_string(), parsed.query(filter, "")))
                    .collect();
                let fixed_work = filters.iter().map(|(filter, _)| routing::filter_fixed_work(filter)).sum();
                (!filters.is_empty()).then_some(Job { index, filters, fixed_work })
            })
            .collect()
    }

    fn tenant_lock(&self, tenant_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = tenants.get(tenant_id).and_then(Weak::upgrade) {
            return lock;
        }
        // Tenants whose work ended hold only a dead pointer: drop them as new ones come.
        tenants.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        tenants.insert(tenant_id.to_string(), Arc::downgrade(&lock));
        lock
    }
}

/// Evaluates a job's filters on its event, `spent` being what the events before it took; returns the verdicts
/// and what is spent after them.
fn evaluate(
    event: &Event,
    job: Job,
    budget: Budget,
    spent: Duration,
) -> Result<(FilterVerdicts, Duration), OverBudget> {
    let (started, spent, limit) = (Instant::now(), budget.spent(spent), budget.limit());
    let total = job.filters.len();
    let doc = routing::wrap_envelope(event);
    let mut verdicts = FilterVerdicts::with_capacity(total);
    for (filter, query) in job.filters {
        let verdict = match (&query, &doc) {
            (Some(query), Some(doc)) => routing::selects(query, doc),
            _ => false,
        };
        verdicts.insert(filter, verdict);
        if spent + started.elapsed() > limit {
            return Err(OverBudget { event: job.index, filters: total, budget: limit });
        }
    }
    Ok((verdicts, spent + started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, filters: &[&str]) -> Endpoint {
        let subscriptions: Vec<(&str, Option<&str>)> = filters.iter().map(|f| ("order.*", Some(*f))).collect();
        routing::tests::endpoint(id, &subscriptions)
    }

    fn event(event_type: &str, data: String) -> Event {
        routing::tests::event(event_type, &data)
    }

    #[tokio::test]
    async fn verdicts_agree_with_the_writers_matching_and_skip_other_types() {
        let work = FilterWork::with_threads(1, Duration::from_secs(60));
        let endpoints =
            [endpoint("ep_1", &["$[?@.data.n > 1]", "$[?@.data.n > 5]"]), endpoint("ep_2", &["$[?@.data.n > 1]"])];
        let small = event("order.created", r#"{"n": 3}"#.into());
        // Large enough to be evaluated on a blocking thread.
        let large = event("order.created", format!(r#"{{"n": 7, "pad": "{}"}}"#, "x".repeat(INLINE_WORK)));
        let other_type = event("invoice.created", r#"{"n": 3}"#.into());
        // Inline; a large event on a blocking thread, then a small one; many small ones in runs.
        let padded = event("order.created", format!(r#"{{"n": 3, "pad": "{}"}}"#, "x".repeat(200)));
        let many_small: Vec<Event> = (0..300).map(|_| padded.clone()).collect();
        assert!(many_small.len() * 2 * padded.data.get().len() > 2 * INLINE_WORK);
        for events in [vec![small.clone(), other_type.clone()], vec![large.clone(), small.clone()], many_small] {
            let verdicts = work.verdicts("ten_1", &endpoints, &events).await.unwrap();
            assert_eq!(verdicts.len(), events.len());
            for (event, known) in events.iter().zip(&verdicts) {
                let given = FilterCache::default().matching_endpoints_given(&endpoints, event, known);
                assert_eq!(given, routing::matching_endpoints(&endpoints, event), "{}", event.data);
            }
        }
        let verdicts = work.verdicts("ten_1", &endpoints, &[small, other_type, large]).await.unwrap();
        assert_eq!(
            verdicts[0],
            FilterVerdicts::from([("$[?@.data.n > 1]".into(), true), ("$[?@.data.n > 5]".into(), false)])
        );
        assert!(verdicts[1].is_empty(), "no subscription takes invoice.created");
        let unfiltered = [routing::tests::endpoint("ep_3", &[("*", None)])];
        let none = work.verdicts("ten_1", &unfiltered, &[event("order.created", "{}".into())]).await.unwrap();
        assert_eq!(none, [FilterVerdicts::new()], "one (empty) set per event, for simulate and replay to index");
        assert!(verdicts[2]["$[?@.data.n > 5]"]);
    }

    #[tokio::test]
    async fn work_over_the_budget_is_refused_per_request_or_per_replayed_event() {
        let work = FilterWork::with_threads(1, Duration::ZERO);
        let endpoints = [endpoint("ep_1", &["$..n"])];
        let events = [event("order.created", r#"{"n": 1}"#.into()), event("order.created", r#"{"n": 2}"#.into())];
        let refused = work.verdicts("ten_1", &endpoints, &events).await.unwrap_err();
        assert_eq!((refused.event, refused.filters), (0, 1));
        assert_eq!(work.replay_verdicts("ten_1", &endpoints, &events).await.unwrap_err().event, 0);
        let generous = FilterWork::with_threads(1, Duration::from_secs(60));
        assert!(generous.replay_verdicts("ten_1", &endpoints, &events).await.unwrap().iter().all(|v| v["$..n"]));
        // A request's events share its budget; a replayed event has the whole budget to itself.
        let (second, budget) = (Duration::from_secs(1), Duration::from_millis(700));
        assert_eq!(Budget::PerRequest(second).spent(budget), budget);
        assert_eq!(Budget::PerEvent(second).spent(budget), Duration::ZERO);
    }

    #[test]
    fn a_tenants_lock_is_shared_while_held_and_forgotten_after() {
        let work = FilterWork::with_threads(1, Duration::ZERO);
        let first = work.tenant_lock("ten_1");
        assert!(Arc::ptr_eq(&first, &work.tenant_lock("ten_1")));
        assert!(!Arc::ptr_eq(&first, &work.tenant_lock("ten_2")));
        drop(first);
        let _other = work.tenant_lock("ten_3");
        let tenants = work.tenants.lock().unwrap();
        assert!(tenants.keys().all(|t| t == "ten_3"), "{:?}", tenants.keys().collect::<Vec<_>>());
    }
}
