//! The store conformance suite: every case runs through `&dyn Store` against SQLite (a temporary file) and
//! PostgreSQL (a fresh database per case, see `support/store_pg.rs`), so both backends keep the semantics the
//! `Store` trait documents. Each case gets its own database, so cases may assert on global state (claims,
//! `next_due_at`) without seeing each other's rows.

#[path = "support/store_pg.rs"]
mod store_pg;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use serde_json::json;
use serde_json::value::RawValue;
use switchyard::model::{
    first_id_at, new_id, new_id_at, schema_digest, ApiKey, Attempt, AuditEntry, Delivery, DeliveryStatus, Endpoint,
    EndpointPlugins, EndpointStatus, Event, EventType, KeyScope, Millis, PluginBinding, PluginUse, PreparedRequest,
    SecretStatus, SignatureHeader, SignatureScheme, Subscription, Tenant, TimestampUnit,
};
use switchyard::store::{
    AttemptCounts, AttemptOutcome, AuditFilter, DeadAttempt, DeliveryFilter, DispatchJob, Dropped, EndpointFilter,
    EndpointHour, EventFilter, EventTypeHour, Lease, NewDelivery, NewEvent, NewSecret, Page, PluginUpload, Published,
    PublishedCounts, RequeueSelector, Resend, SentTo, StatusBefore, Store, StoreError,
};

const T0: Millis = 1_700_000_000_000;
const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;

/// Generates `sqlite::<case>` and `postgres::<case>` tests for each case, so a failure names both the case and
/// the backend.
macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            use switchyard::store::sql::{Dialect, SqlStore};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("switchyard.db").display());
                    let store = SqlStore::connect(&url).await.unwrap();
                    assert_eq!(store.dialect(), Dialect::Sqlite);
                    super::$case(&store, &url).await;
                    store.close().await;
                }
            )+
        }

        mod postgres {
            use futures_util::FutureExt;
            use switchyard::store::sql::{Dialect, SqlStore};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test_name = concat!("postgres::", stringify!($case));
                    let Some(db) = super::store_pg::PostgresTestDatabase::create(test_name).await else { return };
                    let store = SqlStore::connect(&db.url).await.unwrap();
                    assert_eq!(store.dialect(), Dialect::Postgres);
                    let outcome = std::panic::AssertUnwindSafe(super::$case(&store, &db.url)).catch_unwind().await;
                    store.close().await;
                    db.drop_database().await;
                    if let Err(panic) = outcome {
                        std::panic::resume_unwind(panic);
                    }
                }
            )+
        }
    };
}

conformance! {
    meta_and_ping,
    plugin_uploads_keep_the_latest_and_deletions,
    tenants_create_get_and_page,
    api_keys_find_list_and_revoke,
    endpoint_create_get_update_and_status,
    endpoints_list_by_status_in_disjoint_pages,
    endpoints_are_listed_by_the_event_types_they_subscribe_to,
    subscriptions_are_replaced_in_order,
    deleting_an_endpoint_dead_letters_its_unfinished_deliveries,
    active_endpoints_exclude_paused_and_disabled,
    secret_rotation_retires_then_revokes,
    event_types_upsert_and_page_by_name,
    publish_stores_events_with_their_deliveries,
    publish_replays_reused_idempotency_keys,
    concurrent_publishes_of_one_idempotency_key_store_one_event,
    publish_is_one_transaction,
    endpoint_deletion_racing_with_other_changes,
    events_list_by_filter_in_pages,
    deliveries_list_by_each_filter,
    tenant_counts_by_status_stop_at_the_limit,
    endpoint_hours_add_up_by_tenant_and_endpoint_and_age_out,
    event_type_hours_add_up_by_tenant_and_type_and_age_out,
    claim_respects_due_time_and_endpoint_status,
    claim_takes_expired_leases_and_respects_the_limit,
    concurrent_claims_never_share_a_delivery,
    record_attempt_updates_the_delivery_and_appends_the_attempt,
    record_attempt_without_the_lease_writes_nothing,
    record_attempt_can_disable_the_endpoint,
    a_failed_attempt_can_disable_its_endpoint_and_keep_its_retry,
    a_disabled_endpoint_gets_one_audit_entry_with_its_reason,
    release_and_release_foreign_leases,
    defer_gives_back_due_later_without_an_attempt,
    a_changed_rate_limit_brings_deliveries_put_off_forward,
    deliveries_put_off_are_brought_forward,
    retry_delivery_is_refused_while_delivering,
    requeue_dead_by_ids_and_by_filter,
    requeue_by_filter_goes_through_every_chunk,
    an_event_is_sent_to_one_endpoint_once,
    missed_events_are_found_and_sent_in_a_batch,
    next_due_at_follows_waiting_deliveries_and_leases,
    audit_log_appends_and_pages,
    every_tenants_entries_of_an_action_are_read_after_a_cursor,
    every_tenants_dead_lettering_attempts_are_read_after_a_cursor,
    database_refuses_to_change_history,
    other_tenants_see_nothing,
    prepared_requests_are_stored_once_and_claimed_with_the_delivery,
    filter_drops_are_recorded_and_retry_clears_them,
    endpoints_binding_a_plugin_are_found_in_every_tenant,
    record_attempts_writes_a_batch_and_skips_lost_leases,
    one_batch_records_prepared_and_plain_outcomes,
    claims_carry_the_secrets_that_sign,
    published_deliveries_can_be_stored_leased_to_the_publisher,
    write_batch_stores_each_part_or_reports_it_failed,
    signing_secrets_of_several_endpoints,
    active_endpoints_follow_every_endpoint_change_at_once,
}

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

async fn new_tenant(store: &dyn Store) -> Tenant {
    let tenant = Tenant { id: new_id("ten"), name: "Acme".into(), rate_limit: None, created_at: T0 };
    store.create_tenant(&tenant).await.unwrap();
    tenant
}

fn endpoint_of(tenant: &Tenant) -> Endpoint {
    Endpoint {
        id: new_id("ep"),
        tenant_id: tenant.id.clone(),
        url: "https://receiver.example/hooks".into(),
        description: "order updates".into(),
        status: EndpointStatus::Active,
        status_reason: None,
        timeout_ms: 10_000,
        headers: BTreeMap::from([("X-Team".into(), "payments".into())]),
        retry_schedule_ms: Some(vec![1_000, MINUTE]),
        max_attempts: Some(3),
        rate_limit: Some(40),
        signature_scheme: SignatureScheme::Standard,
        signature_header: None,
        metadata: BTreeMap::from([("owner".into(), "ops".into())]),
        plugins: Default::default(),
        subscriptions: vec![
            Subscription { event_type: "order.*".into(), filter: Some("$[?@.data.amount > 10]".into()) },
            Subscription { event_type: "*".into(), filter: None },
        ],
        created_at: T0,
        updated_at: T0,
    }
}

fn new_secret(hint: &str) -> NewSecret {
    NewSecret { id: new_id("sec"), ciphertext: [hint.as_bytes(), &[0, 255, 7]].concat(), hint: hint.into() }
}

async fn add_endpoint(store: &dyn Store, tenant: &Tenant) -> Endpoint {
    let endpoint = endpoint_of(tenant);
    store.create_endpoint(&endpoint, &new_secret("whsec_v1")).await.unwrap();
    endpoint
}

async fn add_endpoint_with_status(store: &dyn Store, tenant: &Tenant, status: EndpointStatus) -> Endpoint {
    let endpoint = Endpoint { status, ..endpoint_of(tenant) };
    store.create_endpoint(&endpoint, &new_secret("whsec_v1")).await.unwrap();
    endpoint
}

/// The payload keeps odd spacing and `12.50` so a re-serialised copy would not compare equal.
/// An event received at `received_at`. Its id is minted now, as fixtures that publish several events at one time
/// need ids in the order they were made; a case that looks events up by time takes [`event_received_at`].
fn event_of(tenant: &Tenant, event_type: &str, received_at: Millis) -> Event {
    Event {
        id: new_id("evt"),
        tenant_id: tenant.id.clone(),
        event_type: event_type.into(),
        data: RawValue::from_string(r#"{"amount": 12.50,  "items": [1, 2]}"#.into()).unwrap(),
        idempotency_key: None,
        received_at,
    }
}

/// An event received at `received_at`, with the id a publish at that time would have minted (see
/// `switchyard::model::new_id_and_time`): the kind of event a time window finds.
fn event_received_at(tenant: &Tenant, event_type: &str, received_at: Millis) -> Event {
    Event { id: new_id_at("evt", received_at), ..event_of(tenant, event_type, received_at) }
}

/// Deliveries with ids minted now, in the order they are made, as fixtures that claim several deliveries of one
/// time in turn need; a case that looks deliveries up by time takes [`fan_out_timed`].
fn fan_out(event: Event, endpoints: &[&Endpoint]) -> NewEvent {
    let deliveries = endpoints
        .iter()
        .map(|endpoint| NewDelivery { id: new_id("dlv"), endpoint_id: endpoint.id.clone(), lease: None })
        .collect();
    NewEvent { deliveries, event }
}

/// An event received at its id's time, and deliveries with the ids a publish mints for it (carrying its
/// receipt, their `created_at`): what a time window of events or deliveries finds.
fn fan_out_timed(event: Event, endpoints: &[&Endpoint]) -> NewEvent {
    let event = Event { id: new_id_at("evt", event.received_at), ..event };
    let deliveries = endpoints
        .iter()
        .map(|endpoint| NewDelivery {
            id: new_id_at("dlv", event.received_at),
            endpoint_id: endpoint.id.clone(),
            lease: None,
        })
        .collect();
    NewEvent { deliveries, event }
}

/// Publishes one event to `endpoints` and returns it with its delivery ids.
async fn publish(
    store: &dyn Store,
    tenant: &Tenant,
    event_type: &str,
    endpoints: &[&Endpoint],
    received_at: Millis,
) -> NewEvent {
    publish_new(store, fan_out(event_of(tenant, event_type, received_at), endpoints)).await
}

/// Publishes `new` and returns it: a [`fan_out_timed`] event, say.
async fn publish_new(store: &dyn Store, new: NewEvent) -> NewEvent {
    let endpoints = &new.deliveries;
    let published = store.publish(std::slice::from_ref(&new)).await.unwrap();
    assert_eq!(
        published,
        vec![Published {
            event_id: new.event.id.clone(),
            deliveries: endpoints.len() as i64,
            replayed: false,
            leased: vec![]
        }]
    );
    new
}

fn delivery_ids(new: &NewEvent) -> Vec<String> {
    new.deliveries.iter().map(|d| d.id.clone()).collect()
}

async fn delivery(store: &dyn Store, tenant: &Tenant, id: &str) -> Delivery {
    store.get_delivery(&tenant.id, id).await.unwrap().expect("delivery exists")
}

async fn claim(store: &dyn Store, owner: &str, now: Millis) -> Vec<DispatchJob> {
    store.claim_due(owner, now, now + MINUTE, 100).await.unwrap()
}

fn claimed_ids(jobs: &[DispatchJob]) -> BTreeSet<String> {
    jobs.iter().map(|job| job.delivery.id.clone()).collect()
}

/// The next attempt of a claimed delivery, finished 120 ms after `started_at`, ending in `status`: a 200 for
/// succeeded, a 500 otherwise; a failed one is retried a minute later.
fn outcome(delivery: &Delivery, status: DeliveryStatus, started_at: Millis) -> AttemptOutcome {
    let succeeded = status == DeliveryStatus::Succeeded;
    AttemptOutcome {
        attempt: Attempt {
            id: new_id("att"),
            tenant_id: delivery.tenant_id.clone(),
            delivery_id: delivery.id.clone(),
            attempt_number: delivery.attempts + 1,
            started_at,
            duration_ms: 120,
            status_code: Some(if succeeded { 200 } else { 500 }),
            response_body: Some(if succeeded { "ok".into() } else { "oops".into() }),
            error: if succeeded { None } else { Some("HTTP 500".into()) },
            outcome: match status {
                DeliveryStatus::Succeeded => "succeeded",
                DeliveryStatus::Failed => "retry",
                _ => "dead",
            }
            .into(),
        },
        endpoint_id: delivery.endpoint_id.clone(),
        status,
        next_attempt_at: (status == DeliveryStatus::Failed).then_some(started_at + MINUTE),
        prepared: None,
        disable_endpoint: None,
    }
}

/// Follows cursors until a short page, asserting no page exceeds `limit`.
async fn all_pages<T, Fut>(
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
    mut fetch: impl FnMut(Page) -> Fut,
) -> Vec<Vec<T>>
where
    Fut: Future<Output = Vec<T>>,
{
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = fetch(Page { cursor: cursor.clone(), limit }).await;
        assert!(page.len() as i64 <= limit, "a page holds at most `limit` items");
        let full = page.len() as i64 == limit;
        if let Some(last) = page.last() {
            cursor = Some(cursor_of(last));
            pages.push(page);
        }
        if !full {
            return pages;
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
}

/// Ids newest first, the order every id-keyed listing uses.
fn newest_first(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort_by(|a, b| b.cmp(a));
    ids
}

fn page(limit: i64) -> Page {
    Page { cursor: None, limit }
}

async fn raw_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Cases

async fn meta_and_ping(store: &dyn Store, _url: &str) {
    store.ping().await.unwrap();
    assert_eq!(store.get_meta("key_check").await.unwrap(), None);
    store.put_meta("key_check", "first").await.unwrap();
    store.put_meta("key_check", "second").await.unwrap();
    store.put_meta("other", "x").await.unwrap();
    assert_eq!(store.get_meta("key_check").await.unwrap().as_deref(), Some("second"));
}

async fn plugin_uploads_keep_the_latest_and_deletions(store: &dyn Store, _url: &str) {
    assert_eq!(store.plugin_uploads().await.unwrap(), []);
    assert!(!store.delete_plugin_upload("redact", "sha_v1", T0).await.unwrap(), "nothing to delete");
    let wasm_v1: Vec<u8> = (0..=255).cycle().take(100_000).collect();
    store.put_plugin_upload("redact", "sha_v1", &wasm_v1, T0).await.unwrap();
    store.put_plugin_upload("filter", "sha_f", b"f", T0 + 1).await.unwrap();
    store.put_plugin_upload("redact", "sha_v2", b"v2", T0 + 2).await.unwrap();
    let upload = |name: &str, sha256: &str, deleted, changed_at| PluginUpload {
        name: name.into(),
        sha256: sha256.into(),
        deleted,
        changed_at,
    };
    assert_eq!(
        store.plugin_uploads().await.unwrap(),
        [upload("filter", "sha_f", false, T0 + 1), upload("redact", "sha_v2", false, T0 + 2)]
    );
    assert_eq!(store.plugin_upload_wasm("redact", "sha_v2").await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.plugin_upload_wasm("redact", "sha_v1").await.unwrap(), None, "replaced");
    store.put_plugin_upload("redact", "sha_v1", &wasm_v1, T0 + 3).await.unwrap();
    assert_eq!(store.plugin_upload_wasm("redact", "sha_v1").await.unwrap(), Some(wasm_v1), "bytes intact");

    assert!(!store.delete_plugin_upload("redact", "sha_v2", T0 + 4).await.unwrap(), "not the latest upload");
    assert!(store.delete_plugin_upload("redact", "sha_v1", T0 + 4).await.unwrap());
    assert!(!store.delete_plugin_upload("redact", "sha_v1", T0 + 5).await.unwrap(), "deleted already");
    assert_eq!(store.plugin_uploads().await.unwrap()[1], upload("redact", "sha_v1", true, T0 + 4));
    assert_eq!(store.plugin_upload_wasm("redact", "sha_v1").await.unwrap(), None);
    store.put_plugin_upload("redact", "sha_v3", b"v3", T0 + 6).await.unwrap();
    assert_eq!(store.plugin_uploads().await.unwrap()[1], upload("redact", "sha_v3", false, T0 + 6), "uploaded again");
}

async fn tenants_create_get_and_page(store: &dyn Store, _url: &str) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(new_tenant(store).await.id);
    }
    let first = store.get_tenant(&ids[0]).await.unwrap().unwrap();
    assert_eq!(first, Tenant { id: ids[0].clone(), name: "Acme".into(), rate_limit: None, created_at: T0 });
    assert_eq!(store.get_tenant("ten_missing").await.unwrap(), None);

    let duplicate = store.create_tenant(&first).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");

    let pages =
        all_pages(2, |t: &Tenant| t.id.clone(), |page| async move { store.list_tenants(&page).await.unwrap() }).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let listed: Vec<String> = pages.concat().into_iter().map(|t| t.id).collect();
    assert_eq!(listed, newest_first(ids.clone()));

    let limited = Tenant { name: "Acme Ltd".into(), rate_limit: Some(250), ..first.clone() };
    assert!(store.update_tenant(&limited).await.unwrap());
    assert_eq!(store.get_tenant(&ids[0]).await.unwrap(), Some(limited.clone()));
    assert_eq!(store.get_tenant(&ids[1]).await.unwrap().unwrap().rate_limit, None, "the others keep the server's");
    let created_limited = Tenant { id: new_id("ten"), rate_limit: Some(1_000_000), ..first.clone() };
    store.create_tenant(&created_limited).await.unwrap();
    assert_eq!(store.get_tenant(&created_limited.id).await.unwrap(), Some(created_limited));
    assert!(store.update_tenant(&Tenant { rate_limit: None, ..limited.clone() }).await.unwrap());
    assert_eq!(store.get_tenant(&ids[0]).await.unwrap().unwrap().rate_limit, None, "back to the server's");
    assert!(!store.update_tenant(&Tenant { id: "ten_missing".into(), ..limited }).await.unwrap());
}

