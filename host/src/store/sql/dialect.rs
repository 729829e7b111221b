//! What differs between SQLite and PostgreSQL: connection set-up, migrations and row locking. Every other query
//! is shared.

use std::ops::{Deref, DerefMut};

use futures_util::TryStreamExt;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Either, Executor};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::store::{StoreError, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// How a [`Dialect::json_rows`] column is encoded in JSON: text as a string, integers as numbers, binary data
/// as a hex string; NULL as `null` in any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Column {
    Text,
    Int,
    Blob,
}

/// Applied to every SQLite connection. `busy_timeout` comes first so the switch to WAL waits for another process
/// (a backup, the sqlite3 shell) instead of failing. `synchronous = FULL` because a 202 Accepted promises the
/// event is on disk: WAL's usual NORMAL can lose the last commits on power loss.
/// `wal_autocheckpoint = 0`: the writer never checkpoints itself; see [`checkpoint`](super::checkpoint).
/// `cache_size`: 16 MiB of pages instead of 2, so the indexes every commit touches stay in SQLite's cache rather
/// than being read back from the OS.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA wal_autocheckpoint = 0",
    "PRAGMA cache_size = -16384",
    // Once the WAL starts over, a file a burst grew past this is cut back to it; below it the file is reused
    // as it is, so commits overwrite blocks the file already has instead of extending it.
    "PRAGMA journal_size_limit = 67108864",
    // Temporary tables (the claim's) in memory rather than in a file of their own.
    "PRAGMA temp_store = MEMORY",
];

/// The connection that checkpoints the WAL into the database file; FULL so the file is synced before the WAL is
/// reused.
pub(super) const SQLITE_CHECKPOINT_PRAGMAS: &[&str] = &["PRAGMA busy_timeout = 5000", "PRAGMA synchronous = FULL"];

/// Applied to the SQLite connections that only read. `query_only` makes a write through one an error instead of
/// a second writer racing the first (see `open_pool`).
const SQLITE_READER_PRAGMAS: &[&str] = &["PRAGMA busy_timeout = 5000", "PRAGMA query_only = ON"];

/// SQLite connections for reads. WAL lets them read committed data while the writer commits, so an API read (or the
/// dispatcher's) never queues behind a write transaction and its fsync.
const SQLITE_READERS: u32 = 4;

const POSTGRES_MAX_CONNECTIONS: u32 = 10;

