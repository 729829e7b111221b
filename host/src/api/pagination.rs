//! Query strings and pages. Parameters are read one by one by name, so every error (a bad `limit`, an unknown
//! `status`, a misspelt parameter) is a JSON 400 naming the parameter, which axum's `Query` rejection is not.

use std::ops::RangeInclusive;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Serialize;

use super::validate;
use crate::error::{ApiError, ApiResult};
use crate::model::Millis;
use crate::store::Page;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 1000;
const MAX_CURSOR_LEN: usize = 200;

/// The query string of a request; handlers take the parameters they understand and then call [`Query::finish`],
/// which rejects anything left over.
#[derive(Debug, Default)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> ApiResult<Self> {
        Ok(Self::parse(parts.uri.query().unwrap_or_default()))
    }
}

impl Query {
    pub fn parse(query: &str) -> Self {
        Self { params: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect() }
    }

    /// The value of `name`; an empty value (`?status=`) counts as absent, a repeated parameter is an error.
    pub fn take(&mut self, name: &str) -> ApiResult<Option<String>> {
        let mut values = Vec::new();
        self.params.retain(|(key, value)| {
            if key == name {
                values.push(value.clone());
                false
            } else {
                true
            }
        });
        if values.len() > 1 {
            return Err(ApiError::invalid(name, "is given more than once"));
        }
        Ok(values.pop().filter(|v| !v.is_empty()))
    }

    pub fn parsed<T: FromStr<Err = String>>(&mut self, name: &str) -> ApiResult<Option<T>> {
        self.take(name)?.map(|v| v.parse().map_err(|e: String| ApiError::invalid(name, e))).transpose()
    }

    /// An event type to filter by (see [`validate::event_type_filter`]).
    pub fn event_type(&mut self, name: &str) -> ApiResult<Option<String>> {
        let value = self.take(name)?;
        if let Some(event_type) = &value {
            validate::event_type_filter(name, event_type)?;
        }
        Ok(value)
    }

    /// An RFC 3339 time as Unix milliseconds.
    pub fn time(&mut self, name: &str) -> ApiResult<Option<Millis>> {
        let Some(text) = self.take(name)? else { return Ok(None) };
        time_field(name, &text).map(Some)
    }

    /// An integer in `range`, or `default` when absent.
    pub fn integer(&mut self, name: &str, range: RangeInclusive<i64>, default: i64) -> ApiResult<i64> {
        let Some(text) = self.take(name)? else { return Ok(default) };
        // Digits only (and a minus sign, refused by the range): Rust's parse also takes a leading `+`.
        let digits = text.strip_prefix('-').unwrap_or(&text);
        let number = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse::<i64>());
        number.and_then(Result::ok).filter(|n| range.contains(n)).ok_or_else(|| {
            ApiError::invalid(name, format!("must be an integer from {} to {}", range.start(), range.end()))
        })
    }

    /// `limit` (1–1000, default 50) and `cursor`.
    pub fn page(&mut self) -> ApiResult<PageParams> {
        let limit = self.integer("limit", 1..=MAX_LIMIT, DEFAULT_LIMIT)?;
        let cursor = self.take("cursor")?;
        if cursor.as_ref().is_some_and(|c| c.len() > MAX_CURSOR_LEN) {
            return Err(ApiError::invalid("cursor", "is not a cursor this API returned"));
        }
        Ok(PageParams { limit, cursor })
    }

    pub fn finish(self) -> ApiResult<()> {
        match self.params.into_iter().next() {
            Some((name, _)) => Err(ApiError::invalid(name, "is not a parameter of this route")),
            None => Ok(()),
        }
    }
}

/// A time a request gives in field `name`, in a query or a body: a window's bound (a `since`, inclusive, or an
/// `until`, exclusive). Times are stored in whole milliseconds, so a finer one is rounded up: records of the
/// millisecond it falls in lie before it, and so outside a window from it and inside one up to it.
pub fn time_field(name: &str, text: &str) -> ApiResult<Millis> {
    parse_time(text).ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 time such as 2026-01-31T12:00:00Z"))
}