async fn api_keys_find_list_and_revoke(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let tenant_id = tenant.id.as_str();
    let other = new_tenant(store).await;
    let key = |tenant: &Tenant, hash: &str| ApiKey {
        id: new_id("key"),
        tenant_id: tenant.id.clone(),
        name: "ci".into(),
        prefix: "sy_live_ab".into(),
        key_hash: hash.into(),
        scope: KeyScope::All,
        allowed_networks: Vec::new(),
        created_at: T0,
        revoked_at: None,
    };
    let first = key(&tenant, "hash-1");
    let networks = vec!["203.0.113.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
    let second = ApiKey { scope: KeyScope::Publish, allowed_networks: networks, ..key(&tenant, "hash-2") };
    let foreign = ApiKey { scope: KeyScope::Read, ..key(&other, "hash-3") };
    for k in [&first, &second, &foreign] {
        store.create_api_key(k).await.unwrap();
    }
    let same_hash = store.create_api_key(&key(&tenant, "hash-1")).await;
    assert!(matches!(same_hash, Err(StoreError::Conflict(_))), "{same_hash:?}");

    assert_eq!(store.find_api_key("hash-1").await.unwrap(), Some(first.clone()));
    assert_eq!(store.find_api_key("hash-2").await.unwrap(), Some(second.clone()), "with its scope and networks");
    assert_eq!(store.find_api_key("hash-3").await.unwrap(), Some(foreign.clone()), "a read key");
    assert_eq!(store.find_api_key("hash-unknown").await.unwrap(), None);
    assert_eq!(store.list_api_keys(&tenant.id, &page(10)).await.unwrap(), vec![second.clone(), first.clone()]);
    let pages = all_pages(
        1,
        |k: &ApiKey| k.id.clone(),
        |page| async move { store.list_api_keys(tenant_id, &page).await.unwrap() },
    )
    .await;
    assert_eq!(pages, vec![vec![second.clone()], vec![first.clone()]]);
    assert_eq!(store.list_api_keys(&other.id, &page(10)).await.unwrap(), vec![foreign]);

    assert_eq!(store.get_api_key(&tenant.id, &second.id).await.unwrap(), Some(second.clone()));
    assert_eq!(store.get_api_key(&other.id, &second.id).await.unwrap(), None, "another tenant's key");
    let limited = ApiKey {
        name: "office".into(),
        key_hash: "hash-1-networked".into(),
        allowed_networks: vec!["198.51.100.7/32".parse().unwrap()],
        ..first.clone()
    };
    assert!(store.update_api_key(&first, &limited).await.unwrap());
    assert_eq!(store.find_api_key("hash-1").await.unwrap(), None, "the old hash is gone");
    assert_eq!(store.find_api_key("hash-1-networked").await.unwrap(), Some(limited.clone()));
    let stale = ApiKey { name: "renamed".into(), ..first.clone() };
    assert!(!store.update_api_key(&first, &stale).await.unwrap(), "a change made on a stale read");
    let elsewhere = ApiKey { tenant_id: other.id.clone(), ..limited.clone() };
    assert!(!store.update_api_key(&elsewhere, &elsewhere).await.unwrap(), "another tenant's key");
    let taken = store.update_api_key(&limited, &ApiKey { key_hash: "hash-2".into(), ..limited.clone() }).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let moved =
        ApiKey { name: "ci".into(), allowed_networks: vec!["2001:db8::/48".parse().unwrap()], ..limited.clone() };
    let other_networks = ApiKey { name: "office".into(), ..moved.clone() };
    assert!(!store.update_api_key(&other_networks, &moved).await.unwrap(), "the stored networks differ");
    assert_eq!(store.get_api_key(&tenant.id, &first.id).await.unwrap(), Some(limited.clone()));
    assert!(store.update_api_key(&limited, &moved).await.unwrap());
    assert_eq!(store.get_api_key(&tenant.id, &first.id).await.unwrap(), Some(moved.clone()));
    let first = moved;

    assert!(!store.revoke_api_key(&other.id, &first.id, T0 + 5).await.unwrap(), "another tenant's key");
    assert!(store.revoke_api_key(&tenant.id, &first.id, T0 + 5).await.unwrap());
    assert!(!store.revoke_api_key(&tenant.id, &first.id, T0 + 6).await.unwrap(), "already revoked");
    assert_eq!(store.find_api_key(&first.key_hash).await.unwrap(), None);
    let renamed = ApiKey { name: "back".into(), ..first.clone() };
    assert!(!store.update_api_key(&first, &renamed).await.unwrap(), "revoked");
    let revoked = ApiKey { revoked_at: Some(T0 + 5), ..first };
    assert_eq!(store.get_api_key(&tenant.id, &revoked.id).await.unwrap(), Some(revoked.clone()));
    let listed = store.list_api_keys(&tenant.id, &page(10)).await.unwrap();
    assert_eq!(listed, vec![second, revoked]);
}

async fn endpoint_create_get_update_and_status(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    assert_eq!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap(), Some(endpoint.clone()));
    assert_eq!(store.get_endpoint(&other.id, &endpoint.id).await.unwrap(), None);

    let plain = Endpoint {
        retry_schedule_ms: None,
        max_attempts: None,
        rate_limit: None,
        headers: BTreeMap::new(),
        metadata: BTreeMap::new(),
        plugins: Default::default(),
        subscriptions: vec![],
        ..endpoint_of(&tenant)
    };
    store.create_endpoint(&plain, &new_secret("whsec_p")).await.unwrap();
    assert_eq!(store.get_endpoint(&tenant.id, &plain.id).await.unwrap(), Some(plain.clone()));

    let duplicate = store.create_endpoint(&endpoint, &new_secret("whsec_dup")).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");

    let secrets = store.list_secrets(&tenant.id, &endpoint.id).await.unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!((secrets[0].version, secrets[0].status, secrets[0].created_at), (1, SecretStatus::Active, T0));
    assert_eq!((secrets[0].hint.as_str(), secrets[0].expires_at), ("whsec_v1", None));
    assert_eq!(secrets[0].ciphertext, [b"whsec_v1".as_slice(), &[0, 255, 7]].concat());
    assert_eq!(
        (secrets[0].endpoint_id.as_str(), secrets[0].tenant_id.as_str()),
        (endpoint.id.as_str(), tenant.id.as_str())
    );

    let updated = Endpoint {
        url: "https://elsewhere.example/in".into(),
        description: "moved".into(),
        status: EndpointStatus::Paused,
        status_reason: Some("maintenance".into()),
        timeout_ms: 3_000,
        headers: BTreeMap::from([("Authorization".into(), "Bearer x".into())]),
        retry_schedule_ms: None,
        max_attempts: Some(7),
        rate_limit: Some(25),
        signature_scheme: SignatureScheme::Hmac,
        signature_header: Some(SignatureHeader {
            name: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            timestamp: None,
            key_id: false,
        }),
        metadata: BTreeMap::new(),
        plugins: Default::default(),
        subscriptions: vec![Subscription { event_type: "invoice.paid".into(), filter: None }],
        updated_at: T0 + 10,
        ..endpoint.clone()
    };
    assert!(store.update_endpoint(&updated).await.unwrap());
    let status_kept = Endpoint { status: endpoint.status, status_reason: endpoint.status_reason.clone(), ..updated };
    assert_eq!(
        store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap(),
        Some(status_kept.clone()),
        "an update changes the settings, never the status"
    );
    // The `stripe` scheme's header keeps its timestamp unit and whether it names the secret's version.
    let molam = SignatureHeader {
        name: "Molam-Signature".into(),
        prefix: String::new(),
        timestamp: Some(TimestampUnit::Milliseconds),
        key_id: true,
    };
    let stripe =
        Endpoint { signature_scheme: SignatureScheme::Stripe, signature_header: Some(molam), ..status_kept.clone() };
    assert!(store.update_endpoint(&stripe).await.unwrap());
    assert_eq!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap(), Some(stripe));
    assert!(store.update_endpoint(&status_kept).await.unwrap());
    let updated = status_kept;
    let hijack = Endpoint { tenant_id: other.id.clone(), url: "https://attacker.example".into(), ..updated.clone() };
    assert!(!store.update_endpoint(&hijack).await.unwrap(), "an endpoint of another tenant");
    assert_eq!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap(), Some(updated.clone()));

    let gone = "receiver answered 410 Gone";
    let replaced = store
        .set_endpoint_status(&tenant.id, &endpoint.id, EndpointStatus::Disabled, Some(gone), T0 + 20)
        .await
        .unwrap();
    assert_eq!(replaced, Some(StatusBefore { status: EndpointStatus::Active, reason: None }));
    let disabled = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!(
        (disabled.status, disabled.status_reason.as_deref(), disabled.updated_at),
        (EndpointStatus::Disabled, Some(gone), T0 + 20)
    );
    // An update made from a read before the disable (status still active in it) keeps the endpoint disabled.
    assert_eq!(updated.status, EndpointStatus::Active);
    assert!(store.update_endpoint(&Endpoint { updated_at: T0 + 25, ..updated.clone() }).await.unwrap());
    let still = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!((still.status, still.status_reason.as_deref()), (EndpointStatus::Disabled, Some(gone)));
    let set = |tenant_id: &str, id: &str, at| {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        async move { store.set_endpoint_status(&tenant_id, &id, EndpointStatus::Active, None, at).await.unwrap() }
    };
    assert_eq!(set(&other.id, &endpoint.id, T0 + 30).await, None, "another tenant's endpoint");
    assert_eq!(set(&tenant.id, "ep_missing", T0 + 30).await, None);
    let disabled_before = StatusBefore { status: EndpointStatus::Disabled, reason: Some(gone.to_string()) };
    assert_eq!(set(&tenant.id, &endpoint.id, T0 + 40).await, Some(disabled_before), "what the activation replaced");
    let active = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!(
        active,
        Endpoint { status: EndpointStatus::Active, status_reason: None, updated_at: T0 + 40, ..updated }
    );
}

async fn endpoints_list_by_status_in_disjoint_pages(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let mut endpoints = Vec::new();
    for _ in 0..5 {
        endpoints.push(add_endpoint(store, &tenant).await);
    }
    add_endpoint(store, &other).await;
    for paused in &endpoints[1..3] {
        store
            .set_endpoint_status(&tenant.id, &paused.id, EndpointStatus::Paused, Some("by hand"), T0 + 1)
            .await
            .unwrap();
    }

    let no_filter = EndpointFilter::default();
    let pages = all_pages(
        2,
        |e: &Endpoint| e.id.clone(),
        |page| {
            let no_filter = &no_filter;
            let tenant = &tenant;
            async move { store.list_endpoints(&tenant.id, no_filter, &page).await.unwrap() }
        },
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let listed = pages.concat();
    assert_eq!(
        listed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        newest_first(endpoints.iter().map(|e| e.id.clone()))
    );
    assert!(listed.iter().all(|e| e.subscriptions == endpoints[0].subscriptions), "listings carry subscriptions");

    let with_status = |status| EndpointFilter { status: Some(status), ..EndpointFilter::default() };
    let paused = store.list_endpoints(&tenant.id, &with_status(EndpointStatus::Paused), &page(10)).await.unwrap();
    assert_eq!(
        paused.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        newest_first([endpoints[1].id.clone(), endpoints[2].id.clone()])
    );
    assert!(paused.iter().all(|e| e.status_reason.as_deref() == Some("by hand")));
    let active = store.list_endpoints(&tenant.id, &with_status(EndpointStatus::Active), &page(10)).await.unwrap();
    assert_eq!(active.len(), 3);
    assert!(store
        .list_endpoints(&tenant.id, &with_status(EndpointStatus::Disabled), &page(10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.list_endpoints(&other.id, &no_filter, &page(10)).await.unwrap().len(), 1);
}

/// Listing by event type finds the endpoints with a subscription whose pattern selects it: the type itself, a
/// prefix above it, or `*` (never for Switchyard's own types); filters aside, and another tenant's not at all.
async fn endpoints_are_listed_by_the_event_types_they_subscribe_to(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let subscribed = |patterns: &[&str]| {
        patterns.iter().map(|pattern| Subscription { event_type: (*pattern).into(), filter: None }).collect()
    };
    let mut ids = BTreeMap::new();
    for (name, patterns) in [
        ("exact", vec!["payment.card.captured"]),
        ("prefix", vec!["invoice.paid", "payment.*"]),
        ("deeper", vec!["payment.card.*"]),
        ("all", vec!["*"]),
        ("filtered", vec!["payment.card.captured"]),
        ("elsewhere", vec!["payments.*", "payment.cards.*", "payment.card.captured.*"]),
        ("notices", vec!["switchyard.*"]),
    ] {
        let mut endpoint = Endpoint { subscriptions: subscribed(&patterns), ..endpoint_of(&tenant) };
        if name == "filtered" {
            endpoint.subscriptions[0].filter = Some("$[?@.data.amount > 100]".into());
        }
        store.create_endpoint(&endpoint, &new_secret("whsec_v1")).await.unwrap();
        ids.insert(name, endpoint.id);
    }
    let foreign = Endpoint { subscriptions: subscribed(&["*"]), ..endpoint_of(&other) };
    store.create_endpoint(&foreign, &new_secret("whsec_v1")).await.unwrap();

    let (ids, tenant_id) = (&ids, tenant.id.as_str());
    let listed = |event_type: &str| {
        let filter = EndpointFilter { event_type: Some(event_type.into()), ..EndpointFilter::default() };
        async move {
            let found = store.list_endpoints(tenant_id, &filter, &page(100)).await.unwrap();
            let mut names: Vec<&str> =
                ids.iter().filter(|(_, id)| found.iter().any(|e| &e.id == *id)).map(|(name, _)| *name).collect();
            names.sort_unstable();
            assert_eq!(found.len(), names.len(), "only this tenant's endpoints");
            names
        }
    };
    assert_eq!(listed("payment.card.captured").await, ["all", "deeper", "exact", "filtered", "prefix"]);
    assert_eq!(listed("payment.refunded").await, ["all", "prefix"]);
    assert_eq!(listed("invoice.paid").await, ["all", "prefix"]);
    assert_eq!(listed("switchyard.delivery.dead").await, ["notices"]);
    assert_eq!(listed("order.created").await, ["all"]);
    // Paged like any listing, newest first.
    let filter = EndpointFilter { event_type: Some("payment.card.captured".into()), ..EndpointFilter::default() };
    let first = store.list_endpoints(tenant_id, &filter, &page(2)).await.unwrap();
    assert_eq!(
        first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [ids["filtered"].as_str(), ids["all"].as_str()]
    );
}

async fn subscriptions_are_replaced_in_order(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let replacement: Vec<Subscription> = ["c.*", "a.created", "b.updated"]
        .iter()
        .enumerate()
        .map(|(i, t)| Subscription { event_type: (*t).into(), filter: (i == 1).then(|| "$[?@.data.x == 1]".into()) })
        .collect();
    assert!(store.replace_subscriptions(&tenant.id, &endpoint.id, &replacement, T0 + 5).await.unwrap());
    let stored = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!((stored.subscriptions.clone(), stored.updated_at), (replacement.clone(), T0 + 5));

    assert!(!store.replace_subscriptions(&other.id, &endpoint.id, &[], T0 + 6).await.unwrap());
    assert!(!store.replace_subscriptions(&tenant.id, "ep_missing", &[], T0 + 6).await.unwrap());
    assert_eq!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap().subscriptions, replacement);

    assert!(store.replace_subscriptions(&tenant.id, &endpoint.id, &[], T0 + 7).await.unwrap());
    assert!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap().subscriptions.is_empty());
}

async fn deleting_an_endpoint_dead_letters_its_unfinished_deliveries(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let doomed = add_endpoint(store, &tenant).await;
    let kept = add_endpoint(store, &tenant).await;
    let to_succeed = publish(store, &tenant, "order.created", &[&doomed], T0).await;
    let to_fail = publish(store, &tenant, "order.created", &[&doomed], T0 + 1).await;
    let in_flight = publish(store, &tenant, "order.created", &[&doomed], T0 + 2).await;
    let elsewhere = publish(store, &tenant, "order.created", &[&kept], T0 + 3).await;
    let never_tried = publish(store, &tenant, "order.created", &[&doomed], T0 + MINUTE * 10).await;

    let jobs = claim(store, "node-a", T0 + 10).await;
    assert_eq!(jobs.len(), 4);
    let job = |new: &NewEvent| jobs.iter().find(|j| j.delivery.id == new.deliveries[0].id).unwrap().delivery.clone();
    assert!(store
        .record_attempt("node-a", &outcome(&job(&to_succeed), DeliveryStatus::Succeeded, T0 + 20))
        .await
        .unwrap());
    assert!(store.record_attempt("node-a", &outcome(&job(&to_fail), DeliveryStatus::Failed, T0 + 20)).await.unwrap());
    store.release("node-a", &delivery_ids(&elsewhere)).await.unwrap();
    let succeeded_before = delivery(store, &tenant, &to_succeed.deliveries[0].id).await;

    assert!(!store.delete_endpoint(&other.id, &doomed.id, T0 + 30).await.unwrap(), "another tenant's endpoint");
    assert!(store.delete_endpoint(&tenant.id, &doomed.id, T0 + 30).await.unwrap());
    assert!(!store.delete_endpoint(&tenant.id, &doomed.id, T0 + 31).await.unwrap(), "already deleted");
    assert_eq!(store.get_endpoint(&tenant.id, &doomed.id).await.unwrap(), None);
    assert!(store.list_secrets(&tenant.id, &doomed.id).await.unwrap().is_empty());
    assert!(store.signing_secrets(&doomed.id, T0 + 30).await.unwrap().is_empty());

    assert_eq!(delivery(store, &tenant, &to_succeed.deliveries[0].id).await, succeeded_before);
    for new in [&to_fail, &in_flight, &never_tried] {
        let d = delivery(store, &tenant, &new.deliveries[0].id).await;
        assert_eq!((d.status, d.last_error.as_deref()), (DeliveryStatus::Dead, Some("endpoint deleted")));
        assert_eq!((d.lease_owner, d.lease_expires_at, d.next_attempt_at, d.updated_at), (None, None, None, T0 + 30));
    }
    let kept_delivery = delivery(store, &tenant, &elsewhere.deliveries[0].id).await;
    assert_eq!(kept_delivery.status, DeliveryStatus::Pending);

    let in_flight_delivery = job(&in_flight);
    let late = store.record_attempt("node-a", &outcome(&in_flight_delivery, DeliveryStatus::Succeeded, T0 + 40)).await;
    assert!(!late.unwrap(), "the lease ended with the endpoint");
    assert!(store.list_attempts(&tenant.id, &in_flight_delivery.id).await.unwrap().is_empty());
    assert_eq!(claimed_ids(&claim(store, "node-b", T0 + MINUTE * 100).await), BTreeSet::from([kept_delivery.id]));
}

async fn tenant_counts_by_status_stop_at_the_limit(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    add_endpoint(store, &tenant).await;
    add_endpoint_with_status(store, &tenant, EndpointStatus::Paused).await;
    add_endpoint_with_status(store, &tenant, EndpointStatus::Disabled).await;
    let elsewhere = add_endpoint(store, &other).await;
    // Every status in both tenants, so a count that leaked across tenants would show.
    for at in 0..5 {
        publish(store, &tenant, "order.created", &[&endpoint], T0 + at).await;
        publish(store, &other, "order.created", &[&elsewhere], T0 + at).await;
    }
    let jobs = claim(store, "node-a", T0 + 10).await;
    assert_eq!(jobs.len(), 10);
    for of_tenant in [&tenant, &other] {
        let mut mine = jobs.iter().filter(|job| job.delivery.tenant_id == of_tenant.id);
        for status in [DeliveryStatus::Succeeded, DeliveryStatus::Failed, DeliveryStatus::Dead] {
            let job = mine.next().unwrap();
            assert!(store.record_attempt("node-a", &outcome(&job.delivery, status, T0 + 20)).await.unwrap());
        }
        let job = mine.next().unwrap();
        let dropped = switchyard::store::Dropped {
            tenant_id: of_tenant.id.clone(),
            delivery_id: job.delivery.id.clone(),
            prepared: prepared(None),
            reason: "dropped by filter `x`".into(),
            at: T0 + 20,
        };
        assert!(store.record_drop("node-a", &dropped).await.unwrap());
        // The fifth stays in flight.
    }
    for at in 0..3 {
        publish(store, &tenant, "order.created", &[&endpoint], T0 + MINUTE * 10 + at).await;
    }

    let counts = store.tenant_counts(&tenant.id, 100).await.unwrap();
    use DeliveryStatus::*;
    assert_eq!(counts.deliveries, [(Pending, 3), (Delivering, 1), (Failed, 1), (Dead, 1), (Dropped, 1)]);
    assert_eq!(
        counts.endpoints,
        [(EndpointStatus::Active, 2), (EndpointStatus::Paused, 1), (EndpointStatus::Disabled, 1)]
    );
    let capped = store.tenant_counts(&tenant.id, 2).await.unwrap();
    assert_eq!(capped.deliveries, [(Pending, 2), (Delivering, 1), (Failed, 1), (Dead, 1), (Dropped, 1)]);
    assert_eq!(capped.endpoints, counts.endpoints, "endpoints are not capped");
    let others = store.tenant_counts(&other.id, 100).await.unwrap();
    assert_eq!(others.deliveries, [(Pending, 0), (Delivering, 1), (Failed, 1), (Dead, 1), (Dropped, 1)]);
    assert_eq!(
        others.endpoints,
        [(EndpointStatus::Active, 1), (EndpointStatus::Paused, 0), (EndpointStatus::Disabled, 0)]
    );

    let nobody = store.tenant_counts("ten_unknown", 100).await.unwrap();
    assert!(nobody.deliveries.iter().all(|(_, n)| *n == 0));
    assert!(nobody.endpoints.iter().all(|(_, n)| *n == 0));

    // The server's, for `/metrics`: both tenants' waiting deliveries (3 pending and a failed one of the first, a
    // failed one of the other), and every endpoint.
    let server = store.server_counts(100).await.unwrap();
    assert_eq!(server.waiting_deliveries, 5);
    assert_eq!(
        server.endpoints,
        [(EndpointStatus::Active, 3), (EndpointStatus::Paused, 1), (EndpointStatus::Disabled, 1)]
    );
    assert_eq!(store.server_counts(2).await.unwrap().waiting_deliveries, 2, "counted up to the limit");
}

async fn endpoint_hours_add_up_by_tenant_and_endpoint_and_age_out(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let counts =
        // Each attempt took 25 ms: the time adds up with the counts. The retries follow from the others too,
        // each in its own way, so that two columns mixed up show.
        |attempts, failed_attempts, succeeded, dead| AttemptCounts {
            attempts,
            failed_attempts,
            succeeded,
            dead,
            attempt_ms: 25 * attempts,
            timed_attempts: attempts,
            retried: failed_attempts - dead,
            counted_finishes: succeeded + dead,
        };
    let hour = |tenant: &Tenant, endpoint_id: &str, hour_start, counts| EndpointHour {
        tenant_id: tenant.id.clone(),
        endpoint_id: endpoint_id.into(),
        hour_start,
        counts,
    };
    let t0 = T0 - T0 % HOUR;
    // Two nodes' flushes of the same hours: they add up, whatever the order of the rows.
    let first = [
        hour(&tenant, "ep_b", t0, counts(3, 1, 2, 0)),
        hour(&tenant, "ep_a", t0, counts(5, 2, 3, 1)),
        hour(&tenant, "ep_a", t0 + HOUR, counts(1, 0, 1, 0)),
        hour(&other, "ep_c", t0, counts(100, 100, 0, 100)),
    ];
    store.add_endpoint_hours(&first).await.unwrap();
    store.add_endpoint_hours(&[hour(&tenant, "ep_a", t0, counts(2, 2, 0, 1))]).await.unwrap();
    store.add_endpoint_hours(&[]).await.unwrap();

    let all = store.tenant_hours(&tenant.id, None, t0).await.unwrap();
    assert_eq!(all, [(t0, counts(10, 5, 5, 2)), (t0 + HOUR, counts(1, 0, 1, 0))]);
    let one = store.tenant_hours(&tenant.id, Some("ep_a"), t0).await.unwrap();
    assert_eq!(one, [(t0, counts(7, 4, 3, 2)), (t0 + HOUR, counts(1, 0, 1, 0))]);
    assert_eq!(store.tenant_hours(&tenant.id, None, t0 + 1).await.unwrap(), [(t0 + HOUR, counts(1, 0, 1, 0))]);
    assert_eq!(store.tenant_hours(&tenant.id, Some("ep_c"), t0).await.unwrap(), [], "another tenant's endpoint");
    assert_eq!(store.tenant_hours(&other.id, None, t0).await.unwrap(), [(t0, counts(100, 100, 0, 100))]);

    let ids = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<Vec<_>>();
    let span = t0..t0 + 2 * HOUR;
    let mut totals =
        store.endpoint_totals(&tenant.id, &ids(&["ep_a", "ep_b", "ep_c", "ep_none"]), span.clone()).await.unwrap();
    totals.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [("ep_a".to_string(), counts(8, 4, 4, 2)), ("ep_b".to_string(), counts(3, 1, 2, 0))];
    assert_eq!(totals, expected, "ep_c is another tenant's, ep_none has no hours");
    let later = store.endpoint_totals(&tenant.id, &ids(&["ep_a", "ep_b"]), t0 + HOUR..span.end).await.unwrap();
    assert_eq!(later, [("ep_a".to_string(), counts(1, 0, 1, 0))]);
    let first_hour = store.endpoint_totals(&tenant.id, &ids(&["ep_a"]), t0..t0 + HOUR).await.unwrap();
    assert_eq!(first_hour, [("ep_a".to_string(), counts(7, 4, 3, 2))], "the span's end is left out");

    // Three endpoint hours and two tenant hours.
    assert_eq!(store.prune_hours(t0 + HOUR).await.unwrap(), 5);
    assert_eq!(store.tenant_hours(&tenant.id, None, 0).await.unwrap(), [(t0 + HOUR, counts(1, 0, 1, 0))]);
    assert_eq!(store.tenant_hours(&other.id, None, 0).await.unwrap(), []);
}

async fn event_type_hours_add_up_by_tenant_and_type_and_age_out(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let hour = |tenant: &Tenant, event_type: &str, hour_start, events, deliveries| EventTypeHour {
        tenant_id: tenant.id.clone(),
        event_type: event_type.into(),
        hour_start,
        counts: PublishedCounts { events, deliveries },
    };
    let t0 = T0 - T0 % HOUR;
    // Two nodes' flushes of the same hours add up, whatever the order of the rows.
    let first = [
        hour(&tenant, "order.sent", t0, 1, 3),
        hour(&tenant, "order.paid", t0, 5, 10),
        hour(&tenant, "order.paid", t0 + HOUR, 2, 0),
        hour(&other, "order.paid", t0, 100, 100),
    ];
    store.add_event_type_hours(&first).await.unwrap();
    store.add_event_type_hours(&[hour(&tenant, "order.paid", t0, 1, 2)]).await.unwrap();
    store.add_event_type_hours(&[]).await.unwrap();

    let tenant_id = &tenant.id;
    let totals = |span| async move {
        let mut totals = store.event_type_totals(tenant_id, span).await.unwrap();
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        totals.into_iter().map(|(event_type, c)| (event_type, c.events, c.deliveries)).collect::<Vec<_>>()
    };
    let both = [("order.paid".to_string(), 8, 12), ("order.sent".to_string(), 1, 3)];
    assert_eq!(totals(t0..t0 + 2 * HOUR).await, both, "another tenant's are not summed");
    let first_hour = [("order.paid".to_string(), 6, 12), ("order.sent".to_string(), 1, 3)];
    assert_eq!(totals(t0..t0 + HOUR).await, first_hour, "the span's end is left out");
    assert_eq!(totals(t0 + HOUR..t0 + 2 * HOUR).await, [("order.paid".to_string(), 2, 0)]);
    assert_eq!(totals(t0 + 2 * HOUR..t0 + 3 * HOUR).await, []);

    // Three hours of event types (the tenant's two and the other's one).
    assert_eq!(store.prune_hours(t0 + HOUR).await.unwrap(), 3);
    assert_eq!(totals(0..t0 + 3 * HOUR).await, [("order.paid".to_string(), 2, 0)]);
    assert_eq!(store.event_type_totals(&other.id, 0..t0 + 3 * HOUR).await.unwrap(), []);
}

async fn active_endpoints_exclude_paused_and_disabled(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let active = add_endpoint(store, &tenant).await;
    add_endpoint_with_status(store, &tenant, EndpointStatus::Paused).await;
    add_endpoint_with_status(store, &tenant, EndpointStatus::Disabled).await;
    let second_active = add_endpoint(store, &tenant).await;
    add_endpoint(store, &other).await;

    let mut found = store.active_endpoints(&tenant.id).await.unwrap().as_ref().clone();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(found, vec![active, second_active]);
    assert!(store.active_endpoints("ten_missing").await.unwrap().is_empty());
}

async fn secret_rotation_retires_then_revokes(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let summary = |secrets: Vec<switchyard::model::EndpointSecret>| {
        secrets.into_iter().map(|s| (s.version, s.status, s.expires_at)).collect::<Vec<_>>()
    };

    let v2 = store
        .rotate_secret(&tenant.id, &endpoint.id, &new_secret("whsec_v2"), T0 + 100, T0 + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v2.version, v2.status, v2.created_at, v2.expires_at), (2, SecretStatus::Active, T0 + 10, None));
    assert_eq!(
        (v2.hint.as_str(), v2.endpoint_id.as_str(), v2.tenant_id.as_str()),
        ("whsec_v2", endpoint.id.as_str(), tenant.id.as_str())
    );
    assert_eq!(v2.ciphertext, [b"whsec_v2".as_slice(), &[0, 255, 7]].concat());
    assert_eq!(
        summary(store.list_secrets(&tenant.id, &endpoint.id).await.unwrap()),
        [(2, SecretStatus::Active, None), (1, SecretStatus::Retiring, Some(T0 + 100))]
    );
    assert_eq!(
        summary(store.signing_secrets(&endpoint.id, T0 + 99).await.unwrap()),
        [(2, SecretStatus::Active, None), (1, SecretStatus::Retiring, Some(T0 + 100))]
    );
    assert_eq!(
        summary(store.signing_secrets(&endpoint.id, T0 + 100).await.unwrap()),
        [(2, SecretStatus::Active, None)],
        "expired at expires_at"
    );

    store.rotate_secret(&tenant.id, &endpoint.id, &new_secret("whsec_v3"), T0 + 300, T0 + 200).await.unwrap().unwrap();
    assert_eq!(
        summary(store.list_secrets(&tenant.id, &endpoint.id).await.unwrap()),
        [
            (3, SecretStatus::Active, None),
            (2, SecretStatus::Retiring, Some(T0 + 300)),
            (1, SecretStatus::Revoked, Some(T0 + 100))
        ]
    );

    // No grace period: the previous secret is revoked at once, and v2's grace has ended too.
    let v4 = store
        .rotate_secret(&tenant.id, &endpoint.id, &new_secret("whsec_v4"), T0 + 400, T0 + 400)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v4.version, 4);
    let statuses: Vec<_> = store
        .list_secrets(&tenant.id, &endpoint.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.version, s.status))
        .collect();
    assert_eq!(
        statuses,
        [(4, SecretStatus::Active), (3, SecretStatus::Revoked), (2, SecretStatus::Revoked), (1, SecretStatus::Revoked)]
    );
    let signing = store.signing_secrets(&endpoint.id, T0 + 400).await.unwrap();
    assert_eq!(signing, vec![v4]);

    assert_eq!(store.rotate_secret(&other.id, &endpoint.id, &new_secret("x"), T0 + 600, T0 + 500).await.unwrap(), None);
    assert_eq!(
        store.rotate_secret(&tenant.id, "ep_missing", &new_secret("x"), T0 + 600, T0 + 500).await.unwrap(),
        None
    );
    assert!(store.list_secrets(&other.id, &endpoint.id).await.unwrap().is_empty());
    assert_eq!(
        store.list_secrets(&tenant.id, &endpoint.id).await.unwrap().len(),
        4,
        "refused rotations change nothing"
    );

    // A rotation's grace period bounds the secrets still retiring from earlier ones: a shorter one cuts theirs
    // short, and none (a leaked secret) leaves only the new secret signing.
    store.rotate_secret(&tenant.id, &endpoint.id, &new_secret("whsec_v5"), T0 + 2000, T0 + 500).await.unwrap().unwrap();
    store.rotate_secret(&tenant.id, &endpoint.id, &new_secret("whsec_v6"), T0 + 700, T0 + 600).await.unwrap().unwrap();
    assert_eq!(
        summary(store.signing_secrets(&endpoint.id, T0 + 600).await.unwrap()),
        [
            (6, SecretStatus::Active, None),
            (5, SecretStatus::Retiring, Some(T0 + 700)),
            (4, SecretStatus::Retiring, Some(T0 + 700))
        ]
    );
    let v7 = store
        .rotate_secret(&tenant.id, &endpoint.id, &new_secret("whsec_v7"), T0 + 650, T0 + 650)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.signing_secrets(&endpoint.id, T0 + 650).await.unwrap(), vec![v7]);
    assert_eq!(
        summary(store.list_secrets(&tenant.id, &endpoint.id).await.unwrap())[..4],
        [
            (7, SecretStatus::Active, None),
            (6, SecretStatus::Revoked, Some(T0 + 650)),
            (5, SecretStatus::Revoked, Some(T0 + 650)),
            (4, SecretStatus::Revoked, Some(T0 + 650))
        ]
    );
}

