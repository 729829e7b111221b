//! Turning one run's raw measurements into the figures the issue asks for, and printing them.

use serde::Serialize;

use crate::disk::DiskBaseline;
use crate::plugins::PluginCalls;
use crate::proc_cpu::MachineCpu;
use crate::receiver::Receipt;
use crate::threads::ThreadKind;

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub database: String,
    pub endpoints: usize,
    pub events: u64,
    pub deliveries: u64,
    pub publishers: usize,
    /// Events per publish request (1: `POST /events`).
    pub events_per_request: u64,
    pub dispatch_concurrency: usize,
    /// Events/s accepted (202) over the whole publishing phase.
    pub ingest_per_s: f64,
    /// Deliveries/s received between the 10 % and 90 % arrivals.
    pub deliver_per_s: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub e2e_max_ms: f64,
    pub router_cpu_s_per_1000: f64,
    /// KiB the router wrote to storage per delivery, from publish start until it records every delivery finished
    /// (`/proc/<pid>/io`); the same span as the CPU figure.
    pub router_written_kib_per_delivery: f64,
    pub router_peak_rss_mib: f64,
    /// The router's threads by kind over the same span as the CPU figure: time on a CPU and time runnable but
    /// waiting for one, as shares of the span (empty where the kernel keeps no schedstat).
    pub router_threads: Vec<ThreadKind>,
    /// `queued` scenario: the router's RSS with every delivery still queued (receiver holding responses).
    pub queued_rss_mib: Option<f64>,
    pub baseline_per_s: f64,
    pub deliver_over_baseline: f64,
    /// The whole machine (every process: the harness's client and receiver too) while the baseline ran, per
    /// request.
    pub baseline_machine: MachineFigures,
    /// The whole machine over the same span as the router's CPU, per delivery.
    pub machine: MachineFigures,
    /// What `deliver / baseline` would be if the run's machine CPU per delivery kept every core busy: a ceiling
    /// set by CPU alone, however short the router's waits became. Closed-loop scenarios only (see
    /// `Scenario::closed_loop`).
    pub cpu_ceiling_over_baseline: Option<f64>,
    /// `--relay`: what a relay that stores nothing reached with the same publishing and fan-out (see `relay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayOutcome>,
    /// `--relay` on SQLite, closed-loop runs: the rate the relay's work plus this run's SQLite work alone allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_and_store_bound: Option<RelayAndStoreBound>,
    /// The disk's commit latency in the same run (see `disk`).
    pub disk: DiskBaseline,
    /// Requests the receiver answered 500 (failure scenario) and the retries the router recorded.
    pub receiver_failures: u64,
    pub retried_deliveries: u64,
    /// Receipts beyond the first per (event, endpoint): allowed only for deliveries the router retried.
    pub duplicate_receipts: u64,
    /// Seconds from the first publish until the last delivery was recorded as succeeded.
    pub wall_s: f64,
    /// `wasm` scenario: the router's own per-call figures for each plugin version (its last 1,024 calls).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugin_calls: Vec<PluginCalls>,
}

/// The whole machine's CPU over a span of work.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MachineFigures {
    /// Busy CPU µs, all cores and processes, per request or delivery.
    pub cpu_us_per_item: f64,
    /// The busy share of all cores' time.
    pub busy: f64,
    pub cores: usize,
}

impl MachineFigures {
    pub fn of(span: MachineCpu, items: u64) -> MachineFigures {
        MachineFigures { cpu_us_per_item: span.busy_s / items as f64 * 1e6, busy: span.busy_share(), cores: span.cores }
    }

