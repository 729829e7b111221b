//! [`SqlStore`]: the [`Store`] over SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! The queries are shared: `$N` placeholders, `ON CONFLICT`, `RETURNING` and partial indexes work on both. Only
//! values the `Any` driver maps the same way on both are bound or read (i64, text, bytes and their NULLs); JSON
//! is stored as text. What must differ lives in [`Dialect`]. Each concern has its module; this one wires them
//! to the trait.

mod audit;
mod cache;
mod checkpoint;
mod counts;
mod deliveries;
mod dialect;
mod dispatch;
mod endpoint_secrets;
mod endpoints;
mod events;
mod hours;
mod migrations;
mod plugins;
mod query;
mod rows;
mod sqlite_batch;
mod sqlite_claim;
mod sqlite_lock;
mod tenants;
mod timed_ids;
mod wal_vfs;

#[cfg(test)]
#[path = "../../../tests/support/store_pg.rs"]
mod store_pg;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{AnyPool, Connection};

pub use self::cache::ACTIVE_ENDPOINTS_TTL;
pub use self::dialect::Dialect;
use self::dialect::WritePath;
pub use self::sqlite_lock::{lock_database, ProcessLock};
use self::timed_ids::TimedIds;
use crate::model::{
    ApiKey, Attempt, AuditEntry, Delivery, Endpoint, EndpointSecret, EndpointStatus, Event, EventType, Millis,
    Subscription, Tenant,
};
use crate::store::{
    AttemptCounts, AttemptOutcome, AuditFilter, DeadAttempt, DeliveryFilter, DispatchJob, Dropped, EndpointFilter,
    EndpointHour, EventFilter, EventTypeHour, NewEvent, NewSecret, Page, PluginUpload, Published, PublishedCounts,
    RequeueSelector, Resend, SentTo, ServerCounts, StatusBefore, Store, StoreError, StoreResult, TenantCounts,
};

/// Dead letters requeued per transaction by a requeue that selects them by filter.
const REQUEUE_CHUNK: i64 = 1000;

#[derive(Debug, Clone)]
pub struct SqlStore {
    /// Every write, and every transaction that reads what it then writes.
    writer: Arc<WritePath>,
    /// Statements that only read (see [`Dialect::open_reader`]).
    reader: AnyPool,
    dialect: Dialect,
    cache: Arc<cache::ReadCache>,
    /// Read at start-up: events and deliveries are stored only with ids of the current format from then on.
    event_ids: TimedIds,
    delivery_ids: TimedIds,
}