async fn event_types_upsert_and_page_by_name(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let tenant_id = tenant.id.as_str();
    let other = new_tenant(store).await;
    let (created, was_created) = store
        .register_event_type(&tenant.id, &event_type("order.created", "An order was placed", None, T0))
        .await
        .unwrap();
    assert_eq!(
        (created.name.as_str(), created.description.as_str(), created.created_at, was_created),
        ("order.created", "An order was placed", T0, true)
    );
    let (updated, was_created) =
        store.register_event_type(&tenant.id, &event_type("order.created", "Placed", None, T0 + 5)).await.unwrap();
    assert_eq!((updated.description.as_str(), updated.created_at), ("Placed", T0), "an upsert keeps created_at");
    assert!(!was_created, "the second registration updates");
    // Within the same millisecond too: what the store did is reported, not guessed from the timestamp.
    let (again, was_created) =
        store.register_event_type(&tenant.id, &event_type("order.created", "Placed", None, T0)).await.unwrap();
    assert_eq!((again.created_at, was_created), (T0, false));
    store.register_event_type(&tenant.id, &event_type("invoice.paid", "", None, T0 + 1)).await.unwrap();
    store.register_event_type(&tenant.id, &event_type("account.closed", "", None, T0 + 2)).await.unwrap();
    store.register_event_type(&other.id, &event_type("zzz.other", "", None, T0)).await.unwrap();

    // Publishing registers unknown types and leaves known ones alone; Switchyard's own (test events) are not
    // registered, through either way of publishing.
    let endpoint = add_endpoint(store, &tenant).await;
    publish(store, &tenant, "payment.failed", &[&endpoint], T0 + 50).await;
    publish(store, &tenant, "order.created", &[&endpoint], T0 + 60).await;
    publish(store, &tenant, "switchyard.test", &[&endpoint], T0 + 70).await;
    let batched = fan_out(event_of(&tenant, "switchyard.test", T0 + 80), &[&endpoint]);
    store.write_batch(&[batched], "node-a", &[]).await.0.unwrap();

    let pages = all_pages(
        2,
        |t: &EventType| t.name.clone(),
        |page| async move { store.list_event_types(tenant_id, &page).await.unwrap() },
    )
    .await;
    let listed: Vec<(String, String, Millis)> =
        pages.concat().into_iter().map(|t| (t.name, t.description, t.created_at)).collect();
    assert_eq!(
        listed,
        [
            ("account.closed".into(), "".into(), T0 + 2),
            ("invoice.paid".into(), "".into(), T0 + 1),
            ("order.created".into(), "Placed".into(), T0),
            ("payment.failed".into(), "".into(), T0 + 50),
        ]
    );
    assert_eq!(pages.len(), 2);
    let others = store.list_event_types(&other.id, &page(10)).await.unwrap();
    assert_eq!(others.into_iter().map(|t| t.name).collect::<Vec<_>>(), ["zzz.other"]);

    // Schemas: kept as given, replaced (or removed) by the next registration, listed per tenant by name.
    assert!(store.event_type_schemas(tenant_id).await.unwrap().is_empty());
    let schema = r#"{ "type": "object",  "required": ["id"] }"#;
    let (with_schema, _) =
        store.register_event_type(tenant_id, &event_type("invoice.paid", "Paid", Some(schema), T0 + 90)).await.unwrap();
    assert_eq!((with_schema.schema.as_deref(), with_schema.created_at), (Some(schema), T0 + 1));
    store.register_event_type(tenant_id, &event_type("account.closed", "", Some("true"), T0)).await.unwrap();
    store.register_event_type(&other.id, &event_type("zzz.other", "", Some("false"), T0)).await.unwrap();
    // Listed by digest: the SHA-256 of the text as stored.
    assert_eq!(
        store.event_type_schemas(tenant_id).await.unwrap(),
        [("account.closed".to_string(), schema_digest("true")), ("invoice.paid".to_string(), schema_digest(schema))]
    );
    assert_eq!(schema_digest("true"), "b5bea41b6c623f7c09f1bf24dcae58ebab3c0cdd90ad966bc43a45b44867e12b");
    let fetched = store.get_event_type(tenant_id, "invoice.paid").await.unwrap().unwrap();
    assert_eq!(fetched, with_schema);
    assert_eq!(store.get_event_type(tenant_id, "zzz.other").await.unwrap(), None, "another tenant's type");
    assert_eq!(store.get_event_type(tenant_id, "no.such").await.unwrap(), None);
    let (cleared, created) =
        store.register_event_type(tenant_id, &event_type("account.closed", "Closed", None, T0)).await.unwrap();
    assert_eq!((cleared.schema, cleared.description.as_str(), created), (None, "Closed", false));
    assert_eq!(store.event_type_schemas(tenant_id).await.unwrap().len(), 1);
    // Publishing a type that has a schema leaves it alone.
    publish(store, &tenant, "invoice.paid", &[&endpoint], T0 + 100).await;
    let after = store.get_event_type(tenant_id, "invoice.paid").await.unwrap().unwrap();
    assert_eq!(after.schema.as_deref(), Some(schema));
}

fn event_type(name: &str, description: &str, schema: Option<&str>, created_at: Millis) -> EventType {
    EventType { name: name.into(), description: description.into(), schema: schema.map(Into::into), created_at }
}

