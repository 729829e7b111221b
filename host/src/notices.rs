//! Switchyard's own events about a tenant's endpoints and deliveries, published into the tenant's stream so that
//! its other endpoints can subscribe to them:
//! - `switchyard.endpoint.disabled` when the server disables an endpoint (a receiver's `410`, or every attempt
//!   failing for `disable_failing_after`, or `disable_failing_attempts` of them in a row);
//! - `switchyard.delivery.dead` when an attempt puts a delivery in the dead-letter queue.
//!
//! What the server already writes in the same transaction is the outbox: the disabling's audit entry, and the
//! dead-lettering attempt. Each node reads the entries written since it last looked and publishes one event for
//! each, with the entry's id in the idempotency key: nodes that publish the same entry, or a node that publishes it
//! again after a restart, store one event. An entry is read again for [`LATE_COMMITS`] after its id's time, since
//! another node's transaction may commit an older id after a newer one was read; the ids published meanwhile are
//! remembered so that they are not sent to the writer twice. How far the nodes have announced is saved in the
//! database every [`SAVE_EVERY`], so that a node starting reads back from there rather than a whole [`LOOKBACK`]:
//! a day of dead letters, read and published again as idempotent repeats, held a PostgreSQL node's publishes up
//! for seconds at each start.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, value::RawValue};
use tokio_util::sync::CancellationToken;

use crate::ingest::Route;
use crate::model::{first_id_at, new_id_at, now_millis, rfc3339, AuditEntry, Endpoint, Event, Millis};
use crate::store::{DeadAttempt, Page, Store, StoreError, StoreResult, ENDPOINT_DISABLED, SERVER_ACTOR};
use crate::writer::Ingest;

/// The type of the event published when the server disables an endpoint.
pub const ENDPOINT_DISABLED_EVENT: &str = "switchyard.endpoint.disabled";
/// The type of the event published when an attempt puts a delivery in the dead-letter queue.
pub const DELIVERY_DEAD_EVENT: &str = "switchyard.delivery.dead";
/// The prefix of Switchyard's own event types.
const RESERVED_TYPE_PREFIX: &str = "switchyard.";

/// The idempotency keys of Switchyard's own events: a publisher may not use them.
pub const RESERVED_KEY_PREFIX: &str = "switchyard:";

/// How far back a node looks when it starts: entries written while no node ran are still announced.
const LOOKBACK: Millis = 24 * 3_600_000;
/// How long after its id's time an entry may still commit: ids are minted before their transaction commits.
const LATE_COMMITS: Millis = 60_000;
/// Entries read, and announced, at once: as many events as a batch publish takes.
const BATCH: i64 = 100;
/// How often a node saves its cursor: a start reads back about this much more than it must, and a save is a write.
const SAVE_EVERY: Millis = 60_000;

/// Publishes an event for every endpoint the server disabled and every delivery dead-lettered by an attempt, every
/// `every` until `stop`.
pub async fn keep_announcing(store: Arc<dyn Store>, ingest: Ingest, every: Duration, stop: CancellationToken) {
    let now = now_millis();
    let mut disabled = Announcer::<DisabledEndpoints>::resume(store.as_ref(), now).await;
    let mut dead = Announcer::<DeadLetters>::resume(store.as_ref(), now).await;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = now_millis();
        let announced = match disabled.announce(store.as_ref(), &ingest, now).await {
            Ok(()) => dead.announce(store.as_ref(), &ingest, now).await,
            Err(error) => Err(error),
        };
        match announced {
            Ok(()) => failing = false,
            // Once per outage: what was not announced is read again at the next tick.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "could not announce disabled endpoints or dead letters; trying again");
            }
            Err(_) => {}
        }
    }
}

/// Where a kind of notice comes from, and what it says.
trait Outbox {
    type Entry: Send + Sync;
    /// The prefix of the entries' ids, which are minted (from the clock) just before their transaction commits.
    const ID_PREFIX: &'static str;
    /// The type of the events announcing them.
    const EVENT_TYPE: &'static str;
    /// Every tenant's entries after `page.cursor`, oldest first.
    async fn read(store: &dyn Store, page: &Page) -> StoreResult<Vec<Self::Entry>>;
    fn id(entry: &Self::Entry) -> &str;
    /// The endpoint the entry is about, as `(tenant_id, endpoint_id)`; None if it is not announced.
    fn about(entry: &Self::Entry) -> Option<(&str, &str)>;
    /// What the notice's `data` says, given the endpoint as it is now (None once deleted).
    fn data(entry: &Self::Entry, endpoint: Option<&Endpoint>) -> serde_json::Value;
}

