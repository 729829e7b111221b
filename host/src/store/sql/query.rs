//! SQL assembled at run time (optional filters, keyset pages, `IN (…)` lists) with its numbered placeholders and
//! their values kept in step, so no method counts `$N` by hand.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use crate::store::{Page, StoreError, StoreResult};

/// Longest `IN (…)` list or multi-row `VALUES` sent in one statement. Both databases accept far more (SQLite
/// 32,766 variables, PostgreSQL 65,535), this keeps statements small and their plans cacheable.
pub(super) const MAX_LIST: usize = 500;

/// A value the `Any` driver binds the same way on both databases.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl From<Option<String>> for Value {
    fn from(value: Option<String>) -> Self {
        Value::Text(value)
    }
}

impl From<Option<Vec<u8>>> for Value {
    fn from(value: Option<Vec<u8>>) -> Self {
        Value::Bytes(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(Some(value))
    }
}

impl From<Option<i64>> for Value {
    fn from(value: Option<i64>) -> Self {
        Value::Int(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(Some(value.to_string()))
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Self {
        Value::Text(Some(value.clone()))
    }
}

impl From<Option<&str>> for Value {
    fn from(value: Option<&str>) -> Self {
        Value::Text(value.map(str::to_string))
    }
}

/// Keys from `start` (inclusive) to `end` (exclusive), either open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Order {
    /// Newest first: ids are time-ordered, so `id < cursor` continues after the previous page.
    Descending,
    Ascending,
}

#[derive(Debug, Default)]
pub(super) struct SqlBuilder {
    sql: String,
    values: Vec<Value>,
    has_where: bool,
}

impl SqlBuilder {
    pub(super) fn new(sql: impl Into<String>) -> Self {
        SqlBuilder { sql: sql.into(), ..Default::default() }
    }

    /// Records `value` and returns its placeholder, for SQL that uses one value in several places.
    pub(super) fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    pub(super) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    pub(super) fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        let placeholder = self.bind(value);
        self.sql.push_str(&placeholder);
        self
    }

    /// Starts the next condition with ` WHERE ` or ` AND `.
    pub(super) fn condition(&mut self) -> &mut Self {
        self.sql.push_str(if self.has_where { " AND " } else { " WHERE " });
        self.has_where = true;
        self
    }

    /// `column op value`.
    pub(super) fn compare(&mut self, column: &str, op: &str, value: impl Into<Value>) -> &mut Self {
        self.condition().push(column).push(" ").push(op).push(" ").push_bind(value)
    }

    /// `column op value` when the filter is set; nothing otherwise.
    pub(super) fn compare_if<V: Into<Value>>(&mut self, column: &str, op: &str, value: Option<V>) -> &mut Self {
        if let Some(value) = value {
            self.compare(column, op, value);
        }
        self
    }

    /// `column IN (…)`. An empty list matches nothing (`IN (NULL)`), as PostgreSQL rejects `IN ()`.
    pub(super) fn in_list<V: Into<Value>>(&mut self, column: &str, values: impl IntoIterator<Item = V>) -> &mut Self {
        self.condition().push(column).push(" IN (");
        let mut empty = true;
        for value in values {
            if !empty {
                self.push(", ");
            }
            self.push_bind(value);
            empty = false;
        }
        if empty {
            self.push("NULL");
        }
        self.push(")")
    }

    /// Continues after `page.cursor` on `column`, ordered and limited. Must come after every condition.
    pub(super) fn keyset_page(&mut self, column: &str, order: Order, page: &Page) -> &mut Self {
        self.keyset_page_within(column, order, page, &KeyRange::default())
    }

    /// [`Self::keyset_page`] among the keys in `range`. The cursor and the range's bound on the same side become one
    /// condition, the tighter: given two, SQLite seeks the index from either, which may be the one that leaves
    /// every key between them to walk.
    pub(super) fn keyset_page_within(
        &mut self,
        column: &str,
        order: Order,
        page: &Page,
        range: &KeyRange,
    ) -> &mut Self {
        let cursor = page.cursor.as_deref();
        let direction = match order {
            Order::Descending => {
                self.compare_if(column, ">=", range.start.as_deref());
                match (cursor, range.end.as_deref()) {
                    (Some(cursor), Some(end)) if end < cursor => self.compare(column, "<", end),
                    (Some(cursor), _) => self.compare(column, "<", cursor),
                    (None, end) => self.compare_if(column, "<", end),
                };
                "DESC"
            }
            Order::Ascending => {
                match (cursor, range.start.as_deref()) {
                    (Some(cursor), Some(start)) if start > cursor => self.compare(column, ">=", start),
                    (Some(cursor), _) => self.compare(column, ">", cursor),
                    (None, start) => self.compare_if(column, ">=", start),
                };
                self.compare_if(column, "<", range.end.as_deref());
                "ASC"
            }
        };
        self.push(&format!(" ORDER BY {column} {direction} LIMIT ")).push_bind(page.limit.max(0))
    }

    /// The same statement under `EXPLAIN QUERY PLAN` (SQLite), for tests of which indexes it uses.
    #[cfg(test)]
    pub(super) fn explained(&self) -> Self {
        self.prefixed("EXPLAIN QUERY PLAN")
    }

    /// The same statement after `prefix` (PostgreSQL's `EXPLAIN`, say), with the same values.
    #[cfg(test)]
    pub(super) fn prefixed(&self, prefix: &str) -> Self {
        SqlBuilder { sql: format!("{prefix} {}", self.sql), values: self.values.clone(), ..Default::default() }
    }

