//! CPU time from `/proc`, shared by the harness (the router's) and the `group_commits` example (its own).

use anyhow::Context;

/// Linux reports CPU times in clock ticks; USER_HZ is 100 on every mainstream architecture and is fixed in the
/// kernel ABI, so this avoids a libc dependency just for sysconf(_SC_CLK_TCK).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds the process `pid` (a number, or `self`) has consumed so far, all its threads.
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces, so count fields after its closing parenthesis:
    // utime and stime are fields 14 and 15 overall, i.e. 12th and 13th after ")".
    let rest = stat.rsplit_once(')').context("unexpected /proc/<pid>/stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / CLOCK_TICKS_PER_SEC)
}
