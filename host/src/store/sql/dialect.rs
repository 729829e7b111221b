//! What differs between SQLite and PostgreSQL: connection set-up, migrations and row locking. Every other query
//! is shared.

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use crate::store::{StoreError, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Applied to every SQLite connection. `busy_timeout` comes first so the switch to WAL waits for another process
/// (a backup, the sqlite3 shell) instead of failing. `synchronous = FULL` because a 202 Accepted promises the
/// event is on disk: WAL's usual NORMAL can lose the last commits on power loss.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
];

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

    pub(super) async fn open_pool(self, url: &str) -> StoreResult<AnyPool> {
        let pool = match self {
            // One connection. The Any driver opens transactions with a plain deferred `BEGIN`, so a transaction
            // that reads and then writes only asks for the write lock at its first write; if another connection
            // committed in between, its snapshot is stale and SQLite fails the write with SQLITE_BUSY at once
            // (busy_timeout cannot help). SQLite admits one writer at a time anyway, so a single connection
            // costs little and makes every transaction safe. Never hold this connection while acquiring another.
            Dialect::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            for pragma in SQLITE_PRAGMAS {
                                connection.execute(*pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url_creating_file(url))
                    .await?
            }
            Dialect::Postgres => AnyPoolOptions::new().max_connections(POSTGRES_MAX_CONNECTIONS).connect(url).await?,
        };
        Ok(pool)
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

    /// Appended to a SELECT of endpoint rows the transaction goes on to change along with their secrets or
    /// deliveries. Every such transaction locks the endpoint before anything else, so on PostgreSQL they queue
    /// up instead of deadlocking or acting on the same old state.
    pub(super) fn for_update_clause(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// The column type for binary data, for `CAST`s: SQLite would give `BYTEA` numeric affinity.
    pub(super) fn blob_type(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
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

/// The URL with `mode=rwc` unless it names a mode: the first start creates the database file.
fn sqlite_url_creating_file(url: &str) -> String {
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or("");
    if query.split('&').any(|pair| pair.starts_with("mode=")) {
        url.to_string()
    } else if query.is_empty() {
        format!("{}?mode=rwc", url.trim_end_matches('?'))
    } else {
        format!("{url}&mode=rwc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_follows_the_url_scheme() {
        assert_eq!(Dialect::from_url("sqlite://data/x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(Dialect::from_url("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert_eq!(Dialect::from_url("postgres://u@h/db").unwrap(), Dialect::Postgres);
        assert_eq!(Dialect::from_url("postgresql://u@h/db").unwrap(), Dialect::Postgres);
        assert!(Dialect::from_url("mysql://u@h/db").is_err());
    }

    #[test]
    fn sqlite_urls_create_the_file_unless_a_mode_is_given() {
        assert_eq!(sqlite_url_creating_file("sqlite://data/x.db"), "sqlite://data/x.db?mode=rwc");
        assert_eq!(
            sqlite_url_creating_file("sqlite://data/x.db?cache=shared"),
            "sqlite://data/x.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_url_creating_file("sqlite://data/x.db?mode=ro"), "sqlite://data/x.db?mode=ro");
    }
}
