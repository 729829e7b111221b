//! CPU time from `/proc` (through `procfs`), shared by the harness (the router's, the relay's and the whole
//! machine's) and the `group_commits` example (its own).

use procfs::process::Process;
use procfs::{CpuTime, CurrentSI, KernelStats};

/// User + system CPU seconds the process `pid` (`None`: this process) has consumed so far, all its threads.
pub fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let process = match pid {
        Some(pid) => Process::new(i32::try_from(pid)?)?,
        None => Process::myself()?,
    };
    let stat = process.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// The whole machine's CPU time, summed over its cores: busy (every process, the kernel's interrupts and time
/// stolen by the hypervisor) and idle (time a core waited for I/O counts as idle: nothing was ready to run).
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(dead_code)] // `group_commits` shares this file and reads only its own process.
pub struct MachineCpu {
    pub busy_s: f64,
    pub idle_s: f64,
    /// Cores online.
    pub cores: usize,
}

#[allow(dead_code)]
impl MachineCpu {
    /// Totals since boot; take two and subtract ([`since`](Self::since)).
    pub fn now() -> anyhow::Result<MachineCpu> {
        let stats = KernelStats::current()?;
        Ok(MachineCpu::from_ticks(&stats.total, stats.cpu_time.len(), procfs::ticks_per_second()))
    }

    fn from_ticks(total: &CpuTime, cores: usize, ticks_per_s: u64) -> MachineCpu {
        let optional = |ticks: Option<u64>| ticks.unwrap_or(0);
        // `guest` and `guest_nice` are counted in `user` and `nice` already.
        let busy = total.user
            + total.nice
            + total.system
            + optional(total.irq)
            + optional(total.softirq)
            + optional(total.steal);
        let idle = total.idle + optional(total.iowait);
        let seconds = |ticks: u64| ticks as f64 / ticks_per_s as f64;
        MachineCpu { busy_s: seconds(busy), idle_s: seconds(idle), cores }
    }

    /// What the machine did from `earlier` until `self`.
    pub fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu { busy_s: self.busy_s - earlier.busy_s, idle_s: self.idle_s - earlier.idle_s, cores: self.cores }
    }

    /// The busy share of all cores' time over a span (NaN for an empty one).
    pub fn busy_share(&self) -> f64 {
        self.busy_s / (self.busy_s + self.idle_s)
    }
}

#[cfg(test)]
mod tests {
    use procfs::prelude::FromReadSI;
    use procfs::ExplicitSystemInfo;

    use super::*;

    #[test]
    fn busy_is_everything_but_idle_and_iowait() {
        let stat =
            "cpu  100 20 30 400 50 6 7 8 90 10\ncpu0 50 10 15 200 25 3 3 4 45 5\ncpu1 50 10 15 200 25 3 4 4 45 5\n\
                    ctxt 1\nbtime 1\nprocesses 1\n";
        let info =
            ExplicitSystemInfo { boot_time_secs: 0, ticks_per_second: 100, page_size: 4096, is_little_endian: true };
        let stats = KernelStats::from_read(stat.as_bytes(), &info).unwrap();
        let machine = MachineCpu::from_ticks(&stats.total, stats.cpu_time.len(), 100);
        // user 100 + nice 20 + system 30 + irq 6 + softirq 7 + steal 8; guest (90, 10) is inside user and nice.
        assert_eq!(machine, MachineCpu { busy_s: 1.71, idle_s: 4.5, cores: 2 });
        let later = MachineCpu { busy_s: 3.71, idle_s: 5.0, cores: 2 };
        let span = later.since(machine);
        assert!((span.busy_share() - 0.8).abs() < 1e-9, "{span:?}");
    }

    #[test]
    fn this_process_and_this_machine_are_readable() {
        if !std::path::Path::new("/proc/stat").exists() {
            return; // Not Linux: the harness needs /proc and fails with the error there.
        }
        let started = MachineCpu::now().unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let span = MachineCpu::now().unwrap().since(started);
        assert!(span.cores >= 1 && span.busy_s > 0.0, "{span:?}");
        assert!(cpu_seconds(None).unwrap() > 0.0);
        assert!(cpu_seconds(Some(std::process::id())).unwrap() > 0.0);
    }
}
