//! The SQLite group commit on its own: what one `Store::write_batch` costs the database for a publish group and
//! the attempt records that share its transaction, in the shape the router writes them under load (see
//! `shared/group_commits.rs`).
//!
//! `cargo bench -p switchyard-bench --bench store`; the time is per commit, so divide by events × endpoints
//! for the cost per delivery. For a count that does not move with the machine's load, run
//! `examples/group_commits.rs` under callgrind.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "../shared/group_commits.rs"]
mod group_commits;

use group_commits::{GroupCommits, EVENTS};

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("store");
    group.measurement_time(Duration::from_secs(10));
    // The bench payload (178 bytes), and one of a size real webhooks often carry; commits of 20 events too, the
    // size `single`'s 50 publishers make when each waits on the commit it is in.
    for (events, endpoints, payload_bytes) in [(EVENTS, 1, 0), (EVENTS, 10, 0), (EVENTS, 1, 4096), (20, 1, 0)] {
        let mut commits =
            runtime.block_on(GroupCommits::new(endpoints)).with_payload_of(payload_bytes).with_events(events);
        // Tables of a realistic size, and a delivery set in flight for the first measured commit.
        runtime.block_on(async {
            for _ in 0..200 {
                commits.commit().await;
            }
        });
        let payload = if payload_bytes == 0 { String::new() } else { format!("_{payload_bytes}_byte_payloads") };
        group.bench_function(format!("group_commit_{events}_events_x{endpoints}_endpoints{payload}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        commits.commit().await;
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
