//! Per-version counters, latency samples and captured log lines, readable as a snapshot.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::bindings::Level;
use super::PluginKind;

/// Latencies kept for the percentiles: enough for a stable p99, small enough to sort on every snapshot.
const LATENCY_SAMPLES: usize = 1024;

/// One line a plugin logged through the `log` host function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub plugin: String,
    /// The sha256 of the version that logged it.
    pub version: String,
    /// The event being processed, when the call had one (retry policies do not).
    pub event_id: Option<String>,
    pub level: &'static str,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

pub(crate) fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// What phase B's API shows for one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionStatsSnapshot {
    pub sha256: String,
    pub kinds: Vec<PluginKind>,
    /// Size of the component file.
    pub size_bytes: u64,
    /// Milliseconds since the Unix epoch.
    pub loaded_at_ms: u64,
    pub calls: u64,
    pub errors: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Lines dropped because a call exceeded its per-call log budget.
    pub dropped_log_lines: u64,
    /// Oldest first.
    pub recent_logs: Vec<LogLine>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: u64,
    errors: u64,
    dropped_log_lines: u64,
    latencies_us: VecDeque<u64>,
    logs: VecDeque<LogLine>,
}

#[derive(Debug)]
pub(crate) struct VersionStats {
    ring_size: usize,
    inner: Mutex<Inner>,
}

impl VersionStats {
    pub(crate) fn new(ring_size: usize) -> Self {
        VersionStats { ring_size, inner: Mutex::new(Inner::default()) }
    }

    pub(crate) fn record(&self, elapsed: Duration, failed: bool, logs: Vec<LogLine>, dropped: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.calls += 1;
        inner.errors += u64::from(failed);
        inner.dropped_log_lines += dropped;
        if inner.latencies_us.len() == LATENCY_SAMPLES {
            inner.latencies_us.pop_front();
        }
        inner.latencies_us.push_back(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        for line in logs {
            if inner.logs.len() >= self.ring_size {
                inner.logs.pop_front();
            }
            if self.ring_size > 0 {
                inner.logs.push_back(line);
            }
        }
    }

    pub(crate) fn snapshot(
        &self,
        sha256: &str,
        kinds: &[PluginKind],
        size_bytes: u64,
        loaded_at_ms: u64,
    ) -> VersionStatsSnapshot {
        let inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut sorted: Vec<u64> = inner.latencies_us.iter().copied().collect();
        sorted.sort_unstable();
        VersionStatsSnapshot {
            sha256: sha256.to_string(),
            kinds: kinds.to_vec(),
            size_bytes,
            loaded_at_ms,
            calls: inner.calls,
            errors: inner.errors,
            p50_us: percentile(&sorted, 50),
            p99_us: percentile(&sorted, 99),
            dropped_log_lines: inner.dropped_log_lines,
            recent_logs: inner.logs.iter().cloned().collect(),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50), Some(50));
        assert_eq!(percentile(&samples, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn log_ring_keeps_the_newest_lines() {
        let stats = VersionStats::new(2);
        let line = |n: u32| LogLine {
            plugin: "p".into(),
            version: "v".into(),
            event_id: None,
            level: "info",
            message: n.to_string(),
            at_ms: 0,
        };
        stats.record(Duration::from_micros(10), false, vec![line(1), line(2)], 0);
        stats.record(Duration::from_micros(30), true, vec![line(3)], 4);
        let snap = stats.snapshot("v", &[PluginKind::Filter], 0, 0);
        assert_eq!((snap.calls, snap.errors, snap.dropped_log_lines), (2, 1, 4));
        let messages: Vec<_> = snap.recent_logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["2", "3"]);
        assert_eq!((snap.p50_us, snap.p99_us), (Some(10), Some(30)));
    }
}
