//! When to try a failed delivery again, and when to give up. Pure: the caller supplies the randomness and the
//! receiver's `Retry-After`, so every rule here is unit-tested without clocks or networks.
//!
//! The schedule counts attempts within the current *cycle*: `delivery.attempts - delivery.schedule_offset`. A
//! manual retry or dead-letter requeue sets `schedule_offset = attempts`, which restarts the schedule from its
//! first step instead of continuing where the delivery gave up.

use std::time::Duration;

use crate::model::{Delivery, Endpoint};

/// Delays after the 1st, 2nd, … failed attempt: 1 min, 5 min, 15 min, 1 h, 6 h, 24 h; then dead letter. The
/// server's `retry_schedule` replaces it.
pub const DEFAULT_SCHEDULE_MS: &[i64] = &[60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000];

/// A schedule holds 1 to this many delays, each between these bounds, whether an endpoint's or the server's.
pub const MAX_SCHEDULE_STEPS: usize = 20;
const MIN_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a schedule as written (`["1m", "5m"]`) is not one: the 0-based step at fault (None: the list as a whole)
/// and the problem.
pub type ScheduleError = (Option<usize>, String);

/// A schedule as written, in milliseconds: 1 to [`MAX_SCHEDULE_STEPS`] delays of 1 s to 7 d each.
pub fn parse_schedule(texts: &[impl AsRef<str>]) -> Result<Vec<i64>, ScheduleError> {
    if texts.is_empty() || texts.len() > MAX_SCHEDULE_STEPS {
        return Err((None, format!("must hold 1 to {MAX_SCHEDULE_STEPS} delays")));
    }
    texts
        .iter()
        .enumerate()
        .map(|(step, text)| {
            let text = text.as_ref().trim();
            let delay = humantime::parse_duration(text)
                .map_err(|_| (Some(step), format!("`{text}` is not a duration such as 30s, 5m or 1h")))?;
            if !(MIN_DELAY..=MAX_DELAY).contains(&delay) {
                return Err((Some(step), "must be between 1s and 7d".to_string()));
            }
            Ok(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
        })
        .collect()
}

/// Scheduled delays are spread by up to this fraction either way, so deliveries that failed together (a
/// receiver outage) do not all come back in the same instant.
pub const JITTER_FRACTION: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy<'a> {
    schedule: &'a [i64],
    max_attempts: i64,
}

impl<'a> RetryPolicy<'a> {
    /// `schedule`: delays in ms between attempts (the default when absent or empty). `max_attempts`: total
    /// attempts per cycle including the first (default `schedule.len() + 1`, at least 1).
    pub fn new(schedule: Option<&'a [i64]>, max_attempts: Option<i64>) -> Self {
        let schedule = schedule.filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SCHEDULE_MS);
        let max_attempts = max_attempts.unwrap_or(schedule.len() as i64 + 1).max(1);
        Self { schedule, max_attempts }
    }

    /// The endpoint's schedule, or `server_schedule` (the server's `retry_schedule`) when it has none.
    pub fn for_endpoint(endpoint: &'a Endpoint, server_schedule: &'a [i64]) -> Self {
        Self::new(Some(endpoint.retry_schedule_ms.as_deref().unwrap_or(server_schedule)), endpoint.max_attempts)
    }

    pub fn max_attempts(&self) -> i64 {
        self.max_attempts
    }

    /// The un-jittered delay after the attempt with 0-based `index` in the cycle failed, or None when that was
    /// the last attempt allowed. Attempts beyond the schedule reuse its last delay.
    pub fn scheduled_delay_ms(&self, index: i64) -> Option<i64> {
        let index = index.max(0);
        if index + 1 >= self.max_attempts {
            return None;
        }
        let step = usize::try_from(index).unwrap_or(usize::MAX).min(self.schedule.len() - 1);
        Some(self.schedule[step].max(0))
    }
}

/// The 0-based index, within the current schedule cycle, of the attempt about to be made on `delivery`.
pub fn cycle_index(delivery: &Delivery) -> i64 {
    (delivery.attempts - delivery.schedule_offset).max(0)
}

/// Spreads `delay_ms` by `jitter` ∈ [-1, 1] times [`JITTER_FRACTION`] (out-of-range or NaN jitter is clamped
/// to the nearest bound or treated as 0).
pub fn apply_jitter(delay_ms: i64, jitter: f64) -> i64 {
    let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(-1.0, 1.0) };
    (delay_ms as f64 * (1.0 + JITTER_FRACTION * jitter)).round().max(0.0) as i64
}

