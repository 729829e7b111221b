//! Persistence. Everything the router remembers goes through the [`Store`] trait.
//!
//! One SQL implementation ([`sql::SqlStore`]) serves both databases through sqlx's `Any` driver: the queries are
//! portable (`$N` placeholders, `ON CONFLICT`, `RETURNING`), and the few places where SQLite and PostgreSQL must
//! differ (connection set-up, migrations, claiming with `FOR UPDATE SKIP LOCKED`) live in [`sql::Dialect`].
//! The conformance suite in `tests/store_conformance.rs` runs the same assertions against both.
//!
//! Invariants every implementation keeps:
//! - every query that reads or changes tenant data is scoped by `tenant_id`; an object of another tenant is
//!   indistinguishable from one that does not exist;
//! - events and attempts are never updated after insert, the audit log is append-only;
//! - an event and all of its deliveries are written in one transaction;
//! - an event's `received_at` is the time in its id ([`crate::model::new_id_and_time`]), so a window of receipt
//!   times is also a range of ids, which the tenant's id index finds without reading the tenant's history.

pub mod sql;

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{
    ApiKey, Attempt, AuditEntry, Delivery, DeliveryStatus, Endpoint, EndpointSecret, EndpointStatus, Event, EventType,
    Millis, PreparedRequest, Subscription, Tenant,
};
use crate::secrets::SigningSecrets;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (duplicate name, key, …).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store cannot take work right now (e.g. the process is shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A row held a value this version cannot read (e.g. an unknown status string).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Whether the database refused the write for want of space (SQLite's `SQLITE_FULL`, PostgreSQL's
    /// `disk_full`): nothing is wrong with the request, and it can succeed once space is freed.
    pub fn is_out_of_space(&self) -> bool {
        let StoreError::Database(error) = self else { return false };
        error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "13" || code == "53100")
    }

    /// Whether PostgreSQL rolled the transaction back to break a deadlock or a serialization conflict with
    /// another (`40P01`, `40001`): nothing was stored, and the same request can succeed when sent again.
    pub fn is_transient_conflict(&self) -> bool {
        let StoreError::Database(error) = self else { return false };
        error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "40P01" || code == "40001")
    }
}

/// Keyset pagination: results are ordered newest first by id (ids are time-ordered), `cursor` is the last id of
/// the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub cursor: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct EndpointFilter {
    pub status: Option<EndpointStatus>,
    /// Only endpoints with a subscription whose pattern selects this event type (by type; filters aside).
    pub event_type: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// On `created_at`, inclusive.
    pub since: Option<Millis>,
    /// On `created_at`, exclusive.
    pub until: Option<Millis>,
    /// On `updated_at` (for a dead letter, when it died), inclusive.
    pub updated_since: Option<Millis>,
    /// On `updated_at`, exclusive.
    pub updated_until: Option<Millis>,
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub resource_id: Option<String>,
}

/// An endpoint's status and its reason, as [`Store::set_endpoint_status`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBefore {
    pub status: EndpointStatus,
    pub reason: Option<String>,
}

/// What a delivery sent again by hand (retry, requeue) sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resend {
    /// What its first attempt prepared, byte for byte: a receiver that de-duplicates on `webhook-id` sees the
    /// same payload again.
    #[default]
    SameRequest,
    /// What the endpoint's filter and transform make of the event at the next attempt, with the plugins and
    /// configs bound then: after a plugin, or its config, was fixed.
    RerunPlugins,
}

impl Resend {
    /// The API's `rerun_plugins` flag.
    pub fn rerunning_plugins(rerun_plugins: bool) -> Resend {
        if rerun_plugins {
            Resend::RerunPlugins
        } else {
            Resend::SameRequest
        }
    }
}

/// What [`Store::send_event_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentTo {
    /// A new delivery, pending and due at once.
    Created(Box<Delivery>),
    /// The event already has a delivery to that endpoint, this one: retry it instead.
    Exists(String),
    NoEvent,
    NoEndpoint,
}

/// Which dead letters to requeue.
#[derive(Debug, Clone)]
pub enum RequeueSelector {
    Ids(Vec<String>),
    /// The dead letters the filter lists (its `status` is ignored).
    Matching(DeliveryFilter),
}

