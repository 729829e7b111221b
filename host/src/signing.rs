//! Request signatures, so receivers can tell a delivery came from us and was not replayed later.
//!
//! Two schemes, chosen per endpoint:
//! - [`SignatureScheme::Standard`] follows Standard Webhooks: `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64>` over `"{id}.{timestamp}.{body}"`, keyed by the base64-decoded part of the
//!   `whsec_…` secret, so any Standard Webhooks library verifies it.
//! - [`SignatureScheme::Stripe`] mimics Stripe's `Stripe-Signature` format (`t=…,v1=<hex>`) over `"{t}.{body}"`,
//!   keyed by the whole secret text as Stripe's own verifiers do, so receivers can reuse
//!   `stripe.Webhook.construct_event` and friends unchanged. It goes in `Switchyard-Signature` unless the endpoint
//!   names another header, and its `t` may be in milliseconds: receivers of home-grown "Stripe-compatible"
//!   systems read `t=<Date.now()>` from a header of their own.
//!
//! - [`SignatureScheme::Hmac`] is the plain form many home-grown systems use: the hex HMAC-SHA256 of the body,
//!   keyed by the secret's text, in one header the endpoint names (`X-Webhook-Signature` unless it says otherwise),
//!   after an optional prefix (`sha256=` for GitHub-style receivers). It signs no timestamp, so a receiver cannot
//!   tell a replay; it is for receivers that already verify this way and should not have to change.
//!
//! A `standard` endpoint's secret may instead be an Ed25519 private key (`whsk_…`): it signs
//! `v1a,<base64>` over the same `"{id}.{timestamp}.{body}"`, Standard Webhooks' asymmetric form, which receivers
//! verify with the public key (`whpk_…`), so a leaked verifier cannot forge deliveries. The two kinds may sign
//! side by side in one header while one is rotated out for the other.
//!
//! While a rotated-out secret is in its grace period, every signing secret contributes one signature, so a
//! receiver still holding the old secret keeps verifying. The `hmac` scheme's one header holds one signature,
//! by the active secret: its receivers switch secrets when the rotation happens.

use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use reqwest::header::HeaderName;

use crate::model::{SignatureHeader, SignatureScheme, TimestampUnit};
use crate::secrets::{private_key, PUBLIC_KEY_PREFIX, SECRET_PREFIX};

type HmacSha256 = Hmac<Sha256>;

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
pub const SWITCHYARD_SIGNATURE: HeaderName = HeaderName::from_static("switchyard-signature");

/// The signature headers for one attempt. `secrets` are plaintext `whsec_…` strings (active first, then retiring
/// ones); `timestamp_ms` is the time of this attempt, not of the event, because receivers reject stale
/// timestamps. With no secret the signature header itself is left out rather than sent empty.
pub fn signature_headers(
    scheme: SignatureScheme,
    secrets: &[String],
    msg_id: &str,
    timestamp_ms: i64,
    body: &[u8],
) -> Vec<(HeaderName, String)> {
    Signer::new(scheme, secrets).headers(msg_id, timestamp_ms, body)
}

/// Secrets with their HMAC keys set up for one scheme, for signing many requests. Setting up a key costs two
/// SHA-256 blocks, more than hashing a small payload, so an endpoint's deliveries of one claim or group commit
/// share one signer (see `secrets::SigningSecrets`). Debug output never shows the keys.
#[derive(Clone)]
pub struct Signer {
    scheme: SignatureScheme,
    /// One per secret that can sign in this scheme, in signing order.
    keys: Vec<Key>,
    /// Where each key's secret stood among those given to [`Signer::new`], to name its version.
    positions: Vec<usize>,
    /// How many secrets were given.
    given: usize,
    /// Where the `hmac` and `stripe` schemes put their signature.
    header: HeaderName,
    /// What precedes the `hmac` scheme's digest.
    prefix: String,
    /// Whether the `stripe` scheme's `t` is in milliseconds.
    millis: bool,
    /// The `stripe` scheme's `kid=` after each signature: the version of its secret, one per key. Empty: none.
    key_ids: Vec<i64>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({:?}, {} secrets)", self.scheme, self.keys.len())
    }
}