/// The endpoints the server disabled: the `endpoint.disabled` audit entries it wrote.
struct DisabledEndpoints;

impl Outbox for DisabledEndpoints {
    type Entry = AuditEntry;
    const ID_PREFIX: &'static str = "aud";
    const EVENT_TYPE: &'static str = ENDPOINT_DISABLED_EVENT;

    async fn read(store: &dyn Store, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        store.tenant_audit_after(ENDPOINT_DISABLED, page).await
    }

    fn id(entry: &AuditEntry) -> &str {
        &entry.id
    }

    fn about(entry: &AuditEntry) -> Option<(&str, &str)> {
        // Pausing an endpoint through the API is the tenant's own doing: not announced.
        let tenant_id = entry.tenant_id.as_deref().filter(|_| entry.actor == SERVER_ACTOR)?;
        Some((tenant_id, &entry.resource_id))
    }

    fn data(entry: &AuditEntry, endpoint: Option<&Endpoint>) -> serde_json::Value {
        json!({
            "endpoint_id": entry.resource_id,
            "host": endpoint.and_then(Endpoint::url_host),
            "reason": entry.details.get("reason"),
            "status_code": entry.details.get("status_code"),
            "delivery_id": entry.details.get("delivery_id"),
            "disabled_at": rfc3339(entry.at),
        })
    }
}

/// The deliveries dead-lettered by an attempt: its final failure, a `410`, a `4xx` that is not retried, or a retry
/// policy giving up. Those dead-lettered with their endpoint (disabled, deleted) are announced by the endpoint's
/// notice, or by the API that did it.
struct DeadLetters;

impl Outbox for DeadLetters {
    type Entry = DeadAttempt;
    const ID_PREFIX: &'static str = "att";
    const EVENT_TYPE: &'static str = DELIVERY_DEAD_EVENT;

    async fn read(store: &dyn Store, page: &Page) -> StoreResult<Vec<DeadAttempt>> {
        store.dead_attempts_after(page).await
    }

    fn id(entry: &DeadAttempt) -> &str {
        &entry.attempt.id
    }

    fn about(entry: &DeadAttempt) -> Option<(&str, &str)> {
        // A notice that could not be delivered is not announced: an endpoint subscribed to dead letters that
        // failed would otherwise be sent a notice of its own notice, and so on.
        if entry.event_type.starts_with(RESERVED_TYPE_PREFIX) {
            return None;
        }
        Some((&entry.attempt.tenant_id, &entry.endpoint_id))
    }

    fn data(entry: &DeadAttempt, endpoint: Option<&Endpoint>) -> serde_json::Value {
        let attempt = &entry.attempt;
        // Not the attempt's error: it may quote the receiver (a redirect's target), and the notice may go to a
        // third party. The delivery's attempts, through the API, have it.
        json!({
            "delivery_id": attempt.delivery_id,
            "event_id": entry.event_id,
            "event_type": entry.event_type,
            "endpoint_id": entry.endpoint_id,
            "host": endpoint.and_then(Endpoint::url_host),
            "attempts": attempt.attempt_number,
            "status_code": attempt.status_code,
            "dead_at": rfc3339(attempt.started_at.saturating_add(attempt.duration_ms)),
        })
    }
}

/// Where a node is in an outbox.
struct Announcer<O> {
    /// Entries at or before this id were announced, or are older than [`LOOKBACK`].
    cursor: String,
    /// Entries after `cursor` announced already.
    announced: BTreeSet<String>,
    /// When `cursor` was last saved, and what it was.
    saved: Option<(Millis, String)>,
    outbox: PhantomData<O>,
}

impl<O: Outbox> Announcer<O> {
    fn new(now: Millis, saved_cursor: Option<String>) -> Self {
        let oldest = first_id_at(O::ID_PREFIX, now - LOOKBACK);
        // A saved cursor is where some node had announced everything before, but never further back than a day.
        let cursor = saved_cursor.filter(|saved| saved.starts_with(O::ID_PREFIX) && *saved > oldest);
        let saved = cursor.clone().map(|cursor| (now, cursor));
        Announcer { cursor: cursor.unwrap_or(oldest), announced: BTreeSet::new(), saved, outbox: PhantomData }
    }

    /// Starts from the cursor the nodes saved, or a [`LOOKBACK`] ago when there is none (or it cannot be read).
    async fn resume(store: &dyn Store, now: Millis) -> Self {
        let saved = match store.get_meta(&Self::meta_key()).await {
            Ok(saved) => saved,
            Err(error) => {
                tracing::warn!(%error, "could not read where the notices were announced to; reading back a day");
                None
            }
        };
        Self::new(now, saved)
    }