async fn publish_stores_events_with_their_deliveries(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let first = add_endpoint(store, &tenant).await;
    let second = add_endpoint(store, &tenant).await;
    let fanned = fan_out(event_of(&tenant, "order.created", T0 + 7), &[&first, &second]);
    // Multi-byte UTF-8, escapes and spacing, after another event's payload in the same batch.
    let unrouted_data = r#"{ "note":"café ✓ \u00e9\n\"q\"", "n" : [ 1e3 ] }"#;
    let unrouted = fan_out(
        Event {
            data: RawValue::from_string(unrouted_data.into()).unwrap(),
            ..event_of(&tenant, "order.deleted", T0 + 8)
        },
        &[],
    );
    let published = store.publish(&[fanned.clone(), unrouted.clone()]).await.unwrap();
    assert_eq!(
        published,
        [
            Published { event_id: fanned.event.id.clone(), deliveries: 2, replayed: false, leased: vec![] },
            Published { event_id: unrouted.event.id.clone(), deliveries: 0, replayed: false, leased: vec![] },
        ]
    );

    let stored = store.get_event(&tenant.id, &fanned.event.id).await.unwrap().unwrap();
    assert_eq!(stored, fanned.event);
    assert_eq!(stored.data.get(), r#"{"amount": 12.50,  "items": [1, 2]}"#, "the payload is kept byte for byte");
    let stored = store.get_event(&tenant.id, &unrouted.event.id).await.unwrap().unwrap();
    assert_eq!(stored.data.get(), unrouted_data, "the payload is kept byte for byte");
    assert_eq!(store.get_event(&other.id, &fanned.event.id).await.unwrap(), None);

    for NewDelivery { id: delivery_id, endpoint_id, .. } in &fanned.deliveries {
        let d = delivery(store, &tenant, delivery_id).await;
        let expected = Delivery {
            id: delivery_id.clone(),
            tenant_id: tenant.id.clone(),
            event_id: fanned.event.id.clone(),
            endpoint_id: endpoint_id.clone(),
            event_type: "order.created".into(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            schedule_offset: 0,
            next_attempt_at: Some(T0 + 7),
            lease_owner: None,
            lease_expires_at: None,
            last_status_code: None,
            prepared: None,
            last_error: None,
            created_at: T0 + 7,
            updated_at: T0 + 7,
        };
        assert_eq!(d, expected);
    }
    let by_event = |event_id: &str| DeliveryFilter { event_id: Some(event_id.into()), ..Default::default() };
    assert_eq!(store.list_deliveries(&tenant.id, &by_event(&fanned.event.id), &page(10)).await.unwrap().len(), 2);
    assert!(store.list_deliveries(&tenant.id, &by_event(&unrouted.event.id), &page(10)).await.unwrap().is_empty());

    // Endpoints that vanished after matching, or never were the tenant's, get no delivery that would wait forever.
    let deleted = add_endpoint(store, &tenant).await;
    store.delete_endpoint(&tenant.id, &deleted.id, T0 + 8).await.unwrap();
    let foreign = add_endpoint(store, &other).await;
    let stale = fan_out(event_of(&tenant, "order.created", T0 + 9), &[&deleted, &first, &foreign]);
    let published = store.publish(std::slice::from_ref(&stale)).await.unwrap();
    assert_eq!(
        published,
        [Published { event_id: stale.event.id.clone(), deliveries: 1, replayed: false, leased: vec![] }]
    );
    let created = store.list_deliveries(&tenant.id, &by_event(&stale.event.id), &page(10)).await.unwrap();
    assert_eq!(created.into_iter().map(|d| d.endpoint_id).collect::<Vec<_>>(), [first.id.as_str()]);
    assert!(store.list_deliveries(&other.id, &DeliveryFilter::default(), &page(10)).await.unwrap().is_empty());
}

async fn concurrent_publishes_of_one_idempotency_key_store_one_event(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let attempts: Vec<NewEvent> = (0..8)
        .map(|_| {
            let event =
                Event { idempotency_key: Some("same-request".into()), ..event_of(&tenant, "order.created", T0) };
            fan_out(event, &[&endpoint])
        })
        .collect();
    let results =
        futures_util::future::join_all(attempts.iter().map(|new| store.publish(std::slice::from_ref(new)))).await;
    let results: Vec<Published> = results.into_iter().map(|r| r.unwrap().remove(0)).collect();

    let stored: Vec<&Published> = results.iter().filter(|p| !p.replayed).collect();
    assert_eq!(stored.len(), 1, "exactly one publish stores the event: {results:?}");
    assert!(results.iter().all(|p| p.event_id == stored[0].event_id && p.deliveries == 1));
    assert_eq!(store.list_events(&tenant.id, &EventFilter::default(), &page(100)).await.unwrap().len(), 1);
    assert_eq!(store.list_deliveries(&tenant.id, &DeliveryFilter::default(), &page(100)).await.unwrap().len(), 1);

    // Batches sharing some new keys, in opposite orders, at once (two nodes retrying overlapping requests), of a
    // type never published before: each key is stored once, and neither batch fails (PostgreSQL broke the
    // deadlocks they made, on the keys and on the new type, by failing one).
    for round in 0..20 {
        let keys: Vec<String> = (0..6).map(|k| format!("round-{round}-key-{k}")).collect();
        let event_type = format!("order.round{round}");
        let batch = |keys: &mut dyn Iterator<Item = &String>| -> Vec<NewEvent> {
            keys.map(|key| {
                let event = Event { idempotency_key: Some(key.clone()), ..event_of(&tenant, &event_type, T0) };
                fan_out(event, &[&endpoint])
            })
            .collect()
        };
        let (forward, backward) = (batch(&mut keys[..4].iter()), batch(&mut keys[2..].iter().rev()));
        let (a, b) = tokio::join!(store.publish(&forward), store.publish(&backward));
        let (a, b) = (a.unwrap(), b.unwrap());
        let stored = a.iter().chain(&b).filter(|p| !p.replayed).count();
        assert_eq!(stored, keys.len(), "round {round}: {a:?} {b:?}");
    }
}

async fn publish_replays_reused_idempotency_keys(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let other_endpoint = add_endpoint(store, &other).await;
    let keyed = |tenant: &Tenant, endpoints: &[&Endpoint], key: &str| {
        fan_out(Event { idempotency_key: Some(key.into()), ..event_of(tenant, "order.created", T0) }, endpoints)
    };

    let original = keyed(&tenant, &[&endpoint], "order-17");
    let first = store.publish(std::slice::from_ref(&original)).await.unwrap();
    assert_eq!(
        first,
        [Published { event_id: original.event.id.clone(), deliveries: 1, replayed: false, leased: vec![] }]
    );

    // A retry of the request, now matching two endpoints: the stored event and its one delivery stand.
    let retried = keyed(&tenant, &[&endpoint, &endpoint], "order-17");
    let replay = store.publish(std::slice::from_ref(&retried)).await.unwrap();
    assert_eq!(
        replay,
        [Published { event_id: original.event.id.clone(), deliveries: 1, replayed: true, leased: vec![] }]
    );
    assert_eq!(store.get_event(&tenant.id, &retried.event.id).await.unwrap(), None);
    assert!(store.get_delivery(&tenant.id, &retried.deliveries[0].id).await.unwrap().is_none());

    // The same key twice in one batch: the second is a replay of the first.
    let one = keyed(&tenant, &[&endpoint], "batch-key");
    let two = keyed(&tenant, &[&endpoint], "batch-key");
    let plain = fan_out(event_of(&tenant, "order.created", T0), &[&endpoint]);
    let batch = store.publish(&[one.clone(), two.clone(), plain.clone()]).await.unwrap();
    assert_eq!(
        batch,
        [
            Published { event_id: one.event.id.clone(), deliveries: 1, replayed: false, leased: vec![] },
            Published { event_id: one.event.id.clone(), deliveries: 1, replayed: true, leased: vec![] },
            Published { event_id: plain.event.id.clone(), deliveries: 1, replayed: false, leased: vec![] },
        ]
    );
    assert_eq!(store.get_event(&tenant.id, &two.event.id).await.unwrap(), None);

    // Keys belong to a tenant.
    let foreign = keyed(&other, &[&other_endpoint], "order-17");
    let theirs = store.publish(std::slice::from_ref(&foreign)).await.unwrap();
    assert_eq!(
        theirs,
        [Published { event_id: foreign.event.id.clone(), deliveries: 1, replayed: false, leased: vec![] }]
    );

    let all = store.list_deliveries(&tenant.id, &DeliveryFilter::default(), &page(100)).await.unwrap();
    assert_eq!(all.len(), 3, "original, batch-key, plain");

    // The events behind keys, for comparing a retry with what its key first stored.
    let keys = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let mut found =
        store.events_by_idempotency_keys(&tenant.id, &keys(&["order-17", "batch-key", "unused"])).await.unwrap();
    found.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    assert_eq!(found, [one.event.clone(), original.event.clone()]);
    let found = store.events_by_idempotency_keys(&other.id, &keys(&["order-17", "batch-key"])).await.unwrap();
    assert_eq!(found, std::slice::from_ref(&foreign.event));
    assert!(store.events_by_idempotency_keys(&tenant.id, &[]).await.unwrap().is_empty());
}

async fn publish_is_one_transaction(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let good = fan_out(event_of(&tenant, "brand.new", T0), &[&endpoint]);
    let mut clashing = fan_out(event_of(&tenant, "order.created", T0), &[&endpoint]);
    clashing.deliveries[0].id = good.deliveries[0].id.clone();

    let refused = store.publish(&[good.clone(), clashing]).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    assert_eq!(store.get_event(&tenant.id, &good.event.id).await.unwrap(), None);
    assert!(store.get_delivery(&tenant.id, &good.deliveries[0].id).await.unwrap().is_none());
    assert!(store.list_events(&tenant.id, &EventFilter::default(), &page(10)).await.unwrap().is_empty());
    assert!(store.list_event_types(&tenant.id, &page(10)).await.unwrap().is_empty(), "type registration rolled back");

    // An event id already stored is a conflict too, not a silent success.
    publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let stored = store.list_events(&tenant.id, &EventFilter::default(), &page(10)).await.unwrap();
    let again = fan_out(stored[0].clone(), &[&endpoint]);
    assert!(matches!(store.publish(&[again]).await, Err(StoreError::Conflict(_))));
}

/// Deleting endpoints while their deliveries are attempted (answered 410 Gone) and requeued, their secrets rotated
/// and new events published to them: nothing deadlocks or fails, and no delivery is left waiting for an endpoint
/// that is gone.
async fn endpoint_deletion_racing_with_other_changes(store: &dyn Store, _url: &str) {
    const ENDPOINTS: usize = 10;
    let tenant = new_tenant(store).await;
    let mut endpoints = Vec::new();
    for _ in 0..ENDPOINTS {
        endpoints.push(add_endpoint(store, &tenant).await);
    }
    for endpoint in &endpoints {
        publish(store, &tenant, "order.created", &[endpoint], T0).await;
    }
    let jobs = store.claim_due("node", T0, T0 + MINUTE, 100).await.unwrap();
    assert_eq!(jobs.len(), ENDPOINTS);

    let race = |endpoint: &Endpoint| {
        let job = jobs.iter().find(|j| j.endpoint.id == endpoint.id).unwrap();
        let mut gone = outcome(&job.delivery, DeliveryStatus::Dead, T0 + 1);
        gone.disable_endpoint = Some("receiver answered 410 Gone".into());
        let late_event = fan_out(event_of(&tenant, "order.created", T0 + 2), &[endpoint]);
        let (tenant_id, endpoint_id) = (tenant.id.clone(), endpoint.id.clone());
        let rotated_secret = new_secret("whsec_v2");
        let requeue =
            RequeueSelector::Matching(DeliveryFilter { endpoint_id: Some(endpoint.id.clone()), ..Default::default() });
        async move {
            let (recorded, deleted, rotated, published, requeued) = tokio::join!(
                store.record_attempt("node", &gone),
                store.delete_endpoint(&tenant_id, &endpoint_id, T0 + 3),
                store.rotate_secret(&tenant_id, &endpoint_id, &rotated_secret, T0 + 10, T0 + 3),
                store.publish(std::slice::from_ref(&late_event)),
                store.requeue_dead(&tenant_id, &requeue, T0 + 3, Resend::SameRequest),
            );
            recorded.unwrap();
            assert!(deleted.unwrap());
            rotated.unwrap();
            published.unwrap();
            requeued.unwrap();
        }
    };
    futures_util::future::join_all(endpoints.iter().map(race)).await;

    for endpoint in &endpoints {
        assert_eq!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap(), None);
    }
    let left = store.list_deliveries(&tenant.id, &DeliveryFilter::default(), &page(1_000)).await.unwrap();
    assert!(left.len() >= ENDPOINTS);
    for d in left {
        assert_eq!(d.status, DeliveryStatus::Dead, "{d:?}");
        assert_eq!(d.lease_owner, None);
    }
    assert_eq!(store.next_due_at().await.unwrap(), None);
}

async fn events_list_by_filter_in_pages(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let mut events = Vec::new();
    for i in 0..6 {
        let event_type = if i % 2 == 0 { "a.even" } else { "b.odd" };
        let event = event_received_at(&tenant, event_type, T0 + i * 1_000);
        store.publish(&[fan_out(event.clone(), &[])]).await.unwrap();
        events.push(event);
    }
    store.publish(&[fan_out(event_received_at(&other, "a.even", T0), &[])]).await.unwrap();
    let ids = |found: Vec<Event>| found.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let expect = |pick: &dyn Fn(usize) -> bool| {
        newest_first(events.iter().enumerate().filter(|(i, _)| pick(*i)).map(|(_, e)| e.id.clone()))
    };
    let list = |filter: EventFilter| {
        let tenant = &tenant;
        async move { store.list_events(&tenant.id, &filter, &page(100)).await.unwrap() }
    };

    let everything = list(EventFilter::default()).await;
    assert_eq!(everything.first(), Some(&events[5]), "whole events come back, newest first");
    assert_eq!(ids(everything), expect(&|_| true));
    assert_eq!(
        ids(list(EventFilter { event_type: Some("a.even".into()), ..Default::default() }).await),
        expect(&|i| i % 2 == 0)
    );
    assert_eq!(ids(list(EventFilter { since: Some(T0 + 2_000), ..Default::default() }).await), expect(&|i| i >= 2));
    assert_eq!(ids(list(EventFilter { until: Some(T0 + 2_000), ..Default::default() }).await), expect(&|i| i < 2));
    let window = EventFilter { event_type: Some("b.odd".into()), since: Some(T0 + 1_000), until: Some(T0 + 5_000) };
    assert_eq!(ids(list(window).await), expect(&|i| i == 1 || i == 3));

    let pages = all_pages(
        4,
        |e: &Event| e.id.clone(),
        |page| {
            let tenant = &tenant;
            async move { store.list_events(&tenant.id, &EventFilter::default(), &page).await.unwrap() }
        },
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
    assert_eq!(ids(pages.concat()), expect(&|_| true));
    assert_eq!(store.list_events(&other.id, &EventFilter::default(), &page(100)).await.unwrap().len(), 1);
}

async fn deliveries_list_by_each_filter(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let first = add_endpoint(store, &tenant).await;
    let second = add_endpoint(store, &tenant).await;
    let early = publish_new(store, fan_out_timed(event_of(&tenant, "a.created", T0), &[&first, &second])).await;
    let late = publish_new(store, fan_out_timed(event_of(&tenant, "b.updated", T0 + 1_000), &[&first])).await;
    let succeeded =
        claim(store, "node", T0 + 1_000).await.into_iter().find(|j| j.delivery.id == late.deliveries[0].id).unwrap();
    store.record_attempt("node", &outcome(&succeeded.delivery, DeliveryStatus::Succeeded, T0 + 1_000)).await.unwrap();
    store.release("node", &delivery_ids(&early)).await.unwrap();

    let all: Vec<String> = [delivery_ids(&early), delivery_ids(&late)].concat();
    let list = |filter: DeliveryFilter| {
        let tenant = &tenant;
        async move {
            let found = store.list_deliveries(&tenant.id, &filter, &page(100)).await.unwrap();
            found.into_iter().map(|d| d.id).collect::<Vec<_>>()
        }
    };
    let f = DeliveryFilter::default;
    assert_eq!(list(f()).await, newest_first(all.clone()));
    assert_eq!(
        list(DeliveryFilter { endpoint_id: Some(first.id.clone()), ..f() }).await,
        newest_first([early.deliveries[0].id.clone(), late.deliveries[0].id.clone()])
    );
    assert_eq!(
        list(DeliveryFilter { event_id: Some(early.event.id.clone()), ..f() }).await,
        newest_first(delivery_ids(&early))
    );
    assert_eq!(list(DeliveryFilter { event_type: Some("b.updated".into()), ..f() }).await, delivery_ids(&late));
    assert_eq!(list(DeliveryFilter { status: Some(DeliveryStatus::Succeeded), ..f() }).await, delivery_ids(&late));
    assert_eq!(
        list(DeliveryFilter { status: Some(DeliveryStatus::Pending), ..f() }).await,
        newest_first(delivery_ids(&early))
    );
    assert!(list(DeliveryFilter { status: Some(DeliveryStatus::Dead), ..f() }).await.is_empty());
    assert_eq!(
        list(DeliveryFilter { since: Some(T0 + 1_000), ..f() }).await,
        delivery_ids(&late),
        "since is inclusive"
    );
    assert_eq!(
        list(DeliveryFilter { until: Some(T0 + 1_000), ..f() }).await,
        newest_first(delivery_ids(&early)),
        "until is exclusive"
    );
    let combined = DeliveryFilter { endpoint_id: Some(second.id.clone()), event_type: Some("a.created".into()), ..f() };
    assert_eq!(list(combined).await, vec![early.deliveries[1].id.clone()]);
    // By last change (for a dead letter, its death): the late delivery's attempt came after every other change.
    let rows = store.list_deliveries(&tenant.id, &f(), &page(100)).await.unwrap();
    let changed = delivery(store, &tenant, &late.deliveries[0].id).await.updated_at;
    let before: Vec<String> = rows.iter().filter(|d| d.updated_at < changed).map(|d| d.id.clone()).collect();
    assert_eq!(before, newest_first(delivery_ids(&early)), "{rows:#?}");
    assert_eq!(list(DeliveryFilter { updated_since: Some(changed), ..f() }).await, delivery_ids(&late), "inclusive");
    assert_eq!(list(DeliveryFilter { updated_until: Some(changed), ..f() }).await, before, "exclusive");

    let pages = all_pages(
        2,
        |d: &Delivery| d.id.clone(),
        |page| {
            let tenant = &tenant;
            async move { store.list_deliveries(&tenant.id, &DeliveryFilter::default(), &page).await.unwrap() }
        },
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(pages.concat().into_iter().map(|d| d.id).collect::<Vec<_>>(), newest_first(all));
    assert!(store.list_deliveries(&other.id, &DeliveryFilter::default(), &page(100)).await.unwrap().is_empty());

    // Deliveries in flight are not in the status index but in the leases' (see migration 0005): listed through
    // those, they are still the tenant's own only, filtered and paged like the others.
    let sent = publish_new(store, fan_out_timed(event_of(&tenant, "c.sent", T0 + 2_000), &[&first, &second])).await;
    let elsewhere = publish_new(
        store,
        fan_out_timed(event_of(&other, "c.sent", T0 + 2_000), &[&add_endpoint(store, &other).await]),
    )
    .await;
    assert_eq!(claim(store, "node", T0 + 2_000).await.len(), 5, "the released, the sent and the other tenant's");
    let delivering = || DeliveryFilter { status: Some(DeliveryStatus::Delivering), ..f() };
    let in_flight = newest_first([delivery_ids(&early), delivery_ids(&sent)].concat());
    assert_eq!(list(delivering()).await, in_flight);
    assert_eq!(
        list(DeliveryFilter { endpoint_id: Some(first.id.clone()), ..delivering() }).await,
        newest_first([early.deliveries[0].id.clone(), sent.deliveries[0].id.clone()])
    );
    assert!(list(DeliveryFilter { status: Some(DeliveryStatus::Pending), ..f() }).await.is_empty());
    let pages = all_pages(
        3,
        |d: &Delivery| d.id.clone(),
        |page| {
            let tenant = &tenant;
            async move { store.list_deliveries(&tenant.id, &delivering(), &page).await.unwrap() }
        },
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(pages.concat().into_iter().map(|d| d.id).collect::<Vec<_>>(), in_flight);
    let others = store.list_deliveries(&other.id, &delivering(), &page(100)).await.unwrap();
    assert_eq!(others.into_iter().map(|d| d.id).collect::<Vec<_>>(), delivery_ids(&elsewhere));
}

async fn claim_respects_due_time_and_endpoint_status(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let active = add_endpoint(store, &tenant).await;
    let paused = add_endpoint_with_status(store, &tenant, EndpointStatus::Paused).await;
    let disabled = add_endpoint_with_status(store, &tenant, EndpointStatus::Disabled).await;
    let now_due = publish(store, &tenant, "order.created", &[&active, &paused, &disabled], T0).await;
    let later = publish(store, &tenant, "order.created", &[&active], T0 + 10_000).await;

    assert!(claim(store, "node-a", T0 - 1).await.is_empty(), "nothing is due yet");
    let jobs = store.claim_due("node-a", T0, T0 + 30_000, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.delivery.id, now_due.deliveries[0].id);
    assert_eq!(job.delivery.status, DeliveryStatus::Delivering);
    assert_eq!(
        (job.delivery.lease_owner.as_deref(), job.delivery.lease_expires_at),
        (Some("node-a"), Some(T0 + 30_000))
    );
    assert_eq!((job.delivery.attempts, job.delivery.next_attempt_at, job.delivery.updated_at), (0, Some(T0), T0));
    assert_eq!(job.event.event, now_due.event);
    assert_eq!(job.event.envelope, now_due.event.envelope().as_bytes(), "the envelope comes rendered");
    assert_eq!(job.endpoint.endpoint, active, "the endpoint comes with its subscriptions");
    assert_eq!(job.endpoint.url.as_ref().map(|url| url.as_str()), Some(active.url.as_str()), "and its URL parsed");
    assert_eq!(delivery(store, &tenant, &job.delivery.id).await, job.delivery, "the job shows the stored state");

    assert!(claim(store, "node-b", T0 + 5_000).await.is_empty(), "leased, paused and disabled are not claimed");
    let next = claim(store, "node-b", T0 + 10_000).await;
    assert_eq!(claimed_ids(&next), BTreeSet::from([later.deliveries[0].id.clone()]));

    store.set_endpoint_status(&tenant.id, &paused.id, EndpointStatus::Active, None, T0 + 10_001).await.unwrap();
    let resumed = claim(store, "node-b", T0 + 10_001).await;
    assert_eq!(claimed_ids(&resumed), BTreeSet::from([now_due.deliveries[1].id.clone()]));
    assert_eq!(resumed[0].endpoint.status, EndpointStatus::Active);
}

async fn claim_takes_expired_leases_and_respects_the_limit(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(store, &tenant, "order.created", &[&endpoint], T0 + i).await.deliveries[0].id.clone());
    }

    let first = store.claim_due("node-a", T0 + 10, T0 + 1_000, 2).await.unwrap();
    let order: Vec<String> = first.iter().map(|j| j.delivery.id.clone()).collect();
    assert_eq!(order, ids[..2], "oldest due first, at most `limit`");
    let rest = store.claim_due("node-b", T0 + 500, T0 + 1_500, 10).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.delivery.id.clone()).collect::<Vec<_>>(), ids[2..]);
    assert!(store.claim_due("node-c", T0 + 999, T0 + 5_000, 10).await.unwrap().is_empty(), "leases still held");
    assert!(store.claim_due("node-c", T0 + 999, T0 + 5_000, 0).await.unwrap().is_empty());

    let taken_over = store.claim_due("node-c", T0 + 1_000, T0 + 5_000, 10).await.unwrap();
    assert_eq!(claimed_ids(&taken_over), ids[..2].iter().cloned().collect(), "node-a's expired leases, not node-b's");
    assert!(taken_over.iter().all(|j| j.delivery.lease_owner.as_deref() == Some("node-c")));
    assert!(taken_over.iter().all(|j| j.delivery.lease_expires_at == Some(T0 + 5_000)));

    let stale =
        store.record_attempt("node-a", &outcome(&first[0].delivery, DeliveryStatus::Succeeded, T0 + 1_001)).await;
    assert!(!stale.unwrap(), "node-a lost its lease");
    assert_eq!(delivery(store, &tenant, &ids[0]).await.lease_owner.as_deref(), Some("node-c"));
}

