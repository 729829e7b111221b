//! API keys and who is calling. Keys are only ever stored and compared as SHA-256 hashes: a key is 32 random
//! bytes, so a fast unsalted hash is enough to make a leaked table useless, and it lets the store look a key up
//! by an indexed column.
//!
//! Handlers take [`AdminCaller`] (admin-only routes), [`Caller`] (tenant-scoped routes) or [`Publisher`]
//! (publishing, which a key of scope `publish` may do too) as an extractor.
//!
//! Every request is authenticated, so a database read per request would put one read in front of every publish.
//! [`AuthCache`] keeps recently seen keys and tenants instead: tenants are never deleted, and a revocation clears
//! this process's cache at once (other nodes sharing a PostgreSQL database stop accepting the key within
//! [`KEY_CACHE_TTL`]).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ipnet::{IpNet, Ipv6Net};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::model::{ApiKey, KeyScope};
use crate::AppState;

/// Where a trusted proxy says whom it forwards for.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// The header through which the admin key says which tenant it acts for.
pub const TENANT_HEADER: &str = "Switchyard-Tenant";
/// What an admin action is recorded as in the audit log.
pub const ADMIN_ACTOR: &str = "admin";
/// How many leading characters of a tenant key are kept in clear to tell keys apart.
pub const KEY_PREFIX_LEN: usize = 10;

/// How long a tenant key, once found, is accepted without asking the database again. Bounds how long another
/// node keeps accepting a key revoked elsewhere.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Entries kept per cache; unknown keys are never cached, so guessing cannot fill it.
const AUTH_CACHE_ENTRIES: u64 = 10_000;

/// Tenant keys by hash, tenants known to exist (for the admin key's `Switchyard-Tenant`), and tenants' own rate
/// limits.
#[derive(Clone)]
pub struct AuthCache {
    keys: moka::sync::Cache<String, ApiKey>,
    tenants: moka::sync::Cache<String, ()>,
    /// Read again after [`KEY_CACHE_TTL`], so a limit changed on another node applies here within it.
    rate_limits: moka::sync::Cache<String, Option<NonZeroU32>>,
    /// Counts revocations, so a key read from the database before one is not cached after it.
    revocations: Arc<AtomicU64>,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache {
            keys: moka::sync::Cache::builder().max_capacity(AUTH_CACHE_ENTRIES).time_to_live(KEY_CACHE_TTL).build(),
            tenants: moka::sync::Cache::builder().max_capacity(AUTH_CACHE_ENTRIES).build(),
            rate_limits: moka::sync::Cache::builder()
                .max_capacity(AUTH_CACHE_ENTRIES)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
            revocations: Arc::default(),
        }
    }
}

impl AuthCache {
    /// Forgets every cached key: call it after a revocation, so this node refuses the key from now on.
    pub fn forget_keys(&self) {
        self.revocations.fetch_add(1, Ordering::AcqRel);
        self.keys.invalidate_all();
    }

    async fn find_key(&self, state: &AppState, hash: String) -> ApiResult<Option<ApiKey>> {
        if let Some(key) = self.keys.get(&hash) {
            return Ok(Some(key));
        }
        let read_at = self.revocations.load(Ordering::Acquire);
        let found = match state.store.find_api_key(&hash).await? {
            Some(key) => Some(key),
            None => state.store.find_api_key(&networked_key_hash(&hash)).await?,
        };
        let found = found.filter(|key| key.revoked_at.is_none());
        if let Some(key) = &found {
            self.remember(hash, key.clone(), read_at);
        }
        Ok(found)
    }

    /// Caches a key read when the revocation count was `read_at`, unless a revocation came since: the read may
    /// predate it, and `invalidate_all` does not reach entries inserted after it ran. Checked again after the
    /// insert, as a revocation can land between the check and the insert.
    fn remember(&self, hash: String, key: ApiKey, read_at: u64) {
        let unchanged = || self.revocations.load(Ordering::Acquire) == read_at;
        if unchanged() {
            self.keys.insert(hash.clone(), key);
            if !unchanged() {
                self.keys.invalidate(&hash);
            }
        }
    }

    /// The tenant's own request rate limit, if an operator gave it one.
    async fn own_rate_limit(&self, state: &AppState, tenant_id: &str) -> ApiResult<Option<NonZeroU32>> {
        if let Some(limit) = self.rate_limits.get(tenant_id) {
            return Ok(limit);
        }
        let tenant = state.store.get_tenant(tenant_id).await?;
        let limit = tenant.and_then(|t| t.rate_limit).and_then(|n| u32::try_from(n).ok()).and_then(NonZeroU32::new);
        self.rate_limits.insert(tenant_id.to_string(), limit);
        Ok(limit)
    }