impl Dialect {
    pub fn from_url(url: &str) -> StoreResult<Dialect> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(StoreError::Database(sqlx::Error::Configuration(
                "database URL must start with sqlite:, postgres:// or postgresql://".into(),
            )))
        }
    }

    pub(super) async fn open_writer(self, url: &str) -> StoreResult<WritePath> {
        Ok(match self {
            // One connection. The Any driver opens transactions with a plain deferred `BEGIN`, so a transaction
            // that reads and then writes only asks for the write lock at its first write; if another connection
            // committed in between, its snapshot is stale and SQLite fails the write with SQLITE_BUSY at once
            // (busy_timeout cannot help). SQLite admits one writer at a time anyway, so a single connection
            // costs little and makes every transaction safe. It is held open rather than pooled: a pool pings a
            // connection on every acquire and release, two round trips to SQLite's worker thread per
            // transaction on the busiest path there is.
            Dialect::Sqlite => {
                super::wal_vfs::register()
                    .map_err(|reason| StoreError::Unavailable(format!("SQLite WAL VFS: {reason}")))?;
                let mut connection = AnyConnection::connect(&sqlite_writer_url(url)).await?;
                for pragma in SQLITE_PRAGMAS {
                    connection.execute(*pragma).await?;
                }
                connection.execute(super::sqlite_claim::CLAIM_TABLE).await?;
                WritePath::dedicated(connection)
            }
            Dialect::Postgres => {
                WritePath::Pool(AnyPoolOptions::new().max_connections(POSTGRES_MAX_CONNECTIONS).connect(url).await?)
            }
        })
    }

    /// The pool for statements that only read. SQLite: separate read-only connections (open it after `open_pool`,
    /// which creates the file and switches it to WAL). PostgreSQL: the same pool, as every connection can read.
    pub(super) async fn open_reader(self, url: &str, writer: &WritePath) -> StoreResult<AnyPool> {
        match (self, writer) {
            // An in-memory database exists only on its own connection: others would open an empty one.
            (Dialect::Sqlite, _) if is_in_memory(url) => Err(StoreError::Database(sqlx::Error::Configuration(
                "an in-memory SQLite database cannot be shared by connections; use a file".into(),
            ))),
            (_, WritePath::Pool(pool)) => Ok(pool.clone()),
            (Dialect::Sqlite, _) => Ok(AnyPoolOptions::new()
                .max_connections(SQLITE_READERS)
                // A local file does not drop connections; a test before each read would cost a round trip.
                .test_before_acquire(false)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        for pragma in SQLITE_READER_PRAGMAS {
                            connection.execute(*pragma).await?;
                        }
                        Ok(())
                    })
                })
                .connect(url)
                .await?),
            (Dialect::Postgres, WritePath::Dedicated(_)) => {
                Err(StoreError::Unavailable("PostgreSQL writes go through a pool".into()))
            }
        }
    }

    /// Appended to the SELECT that picks deliveries to claim. On PostgreSQL several nodes claim at once: each
    /// locks the rows it picks and skips rows another node holds, so no delivery is claimed twice and nobody
    /// waits. SQLite has a single writer, which serialises claims by itself.
    pub(super) fn claim_lock_clause(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE OF d SKIP LOCKED",
        }
    }

    /// Appended to a SELECT of rows the statement goes on to change where rows another transaction holds are
    /// better skipped than waited for (see `requeue_dead`). SQLite has a single writer: nothing to skip.
    pub(super) fn skip_locked_clause(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE SKIP LOCKED",
        }
    }

    /// Appended to a SELECT of endpoint rows the transaction goes on to change along with their secrets or
    /// deliveries. Every such transaction locks the endpoint before anything else, so on PostgreSQL they queue
    /// up instead of deadlocking or acting on the same old state.
    pub(super) fn for_update_clause(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// `SELECT <columns> FROM <the rows of a JSON array>`: the array is bound at `placeholder`, each element is an
    /// array of one row's values in `columns` order ([`json_rows`](super::query::json_rows) builds it). A
    /// many-row statement then binds one value instead of one per cell: every bound value costs a conversion,
    /// and SQLite finds each numbered placeholder by a linear scan, so a large `VALUES` list gets
    /// quadratically slow. The SQL text no longer depends on the row count either, so its prepared statement
    /// is reused.
    ///
    /// On SQLite each row is decoded once into a materialised binary (JSONB) value. Read straight from
    /// `json_each`, every `r.value` in the select list asked the virtual table again, which rendered the row as
    /// JSON text, which `->>` then parsed again: a dozen renders and parses per row, a fifth of the group
    /// commit's time (`cargo bench -p switchyard-bench --bench store`).
    pub(super) fn json_rows(self, placeholder: &str, columns: &[(&str, Column)]) -> String {
        let select: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (name, column))| match (self, column) {
                (Dialect::Sqlite, Column::Blob) => format!("unhex(r.value ->> {i}) AS {name}"),
                (Dialect::Sqlite, _) => format!("r.value ->> {i} AS {name}"),
                (Dialect::Postgres, Column::Text) => format!("r ->> {i} AS {name}"),
                (Dialect::Postgres, Column::Int) => format!("CAST(r ->> {i} AS BIGINT) AS {name}"),
                (Dialect::Postgres, Column::Blob) => format!("decode(r ->> {i}, 'hex') AS {name}"),
            })
            .collect();
        let select = select.join(", ");
        match self {
            Dialect::Sqlite => format!(
                "WITH r AS MATERIALIZED (SELECT jsonb(value) AS value FROM json_each({placeholder})) \
                 SELECT {select} FROM r"
            ),
            Dialect::Postgres => {
                format!("SELECT {select} FROM jsonb_array_elements(CAST({placeholder} AS JSONB)) AS r")
            }
        }
    }

    /// The text of the payload that lies at `start` (counted from 1) for `length` bytes in the blob bound at
    /// `placeholder` (see [`Payloads`](super::query::Payloads)). Both databases cut a blob by byte offsets in
    /// constant time, where cutting text would count characters from its start.
    pub(super) fn payload_at(self, placeholder: &str, start: &str, length: &str) -> String {
        match self {
            Dialect::Sqlite => format!("CAST(substr({placeholder}, {start}, {length}) AS TEXT)"),
            Dialect::Postgres => {
                // substring() on bytea takes 32-bit offsets, which a parameter within PostgreSQL's 1 GiB limit fits.
                format!(
                    "convert_from(substring(CAST({placeholder} AS BYTEA) FROM CAST({start} AS INTEGER) \
                     FOR CAST({length} AS INTEGER)), 'UTF8')"
                )
            }
        }
    }

    /// Locks the rows a SELECT reads as an update that keeps their keys would, on PostgreSQL: writers of the same
    /// rows wait, and so does a delete; a `FOR KEY SHARE` (a publish's fan-out) does not.
    pub(super) fn row_lock_clause(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE",
        }
    }

    /// Appended to a SELECT of endpoint rows that a transaction creates or revives deliveries for: they cannot be
    /// deleted before it commits (the lock a foreign key would take, were deliveries not meant to outlive their
    /// endpoint), and a deletion that waited dead-letters those deliveries afterwards.
    pub(super) fn key_share_clause(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR KEY SHARE",
        }
    }
}

