//! Endpoints: where deliveries go, with their subscriptions and signing secrets.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::endpoint_view::{not_null, CreateEndpoint, EndpointView, RotateBody, SubscriptionsBody, UpdateEndpoint};
use super::json::{ApiJson, OptionalJson};
use super::pagination::{PageOf, Query};
use super::{audit, validate, PathId};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    new_id, now_millis, Endpoint, EndpointPlugins, EndpointStatus, SecretStatus, SignatureScheme, Subscription,
};
use crate::secrets::{
    generate_private_key, generate_signing_secret, is_private_key, is_public_key, is_signing_secret, private_key,
    public_key, secret_aad, secret_hint, signing_keys,
};
use crate::store::{EndpointFilter, NewSecret};
use crate::AppState;

const DEFAULT_TIMEOUT_SECS: i64 = 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/endpoints", get(list).post(create))
        .route("/endpoints/{id}", get(fetch).patch(update).delete(remove))
        .route("/endpoints/{id}/pause", post(pause))
        .route("/endpoints/{id}/activate", post(activate))
        .route("/endpoints/{id}/rotate-secret", post(rotate_secret))
        .route("/endpoints/{id}/subscriptions", put(replace_subscriptions))
}

/// The endpoint's next secret, sealed: the one the request brings, or a generated one (an Ed25519 key when
/// `private_key`). Returns the plaintext too, for [`show_new_secret`].
fn new_secret(state: &AppState, endpoint_id: &str, provided: Option<String>, private_key: bool) -> (String, NewSecret) {
    let plaintext =
        provided.unwrap_or_else(|| if private_key { generate_private_key() } else { generate_signing_secret() });
    let id = new_id("sec");
    let sealed = NewSecret {
        ciphertext: state.master_key.seal(plaintext.as_bytes(), &secret_aad(endpoint_id, &id)),
        id,
        hint: secret_hint(&plaintext),
    };
    (plaintext, sealed)
}

/// Shows a new secret in a create or rotate response: a shared secret once, as its receivers need it; an Ed25519
/// key by its public key alone, as the private one never leaves Switchyard.
fn show_new_secret(view: &mut EndpointView, plaintext: String) {
    match private_key(&plaintext) {
        Some(key) => view.public_key = Some(public_key(&key)),
        None => view.secret = Some(plaintext),
    }
}

/// Whether the endpoint's next secret is an Ed25519 key: as `asymmetric` asks, or as the brought secret is, or
/// else `otherwise` (the active secret's kind, at a rotation).
fn wants_private_key(
    asymmetric: Option<bool>,
    provided: Option<&str>,
    scheme: SignatureScheme,
    otherwise: bool,
) -> ApiResult<bool> {
    let brought = provided.map(is_private_key);
    match (asymmetric, brought) {
        (Some(true), _) if scheme != SignatureScheme::Standard => Err(ApiError::invalid(
            "asymmetric",
            format!("only the `standard` scheme signs with an Ed25519 key (`v1a`); this endpoint's is `{scheme}`"),
        )),
        (Some(asked), Some(brought)) if asked != brought => Err(ApiError::invalid(
            "asymmetric",
            if brought {
                "is false, and the secret given is an Ed25519 key (`whsk_`)"
            } else {
                "is true, and the secret given is a shared secret, not an Ed25519 key (`whsk_`)"
            },
        )),
        (Some(asked), _) => Ok(asked),
        (None, Some(brought)) => Ok(brought),
        (None, None) => Ok(otherwise && scheme == SignatureScheme::Standard),
    }
}

/// For the audit log: whether the secret was brought or made, never the secret.
fn secret_source(provided: &Option<String>) -> &'static str {
    if provided.is_some() {
        "provided"
    } else {
        "generated"
    }
}

