//! Event types: the catalogue of `resource.action` names a tenant publishes. Publishing registers unknown types
//! too; these routes describe them, and give them the JSON Schema their events' `data` must match.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::auth::Caller;
use super::json::ApiJson;
use super::pagination::{PageOf, Query};
use super::{audit, validate, PathId};
use crate::error::{ApiError, ApiResult};
use crate::event_schemas::{self, MAX_SCHEMA_BYTES};
use crate::model::{now_millis, rfc3339, EventType};
use crate::{routing, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/event-types", get(list).post(register)).route("/event-types/{name}", get(fetch))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterEventType {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Kept as sent, as `data` is: the tenant reads back the schema it wrote.
    #[serde(default)]
    schema: Option<Box<RawValue>>,
}

#[derive(Debug, Serialize)]
struct EventTypeView {
    name: String,
    description: String,
    schema: Option<Box<RawValue>>,
    created_at: String,
}

impl From<EventType> for EventTypeView {
    fn from(t: EventType) -> Self {
        // Stored only after it parsed; text that no longer does (edited in the database) is shown as none.
        let schema = t.schema.and_then(|text| RawValue::from_string(text).ok());
        Self { name: t.name, description: t.description, schema, created_at: rfc3339(t.created_at) }
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
    if body.schema.is_some() && !state.config.event_type_schemas {
        return Err(ApiError::invalid(
            "schema",
            "event type schemas are off on this server (the operator turns them on with `event_type_schemas`)",
        ));
    }
    let schema = body.schema.map(|schema| checked_schema(&schema)).transpose()?;
    let wanted = EventType { name: body.name, description, schema, created_at: now_millis() };
    let registered = state.store.register_event_type(&caller.tenant_id, &wanted).await;
    // Also after a failure: it may have committed all the same.
    state.event_schemas.changed(&caller.tenant_id);
    let (stored, created) = registered?;
    let (status, action) =
        if created { (StatusCode::CREATED, "event_type.created") } else { (StatusCode::OK, "event_type.updated") };
    let details = json!({ "schema": stored.schema.is_some() });
    audit::record(&state, &caller, action, "event_type", &stored.name, details).await;
    Ok((status, Json(stored.into())))
}

/// A schema's text as the client sent it, once it compiles.
fn checked_schema(schema: &RawValue) -> ApiResult<String> {
    let text = schema.get();
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(ApiError::invalid("schema", format!("must be at most {MAX_SCHEMA_BYTES} bytes of JSON")));
    }
    let parsed = serde_json::from_str(text).map_err(|e| ApiError::invalid("schema", e.to_string()))?;
    event_schemas::compile(&parsed).map_err(|problem| ApiError::invalid("schema", problem))?;
    Ok(text.to_string())
}

async fn fetch(State(state): State<AppState>, caller: Caller, PathId(name): PathId) -> ApiResult<Json<EventTypeView>> {
    let found = state.store.get_event_type(&caller.tenant_id, &name).await?;
    Ok(Json(found.ok_or(ApiError::NotFound("event type"))?.into()))
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
