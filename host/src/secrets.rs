//! Endpoint signing secrets: generation, and AES-256-GCM encryption at rest under the master key.
//!
//! A sealed secret is `nonce (12 bytes) ‖ ciphertext+tag`. The endpoint id and the secret's own id are bound in
//! as associated data, so a ciphertext copied onto another row fails to open instead of signing for it. The id
//! (not the version number) is bound because the caller chooses it before sealing, while the store assigns
//! versions; concurrent rotations therefore cannot seal under a number the store then gives to another secret.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::model::{Endpoint, EndpointSecret, SecretStatus, SignatureScheme};
use crate::signing::Signer;

const NONCE_LEN: usize = 12;
pub const SECRET_PREFIX: &str = "whsec_";
/// An Ed25519 private key, Standard Webhooks' asymmetric secret: it signs `v1a` signatures and never leaves
/// Switchyard; receivers get its [`PUBLIC_KEY_PREFIX`] form.
pub const PRIVATE_KEY_PREFIX: &str = "whsk_";
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("master key must be 32 bytes given as 64 hex characters or standard base64")]
    BadMasterKey,
    #[error("a stored secret could not be decrypted with the configured master key")]
    Undecryptable,
    #[error("could not read or write the master key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
}

/// The master key. Debug output never shows the key.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses 32 bytes written as hex or base64.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| STANDARD.decode(text).ok())
            .filter(|b| b.len() == 32)
            .ok_or(SecretError::BadMasterKey)?;
        Ok(Self(Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretError::BadMasterKey)?))
    }

    /// Reads the key file, or creates it (mode 0600) with a fresh random key. Returns the key and whether the
    /// file was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SecretError> {
        let io_err = |source| SecretError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::parse(&text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                let text = hex::encode(bytes);
                write_private_file(path, &text).map_err(io_err)?;
                Ok((Self::parse(&text)?, true))
            }
            Err(e) => Err(io_err(e)),
        }
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Undecryptable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: aad.as_bytes() })
            .map_err(|_| SecretError::Undecryptable)
    }
}

/// Writes a file readable only by its owner, creating parent directories.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Associated data binding a sealed secret to its endpoint and its own id.
pub fn secret_aad(endpoint_id: &str, secret_id: &str) -> String {
    format!("{endpoint_id}:{secret_id}")
}

/// A new signing secret in the Standard Webhooks form `whsec_<base64 of 32 random bytes>`.
pub fn generate_signing_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// A new Ed25519 private key, `whsk_<base64 of a 32-byte seed>`.
pub fn generate_private_key() -> String {
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    format!("{PRIVATE_KEY_PREFIX}{}", STANDARD.encode(seed))
}

/// The signing key of a `whsk_` secret: the base64 of a 32-byte seed, or of 64 bytes, the seed then its public
/// key (libsodium's form, in which keys brought from elsewhere may come), whose public half must match.
pub fn private_key(secret: &str) -> Option<ed25519_dalek::SigningKey> {
    let bytes = STANDARD.decode(secret.strip_prefix(PRIVATE_KEY_PREFIX)?).ok()?;
    let seed: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    match bytes.len() {
        32 => Some(key),
        64 if bytes[32..] == key.verifying_key().to_bytes() => Some(key),
        _ => None,
    }
}

/// What receivers verify a `whsk_` secret's signatures with: `whpk_<base64 of the 32-byte public key>`.
pub fn public_key(key: &ed25519_dalek::SigningKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(key.verifying_key().to_bytes()))
}

/// Whether a stored hint is an Ed25519 key's public key, which [`secret_hint`] stores for one.
pub fn is_public_key(hint: &str) -> bool {
    hint.starts_with(PUBLIC_KEY_PREFIX)
}

/// Whether `secret` starts the way Ed25519 private keys are written (`whsk_`). Only [`private_key`] tells whether
/// it is one: an `hmac` secret brought before keys existed may be any text.
pub fn is_private_key(secret: &str) -> bool {
    secret.starts_with(PRIVATE_KEY_PREFIX)
}

/// Whether `secret` can be an endpoint's signing secret: `whsec_` and the standard base64 of 24 to 64 bytes, the
/// Standard Webhooks form. Secrets brought from Svix or Stripe have it, so receivers keep theirs when they move.
pub fn is_signing_secret(secret: &str) -> bool {
    let key = secret.strip_prefix(SECRET_PREFIX).and_then(|text| STANDARD.decode(text).ok());
    key.is_some_and(|key| (24..=64).contains(&key.len()))
}

