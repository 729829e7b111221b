//! Starting the router under test as a separate process (so its CPU time and memory can be read from /proc and
//! are not mixed with the harness's), on a fresh database, and tearing it down afterwards even on panic.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";
/// Required with PostgreSQL (64 hex chars); a fixed value is fine for a throwaway database.
const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    Sqlite,
    Postgres,
}

pub struct RouterProcess {
    child: Child,
    pub base_url: String,
    _data_dir: tempfile::TempDir,
    /// The PostgreSQL database created for this run, dropped in `Drop`.
    pg_database: Option<String>,
    pg_admin_url: String,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = &self.pg_database {
            if let Err(error) = psql(&self.pg_admin_url, &format!("DROP DATABASE IF EXISTS \"{name}\"")) {
                eprintln!("warning: could not drop benchmark database {name}: {error:#}");
            }
        }
    }
}

pub struct RouterOptions<'a> {
    pub binary: &'a Path,
    pub database: Database,
    /// e.g. `postgres://postgres@127.0.0.1:5432`; the per-run database name is appended.
    pub pg_url: &'a str,
    pub dispatch_concurrency: usize,
    pub run_tag: &'a str,
}

/// The `switchyard` binary next to the running harness (same cargo profile), unless overridden.
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let dir = exe.parent().context("harness binary has no directory")?;
    let candidate = dir.join(format!("switchyard{}", std::env::consts::EXE_SUFFIX));
    if !candidate.exists() {
        bail!(
            "{} not found: build it in the same profile first (cargo build --release -p switchyard) \
             or pass --switchyard-bin",
            candidate.display()
        );
    }
    Ok(candidate)
}

pub fn free_port() -> anyhow::Result<u16> {
    // Bind-then-release: a tiny race with other processes, acceptable for a benchmark on a quiet machine.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn psql(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    let output = Command::new("psql")
        .args([admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !output.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

impl RouterProcess {
    pub async fn start(options: RouterOptions<'_>) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let port = free_port()?;
        let pg_admin_url = format!("{}/postgres", options.pg_url.trim_end_matches('/'));
        let mut command = Command::new(options.binary);
        command
            .arg("serve")
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHYARD_DATA_DIR", data_dir.path())
            .env("SWITCHYARD_ADMIN_KEY", ADMIN_KEY)
            .env("SWITCHYARD_DEV", "true")
            // Publishes then look up their tenant's schemas, as on a server that allows them (`--event-schema`
            // registers one); builds without schemas ignore the variable.
            .env("SWITCHYARD_EVENT_TYPE_SCHEMAS", "true")
            .env("SWITCHYARD_DISPATCH_CONCURRENCY", options.dispatch_concurrency.to_string())
            // The default log level, as a user runs it (per request and per delivery lines are at debug).
            .env_remove("SWITCHYARD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut pg_database = None;
        if options.database == Database::Postgres {
            let name = format!("switchyard_bench_{}_{}", std::process::id(), options.run_tag);
            psql(&pg_admin_url, &format!("CREATE DATABASE \"{name}\""))?;
            command
                .env("SWITCHYARD_DATABASE_URL", format!("{}/{name}", options.pg_url.trim_end_matches('/')))
                .env("SWITCHYARD_MASTER_KEY", MASTER_KEY);
            pg_database = Some(name);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                if let Some(name) = &pg_database {
                    let _ = psql(&pg_admin_url, &format!("DROP DATABASE IF EXISTS \"{name}\""));
                }
                return Err(error).with_context(|| format!("starting {}", options.binary.display()));
            }
        };
        let mut router = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            _data_dir: data_dir,
            pg_database,
            pg_admin_url,
        };
        router.wait_ready().await?;
        Ok(router)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("switchyard exited during start-up: {status}");
            }
            if let Ok(response) = client.get(format!("{}/readyz", self.base_url)).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("switchyard not ready after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (a crash mid-run must fail the benchmark, not hang it).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("switchyard exited during the run: {status}");
        }
        Ok(())
    }

    /// User + system CPU seconds consumed so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        crate::proc_cpu::cpu_seconds(Some(self.pid()))
    }

    /// Bytes the router has caused to be written to storage so far (`write_bytes` in `/proc/<pid>/io`: each page
    /// counted when it is dirtied, so a page rewritten before it reaches the disk counts once). On SQLite that is
    /// the WAL and the checkpoints into the database file; PostgreSQL writes in processes of its own.
    pub fn written_bytes(&self) -> anyhow::Result<u64> {
        Ok(self.proc()?.io()?.write_bytes)
    }

    /// Peak RSS (`VmHWM` in `/proc/<pid>/status`) in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.proc()?.status()?.vmhwm.context("no VmHWM in /proc/<pid>/status")
    }

    /// Current RSS (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.proc()?.status()?.vmrss.context("no VmRSS in /proc/<pid>/status")
    }

    fn proc(&self) -> anyhow::Result<procfs::process::Process> {
        Ok(procfs::process::Process::new(i32::try_from(self.pid())?)?)
    }
}
