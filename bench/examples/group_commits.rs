//! A fixed number of SQLite group commits (see `shared/group_commits.rs`), for an instruction count that does
//! not move with the machine's load, as wall-clock benchmarks on a shared 2-core machine do:
//!
//! ```sh
//! cargo build --release -p switchyard-bench --example group_commits
//! valgrind --tool=callgrind target/release/examples/group_commits 10 100 100
//! ```
//!
//! Arguments (see `--help`): endpoints per event (10), commits to warm the tables up (100), commits measured
//! (100), and the least size of each event's payload in bytes (0: the 178-byte default). callgrind's total
//! covers the whole run; the time per measured commit is printed too, for a plain run.

use std::time::Instant;

use clap::Parser;

#[path = "../shared/group_commits.rs"]
mod group_commits;

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
}

fn main() {
    let Args { endpoints, warm_up, commits: measured, payload_bytes } = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut commits = GroupCommits::new(endpoints).await.with_payload_of(payload_bytes);
        for _ in 0..warm_up {
            commits.commit().await;
        }
        let started = Instant::now();
        for _ in 0..measured {
            commits.commit().await;
        }
        let per_commit = started.elapsed() / measured.max(1) as u32;
        let deliveries = EVENTS * endpoints;
        println!("{measured} commits of {EVENTS} events × {endpoints} endpoints ({deliveries} deliveries): {per_commit:?} per commit");
    });
}