    /// Forgets the tenant's rate limit: call it after changing it, so this node applies the new one at once.
    pub fn forget_rate_limit(&self, tenant_id: &str) {
        self.rate_limits.invalidate(tenant_id);
    }

    async fn tenant_exists(&self, state: &AppState, tenant_id: &str) -> ApiResult<bool> {
        if self.tenants.contains_key(tenant_id) {
            return Ok(true);
        }
        let exists = state.store.get_tenant(tenant_id).await?.is_some();
        if exists {
            self.tenants.insert(tenant_id.to_string(), ());
        }
        Ok(exists)
    }
}

/// What a new key's text starts with, before `_`: `sy` for scope `all`, `syp` for `publish`, `syr` for `read`.
pub fn key_prefix(scope: KeyScope) -> &'static str {
    match scope {
        KeyScope::All => "sy",
        KeyScope::Publish => "syp",
        KeyScope::Read => "syr",
    }
}

/// Hex SHA-256 of a key's text; for a `publish` or `read` key, of a label naming its scope and the text. A node of
/// a version before that scope (nodes sharing a PostgreSQL database are upgraded one by one) hashes such a key
/// plainly, finds nothing, and refuses it, where reading its row without knowing the scope would have opened the
/// whole tenant API to it.
pub fn hash_key(key: &str) -> String {
    let mut hash = Sha256::new();
    match key.split_once('_').map(|(prefix, _)| prefix) {
        Some("syp") => hash.update(b"switchyard publish key\0"),
        Some("syr") => hash.update(b"switchyard read key\0"),
        _ => {}
    }
    hash.update(key.as_bytes());
    hex::encode(hash.finalize())
}

/// What a key with allowed networks is stored under: its [`hash_key`], labelled again. A node of a version that
/// does not read `allowed_networks` looks the plain hash up, finds nothing and refuses the key, rather than
/// accepting it from anywhere.
pub fn networked_key_hash(plain_hash: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"switchyard key with allowed networks\0");
    hash.update(plain_hash.as_bytes());
    hex::encode(hash.finalize())
}

/// The address a request comes from: the connection's, or, when that is a trusted proxy (`trusted_proxies`), the
/// nearest address in `X-Forwarded-For` that is not one (each proxy appends the address it heard from, so the
/// entries to the left of the last untrusted one are whatever the client chose to send). None when it cannot be
/// told: no connection address (a request not from the listener), or an entry that is not an address.
fn client_address(parts: &Parts, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip().to_canonical();
    let trusted = |address: &IpAddr| trusted_proxies.iter().any(|network| network.contains(address));
    let mut client = peer;
    if !trusted(&client) {
        return Some(client);
    }
    for value in parts.headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for hop in value.to_str().ok()?.split(',').rev() {
            let hop = hop.trim();
            let address = hop.parse::<IpAddr>().or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip())).ok()?;
            client = address.to_canonical();
            if !trusted(&client) {
                return Some(client);
            }
        }
    }
    // Every hop is a proxy of ours: the farthest one is where the request entered.
    Some(client)
}

/// Refuses a request from outside `networks` (empty: from anywhere) with a `403` that names its address.
fn check_networks(networks: &[IpNet], parts: &Parts, state: &AppState, whose: &str) -> ApiResult<()> {
    if networks.is_empty() {
        return Ok(());
    }
    match client_address(parts, &state.config.trusted_proxies) {
        Some(address) if networks.iter().any(|network| covers(network, &IpNet::from(address))) => Ok(()),
        Some(address) => Err(ApiError::Forbidden(format!("{whose} may not be used from {address}"))),
        None => Err(ApiError::Forbidden(format!(
            "{whose} may only be used from its allowed networks, and this request's address cannot be told"
        ))),
    }
}

/// Whether `outer` holds all of `inner`. Addresses and blocks are kept in their IPv4 form, so an IPv6 block that
/// holds the IPv4-mapped range (`::/0`, which an operator reads as "everywhere") holds IPv4 ones through it.
pub fn covers(outer: &IpNet, inner: &IpNet) -> bool {
    match (outer, inner) {
        (IpNet::V6(outer), IpNet::V4(inner)) => Ipv6Net::new(inner.addr().to_ipv6_mapped(), inner.prefix_len() + 96)
            .is_ok_and(|mapped| outer.contains(&mapped)),
        _ => outer.contains(inner),
    }
}