impl Signer {
    pub fn new(scheme: SignatureScheme, secrets: &[impl AsRef<str>]) -> Self {
        // A key is told by parsing as one, not by its prefix alone: an `hmac` secret brought before keys existed
        // may be any text, `whsk_…` included, and must keep signing.
        let key = |secret: &str| match (scheme, private_key(secret)) {
            (SignatureScheme::Standard, Some(key)) => Some(Key::Ed25519(key)),
            // A key left in its grace period from the standard scheme has no HMAC form: it signs nothing.
            (SignatureScheme::Stripe | SignatureScheme::Hmac, Some(_)) => None,
            (SignatureScheme::Standard, None) => Some(Key::Hmac(keyed(&standard_key(secret)))),
            (SignatureScheme::Stripe | SignatureScheme::Hmac, None) => Some(Key::Hmac(keyed(secret.as_bytes()))),
        };
        let (positions, keys) =
            secrets.iter().enumerate().filter_map(|(position, secret)| Some((position, key(secret.as_ref())?))).unzip();
        let signer = Signer {
            scheme,
            keys,
            positions,
            given: secrets.len(),
            header: SWITCHYARD_SIGNATURE,
            prefix: String::new(),
            millis: false,
            key_ids: Vec::new(),
        };
        signer.with_header(SignatureHeader::default_for(scheme).as_ref(), &[])
    }

    /// Puts the `hmac` or `stripe` scheme's signature where `header` says (None: the scheme's default). The API
    /// validates it; a name that does not parse leaves the default in place rather than failing every attempt.
    /// `versions` are the secrets' versions, in the order given to [`Signer::new`], for a header that names them
    /// (`kid=`); a list that does not match the secrets one for one names none rather than the wrong ones.
    pub fn with_header(mut self, header: Option<&SignatureHeader>, versions: &[i64]) -> Self {
        if let Some(header) = header {
            if let Ok(name) = HeaderName::try_from(header.name.as_str()) {
                self.header = name;
                self.prefix.clone_from(&header.prefix);
                self.millis = header.timestamp == Some(TimestampUnit::Milliseconds);
                self.key_ids.clear();
                if header.key_id && versions.len() == self.given {
                    self.key_ids.extend(self.positions.iter().map(|&position| versions[position]));
                }
            }
        }
        self
    }