async fn load(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Endpoint> {
    state.store.get_endpoint(&caller.tenant_id, id).await?.ok_or(ApiError::NotFound("endpoint"))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointView>)> {
    validate::endpoint_url(&body.url, state.config.dev_mode, &state.destinations)?;
    let description = body.description.unwrap_or_default();
    validate::description("description", &description)?;
    let timeout_ms = validate::timeout_secs(body.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS))?;
    let headers = body.headers.unwrap_or_default();
    validate::headers(&headers)?;
    let (retry_schedule_ms, max_attempts) = match &body.retry {
        Some(retry) => validate::retry(&retry.schedule, retry.max_attempts).map(|(s, m)| (Some(s), m))?,
        None => (None, None),
    };
    let rate_limit = body.rate_limit.map(validate::rate_limit).transpose()?;
    let metadata = body.metadata.unwrap_or_default();
    validate::metadata(&metadata)?;
    let subscriptions =
        body.subscriptions.unwrap_or_else(|| vec![Subscription { event_type: "*".into(), filter: None }]);
    validate::subscriptions(&subscriptions)?;
    let plugins = EndpointPlugins { filter: body.filter, transform: body.transform, retry_policy: body.retry_policy };
    validate::plugin_bindings(&plugins, &state.plugins)?;
    let signature_scheme = body.signature_scheme.unwrap_or(SignatureScheme::Standard);
    validate::signature_header(signature_scheme, body.signature_header.as_ref())?;
    validate::headers_beside_signature(signature_scheme, body.signature_header.as_ref(), &headers)?;
    let provided = body.secret.map(|secret| secret.validated("secret", signature_scheme)).transpose()?;
    let asymmetric = wants_private_key(body.asymmetric, provided.as_deref(), signature_scheme, false)?;

    let now = now_millis();
    let endpoint = Endpoint {
        id: new_id("ep"),
        tenant_id: caller.tenant_id.clone(),
        url: body.url,
        description,
        status: EndpointStatus::Active,
        status_reason: None,
        timeout_ms,
        headers,
        retry_schedule_ms,
        max_attempts,
        rate_limit,
        signature_scheme,
        signature_header: body.signature_header,
        metadata,
        subscriptions,
        plugins,
        created_at: now,
        updated_at: now,
    };
    let secret_source = secret_source(&provided);
    let (plaintext, sealed) = new_secret(&state, &endpoint.id, provided, asymmetric);
    state.store.create_endpoint(&endpoint, &sealed).await?;
    let details = json!({
        "host": endpoint.url_host(),
        "subscriptions": endpoint.subscriptions.len(),
        "signature_scheme": endpoint.signature_scheme,
        "plugins": plugin_names(&endpoint.plugins),
        "secret": secret_source,
        "asymmetric": asymmetric,
    });
    audit::record(&state, &caller, "endpoint.created", "endpoint", &endpoint.id, details).await;
    let mut view = EndpointView::load(&state, endpoint).await?;
    show_new_secret(&mut view, plaintext);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut query: Query,
) -> ApiResult<Json<PageOf<EndpointView>>> {
    let filter = EndpointFilter { status: query.parsed("status")?, event_type: query.event_type("event_type")? };
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_endpoints(&caller.tenant_id, &filter, &page.store_page()).await?;
    let mut secrets = Vec::with_capacity(rows.len());
    for endpoint in rows.iter().take(page.limit as usize) {
        secrets.push(state.store.list_secrets(&caller.tenant_id, &endpoint.id).await?);
    }
    let mut secrets = secrets.into_iter();
    let now = now_millis();
    Ok(Json(page.respond(rows, |e| &e.id, |e| EndpointView::new(e, secrets.next().unwrap_or_default(), now))))
}