/// How long to wait before the next attempt after the attempt with cycle index `index` failed, or None to give
/// up (dead letter). Never earlier than the receiver's `Retry-After`, which is itself capped at
/// `max_retry_after` so a receiver cannot park a delivery indefinitely.
pub fn next_delay(
    policy: &RetryPolicy<'_>,
    index: i64,
    jitter: f64,
    retry_after: Option<Duration>,
    max_retry_after: Duration,
) -> Option<Duration> {
    let scheduled = Duration::from_millis(apply_jitter(policy.scheduled_delay_ms(index)?, jitter) as u64);
    let asked = retry_after.map(|d| d.min(max_retry_after)).unwrap_or_default();
    Some(scheduled.max(asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn default_policy() -> RetryPolicy<'static> {
        RetryPolicy::new(None, None)
    }

    #[test]
    fn default_schedule_steps_then_gives_up() {
        let expected = [MIN, 5 * MIN, 15 * MIN, 60 * MIN, 360 * MIN, 1440 * MIN];
        let policy = default_policy();
        assert_eq!(policy.max_attempts(), 7);
        for (index, want) in expected.iter().enumerate() {
            assert_eq!(next_delay(&policy, index as i64, 0.0, None, HOUR), Some(ms(*want)), "after attempt {index}");
        }
        // The 7th attempt (index 6) was the last: dead letter.
        assert_eq!(next_delay(&policy, 6, 0.0, None, HOUR), None);
        assert_eq!(next_delay(&policy, 50, 0.0, None, HOUR), None);
    }

    #[test]
    fn an_endpoint_without_a_schedule_follows_the_servers() {
        let server = [1_000, 2_000, 3_000];
        let mut endpoint = crate::dispatch::send::tests::endpoint("https://example.com/", &[]);
        let policy = RetryPolicy::for_endpoint(&endpoint, &server);
        assert_eq!(policy.max_attempts(), 4);
        assert_eq!(next_delay(&policy, 1, 0.0, None, HOUR), Some(ms(2_000)));
        endpoint.max_attempts = Some(2);
        assert_eq!(RetryPolicy::for_endpoint(&endpoint, &server).max_attempts(), 2, "its own attempt count holds");
        endpoint.retry_schedule_ms = Some(vec![500]);
        endpoint.max_attempts = None;
        let own = RetryPolicy::for_endpoint(&endpoint, &server);
        assert_eq!((own.max_attempts(), next_delay(&own, 0, 0.0, None, HOUR)), (2, Some(ms(500))));
    }

    #[test]
    fn schedules_are_parsed_with_their_bounds() {
        assert_eq!(parse_schedule(&["1s", " 5m", "1h 30m", "7d"]), Ok(vec![1_000, 300_000, 5_400_000, 604_800_000]));
        assert_eq!(parse_schedule(&[] as &[&str]).unwrap_err().0, None);
        assert_eq!(parse_schedule(&vec!["1m"; 21]).unwrap_err().0, None);
        assert_eq!(
            parse_schedule(&["1m", "soon"]).unwrap_err(),
            (Some(1), "`soon` is not a duration such as 30s, 5m or 1h".into())
        );
        assert_eq!(parse_schedule(&["500ms"]).unwrap_err(), (Some(0), "must be between 1s and 7d".into()));
        assert_eq!(parse_schedule(&["8d"]).unwrap_err().0, Some(0));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy = default_policy();
        assert_eq!(next_delay(&policy, 0, -1.0, None, HOUR), Some(ms(48_000)));
        assert_eq!(next_delay(&policy, 0, 1.0, None, HOUR), Some(ms(72_000)));
        assert_eq!(next_delay(&policy, 5, 1.0, None, HOUR), Some(ms(1440 * MIN * 6 / 5)));
        for step in 0..=20 {
            let jitter = -1.0 + step as f64 * 0.1;
            let delay = next_delay(&policy, 2, jitter, None, HOUR).unwrap();
            assert!(delay >= ms(15 * MIN * 4 / 5) && delay <= ms(15 * MIN * 6 / 5), "{jitter}: {delay:?}");
        }
        // Out-of-range randomness cannot widen the spread.
        assert_eq!(apply_jitter(1000, 7.0), 1200);
        assert_eq!(apply_jitter(1000, -7.0), 800);
        assert_eq!(apply_jitter(1000, f64::NAN), 1000);
    }

    #[test]
    fn endpoint_override_replaces_schedule_and_attempt_count() {
        let schedule = [200, 400];
        let policy = RetryPolicy::new(Some(&schedule), None);
        assert_eq!(policy.max_attempts(), 3);
        assert_eq!(next_delay(&policy, 0, 0.0, None, HOUR), Some(ms(200)));
        assert_eq!(next_delay(&policy, 1, 0.0, None, HOUR), Some(ms(400)));
        assert_eq!(next_delay(&policy, 2, 0.0, None, HOUR), None);

        let once = RetryPolicy::new(Some(&schedule), Some(1));
        assert_eq!(next_delay(&once, 0, 0.0, None, HOUR), None, "max_attempts 1 means no retry at all");
    }

    #[test]
    fn attempts_beyond_the_schedule_reuse_its_last_delay() {
        let schedule = [200, 400];
        let policy = RetryPolicy::new(Some(&schedule), Some(5));
        let delays: Vec<_> = (0..5).map(|i| next_delay(&policy, i, 0.0, None, HOUR)).collect();
        assert_eq!(delays, [Some(ms(200)), Some(ms(400)), Some(ms(400)), Some(ms(400)), None]);

        let long = RetryPolicy::new(None, Some(10));
        assert_eq!(next_delay(&long, 8, 0.0, None, HOUR), Some(ms(1440 * MIN)));
        assert_eq!(next_delay(&long, 9, 0.0, None, HOUR), None);
    }

    #[test]
    fn empty_override_and_silly_values_fall_back_safely() {
        let empty: [i64; 0] = [];
        assert_eq!(RetryPolicy::new(Some(&empty), None), default_policy());
        assert_eq!(RetryPolicy::new(None, Some(0)).max_attempts(), 1);
        let negative = [-5];
        assert_eq!(next_delay(&RetryPolicy::new(Some(&negative), Some(2)), 0, 0.0, None, HOUR), Some(ms(0)));
        assert_eq!(next_delay(&default_policy(), -3, 0.0, None, HOUR), Some(ms(MIN)));
    }

    #[test]
    fn retry_after_wins_only_when_later_and_is_capped() {
        let policy = default_policy();
        let larger = Some(Duration::from_secs(600));
        assert_eq!(next_delay(&policy, 0, 0.0, larger, HOUR), Some(Duration::from_secs(600)));
        let smaller = Some(Duration::from_secs(5));
        assert_eq!(next_delay(&policy, 0, 0.0, smaller, HOUR), Some(ms(MIN)));
        let huge = Some(Duration::from_secs(7 * 24 * 3600));
        assert_eq!(next_delay(&policy, 0, 0.0, huge, HOUR), Some(HOUR));
        // The cap limits Retry-After, never the schedule itself.
        assert_eq!(next_delay(&policy, 5, 0.0, huge, HOUR), Some(ms(1440 * MIN)));
        // Retry-After does not buy attempts beyond max_attempts.
        assert_eq!(next_delay(&policy, 6, 0.0, larger, HOUR), None);
    }

    #[test]
    fn a_requeue_restarts_the_schedule() {
        let mut delivery = Delivery {
            id: "dlv_1".into(),
            tenant_id: "ten_1".into(),
            event_id: "evt_1".into(),
            endpoint_id: "ep_1".into(),
            event_type: "a.b".into(),
            status: crate::model::DeliveryStatus::Dead,
            attempts: 7,
            schedule_offset: 0,
            next_attempt_at: None,
            lease_owner: None,
            lease_expires_at: None,
            last_status_code: None,
            prepared: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
        };
        let policy = default_policy();
        assert_eq!(next_delay(&policy, cycle_index(&delivery), 0.0, None, HOUR), None);
        // Requeued by hand: the next attempt is the first of a new cycle.
        delivery.schedule_offset = 7;
        assert_eq!(cycle_index(&delivery), 0);
        assert_eq!(next_delay(&policy, cycle_index(&delivery), 0.0, None, HOUR), Some(ms(MIN)));
        delivery.attempts = 9;
        assert_eq!(next_delay(&policy, cycle_index(&delivery), 0.0, None, HOUR), Some(ms(15 * MIN)));
    }
}