/// What a list response may show of a secret, stored in clear beside it: four characters after the `whsec_`
/// prefix, four of the 24 or more random bytes' base64. A secret of another form (the `hmac` scheme's, which a
/// receiver brings and may be as short as 8 characters) shows its first four only when it has at least 24, so the
/// hint never gives away much of one. A `whsk_` private key's hint is its public key.
pub fn secret_hint(secret: &str) -> String {
    // A private key is shown by its public key, whole: receivers need it, and it gives nothing away.
    if let Some(key) = private_key(secret) {
        return public_key(&key);
    }
    let shown = match secret.strip_prefix(SECRET_PREFIX) {
        Some(_) => SECRET_PREFIX.len() + 4,
        None if secret.chars().count() >= 24 => 4,
        None => 0,
    };
    let shown: String = secret.chars().take(shown).collect();
    format!("{shown}…")
}

/// The value stored to check at start-up that the configured master key is the one the database was created
/// with; without it, a wrong key would only show up as failed deliveries.
/// Why an endpoint's stored secrets cannot sign; recorded on a failed attempt (retried: not the receiver's fault).
pub const UNDECRYPTABLE_SECRET: &str = "signing secret could not be decrypted";
pub const NO_SIGNING_SECRET: &str = "endpoint has no signing secret";

/// The secrets that sign, in the order they sign: the active one, then retiring ones, newest first.
fn signing_order(sealed: &[EndpointSecret]) -> Vec<&EndpointSecret> {
    let mut sealed: Vec<&EndpointSecret> = sealed.iter().filter(|s| s.status != SecretStatus::Revoked).collect();
    sealed.sort_by_key(|s| (s.status != SecretStatus::Active, std::cmp::Reverse(s.version)));
    sealed
}

/// The versions of the secrets [`signing_keys`] returns, in its order, for a signature that names them.
pub fn signing_versions(sealed: &[EndpointSecret]) -> Vec<i64> {
    signing_order(sealed).iter().map(|secret| secret.version).collect()
}

/// The `whsec_…` texts that sign now, from the secrets the store says are live: the active secret first, then
/// retiring ones, newest first.
pub fn signing_keys(
    key: &MasterKey,
    endpoint_id: &str,
    sealed: &[EndpointSecret],
) -> Result<Vec<String>, &'static str> {
    let sealed = signing_order(sealed);
    if sealed.is_empty() {
        // Sending unsigned would only be rejected by the receiver, or worse, accepted.
        return Err(NO_SIGNING_SECRET);
    }
    sealed
        .iter()
        .map(|secret| {
            let opened = key.open(&secret.ciphertext, &secret_aad(endpoint_id, &secret.id));
            opened.ok().and_then(|bytes| String::from_utf8(bytes).ok()).ok_or_else(|| {
                tracing::error!(
                    endpoint_id,
                    version = secret.version,
                    "{UNDECRYPTABLE_SECRET}; is the master key the one the secret was stored with?"
                );
                UNDECRYPTABLE_SECRET
            })
        })
        .collect()
}

/// An endpoint's secrets that sign now, as a claim or group commit loads them (sealed), shared by that
/// endpoint's jobs of the batch. The first attempt to sign unseals them and sets up their keys for the others:
/// decrypting and keying per request cost as much as signing the request itself.
#[derive(Debug, Default)]
pub struct SigningSecrets {
    sealed: Vec<EndpointSecret>,
    /// One per scheme, so a signer always matches the scheme it is asked for; a batch normally needs one.
    standard: OnceLock<Signer>,
    stripe: OnceLock<Signer>,
    /// The jobs sharing these secrets share their endpoint's row too, and with it where `hmac` signs.
    hmac: OnceLock<Signer>,
}

impl SigningSecrets {
    pub fn new(sealed: Vec<EndpointSecret>) -> Self {
        SigningSecrets { sealed, ..SigningSecrets::default() }
    }

    pub fn sealed(&self) -> &[EndpointSecret] {
        &self.sealed
    }

