//! The scenarios and the run of one: receiver + baseline, router on a fresh database, endpoints, publishing,
//! waiting for every delivery, checking exactly-once by the router's record, and computing the figures.
//!
//! `wasm` is `fanout` with a WebAssembly filter (`amount-threshold`, keeps every event) and transform (`redact`,
//! removes `currency`; the body becomes the bare payload) bound to every endpoint, both uploaded through the admin
//! API first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::json;

use crate::client::{self, Api};
use crate::proc_cpu::MachineCpu;
use crate::receiver::{Expect, Receipt, Receiver};
use crate::report::{ms, quantile, sustained_rate, MachineFigures, Outcome, RelayAndStoreBound, RelayOutcome};
use crate::router_process::{Database, RouterOptions, RouterProcess};
use crate::{disk, plugins, relay, threads};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// One endpoint, every event delivered to it.
    Single,
    /// Fan-out: every event to 10 endpoints.
    Fanout,
    /// 10 endpoints, each with a JSONPath filter; every event matches half of them.
    Jsonpath,
    /// One endpoint whose receiver fails 20 % of requests; retried after 1 s.
    Failing,
    /// 10,000 deliveries queued while the receiver holds its responses (router RSS with a backlog), then drained.
    Queued,
    /// A fixed publish rate (default 1,000 events/s for 30 s) for latency under steady load.
    Steady,
    /// Fan-out to 10 endpoints, each running a WASM filter (keeps every event) and a WASM transform (`redact`).
    Wasm,
}

/// Knobs shared by all scenarios (from the command line).
#[derive(Debug, Clone)]
pub struct Params {
    pub binary: PathBuf,
    pub database: Database,
    pub pg_url: String,
    /// Overrides the scenario's default event count (closed-loop scenarios).
    pub events: Option<u64>,
    pub publishers: usize,
    /// Events per publish request in closed-loop scenarios (1: `POST /events`; more: `POST /events/batch`).
    pub batch: u64,
    pub dispatch_concurrency: usize,
    pub baseline_requests: u64,
    pub disk_baseline: Duration,
    pub rate: u64,
    pub duration: Duration,
    pub timeout: Duration,
    /// Least size of each event's data in bytes (0: the bench's own, about 90 bytes).
    pub payload_bytes: usize,
    /// Also measure a relay that stores nothing, where the scenario allows (see [`Scenario::relays`]).
    pub relay: bool,
    /// Register a JSON Schema for the bench's event type before publishing.
    pub event_schema: bool,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Single => "single",
            Scenario::Fanout => "fanout",
            Scenario::Jsonpath => "jsonpath",
            Scenario::Failing => "failing",
            Scenario::Queued => "queued",
            Scenario::Steady => "steady",
            Scenario::Wasm => "wasm",
        }
    }

    /// Whether `--relay` applies: closed-loop publishing, one event per request, every event to every endpoint of a
    /// receiver that answers at once (what the relay does; no filters, failures, held answers or plugins).
    pub fn relays(self) -> bool {
        matches!(self, Scenario::Single | Scenario::Fanout)
    }

    /// Whether the `cpu ceiling` applies: publishing and delivering overlap as fast as the machine lets them, so
    /// the CPU per delivery over the run is what the sustained `deliver` rate costs. Not where the rate is set
    /// (`steady`), the deliveries wait for publishing to end (`queued`) or for a retry schedule (`failing`).
    pub fn closed_loop(self) -> bool {
        matches!(self, Scenario::Single | Scenario::Fanout | Scenario::Jsonpath | Scenario::Wasm)
    }

    fn endpoints(self) -> usize {
        match self {
            Scenario::Fanout | Scenario::Jsonpath | Scenario::Wasm => 10,
            _ => 1,
        }
    }

    fn default_events(self) -> u64 {
        match self {
            Scenario::Single | Scenario::Queued => 10_000,
            Scenario::Fanout | Scenario::Jsonpath | Scenario::Wasm => 2_000,
            Scenario::Failing => 5_000,
            // Derived from rate × duration instead.
            Scenario::Steady => 0,
        }
    }

    /// How many deliveries publishing `seq` should create: the router's 202 must agree.
    fn expected_deliveries(self, events: u64) -> u64 {
        match self {
            // Each event's `parity` matches the filter of exactly half of the endpoints.
            Scenario::Jsonpath => events * self.endpoints() as u64 / 2,
            _ => events * self.endpoints() as u64,
        }
    }
}

