//! `POST /endpoints/{id}/simulate`: what a delivery of an event to this endpoint would be, computed by the same
//! code a real delivery runs (subscription match, filter, transform, signing) without storing or sending anything.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;

use super::audit;
use super::auth::Caller;
use super::endpoint_view::{is_credential_header, REDACTED};
use super::events::{body_limit, check_schemas, to_event, PublishBody};
use super::json::parse_body;
use super::plugins::LogView;
use super::PathId;
use crate::dispatch::send;
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, Event, PluginUse, PreparedRequest};
use crate::plugin::bound::{self, Preparation};
use crate::routing::FilterCache;
use crate::{secrets, signing, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/endpoints/{id}/simulate", post(simulate))
}

#[derive(Debug, Serialize)]
struct SimulationView {
    /// Whether a subscription of the endpoint selects the event (type pattern and JSONPath filter).
    matched: bool,
    /// `keep` or `drop` when a filter plugin is bound and ran; null otherwise.
    filter_decision: Option<&'static str>,
    /// Why the delivery would be dropped, when it would.
    dropped_reason: Option<String>,
    /// A plugin failure: a real delivery would record this on a failed attempt and retry.
    plugin_error: Option<String>,
    plugin_versions: BTreeMap<String, PluginUse>,
    /// The request that would be sent; null when nothing would be sent.
    request: Option<RequestView>,
    /// Log lines the plugins wrote during this simulation.
    logs: Vec<LogView>,
}

#[derive(Debug, Serialize)]
struct RequestView {
    url: String,
    /// Every header, signature headers included; credentials among the custom ones redacted, as on the endpoint.
    headers: BTreeMap<String, String>,
    /// The body as text when it is UTF-8, else null (see `body_base64`).
    body: Option<String>,
    body_base64: String,
}

async fn simulate(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<SimulationView>> {
    let body: PublishBody = parse_body(&headers, body, body_limit(&state.config)).await?;
    let endpoint = state.store.get_endpoint(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("endpoint"))?;
    let now = now_millis();
    let event = to_event(body, "", None, &caller, state.config.max_payload_bytes)?;
    check_schemas(&state, &caller.tenant_id, std::slice::from_ref(&event), |_| "data".into()).await?;
    let endpoints = std::slice::from_ref(&endpoint);
    let verdicts =
        state.filter_work.verdicts(&caller.tenant_id, endpoints, std::slice::from_ref(&event)).await.map_err(
            |over| ApiError::PayloadTooLarge {
                field: Some("data".into()),
                message: format!("{over}; send less data, or use fewer or narrower filters"),
            },
        )?;
    let matched = !FilterCache::default().matching_endpoints_given(endpoints, &event, &verdicts[0]).is_empty();
    let mut view = SimulationView {
        matched,
        filter_decision: None,
        dropped_reason: None,
        plugin_error: None,
        plugin_versions: BTreeMap::new(),
        request: None,
        logs: Vec::new(),
    };
    if !matched {
        return Ok(Json(view));
    }

    let prepared = match bound::prepare(&state.plugins, &state.metrics, &event, &endpoint).await {
        Preparation::Send(prepared) => Some(prepared),
        Preparation::Drop { prepared, reason } => {
            view.plugin_versions = prepared.plugin_versions;
            view.dropped_reason = Some(reason);
            view.filter_decision = Some("drop");
            None
        }
        Preparation::Failed { prepared, error } => {
            view.plugin_versions = prepared.plugin_versions;
            view.plugin_error = Some(error);
            None
        }
    };
    if let Some(prepared) = prepared {
        if endpoint.plugins.filter.is_some() {
            view.filter_decision = Some("keep");
        }
        view.request = Some(signed_request(&state, &endpoint, &event, &prepared, now).await?);
        view.plugin_versions = prepared.plugin_versions;
        // The answer carries signatures the receiver accepts (for a few minutes, by their timestamp) over data the
        // caller chose, and nothing else records it: the log ties any such request back to who asked.
        let details = serde_json::json!({ "event_type": event.event_type, "webhook_id": event.id });
        audit::record(&state, &caller, "endpoint.simulated", "endpoint", &endpoint.id, details).await;
    }
    view.logs = logs_of(&state, &view.plugin_versions, &event.id);
    Ok(Json(view))
}

/// The body and headers exactly as the dispatcher would build them, signed with the endpoint's live secrets.
async fn signed_request(
    state: &AppState,
    endpoint: &crate::model::Endpoint,
    event: &Event,
    prepared: &PreparedRequest,
    now: i64,
) -> ApiResult<RequestView> {
    let sealed = state.store.signing_secrets(&endpoint.id, now).await?;
    let keys = secrets::signing_keys(&state.master_key, &endpoint.id, &sealed)
        .map_err(|problem| ApiError::Unavailable(problem.to_string()))?;
    let body = prepared.body.clone().unwrap_or_else(|| event.envelope().into_bytes());
    let signature = signing::Signer::new(endpoint.signature_scheme, &keys)
        .with_header(endpoint.signature_header.as_ref(), &secrets::signing_versions(&sealed))
        .headers(&event.id, now, &body);
    let identity = send::RequestIdentity { event_id: &event.id, event_type: &event.event_type, attempt: None };
    let signed: Vec<_> = signature.iter().map(|(name, _)| name.clone()).collect();
    let headers = send::request_headers(endpoint, Some(prepared), identity, signature)
        .iter()
        .map(|(name, value)| {
            // Switchyard's own headers (the signatures, in the header an `hmac` endpoint names too) are shown; they
            // are what a simulation is for.
            let ours = send::is_reserved_header(name.as_str()) || signed.contains(name);
            let value = if is_credential_header(name.as_str()) && !ours {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.to_string(), value)
        })
        .collect();
    Ok(RequestView {
        url: endpoint.url.clone(),
        headers,
        body_base64: base64::engine::general_purpose::STANDARD.encode(&body),
        body: String::from_utf8(body).ok(),
    })
}

/// The simulated event's id is fresh, so the lines tagged with it in each version's log ring are this run's. A
/// version bound in two roles has one ring, read once.
fn logs_of(state: &AppState, versions: &BTreeMap<String, PluginUse>, event_id: &str) -> Vec<LogView> {
    let used: BTreeSet<(&str, &str)> =
        versions.values().map(|used| (used.plugin.as_str(), used.sha256.as_str())).collect();
    let mut lines: Vec<LogView> = used
        .into_iter()
        .filter_map(|(plugin, sha256)| state.plugins.version(plugin, sha256))
        .flat_map(|version| version.stats().recent_logs)
        .filter(|line| line.event_id.as_deref() == Some(event_id))
        .map(LogView::from)
        .collect();
    lines.sort_by(|a, b| a.at.cmp(&b.at));
    lines
}
