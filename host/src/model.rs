//! Domain types shared by the store, the API and the dispatcher.
//!
//! Times are Unix milliseconds (`Millis`) everywhere below the API: both databases store them as BIGINT, they
//! sort and compare cheaply, and the API alone renders them as RFC 3339.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::same_json::same_json;

pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Generates a prefixed, time-ordered identifier (`evt_02f5k…`, 22 characters after the prefix): a UUIDv7's
/// millisecond timestamp and 42-bit per-process counter (which keep ids sortable by creation time, what cursor
/// pagination and the B-trees' append-at-the-end inserts want) and 22 of its random bits, in lowercase base 36.
///
/// Why not the UUID's 32 hex digits: every id is stored in its row and in two to five indexes, and crosses into
/// SQLite's group commit as JSON text, so its length is paid on every write. Ten characters fewer per id: 3 %
/// fewer instructions in every group commit and 8–10 % fewer bytes written per delivery (BENCHMARKS.md, eleventh
/// round). Ids minted in the old format (`evt_019a…`) still sort before every new one: both start with the
/// timestamp, and the new ids' second character counts time in steps a third shorter than the old ids' (which
/// is `1` from 2004 to 2039; the new ids' is `2` today). Lowercase letters and digits only, so PostgreSQL's
/// locale collations order them as bytes do.
pub fn new_id(prefix: &str) -> String {
    id_of(prefix, compact_v7(uuid::Uuid::now_v7().as_u128()))
}

/// A fresh id and the time it carries (milliseconds since the epoch). An event's `received_at` is that time, so a
/// window of receipt times is a range of ids too ([`first_id_at`]), which the index on `(tenant_id, id)` finds
/// without walking the tenant's whole history.
pub fn new_id_and_time(prefix: &str) -> (String, Millis) {
    let uuid = uuid::Uuid::now_v7().as_u128();
    (id_of(prefix, compact_v7(uuid)), (uuid >> 80) as Millis)
}

/// An id for a record of time `at` rather than now: a delivery, created at its event's receipt, and records made
/// with a time of their own (fixtures, imports). Ids of the same time sort in no particular order.
pub fn new_id_at(prefix: &str, at: Millis) -> String {
    let fresh = compact_v7(uuid::Uuid::now_v7().as_u128());
    id_of(prefix, (clamp_time(at) << 64) | (fresh & ((1 << 64) - 1)))
}

/// The smallest id minted at `at` or later: every id of that time or after sorts at or after it, every earlier
/// one before it.
pub fn first_id_at(prefix: &str, at: Millis) -> String {
    id_of(prefix, clamp_time(at) << 64)
}

/// A time in the 48 bits an id holds.
fn clamp_time(at: Millis) -> u128 {
    at.clamp(0, (1 << 48) - 1) as u128
}

fn id_of(prefix: &str, compact: u128) -> String {
    let digits = base36(compact);
    let mut id = String::with_capacity(prefix.len() + 1 + digits.len());
    id.push_str(prefix);
    id.push('_');
    // The digits are ASCII by construction.
    id.extend(digits.iter().map(|&digit| char::from(digit)));
    id
}

/// A UUIDv7's 48-bit timestamp, its 42-bit counter and the first 22 of its 32 random bits, in that order: 112
/// bits, ordered as the UUIDs were. The version and variant bits are the same in every UUIDv7.
fn compact_v7(uuid: u128) -> u128 {
    let timestamp = uuid >> 80;
    let counter_high = (uuid >> 64) & 0xfff;
    let counter_low_and_random = uuid & ((1 << 62) - 1);
    ((timestamp << 74) | (counter_high << 62) | counter_low_and_random) >> 10
}

