//! Where the router's threads spend a run: on a CPU, or runnable and waiting for one. On two cores shared with
//! the harness's publishers and receiver, a thread on the critical path (the one SQLite writer) can spend as
//! long queued for a CPU as running; CPU seconds alone do not show that. Read from Linux's per-thread
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on a CPU, nanoseconds runnable on a run queue).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// How the names of the router's SQLite threads start: sqlx runs each SQLite connection on a thread of its own,
/// `sqlx-sqlite-worker-N`, and every statement and commit (fsync included) runs there.
pub const SQLITE_THREAD: &str = "sqlx-sqlite";

/// Each live thread's kind and its two counters at one moment.
pub struct Snapshot {
    at: Instant,
    threads: BTreeMap<i32, (String, u64, u64)>,
}

/// One kind of thread over a span: how many took part, and their time on a CPU and runnable but waiting for
/// one, each summed over those threads as a share of the span (two busy threads make 2.0); `cpu_s` is the time on
/// a CPU in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadKind {
    pub kind: String,
    pub threads: usize,
    pub on_cpu: f64,
    pub waiting: f64,
    pub cpu_s: f64,
}

impl Snapshot {
    /// The process's threads now; None where the kernel keeps no schedstat (not Linux, or built without
    /// `CONFIG_SCHED_INFO`).
    pub fn take(pid: u32) -> Option<Snapshot> {
        let at = Instant::now();
        let mut threads = BTreeMap::new();
        let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
        for task in process.tasks().ok()?.flatten() {
            // A thread may end between the listing and these reads; it then just goes uncounted.
            let (Ok(stat), Ok(schedstat)) = (task.stat(), task.schedstat()) else { continue };
            let kind = thread_kind(stat.comm.trim()).to_string();
            threads.insert(task.tid, (kind, schedstat.sum_exec_runtime, schedstat.run_delay));
        }
        (!threads.is_empty()).then_some(Snapshot { at, threads })
    }

    /// What each kind of thread did between `self` and the later `after`, busiest first. Threads started
    /// meanwhile count from zero; threads that ended meanwhile are missing from `after` and do not count.
    pub fn until(&self, after: &Snapshot) -> Vec<ThreadKind> {
        let span_ns = after.at.saturating_duration_since(self.at).as_nanos().max(1) as f64;
        let mut kinds: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
        for (tid, (kind, on_cpu, waiting)) in &after.threads {
            let (before_cpu, before_waiting) =
                self.threads.get(tid).map_or((0, 0), |(_, on_cpu, waiting)| (*on_cpu, *waiting));
            let sum = kinds.entry(kind).or_default();
            sum.0 += 1;
            sum.1 += on_cpu.saturating_sub(before_cpu);
            sum.2 += waiting.saturating_sub(before_waiting);
        }
        let mut kinds: Vec<ThreadKind> = kinds
            .into_iter()
            .map(|(kind, (threads, on_cpu, waiting))| ThreadKind {
                kind: kind.to_string(),
                threads,
                on_cpu: on_cpu as f64 / span_ns,
                waiting: waiting as f64 / span_ns,
                cpu_s: on_cpu as f64 / 1e9,
            })
            .collect();
        kinds.sort_by(|a, b| b.on_cpu.total_cmp(&a.on_cpu));
        kinds
    }
}

/// A thread's name without its number: `tokio-rt-worker`, or `sqlx-sqlite-wor` for `sqlx-sqlite-worker-3`, which
/// the kernel keeps to 15 bytes.
fn thread_kind(comm: &str) -> &str {
    let kind = comm.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches(['-', '_', ' ']);
    if kind.is_empty() {
        comm
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(at: Instant, threads: &[(i32, &str, u64, u64)]) -> Snapshot {
        Snapshot {
            at,
            threads: threads.iter().map(|&(tid, kind, cpu, wait)| (tid, (kind.to_string(), cpu, wait))).collect(),
        }
    }

    #[test]
    fn kinds_drop_the_thread_number() {
        assert_eq!(thread_kind("sqlx-sqlite-wor"), "sqlx-sqlite-wor");
        assert_eq!(thread_kind("sqlx-sqlite-w12"), "sqlx-sqlite-w");
        assert_eq!(thread_kind("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(thread_kind("pool-7"), "pool");
        assert_eq!(thread_kind("42"), "42");
    }

    #[test]
    fn a_span_sums_each_kind_as_a_share_of_its_length() {
        let start = Instant::now();
        let before =
            snapshot(start, &[(1, "tokio-rt-worker", 100, 50), (2, "tokio-rt-worker", 0, 0), (3, "gone", 5, 5)]);
        // One second later: worker 1 ran 0.5 s and waited 0.25 s, worker 2 ran 0.5 s; thread 4 started and ran
        // 0.25 s; thread 3 ended and is not counted.
        let after = snapshot(
            start + std::time::Duration::from_secs(1),
            &[
                (1, "tokio-rt-worker", 100 + 500_000_000, 50 + 250_000_000),
                (2, "tokio-rt-worker", 500_000_000, 0),
                (4, "sqlx-sqlite-wor", 250_000_000, 100_000_000),
            ],
        );
        let kinds = before.until(&after);
        assert_eq!(
            kinds,
            vec![
                ThreadKind { kind: "tokio-rt-worker".into(), threads: 2, on_cpu: 1.0, waiting: 0.25, cpu_s: 1.0 },
                ThreadKind { kind: "sqlx-sqlite-wor".into(), threads: 1, on_cpu: 0.25, waiting: 0.1, cpu_s: 0.25 },
            ]
        );
    }

    #[test]
    fn this_process_has_threads_to_read_on_linux() {
        if !std::path::Path::new("/proc/self/schedstat").exists() {
            return; // Not Linux, or a kernel that keeps no schedstat: the harness prints "-" there.
        }
        let before = Snapshot::take(std::process::id()).expect("schedstat of this process");
        // Long enough to span scheduler ticks, which is when a running thread's counter moves.
        let spin = Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let after = Snapshot::take(std::process::id()).expect("schedstat of this process");
        let kinds = before.until(&after);
        assert!(kinds.iter().map(|k| k.on_cpu).sum::<f64>() > 0.0, "{kinds:?}");
    }
}