async fn concurrent_claims_never_share_a_delivery(store: &dyn Store, _url: &str) {
    const CLAIMERS: usize = 8;
    let tenant = new_tenant(store).await;
    let mut endpoints = Vec::new();
    for _ in 0..4 {
        endpoints.push(add_endpoint(store, &tenant).await);
    }
    let targets: Vec<&Endpoint> = endpoints.iter().collect();
    let batch: Vec<NewEvent> = (0..50).map(|i| fan_out(event_of(&tenant, "order.created", T0 + i), &targets)).collect();
    store.publish(&batch).await.unwrap();
    let expected: BTreeSet<String> = batch.iter().flat_map(delivery_ids).collect();
    assert_eq!(expected.len(), 200);

    let claimer = |owner: String| async move {
        let mut mine = Vec::new();
        loop {
            let jobs = store.claim_due(&owner, T0 + 100, T0 + 10 * MINUTE, 7).await.unwrap();
            if jobs.is_empty() {
                return mine;
            }
            assert!(jobs.iter().all(|j| j.delivery.lease_owner.as_deref() == Some(owner.as_str())));
            mine.extend(jobs.into_iter().map(|j| j.delivery.id));
        }
    };
    let claims = futures_util::future::join_all((0..CLAIMERS).map(|i| claimer(format!("node-{i}")))).await;

    let all: Vec<&String> = claims.iter().flatten().collect();
    let distinct: BTreeSet<String> = all.iter().map(|id| (*id).clone()).collect();
    assert_eq!(all.len(), distinct.len(), "a delivery was claimed twice");
    assert_eq!(distinct, expected, "every delivery was claimed");
    assert!(claim(store, "late", T0 + 100).await.is_empty());
}

async fn record_attempt_updates_the_delivery_and_appends_the_attempt(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let new = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let id = &new.deliveries[0].id;

    let claimed = claim(store, "node-a", T0 + 5).await.remove(0).delivery;
    let failure = outcome(&claimed, DeliveryStatus::Failed, T0 + 5);
    assert!(store.record_attempt("node-a", &failure).await.unwrap());
    let failed = delivery(store, &tenant, id).await;
    assert_eq!(
        failed,
        Delivery {
            status: DeliveryStatus::Failed,
            attempts: 1,
            next_attempt_at: Some(T0 + 5 + MINUTE),
            lease_owner: None,
            lease_expires_at: None,
            last_status_code: Some(500),
            last_error: Some("HTTP 500".into()),
            updated_at: T0 + 125,
            ..claimed.clone()
        }
    );
    assert_eq!(store.list_attempts(&tenant.id, id).await.unwrap(), vec![failure.attempt.clone()]);
    assert!(store.list_attempts(&other.id, id).await.unwrap().is_empty());

    assert!(claim(store, "node-a", T0 + MINUTE).await.is_empty(), "the retry is not due yet");
    let again = claim(store, "node-b", T0 + 5 + MINUTE).await.remove(0).delivery;
    assert_eq!((again.attempts, again.status), (1, DeliveryStatus::Delivering));
    let success = outcome(&again, DeliveryStatus::Succeeded, T0 + 10 + MINUTE);
    assert!(store.record_attempt("node-b", &success).await.unwrap());
    let succeeded = delivery(store, &tenant, id).await;
    assert_eq!((succeeded.status, succeeded.attempts, succeeded.next_attempt_at), (DeliveryStatus::Succeeded, 2, None));
    assert_eq!((succeeded.last_status_code, succeeded.last_error), (Some(200), None));
    assert_eq!(
        store.list_attempts(&tenant.id, id).await.unwrap(),
        vec![failure.attempt, success.attempt],
        "oldest first"
    );
    assert!(claim(store, "node-a", T0 + 100 * MINUTE).await.is_empty(), "finished deliveries are not claimed");

    let doomed = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let leased = claim(store, "node-a", T0 + 100 * MINUTE).await.remove(0).delivery;
    assert!(store.record_attempt("node-a", &outcome(&leased, DeliveryStatus::Dead, T0 + 100 * MINUTE)).await.unwrap());
    let dead = delivery(store, &tenant, &doomed.deliveries[0].id).await;
    assert_eq!(
        (dead.status, dead.next_attempt_at, dead.last_error.as_deref()),
        (DeliveryStatus::Dead, None, Some("HTTP 500"))
    );
}

async fn record_attempt_without_the_lease_writes_nothing(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let new = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let id = &new.deliveries[0].id;

    let unclaimed = delivery(store, &tenant, id).await;
    assert!(
        !store.record_attempt("node-a", &outcome(&unclaimed, DeliveryStatus::Succeeded, T0)).await.unwrap(),
        "never leased"
    );

    let leased = claim(store, "node-a", T0).await.remove(0).delivery;
    assert!(!store.record_attempt("node-b", &outcome(&leased, DeliveryStatus::Succeeded, T0 + 1)).await.unwrap());
    let mut foreign = outcome(&leased, DeliveryStatus::Succeeded, T0 + 1);
    foreign.attempt.tenant_id = other.id.clone();
    assert!(!store.record_attempt("node-a", &foreign).await.unwrap(), "an attempt claiming another tenant");
    assert_eq!(delivery(store, &tenant, id).await, leased, "nothing changed");
    assert!(store.list_attempts(&tenant.id, id).await.unwrap().is_empty());

    assert!(store.record_attempt("node-a", &outcome(&leased, DeliveryStatus::Succeeded, T0 + 2)).await.unwrap());
    let twice = outcome(&leased, DeliveryStatus::Failed, T0 + 3);
    assert!(!store.record_attempt("node-a", &twice).await.unwrap(), "the lease ends with the first record");
    assert_eq!(store.list_attempts(&tenant.id, id).await.unwrap().len(), 1);
    assert_eq!(delivery(store, &tenant, id).await.status, DeliveryStatus::Succeeded);
}

async fn record_attempt_can_disable_the_endpoint(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let gone = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let in_flight = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let waiting = publish(store, &tenant, "order.created", &[&endpoint], T0 + MINUTE).await;

    let mut claimed = claim(store, "node-a", T0).await;
    assert_eq!(
        claimed_ids(&claimed),
        BTreeSet::from([gone.deliveries[0].id.clone(), in_flight.deliveries[0].id.clone()])
    );
    claimed.sort_by(|a, b| a.delivery.id.cmp(&b.delivery.id));
    let (leased, also_leased) = (claimed[0].delivery.clone(), claimed[1].delivery.clone());
    assert_eq!(leased.id, gone.deliveries[0].id);
    let mut answered_410 = outcome(&leased, DeliveryStatus::Dead, T0 + 1);
    answered_410.attempt.status_code = Some(410);
    answered_410.attempt.outcome = "gone".into();
    answered_410.disable_endpoint = Some("receiver answered 410 Gone".into());
    assert!(store.record_attempt("node-a", &answered_410).await.unwrap());

    let disabled = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!(disabled.status, EndpointStatus::Disabled);
    assert_eq!(disabled.status_reason.as_deref(), Some("receiver answered 410 Gone"));
    assert_eq!(disabled.updated_at, T0 + 121);
    assert_eq!(delivery(store, &tenant, &leased.id).await.last_status_code, Some(410));
    let entries = disabled_entries(store, &tenant, &endpoint).await;
    assert_eq!(
        entries.iter().map(|e| (&e.details["reason"], e.at)).collect::<Vec<_>>(),
        [(&json!("receiver answered 410 Gone"), T0 + 121)]
    );

    // Another delivery in flight meets a 410 too: recorded, but the endpoint keeps the first one's reason and time.
    let mut another_410 = outcome(&also_leased, DeliveryStatus::Dead, T0 + 5);
    another_410.attempt.status_code = Some(410);
    another_410.disable_endpoint = Some("a later 410".into());
    assert!(store.record_attempts("node-a", &[another_410]).await.unwrap()[0]);
    assert_eq!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap(), disabled);
    assert_eq!(delivery(store, &tenant, &also_leased.id).await.status, DeliveryStatus::Dead);
    assert_eq!(disabled_entries(store, &tenant, &endpoint).await.len(), 1, "only the attempt that disabled it");
    assert!(store.active_endpoints(&tenant.id).await.unwrap().is_empty());
    assert!(claim(store, "node-a", T0 + 2 * MINUTE).await.is_empty(), "a disabled endpoint's deliveries wait");
    assert_eq!(delivery(store, &tenant, &waiting.deliveries[0].id).await.status, DeliveryStatus::Pending);
}

/// The endpoint.disabled entries of an endpoint, newest first.
async fn disabled_entries(store: &dyn Store, tenant: &Tenant, endpoint: &Endpoint) -> Vec<AuditEntry> {
    let filter = AuditFilter { action: Some("endpoint.disabled".into()), resource_id: Some(endpoint.id.clone()) };
    store.list_audit(Some(&tenant.id), &filter, &page(10)).await.unwrap()
}

/// Two attempts that would each disable an endpoint, recorded together: the endpoint takes the first one's reason,
/// and the audit log gets one entry, written in the same transaction, that agrees with it.
async fn a_disabled_endpoint_gets_one_audit_entry_with_its_reason(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    for _ in 0..2 {
        publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    }
    let mut claimed = claim(store, "node-a", T0).await;
    claimed.sort_by(|a, b| a.delivery.id.cmp(&b.delivery.id));
    let outcomes: Vec<AttemptOutcome> = claimed
        .iter()
        .zip(["first reason", "second reason"])
        .map(|(job, reason)| AttemptOutcome {
            disable_endpoint: Some(reason.into()),
            ..outcome(&job.delivery, DeliveryStatus::Failed, T0 + 1)
        })
        .collect();
    assert_eq!(store.record_attempts("node-a", &outcomes).await.unwrap(), [true, true]);

    let disabled = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!((disabled.status, disabled.status_reason.as_deref()), (EndpointStatus::Disabled, Some("first reason")));
    let entries = disabled_entries(store, &tenant, &endpoint).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(
        (entry.actor.as_str(), entry.resource_type.as_str(), entry.at),
        ("switchyard", "endpoint", disabled.updated_at)
    );
    assert_eq!(
        entry.details,
        json!({ "reason": "first reason", "delivery_id": claimed[0].delivery.id, "status_code": outcomes[0].attempt.status_code })
    );
}

/// An endpoint disabled for failing every attempt: the attempt that says so keeps its retry, which waits for the
/// endpoint's activation instead of dying.
async fn a_failed_attempt_can_disable_its_endpoint_and_keep_its_retry(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let published = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let claimed = claim(store, "node-a", T0).await;
    assert_eq!(claimed.len(), 1);
    let mut failed = outcome(&claimed[0].delivery, DeliveryStatus::Failed, T0 + 1);
    failed.disable_endpoint = Some("every attempt failed for 5days: 12 attempts since …".into());
    assert!(store.record_attempts("node-a", &[failed]).await.unwrap()[0]);

    let disabled = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!(disabled.status, EndpointStatus::Disabled);
    assert_eq!(disabled.status_reason.as_deref(), Some("every attempt failed for 5days: 12 attempts since …"));
    assert_eq!(disabled_entries(store, &tenant, &endpoint).await.len(), 1);
    let waiting = delivery(store, &tenant, &published.deliveries[0].id).await;
    assert_eq!((waiting.status, waiting.next_attempt_at), (DeliveryStatus::Failed, Some(T0 + 1 + MINUTE)));
    assert!(claim(store, "node-a", T0 + 2 * MINUTE).await.is_empty(), "held while disabled");

    let activated = store
        .set_endpoint_status(&tenant.id, &endpoint.id, EndpointStatus::Active, None, T0 + 3 * MINUTE)
        .await
        .unwrap();
    assert!(activated.is_some());
    let later = publish(store, &tenant, "order.created", &[&endpoint], T0 + 3 * MINUTE).await;
    let reclaimed = claim(store, "node-a", T0 + 3 * MINUTE).await;
    assert_eq!(claimed_ids(&reclaimed), BTreeSet::from([waiting.id, later.deliveries[0].id.clone()]));

    // Paused by an operator while those attempts were in flight: the pause stands, through either way of
    // recording an attempt.
    let paused_at = T0 + 4 * MINUTE;
    store.set_endpoint_status(&tenant.id, &endpoint.id, EndpointStatus::Paused, None, paused_at).await.unwrap();
    let failed_again = |job: &DispatchJob| AttemptOutcome {
        disable_endpoint: Some("every attempt failed for 5days: 13 attempts since …".into()),
        ..outcome(&job.delivery, DeliveryStatus::Failed, paused_at + 1)
    };
    assert!(store.record_attempt("node-a", &failed_again(&reclaimed[0])).await.unwrap());
    assert!(store.record_attempts("node-a", &[failed_again(&reclaimed[1])]).await.unwrap()[0]);
    let paused = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
    assert_eq!((paused.status, paused.status_reason, paused.updated_at), (EndpointStatus::Paused, None, paused_at));
    for job in &reclaimed {
        assert_eq!(delivery(store, &tenant, &job.delivery.id).await.status, DeliveryStatus::Failed, "retry kept");
    }
    assert_eq!(disabled_entries(store, &tenant, &endpoint).await.len(), 1, "nothing was disabled again");
}

async fn release_and_release_foreign_leases(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let retried = publish(store, &tenant, "order.created", &[&endpoint], T0).await.deliveries[0].id.clone();
    let fresh = publish(store, &tenant, "order.created", &[&endpoint], T0 + 1).await.deliveries[0].id.clone();
    let stuck = publish(store, &tenant, "order.created", &[&endpoint], T0 + 2).await.deliveries[0].id.clone();

    let first = store.claim_due("node-a", T0, T0 + MINUTE, 1).await.unwrap().remove(0).delivery;
    let mut failure = outcome(&first, DeliveryStatus::Failed, T0);
    failure.next_attempt_at = Some(T0);
    store.record_attempt("node-a", &failure).await.unwrap();
    assert_eq!(claim(store, "node-a", T0 + 10).await.len(), 3);
    let before: Vec<Delivery> = vec![
        delivery(store, &tenant, &retried).await,
        delivery(store, &tenant, &fresh).await,
        delivery(store, &tenant, &stuck).await,
    ];

    store.release("node-b", &[retried.clone(), fresh.clone()]).await.unwrap();
    assert_eq!(delivery(store, &tenant, &retried).await, before[0], "only the lease holder can release");

    store.release("node-a", &[retried.clone(), fresh.clone()]).await.unwrap();
    let given_back = |d: &Delivery, status| Delivery { status, lease_owner: None, lease_expires_at: None, ..d.clone() };
    assert_eq!(
        delivery(store, &tenant, &retried).await,
        given_back(&before[0], DeliveryStatus::Failed),
        "it had an attempt"
    );
    assert_eq!(delivery(store, &tenant, &fresh).await, given_back(&before[1], DeliveryStatus::Pending));
    assert_eq!(delivery(store, &tenant, &stuck).await, before[2]);
    store.release("node-a", &[]).await.unwrap();

    assert_eq!(store.release_foreign_leases("node-a").await.unwrap(), 0, "node-a's own lease stays");
    assert_eq!(store.release_foreign_leases("node-restarted").await.unwrap(), 1);
    assert_eq!(delivery(store, &tenant, &stuck).await, given_back(&before[2], DeliveryStatus::Pending));
    assert_eq!(claim(store, "node-restarted", T0 + 10).await.len(), 3, "everything released is due again at once");
    assert_eq!(store.release_foreign_leases("node-restarted").await.unwrap(), 0);
}

async fn defer_gives_back_due_later_without_an_attempt(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let retried = publish(store, &tenant, "order.created", &[&endpoint], T0).await.deliveries[0].id.clone();
    let fresh = publish(store, &tenant, "order.created", &[&endpoint], T0 + 1).await.deliveries[0].id.clone();
    let first = store.claim_due("node-a", T0, T0 + MINUTE, 1).await.unwrap().remove(0).delivery;
    let mut failure = outcome(&first, DeliveryStatus::Failed, T0);
    failure.next_attempt_at = Some(T0);
    store.record_attempt("node-a", &failure).await.unwrap();
    assert_eq!(claim(store, "node-a", T0 + 10).await.len(), 2);
    let before = [delivery(store, &tenant, &retried).await, delivery(store, &tenant, &fresh).await];

    let deferrals = [(retried.clone(), T0 + 500), (fresh.clone(), T0 + 550)];
    store.defer("node-b", &deferrals).await.unwrap();
    assert_eq!(delivery(store, &tenant, &retried).await, before[0], "only the lease holder can defer");

    store.defer("node-a", &deferrals).await.unwrap();
    let deferred = |d: &Delivery, status, at| Delivery {
        status,
        next_attempt_at: Some(at),
        lease_owner: None,
        lease_expires_at: None,
        ..d.clone()
    };
    assert_eq!(delivery(store, &tenant, &retried).await, deferred(&before[0], DeliveryStatus::Failed, T0 + 500));
    assert_eq!(delivery(store, &tenant, &fresh).await, deferred(&before[1], DeliveryStatus::Pending, T0 + 550));
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + 500));
    assert!(claim(store, "node-a", T0 + 499).await.is_empty(), "not due before its turn");
    let due = claim(store, "node-a", T0 + 550).await;
    let due: Vec<_> = due.iter().map(|job| (job.delivery.id.clone(), job.delivery.attempts)).collect();
    assert_eq!(due, [(retried, 1), (fresh, 0)], "in turn order, attempts unchanged");
    store.defer("node-a", &[]).await.unwrap();
}

/// Deliveries due an hour on, each of its own kind: `retried` (a failed attempt's retry) and `put_off` (deferred
/// before its first attempt) to `endpoint`, `elsewhere` (deferred) to `other`.
struct DueLater {
    tenant: Tenant,
    endpoint: Endpoint,
    other: Endpoint,
    retried: String,
    put_off: String,
    elsewhere: String,
}

async fn due_an_hour_on(store: &dyn Store) -> DueLater {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let other = add_endpoint(store, &tenant).await;
    let retried = publish(store, &tenant, "order.created", &[&endpoint], T0).await.deliveries[0].id.clone();
    let put_off = publish(store, &tenant, "order.created", &[&endpoint], T0).await.deliveries[0].id.clone();
    let elsewhere = publish(store, &tenant, "order.created", &[&other], T0).await.deliveries[0].id.clone();
    let jobs = claim(store, "node", T0).await;
    let first = jobs.iter().find(|job| job.delivery.id == retried).expect("claimed").delivery.clone();
    let mut failure = outcome(&first, DeliveryStatus::Failed, T0);
    failure.next_attempt_at = Some(T0 + HOUR);
    assert!(store.record_attempt("node", &failure).await.unwrap());
    store.defer("node", &[(put_off.clone(), T0 + HOUR), (elsewhere.clone(), T0 + HOUR)]).await.unwrap();
    DueLater { tenant, endpoint, other, retried, put_off, elsewhere }
}

async fn a_changed_rate_limit_brings_deliveries_put_off_forward(store: &dyn Store, _url: &str) {
    let DueLater { tenant, endpoint, other: _, retried, put_off, elsewhere } = due_an_hour_on(store).await;
    let tenant = &tenant;
    let due = |id: String| async move { delivery(store, tenant, &id).await.next_attempt_at };

    let described = Endpoint { description: "same limit".into(), updated_at: T0 + 10, ..endpoint.clone() };
    assert!(store.update_endpoint(&described).await.unwrap());
    assert_eq!(due(put_off.clone()).await, Some(T0 + HOUR), "the limit did not change");

    let faster = Endpoint { rate_limit: Some(400), updated_at: T0 + 20, ..described };
    assert!(store.update_endpoint(&faster).await.unwrap());
    assert_eq!(due(put_off.clone()).await, Some(T0 + 20), "put off for the old limit: due now");
    assert_eq!(due(retried).await, Some(T0 + HOUR), "a retry keeps its schedule");
    assert_eq!(due(elsewhere).await, Some(T0 + HOUR), "another endpoint's");
    assert_eq!(claimed_ids(&claim(store, "node", T0 + 20).await), BTreeSet::from([put_off]));
}

/// `bring_forward` does for a slow endpoint that answers quickly again what a changed rate limit does.
async fn deliveries_put_off_are_brought_forward(store: &dyn Store, _url: &str) {
    let DueLater { tenant, endpoint, other, retried, put_off, elsewhere } = due_an_hour_on(store).await;
    let tenant_ref = &tenant;
    let due = |id: String| async move { delivery(store, tenant_ref, &id).await.next_attempt_at };

    assert_eq!(store.bring_forward(&tenant.id, &endpoint.id, T0 + 20).await.unwrap(), 1);
    assert_eq!(due(put_off.clone()).await, Some(T0 + 20));
    assert_eq!(due(retried).await, Some(T0 + HOUR), "a retry keeps its schedule");
    assert_eq!(due(elsewhere).await, Some(T0 + HOUR), "another endpoint's");
    assert_eq!(store.bring_forward(&tenant.id, &endpoint.id, T0 + 20).await.unwrap(), 0, "nothing left to move");
    let stranger = new_tenant(store).await;
    assert_eq!(store.bring_forward(&stranger.id, &other.id, T0 + 20).await.unwrap(), 0, "another tenant's endpoint");
    assert_eq!(claimed_ids(&claim(store, "node", T0 + 20).await), BTreeSet::from([put_off]));
}

