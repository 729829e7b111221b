//! What the server counts for Prometheus, served as text at `GET /metrics` (see `api::metrics`). One [`Metrics`]
//! per server, handed to the parts that count, rather than a process-wide recorder: two servers in one process
//! (the tests run many) keep their own figures.
//!
//! Labels stay few and bounded: outcomes, HTTP methods, route templates and status codes, never tenant, endpoint
//! or event ids, so a scrape stays small however many tenants there are (per-endpoint figures are in the API).

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Seconds, from a millisecond to a minute: commits and API requests.
const SECONDS_BUCKETS: [f64; 16] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0];
/// Receivers' answers: up to the longest endpoint timeout, 300 s.
const ATTEMPT_BUCKETS: [f64; 16] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];
/// An event's age when delivered, which includes its retries (the default schedule spans 31 hours).
const LATENCY_BUCKETS: [f64; 18] = [
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    5.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    6.0 * 3600.0,
    24.0 * 3600.0,
    48.0 * 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    /// "active", "paused" or "disabled".
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// "succeeded", "retry", "dead" or "gone", as the attempt is recorded (counted when it ends, before its record
    /// is committed).
    outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: Cow<'static, str>,
    /// The route's template (`/api/v1/endpoints/{id}`), or "unmatched".
    route: Cow<'static, str>,
    status: u16,
}

