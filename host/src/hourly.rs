//! Each endpoint's attempts counted by the hour, what `GET /stats` reads the success rate over the last day from.
//!
//! The writer tallies what each group commit recorded, in memory; every `stats_interval` the tally is added to
//! the store in a short transaction of its own. Publishing and recording pay a map update per attempt, not a
//! row: the group commit stays as it was, and several nodes add to the same hours without waiting for each
//! other more than once per interval. A crash loses the counts of at most the last interval, never a delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{now_millis, Millis};
use crate::store::{AttemptCounts, AttemptOutcome, EndpointHour, Store, StoreResult};

pub const HOUR: Millis = 3_600_000;
/// Hours older than this are removed: a week, and the hour it started in.
pub const KEPT_HOURS: i64 = 7 * 24 + 1;

/// The start of the hour `at` falls in.
pub fn hour_start(at: Millis) -> Millis {
    at.div_euclid(HOUR) * HOUR
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant_id: String,
    endpoint_id: String,
    hour_start: Millis,
}

/// Counts not yet added to the store.
#[derive(Default)]
pub struct HourlyTally {
    counts: Mutex<HashMap<Key, AttemptCounts>>,
}

impl HourlyTally {
    /// Counts attempts whose records committed, each in the hour it finished.
    pub fn count<'a>(&self, recorded: impl IntoIterator<Item = &'a AttemptOutcome>) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for outcome in recorded {
            let attempt = &outcome.attempt;
            let key = Key {
                tenant_id: attempt.tenant_id.clone(),
                endpoint_id: outcome.endpoint_id.clone(),
                hour_start: hour_start(attempt.started_at + attempt.duration_ms),
            };
            counts.entry(key).or_default().add(AttemptCounts::of(outcome));
        }
    }

    fn take(&self) -> Vec<EndpointHour> {
        let taken = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        taken
            .into_iter()
            .map(|(key, counts)| EndpointHour {
                tenant_id: key.tenant_id,
                endpoint_id: key.endpoint_id,
                hour_start: key.hour_start,
                counts,
            })
            .collect()
    }

    fn put_back(&self, hours: Vec<EndpointHour>) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for hour in hours {
            let key = Key { tenant_id: hour.tenant_id, endpoint_id: hour.endpoint_id, hour_start: hour.hour_start };
            counts.entry(key).or_default().add(hour.counts);
        }
    }

    /// Adds what was counted since the last flush to the store; kept for the next one if that fails.
    pub async fn flush(&self, store: &dyn Store) -> StoreResult<()> {
        let hours = self.take();
        if hours.is_empty() {
            return Ok(());
        }
        let added = store.add_endpoint_hours(&hours).await;
        if added.is_err() {
            self.put_back(hours);
        }
        added
    }
}

