//! Endpoints whose every attempt fails. After `after` of nothing but failures (and at least [`MIN_FAILURES`] of
//! them), or after `attempts` failures in a row however quickly (a circuit breaker, when the operator sets one),
//! the endpoint is disabled, the way a `410` disables it: its deliveries stop taking attempts (they wait,
//! not dead, and go out when the endpoint is activated again) and the tenant sees why in `status_reason` and
//! the audit log. An endpoint gone for good otherwise takes every retry of every delivery for days, each holding
//! a slot for its whole timeout when the receiver does not answer.
//!
//! Counted per node and in memory, so it costs an attempt one map lookup and no write; a restart starts the
//! counts again. A node counts only what it sent itself, so before disabling it asks the database (see
//! [`Worker::confirm_failing`](super::attempt)) whether the endpoint changed since the streak began (an attempt in
//! flight carries the endpoint as it was claimed) and whether any delivery to it succeeded since, on any node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::model::{rfc3339, DeliveryStatus, Endpoint, EndpointStatus, Millis};
use crate::store::{DeliveryFilter, Page, Store, StoreResult};

/// Fewer failures than this never disable an endpoint, however long they span: two attempts days apart say
/// little about a receiver.
pub const MIN_FAILURES: u32 = 10;

/// How often streaks no attempt has added to for a quiet spell are dropped (deleted and quiet endpoints).
const PRUNE_EVERY: Millis = 60_000;

/// Failures in a row further apart than this are not one outage: the count starts again. Longer than any retry
/// delay a schedule may have (7 days), so a delivery retried on its schedule stays in the row.
const ROW_QUIET_SPELL: Millis = 8 * 24 * 3600 * 1000;

/// How long after asking the database about a streak it is asked again: every attempt in flight to a dead
/// endpoint fails at about the same time, and the question reads the endpoint's deliveries.
const ASK_AGAIN_AFTER: Millis = 60_000;

/// Failed attempts to one endpoint since `since`, as this node saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    since: Millis,
    failures: u32,
}

impl Run {
    fn fresh(now: Millis) -> Self {
        Self { since: now, failures: 0 }
    }
}

/// What this node knows of an endpoint whose attempts fail: the run the time allowance judges, which a quiet
/// spell as long as the allowance ends (failures that far apart are not one outage), and the run in a row, which
/// only a success, a change to the endpoint or [`ROW_QUIET_SPELL`] ends.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    timed: Run,
    in_a_row: Run,
    last: Millis,
    /// When [`FailingEndpoints::observe`] last handed a streak out to be checked.
    asked: Option<Millis>,
}

impl Tracked {
    fn fresh(now: Millis) -> Self {
        Self { timed: Run::fresh(now), in_a_row: Run::fresh(now), last: now, asked: None }
    }
}

/// A run of failures long enough to disable the endpoint: since when, how many, and by which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub since: Millis,
    pub failures: u32,
    /// Disabled for `disable_failing_attempts` failures in a row rather than for the time allowance.
    in_a_row: bool,
}

pub struct FailingEndpoints {
    /// None: endpoints are never disabled for failing a while.
    after: Option<Millis>,
    /// None: endpoints are never disabled for a number of failures in a row.
    attempts: Option<u32>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    streaks: HashMap<String, Tracked>,
    last_prune: Millis,
}

