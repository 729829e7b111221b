//! A fixed number of SQLite group commits (see `shared/group_commits.rs`), for an instruction count that does
//! not move with the machine's load, as wall-clock benchmarks on a shared 2-core machine do:
//!
//! ```sh
//! cargo build --release -p switchyard-bench --example group_commits
//! valgrind --tool=callgrind target/release/examples/group_commits 10 100 100
//! ```
//!
//! Arguments: endpoints per event (10), commits to warm the tables up (100), commits measured (100), and the
//! least size of each event's payload in bytes (0: the store benchmark's 178-byte payload). callgrind's total
//! covers the whole run; the time per measured commit is printed too, for a plain run.

use std::time::Instant;

#[path = "../shared/group_commits.rs"]
mod group_commits;

use group_commits::{GroupCommits, EVENTS};

fn main() {
    let mut counts = std::env::args().skip(1).map(|arg| arg.parse::<usize>());
    let mut next = |name: &str, default: usize| match counts.next() {
        None => default,
        Some(Ok(count)) => count,
        Some(Err(e)) => {
            eprintln!("group_commits: {name}: {e} (usage: group_commits [endpoints] [warm-up commits] [commits] [payload bytes])");
            std::process::exit(2);
        }
    };
    let (endpoints, warm_up, measured) = (next("endpoints", 10), next("warm-up commits", 100), next("commits", 100));
    let payload_bytes = next("payload bytes", 0);
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