#[derive(Debug, Clone)]
pub struct NewSecret {
    pub id: String,
    pub ciphertext: Vec<u8>,
    pub hint: String,
}

/// One event to publish, with the endpoints it fans out to (already matched by the caller).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    /// One per matching endpoint.
    pub deliveries: Vec<NewDelivery>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: String,
    pub endpoint_id: String,
    /// Set when the publishing process sends the delivery itself right after the commit: it is stored
    /// `delivering` under this lease instead of `pending`, so no claim is needed. If that process dies, the lease
    /// expires and any node claims the delivery as usual.
    pub lease: Option<Lease>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub event_id: String,
    pub deliveries: i64,
    /// True when an earlier event with the same idempotency key was returned instead of storing this one.
    pub replayed: bool,
    /// The ids of the deliveries stored under their [`NewDelivery::lease`], in input order: the caller owns
    /// them now. (A delivery whose endpoint was deleted meanwhile is not stored, so it is not here either.)
    pub leased: Vec<String>,
}

/// A claimed delivery with what the dispatcher needs to send it. The event, the endpoint and its secrets are
/// shared by the jobs of one claim or one group commit (ten deliveries of one event fan out to ten endpoints).
#[derive(Debug, Clone)]
pub struct DispatchJob {
    pub delivery: Delivery,
    pub event: Arc<JobEvent>,
    pub endpoint: Arc<JobEndpoint>,
    /// The endpoint's secrets that sign at claim time (what [`Store::signing_secrets`] answers), loaded with the
    /// claim so an attempt needs no query of its own.
    pub signing_secrets: Arc<SigningSecrets>,
}

/// An event as its jobs share it, with the envelope every delivery without a transform sends, rendered once
/// rather than once per endpoint.
#[derive(Debug)]
pub struct JobEvent {
    pub event: Event,
    pub envelope: Bytes,
}

impl From<Event> for JobEvent {
    fn from(event: Event) -> Self {
        let envelope = Bytes::from(event.envelope());
        JobEvent { event, envelope }
    }
}

impl Deref for JobEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// An endpoint as its jobs share it, with its URL parsed once rather than once per request.
#[derive(Debug)]
pub struct JobEndpoint {
    pub endpoint: Endpoint,
    /// None if the URL does not parse. The API only stores URLs that do, so this is a row written some other
    /// way; its attempts fail, visibly, instead of the claim.
    pub url: Option<reqwest::Url>,
}

impl From<Endpoint> for JobEndpoint {
    fn from(endpoint: Endpoint) -> Self {
        let url = reqwest::Url::parse(&endpoint.url).ok();
        JobEndpoint { endpoint, url }
    }
}

impl Deref for JobEndpoint {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// `secrets` grouped by endpoint, each group ready to be shared by that endpoint's jobs.
pub fn secrets_by_endpoint(secrets: Vec<EndpointSecret>) -> HashMap<String, Arc<SigningSecrets>> {
    let mut grouped: HashMap<String, Vec<EndpointSecret>> = HashMap::new();
    for secret in secrets {
        grouped.entry(secret.endpoint_id.clone()).or_default().push(secret);
    }
    grouped.into_iter().map(|(endpoint_id, secrets)| (endpoint_id, Arc::new(SigningSecrets::new(secrets)))).collect()
}

/// The result of one attempt, written atomically with the delivery's new state.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub attempt: Attempt,
    /// The delivery's endpoint, which the attempt's hourly counts go to (see [`crate::hourly`]).
    pub endpoint_id: String,
    /// `Succeeded`, `Failed` (another attempt at `next_attempt_at`) or `Dead`.
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<Millis>,
    /// Set when the receiver asked to stop (410 Gone): the endpoint is disabled with this reason.
    pub disable_endpoint: Option<String>,
    /// Set on the attempt that prepared the delivery (ran its filter and transform): stored with the attempt so
    /// later attempts send the same request.
    pub prepared: Option<PreparedRequest>,
}