impl FailingEndpoints {
    pub fn new(after: Option<Duration>, attempts: Option<u32>) -> Self {
        let after = after.filter(|d| !d.is_zero()).map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX));
        Self { after, attempts: attempts.filter(|&n| n > 0), state: Mutex::default() }
    }

    /// How long an endpoint's failures are remembered without another.
    fn remembered(&self) -> Millis {
        let row = if self.attempts.is_some() { ROW_QUIET_SPELL } else { 0 };
        self.after.unwrap_or(0).max(row)
    }

    /// Takes the result of an attempt that reached the point of sending (a plugin or a local problem is not the
    /// receiver's failure). Returns the streak once it is long enough to disable the endpoint, and again with a
    /// failure at least a minute later until [`restart`](Self::restart) or a success: a disable that was not
    /// written (a lost lease, say) is tried again soon rather than a whole allowance later.
    pub fn observe(&self, endpoint: &Endpoint, failed: bool, now: Millis) -> Option<Streak> {
        if self.after.is_none() && self.attempts.is_none() {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !failed {
            // Nearly always nothing is failing, and a success then costs no hashing.
            if !state.streaks.is_empty() {
                state.streaks.remove(&endpoint.id);
            }
            return None;
        }
        let remembered = self.remembered();
        if now.saturating_sub(state.last_prune) >= PRUNE_EVERY {
            state.streaks.retain(|_, tracked| now.saturating_sub(tracked.last) < remembered);
            state.last_prune = now;
        }
        let tracked = match state.streaks.get_mut(&endpoint.id) {
            Some(tracked) => tracked,
            None => state.streaks.entry(endpoint.id.clone()).or_insert(Tracked::fresh(now)),
        };
        // A change to the endpoint (activated again, its URL fixed) gives it a fresh start.
        let gap = now.saturating_sub(tracked.last);
        if endpoint.updated_at > tracked.timed.since || self.after.is_some_and(|after| gap >= after) {
            tracked.timed = Run::fresh(now);
        }
        if endpoint.updated_at > tracked.in_a_row.since || gap >= ROW_QUIET_SPELL {
            tracked.in_a_row = Run::fresh(now);
        }
        tracked.timed.failures += 1;
        tracked.in_a_row.failures += 1;
        tracked.last = now;
        let timed = tracked.timed;
        let streak = if self.failed_long_enough(timed, now) {
            Streak { since: timed.since, failures: timed.failures, in_a_row: false }
        } else if self.attempts.is_some_and(|attempts| tracked.in_a_row.failures >= attempts) {
            Streak { since: tracked.in_a_row.since, failures: tracked.in_a_row.failures, in_a_row: true }
        } else {
            return None;
        };
        if tracked.asked.is_some_and(|asked| now.saturating_sub(asked) < ASK_AGAIN_AFTER) {
            return None;
        }
        tracked.asked = Some(now);
        Some(streak)
    }

    /// Whether `run` has failed for the whole allowance, at `now`.
    fn failed_long_enough(&self, run: Run, now: Millis) -> bool {
        self.after.is_some_and(|after| run.failures >= MIN_FAILURES && now.saturating_sub(run.since) >= after)
    }

    /// Starts the endpoint's count again from `now`: the database showed the streak broken (a success on
    /// another node, a change to the endpoint).
    pub fn restart(&self, endpoint_id: &str, now: Millis) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tracked) = state.streaks.get_mut(endpoint_id) {
            let run = Run { since: now, failures: 1 };
            *tracked = Tracked { timed: run, in_a_row: run, ..Tracked::fresh(now) };
        }
    }

    /// The endpoint's `status_reason` for a streak [`observe`](Self::observe) returned.
    pub fn reason(&self, streak: &Streak) -> String {
        let (failures, since) = (streak.failures, rfc3339(streak.since));
        match self.after.filter(|_| !streak.in_a_row) {
            Some(after) => {
                let span = humantime::format_duration(Duration::from_millis(u64::try_from(after).unwrap_or(u64::MAX)));
                format!("every attempt failed for {span}: {failures} attempts since {since}")
            }
            None if failures == 1 => format!("an attempt failed, at {since}"),
            None => format!("{failures} attempts in a row failed, since {since}"),
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().unwrap().streaks.len()
    }
}

