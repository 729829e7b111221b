//! Micro-benchmarks of the router's per-delivery CPU work: subscription matching (type patterns and JSONPath
//! filters), signature generation (and an attempt's whole signing cost from a sealed secret), event type schema
//! checks, the retry delay,
//! and the WebAssembly plugins (`plugin/…`: a filter, a transform and a retry policy call, each in a fresh
//! sandbox; an endpoint's filter + transform as a delivery runs them; and the hot-swap time from a new component
//! file landing in the plugins directory to the registry serving it).
//! `cargo bench -p switchyard-bench --bench micro`. The plugin benches need the components built (`cargo build
//! --target wasm32-wasip2 --release -p amount-threshold -p redact -p business-hours -p misbehave`) and are skipped,
//! with a message, without them.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use switchyard::event_schemas;
use switchyard::filter_work::FilterWork;
use switchyard::hourly::HourlyTally;
use switchyard::model::{
    new_id, DeliveryStatus, Endpoint, EndpointSecret, EndpointStatus, Event, PluginBinding, SecretStatus,
    SignatureHeader, SignatureScheme, Subscription,
};
use switchyard::plugin::bound::{self, Preparation};
use switchyard::plugin::{
    Attempt, Endpoint as GuestEndpoint, ErrorKind, Event as GuestEvent, FilterDecision, Outcome, PluginEngine,
    PluginLimits, PluginRegistry, PluginWatcher, DEFAULT_DEBOUNCE,
};
use switchyard::retry::{next_delay, RetryPolicy};
use switchyard::routing::{matching_endpoints, FilterCache};
use switchyard::secrets::{secret_aad, secret_hint, signing_keys, MasterKey, SigningSecrets};
use switchyard::signing::{signature_headers, Signer};
use switchyard::store::AttemptOutcome;

const PAYLOAD: &str = r#"{"sent_at_ns":1795000000000000000,"seq":42,"parity":0,"amount":1234,"currency":"EUR","customer":{"id":"cus_123","country":"DE"},"items":[{"sku":"a","qty":1},{"sku":"b","qty":3}]}"#;

fn endpoint(i: usize, event_type: &str, filter: Option<&str>) -> Endpoint {
    Endpoint {
        id: format!("ep_{i:04}"),
        tenant_id: "ten_bench".into(),
        url: format!("https://receiver.example/{i}"),
        description: String::new(),
        status: EndpointStatus::Active,
        status_reason: None,
        timeout_ms: 10_000,
        headers: BTreeMap::new(),
        retry_schedule_ms: None,
        max_attempts: None,
        rate_limit: None,
        signature_scheme: SignatureScheme::Standard,
        signature_header: None,
        metadata: BTreeMap::new(),
        plugins: Default::default(),
        subscriptions: vec![Subscription { event_type: event_type.into(), filter: filter.map(Into::into) }],
        created_at: 0,
        updated_at: 0,
    }
}

fn event() -> Event {
    Event {
        id: "evt_02fq8c1wq6vd2k00000000".into(),
        tenant_id: "ten_bench".into(),
        event_type: "payment.succeeded".into(),
        data: RawValue::from_string(PAYLOAD.into()).expect("valid JSON"),
        idempotency_key: None,
        received_at: 1_795_000_000_000,
    }
}