/// A new key: `<prefix>_` followed by 32 random bytes in unpadded base64url, so it survives URLs, shells and
/// config files unquoted.
pub fn generate_key(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The key of `Authorization: Bearer <key>`, if the header has that form.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    // Two Authorization headers are ambiguous; a proxy may have added one. Refuse rather than pick.
    let (Some(value), None) = (values.next(), values.next()) else { return None };
    let value = value.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Who presented a valid key.
#[derive(Debug, Clone)]
enum Principal {
    Admin,
    Tenant(ApiKey),
}

async fn authenticate(parts: &Parts, state: &AppState) -> ApiResult<Principal> {
    let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
    let hash = hash_key(token);
    // Constant time: the admin key must not be guessable byte by byte from response timings.
    if bool::from(hash.as_bytes().ct_eq(state.admin_key_hash.as_bytes())) {
        check_networks(&state.config.admin_allowed_networks, parts, state, "the admin key")?;
        return Ok(Principal::Admin);
    }
    match state.auth_cache.find_key(state, hash).await? {
        Some(key) => {
            check_networks(&key.allowed_networks, parts, state, "this key")?;
            Ok(Principal::Tenant(key))
        }
        None => Err(ApiError::Unauthorized),
    }
}

/// Whoever may read `/metrics`: the metrics token (`metrics_token`, from `metrics_allowed_networks` when set),
/// which opens nothing else, or the admin key.
#[derive(Debug, Clone, Copy)]
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if let (Some(token), Some(expected)) = (bearer_token(&parts.headers), &state.metrics_token_hash) {
            if bool::from(hash_key(token).as_bytes().ct_eq(expected.as_bytes())) {
                check_networks(&state.config.metrics_allowed_networks, parts, state, "the metrics token")?;
                return Ok(MetricsReader);
            }
        }
        AdminCaller::from_request_parts(parts, state).await.map(|AdminCaller| MetricsReader)
    }
}

/// The admin key, on a route only it may use.
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        match authenticate(parts, state).await? {
            Principal::Admin => Ok(AdminCaller),
            Principal::Tenant(_) => Err(ApiError::Forbidden("this route needs the admin key".into())),
        }
    }
}

/// The tenant a request acts for, and who acts (for the audit log).
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    /// `admin` or the id of the tenant key used.
    pub actor: String,
    /// The networks the key used is limited to; empty for the admin key and keys usable from anywhere.
    pub allowed_networks: Vec<IpNet>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let principal = authenticate(parts, state).await?;
        caller(principal, parts, state, needed_for(&parts.method)).await
    }
}

/// The scope a tenant route needs: `read` for a GET (or HEAD), which changes nothing and sends nothing; the whole
/// API for the rest, including the POSTs that only answer, such as a simulation's signed request.
fn needed_for(method: &Method) -> KeyScope {
    if method == Method::GET || method == Method::HEAD {
        KeyScope::Read
    } else {
        KeyScope::All
    }
}

/// The tenant an event is published for: any tenant key, including those of scope `publish`.
#[derive(Debug, Clone)]
pub struct Publisher(pub Caller);

impl FromRequestParts<AppState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let principal = authenticate(parts, state).await?;
        caller(principal, parts, state, KeyScope::Publish).await.map(Publisher)
    }
}

/// Whether a key of scope `has` may use a route that needs `needed`.
fn allows(has: KeyScope, needed: KeyScope) -> bool {
    has == KeyScope::All || has == needed
}

async fn caller(principal: Principal, parts: &Parts, state: &AppState, needed: KeyScope) -> ApiResult<Caller> {
    // An unreadable value names no tenant: a 400 for the admin key, a 404 for a tenant key like any other
    // tenant that is not its own.
    let named = named_tenant(parts);
    match principal {
        Principal::Admin => {
            let Some(tenant_id) = named.filter(|t| !t.is_empty()) else {
                return Err(ApiError::invalid(
                    TENANT_HEADER,
                    "the admin key must name the tenant it acts for in the Switchyard-Tenant header",
                ));
            };
            if !state.auth_cache.tenant_exists(state, tenant_id).await? {
                return Err(ApiError::NotFound("tenant"));
            }
            Ok(Caller { tenant_id: tenant_id.to_string(), actor: ADMIN_ACTOR.to_string(), allowed_networks: Vec::new() })
        }
        // A tenant key naming another tenant learns nothing about whether that tenant exists.
        Principal::Tenant(key) if named.is_some_and(|t| t != key.tenant_id) => Err(ApiError::NotFound("tenant")),
        Principal::Tenant(key) if !allows(key.scope, needed) => Err(ApiError::Forbidden(match key.scope {
            KeyScope::Read => "this key's scope is `read`: it may only read (GET requests)".into(),
            scope => format!(
                "this key's scope is `{scope}`: it may only publish events (POST /api/v1/events and /api/v1/events/batch)"
            ),
        })),
        Principal::Tenant(key) => {
            let own_limit = state.auth_cache.own_rate_limit(state, &key.tenant_id).await?;
            state
                .tenant_limits
                .check(&key.tenant_id, own_limit)
                .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
            Ok(Caller { tenant_id: key.tenant_id, actor: key.id, allowed_networks: key.allowed_networks })
        }
    }
}

