//! A fixed number of SQLite group commits (see `shared/group_commits.rs`), for an instruction count that does
//! not move with the machine's load, as wall-clock benchmarks on a shared 2-core machine do:
//!
//! ```sh
//! cargo build --release -p switchyard-bench --example group_commits
//! valgrind --tool=callgrind target/release/examples/group_commits 10 100 100
//! ```
//!
//! Arguments (see `--help`): endpoints per event (10), commits to warm the tables up (100), commits measured
//! (100), the least size of each event's payload in bytes (0: the 178-byte default), and events per commit
//! (50). callgrind's total covers the whole run; the time per measured commit is printed too, for a plain run.
//!
//! An instruction count is not a time. Check a change that lowers it with a plain run as well, which prints the
//! CPU time per measured commit (all threads, SQLite's worker included; run a few thousand commits, as the
//! kernel counts in 10 ms ticks): binding rows value by value instead of as JSON cut 28 % of the instructions of
//! a one-endpoint commit but only 4 % of its CPU time (BENCHMARKS.md, 2026-12-03).

use std::time::Instant;

use clap::Parser;

#[path = "../shared/group_commits.rs"]
mod group_commits;
#[path = "../shared/proc_cpu.rs"]
mod proc_cpu;

use group_commits::{GroupCommits, EVENTS};

#[derive(Parser)]
struct Args {
    /// Endpoints each event fans out to.
    #[arg(default_value_t = 10)]
    endpoints: usize,
    /// Commits that grow the tables before the measured ones.
    #[arg(default_value_t = 100)]
    warm_up: usize,
    /// Commits measured.
    #[arg(default_value_t = 100)]
    commits: usize,
    /// Least size of each event's payload in bytes (0: the store benchmark's 178-byte payload).
    #[arg(default_value_t = 0)]
    payload_bytes: usize,
    /// Events per commit.
    #[arg(default_value_t = EVENTS)]
    events: usize,
}

fn main() -> anyhow::Result<()> {
    let Args { endpoints, warm_up, commits: measured, payload_bytes, events } = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut commits = GroupCommits::new(endpoints).await.with_payload_of(payload_bytes).with_events(events);
        for _ in 0..warm_up {
            commits.commit().await;
        }
        let started = Instant::now();
        let cpu_before = proc_cpu::cpu_seconds(None)?;
        for _ in 0..measured {
            commits.commit().await;
        }
        let per_commit = started.elapsed() / measured.max(1) as u32;
        let cpu_per_commit = (proc_cpu::cpu_seconds(None)? - cpu_before) / measured.max(1) as f64;
        let deliveries = events * endpoints;
        println!(
            "{measured} commits of {events} events × {endpoints} endpoints ({deliveries} deliveries): {per_commit:?} \
             per commit, {:.3} ms CPU per commit",
            cpu_per_commit * 1000.0
        );
        Ok(())
    })
}
