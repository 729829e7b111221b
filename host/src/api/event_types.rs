//! Event types: the catalogue of `resource.action` names a tenant publishes. Publishing registers unknown types
//! too; this route exists to describe them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::json::ApiJson;
use super::pagination::{PageOf, Query};
use super::{audit, validate};
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, rfc3339, EventType};
use crate::{routing, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/event-types", get(list).post(register))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterEventType {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Serialize)]
struct EventTypeView {
    name: String,
    description: String,
    created_at: String,
}

impl From<EventType> for EventTypeView {
    fn from(t: EventType) -> Self {
        Self { name: t.name, description: t.description, created_at: rfc3339(t.created_at) }
    }
}

async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterEventType>,
) -> ApiResult<(StatusCode, Json<EventTypeView>)> {
    routing::validate_publishable_event_type(&body.name).map_err(|message| ApiError::invalid("name", message))?;
    let description = body.description.unwrap_or_default();
    validate::description("description", &description)?;
    let now = now_millis();
    let (stored, created) = state.store.register_event_type(&caller.tenant_id, &body.name, &description, now).await?;
    let (status, action) =
        if created { (StatusCode::CREATED, "event_type.created") } else { (StatusCode::OK, "event_type.updated") };
    audit::record(&state, &caller, action, "event_type", &stored.name, json!({})).await;
    Ok((status, Json(stored.into())))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut query: Query,
) -> ApiResult<Json<PageOf<EventTypeView>>> {
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_event_types(&caller.tenant_id, &page.store_page()).await?;
    Ok(Json(page.respond(rows, |t| &t.name, EventTypeView::from)))
}