    /// The signer for these secrets as [`signing_keys`] unseals them with `key`, which must be this process's
    /// one master key. A failure is not kept: every attempt it fails reports it, as the first did.
    pub fn signer(&self, key: &MasterKey, endpoint: &Endpoint) -> Result<&Signer, &'static str> {
        let scheme = endpoint.signature_scheme;
        let signer = match scheme {
            SignatureScheme::Standard => &self.standard,
            SignatureScheme::Stripe => &self.stripe,
            SignatureScheme::Hmac => &self.hmac,
        };
        if let Some(ready) = signer.get() {
            return Ok(ready);
        }
        let keys = signing_keys(key, &endpoint.id, &self.sealed)?;
        let versions = signing_versions(&self.sealed);
        Ok(signer.get_or_init(|| Signer::new(scheme, &keys).with_header(endpoint.signature_header.as_ref(), &versions)))
    }
}

pub const KEY_CHECK_META: &str = "master_key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"switchyard master key check";

pub fn key_check_value(key: &MasterKey) -> String {
    STANDARD.encode(key.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_META))
}

pub fn verify_key_check(key: &MasterKey, stored: &str) -> bool {
    STANDARD
        .decode(stored)
        .ok()
        .and_then(|sealed| key.open(&sealed, KEY_CHECK_META).ok())
        .is_some_and(|plain| plain == KEY_CHECK_PLAINTEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::parse(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn sealed_secret_opens_only_with_same_key_and_binding() {
        let sealed = key().seal(b"whsec_x", "ep_1:1");
        assert_eq!(key().open(&sealed, "ep_1:1").unwrap(), b"whsec_x");
        assert!(key().open(&sealed, "ep_2:1").is_err());
        let other = MasterKey::parse(&"cd".repeat(32)).unwrap();
        assert!(other.open(&sealed, "ep_1:1").is_err());
        assert!(key().open(&sealed[..5], "ep_1:1").is_err());
    }

    #[test]
    fn signing_secrets_unseal_once_per_scheme_and_keep_no_failure() {
        use crate::model::SignatureHeader;
        let plain = generate_signing_secret();
        let sealed = EndpointSecret {
            id: "sec_1".into(),
            endpoint_id: "ep_1".into(),
            tenant_id: "ten_1".into(),
            version: 1,
            status: SecretStatus::Active,
            ciphertext: key().seal(plain.as_bytes(), &secret_aad("ep_1", "sec_1")),
            hint: secret_hint(&plain),
            created_at: 0,
            expires_at: None,
        };
        let shared = SigningSecrets::new(vec![sealed.clone()]);
        let github = SignatureHeader {
            name: "x-hub-signature-256".into(),
            prefix: "sha256=".into(),
            timestamp: None,
            key_id: false,
        };
        let mut endpoint = crate::dispatch::send::tests::endpoint("https://example.com/", &[]);
        endpoint.signature_header = Some(github.clone());
        for &scheme in SignatureScheme::ALL {
            endpoint.signature_scheme = scheme;
            let signer = shared.signer(&key(), &endpoint).unwrap();
            assert!(std::ptr::eq(signer, shared.signer(&key(), &endpoint).unwrap()));
            assert_eq!(
                signer.headers("msg_1", 1_700_000_000_000, b"{}"),
                Signer::new(scheme, std::slice::from_ref(&plain)).with_header(Some(&github), &[]).headers(
                    "msg_1",
                    1_700_000_000_000,
                    b"{}"
                )
            );
        }

        endpoint.signature_scheme = SignatureScheme::Standard;
        let wrong_key = MasterKey::parse(&"cd".repeat(32)).unwrap();
        let fresh = SigningSecrets::new(vec![sealed]);
        assert_eq!(fresh.signer(&wrong_key, &endpoint).unwrap_err(), UNDECRYPTABLE_SECRET);
        assert!(fresh.signer(&key(), &endpoint).is_ok());
        let none = SigningSecrets::default();
        assert_eq!(none.signer(&key(), &endpoint).unwrap_err(), NO_SIGNING_SECRET);
    }

    /// The versions a `kid=` names are those of the secrets in the order they sign, whatever order the store
    /// gave them in; a revoked one neither signs nor is named.
    #[test]
    fn versions_follow_the_order_secrets_sign_in() {
        let secret = |version: i64, status: SecretStatus| {
            let text = format!("whsec_{}", STANDARD.encode([version as u8; 24]));
            let id = format!("sec_{version}");
            let ciphertext = key().seal(text.as_bytes(), &secret_aad("ep_1", &id));
            let secret = EndpointSecret {
                id,
                endpoint_id: "ep_1".into(),
                tenant_id: "ten_1".into(),
                version,
                status,
                ciphertext,
                hint: secret_hint(&text),
                created_at: 0,
                expires_at: None,
            };
            (secret, text)
        };
        let stored = [
            secret(1, SecretStatus::Retiring),
            secret(4, SecretStatus::Revoked),
            secret(3, SecretStatus::Active),
            secret(2, SecretStatus::Retiring),
        ];
        let sealed: Vec<EndpointSecret> = stored.iter().map(|(secret, _)| secret.clone()).collect();
        assert_eq!(signing_versions(&sealed), [3, 2, 1]);
        let texts = [&stored[2].1, &stored[3].1, &stored[0].1].map(String::clone);
        assert_eq!(signing_keys(&key(), "ep_1", &sealed).unwrap(), texts);
    }

    #[test]
    fn private_keys_are_seeds_or_seeds_with_their_public_key() {
        // RFC 8032's first test key.
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let public = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
        let key = private_key(&format!("whsk_{}", STANDARD.encode(&seed))).expect("a seed");
        assert_eq!(public_key(&key), format!("whpk_{}", STANDARD.encode(&public)));
        let pair = [seed.clone(), public.clone()].concat();
        assert!(private_key(&format!("whsk_{}", STANDARD.encode(&pair))).is_some(), "libsodium's 64 bytes");
        let mismatched = [seed.clone(), seed.clone()].concat();
        assert!(private_key(&format!("whsk_{}", STANDARD.encode(mismatched))).is_none());
        for bad in ["whsk_", "whsk_!!", &format!("whsk_{}", STANDARD.encode(&seed[..31])), "whsec_abc"] {
            assert!(private_key(bad).is_none(), "{bad}");
        }

        let generated = generate_private_key();
        assert!(is_private_key(&generated) && !is_signing_secret(&generated));
        let key = private_key(&generated).expect("a generated key parses");
        assert_ne!(generated, generate_private_key());
        // Its hint is its public key, whole; nothing of the private key.
        let hint = secret_hint(&generated);
        assert_eq!(hint, public_key(&key));
        assert!(is_public_key(&hint) && !is_public_key(&secret_hint(&generate_signing_secret())));
        assert!(!hint.contains(&generated["whsk_".len()..][..8]));
    }

    #[test]
    fn master_key_accepts_hex_and_base64_of_32_bytes_only() {
        assert!(MasterKey::parse(&"00".repeat(32)).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::parse(&"00".repeat(16)).is_err());
        assert!(MasterKey::parse("not a key").is_err());
    }

    #[test]
    fn key_file_is_created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/master.key");
        let (first, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let (second, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert!(verify_key_check(&second, &key_check_value(&first)));
        assert!(!verify_key_check(&key(), &key_check_value(&first)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn generated_secrets_are_standard_webhooks_form_and_hint_hides_them() {
        let secret = generate_signing_secret();
        let body = secret.strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(STANDARD.decode(body).unwrap().len(), 32);
        let hint = secret_hint(&secret);
        assert!(hint.len() < secret.len());
        assert!(secret.starts_with(hint.trim_end_matches('…')));
        assert_ne!(generate_signing_secret(), secret);
    }

    #[test]
    fn a_brought_secret_shows_little_or_nothing_in_its_hint() {
        assert_eq!(secret_hint("12345678"), "…");
        assert_eq!(secret_hint("an hmac secret of 23 ch"), "…");
        assert_eq!(secret_hint("an hmac secret of 24 cha"), "an h…");
        assert_eq!(secret_hint("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), "whsec_AAAA…");
    }

    #[test]
    fn signing_secrets_are_whsec_and_24_to_64_bytes_of_base64() {
        assert!(is_signing_secret(&generate_signing_secret()));
        assert!(is_signing_secret(&format!("whsec_{}", STANDARD.encode([7u8; 24]))));
        assert!(is_signing_secret(&format!("whsec_{}", STANDARD.encode([7u8; 64]))));
        assert!(is_signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "a Svix-style secret");
        assert!(!is_signing_secret(&format!("whsec_{}", STANDARD.encode([7u8; 23]))), "too short");
        assert!(!is_signing_secret(&format!("whsec_{}", STANDARD.encode([7u8; 65]))), "too long");
        assert!(!is_signing_secret(&STANDARD.encode([7u8; 32])), "no prefix");
        assert!(!is_signing_secret("whsec_not base64!"));
        assert!(!is_signing_secret(""));
    }
}
