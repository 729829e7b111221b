//! WAL checkpoints off the write path. SQLite's automatic checkpoint runs inside whichever commit pushes the WAL
//! past its threshold, so every thousand pages or so one commit also copies the WAL into the database file and
//! fsyncs it: tens of milliseconds that every publish queued behind that commit waits for. The writer therefore
//! never checkpoints (`wal_autocheckpoint = 0`); this task does, on a connection of its own, with `PASSIVE`
//! checkpoints that never block the writer or readers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Executor};

use super::dialect::{WritePath, SQLITE_CHECKPOINT_PRAGMAS};
use crate::store::StoreResult;

/// How often the WAL is copied into the database file: often enough that the WAL stays small (readers search it,
/// and each checkpoint has less to copy), seldom enough that its database fsyncs rarely meet the writer's.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Starts checkpointing the database at `url`. The task ends once the store that owns `writer` is closed or gone.
pub(super) async fn start(url: &str, writer: &Arc<WritePath>) -> StoreResult<()> {
    let mut connection = AnyConnection::connect(url).await?;
    for pragma in SQLITE_CHECKPOINT_PRAGMAS {
        connection.execute(*pragma).await?;
    }
    tokio::spawn(run(connection, Arc::downgrade(writer)));
    Ok(())
}

async fn run(mut connection: AnyConnection, writer: Weak<WritePath>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match writer.upgrade() {
            Some(writer) if !writer.is_closed().await => {}
            _ => break,
        }
        if let Err(e) = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
    // A last full checkpoint is left to SQLite, which checkpoints when the last connection closes.
    let _ = connection.close().await;
}
