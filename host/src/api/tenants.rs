//! Tenants, managed with the admin key only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{AdminCaller, ADMIN_ACTOR};
use super::json::ApiJson;
use super::pagination::{PageOf, Query};
use super::{audit, validate, PathId};
use crate::error::{ApiError, ApiResult};
use crate::model::{new_id, now_millis, rfc3339, Tenant};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/tenants", get(list).post(create)).route("/tenants/{id}", get(fetch))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
}

#[derive(Debug, Serialize)]
pub struct TenantView {
    id: String,
    name: String,
    created_at: String,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self { id: t.id, name: t.name, created_at: rfc3339(t.created_at) }
    }
}

async fn create(
    State(state): State<AppState>,
    _: AdminCaller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    validate::name("name", &body.name)?;
    let tenant = Tenant { id: new_id("ten"), name: body.name, created_at: now_millis() };
    state.store.create_tenant(&tenant).await?;
    // Recorded in the new tenant's own log, so its people can see who set it up.
    audit::record_as(
        &state,
        Some(&tenant.id),
        ADMIN_ACTOR,
        "tenant.created",
        "tenant",
        &tenant.id,
        json!({ "name": tenant.name }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(tenant.into())))
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
