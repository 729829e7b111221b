//! The audit log: recording management actions, and `GET /api/v1/audit-log`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use super::auth::{Caller, Reader};
use super::pagination::{PageOf, Query};
use crate::error::ApiResult;
use crate::model::{new_id, now_millis, rfc3339, AuditEntry};
use crate::store::AuditFilter;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/audit-log", get(list))
}

/// Appends an entry for an action `caller` took. `details` must never hold a secret, a header value or a URL's
/// path or query (receivers often put tokens there).
///
/// The action has already been committed when this runs, so a failure to record it is logged rather than
/// turned into an error response: a client told "failed" would retry and repeat the action, and on endpoint
/// creation or rotation would lose the only copy of the new secret.
pub async fn record(
    state: &AppState,
    caller: &Caller,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    details: Value,
) {
    record_as(state, Some(&caller.tenant_id), &caller.actor, action, resource_type, resource_id, details).await;
}

/// Like [`record`] for actions not taken on behalf of a tenant (tenant creation by the admin).
pub async fn record_as(
    state: &AppState,
    tenant_id: Option<&str>,
    actor: &str,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    details: Value,
) {
    let entry = AuditEntry {
        id: new_id("aud"),
        tenant_id: tenant_id.map(str::to_string),
        actor: actor.to_string(),
        action: action.to_string(),
        resource_type: resource_type.to_string(),
        resource_id: resource_id.to_string(),
        details,
        at: now_millis(),
    };
    if let Err(e) = state.store.append_audit(&entry).await {
        tracing::error!(error = %e, action, resource_id, "could not record an audit entry");
    }
}

#[derive(Debug, Serialize)]
struct AuditView {
    id: String,
    actor: String,
    action: String,
    resource_type: String,
    resource_id: String,
    details: Value,
    at: String,
}

/// A tenant's entries; for the admin key without `Switchyard-Tenant`, the server's own.
async fn list(State(state): State<AppState>, reader: Reader, mut query: Query) -> ApiResult<Json<PageOf<AuditView>>> {
    let filter = AuditFilter { action: query.take("action")?, resource_id: query.take("resource_id")? };
    let page = query.page()?;
    query.finish()?;
    let tenant_id = match &reader {
        Reader::Tenant(caller) => Some(caller.tenant_id.as_str()),
        Reader::Server => None,
    };
    let rows = state.store.list_audit(tenant_id, &filter, &page.store_page()).await?;
    Ok(Json(page.respond(
        rows,
        |e| &e.id,
        |e| AuditView {
            id: e.id,
            actor: e.actor,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            details: e.details,
            at: rfc3339(e.at),
        },
    )))
}