async fn retry_delivery_is_refused_while_delivering(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let id = publish(store, &tenant, "order.created", &[&endpoint], T0).await.deliveries[0].id.clone();

    let mut leased = claim(store, "node-a", T0).await.remove(0).delivery;
    assert_eq!(store.retry_delivery(&tenant.id, &id, T0 + 1, Resend::SameRequest).await.unwrap(), None, "in flight");
    for attempt in 1..=3 {
        let status = if attempt == 3 { DeliveryStatus::Dead } else { DeliveryStatus::Failed };
        let mut result = outcome(&leased, status, T0 + attempt);
        result.next_attempt_at = result.next_attempt_at.map(|_| T0 + attempt);
        assert!(store.record_attempt("node-a", &result).await.unwrap());
        if attempt < 3 {
            leased = claim(store, "node-a", T0 + attempt).await.remove(0).delivery;
        }
    }
    let dead = delivery(store, &tenant, &id).await;
    assert_eq!((dead.status, dead.attempts), (DeliveryStatus::Dead, 3));

    assert_eq!(store.retry_delivery(&other.id, &id, T0 + 999, Resend::SameRequest).await.unwrap(), None);
    assert_eq!(store.retry_delivery(&tenant.id, "dlv_missing", T0 + 999, Resend::SameRequest).await.unwrap(), None);
    let retried = store.retry_delivery(&tenant.id, &id, T0 + 999, Resend::SameRequest).await.unwrap().unwrap();
    let expected = Delivery {
        status: DeliveryStatus::Pending,
        next_attempt_at: Some(T0 + 999),
        schedule_offset: 3,
        updated_at: T0 + 999,
        ..dead.clone()
    };
    assert_eq!(retried, expected, "attempts and last_error stay, the schedule restarts");
    assert_eq!(delivery(store, &tenant, &id).await, expected);

    // A succeeded delivery can be sent again too.
    let resent = claim(store, "node-a", T0 + 999).await.remove(0).delivery;
    store.record_attempt("node-a", &outcome(&resent, DeliveryStatus::Succeeded, T0 + 1_000)).await.unwrap();
    let again = store.retry_delivery(&tenant.id, &id, T0 + 2_000, Resend::SameRequest).await.unwrap().unwrap();
    assert_eq!((again.status, again.schedule_offset, again.attempts), (DeliveryStatus::Pending, 4, 4));

    // Once the endpoint is deleted its deliveries are dead letters with nowhere to go: a retry (say one that checked
    // the endpoint just before the delete) leaves them dead rather than pending forever.
    assert!(store.delete_endpoint(&tenant.id, &endpoint.id, T0 + 3_000).await.unwrap());
    assert_eq!(delivery(store, &tenant, &id).await.status, DeliveryStatus::Dead);
    assert_eq!(store.retry_delivery(&tenant.id, &id, T0 + 3_001, Resend::SameRequest).await.unwrap(), None);
    assert_eq!(delivery(store, &tenant, &id).await.status, DeliveryStatus::Dead);
}

async fn requeue_dead_by_ids_and_by_filter(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let first = add_endpoint(store, &tenant).await;
    let second = add_endpoint(store, &tenant).await;
    let first_a = publish(store, &tenant, "a.created", &[&first], T0).await.deliveries[0].id.clone();
    let first_b = publish(store, &tenant, "b.created", &[&first], T0).await.deliveries[0].id.clone();
    let second_a = publish(store, &tenant, "a.created", &[&second], T0).await.deliveries[0].id.clone();
    let second_b = publish(store, &tenant, "b.created", &[&second], T0).await.deliveries[0].id.clone();
    for job in claim(store, "node", T0).await {
        store.record_attempt("node", &outcome(&job.delivery, DeliveryStatus::Dead, T0 + 1)).await.unwrap();
    }
    let alive = publish(store, &tenant, "a.created", &[&first], T0 + 2).await.deliveries[0].id.clone();

    assert_eq!(
        store
            .requeue_dead(&other.id, &RequeueSelector::Ids(vec![first_a.clone()]), T0 + 10, Resend::SameRequest)
            .await
            .unwrap(),
        0
    );
    let by_ids = RequeueSelector::Ids(vec![first_a.clone(), alive.clone(), "dlv_missing".into()]);
    assert_eq!(
        store.requeue_dead(&tenant.id, &by_ids, T0 + 10, Resend::SameRequest).await.unwrap(),
        1,
        "only dead letters move"
    );
    let requeued = delivery(store, &tenant, &first_a).await;
    assert_eq!(
        (requeued.status, requeued.next_attempt_at, requeued.updated_at),
        (DeliveryStatus::Pending, Some(T0 + 10), T0 + 10)
    );
    assert_eq!((requeued.schedule_offset, requeued.attempts, requeued.last_error.as_deref()), (1, 1, Some("HTTP 500")));
    assert_eq!(delivery(store, &tenant, &alive).await.updated_at, T0 + 2, "a live delivery is untouched");

    let by_endpoint =
        RequeueSelector::Matching(DeliveryFilter { endpoint_id: Some(second.id.clone()), ..Default::default() });
    assert_eq!(store.requeue_dead(&other.id, &by_endpoint, T0 + 20, Resend::SameRequest).await.unwrap(), 0);
    assert_eq!(store.requeue_dead(&tenant.id, &by_endpoint, T0 + 20, Resend::SameRequest).await.unwrap(), 2);
    assert_eq!(delivery(store, &tenant, &second_a).await.status, DeliveryStatus::Pending);
    assert_eq!(delivery(store, &tenant, &second_b).await.status, DeliveryStatus::Pending);
    assert_eq!(delivery(store, &tenant, &first_b).await.status, DeliveryStatus::Dead);

    let by_type = RequeueSelector::Matching(DeliveryFilter {
        endpoint_id: Some(first.id.clone()),
        event_type: Some("b.created".into()),
        ..Default::default()
    });
    assert_eq!(store.requeue_dead(&tenant.id, &by_type, T0 + 30, Resend::SameRequest).await.unwrap(), 1);
    assert_eq!(delivery(store, &tenant, &first_b).await.status, DeliveryStatus::Pending);
    let everything = RequeueSelector::Matching(DeliveryFilter::default());
    assert_eq!(
        store.requeue_dead(&tenant.id, &everything, T0 + 40, Resend::SameRequest).await.unwrap(),
        0,
        "nothing dead is left"
    );

    // Dead letters of a deleted endpoint stay dead: requeued, they could never be delivered.
    store.delete_endpoint(&tenant.id, &first.id, T0 + 50).await.unwrap();
    assert_eq!(delivery(store, &tenant, &first_b).await.status, DeliveryStatus::Dead);
    assert_eq!(store.requeue_dead(&tenant.id, &everything, T0 + 60, Resend::SameRequest).await.unwrap(), 0);
    assert_eq!(
        store
            .requeue_dead(&tenant.id, &RequeueSelector::Ids(vec![first_b.clone()]), T0 + 60, Resend::SameRequest)
            .await
            .unwrap(),
        0
    );
}

/// A requeue by filter works through its dead letters a chunk at a time (1,000 per transaction) and misses none,
/// with the list's filters: `since` on the delivery's creation, `event_id`. 2,000 fill two chunks exactly, so the
/// last read finds nothing.
async fn requeue_by_filter_goes_through_every_chunk(store: &dyn Store, _url: &str) {
    const RECENT: usize = 2_000;
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let old: Vec<NewEvent> = (0..3).map(|_| fan_out_timed(event_of(&tenant, "a.old", T0), &[&endpoint])).collect();
    let recent: Vec<NewEvent> =
        (0..RECENT).map(|_| fan_out_timed(event_of(&tenant, "a.new", T0 + 1_000), &[&endpoint])).collect();
    store.publish(&old).await.unwrap();
    store.publish(&recent).await.unwrap();
    let jobs = store.claim_due("node", T0 + 2_000, T0 + 2_000 + MINUTE, 10_000).await.unwrap();
    assert_eq!(jobs.len(), RECENT + 3);
    let dead: Vec<AttemptOutcome> =
        jobs.iter().map(|job| outcome(&job.delivery, DeliveryStatus::Dead, T0 + 2_000)).collect();
    assert!(store.record_attempts("node", &dead).await.unwrap().iter().all(|&held| held));

    let since = RequeueSelector::Matching(DeliveryFilter { since: Some(T0 + 1_000), ..Default::default() });
    assert_eq!(store.requeue_dead(&tenant.id, &since, T0 + 3_000, Resend::SameRequest).await.unwrap(), RECENT as u64);
    for new in &recent {
        assert_eq!(delivery(store, &tenant, &new.deliveries[0].id).await.status, DeliveryStatus::Pending);
    }
    let one =
        RequeueSelector::Matching(DeliveryFilter { event_id: Some(old[1].event.id.clone()), ..Default::default() });
    assert_eq!(store.requeue_dead(&tenant.id, &one, T0 + 3_000, Resend::SameRequest).await.unwrap(), 1);
    assert_eq!(delivery(store, &tenant, &old[0].deliveries[0].id).await.status, DeliveryStatus::Dead);
    assert_eq!(delivery(store, &tenant, &old[1].deliveries[0].id).await.status, DeliveryStatus::Pending);
    let everything = RequeueSelector::Matching(DeliveryFilter::default());
    assert_eq!(store.requeue_dead(&tenant.id, &everything, T0 + 3_000, Resend::SameRequest).await.unwrap(), 2);
}

/// Replaying what an endpoint missed: the events in a window with no delivery to it, oldest first and a page at
/// a time, then one delivery each, never a second one, nor one across tenants or to an unknown endpoint.
async fn missed_events_are_found_and_sent_in_a_batch(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let subscribed = add_endpoint(store, &tenant).await;
    let missing = add_endpoint(store, &tenant).await;
    let published = |tenant: &Tenant, event_type, endpoints: &[&Endpoint], at| {
        let new = fan_out(event_received_at(tenant, event_type, at), endpoints);
        async move {
            store.publish(std::slice::from_ref(&new)).await.unwrap();
            new
        }
    };
    let before = published(&tenant, "a.created", &[&subscribed], T0).await;
    let missed: Vec<NewEvent> = [("a.created", 10), ("a.updated", 20), ("a.created", 30)]
        .iter()
        .map(|&(event_type, at)| fan_out(event_received_at(&tenant, event_type, T0 + at), &[&subscribed]))
        .collect();
    store.publish(&missed).await.unwrap();
    let both = published(&tenant, "a.created", &[&subscribed, &missing], T0 + 40).await;
    let theirs = published(&other, "a.created", &[], T0 + 50).await;
    let ids = |events: Vec<Event>| events.into_iter().map(|event| event.id).collect::<Vec<_>>();
    let missed_ids: Vec<String> = missed.iter().map(|new| new.event.id.clone()).collect();

    let window = EventFilter { since: Some(T0 + 10), until: Some(T0 + 100), ..Default::default() };
    let found = store.events_missed_by(&tenant.id, &missing.id, &window, &page(10)).await.unwrap();
    let shown = |event: &Event| {
        (
            event.id.clone(),
            event.tenant_id.clone(),
            event.event_type.clone(),
            event.data.get().to_string(),
            event.received_at,
        )
    };
    assert_eq!(shown(&found[0]), shown(&missed[0].event), "whole events");
    assert_eq!(ids(found), missed_ids, "oldest first, not `before` (earlier), `both` or another tenant's");
    let first_two = store.events_missed_by(&tenant.id, &missing.id, &window, &page(2)).await.unwrap();
    let rest_page = Page { cursor: Some(missed_ids[1].clone()), limit: 2 };
    let rest = store.events_missed_by(&tenant.id, &missing.id, &window, &rest_page).await.unwrap();
    assert_eq!([ids(first_two), ids(rest)], [missed_ids[..2].to_vec(), missed_ids[2..].to_vec()]);
    let updates = EventFilter { event_type: Some("a.updated".into()), ..window.clone() };
    let found = store.events_missed_by(&tenant.id, &missing.id, &updates, &page(10)).await.unwrap();
    assert_eq!(ids(found), [missed_ids[1].clone()]);
    let found = store.events_missed_by(&tenant.id, &subscribed.id, &window, &page(10)).await.unwrap();
    assert!(found.is_empty(), "the subscribed endpoint missed nothing");

    let chosen = vec![missed_ids[0].clone(), missed_ids[2].clone(), both.event.id.clone(), theirs.event.id.clone()];
    assert_eq!(store.send_events_to(&tenant.id, &missing.id, &chosen, T0 + 500).await.unwrap(), Some(2));
    assert_eq!(store.send_events_to(&tenant.id, &missing.id, &chosen, T0 + 600).await.unwrap(), Some(0), "once");
    assert_eq!(store.send_events_to(&tenant.id, "ep_missing", &chosen, T0 + 600).await.unwrap(), None);
    assert_eq!(
        store.send_events_to(&other.id, &missing.id, std::slice::from_ref(&theirs.event.id), T0).await.unwrap(),
        None
    );
    let found = store.events_missed_by(&tenant.id, &missing.id, &window, &page(10)).await.unwrap();
    assert_eq!(ids(found), [missed_ids[1].clone()]);

    let jobs = claim(store, "node", T0 + 500).await;
    let sent: Vec<_> = jobs.iter().filter(|job| job.endpoint.id == missing.id).collect();
    let mut sent_events: Vec<&str> = sent.iter().map(|job| job.event.id.as_str()).collect();
    sent_events.sort();
    let mut expected = vec![missed_ids[0].as_str(), missed_ids[2].as_str(), both.event.id.as_str()];
    expected.sort();
    assert_eq!(sent_events, expected, "pending and due at `at`, with the fan-out's own delivery of `both`");
    for job in sent.iter().filter(|job| job.event.id != both.event.id) {
        let delivery = &job.delivery;
        assert_eq!(
            (delivery.attempts, delivery.created_at, delivery.tenant_id.as_str()),
            (0, T0 + 500, tenant.id.as_str())
        );
        assert_eq!(delivery.event_type, "a.created");
    }
    assert_eq!(before.deliveries.len(), 1);
}

/// An operator sends a stored event to an endpoint it did not fan out to: one new delivery, pending and claimable,
/// whatever the endpoint's subscriptions; never a second one, nor one across tenants or to a deleted endpoint.
async fn an_event_is_sent_to_one_endpoint_once(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let subscribed = add_endpoint(store, &tenant).await;
    let missed = add_endpoint(store, &tenant).await;
    let theirs = add_endpoint(store, &other).await;
    let event = publish(store, &tenant, "a.created", &[&subscribed], T0).await;
    let event_id = event.event.id.as_str();
    let send = |endpoint_id: &str, tenant_id: &str| {
        let (tenant_id, endpoint_id) = (tenant_id.to_string(), endpoint_id.to_string());
        async move { store.send_event_to(&tenant_id, event_id, &endpoint_id, &new_id("dlv"), T0 + 500).await.unwrap() }
    };

    let SentTo::Created(created) = send(&missed.id, &tenant.id).await else { panic!("a new delivery") };
    assert_eq!(
        (created.event_id.as_str(), created.endpoint_id.as_str(), created.event_type.as_str()),
        (event_id, missed.id.as_str(), "a.created")
    );
    assert_eq!(
        (created.status, created.attempts, created.next_attempt_at),
        (DeliveryStatus::Pending, 0, Some(T0 + 500))
    );
    assert_eq!(delivery(store, &tenant, &created.id).await, *created);
    assert_eq!(send(&missed.id, &tenant.id).await, SentTo::Exists(created.id.clone()), "one per event and endpoint");
    assert_eq!(send(&subscribed.id, &tenant.id).await, SentTo::Exists(event.deliveries[0].id.clone()));
    assert_eq!(send(&theirs.id, &tenant.id).await, SentTo::NoEndpoint, "another tenant's endpoint");
    assert_eq!(send(&theirs.id, &other.id).await, SentTo::NoEvent, "another tenant's event");
    assert_eq!(send("ep_missing", &tenant.id).await, SentTo::NoEndpoint);
    let claimed = claimed_ids(&claim(store, "node", T0 + 500).await);
    assert_eq!(claimed, BTreeSet::from([event.deliveries[0].id.clone(), created.id.clone()]));

    // Sent at once by several operators (PostgreSQL: on several connections), the event still gets one delivery.
    let later = add_endpoint(store, &tenant).await;
    let sends = futures_util::future::join_all((0..8).map(|_| send(&later.id, &tenant.id))).await;
    assert_eq!(sends.iter().filter(|sent| matches!(sent, SentTo::Created(_))).count(), 1, "{sends:?}");

    store.delete_endpoint(&tenant.id, &missed.id, T0 + 600).await.unwrap();
    assert_eq!(send(&missed.id, &tenant.id).await, SentTo::NoEndpoint, "a deleted endpoint");
}

async fn next_due_at_follows_waiting_deliveries_and_leases(store: &dyn Store, _url: &str) {
    assert_eq!(store.next_due_at().await.unwrap(), None);
    let tenant = new_tenant(store).await;
    let active = add_endpoint(store, &tenant).await;
    let paused = add_endpoint_with_status(store, &tenant, EndpointStatus::Paused).await;
    publish(store, &tenant, "order.created", &[&paused], T0 + 1_000).await;
    assert_eq!(store.next_due_at().await.unwrap(), None, "a paused endpoint's deliveries do not wake the dispatcher");

    publish(store, &tenant, "order.created", &[&active], T0 + 5_000).await;
    publish(store, &tenant, "order.created", &[&active], T0 + 9_000).await;
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + 5_000));

    let leased = store.claim_due("node", T0 + 5_000, T0 + 8_000, 1).await.unwrap().remove(0).delivery;
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + 8_000), "a lease is due when it expires");

    let mut failure = outcome(&leased, DeliveryStatus::Failed, T0 + 5_000);
    failure.next_attempt_at = Some(T0 + 20_000);
    store.record_attempt("node", &failure).await.unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + 9_000));
    let last = claim(store, "node", T0 + 9_000).await.remove(0).delivery;
    store.record_attempt("node", &outcome(&last, DeliveryStatus::Succeeded, T0 + 9_000)).await.unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + 20_000), "a failed delivery waits for its retry");
}

async fn audit_log_appends_and_pages(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let tenant_id = tenant.id.as_str();
    let other = new_tenant(store).await;
    let entry = |tenant_id: Option<&str>, action: &str| AuditEntry {
        id: new_id("aud"),
        tenant_id: tenant_id.map(str::to_string),
        actor: "key_123".into(),
        action: action.into(),
        resource_type: "endpoint".into(),
        resource_id: "ep_1".into(),
        details: json!({"changed": ["url", "retry"], "nested": {"n": 1.5, "none": null}}),
        at: T0,
    };
    let mut ours = Vec::new();
    for action in ["endpoint.create", "endpoint.update", "endpoint.delete"] {
        let e = entry(Some(&tenant.id), action);
        store.append_audit(&e).await.unwrap();
        ours.push(e);
    }
    store.append_audit(&entry(Some(&other.id), "endpoint.create")).await.unwrap();
    let server = AuditEntry { resource_id: new_id("plugin"), ..entry(None, "plugin.uploaded") };
    store.append_audit(&server).await.unwrap();
    let duplicate = store.append_audit(&ours[0]).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");

    let all = AuditFilter::default();
    ours.reverse();
    assert_eq!(store.list_audit(Some(tenant_id), &all, &page(10)).await.unwrap(), ours, "newest first, details intact");
    let pages = all_pages(
        2,
        |e: &AuditEntry| e.id.clone(),
        |page| async move { store.list_audit(Some(tenant_id), &AuditFilter::default(), &page).await.unwrap() },
    )
    .await;
    assert_eq!(pages, vec![ours[..2].to_vec(), ours[2..].to_vec()]);
    assert_eq!(store.list_audit(Some(&other.id), &all, &page(10)).await.unwrap().len(), 1);

    let server_resource = AuditFilter { resource_id: Some(server.resource_id.clone()), ..Default::default() };
    assert_eq!(store.list_audit(None, &server_resource, &page(10)).await.unwrap(), vec![server], "the server's own");
    assert!(store.list_audit(Some(tenant_id), &server_resource, &page(10)).await.unwrap().is_empty());
    let updates = AuditFilter { action: Some("endpoint.update".into()), ..Default::default() };
    assert_eq!(store.list_audit(Some(tenant_id), &updates, &page(10)).await.unwrap(), vec![ours[1].clone()]);
    let elsewhere = AuditFilter { action: Some("endpoint.update".into()), resource_id: Some("ep_2".into()) };
    assert!(store.list_audit(Some(tenant_id), &elsewhere, &page(10)).await.unwrap().is_empty());
}