fn routing(c: &mut Criterion) {
    let event = event();
    let mut group = c.benchmark_group("matching_endpoints");
    // Type patterns only: the common case, no envelope is built.
    let plain: Vec<Endpoint> = (0..10).map(|i| endpoint(i, "payment.*", None)).collect();
    group.bench_function("10 endpoints, type pattern only", |b| {
        b.iter(|| matching_endpoints(black_box(&plain), black_box(&event)))
    });
    let one_filter = vec![endpoint(0, "payment.*", Some("$[?@.data.amount > 1000]"))];
    group.bench_function("1 endpoint, JSONPath filter", |b| {
        b.iter(|| matching_endpoints(black_box(&one_filter), black_box(&event)))
    });
    // As in the `jsonpath` end-to-end scenario: every endpoint filters, half of them match.
    let filtered: Vec<Endpoint> = (0..10)
        .map(|i| endpoint(i, "payment.*", Some(&format!("$[?@.data.parity == {} && @.data.amount > 100]", i % 2))))
        .collect();
    group.bench_function("10 endpoints, JSONPath filter each", |b| {
        b.iter(|| matching_endpoints(black_box(&filtered), black_box(&event)))
    });
    // What the ingest writer does: the parsed filters are kept across events.
    let mut cache = FilterCache::default();
    group.bench_function("1 endpoint, JSONPath filter, parsed filters cached", |b| {
        b.iter(|| cache.matching_endpoints(black_box(&one_filter), black_box(&event)).len())
    });
    group.bench_function("10 endpoints, JSONPath filter each, parsed filters cached", |b| {
        b.iter(|| cache.matching_endpoints(black_box(&filtered), black_box(&event)).len())
    });
    group.finish();

    // What a publish request adds before the writer: its events' filter verdicts (none to find for the plain
    // endpoints), and the writer's matching with them.
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let work = FilterWork::new(Duration::from_secs(1));
    let events = [event.clone()];
    let mut group = c.benchmark_group("filter_work");
    group.bench_function("10 endpoints, type pattern only", |b| {
        b.iter(|| runtime.block_on(work.verdicts("ten_bench", black_box(&plain), black_box(&events))).unwrap().len())
    });
    group.bench_function("10 endpoints, JSONPath filter each", |b| {
        b.iter(|| runtime.block_on(work.verdicts("ten_bench", black_box(&filtered), black_box(&events))).unwrap().len())
    });
    let verdicts = runtime.block_on(work.verdicts("ten_bench", &filtered, &events)).unwrap();
    group.bench_function("10 endpoints, JSONPath filter each, writer matching with the verdicts", |b| {
        b.iter(|| cache.matching_endpoints_given(black_box(&filtered), black_box(&event), &verdicts[0]).len())
    });
    group.finish();
}