/// A delivery its endpoint's filter plugin dropped.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub tenant_id: String,
    pub delivery_id: String,
    /// The plugin versions that decided.
    pub prepared: PreparedRequest,
    pub reason: String,
    pub at: Millis,
}

/// What needs an operator's eye in one tenant: its deliveries in each status but `succeeded` (waiting, in flight,
/// parked) and its endpoints in each status. A delivery count stops at the limit asked for, so the answer costs
/// the same however large a dead-letter queue grows; a count equal to the limit means "at least".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCounts {
    /// Every [`DeliveryStatus`] but `Succeeded`, in [`DeliveryStatus::ALL`] order.
    pub deliveries: Vec<(DeliveryStatus, u64)>,
    /// Every [`EndpointStatus`], in [`EndpointStatus::ALL`] order.
    pub endpoints: Vec<(EndpointStatus, u64)>,
}

/// See [`Store::server_counts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// `pending` and `failed` deliveries, of paused and disabled endpoints too, at most the limit asked for.
    pub waiting_deliveries: u64,
    /// Every [`EndpointStatus`], in [`EndpointStatus::ALL`] order.
    pub endpoints: Vec<(EndpointStatus, u64)>,
}

/// What attempts did in some span of time: how many there were and how many failed, and how many deliveries they
/// finished, delivered or dead. Deliveries dead-lettered without an attempt (their endpoint deleted) are not in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptCounts {
    pub attempts: u64,
    pub failed_attempts: u64,
    pub succeeded: u64,
    pub dead: u64,
    /// The time the attempts counted in `timed_attempts` took, summed: hours counted before the stores kept it
    /// have attempts without time.
    pub attempt_ms: u64,
    pub timed_attempts: u64,
    /// Deliveries finished (delivered or dead) by an attempt after their first: the ones that needed retries.
    pub retried: u64,
    /// The finished deliveries counted with their attempt number, which `retried` is a share of: hours counted
    /// before the stores kept it have finished deliveries without.
    pub counted_finishes: u64,
}

impl AttemptCounts {
    /// The counts one recorded attempt adds.
    pub fn of(outcome: &AttemptOutcome) -> Self {
        let status = outcome.status;
        let finished = matches!(status, DeliveryStatus::Succeeded | DeliveryStatus::Dead);
        AttemptCounts {
            attempts: 1,
            failed_attempts: u64::from(status != DeliveryStatus::Succeeded),
            succeeded: u64::from(status == DeliveryStatus::Succeeded),
            dead: u64::from(status == DeliveryStatus::Dead),
            attempt_ms: outcome.attempt.duration_ms.max(0) as u64,
            timed_attempts: 1,
            retried: u64::from(finished && outcome.attempt.attempt_number > 1),
            counted_finishes: u64::from(finished),
        }
    }

    pub fn add(&mut self, other: AttemptCounts) {
        self.attempts += other.attempts;
        self.failed_attempts += other.failed_attempts;
        self.succeeded += other.succeeded;
        self.dead += other.dead;
        self.attempt_ms += other.attempt_ms;
        self.timed_attempts += other.timed_attempts;
        self.retried += other.retried;
        self.counted_finishes += other.counted_finishes;
    }

    /// The share of finished deliveries that needed more than one attempt. `None` when none finished (of those
    /// counted with their attempt number).
    pub fn retry_rate(&self) -> Option<f64> {
        (self.counted_finishes > 0).then(|| self.retried as f64 / self.counted_finishes as f64)
    }

    /// How long an attempt took on average, to the receiver's answer or to the failure (a timeout counts its
    /// whole wait). `None` without attempts.
    pub fn mean_attempt_ms(&self) -> Option<f64> {
        (self.timed_attempts > 0).then(|| self.attempt_ms as f64 / self.timed_attempts as f64)
    }

    /// The share of finished deliveries that were delivered, retries included: what a receiver's owner means by
    /// "success rate". `None` when no delivery finished.
    pub fn success_rate(&self) -> Option<f64> {
        let finished = self.succeeded + self.dead;
        (finished > 0).then(|| self.succeeded as f64 / finished as f64)
    }
}

