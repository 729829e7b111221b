//! The dead-letter queue: deliveries that ran out of attempts (or lost their endpoint), and requeueing them.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit;
use super::auth::Caller;
use super::deliveries::{common_filter, DeliveryView};
use super::json::ApiJson;
use super::pagination::{time_field, PageOf, Query};
use super::validate;
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, rfc3339, DeliveryStatus};
use crate::store::{DeliveryFilter, RequeueSelector, Resend};
use crate::AppState;

pub const MAX_REQUEUE_IDS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route("/dead-letters", get(list)).route("/dead-letters/requeue", post(requeue))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut query: Query,
) -> ApiResult<Json<PageOf<DeliveryView>>> {
    let filter = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        event_id: query.take("event_id")?,
        ..common_filter(&mut query)?
    };
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_deliveries(&caller.tenant_id, &filter, &page.store_page()).await?;
    Ok(Json(page.respond(rows, |d| &d.id, DeliveryView::from)))
}

/// Either a list of ids or the filters `GET /dead-letters` takes (`{}` selects every dead letter of the tenant).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequeueBody {
    #[serde(default)]
    delivery_ids: Option<Vec<String>>,
    #[serde(default)]
    endpoint_id: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    updated_since: Option<String>,
    #[serde(default)]
    updated_until: Option<String>,
    /// Run the endpoints' filters and transforms again instead of resending what was prepared.
    #[serde(default)]
    rerun_plugins: bool,
}

impl RequeueBody {
    fn has_filter(&self) -> bool {
        [
            &self.endpoint_id,
            &self.event_id,
            &self.event_type,
            &self.since,
            &self.until,
            &self.updated_since,
            &self.updated_until,
        ]
        .iter()
        .any(|f| f.is_some())
    }

    fn filter(self) -> ApiResult<DeliveryFilter> {
        let time = |name, text: Option<String>| text.map(|t| time_field(name, &t)).transpose();
        Ok(DeliveryFilter {
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            updated_since: time("updated_since", self.updated_since)?,
            updated_until: time("updated_until", self.updated_until)?,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            event_type: self.event_type,
            status: Some(DeliveryStatus::Dead),
        })
    }
}

#[derive(Debug, Serialize)]
struct Requeued {
    requeued: u64,
}

async fn requeue(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RequeueBody>,
) -> ApiResult<Json<Requeued>> {
    if let Some(event_type) = &body.event_type {
        validate::event_type_filter("event_type", event_type)?;
    }
    let rerun_plugins = body.rerun_plugins;
    let selector = match body.delivery_ids {
        Some(_) if body.has_filter() => {
            return Err(ApiError::invalid("delivery_ids", "cannot be combined with filters"));
        }
        Some(ids) if ids.is_empty() || ids.len() > MAX_REQUEUE_IDS => {
            return Err(ApiError::invalid("delivery_ids", format!("must hold 1 to {MAX_REQUEUE_IDS} ids")));
        }
        Some(ids) => RequeueSelector::Ids(ids),
        None => RequeueSelector::Matching(body.filter()?),
    };
    let resend = Resend::rerunning_plugins(rerun_plugins);
    // A task of its own: a requeue by filter commits a chunk at a time, and a client that gives up (a proxy's
    // timeout, say) must not stop it half-way, with what it did missing from the audit log.
    let requeue = tokio::spawn(async move {
        let requeued = state.store.requeue_dead(&caller.tenant_id, &selector, now_millis(), resend).await;
        let mut details = match &selector {
            RequeueSelector::Ids(ids) => json!({ "delivery_ids": ids }),
            RequeueSelector::Matching(filter) => json!({
                "endpoint_id": filter.endpoint_id,
                "event_id": filter.event_id,
                "event_type": filter.event_type,
                "since": filter.since.map(rfc3339),
                "until": filter.until.map(rfc3339),
                "updated_since": filter.updated_since.map(rfc3339),
                "updated_until": filter.updated_until.map(rfc3339),
            }),
        };
        details["rerun_plugins"] = json!(rerun_plugins);
        // A failure part-way leaves the chunks before it requeued: recorded as such, without a count.
        let action = match &requeued {
            Ok(count) => {
                details["requeued"] = json!(count);
                "dead_letters.requeued"
            }
            Err(_) => "dead_letters.requeue_failed",
        };
        audit::record(&state, &caller, action, "delivery", "*", details).await;
        if requeued.as_ref().is_ok_and(|count| *count > 0) {
            state.dispatch_wakeup.notify_one();
        }
        requeued
    });
    let requeued = requeue.await.map_err(ApiError::internal)??;
    Ok(Json(Requeued { requeued }))
}
