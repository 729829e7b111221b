//! Switchyard's own events about a tenant's endpoints, published into the tenant's stream so that its other
//! endpoints can subscribe to them: `switchyard.endpoint.disabled` when the server disables an endpoint (a
//! receiver's `410`, or every attempt failing for `disable_failing_after`).
//!
//! The audit entry that the disabling transaction writes is the outbox. Each node reads the entries written since
//! it last looked and publishes one event for each, with the entry's id in the idempotency key: nodes that publish
//! the same entry, or a node that publishes it again after a restart, store one event. An entry is read again for
//! [`LATE_COMMITS`] after its id's time, since another node's transaction may commit an older id after a newer one
//! was read; the ids published meanwhile are remembered so that they are not sent to the writer twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, value::RawValue};
use tokio_util::sync::CancellationToken;

use crate::ingest::Route;
use crate::model::{first_id_at, new_id_at, now_millis, rfc3339, AuditEntry, Endpoint, Event, Millis};
use crate::store::{Page, Store, StoreResult, ENDPOINT_DISABLED, SERVER_ACTOR};
use crate::writer::Ingest;

/// The type of the event published when the server disables an endpoint.
pub const ENDPOINT_DISABLED_EVENT: &str = "switchyard.endpoint.disabled";

/// The idempotency keys of Switchyard's own events: a publisher may not use them.
pub const RESERVED_KEY_PREFIX: &str = "switchyard:";

/// How far back a node looks when it starts: entries written while no node ran are still announced.
const LOOKBACK: Millis = 24 * 3_600_000;
/// How long after its id's time an entry may still commit: ids are minted before their transaction commits.
const LATE_COMMITS: Millis = 60_000;
/// Entries read, and announced, at once: as many events as a batch publish takes.
const BATCH: i64 = 100;

/// Publishes an event for every endpoint the server disabled, every `every` until `stop`.
pub async fn keep_announcing(store: Arc<dyn Store>, ingest: Ingest, every: Duration, stop: CancellationToken) {
    let mut announcer = Announcer::new(now_millis());
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        match announcer.announce(store.as_ref(), &ingest, now_millis()).await {
            Ok(()) => failing = false,
            // Once per outage: what was not announced is read again at the next tick.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "could not announce disabled endpoints; trying again");
            }
            Err(_) => {}
        }
    }
}

/// Where a node is in the audit log.
struct Announcer {
    /// Entries at or before this id were announced, or are older than [`LOOKBACK`].
    cursor: String,
    /// Entries after `cursor` announced already.
    announced: BTreeSet<String>,
}

impl Announcer {
    fn new(now: Millis) -> Self {
        Announcer { cursor: first_id_at("aud", now - LOOKBACK), announced: BTreeSet::new() }
    }

    async fn announce(&mut self, store: &dyn Store, ingest: &Ingest, now: Millis) -> StoreResult<()> {
        let mut page = Page { cursor: Some(self.cursor.clone()), limit: BATCH };
        loop {
            let entries = store.tenant_audit_after(ENDPOINT_DISABLED, &page).await?;
            let new: Vec<&AuditEntry> =
                entries.iter().filter(|e| e.actor == SERVER_ACTOR && !self.announced.contains(&e.id)).collect();
            let mut events = Vec::with_capacity(new.len());
            for entry in &new {
                events.push(disabled_event(store, entry, now).await?);
            }
            // One group commit for the page: after a restart, a day of entries is announced again (each an
            // idempotent repeat) in a few commits rather than one each.
            if !events.is_empty() {
                ingest.publish(events, Route::Subscriptions(Vec::new())).await?;
            }
            self.announced.extend(new.into_iter().map(|entry| entry.id.clone()));
            match entries.last() {
                Some(last) if entries.len() as i64 == BATCH => page.cursor = Some(last.id.clone()),
                _ => break,
            }
        }
        self.settle(now);
        Ok(())
    }

    /// Entries minted [`LATE_COMMITS`] before `now` have committed by now, or never will: they need not be read
    /// again, nor remembered.
    fn settle(&mut self, now: Millis) {
        let settled = first_id_at("aud", now - LATE_COMMITS);
        if settled > self.cursor {
            self.announced = self.announced.split_off(&settled);
            self.cursor = settled;
        }
    }
}

/// The event announcing the endpoint `entry` disabled, keyed by the entry so it is stored once.
async fn disabled_event(store: &dyn Store, entry: &AuditEntry, now: Millis) -> StoreResult<Event> {
    let tenant_id = entry.tenant_id.clone().unwrap_or_default();
    // The endpoint as it is now: deleted since, it has no host to name. Only the host, as in the audit log: the
    // notice may go to a third party (a chat hook), and receivers' URLs often carry tokens in the path or query.
    let endpoint = store.get_endpoint(&tenant_id, &entry.resource_id).await?;
    let data = json!({
        "endpoint_id": entry.resource_id,
        "host": endpoint.as_ref().and_then(Endpoint::url_host),
        "reason": entry.details.get("reason"),
        "status_code": entry.details.get("status_code"),
        "delivery_id": entry.details.get("delivery_id"),
        "disabled_at": rfc3339(entry.at),
    });
    let data = RawValue::from_string(data.to_string()).map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
    Ok(Event {
        id: new_id_at("evt", now),
        tenant_id,
        event_type: ENDPOINT_DISABLED_EVENT.into(),
        data,
        idempotency_key: Some(format!("{RESERVED_KEY_PREFIX}{}", entry.id)),
        received_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_again_until_they_cannot_commit_any_more() {
        let start = 1_800_000_000_000;
        let mut announcer = Announcer::new(start);
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