/// One endpoint's [`AttemptCounts`] in the hour that starts at `hour_start` (UTC, in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHour {
    pub tenant_id: String,
    pub endpoint_id: String,
    pub hour_start: Millis,
    pub counts: AttemptCounts,
}

/// What a tenant published of one event type in some span of time: the events stored (not those an idempotency
/// key answered with an earlier one) and the deliveries they were routed to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishedCounts {
    pub events: u64,
    pub deliveries: u64,
}

impl PublishedCounts {
    pub fn add(&mut self, other: PublishedCounts) {
        self.events += other.events;
        self.deliveries += other.deliveries;
    }
}

/// One event type's [`PublishedCounts`] in the hour that starts at `hour_start` (UTC, in milliseconds), counted
/// in the hour its events were received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeHour {
    pub tenant_id: String,
    pub event_type: String,
    pub hour_start: Millis,
    pub counts: PublishedCounts,
}

/// Who the audit log names for what the server decided itself.
pub const SERVER_ACTOR: &str = "switchyard";
/// The audit action of an endpoint the server disabled, written in the transaction that disables it: what
/// [`notices`](crate::notices) announces.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// An attempt that put its delivery in the dead-letter queue, with the delivery's event and endpoint: what a
/// `switchyard.delivery.dead` notice names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadAttempt {
    pub attempt: Attempt,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
}