/// Flushes `tally` every `every` until `stop`, and removes hours older than [`KEPT_HOURS`] once an hour. The caller
/// flushes once more after the writer's last commit.
pub async fn keep_flushing(tally: Arc<HourlyTally>, store: Arc<dyn Store>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_in = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        match tally.flush(store.as_ref()).await {
            Ok(()) => failing = false,
            // Once per outage: the counts are kept and tried again at every tick.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "could not write the hourly attempt counts; keeping them to try again");
            }
            Err(_) => {}
        }
        let hour = hour_start(now_millis());
        if pruned_in != Some(hour) {
            match store.prune_endpoint_hours(hour - KEPT_HOURS * HOUR).await {
                Ok(_) => pruned_in = Some(hour),
                Err(error) => tracing::debug!(%error, "could not remove old hourly attempt counts"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attempt, DeliveryStatus};

    fn outcome(endpoint_id: &str, finished_at: Millis, status: DeliveryStatus) -> AttemptOutcome {
        AttemptOutcome {
            attempt: Attempt {
                id: "att_1".into(),
                tenant_id: "ten_a".into(),
                delivery_id: "dlv_1".into(),
                attempt_number: 1,
                started_at: finished_at - 10,
                duration_ms: 10,
                status_code: None,
                response_body: None,
                error: None,
                outcome: String::new(),
            },
            endpoint_id: endpoint_id.into(),
            status,
            next_attempt_at: None,
            disable_endpoint: None,
            prepared: None,
        }
    }

    #[test]
    fn hours_start_on_the_hour_even_before_the_epoch() {
        assert_eq!(hour_start(HOUR * 5 + 1), HOUR * 5);
        assert_eq!(hour_start(HOUR * 5), HOUR * 5);
        assert_eq!(hour_start(-1), -HOUR);
    }

    #[test]
    fn attempts_are_counted_by_endpoint_and_the_hour_they_finished_in() {
        let tally = HourlyTally::default();
        tally.count(&[
            outcome("ep_a", HOUR + 5, DeliveryStatus::Succeeded),
            outcome("ep_a", 2 * HOUR - 1, DeliveryStatus::Failed),
            outcome("ep_a", 2 * HOUR, DeliveryStatus::Dead),
            outcome("ep_b", HOUR + 5, DeliveryStatus::Succeeded),
        ]);
        let mut hours = tally.take();
        hours.sort_by(|a, b| (&a.endpoint_id, a.hour_start).cmp(&(&b.endpoint_id, b.hour_start)));
        let found: Vec<_> = hours.iter().map(|h| (h.endpoint_id.as_str(), h.hour_start, h.counts)).collect();
        // Every attempt of `outcome` takes 10 ms.
        let counts = |attempts, failed_attempts, succeeded, dead| AttemptCounts {
            attempts,
            failed_attempts,
            succeeded,
            dead,
            attempt_ms: 10 * attempts,
            timed_attempts: attempts,
        };
        assert_eq!(
            found,
            [
                ("ep_a", HOUR, counts(2, 1, 1, 0)),
                ("ep_a", 2 * HOUR, counts(1, 1, 0, 1)),
                ("ep_b", HOUR, counts(1, 0, 1, 0))
            ]
        );
        assert!(tally.take().is_empty(), "taken counts are not taken twice");
    }

    #[test]
    fn counts_put_back_after_a_failed_write_add_to_those_counted_meanwhile() {
        let tally = HourlyTally::default();
        tally.count(&[outcome("ep_a", HOUR, DeliveryStatus::Succeeded)]);
        let failed_write = tally.take();
        tally.count(&[outcome("ep_a", HOUR, DeliveryStatus::Dead)]);
        tally.put_back(failed_write);
        let hours = tally.take();
        assert_eq!(hours.len(), 1);
        let expected =
            AttemptCounts { attempts: 2, failed_attempts: 1, succeeded: 1, dead: 1, attempt_ms: 20, timed_attempts: 2 };
        assert_eq!(hours[0].counts, expected);
    }

    #[test]
    fn the_success_rate_is_of_finished_deliveries() {
        assert_eq!(AttemptCounts { attempts: 9, failed_attempts: 9, ..Default::default() }.success_rate(), None);
        let counts = AttemptCounts { attempts: 10, failed_attempts: 7, succeeded: 3, dead: 1, ..Default::default() };
        assert_eq!(counts.success_rate(), Some(0.75));
    }

    /// Attempts counted before their time was kept (hours from before migration 0010) are left out of the mean.
    #[test]
    fn the_mean_attempt_time_is_of_the_timed_attempts() {
        assert_eq!(AttemptCounts { attempts: 3, ..Default::default() }.mean_attempt_ms(), None);
        let mut day = AttemptCounts { attempts: 100, ..Default::default() };
        day.add(AttemptCounts { attempts: 4, attempt_ms: 1_000, timed_attempts: 4, ..Default::default() });
        assert_eq!(day.mean_attempt_ms(), Some(250.0));
    }
}
