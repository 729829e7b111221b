//! The WebAssembly plugin host, against the real example plugins compiled for wasm32-wasip2: each example's
//! behaviour, interface detection, rejection of non-plugins, isolation from misbehaving plugins, hot reload through
//! the watcher, version pinning and the artifact cache.
//!
//! The plugins are built by `./tests/run`; see `support/plugins.rs` for what happens when they are missing.

#[path = "support/plugins.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::plugin::{
    bound, Attempt, CallError, Endpoint, ErrorKind, Event, FilterDecision, LoadError, Outcome, PluginEngine,
    PluginKind, PluginLimits, PluginRegistry, PluginVersion, PluginWatcher, RetryDecision,
};
use tempfile::TempDir;

fn limits() -> PluginLimits {
    PluginLimits { max_concurrent_calls: 8, ..PluginLimits::default() }
}

fn engine(dir: &TempDir, limits: PluginLimits) -> PluginEngine {
    PluginEngine::new(dir.path().join("data/plugin-cache"), limits).expect("engine")
}

fn event(payload: &str) -> Event {
    Event {
        id: "evt_1".into(),
        event_type: "invoice.paid".into(),
        tenant: "acme".into(),
        timestamp_ms: 1_704_067_200_000,
        payload: payload.into(),
    }
}

fn endpoint(config: &str) -> Endpoint {
    Endpoint { id: "ep_1".into(), url: "https://example.com/hook".into(), config: config.into() }
}

/// Monday 2024-01-01 00:00 UTC.
const MONDAY_MS: u64 = 1_704_067_200_000;
const HOUR_MS: u64 = 3_600_000;

fn attempt(now_ms: u64, since_first_ms: u64, retry_after: Option<&str>) -> Attempt {
    Attempt {
        number: 2,
        outcome: Outcome::Status(503),
        headers: retry_after.map(|v| vec![("retry-after".to_string(), v.to_string())]).unwrap_or_default(),
        since_first_attempt_ms: since_first_ms,
        now_ms,
    }
}

