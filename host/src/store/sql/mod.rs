//! [`SqlStore`]: the [`Store`] over SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! The queries are shared: `$N` placeholders, `ON CONFLICT`, `RETURNING` and partial indexes work on both. Only
//! values the `Any` driver maps the same way on both are bound or read (i64, text, bytes and their NULLs); JSON
//! is stored as text. What must differ lives in [`Dialect`]. Each concern has its module; this one wires them
//! to the trait.

mod audit;
mod deliveries;
mod dialect;
mod dispatch;
mod endpoint_secrets;
mod endpoints;
mod events;
mod migrations;
mod query;
mod rows;
mod tenants;

use async_trait::async_trait;
use sqlx::AnyPool;

pub use self::dialect::Dialect;
use crate::model::{
    ApiKey, Attempt, AuditEntry, Delivery, Endpoint, EndpointSecret, EndpointStatus, Event, EventType, Millis,
    Subscription, Tenant,
};
use crate::store::{
    AttemptOutcome, DeliveryFilter, DispatchJob, Dropped, EndpointFilter, EventFilter, NewEvent, NewSecret, Page,
    Published, RequeueSelector, Store, StoreResult,
};

#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

impl SqlStore {
    /// Connects to `sqlite:…` (creating the file if missing) or `postgres://…` and brings the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        // Idempotent: sqlx guards it with a `Once`.
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let pool = dialect.open_pool(url).await?;
        migrations::run(dialect, &pool).await?;
        Ok(SqlStore { pool, dialect })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Waits for borrowed connections to come back and closes them all.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        tenants::get_meta(&self.pool, key).await
    }

    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        tenants::put_meta(&self.pool, key, value).await
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        tenants::create_tenant(&self.pool, tenant).await
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        tenants::get_tenant(&self.pool, id).await
    }

    async fn list_tenants(&self, page: &Page) -> StoreResult<Vec<Tenant>> {
        tenants::list_tenants(&self.pool, page).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        tenants::create_api_key(&self.pool, key).await
    }

    async fn list_api_keys(&self, tenant_id: &str, page: &Page) -> StoreResult<Vec<ApiKey>> {
        tenants::list_api_keys(&self.pool, tenant_id, page).await
    }

    async fn revoke_api_key(&self, tenant_id: &str, id: &str, at: Millis) -> StoreResult<bool> {
        tenants::revoke_api_key(&self.pool, tenant_id, id, at).await
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        tenants::find_api_key(&self.pool, key_hash).await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint, secret: &NewSecret) -> StoreResult<()> {
        endpoints::create_endpoint(&self.pool, endpoint, secret).await
    }

    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Endpoint>> {
        endpoints::get_endpoint(&self.pool, tenant_id, id).await
    }

    async fn list_endpoints(
        &self,
        tenant_id: &str,
        filter: &EndpointFilter,
        page: &Page,
    ) -> StoreResult<Vec<Endpoint>> {
        endpoints::list_endpoints(&self.pool, tenant_id, filter, page).await
    }

    async fn update_endpoint(&self, endpoint: &Endpoint) -> StoreResult<bool> {
        endpoints::update_endpoint(&self.pool, endpoint).await
    }

    async fn delete_endpoint(&self, tenant_id: &str, id: &str, at: Millis) -> StoreResult<bool> {
        endpoints::delete_endpoint(&self.pool, self.dialect, tenant_id, id, at).await
    }

    async fn set_endpoint_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: EndpointStatus,
        reason: Option<&str>,
        at: Millis,
    ) -> StoreResult<bool> {
        endpoints::set_endpoint_status(&self.pool, tenant_id, id, status, reason, at).await
    }

    async fn replace_subscriptions(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        subscriptions: &[Subscription],
        at: Millis,
    ) -> StoreResult<bool> {
        endpoints::replace_subscriptions(&self.pool, tenant_id, endpoint_id, subscriptions, at).await
    }

    async fn endpoints_binding_plugin(&self, name: &str) -> StoreResult<Vec<(String, String)>> {
        endpoints::endpoints_binding_plugin(&self.pool, name).await
    }

    async fn active_endpoints(&self, tenant_id: &str) -> StoreResult<Vec<Endpoint>> {
        endpoints::active_endpoints(&self.pool, tenant_id).await
    }

    async fn list_secrets(&self, tenant_id: &str, endpoint_id: &str) -> StoreResult<Vec<EndpointSecret>> {
        endpoint_secrets::list_secrets(&self.pool, tenant_id, endpoint_id).await
    }

    async fn rotate_secret(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        secret: &NewSecret,
        retire_until: Millis,
        at: Millis,
    ) -> StoreResult<Option<EndpointSecret>> {
        endpoint_secrets::rotate_secret(&self.pool, self.dialect, tenant_id, endpoint_id, secret, retire_until, at)
            .await
    }

    async fn signing_secrets(&self, endpoint_id: &str, at: Millis) -> StoreResult<Vec<EndpointSecret>> {
        endpoint_secrets::signing_secrets(&self.pool, endpoint_id, at).await
    }

    async fn register_event_type(
        &self,
        tenant_id: &str,
        name: &str,
        description: &str,
        at: Millis,
    ) -> StoreResult<EventType> {
        events::register_event_type(&self.pool, tenant_id, name, description, at).await
    }

    async fn list_event_types(&self, tenant_id: &str, page: &Page) -> StoreResult<Vec<EventType>> {
        events::list_event_types(&self.pool, tenant_id, page).await
    }

    async fn publish(&self, new_events: &[NewEvent]) -> StoreResult<Vec<Published>> {
        events::publish(&self.pool, self.dialect, new_events).await
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Event>> {
        events::get_event(&self.pool, tenant_id, id).await
    }

    async fn list_events(&self, tenant_id: &str, filter: &EventFilter, page: &Page) -> StoreResult<Vec<Event>> {
        events::list_events(&self.pool, tenant_id, filter, page).await
    }

    async fn get_delivery(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Delivery>> {
        deliveries::get_delivery(&self.pool, tenant_id, id).await
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> StoreResult<Vec<Delivery>> {
        deliveries::list_deliveries(&self.pool, tenant_id, filter, page).await
    }

    async fn list_attempts(&self, tenant_id: &str, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        deliveries::list_attempts(&self.pool, tenant_id, delivery_id).await
    }

    async fn retry_delivery(&self, tenant_id: &str, id: &str, at: Millis) -> StoreResult<Option<Delivery>> {
        deliveries::retry_delivery(&self.pool, tenant_id, id, at).await
    }

    async fn requeue_dead(&self, tenant_id: &str, selector: &RequeueSelector, at: Millis) -> StoreResult<u64> {
        deliveries::requeue_dead(&self.pool, self.dialect, tenant_id, selector, at).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> StoreResult<Vec<DispatchJob>> {
        dispatch::claim_due(&self.pool, self.dialect, owner, now, lease_until, limit).await
    }

    async fn record_attempts(&self, owner: &str, outcomes: &[AttemptOutcome]) -> StoreResult<Vec<bool>> {
        dispatch::record_attempts(&self.pool, self.dialect, owner, outcomes).await
    }

    async fn record_drop(&self, owner: &str, dropped: &Dropped) -> StoreResult<bool> {
        dispatch::record_drop(&self.pool, owner, dropped).await
    }

    async fn release(&self, owner: &str, delivery_ids: &[String]) -> StoreResult<()> {
        dispatch::release(&self.pool, owner, delivery_ids).await
    }

    async fn release_foreign_leases(&self, owner: &str) -> StoreResult<u64> {
        dispatch::release_foreign_leases(&self.pool, owner).await
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        dispatch::next_due_at(&self.pool).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        audit::append_audit(&self.pool, entry).await
    }

    async fn list_audit(&self, tenant_id: &str, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        audit::list_audit(&self.pool, tenant_id, page).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    async fn pragma(store: &SqlStore, name: &str) -> sqlx::any::AnyRow {
        sqlx::query(&format!("PRAGMA {name}")).fetch_one(&store.pool).await.unwrap()
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