    fn meta_key() -> String {
        format!("notices.{}.cursor", O::ID_PREFIX)
    }

    /// Saves the cursor, at most every [`SAVE_EVERY`]. Several nodes save over each other's: an older cursor only
    /// makes a start read a little more.
    async fn save(&mut self, store: &dyn Store, now: Millis) -> StoreResult<()> {
        let due = match &self.saved {
            Some((at, cursor)) => *cursor != self.cursor && now - at >= SAVE_EVERY,
            None => true,
        };
        if due {
            store.put_meta(&Self::meta_key(), &self.cursor).await?;
            self.saved = Some((now, self.cursor.clone()));
        }
        Ok(())
    }

    async fn announce(&mut self, store: &dyn Store, ingest: &Ingest, now: Millis) -> StoreResult<()> {
        let mut page = Page { cursor: Some(self.cursor.clone()), limit: BATCH };
        loop {
            let entries = O::read(store, &page).await?;
            let new: Vec<&O::Entry> = entries.iter().filter(|e| !self.announced.contains(O::id(e))).collect();
            // A page's entries are often about the same few endpoints (a receiver down dead-letters many).
            let mut endpoints: HashMap<&str, Option<Endpoint>> = HashMap::new();
            let mut events = Vec::with_capacity(new.len());
            for entry in &new {
                let Some((tenant_id, endpoint_id)) = O::about(entry) else { continue };
                if !endpoints.contains_key(endpoint_id) {
                    endpoints.insert(endpoint_id, store.get_endpoint(tenant_id, endpoint_id).await?);
                }
                let data = O::data(entry, endpoints[endpoint_id].as_ref());
                events.push(notice::<O>(tenant_id, O::id(entry), &data, now)?);
            }
            // One group commit for the page: a start without a saved cursor announces a day of entries again
            // (each an idempotent repeat) in a few commits rather than one each.
            if !events.is_empty() {
                ingest.publish(events, Route::Subscriptions(Vec::new())).await?;
            }
            self.announced.extend(new.into_iter().map(|entry| O::id(entry).to_string()));
            match entries.last() {
                Some(last) if entries.len() as i64 == BATCH => page.cursor = Some(O::id(last).to_string()),
                _ => break,
            }
        }
        self.settle(now);
        self.save(store, now).await
    }

    /// Entries minted [`LATE_COMMITS`] before `now` have committed by now, or never will: they need not be read
    /// again, nor remembered.
    fn settle(&mut self, now: Millis) {
        let settled = first_id_at(O::ID_PREFIX, now - LATE_COMMITS);
        if settled > self.cursor {
            self.announced = self.announced.split_off(&settled);
            self.cursor = settled;
        }
    }
}

