//! Deliveries and dead letters as CSV files, for a spreadsheet or another team: every row a filter selects,
//! streamed a page at a time, not one page of the listing.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use serde::Serialize;

use super::auth::Caller;
use super::deliveries::common_filter;
use super::pagination::Query;
use crate::error::{ApiError, ApiResult};
use crate::model::{rfc3339, Delivery, DeliveryStatus};
use crate::store::{DeliveryFilter, Page, Store};
use crate::AppState;

/// Rows read per query, and so written per chunk of the response.
const ROWS_PER_READ: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new().route("/deliveries/export", get(deliveries)).route("/dead-letters/export", get(dead_letters))
}

/// `GET /deliveries/export`: the filters of `GET /deliveries`, without `limit` and `cursor`.
async fn deliveries(State(state): State<AppState>, caller: Caller, mut query: Query) -> ApiResult<Response> {
    let filter = DeliveryFilter {
        event_id: query.take("event_id")?,
        status: query.parsed("status")?,
        ..common_filter(&mut query)?
    };
    query.finish()?;
    export(state, caller.tenant_id, filter, "deliveries").await
}

/// `GET /dead-letters/export`: the filters of `GET /dead-letters`, without `limit` and `cursor`.
async fn dead_letters(State(state): State<AppState>, caller: Caller, mut query: Query) -> ApiResult<Response> {
    let filter = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        event_id: query.take("event_id")?,
        ..common_filter(&mut query)?
    };
    query.finish()?;
    export(state, caller.tenant_id, filter, "dead-letters").await
}

/// One line of the file: a delivery as `GET /deliveries` shows it, less its plugin versions.
#[derive(Debug, Serialize)]
struct Line {
    id: String,
    event_id: String,
    event_type: String,
    endpoint_id: String,
    status: DeliveryStatus,
    attempts: i64,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<Delivery> for Line {
    fn from(d: Delivery) -> Self {
        Line {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            endpoint_id: d.endpoint_id,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error.map(inert_in_spreadsheets),
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

/// `last_error` quotes what a receiver answered, and a spreadsheet opening the file would run a cell starting
/// with `=`, `+`, `-` or `@` as a formula (OWASP's "CSV injection"): such text gets a leading `'`, which
/// spreadsheets show as text and do not display.
fn inert_in_spreadsheets(text: String) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

/// What the stream has left to read.
struct Remaining {
    store: std::sync::Arc<dyn Store>,
    tenant_id: String,
    filter: DeliveryFilter,
    /// None once the last page has been read.
    next: Option<Page>,
}

async fn export(state: AppState, tenant_id: String, filter: DeliveryFilter, name: &str) -> ApiResult<Response> {
    // The first page is read before answering, so that a database that cannot answer gets its status and JSON
    // error rather than a `200` with a cut-off file. A failure later ends the response early instead (the client
    // sees the transfer fail, not a shorter file that looks complete).
    let mut remaining = Remaining {
        store: state.store.clone(),
        tenant_id,
        filter,
        next: Some(Page { cursor: None, limit: ROWS_PER_READ }),
    };
    let first = csv_chunk(read_page(&mut remaining).await?, true)?;
    let rest = stream::try_unfold(remaining, |mut remaining| async move {
        if remaining.next.is_none() {
            return Ok(None);
        }
        let rows = read_page(&mut remaining).await.map_err(|e| {
            tracing::warn!(tenant_id = %remaining.tenant_id, error = %e, "a CSV export stopped part-way");
            std::io::Error::other("the export could not read on")
        })?;
        let chunk = csv_chunk(rows, false).map_err(|_| std::io::Error::other("a row could not be written"))?;
        Ok::<_, std::io::Error>(Some((chunk, remaining)))
    });
    let body = stream::once(async move { Ok::<_, std::io::Error>(first) });
    let filename = format!("{name}-{}.csv", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(futures_util::StreamExt::chain(body, rest)),
    )
        .into_response())
}

/// The next page of rows, newest first; marks the stream finished after the last.
async fn read_page(remaining: &mut Remaining) -> ApiResult<Vec<Delivery>> {
    let Some(page) = remaining.next.take() else { return Ok(Vec::new()) };
    let rows = remaining.store.list_deliveries(&remaining.tenant_id, &remaining.filter, &page).await?;
    if rows.len() as i64 == page.limit {
        remaining.next = Some(Page { cursor: rows.last().map(|d| d.id.clone()), limit: page.limit });
    }
    Ok(rows)
}

fn csv_chunk(rows: Vec<Delivery>, with_header: bool) -> ApiResult<Bytes> {
    // RFC 4180's line ends, which spreadsheets expect of a `.csv`.
    let mut writer =
        csv::WriterBuilder::new().has_headers(with_header).terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    if rows.is_empty() && with_header {
        // Serde writes the header with the first row; an empty export still names its columns.
        writer.write_record(LINE_COLUMNS).map_err(ApiError::internal)?;
    }
    for row in rows {
        writer.serialize(Line::from(row)).map_err(ApiError::internal)?;
    }
    Ok(Bytes::from(writer.into_inner().map_err(ApiError::internal)?))
}

/// [`Line`]'s fields, in order.
const LINE_COLUMNS: [&str; 11] = [
    "id",
    "event_id",
    "event_type",
    "endpoint_id",
    "status",
    "attempts",
    "last_status_code",
    "last_error",
    "next_attempt_at",
    "created_at",
    "updated_at",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_a_spreadsheet_would_run_is_made_inert_and_other_text_kept() {
        for formula in ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(inert_in_spreadsheets(formula.into()), format!("'{formula}"));
        }
        for plain in ["HTTP 500: upstream = down", "timed out after 10s", "", "'quoted"] {
            assert_eq!(inert_in_spreadsheets(plain.into()), plain);
        }
    }

    #[test]
    fn an_empty_export_names_its_columns_and_a_row_fills_them_in_order() {
        let empty = csv_chunk(Vec::new(), true).unwrap();
        assert_eq!(std::str::from_utf8(&empty).unwrap(), format!("{}\r\n", LINE_COLUMNS.join(",")));
        let delivery = Delivery {
            id: "dlv_1".into(),
            tenant_id: "ten_1".into(),
            event_id: "evt_1".into(),
            endpoint_id: "ep_1".into(),
            event_type: "order.created".into(),
            status: DeliveryStatus::Dead,
            attempts: 3,
            schedule_offset: 0,
            next_attempt_at: None,
            lease_owner: None,
            lease_expires_at: None,
            last_status_code: Some(500),
            last_error: Some("HTTP 500: \"down\",\nsee logs".into()),
            prepared: None,
            created_at: 0,
            updated_at: 1_000,
        };
        let written = csv_chunk(vec![delivery], true).unwrap();
        let mut reader = csv::Reader::from_reader(written.as_ref());
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), LINE_COLUMNS);
        let row: Vec<String> = reader.records().next().unwrap().unwrap().iter().map(str::to_string).collect();
        assert_eq!(
            row,
            [
                "dlv_1",
                "evt_1",
                "order.created",
                "ep_1",
                "dead",
                "3",
                "500",
                "HTTP 500: \"down\",\nsee logs",
                "",
                "1970-01-01T00:00:00.000Z",
                "1970-01-01T00:00:01.000Z"
            ]
        );
        let later = csv_chunk(Vec::new(), false).unwrap();
        assert!(later.is_empty(), "only the first chunk has the header");
    }
}