fn parse_time(text: &str) -> Option<Millis> {
    let parse = |t: &str| {
        let t = chrono::DateTime::parse_from_rfc3339(t).ok()?;
        Some(t.timestamp_millis() + Millis::from(t.timestamp_subsec_nanos() % 1_000_000 != 0))
    };
    // An unencoded `+01:00` offset arrives as ` 01:00` after form decoding; give it back its plus sign.
    parse(text).or_else(|| {
        let at = text.rfind(' ')?;
        parse(&format!("{}+{}", &text[..at], &text[at + 1..]))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageParams {
    pub limit: i64,
    pub cursor: Option<String>,
}

/// A page of results: `{"data": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize)]
pub struct PageOf<V> {
    pub data: Vec<V>,
    pub next_cursor: Option<String>,
}

impl PageParams {
    /// What to ask the store for: one row more than the client wants, to learn whether another page exists
    /// without handing out a cursor to an empty page.
    pub fn store_page(&self) -> Page {
        Page { cursor: self.cursor.clone(), limit: self.limit + 1 }
    }

    /// Trims the store's rows to the page and renders them; `key` gives the cursor of a row.
    pub fn respond<T, V>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> &str, view: impl FnMut(T) -> V) -> PageOf<V> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more { rows.last().map(|row| key(row).to_string()) } else { None };
        PageOf { data: rows.into_iter().map(view).collect(), next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeliveryStatus;

    fn field<T: std::fmt::Debug>(result: ApiResult<T>) -> String {
        match result {
            Err(ApiError::Invalid { field: Some(field), .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn limit_defaults_and_bounds() {
        assert_eq!(Query::parse("").page().unwrap(), PageParams { limit: 50, cursor: None });
        assert_eq!(
            Query::parse("limit=1000&cursor=ep_1").page().unwrap(),
            PageParams { limit: 1000, cursor: Some("ep_1".into()) }
        );
        assert_eq!(Query::parse("limit=&cursor=").page().unwrap(), PageParams { limit: 50, cursor: None });
        for bad in
            ["limit=0", "limit=1001", "limit=ten", "limit=-1", "limit=1&limit=2", "limit=+5", "limit=-", "limit=5.0"]
        {
            assert_eq!(field(Query::parse(bad).page()), "limit", "{bad}");
        }
        assert_eq!(field(Query::parse(&format!("cursor={}", "c".repeat(201))).page()), "cursor");
    }

    #[test]
    fn leftover_parameters_are_rejected_by_name() {
        let mut query = Query::parse("limit=5&staus=dead");
        query.page().unwrap();
        assert_eq!(field(query.finish()), "staus");
        let mut query = Query::parse("status=dead");
        assert_eq!(query.parsed::<DeliveryStatus>("status").unwrap(), Some(DeliveryStatus::Dead));
        query.finish().unwrap();
    }

    #[test]
    fn enums_and_times_name_the_parameter() {
        assert_eq!(field(Query::parse("status=lost").parsed::<DeliveryStatus>("status")), "status");
        assert_eq!(field(Query::parse("since=yesterday").time("since")), "since");
        assert_eq!(Query::parse("since=2023-11-14T22:13:20.123Z").time("since").unwrap(), Some(1_700_000_000_123));
        // `+` is a space in a query string unless percent-encoded; both spellings work.
        let hour = 3_600_000;
        assert_eq!(Query::parse("until=2023-11-14T23:13:20.123+01:00").time("until").unwrap(), Some(1_700_000_000_123));
        assert_eq!(
            Query::parse("until=2023-11-14T23:13:20.123%2B01:00").time("until").unwrap(),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            Query::parse("until=2023-11-14T22:13:20.123-01:00").time("until").unwrap(),
            Some(1_700_000_000_123 + hour)
        );
        // A bound within a millisecond rounds up, before 1970 too: what was stored at .122 lies before .122999.
        for (text, millis) in [
            ("2023-11-14T22:13:20.122999Z", 1_700_000_000_123),
            ("2023-11-14T22:13:20.123000001Z", 1_700_000_000_124),
            ("2023-11-14T22:13:20.123000Z", 1_700_000_000_123),
            ("1969-12-31T23:59:59.9995Z", 0),
        ] {
            assert_eq!(Query::parse(&format!("since={text}")).time("since").unwrap(), Some(millis), "{text}");
        }
    }

    #[test]
    fn pages_ask_for_one_more_and_cursor_only_when_more_exist() {
        let params = PageParams { limit: 2, cursor: None };
        assert_eq!(params.store_page().limit, 3);
        let page = params.respond(vec!["c", "b", "a"], |s| s, |s| s.to_uppercase());
        assert_eq!(page.data, ["C", "B"]);
        assert_eq!(page.next_cursor.as_deref(), Some("b"));
        let page = params.respond(vec!["b", "a"], |s| s, |s| s);
        assert_eq!(page.next_cursor, None);
    }
}
