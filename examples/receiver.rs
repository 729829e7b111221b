//! A webhook receiver for trying Switchyard out: it verifies each delivery's Standard Webhooks signature (with the
//! endpoint's `whsec_…` secret, or the `whpk_…` public key of an asymmetric one), rejects stale timestamps, prints
//! the event and answers 204 — or, with `--fail N`, answers 503 to the first N requests so you can watch retries.
//!
//!     cargo run -p switchyard --example receiver -- --secret whsec_… [--listen 127.0.0.1:9000] [--fail 2]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::routing::post;
use axum::Router;
use clap::Parser;
use switchyard::signing::{
    verify_standard, verify_standard_asymmetric, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
};

/// Receivers should refuse signatures older than this, so a captured request cannot be replayed later.
const TOLERANCE_SECS: i64 = 300;

#[derive(Parser)]
struct Args {
    /// The endpoint's signing secret (`whsec_…`), as shown when the endpoint was created, or the public key
    /// (`whpk_…`) of an asymmetric one.
    #[arg(long, env = "WEBHOOK_SECRET")]
    secret: String,
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Answer 503 to this many requests before accepting.
    #[arg(long, default_value_t = 0)]
    fail: u32,
}

struct Receiver {
    secret: String,
    failures_left: AtomicU32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state = Arc::new(Receiver { secret: args.secret, failures_left: AtomicU32::new(args.fail) });
    let app = Router::new().fallback(post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen).await.context("binding the receiver")?;
    println!("receiving webhooks on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (id, signature) = (header(WEBHOOK_ID), header(WEBHOOK_SIGNATURE));
    let Ok(timestamp) = header(WEBHOOK_TIMESTAMP).parse::<i64>() else {
        println!("rejected: no webhook-timestamp");
        return StatusCode::BAD_REQUEST;
    };
    if (chrono::Utc::now().timestamp() - timestamp).abs() > TOLERANCE_SECS {
        println!("rejected {id}: timestamp outside the {TOLERANCE_SECS} s tolerance");
        return StatusCode::BAD_REQUEST;
    }
    let verified = if receiver.secret.starts_with("whpk_") {
        verify_standard_asymmetric(&receiver.secret, id, timestamp, &body, signature)
    } else {
        verify_standard(&receiver.secret, id, timestamp, &body, signature)
    };
    if !verified {
        println!("rejected {id}: bad signature");
        return StatusCode::UNAUTHORIZED;
    }
    let failing = receiver.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        println!("{id}: signature ok, answering 503 as asked");
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    println!("{id}: signature ok: {}", String::from_utf8_lossy(&body));
    StatusCode::NO_CONTENT
}