impl SqlStore {
    /// Connects to `sqlite:…` (creating the file if missing) or `postgres://…` and brings the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        // Idempotent: sqlx guards it with a `Once`.
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let writer = dialect.open_writer(url).await?;
        migrations::run(dialect, &mut *writer.acquire().await?).await?;
        let reader = dialect.open_reader(url, &writer).await?;
        let writer = Arc::new(writer);
        if matches!(*writer, WritePath::Dedicated(_)) {
            checkpoint::start(url, &writer).await?;
        }
        let event_ids = TimedIds::of(&reader, "events", "evt").await?;
        let delivery_ids = TimedIds::of(&reader, "deliveries", "dlv").await?;
        Ok(SqlStore { writer, reader, dialect, cache: Default::default(), event_ids, delivery_ids })
    }

    /// SQLite's publish and attempt records: one transaction, one round trip (see [`sqlite_batch`]).
    async fn write_sqlite(
        &self,
        new_events: &[NewEvent],
        owner: &str,
        attempts: &[AttemptOutcome],
    ) -> StoreResult<(Vec<Published>, Vec<bool>)> {
        let written = async {
            let mut connection = self.writer.acquire().await?;
            sqlite_batch::write(&mut connection, &self.cache, new_events, owner, attempts).await
        }
        .await;
        self.attempts_written(attempts);
        if written.is_ok() {
            events::committed(&self.cache, new_events);
        }
        written
    }

    /// After attempts were written (or not): a 410 Gone disables its endpoint.
    fn attempts_written(&self, outcomes: &[AttemptOutcome]) {
        for outcome in outcomes.iter().filter(|o| o.disable_endpoint.is_some()) {
            self.cache.endpoints_changed(&outcome.attempt.tenant_id);
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Copies the whole WAL into the database file and empties it. SQLite answers "busy" at once, rather than
    /// waiting, while another connection checkpoints (the checkpoint task's round, a backup): tried again then.
    async fn checkpoint_all(&self) -> StoreResult<()> {
        // Up to 5 s, inside the 10 s that `run` gives closing: a checkpoint round copying a large WAL takes a while.
        const TRIES: u32 = 250;
        for _ in 0..TRIES {
            let row =
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut *self.writer.acquire().await?).await?;
            if sqlx::Row::try_get::<i64, _>(&row, 0)? == 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(StoreError::Unavailable(format!("another connection kept checkpointing ({TRIES} tries)")))
    }

    /// Waits for borrowed connections to come back and closes them all. On SQLite the WAL is copied into the
    /// database file first, once the readers are gone (a reader's snapshot would hold the copy back).
    pub async fn close(&self) {
        self.reader.close().await;
        if self.dialect == Dialect::Sqlite {
            if let Err(e) = self.checkpoint_all().await {
                tracing::warn!(error = %e, "could not copy the WAL into the database file before closing; \
                the next start recovers it from the WAL");
            }
        }
        self.writer.close().await;
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&mut *self.writer.acquire().await?).await?;
        Ok(())
    }

    async fn close(&self) {
        SqlStore::close(self).await
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        tenants::get_meta(&self.reader, key).await
    }

    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        tenants::put_meta(&mut *self.writer.acquire().await?, key, value).await
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        tenants::create_tenant(&mut *self.writer.acquire().await?, tenant).await
    }

    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<bool> {
        tenants::update_tenant(&mut *self.writer.acquire().await?, tenant).await
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        tenants::get_tenant(&self.reader, id).await
    }

    async fn list_tenants(&self, page: &Page) -> StoreResult<Vec<Tenant>> {
        tenants::list_tenants(&self.reader, page).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        tenants::create_api_key(&mut *self.writer.acquire().await?, key).await
    }

    async fn list_api_keys(&self, tenant_id: &str, page: &Page) -> StoreResult<Vec<ApiKey>> {
        tenants::list_api_keys(&self.reader, tenant_id, page).await
    }

    async fn get_api_key(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ApiKey>> {
        tenants::get_api_key(&self.reader, tenant_id, id).await
    }

    async fn update_api_key(&self, before: &ApiKey, after: &ApiKey) -> StoreResult<bool> {
        tenants::update_api_key(&mut *self.writer.acquire().await?, before, after).await
    }

    async fn revoke_api_key(&self, tenant_id: &str, id: &str, at: Millis) -> StoreResult<bool> {
        tenants::revoke_api_key(&mut *self.writer.acquire().await?, tenant_id, id, at).await
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        tenants::find_api_key(&self.reader, key_hash).await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint, secret: &NewSecret) -> StoreResult<()> {
        let created = endpoints::create_endpoint(&mut *self.writer.acquire().await?, endpoint, secret).await;
        self.cache.endpoints_changed(&endpoint.tenant_id);
        self.cache.secrets_changed(&endpoint.id);
        created
    }

    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Endpoint>> {
        endpoints::get_endpoint(&self.reader, tenant_id, id).await
    }

    async fn list_endpoints(
        &self,
        tenant_id: &str,
        filter: &EndpointFilter,
        page: &Page,
    ) -> StoreResult<Vec<Endpoint>> {
        endpoints::list_endpoints(&self.reader, tenant_id, filter, page).await
    }

    async fn update_endpoint(&self, endpoint: &Endpoint) -> StoreResult<bool> {
        let updated = endpoints::update_endpoint(&mut *self.writer.acquire().await?, endpoint).await;
        self.cache.endpoints_changed(&endpoint.tenant_id);
        updated
    }

    async fn delete_endpoint(&self, tenant_id: &str, id: &str, at: Millis) -> StoreResult<bool> {
        let deleted =
            endpoints::delete_endpoint(&mut *self.writer.acquire().await?, self.dialect, tenant_id, id, at).await;
        self.cache.endpoints_changed(tenant_id);
        self.cache.secrets_changed(id);
        deleted
    }

    async fn set_endpoint_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: EndpointStatus,
        reason: Option<&str>,
        at: Millis,
    ) -> StoreResult<Option<StatusBefore>> {
        let mut writer = self.writer.acquire().await?;
        let set = endpoints::set_endpoint_status(&mut writer, self.dialect, tenant_id, id, status, reason, at).await;
        self.cache.endpoints_changed(tenant_id);
        set
    }

    async fn replace_subscriptions(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        subscriptions: &[Subscription],
        at: Millis,
    ) -> StoreResult<bool> {
        let replaced = endpoints::replace_subscriptions(
            &mut *self.writer.acquire().await?,
            tenant_id,
            endpoint_id,
            subscriptions,
            at,
        )
        .await;
        self.cache.endpoints_changed(tenant_id);
        replaced
    }

    async fn endpoints_binding_plugin(&self, name: &str) -> StoreResult<Vec<(String, String)>> {
        endpoints::endpoints_binding_plugin(&self.reader, name).await
    }

    async fn active_endpoints(&self, tenant_id: &str) -> StoreResult<Arc<Vec<Endpoint>>> {
        if let Some(cached) = self.cache.active_endpoints(tenant_id) {
            return Ok(cached);
        }
        let generation = self.cache.generation();
        let found = Arc::new(endpoints::active_endpoints(&self.reader, tenant_id).await?);
        self.cache.keep_active_endpoints(tenant_id, generation, found.clone());
        Ok(found)
    }

    async fn list_secrets(&self, tenant_id: &str, endpoint_id: &str) -> StoreResult<Vec<EndpointSecret>> {
        endpoint_secrets::list_secrets(&self.reader, tenant_id, endpoint_id).await
    }

    async fn rotate_secret(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        secret: &NewSecret,
        retire_until: Millis,
        at: Millis,
    ) -> StoreResult<Option<EndpointSecret>> {
        let rotated = endpoint_secrets::rotate_secret(
            &mut *self.writer.acquire().await?,
            self.dialect,
            tenant_id,
            endpoint_id,
            secret,
            retire_until,
            at,
        )
        .await;
        self.cache.secrets_changed(endpoint_id);
        rotated
    }

    async fn signing_secrets(&self, endpoint_id: &str, at: Millis) -> StoreResult<Vec<EndpointSecret>> {
        endpoint_secrets::signing_secrets(&self.reader, endpoint_id, at).await
    }

    async fn signing_secrets_of(&self, endpoint_ids: &[String], at: Millis) -> StoreResult<Vec<EndpointSecret>> {
        // Asked for on every group commit that hands deliveries over, so served from the cache where it can be.
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for id in endpoint_ids {
            match self.cache.signing_secrets(id, at) {
                Some(secrets) => found.extend(secrets),
                None => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let generation = self.cache.generation();
        // Every active and retiring secret, so the cached set answers for any later time too.
        let read =
            endpoint_secrets::signing_secrets_of(&mut *self.reader.acquire().await?, &missing, Millis::MIN).await?;
        for id in &missing {
            let secrets: Vec<EndpointSecret> = read.iter().filter(|s| s.endpoint_id == *id).cloned().collect();
            found.extend(secrets.iter().filter(|s| s.signs_at(at)).cloned());
            self.cache.keep_secrets(id, generation, secrets);
        }
        Ok(found)
    }

    async fn register_event_type(&self, tenant_id: &str, wanted: &EventType) -> StoreResult<(EventType, bool)> {
        let registered = events::register_event_type(&mut *self.writer.acquire().await?, tenant_id, wanted).await?;
        self.cache.event_type_committed(tenant_id, &wanted.name);
        Ok(registered)
    }

    async fn get_event_type(&self, tenant_id: &str, name: &str) -> StoreResult<Option<EventType>> {
        events::get_event_type(&self.reader, tenant_id, name).await
    }

    async fn list_event_types(&self, tenant_id: &str, page: &Page) -> StoreResult<Vec<EventType>> {
        events::list_event_types(&self.reader, tenant_id, page).await
    }

    async fn event_type_schemas(&self, tenant_id: &str) -> StoreResult<Vec<(String, String)>> {
        events::event_type_schemas(&self.reader, tenant_id).await
    }

    async fn publish(&self, new_events: &[NewEvent]) -> StoreResult<Vec<Published>> {
        if self.dialect == Dialect::Sqlite {
            return self.write_sqlite(new_events, "", &[]).await.map(|(published, _)| published);
        }
        let mut connection = self.writer.acquire().await?;
        let mut tx = connection.begin().await?;
        let published = events::publish(&mut tx, self.dialect, &self.cache, new_events).await?;
        tx.commit().await?;
        events::committed(&self.cache, new_events);
        Ok(published)
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Event>> {
        events::get_event(&self.reader, tenant_id, id).await
    }

    async fn events_by_idempotency_keys(&self, tenant_id: &str, keys: &[String]) -> StoreResult<Vec<Event>> {
        events::events_by_idempotency_keys(&self.reader, tenant_id, keys).await
    }

    async fn list_events(&self, tenant_id: &str, filter: &EventFilter, page: &Page) -> StoreResult<Vec<Event>> {
        events::list_events(&self.reader, tenant_id, filter, self.event_ids, page).await
    }

    async fn get_delivery(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Delivery>> {
        deliveries::get_delivery(&self.reader, tenant_id, id).await
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> StoreResult<Vec<Delivery>> {
        deliveries::list_deliveries(&self.reader, tenant_id, filter, self.delivery_ids, page).await
    }

    async fn tenant_counts(&self, tenant_id: &str, limit: u64) -> StoreResult<TenantCounts> {
        counts::tenant_counts(&self.reader, tenant_id, limit).await
    }

    async fn server_counts(&self, limit: u64) -> StoreResult<ServerCounts> {
        counts::server_counts(&self.reader, limit).await
    }

    async fn add_endpoint_hours(&self, hours: &[EndpointHour]) -> StoreResult<()> {
        let mut writer = self.writer.acquire().await?;
        hours::add_endpoint_hours(&mut writer, self.dialect, hours).await
    }

    async fn tenant_hours(
        &self,
        tenant_id: &str,
        endpoint_id: Option<&str>,
        since: Millis,
    ) -> StoreResult<Vec<(Millis, AttemptCounts)>> {
        hours::tenant_hours(&self.reader, tenant_id, endpoint_id, since).await
    }

    async fn endpoint_totals(
        &self,
        tenant_id: &str,
        endpoint_ids: &[String],
        hours: Range<Millis>,
    ) -> StoreResult<Vec<(String, AttemptCounts)>> {
        hours::endpoint_totals(&self.reader, tenant_id, endpoint_ids, hours).await
    }

    async fn add_event_type_hours(&self, hours: &[EventTypeHour]) -> StoreResult<()> {
        let mut writer = self.writer.acquire().await?;
        hours::add_event_type_hours(&mut writer, self.dialect, hours).await
    }

    async fn event_type_totals(
        &self,
        tenant_id: &str,
        hours: Range<Millis>,
    ) -> StoreResult<Vec<(String, PublishedCounts)>> {
        hours::event_type_totals(&self.reader, tenant_id, hours).await
    }

    async fn prune_hours(&self, before: Millis) -> StoreResult<u64> {
        let mut writer = self.writer.acquire().await?;
        hours::prune_hours(&mut writer, before).await
    }

    async fn list_attempts(&self, tenant_id: &str, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        deliveries::list_attempts(&self.reader, tenant_id, delivery_id).await
    }

    async fn retry_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        at: Millis,
        resend: Resend,
    ) -> StoreResult<Option<Delivery>> {
        deliveries::retry_delivery(&mut *self.writer.acquire().await?, self.dialect, tenant_id, id, at, resend).await
    }

    async fn send_event_to(
        &self,
        tenant_id: &str,
        event_id: &str,
        endpoint_id: &str,
        delivery_id: &str,
        at: Millis,
    ) -> StoreResult<SentTo> {
        let mut writer = self.writer.acquire().await?;
        deliveries::send_event_to(&mut writer, self.dialect, tenant_id, event_id, endpoint_id, delivery_id, at).await
    }

    async fn events_missed_by(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        filter: &EventFilter,
        page: &Page,
    ) -> StoreResult<Vec<Event>> {
        events::events_missed_by(&self.reader, tenant_id, endpoint_id, filter, self.event_ids, page).await
    }

    async fn send_events_to(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        event_ids: &[String],
        at: Millis,
    ) -> StoreResult<Option<u64>> {
        let mut writer = self.writer.acquire().await?;
        deliveries::send_events_to(&mut writer, self.dialect, tenant_id, endpoint_id, event_ids, at).await
    }

    async fn requeue_dead(
        &self,
        tenant_id: &str,
        selector: &RequeueSelector,
        at: Millis,
        resend: Resend,
    ) -> StoreResult<u64> {
        let filter = match selector {
            RequeueSelector::Ids(ids) => {
                let mut writer = self.writer.acquire().await?;
                return deliveries::requeue_dead(&mut writer, self.dialect, tenant_id, ids, at, resend).await;
            }
            RequeueSelector::Matching(filter) => filter,
        };
        // A chunk per transaction, the writer taken anew for each: requeueing a long outage's dead letters must
        // not hold every tenant's publishes behind one statement over all of them. The ids are read first, in
        // keyset order, so each dead letter is considered once even if it dies again meanwhile.
        let mut page = Page { cursor: None, limit: REQUEUE_CHUNK };
        let mut requeued = 0;
        loop {
            let mut ids =
                deliveries::dead_letter_ids(&self.reader, tenant_id, filter, self.delivery_ids, &page).await?;
            if !ids.is_empty() {
                let mut writer = self.writer.acquire().await?;
                requeued += deliveries::requeue_dead(&mut writer, self.dialect, tenant_id, &ids, at, resend).await?;
            }
            if ids.len() < REQUEUE_CHUNK as usize {
                return Ok(requeued);
            }
            page.cursor = ids.pop();
        }
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> StoreResult<Vec<DispatchJob>> {
        let mut connection = self.writer.acquire().await?;
        match self.dialect {
            Dialect::Sqlite => sqlite_claim::claim_due(&mut connection, owner, now, lease_until, limit).await,
            Dialect::Postgres => {
                dispatch::claim_due(&mut connection, self.dialect, owner, now, lease_until, limit).await
            }
        }
    }

    async fn record_attempts(&self, owner: &str, outcomes: &[AttemptOutcome]) -> StoreResult<Vec<bool>> {
        if self.dialect == Dialect::Sqlite {
            return self.write_sqlite(&[], owner, outcomes).await.map(|(_, recorded)| recorded);
        }
        let recorded = async {
            let mut connection = self.writer.acquire().await?;
            let mut tx = connection.begin().await?;
            let recorded = dispatch::record_attempts(&mut tx, self.dialect, owner, outcomes).await?;
            tx.commit().await?;
            Ok(recorded)
        }
        .await;
        self.attempts_written(outcomes);
        recorded
    }

    async fn write_batch(
        &self,
        new_events: &[NewEvent],
        owner: &str,
        attempts: &[AttemptOutcome],
    ) -> (StoreResult<Vec<Published>>, StoreResult<Vec<bool>>) {
        match self.dialect {
            _ if new_events.is_empty() && attempts.is_empty() => (Ok(Vec::new()), Ok(Vec::new())),
            // One writer connection: two transactions would queue behind each other, each with its own fsync.
            Dialect::Sqlite => match self.write_sqlite(new_events, owner, attempts).await {
                Ok((published, recorded)) => (Ok(published), Ok(recorded)),
                Err(e) => {
                    let shared = StoreError::Unavailable(format!("the transaction it shared failed: {e}"));
                    (Err(e), Err(shared))
                }
            },
            // Separate connections: both commit at the same time.
            Dialect::Postgres => {
                let publish = async {
                    if new_events.is_empty() {
                        Ok(Vec::new())
                    } else {
                        self.publish(new_events).await
                    }
                };
                let record = async {
                    if attempts.is_empty() {
                        Ok(Vec::new())
                    } else {
                        self.record_attempts(owner, attempts).await
                    }
                };
                tokio::join!(publish, record)
            }
        }
    }

    async fn record_drop(&self, owner: &str, dropped: &Dropped) -> StoreResult<bool> {
        dispatch::record_drop(&mut *self.writer.acquire().await?, owner, dropped).await
    }

    async fn release(&self, owner: &str, delivery_ids: &[String]) -> StoreResult<()> {
        dispatch::release(&mut *self.writer.acquire().await?, self.dialect, owner, delivery_ids).await
    }

    async fn defer(&self, owner: &str, deferrals: &[(String, Millis)]) -> StoreResult<()> {
        dispatch::defer(&mut *self.writer.acquire().await?, self.dialect, owner, deferrals).await
    }

    async fn bring_forward(&self, tenant_id: &str, endpoint_id: &str, now: Millis) -> StoreResult<u64> {
        dispatch::bring_forward(&mut *self.writer.acquire().await?, self.dialect, tenant_id, endpoint_id, now).await
    }

    async fn release_foreign_leases(&self, owner: &str) -> StoreResult<u64> {
        dispatch::release_foreign_leases(&mut *self.writer.acquire().await?, owner).await
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        dispatch::next_due_at(&self.reader).await
    }

    async fn put_plugin_upload(&self, name: &str, sha256: &str, wasm: &[u8], at: Millis) -> StoreResult<()> {
        plugins::put_upload(&mut *self.writer.acquire().await?, name, sha256, wasm, at).await
    }

    async fn delete_plugin_upload(&self, name: &str, sha256: &str, at: Millis) -> StoreResult<bool> {
        plugins::delete_upload(&mut *self.writer.acquire().await?, name, sha256, at).await
    }

    async fn plugin_uploads(&self) -> StoreResult<Vec<PluginUpload>> {
        plugins::uploads(&self.reader).await
    }

    async fn plugin_upload_wasm(&self, name: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        plugins::upload_wasm(&self.reader, name, sha256).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        audit::append_audit(&mut *self.writer.acquire().await?, entry).await
    }

    async fn list_audit(
        &self,
        tenant_id: Option<&str>,
        filter: &AuditFilter,
        page: &Page,
    ) -> StoreResult<Vec<AuditEntry>> {
        audit::list_audit(&self.reader, tenant_id, filter, page).await
    }

    async fn tenant_audit_after(&self, action: &str, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        audit::tenant_audit_after(&self.reader, action, page).await
    }

    async fn dead_attempts_after(&self, page: &Page) -> StoreResult<Vec<DeadAttempt>> {
        deliveries::dead_attempts_after(&self.reader, page).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    async fn pragma(store: &SqlStore, name: &str) -> sqlx::any::AnyRow {
        sqlx::query(&format!("PRAGMA {name}")).fetch_one(&mut *store.writer.acquire().await.unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn sqlite_file_is_created_durable_and_enforces_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        let url = format!("sqlite://{}", path.display());
        let store = SqlStore::connect(&url).await.unwrap();
        assert!(path.exists());
        assert_eq!(pragma(&store, "journal_mode").await.try_get::<String, _>(0).unwrap(), "wal");
        assert_eq!(pragma(&store, "synchronous").await.try_get::<i64, _>(0).unwrap(), 2, "FULL");
        assert_eq!(pragma(&store, "foreign_keys").await.try_get::<i64, _>(0).unwrap(), 1);
        assert_eq!(pragma(&store, "busy_timeout").await.try_get::<i64, _>(0).unwrap(), 5000);
        store.close().await;

        // A second start finds the schema up to date.
        let reopened = SqlStore::connect(&url).await.unwrap();
        reopened.ping().await.unwrap();
        reopened.close().await;
    }
}