fn signing(c: &mut Criterion) {
    let body = format!(
        r#"{{"id":"evt_02fq8c1wq6vd2k00000000","type":"payment.succeeded","timestamp":"2026-11-22T21:56:34.123Z","tenant_id":"ten_bench","data":{PAYLOAD}}}"#
    );
    let one = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()];
    let two = vec![one[0].clone(), "whsec_dGhpcyBpcyB0aGUgb2xkIHNlY3JldCAxMjM=".to_string()];
    let mut group = c.benchmark_group("signature_headers");
    group.bench_function("standard, 1 secret", |b| {
        b.iter(|| {
            signature_headers(SignatureScheme::Standard, black_box(&one), "dlv_1", 1_795_000_000_000, body.as_bytes())
        })
    });
    group.bench_function("standard, 2 secrets (rotation)", |b| {
        b.iter(|| {
            signature_headers(SignatureScheme::Standard, black_box(&two), "dlv_1", 1_795_000_000_000, body.as_bytes())
        })
    });
    group.bench_function("stripe, 1 secret", |b| {
        b.iter(|| {
            signature_headers(SignatureScheme::Stripe, black_box(&one), "dlv_1", 1_795_000_000_000, body.as_bytes())
        })
    });
    let signer = Signer::new(SignatureScheme::Standard, &one);
    group.bench_function("standard, 1 secret, keys set up once", |b| {
        b.iter(|| black_box(&signer).headers("dlv_1", 1_795_000_000_000, body.as_bytes()))
    });
    // The `hmac` scheme in a header of the endpoint's naming, as a GitHub-style receiver reads it.
    let github = SignatureHeader {
        name: "X-Hub-Signature-256".into(),
        prefix: "sha256=".into(),
        timestamp: None,
        key_id: false,
    };
    let hmac = Signer::new(SignatureScheme::Hmac, &one).with_header(Some(&github), &[]);
    group.bench_function("hmac, 1 secret, keys set up once", |b| {
        b.iter(|| black_box(&hmac).headers("dlv_1", 1_795_000_000_000, body.as_bytes()))
    });
    // Standard Webhooks' `v1a`: an Ed25519 signature, against the `v1` HMAC beside it.
    let ed25519 = Signer::new(SignatureScheme::Standard, &["whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="]);
    group.bench_function("standard, ed25519 key, keys set up once", |b| {
        b.iter(|| black_box(&ed25519).headers("dlv_1", 1_795_000_000_000, body.as_bytes()))
    });
    group.finish();

    // What an attempt spends on its signature, from the sealed secret its claim loaded: unsealing and keying it
    // per request, as attempts did, against sharing the unsealed signer among the endpoint's jobs of a batch.
    let master_key = MasterKey::parse(&"ab".repeat(32)).expect("a valid key");
    let sealed = vec![EndpointSecret {
        id: "sec_1".into(),
        endpoint_id: "ep_0001".into(),
        tenant_id: "ten_bench".into(),
        version: 1,
        status: SecretStatus::Active,
        ciphertext: master_key.seal(one[0].as_bytes(), &secret_aad("ep_0001", "sec_1")),
        hint: secret_hint(&one[0]),
        created_at: 0,
        expires_at: None,
    }];
    let mut group = c.benchmark_group("attempt_signing");
    group.bench_function("unsealed and keyed per request", |b| {
        b.iter(|| {
            let keys = signing_keys(&master_key, "ep_0001", black_box(&sealed)).expect("opens");
            signature_headers(SignatureScheme::Standard, &keys, "dlv_1", 1_795_000_000_000, body.as_bytes())
        })
    });
    let shared = SigningSecrets::new(sealed.clone());
    let owner = endpoint(1, "*", None);
    group.bench_function("signer shared by the batch", |b| {
        b.iter(|| {
            let signer = black_box(&shared).signer(&master_key, &owner).expect("opens");
            signer.headers("dlv_1", 1_795_000_000_000, body.as_bytes())
        })
    });
    group.finish();
}

