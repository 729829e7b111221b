//! SQLite's claim in one round trip, for the same reason as [`sqlite_batch`](super::sqlite_batch): a claim
//! written statement by statement (lease, then load the deliveries' events, endpoints, subscriptions and
//! secrets) took six round trips to SQLite's worker thread, and its id lists one numbered placeholder per id, in
//! a statement text that changed with every claim size and so was prepared anew each time. Under a backlog a
//! claim of 500 deliveries held the one write connection for 25-45 ms, and every group commit waited behind it.
//!
//! Here the claim is one script: the ids it leases go to a temporary table (connection-local, never synced)
//! that the later statements read, so each statement's text is fixed and stays prepared. The deliveries and
//! their events, hundreds of rows, come back as one JSON array each ([`rows::JsonRow`]); the endpoints, their
//! subscriptions and secrets, a few rows, as rows. They become jobs as the statement-by-statement claim's do.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::dialect::{script_statements, WriteConnection};
use super::dispatch::{claimable, jobs_from, EXPIRED, WAITING};
use super::endpoint_secrets::signing_at;
use super::rows::{self, DELIVERY_COLUMNS, ENDPOINT_COLUMNS, EVENT_COLUMNS, SECRET_COLUMNS, SUBSCRIPTION_COLUMNS};
use crate::model::{Millis, Subscription};
use crate::store::{DispatchJob, StoreError, StoreResult};

/// Created on the write connection when it opens (see `Dialect::open_writer`); emptied by every claim.
pub(super) const CLAIM_TABLE: &str = "CREATE TEMP TABLE claim (id TEXT PRIMARY KEY)";

script_statements! {
    /// The claim's statements, in order.
    {
        Begin,
        Clear,
        /// As the statement-by-statement claim, expired leases first, then what waits ([`EXPIRED`], [`WAITING`]).
        Expired,
        Waiting,
        Lease,
        Deliveries,
        Events,
        Endpoints,
        Subscriptions,
        Secrets,
        Commit,
    }
}

use Statement::*;
const STATEMENTS: usize = ALL.len();

impl Statement {
    /// `$1` owner, `$2` lease until, `$3` now, `$4` limit.
    fn sql(self) -> String {
        let endpoint_ids = "SELECT DISTINCT d.endpoint_id FROM deliveries d WHERE d.id IN (SELECT id FROM temp.claim)";
        match self {
            Begin => "BEGIN".into(),
            Clear => "DELETE FROM temp.claim".into(),
            Expired => format!("INSERT INTO temp.claim (id) {}", claimable(EXPIRED, "$4")),
            // A negative LIMIT means none in SQLite, hence max(…, 0).
            Waiting => format!(
                "INSERT INTO temp.claim (id) {}",
                claimable(WAITING, "max($4 - (SELECT COUNT(*) FROM temp.claim), 0)")
            ),
            Lease => "UPDATE deliveries SET status = 'delivering', lease_owner = $1, lease_expires_at = $2, \
                      updated_at = $3 WHERE id IN (SELECT id FROM temp.claim)"
                .into(),
            // Many rows, each as one object of a JSON array (see `rows::JsonRow`).
            Deliveries => format!(
                "SELECT json_group_array({}) FROM deliveries WHERE id IN (SELECT id FROM temp.claim)",
                json_object(DELIVERY_COLUMNS)
            ),
            Events => format!(
                "SELECT json_group_array({}) FROM events WHERE id IN \
                 (SELECT d.event_id FROM deliveries d WHERE d.id IN (SELECT id FROM temp.claim))",
                json_object(EVENT_COLUMNS)
            ),
            Endpoints => format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id IN ({endpoint_ids})"),
            Subscriptions => format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE endpoint_id IN ({endpoint_ids}) \
                 ORDER BY endpoint_id, position"
            ),
            Secrets => format!(
                "SELECT {SECRET_COLUMNS} FROM endpoint_secrets WHERE endpoint_id IN ({endpoint_ids}) AND {} \
                 ORDER BY endpoint_id, version DESC",
                signing_at("$3")
            ),
            Commit => "COMMIT".into(),
        }
    }
}

/// `json_object('a', a, 'b', b, …)` of the comma-separated `columns`; the blob column `request_body` as hex
/// (JSON has no blobs), NULL staying NULL.
fn json_object(columns: &str) -> String {
    let pairs: Vec<String> = columns
        .split(',')
        .map(str::trim)
        .map(|column| match column {
            "request_body" => format!("'{column}', iif({column} IS NULL, NULL, hex({column}))"),
            _ => format!("'{column}', {column}"),
        })
        .collect();
    format!("json_object({})", pairs.join(", "))
}

/// Built once: the same text every time, so the connection's statement cache keeps it prepared.
static SCRIPT: LazyLock<String> =
    LazyLock::new(|| ALL.iter().map(|statement| statement.sql()).collect::<Vec<_>>().join(";\n"));

/// Same semantics as `dispatch::claim_due`: leases up to `limit` due deliveries of active endpoints to `owner`
/// until `lease_until`, expired leases first, and returns them with what an attempt needs.
pub(super) async fn claim_due(
    connection: &mut WriteConnection<'_>,
    owner: &str,
    now: Millis,
    lease_until: Millis,
    limit: i64,
) -> StoreResult<Vec<DispatchJob>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let query = sqlx::query(SCRIPT.as_str()).bind(owner).bind(lease_until).bind(now).bind(limit);
    let returned = connection.run_script(query, STATEMENTS, "claim").await?;
    let mut subscriptions: HashMap<String, Vec<Subscription>> = HashMap::new();
    for row in &returned[Subscriptions as usize] {
        let (endpoint_id, subscription) = rows::subscription(row)?;
        subscriptions.entry(endpoint_id).or_default().push(subscription);
    }
    let endpoints = returned[Endpoints as usize]
        .iter()
        .map(|row| {
            let id: String = sqlx::Row::try_get(row, "id")?;
            rows::endpoint(row, subscriptions.remove(&id).unwrap_or_default())
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let json_array = |statement: Statement| -> StoreResult<String> {
        match &returned[statement as usize][..] {
            [row] => Ok(sqlx::Row::try_get(row, 0)?),
            rows => Err(StoreError::Corrupt(format!("the claim returned {} rows for one", rows.len()))),
        }
    };
    let (deliveries, events) = (json_array(Deliveries)?, json_array(Events)?);
    jobs_from(
        rows::all(&rows::json_rows(&deliveries)?, rows::delivery)?,
        rows::all(&rows::json_rows(&events)?, rows::event)?,
        endpoints,
        rows::all(&returned[Secrets as usize], rows::secret)?,
    )
}
