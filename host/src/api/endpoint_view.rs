//! Endpoint request bodies and the endpoint object the API returns. Secrets appear in a response only as
//! `{version, status, hint, created_at, expires_at}`; the plaintext `secret` field is filled in by the create and
//! rotate handlers alone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::model::{
    now_millis, rfc3339, Endpoint, EndpointSecret, EndpointStatus, Millis, PluginBinding, SecretStatus,
    SignatureHeader, SignatureScheme, Subscription, TimestampUnit,
};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    pub schedule: Vec<String>,
    #[serde(default)]
    pub max_attempts: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<i64>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub retry: Option<RetryBody>,
    /// Requests per second, at most; absent or `null` for no limit.
    #[serde(default)]
    pub rate_limit: Option<i64>,
    #[serde(default)]
    pub signature_scheme: Option<SignatureScheme>,
    /// Where the `hmac` or `stripe` scheme signs; absent or `null` for its default.
    #[serde(default)]
    pub signature_header: Option<SignatureHeader>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub subscriptions: Option<Vec<Subscription>>,
    #[serde(default)]
    pub filter: Option<PluginBinding>,
    #[serde(default)]
    pub transform: Option<PluginBinding>,
    #[serde(default)]
    pub retry_policy: Option<PluginBinding>,
    /// A signing secret to use instead of a generated one (a receiver keeping the secret it has).
    #[serde(default)]
    pub secret: Option<ProvidedSecret>,
    /// `true`: sign with a generated Ed25519 key (Standard Webhooks' `v1a`) rather than a shared secret.
    #[serde(default)]
    pub asymmetric: Option<bool>,
}

/// A signing secret a request brings. Its `Debug` shows nothing of it, so no log of the request can.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct ProvidedSecret(String);

impl std::fmt::Debug for ProvidedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProvidedSecret(<redacted>)")
    }
}

impl ProvidedSecret {
    /// The secret, once it has the form of one for `scheme`: `whsec_` and base64 for the schemes whose receivers'
    /// libraries expect that (see [`crate::secrets::is_signing_secret`]), or for `standard` an Ed25519 private key
    /// (`whsk_`, see [`crate::secrets::private_key`]); for `hmac`, the text the receiver already keys its HMAC with,
    /// 8 to 500 printable ASCII characters.
    pub fn validated(self, field: &str, scheme: SignatureScheme) -> ApiResult<String> {
        let private = crate::secrets::is_private_key(&self.0);
        match scheme {
            SignatureScheme::Standard if private && crate::secrets::private_key(&self.0).is_some() => Ok(self.0),
            SignatureScheme::Standard if private => Err(ApiError::invalid(
                field,
                "must be `whsk_` followed by the base64 of a 32-byte Ed25519 seed (or of the 64-byte seed and \
                 public key)",
            )),
            // Refused by the prefix, even for text that is not a key, so no new secret is ambiguous.
            _ if private => Err(ApiError::invalid(
                field,
                "starts with `whsk_`, the prefix of Ed25519 private keys, which only the `standard` scheme signs with",
            )),
            SignatureScheme::Hmac
                if (8..=500).contains(&self.0.len()) && self.0.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) =>
            {
                Ok(self.0)
            }
            SignatureScheme::Hmac => {
                Err(ApiError::invalid(field, "must be 8 to 500 printable ASCII characters for the hmac scheme"))
            }
            _ if crate::secrets::is_signing_secret(&self.0) => Ok(self.0),
            _ => Err(ApiError::invalid(field, "must be `whsec_` followed by the base64 of 24 to 64 bytes")),
        }
    }
}

/// A PATCH body. Each field is `None` when absent and `Some(None)` when `null`, because `"retry": null` means
/// "clear the override" while a missing `retry` means "leave it".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default, deserialize_with = "present")]
    pub url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub timeout_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub headers: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "present")]
    pub retry: Option<Option<RetryBody>>,
    #[serde(default, deserialize_with = "present")]
    pub rate_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub signature_scheme: Option<Option<SignatureScheme>>,
    #[serde(default, deserialize_with = "present")]
    pub signature_header: Option<Option<SignatureHeader>>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "present")]
    pub filter: Option<Option<PluginBinding>>,
    #[serde(default, deserialize_with = "present")]
    pub transform: Option<Option<PluginBinding>>,
    #[serde(default, deserialize_with = "present")]
    pub retry_policy: Option<Option<PluginBinding>>,
    /// Accepted only to answer with a pointer to the subscriptions route instead of a bare "unknown field".
    #[serde(default)]
    pub subscriptions: Option<IgnoredAny>,
}