/// Whether the database agrees that `endpoint` has failed every attempt since `since`: it still exists, is active
/// and unchanged since then (a job's copy of the endpoint is from its claim, and an attempt can be in flight for
/// minutes), and no delivery to it succeeded since, on any node.
pub async fn still_failing(store: &dyn Store, endpoint: &Endpoint, since: Millis) -> StoreResult<bool> {
    let Some(current) = store.get_endpoint(&endpoint.tenant_id, &endpoint.id).await? else { return Ok(false) };
    if current.status != EndpointStatus::Active || current.updated_at > since {
        return Ok(false);
    }
    let succeeded_since = DeliveryFilter {
        endpoint_id: Some(endpoint.id.clone()),
        status: Some(DeliveryStatus::Succeeded),
        updated_since: Some(since),
        ..Default::default()
    };
    let found = store.list_deliveries(&endpoint.tenant_id, &succeeded_since, &Page { cursor: None, limit: 1 }).await?;
    Ok(found.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;
    const MINUTE: Millis = 60_000;

    fn endpoint(id: &str, updated_at: Millis) -> Endpoint {
        Endpoint {
            id: id.into(),
            updated_at,
            ..super::super::send::tests::endpoint("https://receiver.example/hook", &[])
        }
    }

    fn failing(after: Duration) -> FailingEndpoints {
        FailingEndpoints::new(Some(after), None)
    }

    #[test]
    fn a_count_in_a_row_disables_however_quickly_and_a_success_resets_it() {
        let failing = FailingEndpoints::new(None, Some(5));
        let ep = endpoint("ep_a", T0 - 1);
        for i in 0..4 {
            assert_eq!(failing.observe(&ep, true, T0 + i), None, "failure {i}");
        }
        let streak = failing.observe(&ep, true, T0 + 4).expect("the fifth failure in a row");
        assert_eq!(failing.reason(&streak), format!("5 attempts in a row failed, since {}", rfc3339(T0)));

        let other = endpoint("ep_b", T0 - 1);
        for i in 0..4 {
            assert_eq!(failing.observe(&other, true, T0 + i), None);
        }
        assert_eq!(failing.observe(&other, false, T0 + 5), None);
        for i in 6..10 {
            assert_eq!(failing.observe(&other, true, T0 + i), None, "a success started the count again");
        }
        assert!(failing.observe(&other, true, T0 + 10).is_some());

        // Retries days apart stay in the row; longer than any retry delay, and the count starts again.
        let slow = endpoint("ep_c", T0 - 1);
        let days = |n: i64| T0 + n * 24 * 60 * MINUTE;
        for n in 0..4 {
            assert_eq!(failing.observe(&slow, true, days(n * 7)), None);
        }
        assert!(failing.observe(&slow, true, days(28)).is_some(), "five failures a week apart are in a row");
        let quiet = endpoint("ep_d", T0 - 1);
        for i in 0..4 {
            assert_eq!(failing.observe(&quiet, true, T0 + i), None);
        }
        assert_eq!(failing.observe(&quiet, true, T0 + 3 + ROW_QUIET_SPELL), None, "more than a week later");

        // A time allowance shorter than the retries' gaps restarts its own run, not the count in a row.
        let short = FailingEndpoints::new(Some(Duration::from_secs(3)), Some(5));
        for i in 0..4 {
            assert_eq!(short.observe(&ep, true, T0 + i * 4_000), None);
        }
        let streak = short.observe(&ep, true, T0 + 16_000).expect("five in a row, four seconds apart");
        assert_eq!(short.reason(&streak), format!("5 attempts in a row failed, since {}", rfc3339(T0)));
        let single = FailingEndpoints::new(None, Some(1));
        let once = single.observe(&ep, true, T0).expect("one failure");
        assert_eq!(single.reason(&once), format!("an attempt failed, at {}", rfc3339(T0)));

        // Beside an allowance, whichever comes first; the reason says which.
        let both = FailingEndpoints::new(Some(Duration::from_secs(3600)), Some(50));
        for i in 0..11 {
            assert_eq!(both.observe(&ep, true, T0 + i * MINUTE), None);
        }
        let by_time = both.observe(&ep, true, T0 + 60 * MINUTE).expect("an hour");
        assert!(
            both.reason(&by_time).starts_with("every attempt failed for 1h: 12 attempts"),
            "{}",
            both.reason(&by_time)
        );
        assert_eq!(FailingEndpoints::new(None, Some(0)).observe(&ep, true, T0), None, "0 is no limit");
    }

    #[test]
    fn disables_after_the_allowance_and_enough_failures() {
        let failing = failing(Duration::from_secs(3600));
        let ep = endpoint("ep_a", T0 - 1);
        for i in 0..20 {
            assert_eq!(failing.observe(&ep, true, T0 + i * MINUTE), None, "failure {i}, under an hour");
        }
        let streak = failing.observe(&ep, true, T0 + 60 * MINUTE).expect("an hour of failures");
        assert_eq!(failing.reason(&streak), format!("every attempt failed for 1h: 21 attempts since {}", rfc3339(T0)));
        assert_eq!(failing.observe(&ep, true, T0 + 60 * MINUTE + 1), None, "the other attempts in flight wait");
        let again = failing.observe(&ep, true, T0 + 61 * MINUTE).expect("asked again a minute later");
        assert_eq!((again.since, again.failures), (T0, 23));

        failing.restart("ep_a", T0 + 62 * MINUTE);
        assert_eq!(failing.observe(&ep, true, T0 + 63 * MINUTE), None, "the database said the streak was broken");
        for i in 64..122 {
            assert_eq!(failing.observe(&ep, true, T0 + i * MINUTE), None, "minute {i}");
        }
        assert!(failing.observe(&ep, true, T0 + 122 * MINUTE).is_some(), "an hour after the restart");
    }

    #[test]
    fn too_few_failures_never_disable() {
        let failing = failing(Duration::from_secs(3600));
        let ep = endpoint("ep_a", T0 - 1);
        for i in 0..(MIN_FAILURES as i64 - 1) {
            assert_eq!(failing.observe(&ep, true, T0 + i * 50 * MINUTE), None);
        }
        assert!(failing.observe(&ep, true, T0 + (MIN_FAILURES as i64 - 1) * 50 * MINUTE).is_some());
    }

    #[test]
    fn a_success_ends_the_streak() {
        let failing = failing(Duration::from_secs(3600));
        let ep = endpoint("ep_a", T0 - 1);
        for i in 0..30 {
            assert_eq!(failing.observe(&ep, true, T0 + i * MINUTE), None);
        }
        assert_eq!(failing.observe(&ep, false, T0 + 30 * MINUTE), None);
        for i in 31..(31 + 59) {
            assert_eq!(failing.observe(&ep, true, T0 + i * MINUTE), None, "the hour counts from minute 31");
        }
        assert!(failing.observe(&ep, true, T0 + 91 * MINUTE).is_some());
    }

    #[test]
    fn a_changed_endpoint_and_a_quiet_spell_start_afresh() {
        let failing = failing(Duration::from_secs(3600));
        for i in 0..30 {
            failing.observe(&endpoint("ep_a", T0 - 1), true, T0 + i * MINUTE);
        }
        // Activated again (or edited) at minute 40: its failures before do not count.
        let changed = endpoint("ep_a", T0 + 40 * MINUTE);
        for i in 41..100 {
            assert_eq!(failing.observe(&changed, true, T0 + i * MINUTE), None, "minute {i}");
        }
        assert!(failing.observe(&changed, true, T0 + 101 * MINUTE).is_some());

        let quiet = endpoint("ep_b", T0 - 1);
        for i in 0..30 {
            failing.observe(&quiet, true, T0 + i * MINUTE);
        }
        assert_eq!(failing.observe(&quiet, true, T0 + 120 * MINUTE), None, "an hour without attempts");
    }

    #[test]
    fn streaks_of_endpoints_no_longer_attempted_are_dropped() {
        let failing = failing(Duration::from_secs(3600));
        failing.observe(&endpoint("ep_gone", T0 - 1), true, T0);
        failing.observe(&endpoint("ep_a", T0 - 1), true, T0 + 2 * MINUTE);
        assert_eq!(failing.tracked(), 2);
        failing.observe(&endpoint("ep_a", T0 - 1), false, T0 + 3 * MINUTE);
        assert_eq!(failing.tracked(), 1, "a success forgets the endpoint");
        failing.observe(&endpoint("ep_b", T0 - 1), true, T0 + 61 * MINUTE);
        assert_eq!(failing.tracked(), 1, "ep_gone had no attempt for an hour");
    }

    /// A node sees only its own attempts: another node's success, or a change to the endpoint while an attempt
    /// was in flight, must keep the endpoint from being disabled.
    #[tokio::test]
    async fn the_database_has_the_last_word() {
        use serde_json::value::RawValue;

        use crate::model::{new_id, Attempt, DeliveryStatus, Event, Tenant};
        use crate::store::sql::SqlStore;
        use crate::store::{AttemptOutcome, NewDelivery, NewEvent, NewSecret};

        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("failing.db").display())).await.unwrap();
        let tenant = Tenant { id: new_id("ten"), name: "Acme".into(), rate_limit: None, created_at: T0 };
        store.create_tenant(&tenant).await.unwrap();
        let ep = Endpoint { id: new_id("ep"), tenant_id: tenant.id.clone(), ..endpoint("", T0) };
        let secret = NewSecret { id: new_id("sec"), ciphertext: vec![1, 2, 3], hint: "whsec_x".into() };
        store.create_endpoint(&ep, &secret).await.unwrap();
        let event = Event {
            id: new_id("evt"),
            tenant_id: tenant.id.clone(),
            event_type: "order.created".into(),
            data: RawValue::from_string("{}".into()).unwrap(),
            idempotency_key: None,
            received_at: T0,
        };
        let delivery = NewDelivery { id: new_id("dlv"), endpoint_id: ep.id.clone(), lease: None };
        store.publish(&[NewEvent { event, deliveries: vec![delivery] }]).await.unwrap();
        assert!(still_failing(&store, &ep, T0).await.unwrap(), "nothing succeeded yet");

        // Another node's success at minute 10.
        let job = store.claim_due("node-b", T0 + 10 * MINUTE, T0 + 20 * MINUTE, 10).await.unwrap().remove(0);
        let success = AttemptOutcome {
            attempt: Attempt {
                id: new_id("att"),
                tenant_id: tenant.id.clone(),
                delivery_id: job.delivery.id.clone(),
                attempt_number: 1,
                started_at: T0 + 10 * MINUTE,
                duration_ms: 5,
                status_code: Some(204),
                response_body: None,
                error: None,
                outcome: "succeeded".into(),
            },
            endpoint_id: ep.id.clone(),
            status: DeliveryStatus::Succeeded,
            next_attempt_at: None,
            disable_endpoint: None,
            prepared: None,
        };
        assert!(store.record_attempt("node-b", &success).await.unwrap());
        assert!(!still_failing(&store, &ep, T0 + 5 * MINUTE).await.unwrap(), "it succeeded since");
        assert!(still_failing(&store, &ep, T0 + 11 * MINUTE).await.unwrap(), "only failures since minute 11");

        // Paused at minute 12 while an attempt was in flight with the copy claimed before.
        store.set_endpoint_status(&tenant.id, &ep.id, EndpointStatus::Paused, None, T0 + 12 * MINUTE).await.unwrap();
        assert!(!still_failing(&store, &ep, T0 + 11 * MINUTE).await.unwrap(), "paused");
        store.set_endpoint_status(&tenant.id, &ep.id, EndpointStatus::Active, None, T0 + 13 * MINUTE).await.unwrap();
        assert!(!still_failing(&store, &ep, T0 + 11 * MINUTE).await.unwrap(), "changed after the streak began");
        assert!(still_failing(&store, &ep, T0 + 14 * MINUTE).await.unwrap());

        assert!(store.delete_endpoint(&tenant.id, &ep.id, T0 + 15 * MINUTE).await.unwrap());
        assert!(!still_failing(&store, &ep, T0 + 14 * MINUTE).await.unwrap(), "deleted");
        store.close().await;
    }

    #[test]
    fn without_an_allowance_nothing_is_tracked() {
        for off in [None, Some(Duration::ZERO)] {
            let failing = FailingEndpoints::new(off, None);
            for i in 0..100 {
                assert_eq!(failing.observe(&endpoint("ep_a", T0 - 1), true, T0 + i * 24 * 60 * MINUTE), None);
            }
            assert_eq!(failing.tracked(), 0);
        }
    }
}