async fn create_endpoints(scenario: Scenario, api: &Api, receiver: &Receiver) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..scenario.endpoints() {
        let url = receiver.url(&format!("/ep/{i}"));
        let (filter, extra) = match scenario {
            // Short schedule so the run finishes; enough attempts that 20 % failures never exhaust them
            // (0.2^10 per delivery).
            Scenario::Failing => (None, json!({"retry": {"schedule": ["1s"], "max_attempts": 10}})),
            Scenario::Jsonpath => (Some(format!("$[?@.data.parity == {} && @.data.amount > 100]", i % 2)), json!({})),
            // The receiver holds requests until publishing ends: they must not time out and be retried meanwhile.
            Scenario::Queued => (None, json!({"timeout_secs": 300})),
            // Every bench event has `amount` 1234, so the filter keeps all of them and every delivery is sent. A
            // failed plugin call (e.g. its 50 ms deadline hit on an overloaded machine) fails the attempt: retry
            // after 1 s rather than the default 60 s, so the run still finishes (it shows under `retries`).
            Scenario::Wasm => (
                None,
                json!({
                    "filter": {"plugin": plugins::FILTER, "config": {"field": "amount", "above": 100}},
                    "transform": {"plugin": plugins::TRANSFORM, "config": {"fields": [plugins::REDACTED_FIELD]}},
                    "retry": {"schedule": ["1s"], "max_attempts": 10},
                }),
            ),
            _ => (None, json!({})),
        };
        ids.push(api.create_endpoint(&url, filter.as_deref(), extra).await?);
    }
    Ok(ids)
}

