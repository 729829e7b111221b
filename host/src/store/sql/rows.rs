//! Row → model mapping, one function per type, with the column list each expects. Anything a row holds that
//! this version cannot read (an unknown status, malformed JSON) is [`StoreError::Corrupt`], never a panic.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::model::{
    ApiKey, Attempt, AuditEntry, Delivery, Endpoint, EndpointSecret, Event, EventType, PreparedRequest,
    SignatureHeader, Subscription, Tenant, TimestampUnit,
};
use crate::store::{StatusBefore, StoreError, StoreResult};

pub(super) const TENANT_COLUMNS: &str = "id, name, rate_limit, created_at";
pub(super) const API_KEY_COLUMNS: &str =
    "id, tenant_id, name, prefix, key_hash, scope, created_at, revoked_at, allowed_networks";
pub(super) const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, status, status_reason, timeout_ms, \
    headers, retry_schedule_ms, max_attempts, signature_scheme, metadata, plugins, rate_limit, created_at, updated_at, \
    signature_header, signature_key_id";
pub(super) const SUBSCRIPTION_COLUMNS: &str = "endpoint_id, event_type, filter";
pub(super) const SECRET_COLUMNS: &str =
    "id, endpoint_id, tenant_id, version, status, ciphertext, hint, created_at, expires_at";
pub(super) const EVENT_TYPE_COLUMNS: &str = "name, description, json_schema, created_at";
pub(super) const EVENT_COLUMNS: &str = "id, tenant_id, event_type, data, idempotency_key, received_at";
pub(super) const DELIVERY_COLUMNS: &str = "id, tenant_id, event_id, endpoint_id, event_type, status, attempts, \
    schedule_offset, next_attempt_at, lease_owner, lease_expires_at, last_status_code, last_error, plugin_versions, \
    request_body, request_meta, created_at, updated_at";
/// [`DELIVERY_COLUMNS`] for listings: the prepared request's body and headers stay in the database. A page of a
/// thousand deliveries with 1 MiB transformed bodies would hold a gigabyte, and a CSV export reads page after page
/// (a drill saw 105 MB grow to 531 MB for one export of a thousand rows).
pub(super) const LISTED_DELIVERY_COLUMNS: &str = "id, tenant_id, event_id, endpoint_id, event_type, status, attempts, \
    schedule_offset, next_attempt_at, lease_owner, lease_expires_at, last_status_code, last_error, plugin_versions, \
    NULL AS request_body, NULL AS request_meta, created_at, updated_at";
pub(super) const ATTEMPT_COLUMNS: &str = "id, tenant_id, delivery_id, attempt_number, started_at, duration_ms, \
    status_code, response_body, error, outcome";
pub(super) const AUDIT_COLUMNS: &str = "id, tenant_id, actor, action, resource_type, resource_id, details, at";