/// Base 36, zero-padded to a fixed width so that the strings order as the numbers do. 36^22 > 2^112.
fn base36(value: u128) -> [u8; 22] {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // Eleven digits per half, each half below 2^57: the digits then come from u64 arithmetic, which compiles to
    // multiplications, where every digit of a u128 was two calls into the compiler's division routine.
    const HALF: u128 = 36u128.pow(11);
    let halves = [(value / HALF) as u64, (value % HALF) as u64];
    let mut encoded = [b'0'; 22];
    for (digits, mut half) in encoded.chunks_exact_mut(11).zip(halves) {
        for slot in digits.iter_mut().rev() {
            *slot = DIGITS[(half % 36) as usize];
            half /= 36;
        }
    }
    encoded
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        // Read from a string alone: serde would also take `{"hmac": null}` for `hmac`, and answer `1` with an error
        // serde_json calls a syntax error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case", try_from = "String")]
        pub enum $name { $($variant),+ }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                text.parse()
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown value `{other}`; expected one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(EndpointStatus {
    Active => "active",
    Paused => "paused",
    Disabled => "disabled",
});

string_enum!(
    /// How deliveries are signed (see [`crate::signing`]). `Hmac` is for receivers that already verify a plain
    /// HMAC-SHA256 of the body in a header of their own, as many home-grown systems do.
    SignatureScheme {
        Standard => "standard",
        Stripe => "stripe",
        Hmac => "hmac",
    }
);

/// Where the `hmac` and `stripe` schemes put their signature, for receivers that already read it elsewhere: the
/// header's name; for `hmac`, text the hex digest follows (`sha256=` for GitHub-style receivers); for `stripe`, the
/// unit of its `t=` timestamp (milliseconds, as receivers written against `Date.now()` expect) and whether each
/// signature names its secret's version (`kid=`). None on an endpoint:
/// [`SignatureHeader::default_for`] its scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampUnit>,
    /// For `stripe`: `kid=<secret version>` after each signature, for receivers that pick the secret by it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub key_id: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl SignatureHeader {
    /// Where `scheme` signs when the endpoint names no header; None for a scheme whose headers are fixed.
    pub fn default_for(scheme: SignatureScheme) -> Option<SignatureHeader> {
        let (name, timestamp) = match scheme {
            SignatureScheme::Standard => return None,
            SignatureScheme::Stripe => ("switchyard-signature", Some(TimestampUnit::Seconds)),
            SignatureScheme::Hmac => ("x-webhook-signature", None),
        };
        Some(SignatureHeader { name: name.into(), prefix: String::new(), timestamp, key_id: false })
    }
}

string_enum!(
    /// The unit of the `stripe` scheme's `t=` timestamp.
    TimestampUnit {
        Seconds => "seconds",
        Milliseconds => "milliseconds",
    }
);

string_enum!(
    /// `Retiring` secrets still sign until `expires_at`, so receivers can roll over without dropping events.
    SecretStatus {
        Active => "active",
        Retiring => "retiring",
        Revoked => "revoked",
    }
);

string_enum!(
    /// `Failed` means "the last attempt failed and another is scheduled"; `Dead` is the dead-letter queue;
    /// `Dropped` means the endpoint's filter plugin decided the event is not for it (never sent, kept on record).
    DeliveryStatus {
        Pending => "pending",
        Delivering => "delivering",
        Succeeded => "succeeded",
        Failed => "failed",
        Dead => "dead",
        Dropped => "dropped",
    }
);

