//! WAL checkpoints off the write path. SQLite's automatic checkpoint runs inside whichever commit pushes the WAL
//! past its threshold, so every thousand pages or so one commit also copies the WAL into the database file and
//! fsyncs it: tens of milliseconds that every publish queued behind that commit waits for. The writer therefore
//! never checkpoints (`wal_autocheckpoint = 0`); this task does, on a connection of its own.
//!
//! A checkpoint that runs beside the writer never catches up with it under steady load: the writer appends while
//! the checkpoint copies, so the WAL is never wholly copied, SQLite never starts it over, and the file grows for
//! as long as the load lasts (145 MB in six seconds of `single`), every commit extending it, which makes each
//! commit's fdatasync a file-system journal commit as well. So each round copies the bulk beside the writer,
//! then holds the writer back for a second pass that copies only what was appended meanwhile. The WAL is then
//! wholly copied, and the writer's next transaction writes it again from the start.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Connection, Executor, Row};

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
    let mut copied_before = None;
    // A checkpoint that fails (a full disk, say) fails every round until the cause goes: warn once, then once a
    // minute, rather than twice a second.
    let mut failures: u32 = 0;
    const WARN_EVERY: u32 = (60_000 / CHECKPOINT_INTERVAL.as_millis()) as u32;
    loop {
        ticks.tick().await;
        let Some(writer) = writer.upgrade() else { break };
        if writer.is_closed().await {
            break;
        }
        match round(&mut connection, &writer, copied_before).await {
            Ok(copied) => {
                copied_before = copied;
                if failures > 0 {
                    tracing::info!(failures, "WAL checkpoints succeed again");
                    failures = 0;
                }
            }
            Err(e) => {
                copied_before = None;
                if failures.is_multiple_of(WARN_EVERY) {
                    tracing::warn!(error = %e, failures_so_far = failures, "WAL checkpoint failed; retrying");
                }
                failures = failures.saturating_add(1);
            }
        }
    }
    // A last full checkpoint is left to SQLite, which checkpoints when the last connection closes.
    let _ = connection.close().await;
}

/// One checkpoint round: the bulk beside the writer, then the rest while the writer waits. The first pass can
/// report every frame copied and still leave the WAL to grow: it counts the frames there were when it started,
/// and the writer, busy under load, has begun its next transaction on the WAL by the time it ends.
///
/// `copied_before` is the WAL the previous round left wholly copied, in frames. A WAL found at exactly that size
/// and wholly copied has not been written since, so an idle database does not hold its writer back every round.
/// Returns the WAL this round left wholly copied, if it did.
async fn round(
    connection: &mut AnyConnection,
    writer: &WritePath,
    copied_before: Option<i64>,
) -> StoreResult<Option<i64>> {
    let first = passive_checkpoint(connection).await?;
    if first.wal_frames == 0 {
        return Ok(None); // nothing written since the WAL started over
    }
    if first.is_whole() && copied_before == Some(first.wal_frames) {
        return Ok(copied_before);
    }
    let held = writer.acquire().await?;
    let started = Instant::now();
    let second = passive_checkpoint(connection).await;
    drop(held);
    let second = second?;
    tracing::debug!(
        held_ms = started.elapsed().as_secs_f64() * 1e3,
        wal_frames = second.wal_frames,
        copied = second.copied_frames,
        "WAL checkpointed with the writer held"
    );
    if !second.is_whole() {
        // A reader on an older snapshot keeps its frames from being copied; the next round gets them.
        tracing::debug!("WAL not wholly copied; a reader holds an older snapshot");
        return Ok(None);
    }
    Ok(Some(second.wal_frames))
}

/// What `PRAGMA wal_checkpoint` reports.
struct Checkpoint {
    wal_frames: i64,
    copied_frames: i64,
}

impl Checkpoint {
    fn is_whole(&self) -> bool {
        self.copied_frames == self.wal_frames
    }
}

async fn passive_checkpoint(connection: &mut AnyConnection) -> StoreResult<Checkpoint> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *connection).await?;
    Ok(Checkpoint { wal_frames: row.try_get(1)?, copied_frames: row.try_get(2)? })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::store::sql::dialect::Dialect;

    /// Under a writer that never pauses, a single checkpoint pass beside it copies every frame it saw and still
    /// leaves the WAL to grow; a round has to make the writer's next transaction start the WAL over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_starts_the_wal_over_while_the_writer_keeps_writing() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("wal.db").display());
        let writer = Arc::new(Dialect::Sqlite.open_writer(&url).await.unwrap());
        writer.acquire().await.unwrap().execute("CREATE TABLE rows (body BLOB)").await.unwrap();
        let mut checkpointer = AnyConnection::connect(&url).await.unwrap();

        let (stop, commits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let writing = tokio::spawn({
            let (writer, stop, commits) = (writer.clone(), stop.clone(), commits.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut connection = writer.acquire().await.unwrap();
                    connection.execute("INSERT INTO rows VALUES (randomblob(3000))").await.unwrap();
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let wal_frames = |checkpoint: StoreResult<Checkpoint>| checkpoint.unwrap().wal_frames;
        let mut frames = 0;
        while frames < 1000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            frames = wal_frames(passive_checkpoint(&mut checkpointer).await);
        }

        round(&mut checkpointer, &writer, None).await.unwrap();
        let after_round = commits.load(Ordering::Relaxed);
        while commits.load(Ordering::Relaxed) < after_round + 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let frames_since = wal_frames(passive_checkpoint(&mut checkpointer).await);
        stop.store(true, Ordering::Relaxed);
        writing.await.unwrap();
        assert!(frames_since < frames, "the WAL went on from {frames} frames to {frames_since}");
    }

    /// Once a round has copied the whole WAL, rounds over a database nobody writes to leave the writer alone.
    #[tokio::test]
    async fn rounds_over_an_idle_database_do_not_wait_for_the_writer() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("idle.db").display());
        let writer = Dialect::Sqlite.open_writer(&url).await.unwrap();
        writer.acquire().await.unwrap().execute("CREATE TABLE rows (body BLOB)").await.unwrap();
        let mut checkpointer = AnyConnection::connect(&url).await.unwrap();

        let copied = round(&mut checkpointer, &writer, None).await.unwrap();
        assert!(copied.is_some_and(|frames| frames > 0), "the first round copies the table's creation: {copied:?}");

        let held = writer.acquire().await.unwrap();
        let idle = tokio::time::timeout(Duration::from_secs(2), round(&mut checkpointer, &writer, copied)).await;
        assert_eq!(idle.expect("an idle round waited for the writer").unwrap(), copied);
        drop(held);

        // A write since the last round makes the next one hold the writer again, and copy it.
        writer.acquire().await.unwrap().execute("INSERT INTO rows VALUES (randomblob(3000))").await.unwrap();
        let held = writer.acquire().await.unwrap();
        let busy = tokio::time::timeout(Duration::from_millis(300), round(&mut checkpointer, &writer, copied)).await;
        assert!(busy.is_err(), "a round after a write did not wait for the writer");
        drop(held);
    }
}