fn named_tenant(parts: &Parts) -> Option<&str> {
    parts.headers.get(TENANT_HEADER).map(|v| v.to_str().map(str::trim).unwrap_or_default())
}

/// Whose records a request reads: a tenant's, or (the admin key naming no tenant, or an empty one) the server's
/// own, the actions no tenant owns such as plugin uploads and deletions.
#[derive(Debug, Clone)]
pub enum Reader {
    Tenant(Caller),
    Server,
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        match authenticate(parts, state).await? {
            Principal::Admin if named_tenant(parts).is_none_or(str::is_empty) => Ok(Reader::Server),
            principal => Ok(Reader::Tenant(caller(principal, parts, state, needed_for(&parts.method)).await?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// A key read before a revocation on this node is not cached after it, or it would be accepted for the cache's
    /// lifetime more.
    #[test]
    fn a_key_read_before_a_revocation_is_not_cached() {
        let cache = AuthCache::default();
        let key = ApiKey {
            id: "key_1".into(),
            tenant_id: "ten_1".into(),
            name: "k".into(),
            prefix: "sy_abcdefg".into(),
            key_hash: "h".into(),
            scope: KeyScope::All,
            allowed_networks: Vec::new(),
            created_at: 0,
            revoked_at: None,
        };
        let read_at = cache.revocations.load(Ordering::Acquire);
        cache.forget_keys();
        cache.remember("h".into(), key.clone(), read_at);
        assert!(cache.keys.get("h").is_none(), "read before the revocation");
        cache.remember("h".into(), key, cache.revocations.load(Ordering::Acquire));
        assert!(cache.keys.get("h").is_some(), "read after it");
    }

    #[test]
    fn a_publish_key_opens_only_publishing_and_a_read_key_only_reading() {
        for needed in [KeyScope::All, KeyScope::Publish, KeyScope::Read] {
            assert!(allows(KeyScope::All, needed));
        }
        assert!(allows(KeyScope::Publish, KeyScope::Publish));
        assert!(!allows(KeyScope::Publish, KeyScope::All));
        assert!(!allows(KeyScope::Publish, KeyScope::Read));
        assert!(allows(KeyScope::Read, KeyScope::Read));
        assert!(!allows(KeyScope::Read, KeyScope::All));
        assert!(!allows(KeyScope::Read, KeyScope::Publish));
        assert_eq!(needed_for(&Method::GET), KeyScope::Read);
        assert_eq!(needed_for(&Method::HEAD), KeyScope::Read);
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS] {
            assert_eq!(needed_for(&method), KeyScope::All, "{method}");
        }
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn narrow_keys_are_not_hashed_as_the_versions_before_their_scope_hash() {
        let publish = generate_key(key_prefix(KeyScope::Publish));
        let read = generate_key(key_prefix(KeyScope::Read));
        assert!(publish.starts_with("syp_") && read.starts_with("syr_"));
        for key in [&publish, &read] {
            assert_ne!(hash_key(key), hex::encode(Sha256::digest(key.as_bytes())), "{key}");
            assert_eq!(hash_key(key), hash_key(&key.clone()));
        }
        // Labelled by its own scope, not the other narrow one's.
        assert_ne!(
            hex::encode(Sha256::digest([&b"switchyard publish key\0"[..], read.as_bytes()].concat())),
            hash_key(&read)
        );
        let full = generate_key("sy");
        assert_eq!(hash_key(&full), hex::encode(Sha256::digest(full.as_bytes())), "keys made before keep working");
    }

    #[test]
    fn generated_keys_carry_the_prefix_and_32_random_bytes() {
        let key = generate_key("sy");
        let body = key.strip_prefix("sy_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(generate_key("sy"), key);
        assert!(generate_key("sy_admin").starts_with("sy_admin_"));
        assert!(key.len() > KEY_PREFIX_LEN);
    }

    fn request_from(peer: &str, forwarded_for: &[&str]) -> Parts {
        let mut request = axum::http::Request::builder();
        for value in forwarded_for {
            request = request.header(X_FORWARDED_FOR, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts.extensions.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        parts
    }

    #[test]
    fn the_client_is_the_nearest_address_no_trusted_proxy_holds() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let client = |peer: &str, forwarded_for: &[&str]| {
            client_address(&request_from(peer, forwarded_for), &proxies).map(|address| address.to_string())
        };
        let client = |peer, forwarded_for| client(peer, forwarded_for).unwrap_or_else(|| "unknown".into());
        // Not from a proxy: the header is the client's own say, and ignored.
        assert_eq!(client("198.51.100.7:5000", &["203.0.113.9"]), "198.51.100.7");
        // From a proxy: the last entry it did not add itself, past any proxy of ours.
        assert_eq!(client("10.0.0.2:5000", &["203.0.113.9"]), "203.0.113.9");
        assert_eq!(client("10.0.0.2:5000", &["192.0.2.66, 203.0.113.9, 10.1.1.1"]), "203.0.113.9");
        assert_eq!(client("10.0.0.2:5000", &["192.0.2.66, 203.0.113.9", "10.1.1.1"]), "203.0.113.9");
        assert_eq!(client("10.0.0.2:5000", &["[2001:db8::5]:443", "10.1.1.1:80"]), "2001:db8::5");
        assert_eq!(client("[::ffff:10.0.0.2]:5000", &["::ffff:203.0.113.9"]), "203.0.113.9");
        // Only proxies: the farthest; none named: the proxy itself.
        assert_eq!(client("10.0.0.2:5000", &["10.3.3.3, 10.1.1.1"]), "10.3.3.3");
        assert_eq!(client("[fd00::2]:5000", &[]), "fd00::2");
        // What cannot be read makes the address unknown, not the proxy's.
        assert_eq!(client("10.0.0.2:5000", &["203.0.113.9, unknown"]), "unknown");
        assert_eq!(client_address(&axum::http::Request::new(()).into_parts().0, &proxies), None);
    }

    #[test]
    fn an_ipv6_block_holding_the_mapped_range_covers_ipv4() {
        let net = |text: &str| crate::config::parse_network(text).unwrap();
        assert!(covers(&net("::/0"), &net("203.0.113.9")));
        assert!(covers(&net("::/0"), &net("0.0.0.0/0")));
        assert!(covers(&net("::/64"), &net("10.0.0.0/8")));
        assert!(covers(&net("0.0.0.0/0"), &net("10.0.0.0/8")));
        assert!(covers(&net("10.0.0.0/8"), &net("10.1.2.3")));
        assert!(!covers(&net("10.0.0.0/8"), &net("11.0.0.1")));
        // Blocks beside the mapped range hold no IPv4 address, and no IPv4 block holds an IPv6 one.
        assert!(!covers(&net("2001:db8::/32"), &net("203.0.113.9")));
        assert!(!covers(&net("::1/128"), &net("0.0.0.1")));
        assert!(!covers(&net("0.0.0.0/0"), &net("::1")));
        assert!(!covers(&net("::/96"), &net("0.0.0.0/0")), "the IPv4-compatible range is not the mapped one");
    }

    #[test]
    fn a_key_with_networks_is_stored_under_a_hash_older_versions_do_not_look_up() {
        let key = generate_key(key_prefix(KeyScope::Publish));
        let plain = hash_key(&key);
        assert_ne!(networked_key_hash(&plain), plain);
        assert_eq!(networked_key_hash(&plain), networked_key_hash(&hash_key(&key)));
        assert_ne!(networked_key_hash(&plain), networked_key_hash(&hash_key(&generate_key("sy"))));
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer_token(&with_auth("Bearer sy_abc")), Some("sy_abc"));
        assert_eq!(bearer_token(&with_auth("bearer   sy_abc ")), Some("sy_abc"));
        assert_eq!(bearer_token(&with_auth("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer_token(&with_auth("Bearer ")), None);
        assert_eq!(bearer_token(&with_auth("sy_abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        let mut twice = with_auth("Bearer sy_a");
        twice.append(AUTHORIZATION, HeaderValue::from_static("Bearer sy_b"));
        assert_eq!(bearer_token(&twice), None);
    }
}