async fn load(registry: &PluginRegistry, name: &str, bytes: &[u8]) -> Arc<PluginVersion> {
    registry.load(name, bytes.to_vec()).await.unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

#[tokio::test]
async fn amount_threshold_keeps_only_large_amounts() {
    let Some([wasm]) = support::plugins(["amount-threshold"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    let plugin = load(&registry, "amount-threshold", &wasm).await;
    assert_eq!(plugin.kinds(), [PluginKind::Filter]);
    let config = r#"{"field": "order.total", "above": 100}"#;
    let keep = plugin.filter(&event(r#"{"order": {"total": 250}}"#), &endpoint(config)).await;
    assert_eq!(keep, Ok(FilterDecision::Keep));
    let drop = plugin.filter(&event(r#"{"order": {"total": 99}}"#), &endpoint(config)).await;
    assert_eq!(drop, Ok(FilterDecision::Drop));
    let bad = plugin.filter(&event("{}"), &endpoint("{}")).await;
    assert!(matches!(&bad, Err(CallError::Plugin(m)) if m.contains("invalid plugin config")), "{bad:?}");
    let not_exported = plugin.transform(&event("{}"), &endpoint(config)).await;
    assert!(matches!(not_exported, Err(CallError::NotExported(PluginKind::Transform))), "{not_exported:?}");

    let stats = registry.snapshot("amount-threshold").unwrap();
    assert_eq!(stats.latest.as_deref(), Some(plugin.sha256()));
    let version = &stats.versions[0];
    assert_eq!((version.calls, version.errors), (3, 1));
    assert!(version.p50_us.is_some() && version.p99_us >= version.p50_us);
    // The plugin logs each decision at debug level, tagged with the plugin, version and event.
    let line = version.recent_logs.last().expect("a captured log line");
    assert_eq!((line.plugin.as_str(), line.version.as_str()), ("amount-threshold", plugin.sha256()));
    assert_eq!(
        (line.event_id.as_deref(), line.level, line.message.as_str()),
        (Some("evt_1"), "debug", "event evt_1: drop")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_concurrency_limit_wait_for_a_slot() {
    let Some([wasm]) = support::plugins(["misbehave"]) else { return };
    let dir = TempDir::new().unwrap();
    let limits = PluginLimits { max_concurrent_calls: 1, deadline: Duration::from_secs(10), ..limits() };
    let registry = PluginRegistry::new(engine(&dir, limits));
    let plugin = load(&registry, "misbehave", &wasm).await;
    // Each call spins long enough to yield to the executor, so all of them are in flight together: more than the
    // pool's instance slots (1 + the slots kept for loads). Without the wait, some would fail with `Busy`.
    let endpoint = endpoint(r#"{"mode": "spin", "count": 20000000}"#);
    let event = event("{}");
    let answers = futures_util::future::join_all((0..8).map(|_| plugin.filter(&event, &endpoint))).await;
    assert!(answers.iter().all(|answer| answer == &Ok(FilterDecision::Keep)), "{answers:?}");
}

#[tokio::test]
async fn slack_message_is_a_transform_only_plugin_building_a_slack_body() {
    let Some([wasm]) = support::plugins(["slack-message"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    let plugin = load(&registry, "slack-message", &wasm).await;
    assert_eq!(plugin.kinds(), [PluginKind::Transform]);
    assert!(!plugin.exports(PluginKind::Filter) && !plugin.exports(PluginKind::RetryPolicy));

    let request = plugin.transform(&event(r#"{"customer": "Ada"}"#), &endpoint("{}")).await.unwrap();
    assert_eq!(request.content_type, "application/json");
    assert!(request.headers.is_empty());
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, serde_json::json!({"text": r#"*invoice.paid* (evt_1) for acme: {"customer":"Ada"}"#}));

    let config = r#"{"template": "{payload.customer} paid ({tenant})"}"#;
    let request = plugin.transform(&event(r#"{"customer": "Ada"}"#), &endpoint(config)).await.unwrap();
    assert_eq!(request.body, br#"{"text":"Ada paid (acme)"}"#);
}

#[tokio::test]
async fn redact_removes_the_configured_fields() {
    let Some([wasm]) = support::plugins(["redact"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    let plugin = load(&registry, "redact", &wasm).await;
    let payload = r#"{"card": {"number": "4242424242424242", "brand": "visa"}, "amount": 5}"#;
    let request = plugin.transform(&event(payload), &endpoint(r#"{"fields": ["card.number"]}"#)).await.unwrap();
    assert_eq!(request.body, br#"{"amount":5,"card":{"brand":"visa"}}"#);
    assert_eq!(request.content_type, "application/json");
    let logs = plugin.stats().recent_logs;
    assert_eq!(logs.last().map(|l| (l.level, l.message.as_str())), Some(("info", "redacted 1 field(s)")));
}

#[tokio::test]
async fn business_hours_policy_decides_retries() {
    let Some([wasm]) = support::plugins(["business-hours"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    let plugin = load(&registry, "business-hours", &wasm).await;
    assert_eq!(plugin.kinds(), [PluginKind::RetryPolicy]);
    let decide = |attempt: Attempt, config: &str| {
        let plugin = plugin.clone();
        let endpoint = endpoint(config);
        async move { plugin.retry_policy(&attempt, &endpoint).await }
    };

    // Monday 10:00: open. Retry-After is honoured; without it the endpoint's schedule applies.
    let open = MONDAY_MS + 10 * HOUR_MS;
    let honoured = decide(attempt(open, 0, Some("120")), "{}").await;
    assert!(matches!(honoured, Ok(RetryDecision::RetryAfter(120_000))), "{honoured:?}");
    let default = decide(attempt(open, 0, None), "{}").await;
    assert!(matches!(default, Ok(RetryDecision::UseDefault)), "{default:?}");
    // Monday 18:00: closed until Tuesday 09:00.
    let evening = MONDAY_MS + 18 * HOUR_MS;
    let deferred = decide(attempt(evening, 0, None), "{}").await;
    assert!(matches!(deferred, Ok(RetryDecision::RetryAfter(ms)) if ms == 15 * HOUR_MS), "{deferred:?}");
    // Too old: give up.
    let old = decide(attempt(open, 2 * HOUR_MS, None), r#"{"give_up_after_secs": 3600}"#).await;
    assert!(matches!(&old, Ok(RetryDecision::GiveUp(reason)) if reason.contains("7200 s")), "{old:?}");
    // Connection errors carry no headers and are handled the same way.
    let mut failed = attempt(evening, 0, None);
    failed.outcome = Outcome::Error(ErrorKind::Connect);
    let deferred = decide(failed, "{}").await;
    assert!(matches!(deferred, Ok(RetryDecision::RetryAfter(ms)) if ms == 15 * HOUR_MS), "{deferred:?}");
}

#[tokio::test]
async fn components_without_a_plugin_interface_are_rejected_clearly() {
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    // A valid, empty component: it exports nothing.
    let empty_component = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    let error = registry.load("empty", empty_component.to_vec()).await.unwrap_err();
    assert!(matches!(error, LoadError::NoInterface), "{error}");
    assert!(error.to_string().contains("exports none of the plugin interfaces"), "{error}");
    // A core module is not a component.
    let core_module = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    let error = registry.load("core", core_module.to_vec()).await.unwrap_err();
    assert!(matches!(error, LoadError::Compile(_)), "{error}");
    let error = registry.load("garbage", b"definitely not wasm".to_vec()).await.unwrap_err();
    assert!(matches!(error, LoadError::Compile(_)), "{error}");
    assert!(registry.latest("garbage").is_none());
    let failure = registry.last_load_error("garbage").expect("the failure is recorded");
    assert!(failure.message.starts_with("not a WebAssembly component"), "{}", failure.message);
    assert!(matches!(registry.load("../evil", b"x".to_vec()).await, Err(LoadError::Name(_))));
}

/// The latest version read again (the watcher sees the file an upload wrote, after a later upload failed) is no
/// new load: the failure stays shown. A kept older version loaded again is one, and clears it.
#[tokio::test]
async fn reading_the_latest_version_again_keeps_a_later_failure() {
    let Some([filter, redact]) = support::plugins(["amount-threshold", "redact"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    registry.load("p", redact.clone()).await.unwrap();
    let latest = registry.load("p", filter.clone()).await.unwrap();
    assert!(registry.load("p", b"broken".to_vec()).await.is_err());
    registry.load("p", filter).await.unwrap();
    assert!(registry.last_load_error("p").is_some(), "the failure is still the news");
    assert_eq!(registry.latest("p").unwrap().sha256(), latest.sha256());
    registry.load("p", redact).await.unwrap();
    assert!(registry.last_load_error("p").is_none(), "a version made the latest again");
}

#[tokio::test]
async fn misbehaving_plugins_yield_typed_errors() {
    let Some([wasm]) = support::plugins(["misbehave"]) else { return };
    let dir = TempDir::new().unwrap();
    // A roomier deadline than the default: on a loaded machine the memory bomb must fail on memory, not time.
    let deadline = Duration::from_millis(500);
    let registry = PluginRegistry::new(engine(&dir, PluginLimits { deadline, ..limits() }));
    let plugin = load(&registry, "misbehave", &wasm).await;
    assert_eq!(plugin.kinds(), PluginKind::ALL);
    let mode = |mode: &str| endpoint(&format!(r#"{{"mode": "{mode}", "count": 100}}"#));

    assert_eq!(plugin.filter(&event("{}"), &mode("ok")).await, Ok(FilterDecision::Keep));
    let trap = plugin.filter(&event("{}"), &mode("trap")).await;
    assert!(matches!(&trap, Err(CallError::Trap(_))), "{trap:?}");
    let memory = plugin.filter(&event("{}"), &mode("memory")).await;
    assert_eq!(memory, Err(CallError::MemoryLimit(32 << 20)));
    let oversized = plugin.transform(&event("{}"), &mode("oversized")).await;
    assert!(matches!(oversized, Err(CallError::OutputTooLarge { limit: 1_048_576, .. })), "{oversized:?}");
    let oversized_error = plugin.filter(&event("{}"), &mode("oversized")).await;
    assert!(matches!(oversized_error, Err(CallError::OutputTooLarge { .. })), "{oversized_error:?}");
    let garbage = plugin.transform(&event("{}"), &mode("invalid-json")).await;
    assert!(matches!(&garbage, Err(CallError::InvalidOutput(m)) if m.contains("not valid JSON")), "{garbage:?}");
    let forged = plugin.transform(&event("{}"), &mode("bad-header")).await;
    assert!(matches!(&forged, Err(CallError::InvalidOutput(m)) if m.contains("webhook-signature")), "{forged:?}");
    let failed = plugin.filter(&event("{}"), &mode("error")).await;
    assert_eq!(failed, Err(CallError::Plugin("misbehave: failing on purpose".into())));
    let huge = event(&format!("\"{}\"", "x".repeat(2 << 20)));
    assert!(matches!(plugin.filter(&huge, &mode("ok")).await, Err(CallError::InputTooLarge { .. })));
    let started = Instant::now();
    let asleep = plugin.filter(&event("{}"), &mode("sleep")).await;
    assert_eq!(asleep, Err(CallError::Deadline(deadline)));
    assert!(started.elapsed() < 3 * deadline, "a host-side sleep outlived the deadline: {:?}", started.elapsed());
    let retry = plugin.retry_policy(&attempt(MONDAY_MS, 0, None), &mode("trap")).await;
    assert!(matches!(retry, Err(CallError::Trap(_))), "{retry:?}");

    // Nothing above poisoned the version: it still answers.
    assert_eq!(plugin.filter(&event("{}"), &mode("ok")).await, Ok(FilterDecision::Keep));
    let stats = plugin.stats();
    assert_eq!((stats.calls, stats.errors), (12, 10));

    // Log lines are bounded per call (20 by default); the rest are counted.
    assert_eq!(plugin.filter(&event("{}"), &mode("log")).await, Ok(FilterDecision::Keep));
    let stats = plugin.stats();
    assert_eq!(stats.dropped_log_lines, 80);
    assert_eq!(stats.recent_logs.last().map(|l| l.message.as_str()), Some("line 19"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_the_deadline_without_stalling_the_host() {
    let Some([misbehave, threshold]) = support::plugins(["misbehave", "amount-threshold"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    let looping = load(&registry, "misbehave", &misbehave).await;
    let other = load(&registry, "amount-threshold", &threshold).await;

    let started = Instant::now();
    let stuck = tokio::spawn({
        let looping = looping.clone();
        async move {
            let result = looping.filter(&event("{}"), &endpoint(r#"{"mode": "loop"}"#)).await;
            (result, started.elapsed())
        }
    });
    // Meanwhile, another plugin call on another task completes.
    let config = r#"{"field": "amount", "above": 1}"#;
    let answer = other.filter(&event(r#"{"amount": 2}"#), &endpoint(config)).await;
    let other_done = started.elapsed();
    assert_eq!(answer, Ok(FilterDecision::Keep));

    let (result, elapsed) = stuck.await.unwrap();
    assert_eq!(result, Err(CallError::Deadline(Duration::from_millis(50))));
    assert!(elapsed >= Duration::from_millis(45) && elapsed < Duration::from_millis(500), "{elapsed:?}");
    assert!(other_done < elapsed, "the other call ({other_done:?}) waited for the loop ({elapsed:?})");
}

/// The epoch ticker parks while no store is alive; a call arriving after a quiet spell must wake it, or a loop
/// would never be interrupted.
#[tokio::test]
async fn deadlines_hold_after_the_engine_has_been_idle() {
    let Some([misbehave]) = support::plugins(["misbehave"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    let looping = load(&registry, "misbehave", &misbehave).await;
    for _ in 0..2 {
        // Longer than the ticker's quiet spell before it parks (100 ticks of 2 ms).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let result = looping.filter(&event("{}"), &endpoint(r#"{"mode": "loop"}"#)).await;
        assert_eq!(result, Err(CallError::Deadline(Duration::from_millis(50))));
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    }
}

#[tokio::test]
async fn a_missed_deadline_is_tried_once_more_and_other_errors_are_not() {
    let Some([misbehave]) = support::plugins(["misbehave"]) else { return };
    let dir = TempDir::new().unwrap();
    let registry = PluginRegistry::new(engine(&dir, limits()));
    let version = load(&registry, "misbehave", &misbehave).await;
    let calls = || version.stats().calls;
    let empty = event("{}");

    let looping = endpoint(r#"{"mode": "loop"}"#);
    let started = Instant::now();
    let result = bound::once_more_if_starved(|| version.filter(&empty, &looping)).await;
    assert_eq!(result, Err(CallError::Deadline(Duration::from_millis(50))));
    assert_eq!(calls(), 2, "the loop ran twice");
    assert!(started.elapsed() >= Duration::from_millis(90), "{:?}", started.elapsed());

    let trapping = endpoint(r#"{"mode": "trap"}"#);
    let result = bound::once_more_if_starved(|| version.filter(&empty, &trapping)).await;
    assert!(matches!(result, Err(CallError::Trap(_))), "{result:?}");
    assert_eq!(calls(), 3, "a trap is the plugin's own fault: not tried again");
}

/// Waits up to `limit` for `check`.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_versions_without_disturbing_calls_in_flight() {
    let Some([v1, v2]) = support::plugins(["misbehave", "amount-threshold"]) else { return };
    let dir = TempDir::new().unwrap();
    let plugins_dir = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins_dir).unwrap();
    let file = plugins_dir.join("hot.wasm");
    write(&file, &v1);
    let limits = PluginLimits { deadline: Duration::from_secs(10), ..limits() };
    let registry = Arc::new(PluginRegistry::new(engine(&dir, limits)));
    let _watcher =
        PluginWatcher::start(registry.clone(), plugins_dir.clone(), Duration::from_millis(100)).await.unwrap();
    let first = registry.latest("hot").expect("the initial scan loads v1");
    assert_eq!(first.kinds(), PluginKind::ALL);

    // A long call on v1 ...
    let in_flight = tokio::spawn({
        let first = first.clone();
        async move { first.filter(&event("{}"), &endpoint(r#"{"mode": "spin", "count": 300000000}"#)).await }
    });
    // ... while v2 is copied over it. Its artifact is precompiled first (as a previous run or a staging copy would
    // have), so the timing below measures the watcher and the swap, not cranelift on a busy machine.
    let warm = PluginRegistry::new(registry.engine().clone());
    assert!(!load(&warm, "staging", &v2).await.from_cache());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let copied = Instant::now();
    write(&file, &v2);
    assert!(
        eventually(Duration::from_secs(1), || registry.latest("hot").is_some_and(|v| v.sha256() != first.sha256()))
            .await
    );
    let second = registry.latest("hot").unwrap();
    eprintln!("v2 live {:?} after the copy", copied.elapsed());
    assert_eq!(second.kinds(), [PluginKind::Filter]);
    assert!(second.from_cache());
    assert_eq!(in_flight.await.unwrap(), Ok(FilterDecision::Keep), "the call finishes on v1");
    assert_eq!(first.stats().calls, 1);

    // v1 stays resolvable by its sha256 (pinning); the default is v2.
    assert_eq!(registry.version("hot", first.sha256()).map(|v| v.sha256().to_string()), Some(first.sha256().into()));
    assert_eq!(registry.resolve("hot", None).unwrap().sha256(), second.sha256());
    let pinned = registry.resolve("hot", Some(first.sha256())).unwrap();
    assert_eq!(pinned.filter(&event("{}"), &endpoint(r#"{"mode": "ok"}"#)).await, Ok(FilterDecision::Keep));

    // A broken file does not replace v2; the error is recorded.
    write(&file, b"\0asm broken");
    assert!(eventually(Duration::from_secs(2), || registry.last_load_error("hot").is_some()).await);
    assert_eq!(registry.latest("hot").unwrap().sha256(), second.sha256());
    let snapshot = registry.snapshot("hot").unwrap();
    assert_eq!(snapshot.versions.len(), 2);
    assert!(snapshot.last_load_error.unwrap().message.contains("not a WebAssembly component"));

    // Fixing the file clears the error.
    write(&file, &v1);
    assert!(eventually(Duration::from_secs(2), || registry.last_load_error("hot").is_none()).await);
    assert_eq!(registry.latest("hot").unwrap().sha256(), first.sha256());
    // A new file is picked up as a new plugin.
    write(&plugins_dir.join("fresh.wasm"), &v2);
    assert!(eventually(Duration::from_secs(5), || registry.latest("fresh").is_some()).await);

    // Only the plugins go in the plugins directory: compiled artifacts live in the data directory.
    let mut names: Vec<_> = std::fs::read_dir(&plugins_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["fresh.wasm", "hot.wasm"]);
}

#[tokio::test]
async fn compiled_artifacts_are_cached_in_the_data_dir() {
    let Some([wasm]) = support::plugins(["redact"]) else { return };
    let dir = TempDir::new().unwrap();
    let cold_engine = engine(&dir, limits());
    let cold = PluginRegistry::new(cold_engine.clone());
    let started = Instant::now();
    let first = load(&cold, "redact", &wasm).await;
    let cold_load = started.elapsed();
    assert!(!first.from_cache());
    let artifact = cold_engine.artifact_path(first.sha256());
    assert!(artifact.starts_with(dir.path().join("data/plugin-cache")), "{}", artifact.display());
    assert!(artifact.is_file());

    // A new engine (a restart) over the same data dir loads the artifact instead of compiling.
    let warm = PluginRegistry::new(engine(&dir, limits()));
    let started = Instant::now();
    let second = load(&warm, "redact", &wasm).await;
    let warm_load = started.elapsed();
    assert!(second.from_cache());
    assert_eq!(second.sha256(), first.sha256());
    assert!(warm_load < cold_load, "cached load {warm_load:?} vs compile {cold_load:?}");
    let request = second.transform(&event(r#"{"a": 1, "b": 2}"#), &endpoint(r#"{"fields": ["b"]}"#)).await.unwrap();
    assert_eq!(request.body, br#"{"a":1}"#);

    // A corrupt artifact is recompiled, not fatal.
    std::fs::write(&artifact, b"corrupt").unwrap();
    let third = load(&PluginRegistry::new(engine(&dir, limits())), "redact", &wasm).await;
    assert!(!third.from_cache());
}
