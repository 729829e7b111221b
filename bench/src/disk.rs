//! The disk's own commit latency, measured in the same run as the router: a 4 KiB write and `fdatasync`, again
//! and again, in the directory the router's database lives in. Every `202` waits for one such sync (shared by a
//! group of publishes), so this is the floor under the router's e2e latency, and its stalls show up in the
//! router's tail.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::{ms, quantile};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct DiskBaseline {
    pub syncs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Syncs that took longer than 10 ms, per second of measuring.
    pub stalls_per_s: f64,
}

/// Syncs for `duration` in a scratch file under `dir` (removed afterwards).
pub fn measure(dir: &Path, duration: Duration) -> anyhow::Result<DiskBaseline> {
    let path = dir.join("fsync-probe");
    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    // Overwrite a preallocated region, as a WAL being reused does, so syncs flush data rather than file growth.
    const PAGES: u64 = 256;
    file.write_all(&vec![0u8; 4096 * PAGES as usize])?;
    file.sync_all()?;
    let page = [7u8; 4096];
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        file.seek(SeekFrom::Start((latencies.len() as u64 % PAGES) * 4096))?;
        file.write_all(&page)?;
        let sync = Instant::now();
        file.sync_data()?;
        latencies.push(sync.elapsed().as_nanos() as u64);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    let measured = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let stalls = latencies.iter().filter(|&&ns| ns > 10_000_000).count();
    Ok(DiskBaseline {
        syncs: latencies.len(),
        p50_ms: ms(quantile(&latencies, 0.50)),
        p99_ms: ms(quantile(&latencies, 0.99)),
        max_ms: ms(latencies.last().copied().unwrap_or(0)),
        stalls_per_s: if latencies.is_empty() { 0.0 } else { stalls as f64 / measured },
    })
}