    /// See [`signature_headers`].
    pub fn headers(&self, msg_id: &str, timestamp_ms: i64, body: &[u8]) -> Vec<(HeaderName, String)> {
        let timestamp_secs = timestamp_ms.div_euclid(1000);
        match self.scheme {
            SignatureScheme::Standard => {
                let mut signatures = String::new();
                let timestamp = timestamp_secs.to_string();
                for key in &self.keys {
                    if !signatures.is_empty() {
                        signatures.push(' ');
                    }
                    match key {
                        Key::Hmac(key) => {
                            signatures.push_str("v1,");
                            let mac = standard_message(key.clone(), msg_id, &timestamp, body);
                            STANDARD.encode_string(mac.finalize().into_bytes(), &mut signatures);
                        }
                        Key::Ed25519(key) => {
                            signatures.push_str("v1a,");
                            let content = [msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
                            STANDARD.encode_string(key.sign(&content).to_bytes(), &mut signatures);
                        }
                    }
                }
                let mut headers = vec![(WEBHOOK_ID, msg_id.to_string()), (WEBHOOK_TIMESTAMP, timestamp)];
                if !signatures.is_empty() {
                    headers.push((WEBHOOK_SIGNATURE, signatures));
                }
                headers
            }
            SignatureScheme::Stripe => {
                if self.keys.is_empty() {
                    return Vec::new();
                }
                let timestamp = if self.millis { timestamp_ms } else { timestamp_secs }.to_string();
                let mut value = format!("t={timestamp}");
                for (index, key) in self.hmac_keys().enumerate() {
                    value.push_str(",v1=");
                    value.push_str(&hex::encode(stripe_message(key.clone(), &timestamp, body).finalize().into_bytes()));
                    // Right after its signature: a parser keeping the first or the last `v1` and `kid` pairs
                    // them as signed.
                    if let Some(version) = self.key_ids.get(index) {
                        write!(value, ",kid={version}").expect("writing to a String cannot fail");
                    }
                }
                vec![(self.header.clone(), value)]
            }
            SignatureScheme::Hmac => {
                let Some(key) = self.hmac_keys().next() else { return Vec::new() };
                let mut mac = key.clone();
                mac.update(body);
                vec![(self.header.clone(), format!("{}{}", self.prefix, hex::encode(mac.finalize().into_bytes())))]
            }
        }
    }
}

/// One secret, set up for what it signs.
#[derive(Clone)]
enum Key {
    Hmac(HmacSha256),
    /// Standard Webhooks' `v1a`.
    Ed25519(ed25519_dalek::SigningKey),
}

impl Signer {
    /// The keys of the HMAC schemes, which [`Signer::new`] gives no other kind.
    fn hmac_keys(&self) -> impl Iterator<Item = &HmacSha256> {
        self.keys.iter().filter_map(|key| match key {
            Key::Hmac(mac) => Some(mac),
            Key::Ed25519(_) => None,
        })
    }
}

/// Checks a Standard Webhooks `v1a` (Ed25519) signature header against one public key (`whpk_…`).
pub fn verify_standard_asymmetric(
    public_key: &str,
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let key = public_key
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .and_then(|text| STANDARD.decode(text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .and_then(|bytes| ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok());
    let Some(key) = key else { return false };
    let content = [msg_id.as_bytes(), b".", timestamp_secs.to_string().as_bytes(), b".", body].concat();
    header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1a,"))
        .filter_map(|signature| STANDARD.decode(signature).ok())
        .filter_map(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
        .any(|signature| key.verify_strict(&content, &signature).is_ok())
}

/// Checks an `hmac` signature value (the header's, prefix included) against one secret, in constant time.
pub fn verify_hmac(secret: &str, prefix: &str, header: &str, body: &[u8]) -> bool {
    let Some(candidate) = header.strip_prefix(prefix).and_then(|digest| hex::decode(digest).ok()) else {
        return false;
    };
    let mut mac = keyed(secret.as_bytes());
    mac.update(body);
    mac.verify_slice(&candidate).is_ok()
}

/// Checks a `webhook-signature` header value against one secret, in constant time. Only the signature: whether
/// the timestamp is fresh enough is the receiver's policy.
pub fn verify_standard(secret: &str, msg_id: &str, timestamp_secs: i64, body: &[u8], header: &str) -> bool {
    header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|candidate| standard_mac(secret, msg_id, timestamp_secs, body).verify_slice(&candidate).is_ok())
}

/// Checks a `stripe` scheme header value (`t=…,v1=…[,v1=…]`) against one secret, in constant time. Returns the
/// signed timestamp, in the unit it was signed in, when one `v1` matches, so the caller can apply its own
/// freshness rule.
pub fn verify_stripe(secret: &str, header: &str, body: &[u8]) -> Option<i64> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.trim().parse::<i64>().ok(),
            Some(("v1", sig)) => candidates.extend(hex::decode(sig.trim()).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp?;
    candidates
        .iter()
        .any(|candidate| stripe_mac(secret, timestamp, body).verify_slice(candidate).is_ok())
        .then_some(timestamp)
}

fn standard_mac(secret: &str, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
    standard_message(keyed(&standard_key(secret)), msg_id, &timestamp_secs.to_string(), body)
}

fn stripe_mac(secret: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
    stripe_message(keyed(secret.as_bytes()), &timestamp_secs.to_string(), body)
}

/// `mac`, keyed, fed the Standard Webhooks message `{id}.{timestamp}.{body}`.
fn standard_message(mut mac: HmacSha256, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `mac`, keyed, fed Stripe's message `{timestamp}.{body}`.
fn stripe_message(mut mac: HmacSha256, timestamp: &str, body: &[u8]) -> HmacSha256 {
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The Standard Webhooks key: the base64 after `whsec_`. Every secret we store is generated in that form; should
/// one ever not decode, its raw bytes are used so signing stays total and deterministic (the receiver will then
/// fail to verify, which is the visible, safe outcome).
fn standard_key(secret: &str) -> Vec<u8> {
    let body = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD.decode(body).unwrap_or_else(|_| secret.as_bytes().to_vec())
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_MS: i64 = SPEC_TS * 1000 + 123;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;

    fn header(headers: &[(HeaderName, String)], name: HeaderName) -> Option<&str> {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn standard_matches_the_standard_webhooks_spec_vector() {
        let headers =
            signature_headers(SignatureScheme::Standard, &[SPEC_SECRET.to_string()], SPEC_ID, SPEC_MS, SPEC_BODY);
        assert_eq!(header(&headers, WEBHOOK_ID), Some(SPEC_ID));
        assert_eq!(header(&headers, WEBHOOK_TIMESTAMP), Some("1614265330"));
        assert_eq!(header(&headers, WEBHOOK_SIGNATURE), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn standard_signs_once_per_secret_space_separated() {
        let second = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string();
        let headers = signature_headers(
            SignatureScheme::Standard,
            &[SPEC_SECRET.into(), second.clone()],
            SPEC_ID,
            SPEC_MS,
            SPEC_BODY,
        );
        let value = header(&headers, WEBHOOK_SIGNATURE).unwrap();
        let entries: Vec<&str> = value.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, value));
        assert!(verify_standard(&second, SPEC_ID, SPEC_TS, SPEC_BODY, value));
        assert!(!verify_standard("whsec_c29tZXRoaW5nIGVsc2U=", SPEC_ID, SPEC_TS, SPEC_BODY, value));
        assert!(!verify_standard(SPEC_SECRET, SPEC_ID, SPEC_TS + 1, SPEC_BODY, value));
        assert!(!verify_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, b"{}", value));
    }

    #[test]
    fn stripe_matches_an_independently_computed_vector() {
        // Computed with Python, keyed by the whole secret text as Stripe's verifier does:
        //   hmac.new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        //            b'1614265330.{"test": 2432232314}', hashlib.sha256).hexdigest()
        // and the same with b"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" for the second secret.
        let second = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string();
        let headers = signature_headers(
            SignatureScheme::Stripe,
            &[SPEC_SECRET.into(), second.clone()],
            SPEC_ID,
            SPEC_MS,
            SPEC_BODY,
        );
        assert_eq!(headers.len(), 1);
        assert_eq!(
            header(&headers, SWITCHYARD_SIGNATURE),
            Some(
                "t=1614265330,\
                 v1=2e37df5d4a028c51a7f3133d64ae1e300d2c2c900f1b1d49d4369ad2530f8964,\
                 v1=0d1a1877e3ea4caa26e4ea52067e3b89daf99b0d9d07f1ecffb75be8f41b66c9"
            )
        );
        let value = header(&headers, SWITCHYARD_SIGNATURE).unwrap();
        assert_eq!(verify_stripe(SPEC_SECRET, value, SPEC_BODY), Some(SPEC_TS));
        assert_eq!(verify_stripe(&second, value, SPEC_BODY), Some(SPEC_TS));
        assert_eq!(verify_stripe("whsec_other", value, SPEC_BODY), None);
        assert_eq!(verify_stripe(SPEC_SECRET, value, b"{}"), None);
        assert_eq!(verify_stripe(SPEC_SECRET, &value.replace("t=1614265330", "t=1614265331"), SPEC_BODY), None);
    }

    #[test]
    fn stripe_signs_milliseconds_in_a_header_the_endpoint_names() {
        // hmac.new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b'1614265330123.{"test": 2432232314}',
        //          hashlib.sha256).hexdigest(), as a receiver reading `t=<Date.now()>` computes it.
        let expected = "t=1614265330123,v1=c29b7a4feff7191ee68a473cd75189622479fda0a46ea2c702973e953c2b6f6a";
        let molam = SignatureHeader {
            name: "Molam-Signature".into(),
            prefix: String::new(),
            timestamp: Some(TimestampUnit::Milliseconds),
            key_id: false,
        };
        let headers = Signer::new(SignatureScheme::Stripe, &[SPEC_SECRET])
            .with_header(Some(&molam), &[])
            .headers(SPEC_ID, SPEC_MS, SPEC_BODY);
        assert_eq!(headers, [(HeaderName::from_static("molam-signature"), expected.to_string())]);
        assert_eq!(verify_stripe(SPEC_SECRET, expected, SPEC_BODY), Some(SPEC_MS));

        // Seconds in a header of its own name: the digest of the seconds, as before.
        let seconds = SignatureHeader { timestamp: Some(TimestampUnit::Seconds), ..molam.clone() };
        let headers = Signer::new(SignatureScheme::Stripe, &[SPEC_SECRET])
            .with_header(Some(&seconds), &[])
            .headers(SPEC_ID, SPEC_MS, SPEC_BODY);
        let default = signature_headers(SignatureScheme::Stripe, &[SPEC_SECRET.into()], SPEC_ID, SPEC_MS, SPEC_BODY);
        assert_eq!(headers[0].0, "molam-signature");
        assert_eq!(headers[0].1, default[0].1);
        assert_eq!(default[0].0, SWITCHYARD_SIGNATURE);
    }

    /// RFC 8032's first test key, signing the spec's message as Standard Webhooks' `v1a`; the expected value was
    /// computed with Python's `cryptography` (`Ed25519PrivateKey.from_private_bytes(seed).sign(...)`).
    const RFC8032_KEY: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    const RFC8032_PUBLIC: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    const RFC8032_V1A: &str =
        "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw==";

    #[test]
    fn an_ed25519_key_signs_v1a_as_an_independent_implementation_does() {
        let headers =
            signature_headers(SignatureScheme::Standard, &[RFC8032_KEY.into()], SPEC_ID, SPEC_TS * 1000, SPEC_BODY);
        let value = header(&headers, WEBHOOK_SIGNATURE).unwrap();
        assert_eq!(value, RFC8032_V1A);
        assert!(verify_standard_asymmetric(RFC8032_PUBLIC, SPEC_ID, SPEC_TS, SPEC_BODY, value));
        assert!(!verify_standard_asymmetric(RFC8032_PUBLIC, SPEC_ID, SPEC_TS + 1, SPEC_BODY, value));
        assert!(!verify_standard_asymmetric(RFC8032_PUBLIC, SPEC_ID, SPEC_TS, b"{}", value));
        assert!(!verify_standard_asymmetric("whpk_AAAA", SPEC_ID, SPEC_TS, SPEC_BODY, value));
        assert!(!verify_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, value), "a v1a is not a v1");
    }

    /// While a shared secret is rotated out for a key (or back), both sign in the one header, each in its own
    /// form, so receivers of either kind keep verifying; the HMAC schemes skip a key, which has no HMAC form.
    #[test]
    fn keys_and_shared_secrets_sign_side_by_side() {
        let secrets = [RFC8032_KEY.to_string(), SPEC_SECRET.to_string()];
        let headers = signature_headers(SignatureScheme::Standard, &secrets, SPEC_ID, SPEC_TS * 1000, SPEC_BODY);
        let value = header(&headers, WEBHOOK_SIGNATURE).unwrap();
        assert!(value.starts_with(&format!("{RFC8032_V1A} v1,")), "{value}");
        assert!(verify_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, value));
        assert!(verify_standard_asymmetric(RFC8032_PUBLIC, SPEC_ID, SPEC_TS, SPEC_BODY, value));

        let stripe = signature_headers(SignatureScheme::Stripe, &secrets, SPEC_ID, SPEC_TS * 1000, SPEC_BODY);
        let alone = signature_headers(SignatureScheme::Stripe, &secrets[1..], SPEC_ID, SPEC_TS * 1000, SPEC_BODY);
        assert_eq!(stripe, alone);
        let naming =
            SignatureHeader { name: "Molam-Signature".into(), prefix: String::new(), timestamp: None, key_id: true };
        let named = Signer::new(SignatureScheme::Stripe, &secrets).with_header(Some(&naming), &[2, 1]).headers(
            SPEC_ID,
            SPEC_TS * 1000,
            SPEC_BODY,
        );
        assert!(named[0].1.ends_with(",kid=1"), "the shared secret's own version: {}", named[0].1);
        let hmac = Signer::new(SignatureScheme::Hmac, &secrets).headers(SPEC_ID, SPEC_TS * 1000, SPEC_BODY);
        assert_eq!(hmac, Signer::new(SignatureScheme::Hmac, &secrets[1..]).headers(SPEC_ID, SPEC_TS * 1000, SPEC_BODY));
        let only_key = signature_headers(SignatureScheme::Hmac, &secrets[..1], SPEC_ID, SPEC_TS * 1000, SPEC_BODY);
        assert!(only_key.is_empty(), "{only_key:?}");
        // An `hmac` secret brought before keys existed may start like one and still be text: it keeps signing.
        let legacy = ["whsk_legacy-hmac-secret-12345".to_string()];
        let signed = signature_headers(SignatureScheme::Hmac, &legacy, SPEC_ID, SPEC_TS * 1000, SPEC_BODY);
        assert_eq!(signed.len(), 1, "{signed:?}");
        assert!(verify_hmac(&legacy[0], "", &signed[0].1, SPEC_BODY));
    }

    /// brique 45's `t=<ms>,v1=<hex>,kid=<n>`: each signature followed by its secret's version, so a receiver that
    /// keeps the first or the last pair of a rotation's two still gets a matching one.
    #[test]
    fn stripe_names_each_signatures_secret_version_when_asked() {
        let molam = SignatureHeader {
            name: "Molam-Signature".into(),
            prefix: String::new(),
            timestamp: Some(TimestampUnit::Milliseconds),
            key_id: true,
        };
        let (old, new) = ("whsec_old", "whsec_new");
        let signed = |secrets: &[&str], versions: &[i64]| {
            let headers = Signer::new(SignatureScheme::Stripe, secrets)
                .with_header(Some(&molam), versions)
                .headers(SPEC_ID, SPEC_MS, SPEC_BODY);
            headers[0].1.clone()
        };
        let digest = |secret: &str| {
            let alone = Signer::new(SignatureScheme::Stripe, &[secret])
                .with_header(Some(&SignatureHeader { key_id: false, ..molam.clone() }), &[])
                .headers(SPEC_ID, SPEC_MS, SPEC_BODY);
            alone[0].1.rsplit_once("v1=").unwrap().1.to_string()
        };
        assert_eq!(
            signed(&[new, old], &[3, 2]),
            format!("t={SPEC_MS},v1={},kid=3,v1={},kid=2", digest(new), digest(old))
        );
        assert_eq!(verify_stripe(new, &signed(&[new, old], &[3, 2]), SPEC_BODY), Some(SPEC_MS));
        // Versions that do not match the secrets one for one name none rather than a wrong one.
        assert_eq!(signed(&[new, old], &[3]), format!("t={SPEC_MS},v1={},v1={}", digest(new), digest(old)));
        // Without `key_id`, versions given change nothing.
        let plain = Signer::new(SignatureScheme::Stripe, &[new])
            .with_header(Some(&SignatureHeader { key_id: false, ..molam.clone() }), &[3])
            .headers(SPEC_ID, SPEC_MS, SPEC_BODY);
        assert!(!plain[0].1.contains("kid="), "{}", plain[0].1);
    }

    #[test]
    fn a_signer_signs_each_message_as_one_off_signing_does() {
        let secrets = [SPEC_SECRET.to_string(), "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string()];
        for &scheme in SignatureScheme::ALL {
            let signer = Signer::new(scheme, &secrets);
            for (id, timestamp, body) in [(SPEC_ID, SPEC_MS, SPEC_BODY), ("msg_2", SPEC_MS + 7_000, &b"{}"[..])] {
                assert_eq!(
                    signer.headers(id, timestamp, body),
                    signature_headers(scheme, &secrets, id, timestamp, body)
                );
            }
            assert!(!format!("{signer:?}").contains("whsec"));
        }
    }

    #[test]
    fn hmac_matches_githubs_documented_example() {
        // GitHub's "Validating webhook deliveries": this secret and payload give this X-Hub-Signature-256.
        let github = SignatureHeader {
            name: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            timestamp: None,
            key_id: false,
        };
        let secret = ["It's a Secret to Everybody"];
        let headers = Signer::new(SignatureScheme::Hmac, &secret).with_header(Some(&github), &[]).headers(
            SPEC_ID,
            SPEC_MS,
            b"Hello, World!",
        );
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(headers, [(HeaderName::from_static("x-hub-signature-256"), expected.to_string())]);
        assert!(verify_hmac(secret[0], "sha256=", expected, b"Hello, World!"));
        assert!(!verify_hmac(secret[0], "sha256=", expected, b"Hello, World?"));
        assert!(!verify_hmac("another secret", "sha256=", expected, b"Hello, World!"));
        assert!(!verify_hmac(secret[0], "", expected, b"Hello, World!"), "the prefix is part of the value");
    }

    #[test]
    fn hmac_signs_the_body_alone_with_the_active_secret_in_the_default_header() {
        // hmac.new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b'{"test": 2432232314}', hashlib.sha256).hexdigest()
        let expected = "80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c";
        let retiring = "an older secret".to_string();
        for id_and_time in [(SPEC_ID, SPEC_MS), ("msg_other", SPEC_MS + 60_000)] {
            let headers = signature_headers(
                SignatureScheme::Hmac,
                &[SPEC_SECRET.into(), retiring.clone()],
                id_and_time.0,
                id_and_time.1,
                SPEC_BODY,
            );
            assert_eq!(headers, [(HeaderName::from_static("x-webhook-signature"), expected.to_string())]);
        }
        assert!(signature_headers(SignatureScheme::Hmac, &[], SPEC_ID, SPEC_MS, SPEC_BODY).is_empty());
        // A name that does not parse (the API refuses one) keeps the default rather than failing.
        let broken = SignatureHeader { name: "bad name".into(), prefix: String::new(), timestamp: None, key_id: false };
        let headers = Signer::new(SignatureScheme::Hmac, &[SPEC_SECRET])
            .with_header(Some(&broken), &[])
            .headers(SPEC_ID, SPEC_MS, SPEC_BODY);
        assert_eq!(headers[0].0, "x-webhook-signature");
    }

    #[test]
    fn no_secret_means_no_signature_header() {
        let standard = signature_headers(SignatureScheme::Standard, &[], SPEC_ID, SPEC_MS, SPEC_BODY);
        assert_eq!(header(&standard, WEBHOOK_SIGNATURE), None);
        assert_eq!(header(&standard, WEBHOOK_ID), Some(SPEC_ID));
        assert!(signature_headers(SignatureScheme::Stripe, &[], SPEC_ID, SPEC_MS, SPEC_BODY).is_empty());
    }

    #[test]
    fn malformed_headers_do_not_verify() {
        for bad in ["", "v1,", "v1,%%%", "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="] {
            assert!(!verify_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, bad));
        }
        for bad in ["", "t=x,v1=00", "v1=2e37df5d4a028c51a7f3133d64ae1e300d2c2c900f1b1d49d4369ad2530f8964", "t=1,v1=zz"]
        {
            assert_eq!(verify_stripe(SPEC_SECRET, bad, SPEC_BODY), None);
        }
    }

    #[test]
    fn a_secret_that_is_not_base64_still_signs_deterministically() {
        let odd = "whsec_not base64!".to_string();
        let sign =
            || signature_headers(SignatureScheme::Standard, std::slice::from_ref(&odd), SPEC_ID, SPEC_MS, SPEC_BODY);
        let a = header(&sign(), WEBHOOK_SIGNATURE).unwrap().to_string();
        assert_eq!(Some(a.as_str()), header(&sign(), WEBHOOK_SIGNATURE));
        assert!(verify_standard(&odd, SPEC_ID, SPEC_TS, SPEC_BODY, &a));
    }
}
