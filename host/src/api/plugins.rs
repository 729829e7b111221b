//! Plugins: the WebAssembly components in the plugins directory, their loaded versions and call statistics.
//! Installation-wide code, so every route takes the admin key.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use super::auth::{AdminCaller, ADMIN_ACTOR};
use super::json::read_limited;
use super::{audit, PathId};
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, rfc3339};
use crate::plugin::sync::{self, InstallError};
use crate::plugin::{valid_plugin_name, LoadFailure, LogLine, PluginKind, PluginSnapshot, VersionStatsSnapshot};
use crate::AppState;

/// Largest component accepted by upload.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

pub fn router() -> Router<AppState> {
    Router::new().route("/plugins", get(list)).route("/plugins/{name}", get(fetch).put(upload).delete(remove))
}

#[derive(Debug, Serialize)]
struct PluginView {
    name: String,
    /// The sha256 new deliveries use; null when no version has loaded.
    latest: Option<String>,
    /// Newest first.
    versions: Vec<VersionView>,
    last_load_error: Option<LoadErrorView>,
}

#[derive(Debug, Serialize)]
struct VersionView {
    sha256: String,
    size_bytes: u64,
    interfaces: Vec<PluginKind>,
    loaded_at: String,
    calls: u64,
    errors: u64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    dropped_log_lines: u64,
    /// Oldest first.
    recent_logs: Vec<LogView>,
}

#[derive(Debug, Serialize)]
pub struct LogView {
    pub at: String,
    pub level: &'static str,
    pub message: String,
    pub event_id: Option<String>,
    pub version: String,
}

#[derive(Debug, Serialize)]
struct LoadErrorView {
    message: String,
    sha256: Option<String>,
    at: String,
}

fn millis(at_ms: u64) -> String {
    rfc3339(i64::try_from(at_ms).unwrap_or(i64::MAX))
}

impl From<LogLine> for LogView {
    fn from(line: LogLine) -> Self {
        LogView {
            at: millis(line.at_ms),
            level: line.level,
            message: line.message,
            event_id: line.event_id,
            version: line.version,
        }
    }
}

impl From<VersionStatsSnapshot> for VersionView {
    fn from(v: VersionStatsSnapshot) -> Self {
        VersionView {
            sha256: v.sha256,
            size_bytes: v.size_bytes,
            interfaces: v.kinds,
            loaded_at: millis(v.loaded_at_ms),
            calls: v.calls,
            errors: v.errors,
            p50_us: v.p50_us,
            p99_us: v.p99_us,
            dropped_log_lines: v.dropped_log_lines,
            recent_logs: v.recent_logs.into_iter().map(LogView::from).collect(),
        }
    }
}

impl From<LoadFailure> for LoadErrorView {
    fn from(f: LoadFailure) -> Self {
        LoadErrorView { message: f.message, sha256: f.sha256, at: millis(f.at_ms) }
    }
}

impl From<PluginSnapshot> for PluginView {
    fn from(p: PluginSnapshot) -> Self {
        PluginView {
            name: p.name,
            latest: p.latest,
            versions: p.versions.into_iter().map(VersionView::from).collect(),
            last_load_error: p.last_load_error.map(LoadErrorView::from),
        }
    }
}

async fn list(State(state): State<AppState>, _: AdminCaller) -> Json<serde_json::Value> {
    let plugins: Vec<PluginView> = state.plugins.snapshots().into_iter().map(PluginView::from).collect();
    Json(json!({ "data": plugins }))
}

async fn fetch(State(state): State<AppState>, _: AdminCaller, PathId(name): PathId) -> ApiResult<Json<PluginView>> {
    let snapshot = state.plugins.snapshot(&name).ok_or(ApiError::NotFound("plugin"))?;
    Ok(Json(snapshot.into()))
}

fn checked_name(name: &str) -> ApiResult<()> {
    if !valid_plugin_name(name) {
        return Err(ApiError::invalid("name", "must be 1 to 64 letters, digits, `-` or `_`"));
    }
    Ok(())
}

/// Installed on this node as [`sync::install`] says (a component that does not load never reaches the
/// directory), then stored for the other nodes to install.
async fn upload(
    State(state): State<AppState>,
    _: AdminCaller,
    PathId(name): PathId,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<PluginView>)> {
    checked_name(&name)?;
    let bytes = read_limited(&headers, body, MAX_COMPONENT_BYTES).await?;
    if bytes.is_empty() {
        return Err(ApiError::Invalid { field: None, message: "the body must be a WebAssembly component".into() });
    }
    let _changing = state.plugins.changing().await;
    let existed = state.plugins.latest(&name).is_some();
    let at = now_millis();
    let version = match sync::install(&state.plugins, &state.config.plugins_dir, &name, bytes.clone(), at).await {
        Ok(version) => version,
        Err(e @ InstallError::Load(_)) => return Err(ApiError::Invalid { field: None, message: e.to_string() }),
        // Live until a restart, which would load the previous file: say so rather than pretend.
        Err(e @ InstallError::Write { .. }) => return Err(ApiError::internal(e)),
    };
    // For the other nodes, and for this one's next start. Live here already: a failure says so.
    if let Err(e) = state.store.put_plugin_upload(&name, version.sha256(), &bytes, at).await {
        tracing::error!(plugin = %name, error = %e, "plugin installed on this node only: could not store it for the others");
        return Err(e.into());
    }
    let details = json!({ "sha256": version.sha256(), "interfaces": version.kinds() });
    audit::record_as(&state, None, ADMIN_ACTOR, "plugin.uploaded", "plugin", &name, details).await;
    let snapshot = state.plugins.snapshot(&name).ok_or(ApiError::NotFound("plugin"))?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(snapshot.into())))
}

/// Refused while any endpoint binds the plugin: its deliveries would fail until it came back.
async fn remove(State(state): State<AppState>, _: AdminCaller, PathId(name): PathId) -> ApiResult<StatusCode> {
    checked_name(&name)?;
    let bound = state.store.endpoints_binding_plugin(&name).await?;
    if !bound.is_empty() {
        let endpoints: Vec<&str> = bound.iter().take(10).map(|(_, endpoint)| endpoint.as_str()).collect();
        return Err(ApiError::Conflict(format!(
            "plugin `{name}` is bound by {} endpoint(s) ({}); unbind it first",
            bound.len(),
            endpoints.join(", ")
        )));
    }
    let _changing = state.plugins.changing().await;
    let uploads = state.store.plugin_uploads().await?;
    let uploaded = uploads.into_iter().find(|upload| upload.name == name && !upload.deleted);
    // Conditional: a version uploaded through another node meanwhile is not deleted unseen. First, so that a
    // refusal leaves this node as it was; if removing the file then fails, this node's sync tries again.
    if let Some(uploaded) = &uploaded {
        if !state.store.delete_plugin_upload(&name, &uploaded.sha256, now_millis()).await? {
            return Err(ApiError::Conflict(format!(
                "plugin `{name}` was uploaded again through another node meanwhile; delete it again to delete that version"
            )));
        }
    }
    let removed_here = sync::uninstall(&state.plugins, &state.config.plugins_dir, &name)
        .await
        .map_err(|e| ApiError::internal(format!("cannot remove the file of plugin `{name}`: {e}")))?;
    if uploaded.is_none() && !removed_here {
        return Err(ApiError::NotFound("plugin"));
    }
    audit::record_as(&state, None, ADMIN_ACTOR, "plugin.deleted", "plugin", &name, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}
