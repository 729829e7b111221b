//! Each endpoint's attempts counted by the hour, what `GET /stats` reads the success rate over the last day from,
//! and each tenant's publishes by event type and hour, what `GET /stats/event-types` reads.
//!
//! The writer tallies what each group commit recorded and published, in memory; every `stats_interval` the tally
//! is added to the store in short transactions of its own. Publishing and recording pay a map update per event
//! and attempt, not a row: the group commit stays as it was, and several nodes add to the same hours without waiting for each
//! other more than once per interval. A crash loses the counts of at most the last interval, never a delivery.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{now_millis, Event, Millis};
use crate::store::{AttemptCounts, AttemptOutcome, EndpointHour, EventTypeHour, PublishedCounts, Store, StoreResult};

pub const HOUR: Millis = 3_600_000;
/// Hours older than this are removed: a week, and the hour it started in.
pub const KEPT_HOURS: i64 = 7 * 24 + 1;

/// The start of the hour `at` falls in.
pub fn hour_start(at: Millis) -> Millis {
    at.div_euclid(HOUR) * HOUR
}

/// Counts that add up, by some key, not yet added to the store.
struct Tally<K, C> {
    counts: Mutex<HashMap<K, C>>,
}

impl<K, C> Default for Tally<K, C> {
    fn default() -> Self {
        Tally { counts: Mutex::default() }
    }
}

trait Sum: Default {
    fn add(&mut self, other: Self);
}

impl Sum for AttemptCounts {
    fn add(&mut self, other: Self) {
        AttemptCounts::add(self, other);
    }
}

impl Sum for PublishedCounts {
    fn add(&mut self, other: Self) {
        PublishedCounts::add(self, other);
    }
}

impl<K: Eq + Hash, C: Sum> Tally<K, C> {
    fn add(&self, counted: impl IntoIterator<Item = (K, C)>) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (key, more) in counted {
            counts.entry(key).or_default().add(more);
        }
    }

    fn take(&self) -> Vec<(K, C)> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())).into_iter().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EndpointKey {
    tenant_id: String,
    endpoint_id: String,
    hour_start: Millis,
}