async fn fetch(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<Json<EndpointView>> {
    let endpoint = load(&state, &caller, &id).await?;
    Ok(Json(EndpointView::load(&state, endpoint).await?))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<UpdateEndpoint>,
) -> ApiResult<Json<EndpointView>> {
    if body.subscriptions.is_some() {
        return Err(ApiError::invalid(
            "subscriptions",
            "cannot be changed by PATCH; use PUT /api/v1/endpoints/{id}/subscriptions",
        ));
    }
    let mut endpoint = load(&state, &caller, &id).await?;
    let mut changed = Vec::new();
    if let Some(url) = not_null("url", body.url)? {
        validate::endpoint_url(&url, state.config.dev_mode, &state.destinations)?;
        endpoint.url = url;
        changed.push("url");
    }
    if let Some(description) = not_null("description", body.description)? {
        validate::description("description", &description)?;
        endpoint.description = description;
        changed.push("description");
    }
    if let Some(secs) = not_null("timeout_secs", body.timeout_secs)? {
        endpoint.timeout_ms = validate::timeout_secs(secs)?;
        changed.push("timeout_secs");
    }
    if let Some(headers) = not_null("headers", body.headers)? {
        validate::headers(&headers)?;
        endpoint.headers = headers;
        changed.push("headers");
    }
    if let Some(retry) = body.retry {
        (endpoint.retry_schedule_ms, endpoint.max_attempts) = match retry {
            Some(retry) => validate::retry(&retry.schedule, retry.max_attempts).map(|(s, m)| (Some(s), m))?,
            None => (None, None),
        };
        changed.push("retry");
    }
    // `null` lifts the limit.
    if let Some(limit) = body.rate_limit {
        endpoint.rate_limit = limit.map(validate::rate_limit).transpose()?;
        changed.push("rate_limit");
    }
    let mut scheme_changed = false;
    if let Some(scheme) = not_null("signature_scheme", body.signature_scheme)? {
        if scheme != endpoint.signature_scheme {
            active_secret_fits(&state, &endpoint, scheme).await?;
        }
        scheme_changed = scheme != endpoint.signature_scheme;
        endpoint.signature_scheme = scheme;
        changed.push("signature_scheme");
    }
    // `null` puts the signature back in the scheme's default header. A header set for another scheme does not
    // carry over: its prefix or timestamp unit would not fit, and its receiver reads the other scheme's format.
    if let Some(header) = body.signature_header {
        validate::signature_header(endpoint.signature_scheme, header.as_ref())?;
        endpoint.signature_header = header;
        changed.push("signature_header");
    } else if scheme_changed && endpoint.signature_header.take().is_some() {
        changed.push("signature_header");
    }
    if changed.iter().any(|field| ["headers", "signature_scheme", "signature_header"].contains(field)) {
        validate::headers_beside_signature(
            endpoint.signature_scheme,
            endpoint.signature_header.as_ref(),
            &endpoint.headers,
        )?;
    }
    if let Some(metadata) = not_null::<BTreeMap<_, _>>("metadata", body.metadata)? {
        validate::metadata(&metadata)?;
        endpoint.metadata = metadata;
        changed.push("metadata");
    }
    let plugins = &mut endpoint.plugins;
    // Only the bindings this request sets are checked against the plugins loaded here. One set earlier may be
    // missing on this node (each node loads its own plugins directory) and must not block unrelated changes.
    let mut rebound = EndpointPlugins::default();
    for (field, update, slot, checked) in [
        ("filter", body.filter, &mut plugins.filter, &mut rebound.filter),
        ("transform", body.transform, &mut plugins.transform, &mut rebound.transform),
        ("retry_policy", body.retry_policy, &mut plugins.retry_policy, &mut rebound.retry_policy),
    ] {
        // `null` unbinds; absent leaves the binding as it is.
        if let Some(binding) = update {
            checked.clone_from(&binding);
            *slot = binding;
            changed.push(field);
        }
    }
    validate::plugin_bindings(&rebound, &state.plugins)?;
    if !changed.is_empty() {
        endpoint.updated_at = now_millis();
        if !state.store.update_endpoint(&endpoint).await? {
            return Err(ApiError::NotFound("endpoint"));
        }
        let details = json!({ "fields": changed, "host": endpoint.url_host() });
        audit::record(&state, &caller, "endpoint.updated", "endpoint", &endpoint.id, details).await;
    }
    Ok(Json(EndpointView::load(&state, endpoint).await?))
}

/// Role → plugin name, for the audit log (configs may hold anything, so they stay out).
fn plugin_names(plugins: &EndpointPlugins) -> Value {
    plugins.bound().map(|(role, binding)| (role.to_string(), Value::String(binding.plugin.clone()))).collect()
}

async fn remove(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<StatusCode> {
    if !state.store.delete_endpoint(&caller.tenant_id, &id, now_millis()).await? {
        return Err(ApiError::NotFound("endpoint"));
    }
    audit::record(&state, &caller, "endpoint.deleted", "endpoint", &id, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_status(state: &AppState, caller: &Caller, id: &str, status: EndpointStatus) -> ApiResult<EndpointView> {
    // Activation clears a reason such as "receiver answered 410 Gone"; a pause has no reason to give.
    let before = state
        .store
        .set_endpoint_status(&caller.tenant_id, id, status, None, now_millis())
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let action = if status == EndpointStatus::Active { "endpoint.activated" } else { "endpoint.paused" };
    // The endpoint forgets the status it had and why (a 410's disable, say); the log keeps them.
    let details = json!({ "previous_status": before.status.as_str(), "previous_reason": before.reason });
    audit::record(state, caller, action, "endpoint", id, details).await;
    EndpointView::load(state, load(state, caller, id).await?).await
}

async fn pause(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<Json<EndpointView>> {
    Ok(Json(set_status(&state, &caller, &id, EndpointStatus::Paused).await?))
}

async fn activate(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<Json<EndpointView>> {
    let view = set_status(&state, &caller, &id, EndpointStatus::Active).await?;
    // Deliveries held while the endpoint was paused or disabled are due now.
    state.dispatch_wakeup.notify_one();
    Ok(Json(view))
}

/// A scheme signs with the active secret only if it has that scheme's form: `whsec_` for the schemes whose
/// receivers' libraries expect it (or an Ed25519 key for `standard`), and for `hmac` anything but an Ed25519 key,
/// which has no HMAC form. Otherwise every delivery would carry a signature no receiver verifies, or none.
async fn active_secret_fits(state: &AppState, endpoint: &Endpoint, scheme: SignatureScheme) -> ApiResult<()> {
    let sealed = state.store.signing_secrets(&endpoint.id, now_millis()).await?;
    let keys = signing_keys(&state.master_key, &endpoint.id, &sealed)
        .map_err(|problem| ApiError::Unavailable(problem.to_string()))?;
    let Some(active) = keys.first() else { return Ok(()) };
    let rotate = format!("POST /api/v1/endpoints/{}/rotate-secret", endpoint.id);
    let problem = match scheme {
        SignatureScheme::Standard if is_signing_secret(active) || private_key(active).is_some() => return Ok(()),
        SignatureScheme::Stripe if is_signing_secret(active) => return Ok(()),
        SignatureScheme::Hmac if private_key(active).is_none() => return Ok(()),
        _ if private_key(active).is_some() => format!(
            "`{scheme}` signs with a shared secret and this endpoint's active secret is an Ed25519 key: rotate to a \
             shared one ({rotate} with {{\"asymmetric\": false}}), then change the scheme"
        ),
        _ => format!(
            "`{scheme}` needs a `whsec_` secret and this endpoint's active secret is not one: rotate the secret \
             ({rotate} makes one), then change the scheme"
        ),
    };
    Err(ApiError::invalid("signature_scheme", problem))
}

async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> ApiResult<Json<EndpointView>> {
    let grace = match &body.grace_period {
        Some(text) => validate::grace_period(text)?,
        None => state.config.secret_grace,
    };
    let endpoint = load(&state, &caller, &id).await?;
    let provided = body.secret.map(|secret| secret.validated("secret", endpoint.signature_scheme)).transpose()?;
    let secrets = state.store.list_secrets(&caller.tenant_id, &id).await?;
    let active_is_key = secrets.iter().any(|s| s.status == SecretStatus::Active && is_public_key(&s.hint));
    let asymmetric = wants_private_key(body.asymmetric, provided.as_deref(), endpoint.signature_scheme, active_is_key)?;
    let now = now_millis();
    let retire_until = now.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    let secret_source = secret_source(&provided);
    let (plaintext, sealed) = new_secret(&state, &id, provided, asymmetric);
    let stored = state
        .store
        .rotate_secret(&caller.tenant_id, &id, &sealed, retire_until, now)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let details = json!({
        "version": stored.version,
        "grace_period_secs": grace.as_secs(),
        "secret": secret_source,
        "asymmetric": asymmetric,
    });
    audit::record(&state, &caller, "endpoint.secret_rotated", "endpoint", &id, details).await;
    let mut view = EndpointView::load(&state, endpoint).await?;
    show_new_secret(&mut view, plaintext);
    Ok(Json(view))
}

async fn replace_subscriptions(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<SubscriptionsBody>,
) -> ApiResult<Json<EndpointView>> {
    validate::subscriptions(&body.subscriptions)?;
    if !state.store.replace_subscriptions(&caller.tenant_id, &id, &body.subscriptions, now_millis()).await? {
        return Err(ApiError::NotFound("endpoint"));
    }
    let details = json!({ "subscriptions": body.subscriptions.len() });
    audit::record(&state, &caller, "endpoint.subscriptions_replaced", "endpoint", &id, details).await;
    Ok(Json(EndpointView::load(&state, load(&state, &caller, &id).await?).await?))
}
