//! Micro-benchmarks of the router's per-delivery CPU work that needs no plugins: subscription matching
//! (type patterns and JSONPath filters), signature generation and the retry delay. `cargo bench -p switchyard-bench`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::value::RawValue;
use switchyard::model::{Endpoint, EndpointStatus, Event, SignatureScheme, Subscription};
use switchyard::retry::{next_delay, RetryPolicy};
use switchyard::routing::matching_endpoints;
use switchyard::signing::signature_headers;

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
        signature_scheme: SignatureScheme::Standard,
        metadata: BTreeMap::new(),
        plugins: Default::default(),
        subscriptions: vec![Subscription { event_type: event_type.into(), filter: filter.map(Into::into) }],
        created_at: 0,
        updated_at: 0,
    }
}

fn event() -> Event {
    Event {
        id: "evt_0192f0000000000000000000000000".into(),
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
    group.finish();
}

fn signing(c: &mut Criterion) {
    let body = format!(
        r#"{{"id":"evt_0192f0000000000000000000000000","type":"payment.succeeded","timestamp":"2026-11-22T21:56:34.123Z","tenant_id":"ten_bench","data":{PAYLOAD}}}"#
    );
    let one = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()];
    let two = vec![one[0].clone(), "whsec_dGhpcyBpcyB0aGUgb2xkIHNlY3JldCAxMjM=".to_string()];
    let mut group = c.benchmark_group("signature_headers");
    group.bench_function("standard, 1 secret", |b| {
        b.iter(|| {
            signature_headers(SignatureScheme::Standard, black_box(&one), "dlv_1", 1_795_000_000, body.as_bytes())
        })
    });
    group.bench_function("standard, 2 secrets (rotation)", |b| {
        b.iter(|| {
            signature_headers(SignatureScheme::Standard, black_box(&two), "dlv_1", 1_795_000_000, body.as_bytes())
        })
    });
    group.bench_function("stripe, 1 secret", |b| {
        b.iter(|| signature_headers(SignatureScheme::Stripe, black_box(&one), "dlv_1", 1_795_000_000, body.as_bytes()))
    });
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

criterion_group!(benches, routing, signing, retry);
criterion_main!(benches);