/// The event announcing the entry `entry_id`, keyed by it so that it is stored once.
fn notice<O: Outbox>(tenant_id: &str, entry_id: &str, data: &serde_json::Value, now: Millis) -> StoreResult<Event> {
    let data = RawValue::from_string(data.to_string()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Event {
        id: new_id_at("evt", now),
        tenant_id: tenant_id.to_string(),
        event_type: O::EVENT_TYPE.into(),
        data,
        idempotency_key: Some(format!("{RESERVED_KEY_PREFIX}{entry_id}")),
        received_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_attempt(event_type: &str) -> DeadAttempt {
        DeadAttempt {
            attempt: crate::model::Attempt {
                id: "att_1".into(),
                tenant_id: "ten_1".into(),
                delivery_id: "dlv_1".into(),
                attempt_number: 5,
                started_at: 1_800_000_000_000,
                duration_ms: 250,
                status_code: Some(503),
                response_body: Some("down for maintenance".into()),
                error: Some("HTTP 503; redirected to https://example.com/?token=secret".into()),
                outcome: "dead".into(),
            },
            event_id: "evt_1".into(),
            event_type: event_type.into(),
            endpoint_id: "ep_1".into(),
        }
    }

    #[test]
    fn a_dead_letter_is_announced_without_what_the_receiver_said() {
        let entry = dead_attempt("invoice.paid");
        assert_eq!(DeadLetters::about(&entry), Some(("ten_1", "ep_1")));
        assert_eq!(
            DeadLetters::data(&entry, None),
            json!({
                "delivery_id": "dlv_1",
                "event_id": "evt_1",
                "event_type": "invoice.paid",
                "endpoint_id": "ep_1",
                "host": null,
                "attempts": 5,
                "status_code": 503,
                "dead_at": rfc3339(1_800_000_000_250),
            })
        );
        let event = notice::<DeadLetters>("ten_1", "att_1", &DeadLetters::data(&entry, None), 7).unwrap();
        assert_eq!(
            (event.event_type.as_str(), event.idempotency_key.as_deref(), event.tenant_id.as_str()),
            (DELIVERY_DEAD_EVENT, Some("switchyard:att_1"), "ten_1")
        );
    }

    #[test]
    fn notices_that_died_and_tenants_own_pauses_are_not_announced() {
        assert_eq!(DeadLetters::about(&dead_attempt(DELIVERY_DEAD_EVENT)), None, "no notice of a notice");
        assert_eq!(DeadLetters::about(&dead_attempt("switchyard.test")), None);
        let mut entry = AuditEntry {
            id: "aud_1".into(),
            tenant_id: Some("ten_1".into()),
            actor: SERVER_ACTOR.into(),
            action: ENDPOINT_DISABLED.into(),
            resource_type: "endpoint".into(),
            resource_id: "ep_1".into(),
            details: json!({}),
            at: 0,
        };
        assert_eq!(DisabledEndpoints::about(&entry), Some(("ten_1", "ep_1")));
        entry.actor = "key_1".into();
        assert_eq!(DisabledEndpoints::about(&entry), None);
    }

    #[test]
    fn a_start_reads_back_from_the_saved_cursor_but_never_further_than_a_day() {
        let now = 1_800_000_000_000;
        let recent = first_id_at("att", now - 5 * 60_000);
        let resumed = Announcer::<DeadLetters>::new(now, Some(recent.clone()));
        assert_eq!((resumed.cursor.as_str(), resumed.saved.map(|s| s.1)), (recent.as_str(), Some(recent.clone())));

        let oldest = first_id_at("att", now - LOOKBACK);
        let stale = first_id_at("att", now - 2 * LOOKBACK);
        for saved in [None, Some(stale), Some(first_id_at("aud", now - 60_000)), Some(String::new())] {
            let started = Announcer::<DeadLetters>::new(now, saved.clone());
            assert_eq!(started.cursor, oldest, "{saved:?}");
            assert_eq!(started.saved, None, "{saved:?}: saved at the first chance");
        }
    }

    #[tokio::test]
    async fn the_cursor_is_saved_at_once_then_at_most_every_minute_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/n.db", dir.path().display());
        let store = crate::store::sql::SqlStore::connect(&url).await.unwrap();
        let now = 1_800_000_000_000;
        let mut announcer = Announcer::<DeadLetters>::resume(&store, now).await;
        let saved = || async { store.get_meta("notices.att.cursor").await.unwrap() };
        announcer.save(&store, now).await.unwrap();
        assert_eq!(saved().await, Some(first_id_at("att", now - LOOKBACK)), "at the first chance");

        announcer.settle(now + 1_000);
        announcer.save(&store, now + 1_000).await.unwrap();
        assert_eq!(saved().await, Some(first_id_at("att", now - LOOKBACK)), "not again within a minute");
        announcer.settle(now + SAVE_EVERY);
        announcer.save(&store, now + SAVE_EVERY).await.unwrap();
        let cursor = first_id_at("att", now + SAVE_EVERY - LATE_COMMITS);
        assert_eq!(saved().await, Some(cursor.clone()));

        let resumed = Announcer::<DeadLetters>::resume(&store, now + 2 * SAVE_EVERY).await;
        assert_eq!(resumed.cursor, cursor, "a start reads back from the saved cursor");
        let other = Announcer::<DisabledEndpoints>::resume(&store, now).await;
        assert_eq!(other.cursor, first_id_at("aud", now - LOOKBACK), "each outbox has its own");
        store.close().await;
    }

    #[test]
    fn entries_are_read_again_until_they_cannot_commit_any_more() {
        let start = 1_800_000_000_000;
        let mut announcer = Announcer::<DisabledEndpoints>::new(start, None);
        assert_eq!(announcer.cursor, first_id_at("aud", start - LOOKBACK), "a day back at first");
        let early = new_id_at("aud", start - 2 * LATE_COMMITS);
        let recent = new_id_at("aud", start - 1_000);
        announcer.announced.extend([early.clone(), recent.clone()]);

        announcer.settle(start);
        assert_eq!(announcer.cursor, first_id_at("aud", start - LATE_COMMITS));
        assert_eq!(announcer.announced, BTreeSet::from([recent.clone()]), "the early one is behind the cursor now");
        announcer.settle(start - 5_000);
        assert_eq!(announcer.cursor, first_id_at("aud", start - LATE_COMMITS), "a clock going back moves nothing");
        announcer.settle(start + LATE_COMMITS);
        assert!(announcer.announced.is_empty() && announcer.cursor > recent);
    }
}