/// An event type's JSON Schema checked against a ~1 KB payment: what a publish of a type with a schema pays, the
/// payload read into a tree included.
fn schemas(c: &mut Criterion) {
    let schema = serde_json::json!({
        "type": "object",
        "required": ["amount", "currency", "customer", "items"],
        "properties": {
            "amount": {"type": "integer", "minimum": 0},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "customer": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "items": {"type": "array", "maxItems": 100, "items": {
                "type": "object", "required": ["sku", "qty"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
            }}
        }
    });
    let validator = event_schemas::compile(&schema).expect("the schema compiles");
    let payload = RawValue::from_string(payload_1k()).expect("valid JSON");
    assert_eq!(event_schemas::check(&validator, &payload), Ok(()));
    let bad = RawValue::from_string(payload_1k().replace(r#""amount":1234"#, r#""amount":"1234""#)).unwrap();
    assert!(event_schemas::check(&validator, &bad).is_err());

    let mut group = c.benchmark_group("event_schemas");
    group.bench_function("check a 1 KB payload that matches", |b| {
        b.iter(|| event_schemas::check(black_box(&validator), black_box(&payload)))
    });
    group.bench_function("check a 1 KB payload that does not match", |b| {
        b.iter(|| event_schemas::check(black_box(&validator), black_box(&bad)))
    });
    group.bench_function("compile the schema", |b| b.iter(|| event_schemas::compile(black_box(&schema))));
    group.finish();
}

fn retry(c: &mut Criterion) {
    let schedule = [1_000_i64];
    let custom = RetryPolicy::new(Some(&schedule), Some(10));
    let default = RetryPolicy::new(None, None);
    let cap = Duration::from_secs(3600);
    let mut group = c.benchmark_group("retry");
    group.bench_function("next_delay, default schedule", |b| {
        b.iter(|| next_delay(black_box(&default), black_box(3), black_box(0.37), None, cap))
    });
    group.bench_function("next_delay, custom schedule + Retry-After", |b| {
        b.iter(|| next_delay(black_box(&custom), black_box(4), black_box(-0.5), Some(Duration::from_secs(2)), cap))
    });
    group.finish();
}

/// Every delivery mints three ids (event, delivery, attempt).
fn ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("ids");
    group.bench_function("new_id", |b| b.iter(|| new_id(black_box("dlv"))));
    group.finish();
}

/// With `tenant_rate_limit` set, every request of a tenant key takes one from its tenant's budget: here with a
/// budget that never runs out, among 100 tenants, so each check passes as most do.
fn limits(c: &mut Criterion) {
    let limits = switchyard::api::limits::TenantLimits::new(std::num::NonZeroU32::new(1_000_000));
    let tenants: Vec<String> = (0..100).map(|n| format!("ten_{n:022}")).collect();
    for tenant in &tenants {
        limits.check(tenant, None).unwrap();
    }
    let mut next = tenants.iter().cycle();
    let mut group = c.benchmark_group("limits");
    group.bench_function("check a tenant's request budget", |b| {
        b.iter(|| limits.check(black_box(next.next().unwrap()), None).is_ok())
    });
    // The same tenants, each with a limit of its own (an operator's override): a map behind a lock.
    let own = std::num::NonZeroU32::new(1_000_000);
    group.bench_function("check a tenant's own request budget", |b| {
        b.iter(|| limits.check(black_box(next.next().unwrap()), own).is_ok())
    });
    group.finish();
}

/// The writer counts every recorded attempt for the hourly success rate, and every event published by type: a
/// commit's worth, 100 attempts to 10 endpoints or 100 events, into a tally that already holds their hours (as it
/// does between flushes).
fn hourly(c: &mut Criterion) {
    let outcomes: Vec<AttemptOutcome> = (0..100)
        .map(|i| AttemptOutcome {
            attempt: switchyard::model::Attempt {
                id: new_id("att"),
                tenant_id: "ten_bench".into(),
                delivery_id: new_id("dlv"),
                attempt_number: 1,
                started_at: 1_700_000_000_000,
                duration_ms: 3,
                status_code: Some(204),
                response_body: None,
                error: None,
                outcome: "succeeded".into(),
            },
            endpoint_id: format!("ep_{}", i % 10),
            status: if i % 7 == 0 { DeliveryStatus::Failed } else { DeliveryStatus::Succeeded },
            next_attempt_at: None,
            disable_endpoint: None,
            prepared: None,
        })
        .collect();
    let tally = HourlyTally::default();
    tally.count(&outcomes);
    // A commit's worth of publishes: 100 events of 5 types, each routed to 10 endpoints.
    let events: Vec<(Event, u64)> = (0..100)
        .map(|i| {
            let event = Event {
                id: new_id("evt"),
                tenant_id: "ten_bench".into(),
                event_type: format!("payment.kind_{}", i % 5),
                data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                idempotency_key: None,
                received_at: 1_700_000_000_000,
            };
            (event, 10)
        })
        .collect();
    let published = || events.iter().map(|(event, deliveries)| (event, *deliveries));
    tally.count_published(published());
    let mut group = c.benchmark_group("hourly");
    group.bench_function("count a commit of 100 attempts", |b| b.iter(|| tally.count(black_box(&outcomes))));
    group.bench_function("count a commit of 100 events", |b| b.iter(|| tally.count_published(black_box(published()))));
    group.finish();
}

/// A ~1 KB payload like a real payment event, with the `amount` the filter tests and the `currency` the transform
/// removes.
fn payload_1k() -> String {
    let items: Vec<serde_json::Value> = (0..8)
        .map(|i| serde_json::json!({"sku": format!("sku-{i:04}"), "qty": i + 1, "unit_price": 1999, "name": "Widget, large"}))
        .collect();
    let payload = serde_json::json!({
        "sent_at_ns": 1_795_000_000_000_000_000_u64, "seq": 42, "parity": 0, "amount": 1234, "currency": "EUR",
        "customer": {"id": "cus_0192f0000000000000000000000000", "country": "DE", "email": "ada@example.com"},
        "card": {"brand": "visa", "last4": "4242", "exp": "12/29"},
        "items": items,
        "note": "x".repeat(200),
    })
    .to_string();
    assert!((900..1300).contains(&payload.len()), "payload is {} bytes", payload.len());
    payload
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"))
}

/// The built components of these plugin crates, or `None` (after saying which is missing) if any is not built.
fn components(names: &[&str]) -> Option<Vec<Vec<u8>>> {
    let dir = target_dir().join("wasm32-wasip2").join("release");
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
        match std::fs::read(&path) {
            Ok(bytes) => out.push(bytes),
            Err(_) => {
                println!(
                    "plugin benches SKIPPED: {} not found; build the plugins with `cargo build --target \
                     wasm32-wasip2 --release -p amount-threshold -p redact -p business-hours -p misbehave`",
                    path.display()
                );
                return None;
            }
        }
    }
    Some(out)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn new_registry(cache_dir: &Path) -> Arc<PluginRegistry> {
    Arc::new(PluginRegistry::new(PluginEngine::new(cache_dir, PluginLimits::default()).expect("plugin engine")))
}

fn binding(plugin: &str, config: serde_json::Value) -> PluginBinding {
    PluginBinding { plugin: plugin.into(), version: None, config }
}

/// One plugin call per iteration, each in a fresh sandbox (instantiation included), as the dispatcher makes them.
/// Times a loop of `iters` awaited calls inside one `block_on`, so the runtime entry is not counted per call.
fn plugins(c: &mut Criterion) {
    let Some(bytes) = components(&["amount-threshold", "redact", "business-hours", "misbehave"]) else { return };
    let rt = runtime();
    let cache = tempfile::tempdir().expect("temp dir");
    let registry = new_registry(cache.path());
    let mut bytes = bytes.into_iter();
    let mut load = |name: &str| {
        let component = bytes.next().expect("one component per plugin");
        rt.block_on(registry.load(name, component)).expect("plugin loads")
    };
    let (filter, transform, retry) = (load("amount-threshold"), load("redact"), load("business-hours"));
    // `misbehave` in its harmless mode: the filter only reads its config, the transform hands the payload back. What
    // these cost is the sandbox's own share of a call (fresh store and instance, copying arguments in and the
    // answer out), apart from what a plugin does with the event.
    let minimal = load("misbehave");

    let payload = payload_1k();
    let guest_event = GuestEvent {
        id: "evt_02fq8c1wq6vd2k00000000".into(),
        event_type: "payment.succeeded".into(),
        tenant: "ten_bench".into(),
        timestamp_ms: 1_795_000_000_000,
        payload: payload.clone(),
    };
    let guest_endpoint = |config: serde_json::Value| GuestEndpoint {
        id: "ep_0000".into(),
        url: "https://receiver.example/0".into(),
        config: config.to_string(),
    };
    let filter_config = serde_json::json!({"field": "amount", "above": 100});
    let transform_config = serde_json::json!({"fields": ["currency"]});
    let filter_endpoint = guest_endpoint(filter_config.clone());
    let transform_endpoint = guest_endpoint(transform_config.clone());
    let retry_endpoint = guest_endpoint(serde_json::json!(
        {"open_hour": 0, "close_hour": 24, "days": [1, 2, 3, 4, 5, 6, 7], "give_up_after_secs": 86400}
    ));
    let attempt = Attempt {
        number: 2,
        outcome: Outcome::Status(503),
        headers: vec![("retry-after".into(), "5".into())],
        since_first_attempt_ms: 60_000,
        now_ms: 1_795_000_000_000,
    };
    let timeout = Attempt { outcome: Outcome::Error(ErrorKind::Timeout), headers: Vec::new(), ..attempt.clone() };
    let minimal_endpoint = guest_endpoint(serde_json::json!({"mode": "ok"}));

    // The calls must do the work being measured, not fail fast.
    rt.block_on(async {
        assert!(matches!(filter.filter(&guest_event, &filter_endpoint).await.expect("filter"), FilterDecision::Keep));
        let body = transform.transform(&guest_event, &transform_endpoint).await.expect("transform").body;
        assert!(!String::from_utf8_lossy(&body).contains("currency") && body.len() > 800);
        retry.retry_policy(&attempt, &retry_endpoint).await.expect("retry policy");
        retry.retry_policy(&timeout, &retry_endpoint).await.expect("retry policy");
        assert!(matches!(minimal.filter(&guest_event, &minimal_endpoint).await.expect("filter"), FilterDecision::Keep));
        let body = minimal.transform(&guest_event, &minimal_endpoint).await.expect("transform").body;
        assert_eq!(body, guest_event.payload.as_bytes());
    });

    // As a delivery runs them: an endpoint binding both, through `bound::prepare`.
    let mut model_endpoint = endpoint(0, "payment.*", None);
    model_endpoint.plugins.filter = Some(binding("amount-threshold", filter_config));
    model_endpoint.plugins.transform = Some(binding("redact", transform_config));
    let mut model_event = event();
    model_event.data = RawValue::from_string(payload).expect("valid JSON");
    // Counted as the dispatcher counts them.
    let metrics = switchyard::metrics::Metrics::default();
    match rt.block_on(bound::prepare(&registry, &metrics, &model_event, &model_endpoint)) {
        Preparation::Send(prepared) => assert!(prepared.body.is_some_and(|b| b.len() > 800)),
        other => panic!("prepare did not send: {other:?}"),
    }

    // A call that fails in the timed loops (in practice only the 50 ms wall-clock deadline, when a loaded machine
    // deschedules the bench) is not a reason to abort: it is counted in the `errors` printed at the end.
    let mut group = c.benchmark_group("plugin");
    group.bench_function("filter_fresh_sandbox", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(filter.filter(black_box(&guest_event), &filter_endpoint).await.ok());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("transform_fresh_sandbox", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(transform.transform(black_box(&guest_event), &transform_endpoint).await.ok());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("filter_minimal_fresh_sandbox", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(minimal.filter(black_box(&guest_event), &minimal_endpoint).await.ok());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("transform_passthrough_fresh_sandbox", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(minimal.transform(black_box(&guest_event), &minimal_endpoint).await.ok());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("retry_policy", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(retry.retry_policy(black_box(&attempt), &retry_endpoint).await.ok());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("prepare_filter_and_transform", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(bound::prepare(&registry, &metrics, black_box(&model_event), &model_endpoint).await);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    for version in [&filter, &transform, &retry, &minimal] {
        let stats = version.stats();
        let us = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "plugin {}: {} calls, {} errors, host-measured per call p50 {} µs, p99 {} µs (last 1,024 calls)",
            version.name(),
            stats.calls,
            stats.errors,
            us(stats.p50_us),
            us(stats.p99_us)
        );
    }
}

/// `component` with a custom section appended whose content is `tag`: a valid component with a new sha256, so the
/// registry sees a new version that it has never compiled.
fn with_custom_section(component: &[u8], tag: &str) -> Vec<u8> {
    const NAME: &[u8] = b"switchyard-bench";
    let mut content = vec![NAME.len() as u8];
    content.extend_from_slice(NAME);
    content.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0x00);
    // LEB128 size of the section's content.
    let mut size = content.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&content);
    out
}

/// Hot swap, as an operator does it: a new version of `redact.wasm` is written next to the plugins directory and
/// renamed into it (atomic); the time is from the rename until `registry.latest` is the new sha256. It includes the
/// watcher's debounce (`DEFAULT_DEBOUNCE`, 150 ms, as the server uses), reading the file, compiling or loading the
/// precompiled artifact, validating the exports and linking.
///
/// * `hotswap_cold`: the bytes were never compiled (unique custom section), so the artifact cache misses and the
///   component is compiled, as for a newly released plugin.
/// * `hotswap_warm`: the artifact of those bytes is already in the cache (compiled beforehand, untimed, by another
///   engine sharing the cache directory, as after a restart or on a second node sharing the data directory).
fn hotswap(c: &mut Criterion) {
    let Some(bytes) = components(&["redact"]) else { return };
    let base = bytes.into_iter().next().expect("one component");
    let rt = runtime();
    let cache = tempfile::tempdir().expect("temp dir");
    let plugins_dir = tempfile::tempdir().expect("temp dir");
    let staging = tempfile::tempdir().expect("temp dir");
    let registry = new_registry(cache.path());
    // Precompiles into the same cache for the warm case; never sees the watched directory.
    let side = new_registry(cache.path());
    let _watcher = rt
        .block_on(PluginWatcher::start(registry.clone(), plugins_dir.path().to_path_buf(), DEFAULT_DEBOUNCE))
        .expect("watcher starts");
    let counter = AtomicU64::new(0);

    // Lands one new version and returns how long until the registry serves it.
    let swap = |warm: bool| -> Duration {
        let tag = format!("{}-{}", counter.fetch_add(1, Ordering::Relaxed), std::process::id());
        let bytes = with_custom_section(&base, &tag);
        let sha = hex::encode(Sha256::digest(&bytes));
        if warm {
            let version = rt.block_on(side.load("redact", bytes.clone())).expect("precompile");
            assert_eq!(version.sha256(), sha);
        }
        let staged = staging.path().join("redact.wasm");
        std::fs::write(&staged, &bytes).expect("write component");
        let target = plugins_dir.path().join("redact.wasm");
        rt.block_on(async {
            // The same filesystem (both under the temp dir), so the rename is atomic.
            std::fs::rename(&staged, &target).expect("rename into the plugins dir");
            let landed = Instant::now();
            loop {
                if registry.latest("redact").is_some_and(|v| v.sha256() == sha) {
                    let elapsed = landed.elapsed();
                    let version = registry.latest("redact").expect("latest");
                    assert_eq!(version.from_cache(), warm, "artifact cache hit should be {warm}");
                    return elapsed;
                }
                if let Some(failure) = registry.last_load_error("redact") {
                    if failure.sha256.as_deref() == Some(sha.as_str()) {
                        panic!("hot swap failed to load: {}", failure.message);
                    }
                }
                assert!(landed.elapsed() < Duration::from_secs(60), "new version not serving after 60 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let mut group = c.benchmark_group("plugin");
    // Each swap takes at least the debounce: ten samples of one swap each (plus one warm-up swap) is enough.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(1));
    for (name, warm) in [("hotswap_cold", false), ("hotswap_warm", true)] {
        let times = Mutex::new(Vec::new());
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let took = swap(warm);
                    times.lock().expect("times").push(took);
                    total += took;
                }
                total
            })
        });
        let mut times = times.into_inner().expect("times");
        times.sort_unstable();
        if let (Some(p50), Some(max)) = (times.get((times.len() - 1) / 2), times.last()) {
            println!(
                "plugin/{name}: file landed -> new version serving over {} swaps: p50 {:.0} ms, max {:.0} ms",
                times.len(),
                p50.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
    }
    group.finish();
}

criterion_group!(benches, routing, signing, schemas, retry, ids, limits, hourly, plugins, hotswap);
criterion_main!(benches);
