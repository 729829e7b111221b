//! Tenant API keys. The key text is returned once, at creation; only its hash and a short prefix are stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{covers, generate_key, hash_key, key_prefix, networked_key_hash, Caller, KEY_PREFIX_LEN};
use super::endpoint_view::{not_null, present};
use super::json::ApiJson;
use super::pagination::{PageOf, Query};
use super::{audit, validate, PathId};
use crate::config::{parse_network, shown_entry};
use crate::error::{ApiError, ApiResult};
use crate::model::{new_id, now_millis, rfc3339, ApiKey, KeyScope};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{id}", get(show).patch(change).delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    /// `all` when absent, as every key was before scopes. `null` is refused: a client that meant a narrow key
    /// and sent an unset variable would get the widest one.
    #[serde(default, deserialize_with = "present")]
    scope: Option<Option<String>>,
    /// Where the key may be used from, as CIDR blocks or addresses; absent or empty: anywhere.
    #[serde(default)]
    allowed_networks: Vec<String>,
}

/// A key's name and networks may change; its scope may not (it is part of the key's text and hash).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeKey {
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    allowed_networks: Option<Option<Vec<String>>>,
}

/// More than enough for a company's egress ranges; a longer list is a mistake, and each request checks it.
const MAX_ALLOWED_NETWORKS: usize = 100;

#[derive(Debug, Serialize)]
pub struct KeyView {
    id: String,
    name: String,
    prefix: String,
    scope: KeyScope,
    allowed_networks: Vec<IpNet>,
    created_at: String,
    revoked_at: Option<String>,
    /// Present only in the creation response.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scope: k.scope,
            allowed_networks: k.allowed_networks,
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
            key: None,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<KeyView>)> {
    validate::name("name", &body.name)?;
    let scope = match body.scope {
        None => KeyScope::All,
        Some(None) => {
            return Err(ApiError::invalid(
                "scope",
                "must be \"all\", \"publish\" or \"read\", not null; omit it for \"all\"",
            ))
        }
        Some(Some(text)) => text.parse().map_err(|message: String| ApiError::invalid("scope", message))?,
    };
    let allowed_networks = allowed_networks(&body.allowed_networks)?;
    within_callers_networks(&caller, &allowed_networks)?;
    let text = generate_key(key_prefix(scope));
    let key_hash = if allowed_networks.is_empty() { hash_key(&text) } else { networked_key_hash(&hash_key(&text)) };
    let key = ApiKey {
        id: new_id("key"),
        tenant_id: caller.tenant_id.clone(),
        name: body.name,
        prefix: text.chars().take(KEY_PREFIX_LEN).collect(),
        key_hash,
        scope,
        allowed_networks,
        created_at: now_millis(),
        revoked_at: None,
    };
    state.store.create_api_key(&key).await?;
    let details =
        json!({ "name": key.name, "prefix": key.prefix, "scope": key.scope, "allowed_networks": key.allowed_networks });
    audit::record(&state, &caller, "api_key.created", "api_key", &key.id, details).await;
    let mut view = KeyView::from(key);
    view.key = Some(text);
    Ok((StatusCode::CREATED, Json(view)))
}

/// A key limited to networks makes keys limited to them too, or whoever took it inside once would make one that
/// works from anywhere.
fn within_callers_networks(caller: &Caller, networks: &[IpNet]) -> ApiResult<()> {
    if caller.allowed_networks.is_empty() {
        return Ok(());
    }
    let within = |network: &IpNet| caller.allowed_networks.iter().any(|own| covers(own, network));
    if networks.is_empty() || !networks.iter().all(within) {
        let own: Vec<String> = caller.allowed_networks.iter().map(ToString::to_string).collect();
        return Err(ApiError::invalid(
            "allowed_networks",
            format!("the key making this one is limited to {}: list networks within them", own.join(", ")),
        ));
    }
    Ok(())
}

fn allowed_networks(texts: &[String]) -> ApiResult<Vec<IpNet>> {
    let field = "allowed_networks";
    if texts.len() > MAX_ALLOWED_NETWORKS {
        return Err(ApiError::invalid(field, format!("at most {MAX_ALLOWED_NETWORKS} networks are allowed")));
    }
    let mut networks: Vec<IpNet> = Vec::with_capacity(texts.len());
    for text in texts {
        let network = parse_network(text.trim()).ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("`{}` is not a network such as 203.0.113.0/24, 2001:db8::/32 or 192.0.2.7", shown_entry(text)),
            )
        })?;
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    Ok(networks)
}

async fn list(State(state): State<AppState>, caller: Caller, mut query: Query) -> ApiResult<Json<PageOf<KeyView>>> {
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_api_keys(&caller.tenant_id, &page.store_page()).await?;
    Ok(Json(page.respond(rows, |k| &k.id, KeyView::from)))
}

async fn show(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<Json<KeyView>> {
    let key = state.store.get_api_key(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("API key"))?;
    Ok(Json(KeyView::from(key)))
}

/// Renames a key or moves it to other networks, without handing its users a new key. A key usable from anywhere
/// that gets networks moves to the labelled hash ([`networked_key_hash`]) so older nodes refuse it from then on;
/// that cannot be undone without the key's text, so a key once limited stays limited (`[]` is refused).
async fn change(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(body): ApiJson<ChangeKey>,
) -> ApiResult<Json<KeyView>> {
    let before = state.store.get_api_key(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("API key"))?;
    let mut key = before.clone();
    if key.revoked_at.is_some() {
        return Err(ApiError::Conflict(format!("API key `{id}` is revoked; make a new one")));
    }
    let mut changed = Vec::new();
    if let Some(name) = not_null("name", body.name)? {
        validate::name("name", &name)?;
        if name != key.name {
            key.name = name;
            changed.push("name");
        }
    }
    if let Some(texts) = not_null("allowed_networks", body.allowed_networks)? {
        let networks = allowed_networks(&texts)?;
        if networks.is_empty() && !key.allowed_networks.is_empty() {
            return Err(ApiError::invalid(
                "allowed_networks",
                "a key limited to networks stays limited: list the networks it may be used from, or make a new \
                 key usable from anywhere and revoke this one",
            ));
        }
        within_callers_networks(&caller, &networks)?;
        if networks != key.allowed_networks {
            if key.allowed_networks.is_empty() {
                key.key_hash = networked_key_hash(&key.key_hash);
            }
            key.allowed_networks = networks;
            changed.push("allowed_networks");
        }
    }
    if !changed.is_empty() {
        if !state.store.update_api_key(&before, &key).await? {
            return Err(ApiError::Conflict(format!(
                "API key `{id}` was revoked or changed while this change was made; read it again and retry"
            )));
        }
        // Cached keys carry their networks and hash.
        state.auth_cache.forget_keys();
        let details = json!({ "fields": changed, "name": key.name, "allowed_networks": key.allowed_networks });
        audit::record(&state, &caller, "api_key.updated", "api_key", &key.id, details).await;
    }
    Ok(Json(KeyView::from(key)))
}

async fn revoke(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<StatusCode> {
    if !state.store.revoke_api_key(&caller.tenant_id, &id, now_millis()).await? {
        return Err(ApiError::NotFound("API key"));
    }
    state.auth_cache.forget_keys();
    audit::record(&state, &caller, "api_key.revoked", "api_key", &id, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}