/// What the announcer of disabled endpoints reads: one action's entries of every tenant, oldest first, after a
/// cursor; the server's own entries (no tenant) are not among them.
async fn every_tenants_entries_of_an_action_are_read_after_a_cursor(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    // An action of this test alone, whatever else the database holds.
    let action = format!("test.{}", new_id("act"));
    let entry = |tenant_id: Option<&str>, action: &str, at: Millis| AuditEntry {
        id: new_id_at("aud", at),
        tenant_id: tenant_id.map(str::to_string),
        actor: "switchyard".into(),
        action: action.into(),
        resource_type: "endpoint".into(),
        resource_id: new_id("ep"),
        details: json!({ "reason": "410 Gone", "status_code": 410 }),
        at,
    };
    let expected = [
        entry(Some(&tenant.id), &action, T0),
        entry(Some(&other.id), &action, T0 + 1),
        entry(Some(&tenant.id), &action, T0 + 2),
    ];
    // Appended out of order: the order read is the ids'.
    for e in [&expected[2], &expected[0], &expected[1]] {
        store.append_audit(e).await.unwrap();
    }
    store.append_audit(&entry(None, &action, T0 + 3)).await.unwrap();
    store.append_audit(&entry(Some(&tenant.id), "endpoint.update", T0 + 4)).await.unwrap();

    let from = |cursor: String, limit| Page { cursor: Some(cursor), limit };
    let all = store.tenant_audit_after(&action, &from(first_id_at("aud", T0 - 1), 10)).await.unwrap();
    assert_eq!(all, expected, "every tenant's, oldest first; not the server's own, nor another action");
    let after_first = store.tenant_audit_after(&action, &from(expected[0].id.clone(), 10)).await.unwrap();
    assert_eq!(after_first, expected[1..]);
    let limited = store.tenant_audit_after(&action, &from(first_id_at("aud", T0 - 1), 2)).await.unwrap();
    assert_eq!(limited, expected[..2]);
    assert_eq!(store.tenant_audit_after(&action, &from(expected[2].id.clone(), 10)).await.unwrap(), []);
}

/// What the announcer of dead letters reads: every tenant's attempts that dead-lettered their delivery (`dead`, or
/// `gone`: a 410), oldest first, after a cursor, with the delivery's event and endpoint; not those retried or
/// delivered.
async fn every_tenants_dead_lettering_attempts_are_read_after_a_cursor(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let ours = add_endpoint(store, &tenant).await;
    let theirs = add_endpoint(store, &other).await;
    let cases = [
        (&tenant, &ours, "order.created", DeliveryStatus::Dead, "dead"),
        (&other, &theirs, "user.deleted", DeliveryStatus::Dead, "gone"),
        (&tenant, &ours, "order.paid", DeliveryStatus::Failed, "retry"),
        (&tenant, &ours, "order.shipped", DeliveryStatus::Succeeded, "succeeded"),
        (&tenant, &ours, "order.refunded", DeliveryStatus::Dead, "dead"),
    ];
    let mut published = Vec::new();
    for (owner, endpoint, event_type, ..) in &cases {
        published.push(publish(store, owner, event_type, &[endpoint], T0).await);
    }
    let jobs = claim(store, "node", T0).await;
    assert_eq!(jobs.len(), cases.len());
    let mut expected = Vec::new();
    // Recorded newest first: the order read is the ids'.
    for (i, ((_, endpoint, event_type, status, attempt_outcome), new)) in cases.iter().zip(&published).enumerate().rev()
    {
        let job = jobs.iter().find(|job| job.delivery.event_id == new.event.id).unwrap();
        let mut recorded = outcome(&job.delivery, *status, T0 + i as Millis);
        recorded.attempt.id = new_id_at("att", T0 + i as Millis);
        recorded.attempt.outcome = attempt_outcome.to_string();
        assert!(store.record_attempt("node", &recorded).await.unwrap());
        if *status == DeliveryStatus::Dead {
            expected.push(DeadAttempt {
                attempt: recorded.attempt,
                event_id: new.event.id.clone(),
                event_type: event_type.to_string(),
                endpoint_id: endpoint.id.clone(),
            });
        }
    }
    expected.reverse();

    let from = |cursor: String, limit| Page { cursor: Some(cursor), limit };
    let all = store.dead_attempts_after(&from(first_id_at("att", T0 - 1), 10)).await.unwrap();
    assert_eq!(all, expected, "every tenant's, oldest first; not those retried or delivered");
    let after_first = store.dead_attempts_after(&from(expected[0].attempt.id.clone(), 10)).await.unwrap();
    assert_eq!(after_first, expected[1..]);
    let limited = store.dead_attempts_after(&from(first_id_at("att", T0 - 1), 2)).await.unwrap();
    assert_eq!(limited, expected[..2]);
    assert_eq!(store.dead_attempts_after(&from(expected[2].attempt.id.clone(), 10)).await.unwrap(), []);
}

async fn database_refuses_to_change_history(store: &dyn Store, url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let new = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let leased = claim(store, "node", T0).await.remove(0).delivery;
    store.record_attempt("node", &outcome(&leased, DeliveryStatus::Succeeded, T0)).await.unwrap();
    let audit = AuditEntry {
        id: new_id("aud"),
        tenant_id: Some(tenant.id.clone()),
        actor: "admin".into(),
        action: "tenant.create".into(),
        resource_type: "tenant".into(),
        resource_id: tenant.id.clone(),
        details: json!({}),
        at: T0,
    };
    store.append_audit(&audit).await.unwrap();

    let raw = raw_pool(url).await;
    for statement in [
        "UPDATE events SET event_type = 'forged'",
        "UPDATE attempts SET status_code = 299",
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ] {
        let refused = sqlx::query(statement).execute(&raw).await;
        assert!(refused.is_err(), "`{statement}` must be refused");
    }
    raw.close().await;

    assert_eq!(store.get_event(&tenant.id, &new.event.id).await.unwrap(), Some(new.event.clone()));
    assert_eq!(store.list_attempts(&tenant.id, &leased.id).await.unwrap()[0].status_code, Some(200));
    assert_eq!(store.list_audit(Some(&tenant.id), &AuditFilter::default(), &page(10)).await.unwrap(), vec![audit]);
}

async fn other_tenants_see_nothing(store: &dyn Store, _url: &str) {
    let owner = new_tenant(store).await;
    let intruder = new_tenant(store).await;
    let endpoint = add_endpoint(store, &owner).await;
    store.register_event_type(&owner.id, &event_type("order.created", "", None, T0)).await.unwrap();
    let new = publish(store, &owner, "order.created", &[&endpoint], T0).await;
    let leased = claim(store, "node", T0).await.remove(0).delivery;
    store.record_attempt("node", &outcome(&leased, DeliveryStatus::Dead, T0)).await.unwrap();
    let key = ApiKey {
        id: new_id("key"),
        tenant_id: owner.id.clone(),
        name: "k".into(),
        prefix: "sy_".into(),
        key_hash: new_id("hash"),
        scope: KeyScope::All,
        allowed_networks: Vec::new(),
        created_at: T0,
        revoked_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    let audit = AuditEntry {
        id: new_id("aud"),
        tenant_id: Some(owner.id.clone()),
        actor: "admin".into(),
        action: "endpoint.create".into(),
        resource_type: "endpoint".into(),
        resource_id: endpoint.id.clone(),
        details: json!({"url": endpoint.url}),
        at: T0,
    };
    store.append_audit(&audit).await.unwrap();
    let endpoint_before = store.get_endpoint(&owner.id, &endpoint.id).await.unwrap().unwrap();
    let delivery_before = delivery(store, &owner, &leased.id).await;

    let them = intruder.id.as_str();
    let all = Page { cursor: None, limit: 100 };
    assert_eq!(store.get_endpoint(them, &endpoint.id).await.unwrap(), None);
    assert!(store.list_endpoints(them, &EndpointFilter::default(), &all).await.unwrap().is_empty());
    let moved = Endpoint { tenant_id: intruder.id.clone(), description: "mine now".into(), ..endpoint.clone() };
    assert!(!store.update_endpoint(&moved).await.unwrap());
    assert!(store.set_endpoint_status(them, &endpoint.id, EndpointStatus::Paused, None, T0).await.unwrap().is_none());
    assert!(!store.replace_subscriptions(them, &endpoint.id, &[], T0).await.unwrap());
    assert!(!store.delete_endpoint(them, &endpoint.id, T0).await.unwrap());
    assert!(store.active_endpoints(them).await.unwrap().is_empty());
    assert!(store.list_secrets(them, &endpoint.id).await.unwrap().is_empty());
    assert_eq!(store.rotate_secret(them, &endpoint.id, &new_secret("x"), T0 + 1, T0).await.unwrap(), None);
    assert!(store.list_event_types(them, &all).await.unwrap().is_empty());
    assert_eq!(store.get_event(them, &new.event.id).await.unwrap(), None);
    assert!(store.list_events(them, &EventFilter::default(), &all).await.unwrap().is_empty());
    assert_eq!(store.get_delivery(them, &leased.id).await.unwrap(), None);
    let for_endpoint = DeliveryFilter { endpoint_id: Some(endpoint.id.clone()), ..Default::default() };
    assert!(store.list_deliveries(them, &for_endpoint, &all).await.unwrap().is_empty());
    assert!(store.list_attempts(them, &leased.id).await.unwrap().is_empty());
    assert_eq!(store.retry_delivery(them, &leased.id, T0, Resend::SameRequest).await.unwrap(), None);
    assert_eq!(
        store
            .requeue_dead(them, &RequeueSelector::Ids(vec![leased.id.clone()]), T0, Resend::SameRequest)
            .await
            .unwrap(),
        0
    );
    let matching =
        RequeueSelector::Matching(DeliveryFilter { endpoint_id: Some(endpoint.id.clone()), ..Default::default() });
    assert_eq!(store.requeue_dead(them, &matching, T0, Resend::SameRequest).await.unwrap(), 0);
    assert!(store.list_api_keys(them, &all).await.unwrap().is_empty());
    assert!(!store.revoke_api_key(them, &key.id, T0).await.unwrap());
    assert_eq!(store.get_api_key(them, &key.id).await.unwrap(), None);
    let theirs = ApiKey { tenant_id: them.to_string(), ..key.clone() };
    assert!(!store.update_api_key(&theirs, &theirs).await.unwrap());
    assert!(store.list_audit(Some(them), &AuditFilter::default(), &all).await.unwrap().is_empty());

    assert_eq!(store.get_endpoint(&owner.id, &endpoint.id).await.unwrap(), Some(endpoint_before));
    assert_eq!(store.list_secrets(&owner.id, &endpoint.id).await.unwrap().len(), 1);
    assert_eq!(delivery(store, &owner, &leased.id).await, delivery_before);
    assert_eq!(store.find_api_key(&key.key_hash).await.unwrap(), Some(key));
}

fn prepared(body: Option<&[u8]>) -> PreparedRequest {
    PreparedRequest {
        plugin_versions: BTreeMap::from([(
            "transform".to_string(),
            PluginUse { plugin: "redact".into(), sha256: "ab".repeat(32) },
        )]),
        body: body.map(<[u8]>::to_vec),
        content_type: body.map(|_| "application/x-thing".to_string()),
        // Content type and headers come from a transform, so they exist only with its body.
        headers: match body {
            Some(_) => vec![("x-one".into(), "1".into()), ("x-two".into(), "2".into())],
            None => Vec::new(),
        },
    }
}

async fn prepared_requests_are_stored_once_and_claimed_with_the_delivery(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let new = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let id = &new.deliveries[0].id;
    assert_eq!(delivery(store, &tenant, id).await.prepared, None, "nothing is prepared before the first attempt");

    let claimed = claim(store, "node-a", T0 + 5).await.remove(0).delivery;
    // Bytes that are not UTF-8 survive the round trip.
    let body: &[u8] = &[0, 159, 146, 150, b'{'];
    let mut first = outcome(&claimed, DeliveryStatus::Failed, T0 + 5);
    first.prepared = Some(prepared(Some(body)));
    assert!(store.record_attempt("node-a", &first).await.unwrap());
    assert_eq!(delivery(store, &tenant, id).await.prepared, Some(prepared(Some(body))));
    let by_event = DeliveryFilter { event_id: Some(new.event.id.clone()), ..Default::default() };
    let listed = store.list_deliveries(&tenant.id, &by_event, &page(10)).await.unwrap().remove(0).prepared.unwrap();
    assert_eq!(
        (listed.plugin_versions, listed.body, listed.content_type, listed.headers),
        (prepared(None).plugin_versions, None, None, vec![]),
        "a listing reads the versions, not the request"
    );

    let again = claim(store, "node-a", T0 + 5 + MINUTE).await.remove(0);
    assert_eq!(again.delivery.prepared, Some(prepared(Some(body))), "a retry is claimed with what was prepared");
    // An attempt that prepares nothing leaves the stored request alone.
    assert!(store
        .record_attempt("node-a", &outcome(&again.delivery, DeliveryStatus::Succeeded, T0 + MINUTE * 2))
        .await
        .unwrap());
    assert_eq!(delivery(store, &tenant, id).await.prepared, Some(prepared(Some(body))));

    // Sent again by hand, it keeps what was prepared, unless told to run the plugins again.
    let kept = store.retry_delivery(&tenant.id, id, T0 + MINUTE * 2, Resend::SameRequest).await.unwrap().unwrap();
    assert_eq!(kept.prepared, Some(prepared(Some(body))));
    let rerun = store.retry_delivery(&tenant.id, id, T0 + MINUTE * 2, Resend::RerunPlugins).await.unwrap().unwrap();
    assert_eq!(rerun.prepared, None, "the next attempt prepares the request again");
    let reclaimed = store.claim_due("node-a", T0 + MINUTE * 2, T0 + MINUTE * 100, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].delivery.prepared, None);

    // Without a transform only the versions are kept.
    let plain = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let claimed = claim(store, "node-a", T0 + MINUTE * 3).await.remove(0).delivery;
    let mut attempt = outcome(&claimed, DeliveryStatus::Succeeded, T0 + MINUTE * 3);
    attempt.prepared = Some(prepared(None));
    assert!(store.record_attempt("node-a", &attempt).await.unwrap());
    assert_eq!(delivery(store, &tenant, &plain.deliveries[0].id).await.prepared, Some(prepared(None)));
}