    pub(super) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut query = sqlx::query(&self.sql);
        for value in &self.values {
            query = match value {
                Value::Int(int) => query.bind(*int),
                Value::Text(text) => query.bind(text.as_deref()),
                Value::Bytes(bytes) => query.bind(bytes.clone()),
            };
        }
        query
    }
}

/// The JSON array a [`Dialect::json_rows`](super::Dialect::json_rows) statement binds: one array per row, its
/// values in the statement's column order (serialise blobs as hex).
pub(super) fn json_rows<R: serde::Serialize>(rows: &[R]) -> StoreResult<String> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(format!("cannot encode rows as JSON: {e}")))
}

/// Payloads laid end to end, bound as one blob beside the JSON rows that say where each one lies
/// ([`Dialect::payload_at`](super::Dialect::payload_at) takes one back out). Inside the JSON rows a payload is
/// escaped here, then parsed and unescaped again by the database, byte by byte: with payloads of a few KiB, most
/// of what a publish costs the database.
pub(super) struct Payloads(Vec<u8>);

impl Payloads {
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Payloads(Vec::with_capacity(bytes))
    }

    /// Appends `payload` and returns where it lies: its first byte counted from 1 (as SQL's `substr` and
    /// `substring` count), and its length in bytes.
    pub(super) fn push(&mut self, payload: &str) -> (i64, i64) {
        let start = self.0.len() as i64 + 1;
        self.0.extend_from_slice(payload.as_bytes());
        (start, payload.len() as i64)
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`] with `message`; other errors pass through.
pub(super) fn conflict_on_unique(message: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| match error.as_database_error() {
        Some(db_error) if db_error.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Database(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_lie_end_to_end_counted_from_one_in_bytes() {
        let mut payloads = Payloads::with_capacity(0);
        assert_eq!(payloads.push("{}"), (1, 2));
        assert_eq!(payloads.push(r#"{"é":1}"#), (3, 8), "é is two bytes");
        assert_eq!(payloads.push(""), (11, 0));
        assert_eq!(payloads.into_bytes(), r#"{}{"é":1}"#.as_bytes());
    }

    #[test]
    fn placeholders_follow_the_values_and_filters_are_optional() {
        let mut sql = SqlBuilder::new("SELECT id FROM deliveries");
        sql.compare("tenant_id", "=", "ten_1")
            .compare_if("status", "=", None::<&str>)
            .compare_if("created_at", ">=", Some(5))
            .in_list("endpoint_id", ["ep_1", "ep_2"])
            .keyset_page("id", Order::Descending, &Page { cursor: Some("dlv_9".into()), limit: 10 });
        assert_eq!(
            sql.sql,
            "SELECT id FROM deliveries WHERE tenant_id = $1 AND created_at >= $2 AND endpoint_id IN ($3, $4) \
             AND id < $5 ORDER BY id DESC LIMIT $6"
        );
        assert_eq!(sql.values.len(), 6);
    }

    /// Each side of the page gets one condition: the cursor or the range's bound, whichever is tighter.
    #[test]
    fn a_page_within_a_range_keeps_the_tighter_bound_on_each_side() {
        let range = KeyRange { start: Some("k3".into()), end: Some("k7".into()) };
        let page = |cursor: Option<&str>| Page { cursor: cursor.map(str::to_string), limit: 10 };
        let cases = [
            (Order::Descending, None, "id >= $1 AND id < $2 ORDER BY id DESC", ["k3", "k7"]),
            (Order::Descending, Some("k9"), "id >= $1 AND id < $2 ORDER BY id DESC", ["k3", "k7"]),
            (Order::Descending, Some("k5"), "id >= $1 AND id < $2 ORDER BY id DESC", ["k3", "k5"]),
            (Order::Ascending, None, "id >= $1 AND id < $2 ORDER BY id ASC", ["k3", "k7"]),
            (Order::Ascending, Some("k1"), "id >= $1 AND id < $2 ORDER BY id ASC", ["k3", "k7"]),
            (Order::Ascending, Some("k5"), "id > $1 AND id < $2 ORDER BY id ASC", ["k5", "k7"]),
        ];
        for (order, cursor, conditions, bounds) in cases {
            let mut sql = SqlBuilder::new("SELECT id FROM t");
            sql.keyset_page_within("id", order, &page(cursor), &range);
            assert_eq!(sql.sql, format!("SELECT id FROM t WHERE {conditions} LIMIT $3"), "{order:?} after {cursor:?}");
            let texts: Vec<&str> = sql.values[..2]
                .iter()
                .map(|value| match value {
                    Value::Text(Some(text)) => text.as_str(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(texts, bounds, "{order:?} after {cursor:?}");
        }
        let mut open = SqlBuilder::new("SELECT id FROM t");
        open.keyset_page_within("id", Order::Descending, &page(Some("k5")), &KeyRange::default());
        assert_eq!(open.sql, "SELECT id FROM t WHERE id < $1 ORDER BY id DESC LIMIT $2");
    }

    #[test]
    fn empty_in_list_matches_nothing_and_first_page_has_no_cursor() {
        let mut sql = SqlBuilder::new("SELECT name FROM event_types");
        sql.in_list("name", Vec::<&str>::new()).keyset_page(
            "name",
            Order::Ascending,
            &Page { cursor: None, limit: -3 },
        );
        assert_eq!(sql.sql, "SELECT name FROM event_types WHERE name IN (NULL) ORDER BY name ASC LIMIT $1");
        assert!(matches!(sql.values[..], [Value::Int(Some(0))]));
    }
}