/// `Some(None)` for an explicit `null`, which `#[serde(default)]` alone reads like an absent field.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(de: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(de).map(Some)
}

/// The value of a PATCH field that may be left out but not set to `null`.
pub fn not_null<T>(field: &str, value: Option<Option<T>>) -> ApiResult<Option<T>> {
    match value {
        Some(None) => Err(ApiError::invalid(field, "cannot be null")),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    pub grace_period: Option<String>,
    /// The new secret, instead of a generated one.
    #[serde(default)]
    pub secret: Option<ProvidedSecret>,
    /// Whether to generate an Ed25519 key or a shared secret; absent: the kind of the active secret.
    #[serde(default)]
    pub asymmetric: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsBody {
    pub subscriptions: Vec<Subscription>,
}

/// What the API shows for the value of a custom header that carries a credential. Such values are write-only, as
/// secrets are: a listing must not hand a receiver's credentials to every holder of a tenant key.
pub const REDACTED: &str = "<redacted>";

/// Whether a header's value is a credential by its name: `Authorization`, `Cookie`, or a name that says token,
/// secret, key, auth, password, credential, session or signature (`X-Api-Key`, `X-Auth-Token`, …).
pub fn is_credential_header(name: &str) -> bool {
    const WORDS: &[&str] =
        &["token", "secret", "key", "auth", "password", "passwd", "credential", "session", "signature"];
    let name = name.to_ascii_lowercase();
    name == "cookie" || WORDS.iter().any(|word| name.contains(word))
}

fn shown_headers(headers: BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let value = if is_credential_header(&name) { REDACTED.to_string() } else { value };
            (name, value)
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct RetryView {
    schedule: Vec<String>,
    max_attempts: i64,
}

#[derive(Debug, Serialize)]
pub struct SecretView {
    version: i64,
    status: SecretStatus,
    hint: String,
    /// An Ed25519 key's public key (`whpk_…`), whole: what receivers verify its signatures with.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    created_at: String,
    expires_at: Option<String>,
}

impl SecretView {
    /// A retiring secret whose grace period has ended no longer signs, so it is shown as revoked, as the store
    /// records it at the endpoint's next rotation.
    fn at(s: EndpointSecret, now: Millis) -> Self {
        let grace_over = s.status == SecretStatus::Retiring && !s.signs_at(now);
        // An Ed25519 key's stored hint is its public key (see `secrets::secret_hint`).
        let public_key = crate::secrets::is_public_key(&s.hint).then(|| s.hint.clone());
        let hint = match &public_key {
            Some(key) => {
                format!("{}…", key.chars().take(crate::secrets::PUBLIC_KEY_PREFIX.len() + 4).collect::<String>())
            }
            None => s.hint,
        };
        Self {
            version: s.version,
            status: if grace_over { SecretStatus::Revoked } else { s.status },
            hint,
            public_key,
            created_at: rfc3339(s.created_at),
            expires_at: s.expires_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    id: String,
    url: String,
    description: String,
    status: EndpointStatus,
    status_reason: Option<String>,
    timeout_secs: i64,
    headers: BTreeMap<String, String>,
    retry: Option<RetryView>,
    rate_limit: Option<i64>,
    signature_scheme: SignatureScheme,
    /// Where the `hmac` or `stripe` scheme signs, defaults filled in; absent for `standard`.
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_header: Option<SignatureHeader>,
    metadata: BTreeMap<String, String>,
    subscriptions: Vec<Subscription>,
    filter: Option<PluginBinding>,
    transform: Option<PluginBinding>,
    retry_policy: Option<PluginBinding>,
    secrets: Vec<SecretView>,
    created_at: String,
    updated_at: String,
    /// The plaintext signing secret: only in the responses to create and rotate, and never an Ed25519 key's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A new Ed25519 key's public key, in the responses to create and rotate instead of `secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Where the endpoint's scheme signs, as a receiver must read it: the stored header or the scheme's default, with
/// the `stripe` scheme's timestamp unit spelled out.
fn shown_signature_header(scheme: SignatureScheme, stored: Option<SignatureHeader>) -> Option<SignatureHeader> {
    let mut header = stored.or_else(|| SignatureHeader::default_for(scheme))?;
    if scheme == SignatureScheme::Stripe {
        header.timestamp.get_or_insert(TimestampUnit::Seconds);
    }
    Some(header)
}

/// A schedule in the same `humantime` notation clients send (`90s` comes back as `1m 30s`).
pub fn format_delay(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(ms.max(0) as u64)).to_string()
}

impl EndpointView {
    pub fn new(e: Endpoint, secrets: Vec<EndpointSecret>, now: Millis) -> Self {
        let retry = e.retry_schedule_ms.map(|schedule| RetryView {
            max_attempts: e.max_attempts.unwrap_or(schedule.len() as i64 + 1),
            schedule: schedule.into_iter().map(format_delay).collect(),
        });
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            status: e.status,
            status_reason: e.status_reason,
            timeout_secs: e.timeout_ms / 1000,
            headers: shown_headers(e.headers),
            retry,
            rate_limit: e.rate_limit,
            signature_scheme: e.signature_scheme,
            signature_header: shown_signature_header(e.signature_scheme, e.signature_header),
            metadata: e.metadata,
            subscriptions: e.subscriptions,
            filter: e.plugins.filter,
            transform: e.plugins.transform,
            retry_policy: e.plugins.retry_policy,
            secrets: secrets.into_iter().map(|secret| SecretView::at(secret, now)).collect(),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            secret: None,
            public_key: None,
        }
    }

    /// Renders an endpoint with its secret versions, looked up in the store.
    pub async fn load(state: &AppState, endpoint: Endpoint) -> ApiResult<Self> {
        let secrets = state.store.list_secrets(&endpoint.tenant_id, &endpoint.id).await?;
        Ok(Self::new(endpoint, secrets, now_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::parse_slice;

    #[test]
    fn patch_tells_absent_from_null() {
        let patch: UpdateEndpoint = parse_slice(br#"{"retry": null, "description": "x"}"#).unwrap();
        assert!(matches!(patch.retry, Some(None)));
        assert!(patch.url.is_none());
        assert_eq!(not_null("description", patch.description).unwrap().as_deref(), Some("x"));
        let patch: UpdateEndpoint = parse_slice(br#"{"url": null}"#).unwrap();
        assert!(not_null("url", patch.url).is_err());
        let err = parse_slice::<UpdateEndpoint>(br#"{"retry": {"schedule": ["1m"], "max": 2}}"#).unwrap_err();
        assert!(matches!(err, ApiError::Invalid { field: Some(f), .. } if f == "retry.max"));
    }

    #[test]
    fn a_retiring_secret_past_its_grace_shows_as_revoked() {
        let secret = |status, expires_at| EndpointSecret {
            id: "sec_1".into(),
            endpoint_id: "ep_1".into(),
            tenant_id: "ten_1".into(),
            version: 1,
            status,
            ciphertext: Vec::new(),
            hint: "whsec_ab".into(),
            created_at: 0,
            expires_at,
        };
        let shown = |status, expires_at, now| SecretView::at(secret(status, expires_at), now).status;
        assert_eq!(shown(SecretStatus::Retiring, Some(100), 99), SecretStatus::Retiring);
        assert_eq!(shown(SecretStatus::Retiring, Some(100), 100), SecretStatus::Revoked);
        assert_eq!(shown(SecretStatus::Active, None, 100), SecretStatus::Active);
        assert_eq!(shown(SecretStatus::Revoked, Some(50), 10), SecretStatus::Revoked);
    }

    #[test]
    fn credential_headers_are_shown_redacted() {
        let headers = BTreeMap::from(
            [("Authorization", "Bearer x"), ("X-Api-Key", "k"), ("Cookie", "c"), ("X-Team", "billing")]
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        let shown = shown_headers(headers);
        assert_eq!(shown["Authorization"], REDACTED);
        assert_eq!(shown["X-Api-Key"], REDACTED);
        assert_eq!(shown["Cookie"], REDACTED);
        assert_eq!(shown["X-Team"], "billing");
    }

    #[test]
    fn delays_render_in_humantime() {
        assert_eq!(format_delay(90_000), "1m 30s");
        assert_eq!(format_delay(3_600_000), "1h");
        assert_eq!(humantime::parse_duration(&format_delay(90_500)).unwrap(), Duration::from_millis(90_500));
    }
}