string_enum!(
    /// What a tenant key may do: `All` of the tenant's API; only `Publish` events, for the services that publish
    /// and should not be able to read payloads, change endpoints or see their secrets; or only `Read` (every GET),
    /// for auditors, support staff and monitoring that should see everything and change nothing.
    KeyScope {
        All => "all",
        Publish => "publish",
        Read => "read",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// The tenant's own request rate limit, per second on each node; None: the server's `tenant_rate_limit`.
    pub rate_limit: Option<i64>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the key, kept in clear so a person can tell keys apart in a list.
    pub prefix: String,
    /// SHA-256 of the whole key; the key itself is never stored.
    pub key_hash: String,
    pub scope: KeyScope,
    /// Where requests with the key may come from; empty: anywhere.
    pub allowed_networks: Vec<ipnet::IpNet>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// One subscription: an event-type pattern (`payment.succeeded`, `payment.*`, `*`) and an optional RFC 9535
/// JSONPath predicate evaluated against `[envelope]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub description: String,
    pub status: EndpointStatus,
    /// Why the endpoint is paused or disabled (e.g. "receiver answered 410 Gone").
    pub status_reason: Option<String>,
    pub timeout_ms: i64,
    pub headers: BTreeMap<String, String>,
    /// Delays between attempts, overriding the default schedule.
    pub retry_schedule_ms: Option<Vec<i64>>,
    /// Total attempts (first one included), overriding `schedule.len() + 1`.
    pub max_attempts: Option<i64>,
    /// The most requests per second this node sends the endpoint; `None` for no limit.
    pub rate_limit: Option<i64>,
    pub signature_scheme: SignatureScheme,
    /// Where `hmac` signs; None for its default, and for the other schemes, which do not use it.
    pub signature_header: Option<SignatureHeader>,
    pub metadata: BTreeMap<String, String>,
    pub subscriptions: Vec<Subscription>,
    pub plugins: EndpointPlugins,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One plugin bound to an endpoint in one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginBinding {
    pub plugin: String,
    /// A sha256 pinning one loaded version; absent means "the latest loaded version".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Handed to the plugin as JSON text with every call. `null` counts as unset: the contract promises plugins
    /// `{}` then, and a plugin parsing its config as an object would fail every call on `null`.
    #[serde(default = "empty_config", deserialize_with = "config_or_empty")]
    pub config: serde_json::Value,
}

fn empty_config() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn config_or_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<serde_json::Value, D::Error> {
    let config = <serde_json::Value as Deserialize>::deserialize(deserializer)?;
    Ok(if config.is_null() { empty_config() } else { config })
}

/// The plugins an endpoint runs, by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPlugins {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<PluginBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<PluginBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<PluginBinding>,
}

impl Endpoint {
    /// The host of its URL, all of it that goes where others may read it (the audit log, notices): receivers'
    /// URLs often carry tokens in the path or query.
    pub fn url_host(&self) -> Option<String> {
        url::Url::parse(&self.url).ok().and_then(|u| u.host_str().map(str::to_string))
    }
}

impl EndpointPlugins {
    pub fn is_empty(&self) -> bool {
        self.filter.is_none() && self.transform.is_none() && self.retry_policy.is_none()
    }

    /// `(role, binding)` for each bound role, in a fixed order.
    pub fn bound(&self) -> impl Iterator<Item = (&'static str, &PluginBinding)> {
        [("filter", &self.filter), ("transform", &self.transform), ("retry_policy", &self.retry_policy)]
            .into_iter()
            .filter_map(|(role, binding)| binding.as_ref().map(|binding| (role, binding)))
    }
}

/// Which version of which plugin a delivery used in one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginUse {
    pub plugin: String,
    pub sha256: String,
}

/// What the filter and transform decided for a delivery, fixed at its first attempt so every retry sends the same
/// bytes. `body` is None when no transform is bound: the event's envelope is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedRequest {
    /// Role (`filter`, `transform`, `retry_policy`) → the version used.
    pub plugin_versions: BTreeMap<String, PluginUse>,
    pub body: Option<Vec<u8>>,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSecret {
    pub id: String,
    pub endpoint_id: String,
    pub tenant_id: String,
    pub version: i64,
    pub status: SecretStatus,
    /// AES-256-GCM ciphertext (nonce ‖ sealed secret); see `secrets`.
    pub ciphertext: Vec<u8>,
    /// A short, non-secret hint such as `whsec_AbCd…` for display.
    pub hint: String,
    pub created_at: Millis,
    /// For `Retiring`: when the secret stops signing.
    pub expires_at: Option<Millis>,
}

impl EndpointSecret {
    /// Whether it signs at `at`, as the store's `signing_secrets` query decides: the active secret, and retiring
    /// ones until they expire.
    pub fn signs_at(&self, at: Millis) -> bool {
        match self.status {
            SecretStatus::Active => true,
            SecretStatus::Retiring => self.expires_at.is_some_and(|expires| expires > at),
            SecretStatus::Revoked => false,
        }
    }
}

/// The SHA-256 (hex) of an event type schema's text: what names its compiled form on every node.
pub fn schema_digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventType {
    pub name: String,
    pub description: String,
    /// The JSON Schema an event's `data` must match, as JSON text; checked on publish (see
    /// [`event_schemas`](crate::event_schemas)).
    pub schema: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub tenant_id: String,
    pub event_type: String,
    /// The payload as received, kept as raw JSON text so it is never re-serialised differently.
    pub data: Box<RawValue>,
    pub idempotency_key: Option<String>,
    pub received_at: Millis,
}