pub(super) fn tenant(row: &AnyRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        rate_limit: row.try_get("rate_limit")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn api_key(row: &AnyRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        scope: parse(row, "scope")?,
        allowed_networks: match row.try_get::<Option<String>, _>("allowed_networks")? {
            Some(text) => from_json::<Vec<ipnet::IpNet>>("allowed_networks", &text)?,
            None => Vec::new(),
        },
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// `status, status_reason` of an endpoint.
pub(super) fn status_before(row: &AnyRow) -> StoreResult<StatusBefore> {
    Ok(StatusBefore { status: parse(row, "status")?, reason: row.try_get("status_reason")? })
}

/// `signature_header` as stored, read without refusing fields this version does not know: a newer node may
/// write some, and one endpoint's setting must not make every claim holding a delivery to it fail here.
#[derive(serde::Deserialize)]
struct StoredSignatureHeader {
    name: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    timestamp: Option<TimestampUnit>,
}

/// What `signature_header` stores: all but `key_id`, which has a column of its own (see migration 0018).
pub(super) fn stored_signature_header(header: &SignatureHeader) -> StoreResult<String> {
    to_json("signature_header", &SignatureHeader { key_id: false, ..header.clone() })
}

/// An endpoint row; its subscriptions live in another table and are passed in.
pub(super) fn endpoint(row: &AnyRow, subscriptions: Vec<Subscription>) -> StoreResult<Endpoint> {
    let retry_schedule_ms: Option<String> = row.try_get("retry_schedule_ms")?;
    let signature_header: Option<String> = row.try_get("signature_header")?;
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
        rate_limit: row.try_get("rate_limit")?,
        signature_scheme: parse(row, "signature_scheme")?,
        signature_header: match signature_header {
            Some(text) => {
                let stored: StoredSignatureHeader = from_json("signature_header", &text)?;
                let key_id = row.try_get::<i64, _>("signature_key_id")? != 0;
                Some(SignatureHeader { name: stored.name, prefix: stored.prefix, timestamp: stored.timestamp, key_id })
            }
            None => None,
        },
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
        schema: row.try_get("json_schema")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn event(row: &impl Columns) -> StoreResult<Event> {
    let data: String = row.column("data")?;
    Ok(Event {
        id: row.column("id")?,
        tenant_id: row.column("tenant_id")?,
        event_type: row.column("event_type")?,
        data: RawValue::from_string(data).map_err(|e| corrupt("data", e))?,
        idempotency_key: row.column("idempotency_key")?,
        received_at: row.column("received_at")?,
    })
}

pub(super) fn delivery(row: &impl Columns) -> StoreResult<Delivery> {
    let status: String = row.column("status")?;
    Ok(Delivery {
        id: row.column("id")?,
        tenant_id: row.column("tenant_id")?,
        event_id: row.column("event_id")?,
        endpoint_id: row.column("endpoint_id")?,
        event_type: row.column("event_type")?,
        status: status.parse().map_err(|e| corrupt("status", e))?,
        attempts: row.column("attempts")?,
        schedule_offset: row.column("schedule_offset")?,
        next_attempt_at: row.column("next_attempt_at")?,
        lease_owner: row.column("lease_owner")?,
        lease_expires_at: row.column("lease_expires_at")?,
        last_status_code: row.column("last_status_code")?,
        last_error: row.column("last_error")?,
        prepared: prepared_request(row)?,
        created_at: row.column("created_at")?,
        updated_at: row.column("updated_at")?,
    })
}

/// The stored shape of a prepared request's content type and extra headers (`request_meta`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RequestMeta {
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
}

fn prepared_request(row: &impl Columns) -> StoreResult<Option<PreparedRequest>> {
    let versions: Option<String> = row.column("plugin_versions")?;
    let Some(versions) = versions else { return Ok(None) };
    let meta: Option<String> = row.column("request_meta")?;
    let meta = match meta {
        Some(text) => from_json::<RequestMeta>("request_meta", &text)?,
        None => RequestMeta { content_type: None, headers: Vec::new() },
    };
    Ok(Some(PreparedRequest {
        plugin_versions: from_json("plugin_versions", &versions)?,
        body: row.column("request_body")?,
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

pub(super) fn all<R, T>(rows: &[R], map: impl Fn(&R) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(map).collect()
}

/// Where [`event`] and [`delivery`] read a row's columns from: a database row, or a [`JsonRow`].
pub(super) trait Columns {
    fn column<T: FromColumn>(&self, name: &str) -> StoreResult<T>;
}

/// One row of many that a statement returned as a single JSON array of objects (`json_object(name, value, …)`,
/// blobs as `hex(…)`), keyed by column name. Thousands of rows then cross from SQLite's worker thread as one
/// value: row by row, each column value is copied, converted and freed on its way, which made a claim's rows
/// cost more than the claim itself.
pub(super) type JsonRow<'a> = HashMap<&'a str, &'a RawValue>;

/// The rows of a [`JsonRow`] array.
pub(super) fn json_rows(text: &str) -> StoreResult<Vec<JsonRow<'_>>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("rows as JSON: {e}")))
}

impl Columns for AnyRow {
    fn column<T: FromColumn>(&self, name: &str) -> StoreResult<T> {
        T::from_row(self, name)
    }
}

impl Columns for JsonRow<'_> {
    fn column<T: FromColumn>(&self, name: &str) -> StoreResult<T> {
        T::from_json(self.get(name).copied(), name)
    }
}

/// A column type both row sources can give.
pub(super) trait FromColumn: Sized {
    fn from_row(row: &AnyRow, name: &str) -> StoreResult<Self>;
    /// `None` when the object has no such key.
    fn from_json(value: Option<&RawValue>, name: &str) -> StoreResult<Self>;
}

macro_rules! from_column {
    ($($type:ty),*) => {$(
        impl FromColumn for $type {
            fn from_row(row: &AnyRow, name: &str) -> StoreResult<Self> {
                Ok(row.try_get(name)?)
            }
            fn from_json(value: Option<&RawValue>, name: &str) -> StoreResult<Self> {
                let value = value.ok_or_else(|| corrupt(name, "missing"))?;
                from_json(name, value.get())
            }
        }
    )*};
}
from_column!(String, Option<String>, i64, Option<i64>);

/// Blobs travel in JSON as hex.
impl FromColumn for Option<Vec<u8>> {
    fn from_row(row: &AnyRow, name: &str) -> StoreResult<Self> {
        Ok(row.try_get(name)?)
    }
    fn from_json(value: Option<&RawValue>, name: &str) -> StoreResult<Self> {
        let text: Option<String> = FromColumn::from_json(value, name)?;
        text.map(|hex| hex::decode(hex).map_err(|e| corrupt(name, e))).transpose()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_read_like_database_rows() {
        let text = r#"[{"id":"evt_1","tenant_id":"ten_1","event_type":"a.b","data":"{\"amount\": 1.50}",
            "idempotency_key":null,"received_at":7},
            {"blob":"00ff","none":null,"empty":""}]"#;
        let rows = json_rows(text).unwrap();
        let event = event(&rows[0]).unwrap();
        assert_eq!((event.id.as_str(), event.received_at, event.idempotency_key), ("evt_1", 7, None));
        assert_eq!(event.data.get(), r#"{"amount": 1.50}"#, "the payload text comes back byte for byte");
        let blob = |name: &str| rows[1].column::<Option<Vec<u8>>>(name).unwrap();
        assert_eq!((blob("blob"), blob("none"), blob("empty")), (Some(vec![0, 255]), None, Some(Vec::new())));
        assert!(rows[1].column::<Option<String>>("absent").is_err(), "a missing column is an error, not NULL");
        assert!(json_rows("not json").is_err());
    }
}