    /// Items per second with every core busy at this CPU per item.
    pub fn ceiling_per_s(&self) -> f64 {
        self.cores as f64 * 1e6 / self.cpu_us_per_item
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RelayOutcome {
    /// Events/s the relay accepted.
    pub ingest_per_s: f64,
    /// Relayed deliveries/s received, sustained (10 %–90 %).
    pub per_s: f64,
    pub cpu_s_per_1000: f64,
    /// The whole machine's busy CPU per relayed delivery.
    pub machine_cpu_us_per_delivery: f64,
    pub over_baseline: f64,
    /// `deliver` over `per_s`: the share of the ceiling the router reached.
    pub deliver_over_relay: f64,
}

/// An estimate of the floor under the router's cost per delivery, from two parts measured in the same run: the
/// whole machine's CPU per delivery through the relay (publishers, receiver and the relay's two HTTP exchanges) and
/// the CPU of the router's SQLite threads per delivery (its group commits as this run sized them, fsync calls
/// included). A router that did nothing else would still spend their sum, so with every core busy it could deliver
/// no faster than `per_s`. The relay runs in a phase of its own, so noise can put a run a little past it. On
/// PostgreSQL the storing happens in other processes, which this does not single out.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RelayAndStoreBound {
    pub relay_machine_us_per_delivery: f64,
    pub store_cpu_us_per_delivery: f64,
    pub cores: usize,
    pub per_s: f64,
    pub over_baseline: f64,
}

impl RelayAndStoreBound {
    /// The router's threads whose name starts with `store_thread` are the store's (sqlx names SQLite's workers
    /// `sqlx-sqlite-worker-N`). None without any such thread, or when the relay's span was too short for the
    /// kernel's CPU counters (they move in clock ticks) to show any work: then no figure would mean anything.
    pub fn of(
        relay: &RelayOutcome,
        threads: &[ThreadKind],
        store_thread: &str,
        deliveries: u64,
        cores: usize,
        baseline_per_s: f64,
    ) -> Option<RelayAndStoreBound> {
        let store_cpu_s: f64 = threads.iter().filter(|k| k.kind.starts_with(store_thread)).map(|k| k.cpu_s).sum();
        if store_cpu_s <= 0.0 || relay.machine_cpu_us_per_delivery <= 0.0 || deliveries == 0 {
            return None;
        }
        let store_cpu_us_per_delivery = store_cpu_s / deliveries as f64 * 1e6;
        let floor = MachineFigures {
            cpu_us_per_item: relay.machine_cpu_us_per_delivery + store_cpu_us_per_delivery,
            busy: 1.0,
            cores,
        };
        let per_s = floor.ceiling_per_s();
        Some(RelayAndStoreBound {
            relay_machine_us_per_delivery: relay.machine_cpu_us_per_delivery,
            store_cpu_us_per_delivery,
            cores,
            per_s,
            over_baseline: per_s / baseline_per_s,
        })
    }
}

/// The `q`-quantile (nearest rank) of sorted values.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sustained delivery rate: receipts between the 10th and 90th percentile arrival, divided by the time between
/// them, so start-up and the tail of the run (stragglers, retries) do not dilute it. `first_receipts` holds only
/// the first receipt of each (event, endpoint) pair.
pub fn sustained_rate(first_receipts: &[&Receipt]) -> f64 {
    sustained_rate_of(first_receipts.iter().map(|r| r.arrived_ns).collect())
}

/// [`sustained_rate`] of arrival times (Unix nanoseconds, any order).
pub fn sustained_rate_of(mut arrivals: Vec<u64>) -> f64 {
    arrivals.sort_unstable();
    if arrivals.len() < 10 {
        return f64::NAN;
    }
    let lo = arrivals.len() / 10;
    let hi = arrivals.len() * 9 / 10;
    let span_s = (arrivals[hi] - arrivals[lo]) as f64 / 1e9;
    if span_s <= 0.0 {
        return f64::NAN;
    }
    (hi - lo) as f64 / span_s
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub fn print_table(outcome: &Outcome) {
    let o = outcome;
    println!();
    println!(
        "== {} ({}; {} endpoint(s), {} events, {} deliveries, {} publishers{}, dispatch concurrency {}) ==",
        o.scenario,
        o.database,
        o.endpoints,
        o.events,
        o.deliveries,
        o.publishers,
        if o.events_per_request > 1 {
            format!(" x {} events per request", o.events_per_request)
        } else {
            String::new()
        },
        o.dispatch_concurrency
    );
    let rows = [
        ("ingest", format!("{:.0} events/s accepted (202)", o.ingest_per_s)),
        ("deliver", format!("{:.0} deliveries/s (sustained, 10-90 %)", o.deliver_per_s)),
        ("e2e", format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", o.e2e_p50_ms, o.e2e_p99_ms, o.e2e_max_ms)),
        ("router cpu", format!("{:.3} CPU s per 1,000 deliveries", o.router_cpu_s_per_1000)),
        (
            "router disk",
            format!("{:.1} KiB written per delivery (/proc/<pid>/io write_bytes)", o.router_written_kib_per_delivery),
        ),
        ("router threads", threads_text(&o.router_threads)),
        ("router rss", format!("{:.1} MiB peak (VmHWM)", o.router_peak_rss_mib)),
        (
            "router rss queued",
            o.queued_rss_mib.map_or("-".into(), |m| format!("{m:.1} MiB with all {} deliveries queued", o.deliveries)),
        ),
        ("baseline", format!("{:.0} requests/s (reqwest straight to the receiver)", o.baseline_per_s)),
        ("deliver/baseline", format!("{:.3}", o.deliver_over_baseline)),
        ("machine cpu", machine_text(o)),
        (
            "cpu ceiling",
            o.cpu_ceiling_over_baseline.map_or("- (not a closed-loop run)".into(), |ceiling| {
                format!(
                    "{ceiling:.3} of baseline: {:.0} deliveries/s with all {} cores busy at {:.0} µs each",
                    o.machine.ceiling_per_s(),
                    o.machine.cores,
                    o.machine.cpu_us_per_item
                )
            }),
        ),
        (
            "disk fsync",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {:.1} stalls > 10 ms per s ({} syncs, same filesystem)",
                o.disk.p50_ms, o.disk.p99_ms, o.disk.max_ms, o.disk.stalls_per_s, o.disk.syncs
            ),
        ),
        (
            "retries",
            format!(
                "{} receiver 500s, {} deliveries retried, {} duplicate receipts",
                o.receiver_failures, o.retried_deliveries, o.duplicate_receipts
            ),
        ),
        ("wall", format!("{:.1} s publish→all succeeded", o.wall_s)),
    ];
    for (name, value) in rows {
        println!("  {name:<17} {value}");
    }
    if let Some(r) = &o.relay {
        let relay = format!(
            "{:.0} deliveries/s ({:.0} events/s accepted) through a relay that stores nothing, {:.3} of baseline; \
             relay cpu {:.3} s per 1,000; machine {:.0} µs per delivery",
            r.per_s, r.ingest_per_s, r.over_baseline, r.cpu_s_per_1000, r.machine_cpu_us_per_delivery
        );
        println!("  {:<17} {relay}", "relay");
        println!("  {:<17} {:.3}", "deliver/relay", r.deliver_over_relay);
    }
    if let Some(b) = &o.relay_and_store_bound {
        let bound = format!(
            "{:.3} of baseline: {:.0} deliveries/s with all {} cores busy at the relay's {:.0} µs (machine) plus \
             SQLite's {:.0} µs (router's sqlx-sqlite threads) per delivery",
            b.over_baseline, b.per_s, b.cores, b.relay_machine_us_per_delivery, b.store_cpu_us_per_delivery
        );
        println!("  {:<17} {bound}", "relay+store bound");
    }
    for p in &o.plugin_calls {
        let us = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "  {:<17} {} calls, {} errors, per call p50 {} µs, p99 {} µs (router-measured, last 1,024 calls; {})",
            format!("plugin {}", p.plugin),
            p.calls,
            p.errors,
            us(p.p50_us),
            us(p.p99_us),
            p.sha256.get(..12).unwrap_or(&p.sha256)
        );
    }
}

/// The median, least and greatest of one figure over several runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The spread of `values`, leaving out the non-finite ones (a rate over too few receipts is NaN); `None` if none is
/// left. The median of an even count is the mean of the middle two.
pub fn spread(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    let (&min, &max) = (values.first()?, values.last()?);
    let middle = values.len() / 2;
    let median =
        if values.len().is_multiple_of(2) { (values[middle - 1] + values[middle]) / 2.0 } else { values[middle] };
    Some(Spread { median, min, max })
}

/// After several runs of one scenario: the median, least and greatest of the figures the targets are about.
pub fn print_spread(outcomes: &[Outcome]) {
    let Some(first) = outcomes.first() else { return };
    println!();
    println!("== {} ({}): {} runs, median (least – greatest) ==", first.scenario, first.database, outcomes.len());
    for (name, value) in spread_rows(outcomes) {
        println!("  {name:<17} {value}");
    }
}

fn spread_rows(outcomes: &[Outcome]) -> Vec<(&'static str, String)> {
    type Figure = fn(&Outcome) -> f64;
    let figures: [(&str, Figure, usize, &str); 15] = [
        ("ingest", |o| o.ingest_per_s, 0, "events/s"),
        ("deliver", |o| o.deliver_per_s, 0, "deliveries/s"),
        ("e2e p50", |o| o.e2e_p50_ms, 1, "ms"),
        ("e2e p99", |o| o.e2e_p99_ms, 1, "ms"),
        ("router cpu", |o| o.router_cpu_s_per_1000, 3, "CPU s per 1,000 deliveries"),
        ("baseline", |o| o.baseline_per_s, 0, "requests/s"),
        ("deliver/baseline", |o| o.deliver_over_baseline, 3, ""),
        ("machine cpu", |o| o.machine.cpu_us_per_item, 0, "µs per delivery (every process)"),
        ("baseline machine", |o| o.baseline_machine.cpu_us_per_item, 0, "µs per request (every process)"),
        ("cpu ceiling", |o| o.cpu_ceiling_over_baseline.unwrap_or(f64::NAN), 3, "of baseline"),
        // NaN (left out of the spread) in runs without `--relay`.
        ("relay", |o| o.relay.map_or(f64::NAN, |r| r.per_s), 0, "deliveries/s"),
        ("deliver/relay", |o| o.relay.map_or(f64::NAN, |r| r.deliver_over_relay), 3, ""),
        (
            "store cpu",
            |o| o.relay_and_store_bound.map_or(f64::NAN, |b| b.store_cpu_us_per_delivery),
            0,
            "µs per delivery (SQLite threads)",
        ),
        // The rate moves less than the ratio: the baseline is the noisiest figure of a run.
        ("relay+store bound", |o| o.relay_and_store_bound.map_or(f64::NAN, |b| b.per_s), 0, "deliveries/s"),
        ("bound/baseline", |o| o.relay_and_store_bound.map_or(f64::NAN, |b| b.over_baseline), 3, ""),
    ];
    figures
        .into_iter()
        .map(|(name, figure, decimals, unit)| {
            let text = match spread(outcomes.iter().map(figure)) {
                Some(s) => format!("{:.decimals$} ({:.decimals$} – {:.decimals$}) {unit}", s.median, s.min, s.max),
                None => "-".into(),
            };
            (name, text.trim_end().to_string())
        })
        // The relay's rows only where it was measured, the ceiling and the store's CPU only where they apply.
        .filter(|(name, text)| {
            let optional = name.contains("relay") || ["cpu ceiling", "store cpu", "bound/baseline"].contains(name);
            !(optional && text == "-")
        })
        .collect()
}

/// The run's and the baseline's whole-machine CPU, each per item and as a busy share.
fn machine_text(o: &Outcome) -> String {
    format!(
        "{:.0} µs per delivery, {:.0} % of the cores busy; baseline {:.0} µs per request, {:.0} % busy \
         (every process, /proc/stat)",
        o.machine.cpu_us_per_item,
        o.machine.busy * 100.0,
        o.baseline_machine.cpu_us_per_item,
        o.baseline_machine.busy * 100.0
    )
}

/// The kinds that were on a CPU at least 1 % of the span: `name ×threads on a CPU % / waiting for one %`.
fn threads_text(kinds: &[ThreadKind]) -> String {
    let shown: Vec<String> = kinds
        .iter()
        .filter(|k| k.on_cpu >= 0.01)
        .map(|k| format!("{} ×{} {:.0} % / {:.0} %", k.kind, k.threads, k.on_cpu * 100.0, k.waiting * 100.0))
        .collect();
    if shown.is_empty() {
        return "-".into();
    }
    format!("{} (on a CPU / runnable, waiting for one)", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_kinds_show_the_busy_ones() {
        let kind = |kind: &str, threads, on_cpu, waiting| ThreadKind {
            kind: kind.into(),
            threads,
            on_cpu,
            waiting,
            cpu_s: 0.0,
        };
        let kinds = [
            kind("tokio-rt-worker", 2, 0.713, 0.953),
            kind("sqlx-sqlite-wor", 6, 0.41, 0.336),
            kind("idle", 3, 0.001, 0.0),
        ];
        assert_eq!(
            threads_text(&kinds),
            "tokio-rt-worker ×2 71 % / 95 %, sqlx-sqlite-wor ×6 41 % / 34 % (on a CPU / runnable, waiting for one)"
        );
        assert_eq!(threads_text(&[]), "-");
    }

    #[test]
    fn the_cpu_ceiling_keeps_every_core_busy() {
        // 2 cores, 1.5 busy CPU s over 10,000 deliveries: 150 µs each, so 13,333/s with both cores busy.
        let span = MachineCpu { busy_s: 1.5, idle_s: 0.5, cores: 2 };
        let figures = MachineFigures::of(span, 10_000);
        assert!((figures.cpu_us_per_item - 150.0).abs() < 1e-9, "{figures:?}");
        assert!((figures.busy - 0.75).abs() < 1e-9, "{figures:?}");
        assert!((figures.ceiling_per_s() - 13_333.33).abs() < 0.01, "{figures:?}");
    }

    #[test]
    fn the_relay_and_store_bound_adds_the_store_threads_to_the_relay() {
        let relay = RelayOutcome {
            ingest_per_s: 40_000.0,
            per_s: 40_000.0,
            cpu_s_per_1000: 0.025,
            machine_cpu_us_per_delivery: 50.0,
            over_baseline: 0.66,
            deliver_over_relay: 0.3,
        };
        let kind = |kind: &str, cpu_s| ThreadKind { kind: kind.into(), threads: 1, on_cpu: 0.3, waiting: 0.0, cpu_s };
        // 0.6 s of SQLite threads (two of them) over 20,000 deliveries: 30 µs each; with the relay's 50 µs, 80 µs
        // per delivery, so 25,000/s on 2 cores, 0.5 of a 50,000/s baseline. The tokio workers do not count.
        let threads = [kind("tokio-rt-worker", 3.0), kind("sqlx-sqlite-wor", 0.5), kind("sqlx-sqlite-w", 0.1)];
        let bound = RelayAndStoreBound::of(&relay, &threads, crate::threads::SQLITE_THREAD, 20_000, 2, 50_000.0)
            .expect("a bound");
        assert!((bound.store_cpu_us_per_delivery - 30.0).abs() < 1e-9, "{bound:?}");
        assert!((bound.per_s - 25_000.0).abs() < 1e-6, "{bound:?}");
        assert!((bound.over_baseline - 0.5).abs() < 1e-9, "{bound:?}");
        // No store thread seen (PostgreSQL, or a kernel without schedstat): no bound.
        assert!(
            RelayAndStoreBound::of(&relay, &threads[..1], crate::threads::SQLITE_THREAD, 20_000, 2, 50_000.0).is_none()
        );
        // A relay run too short for the CPU counters to move (CI's smoke counts): no bound either.
        let unmeasured = RelayOutcome { machine_cpu_us_per_delivery: 0.0, ..relay };
        assert!(RelayAndStoreBound::of(&unmeasured, &threads, crate::threads::SQLITE_THREAD, 60, 2, 50_000.0).is_none());
    }

    #[test]
    fn spread_of_runs() {
        assert_eq!(spread([3.0, 1.0, 2.0]), Some(Spread { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(spread([4.0, 1.0, 3.0, 2.0]), Some(Spread { median: 2.5, min: 1.0, max: 4.0 }));
        // A run too short for a sustained rate does not drag the others.
        assert_eq!(spread([f64::NAN, 5.0]), Some(Spread { median: 5.0, min: 5.0, max: 5.0 }));
        assert_eq!(spread([f64::NAN]), None);
        assert_eq!(spread([]), None);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), 50);
        assert_eq!(quantile(&values, 0.99), 99);
        assert_eq!(quantile(&values, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn sustained_rate_ignores_head_and_tail() {
        // 100 receipts 1 ms apart, then one straggler 10 s later: the straggler must not count.
        let mut receipts: Vec<Receipt> = (0..100)
            .map(|i| Receipt { endpoint: 0, event_id: i.to_string(), arrived_ns: i * 1_000_000, latency_ns: 0 })
            .collect();
        receipts.push(Receipt { endpoint: 0, event_id: "x".into(), arrived_ns: 10_000_000_000, latency_ns: 0 });
        let refs: Vec<&Receipt> = receipts.iter().collect();
        let rate = sustained_rate(&refs);
        assert!((rate - 1000.0).abs() < 1.0, "{rate}");
    }
}
