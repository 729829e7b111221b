//! `switchyard-bench`: the reproducible end-to-end benchmark of a Switchyard router (see BENCHMARKS.md).
//!
//! Build the router in the same profile first: `cargo build --release -p switchyard -p switchyard-bench`, then
//! `cargo run --release -p switchyard-bench -- <scenario>`. Exits non-zero if any delivery is missing, failed or
//! duplicated without a recorded retry.

mod client;
mod disk;
mod plugins;
#[path = "../shared/proc_cpu.rs"]
mod proc_cpu;
mod receiver;
mod relay;
mod report;
mod router_process;
mod scenarios;
mod threads;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::router_process::Database;
use crate::scenarios::{Params, Scenario};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    /// One endpoint.
    Single,
    /// Every event to 10 endpoints.
    Fanout,
    /// 10 endpoints with a JSONPath filter each; every event matches half of them.
    Jsonpath,
    /// The receiver fails 20 % of requests; 1 s retry schedule.
    Failing,
    /// Deliveries pile up while the receiver holds responses (router RSS with a backlog), then drain.
    Queued,
    /// Fixed publish rate (--rate for --duration-secs) for latency under steady load.
    Steady,
    /// `fanout` with a WASM filter (amount-threshold) and transform (redact) on every endpoint; needs the plugins
    /// built (`cargo build --target wasm32-wasip2 --release -p amount-threshold -p redact …`).
    Wasm,
    /// Every scenario on SQLite (or --database), then `single` and `fanout` on PostgreSQL.
    All,
    /// Every scenario with tiny counts, on --database: for CI, so the harness cannot rot. `wasm` is skipped (with a
    /// message) when the plugin components are not built. Measures the relay too (`--relay`).
    Smoke,
    /// The relay process `--relay` starts (not a scenario).
    #[value(hide = true)]
    RelayServe,
}

#[derive(Debug, Parser)]
#[command(about = "End-to-end benchmark of the Switchyard webhook router")]
struct Cli {
    #[arg(value_enum)]
    scenario: Which,
    /// The switchyard binary [default: `switchyard` next to this binary, i.e. the same cargo profile].
    #[arg(long)]
    switchyard_bin: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Database,
    /// PostgreSQL server (trust auth); a fresh database is created on it per run and dropped afterwards.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg_url: String,
    /// Events to publish [default: per scenario: single/queued 10000, fanout/jsonpath/wasm 2000, failing 5000].
    #[arg(long)]
    events: Option<u64>,
    /// Concurrent publishers (closed loop: each publishes its next event when the previous one is accepted).
    #[arg(long, default_value_t = 50)]
    publishers: usize,
    /// Events per publish request in closed-loop scenarios: 1 publishes through `POST /events`, more through
    /// `POST /events/batch` (at most 100), which takes the publishing HTTP out of the per-delivery cost.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    batch: u64,
    /// SWITCHYARD_DISPATCH_CONCURRENCY for the router, and the concurrency of the baseline client.
    #[arg(long, default_value_t = 1024)]
    dispatch_concurrency: usize,
    /// Requests the baseline client sends straight to the receiver. Enough for a few seconds of sending: a shorter
    /// burst swings with whatever else the machine is doing at that instant.
    #[arg(long, default_value_t = 100_000)]
    baseline_requests: u64,
    /// How long to measure the disk's fsync latency before each scenario, in whole seconds (0: skip).
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    disk_baseline_secs: Duration,
    /// `steady`: events per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// `steady`: how long to publish, in whole seconds.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    duration_secs: Duration,
    /// Give up (and fail) if the deliveries have not all arrived this long after publishing started.
    #[arg(long, default_value = "600", value_parser = parse_secs)]
    timeout_secs: Duration,
    /// Pads each event's data to about this many bytes with a string field (0: the bench's own, about 90 bytes);
    /// the baseline's body is padded alike.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// `single` and `fanout` (one event per request): also measure, before the router, a relay that stores nothing
    /// (hyper in, reqwest out), published to and received alike: a ceiling for `deliver`, and `deliver / relay`.
    #[arg(long)]
    relay: bool,
    /// `relay-serve`: where to listen.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// `relay-serve`: where to post each body (once per occurrence).
    #[arg(long, hide = true)]
    relay_target: Vec<String>,
    /// Give the bench's event type a JSON Schema that its events match, so that every publish is checked against it.
    #[arg(long)]
    event_schema: bool,
    /// Also print each result as one JSON line.
    #[arg(long)]
    json: bool,
    /// Run each scenario this many times in a row, each on a fresh router, database and receiver, and then print
    /// the median, least and greatest of its main figures. On a shared machine the spread between runs is often
    /// wider than the change being measured.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<u64>().map(Duration::from_secs).map_err(|e| format!("{e} (whole seconds)"))
}