impl Event {
    /// Whether `other` asks for the same event: the same type and the same `data` (see [`same_json`] for what
    /// may differ). What a reused idempotency key must match; ids and times differ between a request and its
    /// retry.
    pub fn same_content(&self, other: &Event) -> bool {
        self.event_type == other.event_type && same_json(&self.data, &other.data)
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.tenant_id == other.tenant_id
            && self.event_type == other.event_type
            && self.data.get() == other.data.get()
            && self.idempotency_key == other.idempotency_key
            && self.received_at == other.received_at
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub tenant_id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made over the delivery's whole life.
    pub attempts: i64,
    /// `attempts` when the delivery was last requeued by hand: the retry schedule restarts from there.
    pub schedule_offset: i64,
    pub next_attempt_at: Option<Millis>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    /// Set once the delivery has been prepared (filter and transform run); None before its first attempt.
    pub prepared: Option<PreparedRequest>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: String,
    pub tenant_id: String,
    pub delivery_id: String,
    /// 1-based, over the delivery's whole life.
    pub attempt_number: i64,
    pub started_at: Millis,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    /// Truncated to 4 KiB.
    pub response_body: Option<String>,
    /// Truncated to 500 characters.
    pub error: Option<String>,
    /// What the dispatcher concluded: succeeded, retry, dead, gone.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: String,
    pub tenant_id: Option<String>,
    /// `admin` or the API key id that acted.
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub details: serde_json::Value,
    pub at: Millis,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    tenant_id: &'a str,
    data: &'a RawValue,
}

impl Event {
    /// The JSON document receivers get and JSONPath predicates see: `{id, type, timestamp, tenant_id, data}`,
    /// with `timestamp` the RFC 3339 time the event was received.
    pub fn envelope(&self) -> String {
        serde_json::to_string(&Envelope {
            id: &self.id,
            event_type: &self.event_type,
            timestamp: rfc3339(self.received_at),
            tenant_id: &self.tenant_id,
            data: &self.data,
        })
        .expect("an envelope of strings and valid raw JSON always serialises")
    }
}

/// RFC 3339 in UTC with millisecond precision, the one format the API and payloads use for times.
pub fn rfc3339(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_binding_without_config_or_with_null_gets_an_empty_object() {
        let empty = serde_json::json!({});
        for text in [r#"{"plugin": "p"}"#, r#"{"plugin": "p", "config": null}"#] {
            assert_eq!(serde_json::from_str::<PluginBinding>(text).unwrap().config, empty, "{text}");
        }
        let set: PluginBinding = serde_json::from_str(r#"{"plugin": "p", "config": {"above": 1}}"#).unwrap();
        assert_eq!(set.config, serde_json::json!({"above": 1}));
    }

    #[test]
    fn envelope_carries_the_raw_payload_and_rfc3339_time() {
        let event = Event {
            id: "evt_1".into(),
            tenant_id: "ten_1".into(),
            event_type: "payment.succeeded".into(),
            data: RawValue::from_string(r#"{"amount": 1.50}"#.into()).unwrap(),
            idempotency_key: None,
            received_at: 1_700_000_000_123,
        };
        assert_eq!(
            event.envelope(),
            r#"{"id":"evt_1","type":"payment.succeeded","timestamp":"2023-11-14T22:13:20.123Z","tenant_id":"ten_1","data":{"amount": 1.50}}"#
        );
    }

    #[test]
    fn same_content_is_the_same_type_and_data() {
        let event = |event_type: &str, data: &str| Event {
            id: new_id("evt"),
            tenant_id: "ten_1".into(),
            event_type: event_type.into(),
            data: RawValue::from_string(data.into()).unwrap(),
            idempotency_key: Some("k".into()),
            received_at: 1,
        };
        let first = event("order.paid", r#"{"id": 7, "note": "é"}"#);
        assert!(first.same_content(&event("order.paid", r#"{"note":"\u00e9","id":7}"#)));
        assert!(!first.same_content(&event("order.paid", r#"{"id": 7.5, "note": "é"}"#)));
        assert!(!first.same_content(&event("order.refunded", first.data.get())));
    }

    #[test]
    fn new_ids_are_short_lowercase_and_in_creation_order() {
        let ids: Vec<String> = (0..20_000).map(|_| new_id("evt")).collect();
        for id in &ids {
            let digits = id.strip_prefix("evt_").unwrap();
            assert_eq!(digits.len(), 22, "{id}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()), "{id}");
        }
        // Strictly increasing: the counter orders ids minted in the same millisecond.
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn an_ids_time_bounds_it_among_ids_of_other_times() {
        let (id, at) = new_id_and_time("evt");
        assert!(first_id_at("evt", at) <= id && id < first_id_at("evt", at + 1), "{id} at {at}");
        assert!((at - now_millis()).abs() < 60_000, "{at}");
        for at in [0, 1_700_000_000_000, 1_700_000_000_001, (1 << 48) - 1] {
            let id = new_id_at("evt", at);
            assert_eq!(id.len(), 26, "{id}");
            assert!(first_id_at("evt", at) <= id, "{id} at {at}");
            assert!(at == (1 << 48) - 1 || id < first_id_at("evt", at + 1), "{id} at {at}");
        }
        assert!(new_id_at("evt", 1_700_000_000_000) < new_id_at("evt", 1_700_000_000_001));
        assert_eq!(first_id_at("evt", -5), first_id_at("evt", 0), "times before the epoch are the epoch");
    }

    #[test]
    fn new_ids_sort_after_ids_in_the_old_format() {
        let old = format!("dlv_{}", uuid::Uuid::now_v7().simple());
        let new = new_id("dlv");
        assert!(old < new, "{old} should sort before {new}");
        // The second digit decides (the first is `0` in both), in byte order and in any collation that orders
        // digits and then letters: the new format's counts time faster, so it is ahead from today on.
        assert!(old.as_bytes()[5] < new.as_bytes()[5], "{old} {new}");
    }

    #[test]
    fn compact_ids_keep_the_uuids_order_and_timestamp() {
        let at = |millis: u128, counter: u128, random: u128| {
            // A UUIDv7 laid out as the uuid crate lays it: timestamp, version, 12 counter bits, variant, the other
            // 30 counter bits, 32 random bits.
            millis << 80 | 0x7 << 76 | (counter >> 30) << 64 | 0b10 << 62 | (counter & ((1 << 30) - 1)) << 32 | random
        };
        let first = compact_v7(at(1_800_000_000_000, 5, 0xffff_ffff));
        let second = compact_v7(at(1_800_000_000_000, 6, 0));
        let later = compact_v7(at(1_800_000_000_001, 0, 0));
        assert!(first < second && second < later);
        assert_eq!(later >> 64, 1_800_000_000_001, "the timestamp leads");
        assert!(base36(first) < base36(second) && base36(second) < base36(later));
        assert_eq!(&base36(0), b"0000000000000000000000");
        assert_eq!(&base36(35), b"000000000000000000000z");
        assert_eq!(&base36(36), b"0000000000000000000010");
        // Where the two halves meet.
        assert_eq!(&base36(36u128.pow(11) - 1), b"00000000000zzzzzzzzzzz");
        assert_eq!(&base36(36u128.pow(11)), b"0000000000100000000000");
        // The widest compact id fits in 22 digits (the value from Python's integers).
        assert_eq!(&base36((1 << 112) - 1), b"asfdhsvozt9q6jptrryn0f");
    }

    #[test]
    fn status_strings_round_trip() {
        for status in DeliveryStatus::ALL {
            assert_eq!(status.as_str().parse::<DeliveryStatus>().unwrap(), *status);
        }
        assert!("nope".parse::<EndpointStatus>().unwrap_err().contains("active, paused, disabled"));
    }

    #[test]
    fn enums_are_read_from_their_strings_alone() {
        for status in DeliveryStatus::ALL {
            let json = serde_json::to_string(status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<DeliveryStatus>(&json).unwrap(), *status);
        }
        for not_a_string in [r#"{"hmac": null}"#, "1", "true", r#"["hmac"]"#, "null"] {
            assert!(serde_json::from_str::<SignatureScheme>(not_a_string).is_err(), "{not_a_string}");
        }
        let unknown = serde_json::from_str::<SignatureScheme>(r#""hmac-sha512""#).unwrap_err().to_string();
        assert!(unknown.contains("expected one of: standard, stripe, hmac"), "{unknown}");
    }
}