async fn filter_drops_are_recorded_and_retry_clears_them(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let new = publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let id = &new.deliveries[0].id;
    let claimed = claim(store, "node-a", T0 + 5).await.remove(0).delivery;
    let dropped = Dropped {
        tenant_id: tenant.id.clone(),
        delivery_id: id.clone(),
        prepared: prepared(None),
        reason: "dropped by filter `x`".into(),
        at: T0 + 6,
    };
    assert!(!store.record_drop("node-b", &dropped).await.unwrap(), "only the lease holder records");
    assert!(store.record_drop("node-a", &dropped).await.unwrap());
    let stored = delivery(store, &tenant, id).await;
    assert_eq!(
        stored,
        Delivery {
            status: DeliveryStatus::Dropped,
            next_attempt_at: None,
            lease_owner: None,
            lease_expires_at: None,
            last_error: Some("dropped by filter `x`".into()),
            prepared: Some(prepared(None)),
            updated_at: T0 + 6,
            ..claimed
        }
    );
    assert!(store.list_attempts(&tenant.id, id).await.unwrap().is_empty(), "a drop is not an attempt");
    assert!(claim(store, "node-a", T0 + 100 * MINUTE).await.is_empty(), "dropped deliveries are final");
    let listed = store
        .list_deliveries(
            &tenant.id,
            &DeliveryFilter { status: Some(DeliveryStatus::Dropped), ..Default::default() },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    // A manual retry runs the filter again: the decision is not kept.
    let retried = store.retry_delivery(&tenant.id, id, T0 + MINUTE, Resend::SameRequest).await.unwrap().unwrap();
    assert_eq!((retried.status, retried.prepared), (DeliveryStatus::Pending, None));
}

async fn endpoints_binding_a_plugin_are_found_in_every_tenant(store: &dyn Store, _url: &str) {
    let binding = |plugin: &str| PluginBinding { plugin: plugin.into(), version: None, config: json!({}) };
    let mut found = BTreeSet::new();
    for (n, plugins) in [
        EndpointPlugins { filter: Some(binding("amount")), ..Default::default() },
        EndpointPlugins {
            transform: Some(binding("slack")),
            retry_policy: Some(binding("amount")),
            ..Default::default()
        },
        // Names that merely contain the plugin's, or mention it in a config, do not count.
        EndpointPlugins {
            filter: Some(PluginBinding {
                plugin: "amount2".into(),
                version: None,
                config: json!({ "plugin": "amount" }),
            }),
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let tenant = new_tenant(store).await;
        let mut endpoint = endpoint_of(&tenant);
        endpoint.plugins = plugins.clone();
        store.create_endpoint(&endpoint, &new_secret("h")).await.unwrap();
        assert_eq!(store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap().plugins, plugins);
        if n < 2 {
            found.insert((tenant.id.clone(), endpoint.id.clone()));
        }
    }
    let bound: BTreeSet<_> = store.endpoints_binding_plugin("amount").await.unwrap().into_iter().collect();
    assert_eq!(bound, found);
    assert_eq!(store.endpoints_binding_plugin("slack").await.unwrap().len(), 1);
    assert!(store.endpoints_binding_plugin("none").await.unwrap().is_empty());
}

async fn record_attempts_writes_a_batch_and_skips_lost_leases(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    for _ in 0..3 {
        publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    }
    let mut mine = claim(store, "node-a", T0 + 5).await;
    assert_eq!(mine.len(), 3);
    // The third lease expires and another node takes it over.
    let taken = claim(store, "node-b", T0 + 5 + 10 * MINUTE).await;
    assert_eq!(taken.len(), 3, "every lease of node-a expired");
    let ids: Vec<String> = mine.iter().map(|job| job.delivery.id.clone()).collect();
    store.release("node-b", &ids[..2]).await.unwrap();
    mine = claim(store, "node-a", T0 + 10 + 10 * MINUTE).await;
    assert_eq!(claimed_ids(&mine), ids[..2].iter().cloned().collect());

    let mut outcomes: Vec<AttemptOutcome> =
        mine.iter().map(|job| outcome(&job.delivery, DeliveryStatus::Succeeded, T0 + 20 + 10 * MINUTE)).collect();
    let third = taken.iter().find(|job| job.delivery.id == ids[2]).unwrap();
    outcomes.insert(1, outcome(&third.delivery, DeliveryStatus::Succeeded, T0 + 20 + 10 * MINUTE));
    assert_eq!(store.record_attempts("node-a", &outcomes).await.unwrap(), vec![true, false, true]);
    for (i, id) in [&outcomes[0], &outcomes[1], &outcomes[2]].iter().map(|o| &o.attempt.delivery_id).enumerate() {
        let stored = delivery(store, &tenant, id).await;
        let attempts = store.list_attempts(&tenant.id, id).await.unwrap();
        if i == 1 {
            assert_eq!((stored.status, attempts.len()), (DeliveryStatus::Delivering, 0), "node-b still owns it");
        } else {
            assert_eq!((stored.status, attempts.len()), (DeliveryStatus::Succeeded, 1));
        }
    }
    assert!(store.record_attempts("node-a", &[]).await.unwrap().is_empty());
}

/// Outcomes that store a prepared request and outcomes that do not, in one batch: each delivery gets its own, and
/// a retry that prepares nothing keeps what its first attempt prepared.
async fn one_batch_records_prepared_and_plain_outcomes(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let retried = publish(store, &tenant, "order.created", &[&endpoint], T0).await.deliveries[0].id.clone();
    let claimed = claim(store, "node-a", T0 + 5).await.remove(0).delivery;
    let body: &[u8] = b"{\"transformed\":true}";
    let mut first = outcome(&claimed, DeliveryStatus::Failed, T0 + 5);
    first.prepared = Some(prepared(Some(body)));
    assert!(store.record_attempt("node-a", &first).await.unwrap());

    let fresh = publish(store, &tenant, "order.created", &[&endpoint], T0 + MINUTE).await.deliveries[0].id.clone();
    let plain = publish(store, &tenant, "order.created", &[&endpoint], T0 + MINUTE).await.deliveries[0].id.clone();
    let jobs = claim(store, "node-a", T0 + 2 * MINUTE).await;
    assert_eq!(claimed_ids(&jobs), BTreeSet::from([retried.clone(), fresh.clone(), plain.clone()]));
    let job = |id: &str| &jobs.iter().find(|job| job.delivery.id == id).unwrap().delivery;
    let mut transformed = outcome(job(&fresh), DeliveryStatus::Succeeded, T0 + 2 * MINUTE);
    transformed.prepared = Some(prepared(None));
    let outcomes = [
        outcome(job(&retried), DeliveryStatus::Succeeded, T0 + 2 * MINUTE),
        transformed,
        outcome(job(&plain), DeliveryStatus::Failed, T0 + 2 * MINUTE),
    ];
    assert_eq!(store.record_attempts("node-a", &outcomes).await.unwrap(), vec![true, true, true]);

    let stored = delivery(store, &tenant, &retried).await;
    assert_eq!((stored.status, stored.attempts), (DeliveryStatus::Succeeded, 2));
    assert_eq!(stored.prepared, Some(prepared(Some(body))), "the first attempt's request stands");
    let stored = delivery(store, &tenant, &fresh).await;
    assert_eq!((stored.status, stored.prepared), (DeliveryStatus::Succeeded, Some(prepared(None))));
    let stored = delivery(store, &tenant, &plain).await;
    assert_eq!((stored.status, stored.prepared), (DeliveryStatus::Failed, None));
    for recorded in &outcomes {
        let attempts = store.list_attempts(&tenant.id, &recorded.attempt.delivery_id).await.unwrap();
        assert_eq!(attempts.last(), Some(&recorded.attempt));
    }
}

async fn claims_carry_the_secrets_that_sign(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    let quiet = add_endpoint(store, &tenant).await;
    // Rotated with a grace period: both secrets sign until it ends.
    store.rotate_secret(&tenant.id, &endpoint.id, &new_secret("second"), T0 + MINUTE, T0).await.unwrap().unwrap();
    publish(store, &tenant, "order.created", &[&endpoint, &quiet], T0).await;
    let jobs = claim(store, "node-a", T0 + 5).await;
    for job in &jobs {
        let expected = store.signing_secrets(&job.endpoint.id, T0 + 5).await.unwrap();
        let mut got = job.signing_secrets.sealed().to_vec();
        got.sort_by_key(|s| std::cmp::Reverse(s.version));
        assert_eq!(got, expected, "endpoint {}", job.endpoint.id);
    }
    let rotated = jobs.iter().find(|job| job.endpoint.id == endpoint.id).unwrap();
    assert_eq!(rotated.signing_secrets.sealed().len(), 2);
}

async fn published_deliveries_can_be_stored_leased_to_the_publisher(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let (mine, waiting, gone) =
        (add_endpoint(store, &tenant).await, add_endpoint(store, &tenant).await, add_endpoint(store, &tenant).await);
    let lease = Lease { owner: "node-a".into(), until: T0 + MINUTE };
    let mut new = fan_out(event_of(&tenant, "order.created", T0), &[&mine, &waiting, &gone]);
    new.deliveries[0].lease = Some(lease.clone());
    new.deliveries[2].lease = Some(lease.clone());
    // Deleted after matching: its delivery is not stored, so it is not leased to anyone either.
    assert!(store.delete_endpoint(&tenant.id, &gone.id, T0).await.unwrap());
    let published = store.publish(std::slice::from_ref(&new)).await.unwrap();
    let leased_id = new.deliveries[0].id.clone();
    assert_eq!(
        published,
        [Published { event_id: new.event.id.clone(), deliveries: 2, replayed: false, leased: vec![leased_id.clone()] }]
    );

    let leased = delivery(store, &tenant, &leased_id).await;
    assert_eq!(
        (leased.status, leased.lease_owner.as_deref(), leased.lease_expires_at, leased.attempts),
        (DeliveryStatus::Delivering, Some("node-a"), Some(T0 + MINUTE), 0)
    );
    assert_eq!(delivery(store, &tenant, &new.deliveries[1].id).await.status, DeliveryStatus::Pending);
    // Nobody claims a leased delivery before its lease expires; the waiting one is claimable at once.
    assert_eq!(claimed_ids(&claim(store, "node-b", T0 + 1).await), BTreeSet::from([new.deliveries[1].id.clone()]));
    assert_eq!(store.next_due_at().await.unwrap(), Some(T0 + MINUTE), "the lease counts at its expiry");
    // The publisher records its attempt like any lease holder.
    let attempt = outcome(&leased, DeliveryStatus::Succeeded, T0 + 5);
    assert!(store.record_attempt("node-a", &attempt).await.unwrap());
    assert_eq!(delivery(store, &tenant, &leased_id).await.status, DeliveryStatus::Succeeded);

    // Had the publisher died instead, the lease would expire and another node would take the delivery over.
    let mut orphan = fan_out(event_of(&tenant, "order.created", T0), &[&mine]);
    orphan.deliveries[0].lease = Some(lease);
    store.publish(std::slice::from_ref(&orphan)).await.unwrap();
    assert!(claim(store, "node-b", T0 + MINUTE - 1).await.is_empty());
    let taken = claim(store, "node-b", T0 + MINUTE).await;
    assert_eq!(claimed_ids(&taken), BTreeSet::from([orphan.deliveries[0].id.clone()]));
    assert_eq!(taken[0].delivery.lease_owner.as_deref(), Some("node-b"));
}

async fn write_batch_stores_each_part_or_reports_it_failed(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let endpoint = add_endpoint(store, &tenant).await;
    publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let jobs = claim(store, "node-a", T0 + 5).await;
    let attempt = outcome(&jobs[0].delivery, DeliveryStatus::Succeeded, T0 + 10);
    let fresh = fan_out(event_of(&tenant, "order.paid", T0 + 10), &[&endpoint]);

    let (published, recorded) =
        store.write_batch(std::slice::from_ref(&fresh), "node-a", std::slice::from_ref(&attempt)).await;
    assert_eq!(published.unwrap()[0].deliveries, 1);
    assert_eq!(recorded.unwrap(), [true]);
    assert_eq!(delivery(store, &tenant, &jobs[0].delivery.id).await.status, DeliveryStatus::Succeeded);
    assert_eq!(delivery(store, &tenant, &fresh.deliveries[0].id).await.status, DeliveryStatus::Pending);

    // A part that fails is not stored; whether the other part was stored is what its own result says.
    publish(store, &tenant, "order.created", &[&endpoint], T0).await;
    let jobs = claim(store, "node-a", T0 + 20).await;
    let attempt = outcome(&jobs[0].delivery, DeliveryStatus::Succeeded, T0 + 30);
    let duplicate = fan_out(Event { id: fresh.event.id.clone(), ..event_of(&tenant, "order.paid", T0) }, &[&endpoint]);
    let (published, recorded) = store.write_batch(std::slice::from_ref(&duplicate), "node-a", &[attempt]).await;
    assert!(published.is_err(), "an event id that exists is refused");
    assert!(store.get_delivery(&tenant.id, &duplicate.deliveries[0].id).await.unwrap().is_none());
    let status = delivery(store, &tenant, &jobs[0].delivery.id).await.status;
    match recorded {
        Ok(recorded) => assert_eq!((recorded, status), (vec![true], DeliveryStatus::Succeeded)),
        Err(_) => assert_eq!(status, DeliveryStatus::Delivering, "not recorded, so still leased"),
    }
    let (published, recorded) = store.write_batch(&[], "node-a", &[]).await;
    assert!(published.unwrap().is_empty() && recorded.unwrap().is_empty());
}

async fn signing_secrets_of_several_endpoints(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let other = new_tenant(store).await;
    let rotated = add_endpoint(store, &tenant).await;
    let plain = add_endpoint(store, &other).await;
    let unasked = add_endpoint(store, &tenant).await;
    store.rotate_secret(&tenant.id, &rotated.id, &new_secret("second"), T0 + MINUTE, T0).await.unwrap().unwrap();
    let ids = [rotated.id.clone(), plain.id.clone(), "ep_missing".to_string()];
    for at in [T0 + 5, T0 + MINUTE] {
        let found = store.signing_secrets_of(&ids, at).await.unwrap();
        for endpoint in [&rotated, &plain] {
            let mut got: Vec<_> = found.iter().filter(|s| s.endpoint_id == endpoint.id).cloned().collect();
            got.sort_by_key(|s| std::cmp::Reverse(s.version));
            assert_eq!(got, store.signing_secrets(&endpoint.id, at).await.unwrap(), "{} at {at}", endpoint.id);
        }
        assert!(found.iter().all(|s| s.endpoint_id != unasked.id));
    }
    assert_eq!(store.signing_secrets_of(&ids, T0 + 5).await.unwrap().len(), 3, "two for the rotated endpoint");
    assert!(store.signing_secrets_of(&[], T0).await.unwrap().is_empty());
    // A rotation through the store shows at once, however recently the secrets were read.
    store.rotate_secret(&other.id, &plain.id, &new_secret("plain-2"), T0 + 10, T0 + 10).await.unwrap().unwrap();
    let after: Vec<i64> = store
        .signing_secrets_of(&ids, T0 + 20)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.endpoint_id == plain.id)
        .map(|s| s.version)
        .collect();
    assert_eq!(after, [2], "the old secret was revoked at once");
}

/// Fan-out reads the active endpoints for every publish; whatever an implementation keeps between reads, a
/// change made through the same store shows at once.
async fn active_endpoints_follow_every_endpoint_change_at_once(store: &dyn Store, _url: &str) {
    let tenant = new_tenant(store).await;
    let ids = |found: Arc<Vec<Endpoint>>| found.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>();
    let first = add_endpoint(store, &tenant).await;
    assert_eq!(ids(store.active_endpoints(&tenant.id).await.unwrap()), BTreeSet::from([first.id.clone()]));
    let second = add_endpoint(store, &tenant).await;
    assert_eq!(
        ids(store.active_endpoints(&tenant.id).await.unwrap()),
        BTreeSet::from([first.id.clone(), second.id.clone()])
    );

    store.set_endpoint_status(&tenant.id, &first.id, EndpointStatus::Paused, None, T0).await.unwrap();
    assert_eq!(ids(store.active_endpoints(&tenant.id).await.unwrap()), BTreeSet::from([second.id.clone()]));
    store.set_endpoint_status(&tenant.id, &first.id, EndpointStatus::Active, None, T0).await.unwrap();
    assert_eq!(ids(store.active_endpoints(&tenant.id).await.unwrap()).len(), 2);

    let only_invoices = vec![Subscription { event_type: "invoice.*".into(), filter: None }];
    store.replace_subscriptions(&tenant.id, &second.id, &only_invoices, T0).await.unwrap();
    let found = store.active_endpoints(&tenant.id).await.unwrap();
    assert_eq!(found.iter().find(|e| e.id == second.id).unwrap().subscriptions, only_invoices);

    let renamed = Endpoint { url: "https://elsewhere.example/in".into(), updated_at: T0 + 1, ..first.clone() };
    store.update_endpoint(&renamed).await.unwrap();
    let found = store.active_endpoints(&tenant.id).await.unwrap();
    assert_eq!(found.iter().find(|e| e.id == first.id).unwrap().url, "https://elsewhere.example/in");

    // A 410 Gone recorded by the dispatcher disables the endpoint.
    publish(store, &tenant, "order.created", &[&first], T0).await;
    let jobs = claim(store, "node-a", T0 + 5).await;
    let gone = AttemptOutcome {
        disable_endpoint: Some("gone".into()),
        ..outcome(&jobs[0].delivery, DeliveryStatus::Dead, T0 + 6)
    };
    assert!(store.record_attempt("node-a", &gone).await.unwrap());
    assert_eq!(ids(store.active_endpoints(&tenant.id).await.unwrap()), BTreeSet::from([second.id.clone()]));

    assert!(store.delete_endpoint(&tenant.id, &second.id, T0).await.unwrap());
    assert!(store.active_endpoints(&tenant.id).await.unwrap().is_empty());
}

/// PostgreSQL's row locks, which SQLite (one writer at a time) has no counterpart of.
mod postgres_lock_order {
    use std::time::Duration;

    use futures_util::FutureExt;
    use switchyard::model::DeliveryStatus;
    use switchyard::store::sql::SqlStore;
    use switchyard::store::Store;

    use super::{add_endpoint, new_tenant, outcome, publish, raw_pool, MINUTE, T0};

    /// Runs `case` against a fresh PostgreSQL database (skipped without one, outside CI).
    async fn on_postgres(name: &str, case: impl AsyncFnOnce(&dyn Store, &str)) {
        let Some(db) = super::store_pg::PostgresTestDatabase::create(name).await else { return };
        let store = SqlStore::connect(&db.url).await.unwrap();
        let outcome = std::panic::AssertUnwindSafe(case(&store, &db.url)).catch_unwind().await;
        store.close().await;
        db.drop_database().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// A deletion locks the endpoint, then its deliveries. Recording attempts, and giving leases back, lock the
    /// deliveries' endpoints before the deliveries: while a deletion holds the endpoint they wait for it, holding
    /// none of the rows it goes on to change. Before, a batch of outcomes took the delivery rows in an order of
    /// its own, and a deletion taking them in another deadlocked with it (`DELETE` answered 503).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_to_deliveries_in_flight_wait_for_a_deletion_holding_their_endpoint() {
        on_postgres(
            "postgres_lock_order::changes_to_deliveries_in_flight_wait_for_a_deletion_holding_their_endpoint",
            changes_wait_for_the_deletion,
        )
        .await;
    }

    /// A publish holds its endpoints `FOR KEY SHARE` until its group commit ends. Recording an attempt that
    /// disables the endpoint does not wait for it: a stronger lock there deadlocked with group commits spanning
    /// tenants.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disabling_an_endpoint_does_not_wait_for_publishes() {
        on_postgres("postgres_lock_order::disabling_an_endpoint_does_not_wait_for_publishes", disabling_does_not_wait)
            .await;
    }

    async fn disabling_does_not_wait(store: &dyn Store, url: &str) {
        let tenant = new_tenant(store).await;
        let endpoint = add_endpoint(store, &tenant).await;
        publish(store, &tenant, "order.created", &[&endpoint], T0).await;
        let jobs = store.claim_due("node", T0 + 10, T0 + MINUTE, 10).await.unwrap();

        let publishing = raw_pool(url).await;
        let mut publish_under_way = publishing.begin().await.unwrap();
        sqlx::query("SELECT id FROM endpoints WHERE id = $1 FOR KEY SHARE")
            .bind(&endpoint.id)
            .fetch_one(&mut *publish_under_way)
            .await
            .unwrap();
        let gone = switchyard::store::AttemptOutcome {
            disable_endpoint: Some("receiver answered 410 Gone".into()),
            ..outcome(&jobs[0].delivery, DeliveryStatus::Dead, T0 + 20)
        };
        let recorded = tokio::time::timeout(Duration::from_secs(5), store.record_attempts("node", &[gone]))
            .await
            .expect("recorded while the publish holds the endpoint");
        assert_eq!(recorded.unwrap(), [true]);
        publish_under_way.commit().await.unwrap();
        let disabled = store.get_endpoint(&tenant.id, &endpoint.id).await.unwrap().unwrap();
        assert_eq!(disabled.status, switchyard::model::EndpointStatus::Disabled);
    }

    /// Two requeues of the same dead letters at once (an operator's retried request, or two operators) took their
    /// rows in orders of their own and deadlocked: one answered 503. A requeue now leaves the rows another
    /// transaction holds to it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_requeue_skips_dead_letters_another_transaction_holds() {
        on_postgres(
            "postgres_lock_order::a_requeue_skips_dead_letters_another_transaction_holds",
            requeue_skips_held_rows,
        )
        .await;
    }

    async fn requeue_skips_held_rows(store: &dyn Store, url: &str) {
        let tenant = new_tenant(store).await;
        let endpoint = add_endpoint(store, &tenant).await;
        for at in [T0, T0 + 1] {
            publish(store, &tenant, "order.created", &[&endpoint], at).await;
        }
        let jobs = store.claim_due("node", T0 + 10, T0 + MINUTE, 10).await.unwrap();
        let dead: Vec<_> = jobs.iter().map(|job| outcome(&job.delivery, DeliveryStatus::Dead, T0 + 20)).collect();
        assert_eq!(store.record_attempts("node", &dead).await.unwrap(), [true, true]);
        let ids: Vec<String> = jobs.iter().map(|job| job.delivery.id.clone()).collect();

        let other = raw_pool(url).await;
        let mut other_requeue = other.begin().await.unwrap();
        sqlx::query("SELECT id FROM deliveries WHERE id = $1 FOR NO KEY UPDATE")
            .bind(&ids[0])
            .fetch_one(&mut *other_requeue)
            .await
            .unwrap();
        let selector = switchyard::store::RequeueSelector::Ids(ids.clone());
        let requeue = store.requeue_dead(&tenant.id, &selector, T0 + 30, switchyard::store::Resend::SameRequest);
        let requeued = tokio::time::timeout(Duration::from_secs(5), requeue).await.expect("no wait for the held row");
        assert_eq!(requeued.unwrap(), 1);
        other_requeue.rollback().await.unwrap();
        let tenant = &tenant;
        let status = |id: String| async move { store.get_delivery(&tenant.id, &id).await.unwrap().unwrap().status };
        assert_eq!(status(ids[0].clone()).await, DeliveryStatus::Dead, "left to the other transaction");
        assert_eq!(status(ids[1].clone()).await, DeliveryStatus::Pending);
    }

    async fn changes_wait_for_the_deletion(store: &dyn Store, url: &str) {
        let tenant = new_tenant(store).await;
        let endpoint = add_endpoint(store, &tenant).await;
        for at in [T0, T0 + 1, T0 + 2] {
            publish(store, &tenant, "order.created", &[&endpoint], at).await;
        }
        let jobs = store.claim_due("node", T0 + 10, T0 + MINUTE, 10).await.unwrap();
        assert_eq!(jobs.len(), 3);

        // The deletion's first step, held open.
        let deleting = raw_pool(url).await;
        let mut deletion = deleting.begin().await.unwrap();
        sqlx::query("SELECT id FROM endpoints WHERE id = $1 FOR UPDATE")
            .bind(&endpoint.id)
            .fetch_one(&mut *deletion)
            .await
            .unwrap();

        let plain = outcome(&jobs[0].delivery, DeliveryStatus::Succeeded, T0 + 20);
        let disabling = switchyard::store::AttemptOutcome {
            disable_endpoint: Some("receiver answered 410 Gone".into()),
            ..outcome(&jobs[1].delivery, DeliveryStatus::Dead, T0 + 20)
        };
        let changes = async {
            tokio::join!(
                store.record_attempts("node", std::slice::from_ref(&plain)),
                store.record_attempts("node", std::slice::from_ref(&disabling)),
                store.release("node", std::slice::from_ref(&jobs[2].delivery.id)),
            )
        };
        let rest_of_the_deletion = async {
            let watching = raw_pool(url).await;
            let waiting = || async {
                let row: (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND wait_event_type = 'Lock'",
                )
                .fetch_one(&watching)
                .await
                .unwrap();
                row.0
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while waiting().await < 3 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the changes did not all wait for the endpoint: {} of 3 waiting",
                    waiting().await
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // None of the deliveries is held by the changes waiting.
            let locked = sqlx::query("SELECT id FROM deliveries WHERE endpoint_id = $1 FOR UPDATE NOWAIT")
                .bind(&endpoint.id)
                .fetch_all(&mut *deletion)
                .await
                .expect("the deliveries are free to lock");
            assert_eq!(locked.len(), 3);
            sqlx::query(
                "UPDATE deliveries SET status = 'dead', last_error = 'endpoint deleted', next_attempt_at = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL WHERE endpoint_id = $1",
            )
            .bind(&endpoint.id)
            .execute(&mut *deletion)
            .await
            .unwrap();
            sqlx::query("DELETE FROM endpoints WHERE id = $1")
                .bind(&endpoint.id)
                .execute(&mut *deletion)
                .await
                .unwrap();
            deletion.commit().await.unwrap();
        };
        let ((plain, disabling, released), ()) = tokio::join!(changes, rest_of_the_deletion);
        // The leases went with the deletion: nothing is recorded over it.
        assert_eq!(plain.unwrap(), [false]);
        assert_eq!(disabling.unwrap(), [false]);
        released.unwrap();
        for job in &jobs {
            let delivery = store.get_delivery(&tenant.id, &job.delivery.id).await.unwrap().unwrap();
            assert_eq!(delivery.status, DeliveryStatus::Dead);
            assert!(store.list_attempts(&tenant.id, &job.delivery.id).await.unwrap().is_empty());
        }
    }
}
