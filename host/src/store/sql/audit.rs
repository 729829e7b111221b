//! The audit log: appended to, never changed (the schema's triggers refuse UPDATE and DELETE).

use sqlx::{AnyConnection, AnyPool};

use super::query::{conflict_on_unique, Order, SqlBuilder};
use super::rows::{self, to_json, AUDIT_COLUMNS};
use crate::model::AuditEntry;
use crate::store::{AuditFilter, Page, StoreResult};

pub(super) async fn append_audit(connection: &mut AnyConnection, entry: &AuditEntry) -> StoreResult<()> {
    sqlx::query(&format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(&entry.id)
        .bind(entry.tenant_id.as_deref())
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.resource_type)
        .bind(&entry.resource_id)
        .bind(to_json("details", &entry.details)?)
        .bind(entry.at)
        .execute(&mut *connection)
        .await
        .map_err(conflict_on_unique(|| format!("audit entry `{}` already exists", entry.id)))?;
    Ok(())
}

pub(super) async fn list_audit(
    pool: &AnyPool,
    tenant_id: Option<&str>,
    filter: &AuditFilter,
    page: &Page,
) -> StoreResult<Vec<AuditEntry>> {
    let mut sql = SqlBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log"));
    match tenant_id {
        Some(tenant_id) => sql.compare("tenant_id", "=", tenant_id),
        None => sql.condition().push("tenant_id IS NULL"),
    };
    sql.compare_if("action", "=", filter.action.as_deref())
        .compare_if("resource_id", "=", filter.resource_id.as_deref())
        .keyset_page("id", Order::Descending, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::audit_entry)
}

pub(super) async fn tenant_audit_after(pool: &AnyPool, action: &str, page: &Page) -> StoreResult<Vec<AuditEntry>> {
    // Walks the primary key from the cursor: only the entries written since, whatever their tenants.
    let mut sql = SqlBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log"));
    sql.condition().push("tenant_id IS NOT NULL");
    sql.compare("action", "=", action).keyset_page("id", Order::Ascending, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::audit_entry)
}