/// Where writes go: SQLite's one write connection, or PostgreSQL's pool.
#[derive(Debug)]
pub(super) enum WritePath {
    Pool(AnyPool),
    /// None once closed.
    Dedicated(Mutex<Option<Dedicated>>),
}

#[derive(Debug)]
pub(super) struct Dedicated {
    connection: AnyConnection,
    /// Set while a script that opens its own transaction runs (see [`WriteConnection::script_started`]).
    script_running: bool,
}

/// A connection for writing, held until dropped. Never hold it while waiting for another.
pub(super) enum WriteConnection<'a> {
    Pooled(PoolConnection<Any>),
    Dedicated(MappedMutexGuard<'a, Dedicated>),
}

impl WritePath {
    fn dedicated(connection: AnyConnection) -> Self {
        WritePath::Dedicated(Mutex::new(Some(Dedicated { connection, script_running: false })))
    }

    pub(super) async fn acquire(&self) -> StoreResult<WriteConnection<'_>> {
        match self {
            WritePath::Pool(pool) => Ok(WriteConnection::Pooled(pool.acquire().await?)),
            WritePath::Dedicated(dedicated) => {
                let guard = dedicated.lock().await;
                let Ok(mut guard) = MutexGuard::try_map(guard, Option::as_mut) else {
                    return Err(StoreError::Unavailable("the database is closed".into()));
                };
                if guard.script_running {
                    // Its caller went away mid-script, so the script may have stopped inside its transaction;
                    // end it, or every later BEGIN would fail. (If it ran to its COMMIT, this fails harmlessly.)
                    let _ = guard.connection.execute("ROLLBACK").await;
                    guard.script_running = false;
                }
                Ok(WriteConnection::Dedicated(guard))
            }
        }
    }

    pub(super) async fn is_closed(&self) -> bool {
        match self {
            WritePath::Pool(pool) => pool.is_closed(),
            WritePath::Dedicated(dedicated) => dedicated.lock().await.is_none(),
        }
    }

    pub(super) async fn close(&self) {
        match self {
            WritePath::Pool(pool) => pool.close().await,
            WritePath::Dedicated(dedicated) => {
                if let Some(dedicated) = dedicated.lock().await.take() {
                    if let Err(e) = dedicated.connection.close().await {
                        tracing::warn!(error = %e, "closing the database connection failed");
                    }
                }
            }
        }
    }
}