impl EndpointKey {
    fn hour(&self, counts: AttemptCounts) -> EndpointHour {
        let EndpointKey { tenant_id, endpoint_id, hour_start } = self.clone();
        EndpointHour { tenant_id, endpoint_id, hour_start, counts }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventTypeKey {
    tenant_id: String,
    event_type: String,
    hour_start: Millis,
}

impl EventTypeKey {
    fn hour(&self, counts: PublishedCounts) -> EventTypeHour {
        let EventTypeKey { tenant_id, event_type, hour_start } = self.clone();
        EventTypeHour { tenant_id, event_type, hour_start, counts }
    }
}

/// What the writer counted and the store does not have yet: attempts by endpoint, publishes by event type.
#[derive(Default)]
pub struct HourlyTally {
    attempts: Tally<EndpointKey, AttemptCounts>,
    published: Tally<EventTypeKey, PublishedCounts>,
}

impl HourlyTally {
    /// Counts attempts whose records committed, each in the hour it finished.
    pub fn count<'a>(&self, recorded: impl IntoIterator<Item = &'a AttemptOutcome>) {
        self.attempts.add(recorded.into_iter().map(|outcome| {
            let attempt = &outcome.attempt;
            let key = EndpointKey {
                tenant_id: attempt.tenant_id.clone(),
                endpoint_id: outcome.endpoint_id.clone(),
                hour_start: hour_start(attempt.started_at + attempt.duration_ms),
            };
            (key, AttemptCounts::of(outcome))
        }));
    }

    /// Counts events whose publish committed, each with the deliveries it was routed to, in the hour it was
    /// received.
    pub fn count_published<'a>(&self, stored: impl IntoIterator<Item = (&'a Event, u64)>) {
        self.published.add(stored.into_iter().map(|(event, deliveries)| {
            let key = EventTypeKey {
                tenant_id: event.tenant_id.clone(),
                event_type: event.event_type.clone(),
                hour_start: hour_start(event.received_at),
            };
            (key, PublishedCounts { events: 1, deliveries })
        }));
    }

    /// Adds what was counted since the last flush to the store; what could not be written is kept for the next.
    pub async fn flush(&self, store: &dyn Store) -> StoreResult<()> {
        let mut written = Ok(());
        let attempts = self.attempts.take();
        if !attempts.is_empty() {
            let hours: Vec<EndpointHour> = attempts.iter().map(|(key, counts)| key.hour(*counts)).collect();
            written = store.add_endpoint_hours(&hours).await;
            if written.is_err() {
                self.attempts.add(attempts);
            }
        }
        let published = self.published.take();
        if !published.is_empty() {
            let hours: Vec<EventTypeHour> = published.iter().map(|(key, counts)| key.hour(*counts)).collect();
            let added = store.add_event_type_hours(&hours).await;
            if added.is_err() {
                self.published.add(published);
            }
            written = written.and(added);
        }
        written
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
                tracing::warn!(%error, "could not write the hourly counts; keeping them to try again");
            }
            Err(_) => {}
        }
        let hour = hour_start(now_millis());
        if pruned_in != Some(hour) {
            match store.prune_hours(hour - KEPT_HOURS * HOUR).await {
                Ok(_) => pruned_in = Some(hour),
                Err(error) => tracing::debug!(%error, "could not remove old hourly counts"),
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

    fn attempt_hours(tally: &HourlyTally) -> Vec<EndpointHour> {
        tally.attempts.take().into_iter().map(|(key, counts)| key.hour(counts)).collect()
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
        let mut hours = attempt_hours(&tally);
        hours.sort_by(|a, b| (&a.endpoint_id, a.hour_start).cmp(&(&b.endpoint_id, b.hour_start)));
        let found: Vec<_> = hours.iter().map(|h| (h.endpoint_id.as_str(), h.hour_start, h.counts)).collect();
        // Every attempt of `outcome` takes 10 ms, and is its delivery's first.
        let counts = |attempts, failed_attempts, succeeded, dead| AttemptCounts {
            attempts,
            failed_attempts,
            succeeded,
            dead,
            attempt_ms: 10 * attempts,
            timed_attempts: attempts,
            retried: 0,
            counted_finishes: succeeded + dead,
        };
        assert_eq!(
            found,
            [
                ("ep_a", HOUR, counts(2, 1, 1, 0)),
                ("ep_a", 2 * HOUR, counts(1, 1, 0, 1)),
                ("ep_b", HOUR, counts(1, 0, 1, 0))
            ]
        );
        assert!(attempt_hours(&tally).is_empty(), "taken counts are not taken twice");
    }

    #[test]
    fn counts_put_back_after_a_failed_write_add_to_those_counted_meanwhile() {
        let tally = HourlyTally::default();
        tally.count(&[outcome("ep_a", HOUR, DeliveryStatus::Succeeded)]);
        let failed_write = tally.attempts.take();
        tally.count(&[outcome("ep_a", HOUR, DeliveryStatus::Dead)]);
        tally.attempts.add(failed_write);
        let hours = attempt_hours(&tally);
        assert_eq!(hours.len(), 1);
        let expected = AttemptCounts {
            attempts: 2,
            failed_attempts: 1,
            succeeded: 1,
            dead: 1,
            attempt_ms: 20,
            timed_attempts: 2,
            retried: 0,
            counted_finishes: 2,
        };
        assert_eq!(hours[0].counts, expected);
    }

    #[test]
    fn events_are_counted_by_tenant_type_and_the_hour_they_were_received_in() {
        let event = |tenant_id: &str, event_type: &str, received_at| Event {
            id: "evt_1".into(),
            tenant_id: tenant_id.into(),
            event_type: event_type.into(),
            data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            idempotency_key: None,
            received_at,
        };
        let tally = HourlyTally::default();
        let events = [
            event("ten_a", "order.paid", HOUR),
            event("ten_a", "order.paid", 2 * HOUR - 1),
            event("ten_a", "order.paid", 2 * HOUR),
            event("ten_a", "order.sent", HOUR),
            event("ten_b", "order.paid", HOUR),
        ];
        tally.count_published(events.iter().zip([3, 0, 1, 2, 5]));
        tally.count_published([(&events[0], 4)]);
        let mut hours: Vec<_> = tally.published.take().into_iter().map(|(key, counts)| key.hour(counts)).collect();
        hours.sort_by(|a, b| {
            (&a.tenant_id, &a.event_type, a.hour_start).cmp(&(&b.tenant_id, &b.event_type, b.hour_start))
        });
        let found: Vec<_> = hours
            .iter()
            .map(|h| (h.tenant_id.as_str(), h.event_type.as_str(), h.hour_start, h.counts.events, h.counts.deliveries))
            .collect();
        assert_eq!(
            found,
            [
                ("ten_a", "order.paid", HOUR, 3, 7),
                ("ten_a", "order.paid", 2 * HOUR, 1, 1),
                ("ten_a", "order.sent", HOUR, 1, 2),
                ("ten_b", "order.paid", HOUR, 1, 5),
            ]
        );
    }

    #[test]
    fn the_success_rate_is_of_finished_deliveries() {
        assert_eq!(AttemptCounts { attempts: 9, failed_attempts: 9, ..Default::default() }.success_rate(), None);
        let counts = AttemptCounts { attempts: 10, failed_attempts: 7, succeeded: 3, dead: 1, ..Default::default() };
        assert_eq!(counts.success_rate(), Some(0.75));
    }

    #[test]
    fn a_delivery_finished_by_a_later_attempt_counts_as_retried() {
        let numbered = |number, status| {
            let mut outcome = outcome("ep_a", HOUR, status);
            outcome.attempt.attempt_number = number;
            AttemptCounts::of(&outcome)
        };
        let mut hour = AttemptCounts::default();
        for counts in [
            numbered(1, DeliveryStatus::Succeeded),
            numbered(1, DeliveryStatus::Failed),
            numbered(2, DeliveryStatus::Failed),
            numbered(3, DeliveryStatus::Succeeded),
            numbered(1, DeliveryStatus::Dead),
            numbered(7, DeliveryStatus::Dead),
        ] {
            hour.add(counts);
        }
        assert_eq!((hour.retried, hour.counted_finishes), (2, 4));
        assert_eq!(hour.retry_rate(), Some(0.5));
        assert_eq!(AttemptCounts { attempts: 3, failed_attempts: 3, ..Default::default() }.retry_rate(), None);
    }

    /// Deliveries finished before their attempt number was counted (hours from before migration 0011) are left
    /// out of the retry rate, as they are unknown.
    #[test]
    fn the_retry_rate_is_of_the_counted_finishes() {
        let mut day = AttemptCounts { succeeded: 90, dead: 10, ..Default::default() };
        day.add(AttemptCounts { succeeded: 4, retried: 1, counted_finishes: 4, ..Default::default() });
        assert_eq!(day.retry_rate(), Some(0.25));
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
