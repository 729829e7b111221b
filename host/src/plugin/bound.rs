//! Running the plugins an endpoint binds: from the domain's event, endpoint and binding to a plugin call and back.
//!
//! Shared by the dispatcher (real deliveries) and the simulate endpoint (a dry run), so a simulation runs exactly
//! what a delivery would. Nothing here touches the store: the caller records what comes back.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::{Attempt, CallError, FilterDecision, PluginKind, PluginRegistry, PluginVersion, RetryDecision};
use crate::metrics::Metrics;
use crate::model::{self, PluginBinding, PluginUse, PreparedRequest};

/// What the filter and transform decided for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preparation {
    /// Send this request (a `None` body means the event's envelope).
    Send(PreparedRequest),
    /// The filter dropped the event; `prepared` carries the versions that decided.
    Drop { prepared: PreparedRequest, reason: String },
    /// A plugin could not run or failed: the attempt fails with this text and is retried per schedule.
    Failed { prepared: PreparedRequest, error: String },
}

/// Runs the endpoint's filter, then its transform. Versions are resolved once, at the start of each call, so a
/// hot swap in the middle of a preparation never mixes versions within one call.
pub async fn prepare(
    registry: &PluginRegistry,
    metrics: &Metrics,
    event: &model::Event,
    endpoint: &model::Endpoint,
) -> Preparation {
    let mut prepared = PreparedRequest::default();
    if endpoint.plugins.filter.is_none() && endpoint.plugins.transform.is_none() {
        return Preparation::Send(prepared);
    }
    // A copy of the payload for the guests, made only for endpoints that run one.
    let guest_event = guest_event(event);

    if let Some(binding) = &endpoint.plugins.filter {
        let version = match resolve(registry, binding, PluginKind::Filter) {
            Ok(version) => version,
            Err(error) => return Preparation::Failed { prepared, error },
        };
        prepared.plugin_versions.insert("filter".into(), plugin_use(&version));
        let guest_endpoint = guest_endpoint(endpoint, binding);
        let decided = counted(metrics, &version, PluginKind::Filter, || version.filter(&guest_event, &guest_endpoint));
        match decided.await {
            Ok(FilterDecision::Keep) => {}
            Ok(FilterDecision::Drop) => {
                let reason = format!("dropped by filter `{}` ({})", version.name(), short(version.sha256()));
                return Preparation::Drop { prepared, reason };
            }
            Err(e) => {
                let error = call_failed("filter", &version, &e);
                return Preparation::Failed { prepared, error };
            }
        }
    }

    if let Some(binding) = &endpoint.plugins.transform {
        let version = match resolve(registry, binding, PluginKind::Transform) {
            Ok(version) => version,
            Err(error) => return Preparation::Failed { prepared, error },
        };
        prepared.plugin_versions.insert("transform".into(), plugin_use(&version));
        let guest_endpoint = guest_endpoint(endpoint, binding);
        let transformed =
            counted(metrics, &version, PluginKind::Transform, || version.transform(&guest_event, &guest_endpoint));
        match transformed.await {
            Ok(request) => {
                prepared.body = Some(request.body);
                prepared.content_type = Some(request.content_type);
                prepared.headers = request.headers;
            }
            Err(e) => {
                let error = call_failed("transform", &version, &e);
                return Preparation::Failed { prepared, error };
            }
        }
    }
    Preparation::Send(prepared)
}

/// Asks the endpoint's retry policy about a failed attempt. `Err` is the text to record when the policy could not
/// answer; the caller then applies the default schedule.
pub async fn decide_retry(
    registry: &PluginRegistry,
    metrics: &Metrics,
    binding: &PluginBinding,
    attempt: &Attempt,
    endpoint: &model::Endpoint,
) -> (Option<PluginUse>, Result<RetryDecision, String>) {
    let version = match resolve(registry, binding, PluginKind::RetryPolicy) {
        Ok(version) => version,
        Err(error) => return (None, Err(error)),
    };
    let guest_endpoint = guest_endpoint(endpoint, binding);
    let decision =
        counted(metrics, &version, PluginKind::RetryPolicy, || version.retry_policy(attempt, &guest_endpoint))
            .await
            .map_err(|e| call_failed("retry policy", &version, &e));
    (Some(plugin_use(&version)), decision)
}

/// Runs `call`, and once more (in a fresh sandbox) if it missed its deadline or found every instance slot busy.
/// The deadline is wall-clock time: on a loaded host a descheduled call can miss it through no fault of the plugin,
/// and failing the attempt for that would delay the delivery by a whole retry step. A plugin that really loops
/// fails both times, at the cost of a second deadline.
pub async fn once_more_if_starved<T, F, Fut>(mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    match call().await {
        Err(CallError::Deadline(_) | CallError::Busy) => call().await,
        answer => answer,
    }
}

/// [`once_more_if_starved`], counted in `metrics` as one call.
async fn counted<T, F, Fut>(
    metrics: &Metrics,
    version: &PluginVersion,
    kind: PluginKind,
    call: F,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let started = Instant::now();
    let answer = once_more_if_starved(call).await;
    metrics.plugin_called(version.name(), kind.as_str(), answer.is_ok(), started.elapsed());
    answer
}

/// The version a binding uses now: its pinned sha256, or the latest loaded version. It must export `kind`.
pub fn resolve(
    registry: &PluginRegistry,
    binding: &PluginBinding,
    kind: PluginKind,
) -> Result<Arc<PluginVersion>, String> {
    let version =
        registry.resolve(&binding.plugin, binding.version.as_deref()).ok_or_else(|| match &binding.version {
            Some(pin) => format!("{kind} plugin `{}` has no loaded version {pin}", binding.plugin),
            None => format!("{kind} plugin `{}` is not loaded", binding.plugin),
        })?;
    if !version.exports(kind) {
        return Err(format!("plugin `{}` ({}) does not export `{kind}`", binding.plugin, short(version.sha256())));
    }
    Ok(version)
}

pub fn guest_event(event: &model::Event) -> super::Event {
    super::Event {
        id: event.id.clone(),
        event_type: event.event_type.clone(),
        tenant: event.tenant_id.clone(),
        timestamp_ms: u64::try_from(event.received_at).unwrap_or(0),
        payload: event.data.get().to_string(),
    }
}

pub fn guest_endpoint(endpoint: &model::Endpoint, binding: &PluginBinding) -> super::Endpoint {
    super::Endpoint { id: endpoint.id.clone(), url: endpoint.url.clone(), config: binding.config.to_string() }
}

fn plugin_use(version: &PluginVersion) -> PluginUse {
    PluginUse { plugin: version.name().to_string(), sha256: version.sha256().to_string() }
}

fn call_failed(role: &str, version: &PluginVersion, error: &super::CallError) -> String {
    format!("{role} plugin `{}` ({}): {error}", version.name(), short(version.sha256()))
}

/// The first 12 hex digits: enough to tell versions apart in a message.
fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}
