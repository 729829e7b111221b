//! Group commit of attempt records. Attempt tasks hand their outcome to one recorder task, which writes everything
//! queued at that moment in one transaction ([`Store::record_attempts`]): under load, one commit (one fsync) serves
//! many attempts instead of one each. Each attempt task still waits until its own record is durable, so nothing
//! about leases, shutdown or at-least-once delivery changes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AttemptOutcome, Store, StoreError};

/// At most this many attempts share one transaction, so a huge backlog still commits in steps.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<bool, RecordError>>;

/// Why an attempt could not be recorded. The delivery's lease then expires and it is attempted again.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the recorder has stopped")]
    Stopped,
}

/// The attempt tasks' handle. The recorder task ends once every handle is dropped and the queue is written.
pub(super) struct Recorder {
    queue: mpsc::UnboundedSender<(AttemptOutcome, Reply)>,
}

impl Recorder {
    pub(super) fn start(store: Arc<dyn Store>, owner: String) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, owner, queued));
        Recorder { queue }
    }

    /// Records the outcome (grouped with whatever else is waiting) and returns whether the lease was still held.
    pub(super) async fn record(&self, outcome: AttemptOutcome) -> Result<bool, RecordError> {
        let (reply, recorded) = oneshot::channel();
        self.queue.send((outcome, reply)).map_err(|_| RecordError::Stopped)?;
        recorded.await.unwrap_or(Err(RecordError::Stopped))
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    owner: String,
    mut queued: mpsc::UnboundedReceiver<(AttemptOutcome, Reply)>,
) {
    let mut batch = Vec::new();
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (outcomes, replies): (Vec<AttemptOutcome>, Vec<Reply>) = std::mem::take(&mut batch).into_iter().unzip();
        match store.record_attempts(&owner, &outcomes).await {
            Ok(recorded) => {
                for (reply, recorded) in replies.into_iter().zip(recorded) {
                    let _ = reply.send(Ok(recorded));
                }
            }
            // One bad outcome (or a deadlock victim on PostgreSQL) must not fail the others: write them one by one.
            Err(e) if outcomes.len() > 1 => {
                tracing::warn!(error = %e, attempts = outcomes.len(), "batched attempt records failed; writing one by one");
                for (outcome, reply) in outcomes.iter().zip(replies) {
                    let _ = reply.send(store.record_attempt(&owner, outcome).await.map_err(RecordError::from));
                }
            }
            Err(e) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e.into()));
                }
            }
        }
    }
}