const ALL: [Scenario; 7] = [
    Scenario::Single,
    Scenario::Fanout,
    Scenario::Jsonpath,
    Scenario::Failing,
    Scenario::Queued,
    Scenario::Steady,
    Scenario::Wasm,
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.scenario == Which::RelayServe {
        return relay::serve(cli.listen, cli.relay_target, cli.dispatch_concurrency).await;
    }
    if cli.relay && !matches!(cli.scenario, Which::Single | Which::Fanout | Which::All) {
        anyhow::bail!("--relay applies to single and fanout (and to them within all) only");
    }
    if cli.relay && cli.batch > 1 {
        anyhow::bail!("--relay publishes one event per request: leave out --batch");
    }
    let binary = match &cli.switchyard_bin {
        Some(path) => path.clone(),
        None => router_process::default_binary()?,
    };
    let mut params = Params {
        binary,
        database: cli.database,
        pg_url: cli.pg_url.clone(),
        events: cli.events,
        publishers: cli.publishers,
        batch: cli.batch,
        dispatch_concurrency: cli.dispatch_concurrency,
        baseline_requests: cli.baseline_requests,
        disk_baseline: cli.disk_baseline_secs,
        rate: cli.rate,
        duration: cli.duration_secs,
        timeout: cli.timeout_secs,
        payload_bytes: cli.payload_bytes,
        relay: cli.relay,
        event_schema: cli.event_schema,
    };
    let runs: Vec<(Scenario, Database)> = match cli.scenario {
        Which::Single => vec![(Scenario::Single, cli.database)],
        Which::Fanout => vec![(Scenario::Fanout, cli.database)],
        Which::Jsonpath => vec![(Scenario::Jsonpath, cli.database)],
        Which::Failing => vec![(Scenario::Failing, cli.database)],
        Which::Queued => vec![(Scenario::Queued, cli.database)],
        Which::Steady => vec![(Scenario::Steady, cli.database)],
        Which::Wasm => vec![(Scenario::Wasm, cli.database)],
        Which::All => ALL
            .iter()
            .map(|s| (*s, cli.database))
            .chain([(Scenario::Single, Database::Postgres), (Scenario::Fanout, Database::Postgres)])
            .collect(),
        // Served above; nothing to run here.
        Which::RelayServe => Vec::new(),
        Which::Smoke => {
            params.relay = true;
            // Small enough for a debug build to finish in seconds, large enough to exercise every check.
            params.events = Some(cli.events.unwrap_or(60));
            params.publishers = params.publishers.min(8);
            params.baseline_requests = params.baseline_requests.min(500);
            params.disk_baseline = params.disk_baseline.min(Duration::from_millis(200));
            params.rate = params.rate.min(100);
            params.duration = params.duration.min(Duration::from_secs(2));
            params.timeout = params.timeout.min(Duration::from_secs(60));
            let wasm_built = plugins::components_built();
            if !wasm_built {
                eprintln!(
                    "smoke: SKIPPING the wasm scenario: {} not built (build with `{}`)",
                    plugins::component_path(plugins::FILTER).display(),
                    plugins::BUILD_COMMAND
                );
            }
            ALL.iter().filter(|s| wasm_built || **s != Scenario::Wasm).map(|s| (*s, cli.database)).collect()
        }
    };
    for (scenario, database) in runs {
        params.database = database;
        let mut outcomes = Vec::new();
        for run in 1..=cli.runs {
            let outcome = scenarios::run(scenario, &params).await.map_err(|e| {
                e.context(format!("scenario {} on {database:?} FAILED (run {run} of {})", scenario.name(), cli.runs))
            })?;
            report::print_table(&outcome);
            if cli.json {
                println!("{}", serde_json::to_string(&outcome)?);
            }
            outcomes.push(outcome);
        }
        if outcomes.len() > 1 {
            report::print_spread(&outcomes);
        }
    }
    Ok(())
}
