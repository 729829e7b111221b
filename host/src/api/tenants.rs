//! Tenants, managed with the admin key only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{AdminCaller, ADMIN_ACTOR};
use super::endpoint_view::{not_null, present};
use super::json::ApiJson;
use super::pagination::{PageOf, Query};
use super::{audit, validate, PathId};
use crate::error::{ApiError, ApiResult};
use crate::model::{new_id, now_millis, rfc3339, Tenant};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/tenants", get(list).post(create)).route("/tenants/{id}", get(fetch).patch(update))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    #[serde(default)]
    rate_limit: Option<i64>,
}

/// Absent fields stay as they are; `"rate_limit": null` gives the tenant the server's limit again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<i64>>,
}

#[derive(Debug, Serialize)]
pub struct TenantView {
    id: String,
    name: String,
    /// The tenant's own request rate limit; `null`: the server's `tenant_rate_limit`.
    rate_limit: Option<i64>,
    created_at: String,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self { id: t.id, name: t.name, rate_limit: t.rate_limit, created_at: rfc3339(t.created_at) }
    }
}

async fn create(
    State(state): State<AppState>,
    _: AdminCaller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    validate::name("name", &body.name)?;
    let rate_limit = body.rate_limit.map(validate::tenant_rate_limit).transpose()?;
    let tenant = Tenant { id: new_id("ten"), name: body.name, rate_limit, created_at: now_millis() };
    state.store.create_tenant(&tenant).await?;
    // Recorded in the new tenant's own log, so its people can see who set it up.
    audit::record_as(
        &state,
        Some(&tenant.id),
        ADMIN_ACTOR,
        "tenant.created",
        "tenant",
        &tenant.id,
        json!({ "name": tenant.name, "rate_limit": tenant.rate_limit }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

async fn update(
    State(state): State<AppState>,
    _: AdminCaller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> ApiResult<Json<TenantView>> {
    let mut tenant = state.store.get_tenant(&id).await?.ok_or(ApiError::NotFound("tenant"))?;
    // Only what differs: the audit log then says what changed, and a limit sent again keeps the tenant's budget.
    let mut changed = Vec::new();
    if let Some(name) = not_null("name", body.name)? {
        validate::name("name", &name)?;
        if name != tenant.name {
            tenant.name = name;
            changed.push("name");
        }
    }
    if let Some(limit) = body.rate_limit {
        let limit = limit.map(validate::tenant_rate_limit).transpose()?;
        if limit != tenant.rate_limit {
            tenant.rate_limit = limit;
            changed.push("rate_limit");
        }
    }
    if !changed.is_empty() {
        if !state.store.update_tenant(&tenant).await? {
            return Err(ApiError::NotFound("tenant"));
        }
        // This node applies the new limit at once; the others within the key cache's lifetime.
        state.auth_cache.forget_rate_limit(&tenant.id);
        let details = json!({ "fields": changed, "name": tenant.name, "rate_limit": tenant.rate_limit });
        audit::record_as(&state, Some(&tenant.id), ADMIN_ACTOR, "tenant.updated", "tenant", &tenant.id, details).await;
    }
    Ok(Json(tenant.into()))
}

async fn list(State(state): State<AppState>, _: AdminCaller, mut query: Query) -> ApiResult<Json<PageOf<TenantView>>> {
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_tenants(&page.store_page()).await?;
    Ok(Json(page.respond(rows, |t| &t.id, TenantView::from)))
}

async fn fetch(State(state): State<AppState>, _: AdminCaller, PathId(id): PathId) -> ApiResult<Json<TenantView>> {
    let tenant = state.store.get_tenant(&id).await?.ok_or(ApiError::NotFound("tenant"))?;
    Ok(Json(tenant.into()))
}