pub async fn run(scenario: Scenario, params: &Params) -> anyhow::Result<Outcome> {
    let fail_every = (scenario == Scenario::Failing).then_some(5);
    let expect = match scenario {
        Scenario::Wasm => Expect::Payload { redacted: plugins::REDACTED_FIELD },
        _ => Expect::Envelope,
    };
    // Read the components before starting anything, so a missing build fails at once with the command to run.
    let components = match scenario {
        Scenario::Wasm => vec![
            (plugins::FILTER, plugins::read_component(plugins::FILTER)?),
            (plugins::TRANSFORM, plugins::read_component(plugins::TRANSFORM)?),
        ],
        _ => Vec::new(),
    };
    let receiver = Receiver::start(fail_every, scenario == Scenario::Queued, expect).await?;
    let machine_before_baseline = MachineCpu::now()?;
    let baseline = client::baseline(
        &receiver.url("/baseline"),
        params.baseline_requests,
        params.dispatch_concurrency,
        params.payload_bytes,
    )
    .await?;
    let baseline_machine = MachineCpu::now()?.since(machine_before_baseline);
    let relay = if params.relay && scenario.relays() && params.batch == 1 {
        let events = params.events.unwrap_or(scenario.default_events());
        Some(
            relay::measure(
                &receiver,
                scenario.endpoints(),
                events,
                params.publishers,
                params.dispatch_concurrency,
                params.payload_bytes,
                params.timeout,
            )
            .await?,
        )
    } else {
        None
    };
    // Where the router's database will be: the temporary directory, on the same filesystem.
    let disk = disk::measure(&std::env::temp_dir(), params.disk_baseline)?;

    let mut router = RouterProcess::start(RouterOptions {
        binary: &params.binary,
        database: params.database,
        pg_url: &params.pg_url,
        dispatch_concurrency: params.dispatch_concurrency,
        run_tag: scenario.name(),
    })
    .await?;
    let api =
        Arc::new(Api::new(&router.base_url, params.publishers.max(params.rate as usize), params.payload_bytes).await?);
    let mut uploaded = Vec::new();
    for (name, component) in components {
        uploaded.push((name, api.upload_plugin(name, component).await?));
    }
    let endpoint_ids = create_endpoints(scenario, &api, &receiver).await?;
    if params.event_schema {
        api.register_event_schema().await?;
    }

    let cpu_before = router.cpu_seconds()?;
    let machine_before = MachineCpu::now()?;
    let written_before = router.written_bytes()?;
    let threads_before = threads::Snapshot::take(router.pid());
    let started = Instant::now();
    let published = match scenario {
        // One second's worth of requests in flight at most: enough to hide the router's response time.
        Scenario::Steady => api.publish_fixed_rate(params.rate, params.duration, params.rate.max(1) as usize).await?,
        _ => {
            let events = params.events.unwrap_or(scenario.default_events());
            api.publish_closed_loop(events, params.publishers, params.batch).await?
        }
    };
    let expected = scenario.expected_deliveries(published.accepted);
    ensure!(
        published.deliveries == expected,
        "router created {} deliveries for {} events, expected {expected}",
        published.deliveries,
        published.accepted
    );
    let mut queued_rss_mib = None;
    if scenario == Scenario::Queued {
        queued_rss_mib = Some(router.rss_kib()? as f64 / 1024.0);
        receiver.open_gate();
    }

    wait_for_receipts(&receiver, &mut router, expected, started + params.timeout).await?;
    wait_until_router_finished(&api, &mut router, started + params.timeout).await?;
    let wall = started.elapsed();
    // Taken before the check lists every delivery: that listing is the harness's work, not a delivery's.
    let cpu = router.cpu_seconds()? - cpu_before;
    let machine = MachineCpu::now()?.since(machine_before);
    let written = router.written_bytes()?.saturating_sub(written_before);
    let router_threads = match (threads_before, threads::Snapshot::take(router.pid())) {
        (Some(before), Some(after)) => before.until(&after),
        _ => Vec::new(),
    };
    let records = wait_for_router_record(&api, &mut router, expected, started + params.timeout).await?;
    let peak_rss_mib = router.peak_rss_kib()? as f64 / 1024.0;
    let mut plugin_calls = Vec::new();
    if scenario == Scenario::Wasm {
        for name in [plugins::FILTER, plugins::TRANSFORM] {
            plugin_calls.extend(api.plugin_calls(name).await?);
        }
        // A failed call fails its attempt, which is retried (and counted under `retries`): not a lost delivery,
        // but worth seeing (e.g. the call deadline hit on an overloaded machine).
        // Every delivery ran both plugins, on the uploaded versions, at least once.
        for (name, sha256) in &uploaded {
            let calls: u64 = plugin_calls.iter().filter(|p| p.sha256 == *sha256).map(|p| p.calls).sum();
            ensure!(calls >= expected, "plugin {name} ({sha256}) ran {calls} times for {expected} deliveries");
        }
        for failing in plugin_calls.iter().filter(|p| p.errors > 0) {
            eprintln!("warning: plugin {} failed {} of {} calls", failing.plugin, failing.errors, failing.calls);
        }
        if plugin_calls.iter().any(|p| p.errors > 0) {
            for retried in records.iter().filter(|d| d.attempts > 1).take(3) {
                for error in api.attempt_errors(&retried.id).await? {
                    eprintln!("warning: delivery {} attempt failed: {error}", retried.id);
                }
            }
        }
    }
    drop(router);

    let receipts = receiver.recorded.receipts.lock().expect("receiver lock").clone();
    let check = verify(&records, &receipts, &endpoint_ids)?;
    ensure!(receiver.recorded.malformed.load(Ordering::Relaxed) == 0, "the receiver got malformed deliveries");

    let mut latencies: Vec<u64> = check.first_receipts.iter().map(|r| r.latency_ns).collect();
    latencies.sort_unstable();
    let deliver = sustained_rate(&check.first_receipts);
    let machine = MachineFigures::of(machine, expected);
    let relay = relay.map(|r| RelayOutcome {
        ingest_per_s: r.ingest_per_s,
        per_s: r.per_s,
        cpu_s_per_1000: r.cpu_s_per_1000,
        machine_cpu_us_per_delivery: r.machine_cpu_us_per_delivery,
        over_baseline: r.per_s / baseline,
        deliver_over_relay: deliver / r.per_s,
    });
    // On PostgreSQL the storing runs in the database's processes, outside the router's threads.
    let relay_and_store_bound = relay.as_ref().filter(|_| params.database == Database::Sqlite).and_then(|r| {
        RelayAndStoreBound::of(r, &router_threads, threads::SQLITE_THREAD, expected, machine.cores, baseline)
    });
    Ok(Outcome {
        scenario: scenario.name().to_string(),
        database: format!("{:?}", params.database).to_lowercase(),
        endpoints: endpoint_ids.len(),
        events: published.accepted,
        deliveries: expected,
        publishers: if scenario == Scenario::Steady { params.rate as usize } else { params.publishers },
        events_per_request: if scenario == Scenario::Steady { 1 } else { params.batch },
        dispatch_concurrency: params.dispatch_concurrency,
        ingest_per_s: published.accepted as f64 / published.elapsed.as_secs_f64(),
        deliver_per_s: deliver,
        e2e_p50_ms: ms(quantile(&latencies, 0.50)),
        e2e_p99_ms: ms(quantile(&latencies, 0.99)),
        e2e_max_ms: ms(latencies.last().copied().unwrap_or(0)),
        router_cpu_s_per_1000: cpu / expected as f64 * 1000.0,
        router_written_kib_per_delivery: written as f64 / 1024.0 / expected as f64,
        router_peak_rss_mib: peak_rss_mib,
        router_threads,
        queued_rss_mib,
        baseline_per_s: baseline,
        deliver_over_baseline: deliver / baseline,
        baseline_machine: MachineFigures::of(baseline_machine, params.baseline_requests),
        cpu_ceiling_over_baseline: scenario.closed_loop().then(|| machine.ceiling_per_s() / baseline),
        machine,
        relay_and_store_bound,
        relay,
        disk,
        receiver_failures: receiver.recorded.failed.load(Ordering::Relaxed),
        retried_deliveries: check.retried,
        duplicate_receipts: check.duplicates,
        wall_s: wall.as_secs_f64(),
        plugin_calls,
    })
}