/// A plugin's latest upload through the API, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUpload {
    pub name: String,
    /// The version uploaded; once deleted, the version that was deleted.
    pub sha256: String,
    pub deleted: bool,
    pub changed_at: Millis,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
    /// Lets go of the database at shutdown, leaving it complete in its own files: a copy of an SQLite database
    /// file taken after a clean stop is a whole backup.
    async fn close(&self);

    /// Small key/value facts about the installation (e.g. the master-key check value).
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()>;

    // Tenants and API keys.
    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
    /// Replaces the tenant's name and rate limit. Returns whether it exists.
    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<bool>;
    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self, page: &Page) -> StoreResult<Vec<Tenant>>;
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn list_api_keys(&self, tenant_id: &str, page: &Page) -> StoreResult<Vec<ApiKey>>;
    /// The tenant's key by id, revoked or not.
    async fn get_api_key(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ApiKey>>;
    /// Replaces a live key's name, hash and networks with `after`'s, if they are still `before`'s. Returns false
    /// when no live key of that tenant has the id, or when another change came first.
    async fn update_api_key(&self, before: &ApiKey, after: &ApiKey) -> StoreResult<bool>;
    /// Returns false when no live key of that tenant has this id.
    async fn revoke_api_key(&self, tenant_id: &str, id: &str, at: Millis) -> StoreResult<bool>;
    /// A key that is not revoked, by the SHA-256 of its text.
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;

    // Endpoints, subscriptions and secrets.
    /// Stores the endpoint, its subscriptions and its first (active, version 1) secret.
    async fn create_endpoint(&self, endpoint: &Endpoint, secret: &NewSecret) -> StoreResult<()>;
    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Endpoint>>;
    async fn list_endpoints(&self, tenant_id: &str, filter: &EndpointFilter, page: &Page)
        -> StoreResult<Vec<Endpoint>>;
    /// Replaces every setting (url … plugins, subscriptions) and `updated_at`; not the status, which only
    /// `set_endpoint_status` changes, so an update cannot undo a pause or a disable it did not see. A changed
    /// `rate_limit` makes the deliveries put off for the old one due at once (see [`Store::defer`]).
    async fn update_endpoint(&self, endpoint: &Endpoint) -> StoreResult<bool>;
    /// Deletes the endpoint with its subscriptions and secrets; its unfinished deliveries become dead letters
    /// ("endpoint deleted") so the record of what was accepted survives.
    async fn delete_endpoint(&self, tenant_id: &str, id: &str, at: Millis) -> StoreResult<bool>;
    /// Sets the endpoint's status and reason; returns the ones it replaced (None: no such endpoint), read in the
    /// same transaction.
    async fn set_endpoint_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: EndpointStatus,
        reason: Option<&str>,
        at: Millis,
    ) -> StoreResult<Option<StatusBefore>>;
    async fn replace_subscriptions(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        subscriptions: &[Subscription],
        at: Millis,
    ) -> StoreResult<bool>;
    /// `(tenant id, endpoint id)` of every endpoint, of any tenant, that binds the plugin `name` in some role.
    async fn endpoints_binding_plugin(&self, name: &str) -> StoreResult<Vec<(String, String)>>;
    /// Active endpoints of a tenant with their subscriptions: the candidates for fan-out.
    async fn active_endpoints(&self, tenant_id: &str) -> StoreResult<Arc<Vec<Endpoint>>>;
    /// All versions, newest first.
    async fn list_secrets(&self, tenant_id: &str, endpoint_id: &str) -> StoreResult<Vec<EndpointSecret>>;
    /// Adds `secret` as the new active version; the previous active one becomes retiring until `retire_until`
    /// (revoked at once when `retire_until <= at`). Returns the new version's row, or None for an unknown
    /// endpoint.
    async fn rotate_secret(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        secret: &NewSecret,
        retire_until: Millis,
        at: Millis,
    ) -> StoreResult<Option<EndpointSecret>>;
    /// Secrets that sign at `at`: the active one and retiring ones not yet expired.
    async fn signing_secrets(&self, endpoint_id: &str, at: Millis) -> StoreResult<Vec<EndpointSecret>>;
    /// [`signing_secrets`](Self::signing_secrets) of several endpoints (of any tenants) at once, in any order.
    async fn signing_secrets_of(&self, endpoint_ids: &[String], at: Millis) -> StoreResult<Vec<EndpointSecret>>;

    // Event types.
    /// Creates the type (`created_at` from `wanted`) or replaces the stored one's description and schema;
    /// returns the stored row and whether this call created it.
    async fn register_event_type(&self, tenant_id: &str, wanted: &EventType) -> StoreResult<(EventType, bool)>;
    async fn get_event_type(&self, tenant_id: &str, name: &str) -> StoreResult<Option<EventType>>;
    async fn list_event_types(&self, tenant_id: &str, page: &Page) -> StoreResult<Vec<EventType>>;
    /// `(name, SHA-256 of the schema's text)` (see [`schema_digest`](crate::model::schema_digest)) of each of the
    /// tenant's event types that has a schema, in name order.
    async fn event_type_schemas(&self, tenant_id: &str) -> StoreResult<Vec<(String, String)>>;

    // Events.
    /// Stores each event and its deliveries in one transaction, registering unknown event types (not Switchyard's
    /// own, its test events). An event whose
    /// idempotency key the tenant already used is not stored again: the first event's result is returned with
    /// `replayed`. Results are in input order.
    async fn publish(&self, events: &[NewEvent]) -> StoreResult<Vec<Published>>;
    async fn get_event(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Event>>;
    /// The tenant's events stored under any of these idempotency keys, in any order.
    async fn events_by_idempotency_keys(&self, tenant_id: &str, keys: &[String]) -> StoreResult<Vec<Event>>;
    async fn list_events(&self, tenant_id: &str, filter: &EventFilter, page: &Page) -> StoreResult<Vec<Event>>;

    // Deliveries and dead letters.
    async fn get_delivery(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Delivery>>;
    /// Newest first. A listed delivery's `prepared` holds its plugin versions only: the request's body, content
    /// type and headers (up to `max_payload_bytes` each) are read by [`Store::get_delivery`] and the claims.
    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> StoreResult<Vec<Delivery>>;
    /// See [`TenantCounts`]; each delivery count is at most `limit`.
    async fn tenant_counts(&self, tenant_id: &str, limit: u64) -> StoreResult<TenantCounts>;
    /// Every tenant's deliveries waiting for an attempt (`pending` or `failed`), counted up to `limit`, and
    /// endpoints by status: what `/metrics` reads at each scrape.
    async fn server_counts(&self, limit: u64) -> StoreResult<ServerCounts>;
    /// Adds each row's counts to those its endpoint's hour has already (none: zero).
    async fn add_endpoint_hours(&self, hours: &[EndpointHour]) -> StoreResult<()>;
    /// The tenant's counts in each hour that starts at or after `since` and has any, summed over its endpoints
    /// (deleted ones included) or only `endpoint_id`'s; oldest first, as `(hour_start, counts)`.
    async fn tenant_hours(
        &self,
        tenant_id: &str,
        endpoint_id: Option<&str>,
        since: Millis,
    ) -> StoreResult<Vec<(Millis, AttemptCounts)>>;
    /// Each of `endpoint_ids`' counts summed over the hours that start in `hours`, for those of the tenant's
    /// endpoints (deleted ones included) that have any; in no particular order.
    async fn endpoint_totals(
        &self,
        tenant_id: &str,
        endpoint_ids: &[String],
        hours: Range<Millis>,
    ) -> StoreResult<Vec<(String, AttemptCounts)>>;
    /// Adds each row's counts to those its event type's hour has already (none: zero).
    async fn add_event_type_hours(&self, hours: &[EventTypeHour]) -> StoreResult<()>;
    /// Each event type the tenant published in the hours that start in `hours`, with its counts summed over them;
    /// in no particular order.
    async fn event_type_totals(
        &self,
        tenant_id: &str,
        hours: Range<Millis>,
    ) -> StoreResult<Vec<(String, PublishedCounts)>>;
    /// Removes the hours (endpoints', tenants' and event types') that started before `before`; returns how many
    /// rows went.
    async fn prune_hours(&self, before: Millis) -> StoreResult<u64>;
    /// Oldest first.
    async fn list_attempts(&self, tenant_id: &str, delivery_id: &str) -> StoreResult<Vec<Attempt>>;
    /// Schedules an immediate attempt of a delivery that is not being delivered right now, restarting its retry
    /// schedule. Returns the updated delivery; None when unknown, currently `delivering`, or its endpoint deleted.
    async fn retry_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        at: Millis,
        resend: Resend,
    ) -> StoreResult<Option<Delivery>>;
    /// A new delivery of a stored event to one endpoint of its tenant, due at once, whatever the endpoint's
    /// subscriptions: an operator sending an event the endpoint missed (published while it was paused, say).
    /// At most one delivery per event and endpoint. `delivery_id` carries the time `at` (it sorts among
    /// deliveries created then: see [`crate::model::new_id_and_time`]).
    async fn send_event_to(
        &self,
        tenant_id: &str,
        event_id: &str,
        endpoint_id: &str,
        delivery_id: &str,
        at: Millis,
    ) -> StoreResult<SentTo>;
    /// Events received in `filter`'s window (and of its type, if it names one) that have no delivery to
    /// `endpoint_id`, oldest first, after `page.cursor`: what replaying the events an endpoint missed walks
    /// through, a page at a time.
    async fn events_missed_by(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        filter: &EventFilter,
        page: &Page,
    ) -> StoreResult<Vec<Event>>;
    /// A delivery to `endpoint_id`, due at `at`, for each of `event_ids` (a few thousand at most: one
    /// transaction) that has none yet. Returns how many were created; `None` if the tenant has no such endpoint.
    async fn send_events_to(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        event_ids: &[String],
        at: Millis,
    ) -> StoreResult<Option<u64>>;
    /// Moves dead deliveries back to pending (schedule restarted); returns how many moved. A dead letter another
    /// transaction is changing at that moment (another requeue, on PostgreSQL) is left to it, not waited for.
    async fn requeue_dead(
        &self,
        tenant_id: &str,
        selector: &RequeueSelector,
        at: Millis,
        resend: Resend,
    ) -> StoreResult<u64>;

    // Dispatch.
    /// Leases up to `limit` due deliveries (pending or failed with `next_attempt_at <= now`, or delivering with
    /// an expired lease) whose endpoint is active, oldest due first. Safe to call from several processes.
    async fn claim_due(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> StoreResult<Vec<DispatchJob>>;
    /// Records an attempt and the delivery's new state, if `owner` still holds the lease. Returns false (and
    /// writes nothing) when the lease was lost.
    async fn record_attempt(&self, owner: &str, outcome: &AttemptOutcome) -> StoreResult<bool> {
        let recorded = self.record_attempts(owner, std::slice::from_ref(outcome)).await?;
        Ok(recorded.first().copied().unwrap_or(false))
    }
    /// [`record_attempt`](Self::record_attempt) for many outcomes in one transaction: all are written, or none
    /// (on error). Returns, in input order, whether each one's lease was still held.
    async fn record_attempts(&self, owner: &str, outcomes: &[AttemptOutcome]) -> StoreResult<Vec<bool>>;
    /// One group commit: [`publish`](Self::publish) `events` and [`record_attempts`](Self::record_attempts)
    /// `attempts` (either may be empty). Each part's result says whether that part was stored; an implementation
    /// may write both in one transaction (then they fail together) or separately.
    async fn write_batch(
        &self,
        events: &[NewEvent],
        owner: &str,
        attempts: &[AttemptOutcome],
    ) -> (StoreResult<Vec<Published>>, StoreResult<Vec<bool>>) {
        let published = if events.is_empty() { Ok(Vec::new()) } else { self.publish(events).await };
        let recorded = if attempts.is_empty() { Ok(Vec::new()) } else { self.record_attempts(owner, attempts).await };
        (published, recorded)
    }
    /// Marks a leased delivery `dropped` (its filter said no), if `owner` still holds the lease.
    async fn record_drop(&self, owner: &str, dropped: &Dropped) -> StoreResult<bool>;
    /// Gives leased deliveries back unchanged (graceful shutdown before an attempt started).
    async fn release(&self, owner: &str, delivery_ids: &[String]) -> StoreResult<()>;
    /// Gives leased deliveries back due at a later time, each `(delivery id, due at)`, with no attempt recorded:
    /// a rate-limited endpoint's deliveries that must wait their turn. Those whose lease `owner` lost are skipped.
    async fn defer(&self, owner: &str, deferrals: &[(String, Millis)]) -> StoreResult<()>;
    /// Makes the deliveries of endpoint `endpoint_id` that wait for their first attempt due at `now`, those due
    /// later: deliveries put off while the endpoint was slow, once it answers quickly again. Returns how many.
    async fn bring_forward(&self, tenant_id: &str, endpoint_id: &str, now: Millis) -> StoreResult<u64>;
    /// Gives back every lease not held by `owner`. Only for the embedded single-node database, at start-up: no
    /// other process can be delivering, so a lease left by a crashed run need not wait to expire.
    async fn release_foreign_leases(&self, owner: &str) -> StoreResult<u64>;
    /// The earliest `next_attempt_at` among waiting deliveries of active endpoints, to know how long to sleep.
    async fn next_due_at(&self) -> StoreResult<Option<Millis>>;

    // Plugins uploaded through the API, kept for every node to install (see `plugin::sync`).
    /// Makes `wasm` (whose sha256 is `sha256`) the latest upload of plugin `name`.
    async fn put_plugin_upload(&self, name: &str, sha256: &str, wasm: &[u8], at: Millis) -> StoreResult<()>;
    /// Marks plugin `name` deleted if `sha256` is still its latest upload. Returns whether it was.
    async fn delete_plugin_upload(&self, name: &str, sha256: &str, at: Millis) -> StoreResult<bool>;
    /// Every plugin's latest upload or deletion, by name, without the components' bytes.
    async fn plugin_uploads(&self) -> StoreResult<Vec<PluginUpload>>;
    /// The bytes of plugin `name`, if `sha256` is still its latest upload.
    async fn plugin_upload_wasm(&self, name: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>>;

    // Audit log.
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// A tenant's entries, or with `tenant_id: None` the server's own (those recorded without a tenant).
    async fn list_audit(
        &self,
        tenant_id: Option<&str>,
        filter: &AuditFilter,
        page: &Page,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Every tenant's entries of `action`, oldest first (by id), after `page.cursor`.
    async fn tenant_audit_after(&self, action: &str, page: &Page) -> StoreResult<Vec<AuditEntry>>;
    /// Every tenant's attempts that dead-lettered their delivery (outcome `dead` or `gone`), oldest first (by id),
    /// after `page.cursor`.
    async fn dead_attempts_after(&self, page: &Page) -> StoreResult<Vec<DeadAttempt>>;
}
