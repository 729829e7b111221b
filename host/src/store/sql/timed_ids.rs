//! Ids that carry their record's time: a window of times (events by `received_at`, deliveries by `created_at`) is
//! then also a range of ids, which the indexes ending in `id` seek, instead of walking a tenant's or an endpoint's
//! whole history from one end to check each row's time.

use sqlx::AnyPool;

use super::query::KeyRange;
use crate::model::{first_id_at, Millis};
use crate::store::StoreResult;

/// Whether a table's ids all carry their record's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimedIds {
    /// Every id carries its time: a window of times is a range of ids too.
    Timed,
    /// Some ids are of the format before ids carried their time in order (a prefix and 32 hex digits): a window is
    /// found by its time column alone.
    Legacy,
}

/// How far a record's time may lie from the time in its id. For records stored since ids are minted for them
/// (events by [`crate::model::new_id_and_time`], deliveries by [`crate::model::new_id_at`]) the two are the
/// same; before, they were read from the clock moments apart.
const MARGIN: Millis = 60_000;

impl TimedIds {
    /// Whether `table` holds any id of the format before ids were time-ordered base 36. Those all sort before
    /// `{prefix}_02` (their second digit is `1` until 2039), so the primary key's index answers at once.
    pub(super) async fn of(pool: &AnyPool, table: &str, prefix: &str) -> StoreResult<TimedIds> {
        let legacy = sqlx::query(&format!("SELECT 1 FROM {table} WHERE id < $1 AND length(id) = $2 LIMIT 1"))
            .bind(format!("{prefix}_02"))
            .bind((prefix.len() + 33) as i64)
            .fetch_optional(pool)
            .await?;
        Ok(if legacy.is_some() { TimedIds::Legacy } else { TimedIds::Timed })
    }

    /// The ids of the records whose time may lie at or after `since` and before `until`: all of them for
    /// [`TimedIds::Legacy`].
    pub(super) fn range(self, prefix: &str, since: Option<Millis>, until: Option<Millis>) -> KeyRange {
        if self == TimedIds::Legacy {
            return KeyRange::default();
        }
        let id_at = |at: Millis| first_id_at(prefix, at);
        KeyRange { start: since.map(|since| id_at(since - MARGIN)), end: until.map(|until| id_at(until + MARGIN)) }
    }
}
