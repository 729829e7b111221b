//! Row → model mapping, one function per type, with the column list each expects. Anything a row holds that
//! this version cannot read (an unknown status, malformed JSON) is [`StoreError::Corrupt`], never a panic.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::model::{
    ApiKey, Attempt, AuditEntry, Delivery, Endpoint, EndpointSecret, Event, EventType, PreparedRequest, Subscription,
    Tenant,
};
use crate::store::{StoreError, StoreResult};

pub(super) const TENANT_COLUMNS: &str = "id, name, created_at";
pub(super) const API_KEY_COLUMNS: &str = "id, tenant_id, name, prefix, key_hash, created_at, revoked_at";
pub(super) const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, status, status_reason, timeout_ms, \
    headers, retry_schedule_ms, max_attempts, signature_scheme, metadata, plugins, created_at, updated_at";
pub(super) const SUBSCRIPTION_COLUMNS: &str = "endpoint_id, event_type, filter";
pub(super) const SECRET_COLUMNS: &str =
    "id, endpoint_id, tenant_id, version, status, ciphertext, hint, created_at, expires_at";
pub(super) const EVENT_TYPE_COLUMNS: &str = "name, description, created_at";
pub(super) const EVENT_COLUMNS: &str = "id, tenant_id, event_type, data, idempotency_key, received_at";
pub(super) const DELIVERY_COLUMNS: &str = "id, tenant_id, event_id, endpoint_id, event_type, status, attempts, \
    schedule_offset, next_attempt_at, lease_owner, lease_expires_at, last_status_code, last_error, plugin_versions, \
    request_body, request_meta, created_at, updated_at";
pub(super) const ATTEMPT_COLUMNS: &str = "id, tenant_id, delivery_id, attempt_number, started_at, duration_ms, \
    status_code, response_body, error, outcome";
pub(super) const AUDIT_COLUMNS: &str = "id, tenant_id, actor, action, resource_type, resource_id, details, at";

pub(super) fn tenant(row: &AnyRow) -> StoreResult<Tenant> {
    Ok(Tenant { id: row.try_get("id")?, name: row.try_get("name")?, created_at: row.try_get("created_at")? })
}

pub(super) fn api_key(row: &AnyRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// An endpoint row; its subscriptions live in another table and are passed in.
pub(super) fn endpoint(row: &AnyRow, subscriptions: Vec<Subscription>) -> StoreResult<Endpoint> {
    let retry_schedule_ms: Option<String> = row.try_get("retry_schedule_ms")?;
    Ok(Endpoint {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        status: parse(row, "status")?,
        status_reason: row.try_get("status_reason")?,
        timeout_ms: row.try_get("timeout_ms")?,
        headers: json::<BTreeMap<String, String>>(row, "headers")?,
        retry_schedule_ms: retry_schedule_ms.map(|text| from_json("retry_schedule_ms", &text)).transpose()?,
        max_attempts: row.try_get("max_attempts")?,
        signature_scheme: parse(row, "signature_scheme")?,
        metadata: json::<BTreeMap<String, String>>(row, "metadata")?,
        subscriptions,
        plugins: json(row, "plugins")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A subscription row with the endpoint it belongs to.
pub(super) fn subscription(row: &AnyRow) -> StoreResult<(String, Subscription)> {
    Ok((
        row.try_get("endpoint_id")?,
        Subscription { event_type: row.try_get("event_type")?, filter: row.try_get("filter")? },
    ))
}

pub(super) fn secret(row: &AnyRow) -> StoreResult<EndpointSecret> {
    Ok(EndpointSecret {
        id: row.try_get("id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        tenant_id: row.try_get("tenant_id")?,
        version: row.try_get("version")?,
        status: parse(row, "status")?,
        ciphertext: row.try_get("ciphertext")?,
        hint: row.try_get("hint")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

pub(super) fn event_type(row: &AnyRow) -> StoreResult<EventType> {
    Ok(EventType {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn event(row: &AnyRow) -> StoreResult<Event> {
    let data: String = row.try_get("data")?;
    Ok(Event {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        event_type: row.try_get("event_type")?,
        data: RawValue::from_string(data).map_err(|e| corrupt("data", e))?,
        idempotency_key: row.try_get("idempotency_key")?,
        received_at: row.try_get("received_at")?,
    })
}

pub(super) fn delivery(row: &AnyRow) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        event_id: row.try_get("event_id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        event_type: row.try_get("event_type")?,
        status: parse(row, "status")?,
        attempts: row.try_get("attempts")?,
        schedule_offset: row.try_get("schedule_offset")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        prepared: prepared_request(row)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The stored shape of a prepared request's content type and extra headers (`request_meta`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RequestMeta {
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
}

fn prepared_request(row: &AnyRow) -> StoreResult<Option<PreparedRequest>> {
    let versions: Option<String> = row.try_get("plugin_versions")?;
    let Some(versions) = versions else { return Ok(None) };
    let meta: Option<String> = row.try_get("request_meta")?;
    let meta = match meta {
        Some(text) => from_json::<RequestMeta>("request_meta", &text)?,
        None => RequestMeta { content_type: None, headers: Vec::new() },
    };
    Ok(Some(PreparedRequest {
        plugin_versions: from_json("plugin_versions", &versions)?,
        body: row.try_get("request_body")?,
        content_type: meta.content_type,
        headers: meta.headers,
    }))
}

pub(super) fn attempt(row: &AnyRow) -> StoreResult<Attempt> {
    Ok(Attempt {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        delivery_id: row.try_get("delivery_id")?,
        attempt_number: row.try_get("attempt_number")?,
        started_at: row.try_get("started_at")?,
        duration_ms: row.try_get("duration_ms")?,
        status_code: row.try_get("status_code")?,
        response_body: row.try_get("response_body")?,
        error: row.try_get("error")?,
        outcome: row.try_get("outcome")?,
    })
}

pub(super) fn audit_entry(row: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        details: json(row, "details")?,
        at: row.try_get("at")?,
    })
}

pub(super) fn all<T>(rows: &[AnyRow], map: impl Fn(&AnyRow) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(map).collect()
}

/// JSON text for a TEXT column. Serialising maps and lists of plain values cannot fail; if it ever did, storing
/// an empty document would lose data silently, so it is reported instead.
pub(super) fn to_json<T: serde::Serialize>(column: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode `{column}` as JSON: {e}")))
}

fn parse<T: FromStr<Err = String>>(row: &AnyRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e| corrupt(column, e))
}

fn json<T: DeserializeOwned>(row: &AnyRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    from_json(column, &text)
}

fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(column, e))
}

fn corrupt(column: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column `{column}`: {error}"))
}