/// Declares a script's `enum Statement` and `ALL`, its statements in script order, from one list. Results of
/// [`WriteConnection::run_script`] are found by `statement as usize`, so the two orders must never drift apart.
macro_rules! script_statements {
    ($(#[$enum_doc:meta])* { $($(#[$doc:meta])* $statement:ident,)+ }) => {
        $(#[$enum_doc])*
        #[derive(Clone, Copy)]
        enum Statement {
            $($(#[$doc])* $statement,)+
        }

        const ALL: &[Statement] = &[$(Statement::$statement),+];
    };
}
pub(super) use script_statements;

impl WriteConnection<'_> {
    /// Runs `script`, SQLite statements that begin and commit their own transaction, as one command to the
    /// connection's worker thread (see [`sqlite_batch`](super::sqlite_batch)), and returns the rows of each of
    /// its `statements` in order. On error the transaction is rolled back, and the error is the failing
    /// statement's. `what` names the script in messages.
    pub(super) async fn run_script<'q>(
        &mut self,
        script: Query<'q, Any, AnyArguments<'q>>,
        statements: usize,
        what: &str,
    ) -> StoreResult<Vec<Vec<AnyRow>>> {
        let mut returned: Vec<Vec<AnyRow>> = (0..statements).map(|_| Vec::new()).collect();
        let mut statement = 0;
        self.script_started();
        let ran: Result<(), sqlx::Error> = async {
            let mut results = (&mut **self).fetch_many(script);
            while let Some(result) = results.try_next().await? {
                match result {
                    Either::Left(_) => statement += 1,
                    Either::Right(row) => returned[statement.min(statements - 1)].push(row),
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = ran {
            // The script stops at the failing statement, inside the transaction it began (if it got that far).
            if statement > 0 {
                match (&mut **self).execute("ROLLBACK").await {
                    Ok(_) => {}
                    // After some errors (a full disk, for one) SQLite has already rolled the transaction back.
                    Err(e) if e.to_string().contains("no transaction is active") => {}
                    Err(e) => tracing::error!(error = %e, "rolling back a failed {what} failed"),
                }
            }
            self.script_finished();
            return Err(error.into());
        }
        self.script_finished();
        if statement != statements {
            return Err(StoreError::Corrupt(format!("the {what} ran {statement} of {statements} statements")));
        }
        Ok(returned)
    }

    /// Set while a script that opens its own transaction runs, which sqlx does not track: if its caller goes
    /// away mid-script, the next [`WritePath::acquire`] ends the transaction.
    fn script_started(&mut self) {
        if let WriteConnection::Dedicated(dedicated) = self {
            dedicated.script_running = true;
        }
    }

    fn script_finished(&mut self) {
        if let WriteConnection::Dedicated(dedicated) = self {
            dedicated.script_running = false;
        }
    }
}

impl Deref for WriteConnection<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            WriteConnection::Pooled(connection) => connection,
            WriteConnection::Dedicated(dedicated) => &dedicated.connection,
        }
    }
}

impl DerefMut for WriteConnection<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteConnection::Pooled(connection) => connection,
            WriteConnection::Dedicated(dedicated) => &mut dedicated.connection,
        }
    }
}

pub(super) fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The writer's URL: `mode=rwc`, so the first start creates the database file, and the VFS that gathers WAL
/// writes ([`wal_vfs`](super::wal_vfs)); either only where the URL does not name its own.
fn sqlite_writer_url(url: &str) -> String {
    with_default_parameter(&with_default_parameter(url, "mode", "rwc"), "vfs", super::wal_vfs::NAME)
}

fn with_default_parameter(url: &str, name: &str, value: &str) -> String {
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or("");
    if query.split('&').any(|pair| pair.split_once('=').map_or(pair, |(key, _)| key) == name) {
        url.to_string()
    } else if query.is_empty() {
        format!("{}?{name}={value}", url.trim_end_matches('?'))
    } else {
        format!("{url}&{name}={value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_decode_each_column_by_position() {
        let columns = [("id", Column::Text), ("n", Column::Int), ("body", Column::Blob)];
        assert_eq!(
            Dialect::Sqlite.json_rows("$2", &columns),
            "WITH r AS MATERIALIZED (SELECT jsonb(value) AS value FROM json_each($2)) \
             SELECT r.value ->> 0 AS id, r.value ->> 1 AS n, unhex(r.value ->> 2) AS body FROM r"
        );
        assert_eq!(
            Dialect::Postgres.json_rows("$2", &columns),
            "SELECT r ->> 0 AS id, CAST(r ->> 1 AS BIGINT) AS n, decode(r ->> 2, 'hex') AS body \
             FROM jsonb_array_elements(CAST($2 AS JSONB)) AS r"
        );
    }

    #[test]
    fn dialect_follows_the_url_scheme() {
        assert_eq!(Dialect::from_url("sqlite://data/x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(Dialect::from_url("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert_eq!(Dialect::from_url("postgres://u@h/db").unwrap(), Dialect::Postgres);
        assert_eq!(Dialect::from_url("postgresql://u@h/db").unwrap(), Dialect::Postgres);
        assert!(Dialect::from_url("mysql://u@h/db").is_err());
    }

    #[test]
    fn sqlite_writer_urls_create_the_file_and_gather_wal_writes_unless_told_otherwise() {
        assert_eq!(sqlite_writer_url("sqlite://data/x.db"), "sqlite://data/x.db?mode=rwc&vfs=switchyard-wal");
        assert_eq!(
            sqlite_writer_url("sqlite://data/x.db?cache=shared"),
            "sqlite://data/x.db?cache=shared&mode=rwc&vfs=switchyard-wal"
        );
        assert_eq!(sqlite_writer_url("sqlite://data/x.db?mode=ro"), "sqlite://data/x.db?mode=ro&vfs=switchyard-wal");
        assert_eq!(
            sqlite_writer_url("sqlite://data/x.db?vfs=unix-dotfile"),
            "sqlite://data/x.db?vfs=unix-dotfile&mode=rwc"
        );
    }
}