/// Waits until the receiver has accepted `expected` receipts (duplicates count too; the exact check follows).
async fn wait_for_receipts(
    receiver: &Receiver,
    router: &mut RouterProcess,
    expected: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let received = receiver.recorded.receipts.lock().expect("receiver lock").len() as u64;
        if received >= expected {
            return Ok(());
        }
        router.check_alive()?;
        if Instant::now() > deadline {
            bail!("timed out: the receiver got {received} of {expected} deliveries");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the router records no delivery as waiting, in flight or due for a retry (the receipt can precede
/// the status update).
async fn wait_until_router_finished(api: &Api, router: &mut RouterProcess, deadline: Instant) -> anyhow::Result<()> {
    loop {
        router.check_alive()?;
        if !api.any_unfinished_delivery().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out: the router still has deliveries waiting, in flight or due for a retry");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every delivery as the router records it, once it records all of them as finished.
async fn wait_for_router_record(
    api: &Api,
    router: &mut RouterProcess,
    expected: u64,
    deadline: Instant,
) -> anyhow::Result<Vec<client::DeliveryRecord>> {
    loop {
        router.check_alive()?;
        let records = api.deliveries().await?;
        let finished = records.iter().filter(|d| d.status == "succeeded" || d.status == "dead").count() as u64;
        if records.len() as u64 >= expected && finished == records.len() as u64 {
            return Ok(records);
        }
        if Instant::now() > deadline {
            bail!("timed out: the router records {finished} of {} deliveries as finished", records.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Check<'a> {
    first_receipts: Vec<&'a Receipt>,
    retried: u64,
    duplicates: u64,
}

/// Exactly-once by the router's record: every delivery succeeded, each (event, endpoint) pair reached the
/// receiver, nothing arrived that the router does not know of, and duplicates only where the router retried.
fn verify<'a>(
    records: &[client::DeliveryRecord],
    receipts: &'a [Receipt],
    endpoint_ids: &[String],
) -> anyhow::Result<Check<'a>> {
    let not_succeeded: Vec<&client::DeliveryRecord> = records.iter().filter(|d| d.status != "succeeded").collect();
    if let Some(d) = not_succeeded.first() {
        bail!(
            "{} deliveries did not succeed, e.g. event {} to {}: {} after {} attempts",
            not_succeeded.len(),
            d.event_id,
            d.endpoint_id,
            d.status,
            d.attempts
        );
    }
    let attempts: HashMap<(&str, &str), i64> =
        records.iter().map(|d| ((d.event_id.as_str(), d.endpoint_id.as_str()), d.attempts)).collect();
    ensure!(attempts.len() == records.len(), "the router recorded two deliveries for one (event, endpoint) pair");
    let mut received: HashMap<(&str, &str), Vec<&Receipt>> = HashMap::new();
    for receipt in receipts {
        let endpoint = endpoint_ids.get(receipt.endpoint).context("receipt for an unknown endpoint index")?;
        received.entry((receipt.event_id.as_str(), endpoint.as_str())).or_default().push(receipt);
    }
    let mut check = Check { first_receipts: Vec::with_capacity(records.len()), retried: 0, duplicates: 0 };
    for (pair, &tries) in &attempts {
        let Some(got) = received.get(pair) else {
            bail!("delivery of event {} to {} is recorded as succeeded but never arrived", pair.0, pair.1);
        };
        if tries > 1 {
            check.retried += 1;
        }
        if got.len() > 1 {
            ensure!(tries > 1, "event {} arrived {} times at {} without a retry", pair.0, got.len(), pair.1);
            check.duplicates += got.len() as u64 - 1;
        }
        check.first_receipts.push(got.iter().min_by_key(|r| r.arrived_ns).expect("non-empty"));
    }
    if let Some(pair) = received.keys().find(|pair| !attempts.contains_key(*pair)) {
        bail!("event {} arrived at {} but the router has no such delivery", pair.0, pair.1);
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &str, endpoint: &str, status: &str, attempts: i64) -> client::DeliveryRecord {
        client::DeliveryRecord {
            id: format!("dlv_{event}_{endpoint}"),
            event_id: event.into(),
            endpoint_id: endpoint.into(),
            status: status.into(),
            attempts,
        }
    }

    fn receipt(endpoint: usize, event: &str, arrived_ns: u64) -> Receipt {
        Receipt { endpoint, event_id: event.into(), arrived_ns, latency_ns: 1 }
    }

    #[test]
    fn exactly_once_passes_and_counts_allowed_duplicates() {
        let ids = vec!["ep_a".to_string(), "ep_b".to_string()];
        let records = [record("e1", "ep_a", "succeeded", 1), record("e1", "ep_b", "succeeded", 2)];
        let receipts = [receipt(0, "e1", 5), receipt(1, "e1", 9), receipt(1, "e1", 7)];
        let check = verify(&records, &receipts, &ids).unwrap();
        assert_eq!((check.retried, check.duplicates), (1, 1));
        // The earliest receipt of a pair is the one whose latency counts.
        assert!(check.first_receipts.iter().any(|r| r.endpoint == 1 && r.arrived_ns == 7));
    }

    #[test]
    fn missing_failed_unknown_or_unexplained_duplicates_fail() {
        let ids = vec!["ep_a".to_string()];
        let ok = [record("e1", "ep_a", "succeeded", 1)];
        let missing = verify(&ok, &[], &ids).err().unwrap();
        assert!(missing.to_string().contains("never arrived"), "{missing}");
        let dead = [record("e1", "ep_a", "dead", 10)];
        assert!(verify(&dead, &[receipt(0, "e1", 1)], &ids).is_err());
        let twice = [receipt(0, "e1", 1), receipt(0, "e1", 2)];
        assert!(verify(&ok, &twice, &ids).err().unwrap().to_string().contains("without a retry"));
        let stranger = [receipt(0, "e1", 1), receipt(0, "e2", 2)];
        assert!(verify(&ok, &stranger, &ids).err().unwrap().to_string().contains("no such delivery"));
    }
}
