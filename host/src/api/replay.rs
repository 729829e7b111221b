//! `POST /endpoints/{id}/replay-missing`: deliveries of the stored events an endpoint has none of (published
//! while it was paused or disabled, or before it subscribed to them) and that its subscriptions select now.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::json::ApiJson;
use super::pagination::time_field;
use super::{audit, validate, PathId};
use crate::error::{ApiError, ApiResult};
use crate::filter_work::FilterWork;
use crate::model::{now_millis, rfc3339, Endpoint, Event};
use crate::routing::{self, FilterCache};
use crate::store::{EventFilter, Page, Store};
use crate::AppState;

/// The endpoints a replay is running for on this node. One at a time per endpoint: a second would walk the same
/// events only to find them sent, and a client repeating its request must not multiply the database's work.
#[derive(Debug, Default)]
pub struct Replays(Arc<Mutex<HashSet<String>>>);

impl Replays {
    /// `None` if a replay of the endpoint is running; else a guard that ends it when dropped.
    pub fn start(&self, endpoint_id: &str) -> Option<ReplayRunning> {
        let mut running = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        running.insert(endpoint_id.to_string()).then(|| ReplayRunning(self.0.clone(), endpoint_id.to_string()))
    }
}

/// See [`Replays::start`].
#[derive(Debug)]
pub struct ReplayRunning(Arc<Mutex<HashSet<String>>>, String);

impl Drop for ReplayRunning {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.1);
    }
}

/// Events read per page, and so the most deliveries created per transaction: a long outage's replay must not
/// hold every tenant's publishes behind one transaction, nor hold a page of payloads of up to `max_payload_bytes`
/// each in memory (a thousand 1 MiB events took 2 GB; two replays at once went past 3.5 GB).
const REPLAY_CHUNK: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new().route("/endpoints/{id}/replay-missing", post(replay_missing))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: String,
    /// Now if absent.
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
}

#[derive(Debug, Serialize)]
struct Replayed {
    created: u64,
}

async fn replay_missing(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<ReplayBody>,
) -> ApiResult<Json<Replayed>> {
    let since = time_field("since", &body.since)?;
    let until = match &body.until {
        Some(until) => time_field("until", until)?,
        None => now_millis(),
    };
    if until <= since {
        return Err(match body.until {
            Some(_) => ApiError::invalid("until", "must be later than `since`"),
            None => ApiError::invalid("since", "must be in the past"),
        });
    }
    if let Some(event_type) = &body.event_type {
        validate::event_type_filter("event_type", event_type)?;
    }
    let endpoint = state.store.get_endpoint(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("endpoint"))?;
    let Some(running) = state.replays.start(&endpoint.id) else {
        return Err(ApiError::Conflict(format!(
            "a replay of endpoint {} is running on this node; wait for it to answer (replaying again then creates only what it missed)",
            endpoint.id
        )));
    };
    let window = EventFilter { event_type: body.event_type, since: Some(since), until: Some(until) };
    // A task of its own, as a requeue by filter: it commits a chunk at a time, and a client that gives up must not
    // stop it half-way with what it did missing from the audit log.
    let replay = tokio::spawn(async move {
        let _running = running;
        let created = replay(state.store.as_ref(), &state.filter_work, &endpoint, &window).await;
        let mut details = json!({
            "since": rfc3339(since),
            "until": rfc3339(until),
            "event_type": window.event_type,
        });
        // A failure part-way leaves the chunks before it sent: recorded as such, without a count.
        let action = match &created {
            Ok(count) => {
                details["created"] = json!(count);
                "endpoint.missed_replayed"
            }
            Err(_) => "endpoint.missed_replay_failed",
        };
        audit::record(&state, &caller, action, "endpoint", &endpoint.id, details).await;
        if created.as_ref().is_ok_and(|count| *count > 0) {
            state.dispatch_wakeup.notify_one();
        }
        created
    });
    let created = replay.await.map_err(ApiError::internal)??;
    Ok(Json(Replayed { created }))
}

/// Walks the events in `window` that `endpoint` has no delivery of, oldest first, and creates one for each its
/// subscriptions select (type pattern and JSONPath filter, as a publish would match them now).
async fn replay(store: &dyn Store, work: &FilterWork, endpoint: &Endpoint, window: &EventFilter) -> ApiResult<u64> {
    let mut filters = FilterCache::default();
    let endpoints = std::slice::from_ref(endpoint);
    let mut page = Page { cursor: None, limit: REPLAY_CHUNK };
    let mut created = 0;
    loop {
        let missed = store.events_missed_by(&endpoint.tenant_id, &endpoint.id, window, &page).await?;
        let (chunk_len, last) = (missed.len(), missed.last().map(|event| event.id.clone()));
        // A test event was meant for the endpoint it was sent to alone; Switchyard's notices are for whoever
        // subscribes to them, as any event.
        let candidates: Vec<Event> =
            missed.into_iter().filter(|event| event.event_type != routing::TEST_EVENT_TYPE).collect();
        let verdicts = work.replay_verdicts(&endpoint.tenant_id, endpoints, &candidates).await.map_err(|over| {
            ApiError::PayloadTooLarge {
                field: None,
                message: format!(
                    "the replay stopped at event {}: {over}, the limit for each event; it had created {created} \
                     deliveries",
                    candidates[over.event].id
                ),
            }
        })?;
        let selected: Vec<String> = candidates
            .iter()
            .zip(&verdicts)
            .filter(|(event, known)| !filters.matching_endpoints_given(endpoints, event, known).is_empty())
            .map(|(event, _)| event.id.clone())
            .collect();
        if !selected.is_empty() {
            let sent = store.send_events_to(&endpoint.tenant_id, &endpoint.id, &selected, now_millis()).await?;
            // Deleted meanwhile: what was sent before became dead letters with the endpoint's other deliveries.
            created += sent.ok_or(ApiError::NotFound("endpoint"))?;
        }
        if chunk_len < REPLAY_CHUNK as usize {
            return Ok(created);
        }
        page.cursor = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replay_at_a_time_per_endpoint() {
        let replays = Replays::default();
        let first = replays.start("ep_1").expect("none running");
        assert!(replays.start("ep_1").is_none(), "ep_1's is running");
        let other = replays.start("ep_2").expect("another endpoint's may run");
        drop(first);
        assert!(replays.start("ep_1").is_some(), "ended with its guard");
        drop(other);
    }
}