/// One plugin call, fresh sandbox included: ten microseconds to its deadline (at most 10 s).
const PLUGIN_CALL_BUCKETS: [f64; 14] =
    [0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCallLabels {
    /// A loaded plugin's name: the admin decides which exist.
    plugin: String,
    /// "filter", "transform" or "retry-policy".
    interface: &'static str,
    /// "ok", or "error" when the call trapped, ran out of time or memory, or answered nonsense.
    result: &'static str,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

fn plugin_call_histogram() -> Histogram {
    Histogram::new(PLUGIN_CALL_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    events_published: Counter,
    deliveries_created: Counter,
    attempts: Family<OutcomeLabels, Counter>,
    /// The family's counters for the usual outcomes, found once: every attempt counts one.
    usual_outcomes: [(&'static str, Counter); 4],
    attempt_duration: Histogram,
    delivery_latency: Histogram,
    deliveries_dropped: Counter,
    attempts_in_flight: Gauge,
    due_lag: Gauge<f64, AtomicU64>,
    waiting_deliveries: Gauge<f64, AtomicU64>,
    endpoints: Family<StatusLabels, Gauge<f64, AtomicU64>>,
    commit_duration: Histogram,
    request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    plugin_calls: Family<PluginCallLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("switchyard"),
            events_published: Counter::default(),
            deliveries_created: Counter::default(),
            attempts: Family::default(),
            usual_outcomes: Default::default(),
            attempt_duration: Histogram::new(ATTEMPT_BUCKETS),
            delivery_latency: Histogram::new(LATENCY_BUCKETS),
            deliveries_dropped: Counter::default(),
            attempts_in_flight: Gauge::default(),
            due_lag: Gauge::default(),
            waiting_deliveries: Gauge::default(),
            endpoints: Family::default(),
            commit_duration: seconds_histogram(),
            request_duration: Family::new_with_constructor(seconds_histogram),
            plugin_calls: Family::new_with_constructor(plugin_call_histogram),
        };
        metrics.usual_outcomes = ["succeeded", "retry", "dead", "gone"].map(|outcome| {
            (outcome, metrics.attempts.get_or_create(&OutcomeLabels { outcome: Cow::Borrowed(outcome) }).clone())
        });
        let registry = &mut metrics.registry;
        registry.register(
            "events_published",
            "Events stored (an idempotent repeat is not counted)",
            metrics.events_published.clone(),
        );
        registry.register(
            "deliveries_created",
            "Deliveries created when events were published",
            metrics.deliveries_created.clone(),
        );
        registry.register("delivery_attempts", "Delivery attempts, by outcome", metrics.attempts.clone());
        registry.register_with_unit(
            "delivery_attempt_duration",
            "Time from sending an attempt's request to its answer (or failure)",
            Unit::Seconds,
            metrics.attempt_duration.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "Time from an event's receipt to its successful delivery, retries included",
            Unit::Seconds,
            metrics.delivery_latency.clone(),
        );
        registry.register(
            "deliveries_dropped",
            "Deliveries a filter plugin dropped",
            metrics.deliveries_dropped.clone(),
        );
        registry.register(
            "delivery_attempts_in_flight",
            "Attempts started and not yet answered",
            metrics.attempts_in_flight.clone(),
        );
        registry.register_with_unit(
            "due_delivery_lag",
            "How long the delivery due first has waited past its time (0 when none has): the backlog, read at scrape",
            Unit::Seconds,
            metrics.due_lag.clone(),
        );
        registry.register(
            "deliveries_waiting",
            "Deliveries waiting for an attempt, every tenant's (up to 100,000), read at scrape",
            metrics.waiting_deliveries.clone(),
        );
        registry.register(
            "endpoints",
            "Endpoints by status, every tenant's, read at scrape",
            metrics.endpoints.clone(),
        );
        registry.register_with_unit(
            "group_commit_duration",
            "Time of one group commit of publishes and attempt records",
            Unit::Seconds,
            metrics.commit_duration.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an API request, by method, route and status (its count is the number of requests)",
            Unit::Seconds,
            metrics.request_duration.clone(),
        );
        registry.register_with_unit(
            "plugin_call_duration",
            "Time of a plugin call, by plugin, interface and result (its count is the number of calls)",
            Unit::Seconds,
            metrics.plugin_calls.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// `published` events newly stored, with `deliveries` deliveries between them.
    pub fn published(&self, published: u64, deliveries: u64) {
        self.events_published.inc_by(published);
        self.deliveries_created.inc_by(deliveries);
    }

    /// An attempt ended with `outcome` after `took`; `since_received` is the event's age when it succeeded.
    pub fn attempted(&self, outcome: &'static str, took: Duration, since_received: Option<Duration>) {
        match self.usual_outcomes.iter().find(|(usual, _)| *usual == outcome) {
            Some((_, counter)) => counter.inc(),
            None => self.attempts.get_or_create(&OutcomeLabels { outcome: Cow::Borrowed(outcome) }).inc(),
        };
        self.attempt_duration.observe(took.as_secs_f64());
        if let Some(latency) = since_received {
            self.delivery_latency.observe(latency.as_secs_f64());
        }
    }

    pub fn dropped(&self) {
        self.deliveries_dropped.inc();
    }

    /// Counts an attempt in flight until the guard is dropped.
    pub fn attempt_started(&self) -> InFlight {
        self.attempts_in_flight.inc();
        InFlight(self.attempts_in_flight.clone())
    }

    /// Read from the store when scraped (see `api::metrics`); `None` when it could not be read, shown as NaN
    /// rather than a stale figure.
    pub fn set_due_lag(&self, lag: Option<Duration>) {
        self.due_lag.set(lag.map_or(f64::NAN, |lag| lag.as_secs_f64()));
    }

    /// Read from the store when scraped, like the lag; `None` when it could not be read, shown as NaN.
    pub fn set_server_counts(&self, counts: Option<&crate::store::ServerCounts>) {
        let waiting = counts.map_or(f64::NAN, |counts| counts.waiting_deliveries as f64);
        self.waiting_deliveries.set(waiting);
        for &status in crate::model::EndpointStatus::ALL {
            let count = counts
                .and_then(|counts| counts.endpoints.iter().find(|(s, _)| *s == status))
                .map_or(f64::NAN, |(_, n)| *n as f64);
            self.endpoints.get_or_create(&StatusLabels { status: status.as_str() }).set(count);
        }
    }

    pub fn committed(&self, took: Duration) {
        self.commit_duration.observe(took.as_secs_f64());
    }

    /// `status` 499 for a request whose client went away before the answer (as nginx logs it).
    pub fn answered(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let labels = RequestLabels {
            // A route's every method answers 405 alike: one series for them, however many methods are tried.
            method: if status == 405 { Cow::Borrowed("other") } else { known_method(method) },
            route: route.map_or(Cow::Borrowed("unmatched"), |route| Cow::Owned(route.to_string())),
            status,
        };
        self.request_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// A call of `plugin`'s `interface` (a retry after a missed deadline counts once, as the delivery sees it).
    pub fn plugin_called(&self, plugin: &str, interface: &'static str, ok: bool, took: Duration) {
        let labels =
            PluginCallLabels { plugin: plugin.to_string(), interface, result: if ok { "ok" } else { "error" } };
        self.plugin_calls.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Standard methods by name, anything else as "other": a client cannot grow the label set.
fn known_method(method: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    Cow::Borrowed(KNOWN.into_iter().find(|known| *known == method).unwrap_or("other"))
}

/// See [`Metrics::attempt_started`].
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_show_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.published(3, 5);
        metrics.attempted("succeeded", Duration::from_millis(4), Some(Duration::from_millis(30)));
        metrics.attempted("retry", Duration::from_millis(4), None);
        let in_flight = metrics.attempt_started();
        metrics.answered("POST", Some("/api/v1/events"), 202, Duration::from_millis(2));
        metrics.answered("BREW", None, 404, Duration::from_millis(1));
        metrics.plugin_called("redact", "transform", true, Duration::from_micros(9));
        let text = metrics.render();
        for line in [
            "switchyard_events_published_total 3",
            "switchyard_deliveries_created_total 5",
            r#"switchyard_delivery_attempts_total{outcome="succeeded"} 1"#,
            r#"switchyard_delivery_attempts_total{outcome="retry"} 1"#,
            "switchyard_delivery_attempt_duration_seconds_count 2",
            "switchyard_delivery_latency_seconds_count 1",
            "switchyard_delivery_attempts_in_flight 1",
            r#"switchyard_http_request_duration_seconds_count{method="POST",route="/api/v1/events",status="202"} 1"#,
            r#"switchyard_http_request_duration_seconds_count{method="other",route="unmatched",status="404"} 1"#,
            r#"switchyard_plugin_call_duration_seconds_count{plugin="redact",interface="transform",result="ok"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        drop(in_flight);
        assert!(metrics.render().lines().any(|l| l == "switchyard_delivery_attempts_in_flight 0"));
    }
}
