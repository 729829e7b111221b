//! The fast receiver the router delivers to: plain hyper HTTP/1 with keep-alive, answering `204` (or `500` for a
//! configurable share of requests). It records, per accepted delivery, which endpoint it was sent to (from the
//! path `/ep/<index>`), the event id and the publish→receipt latency from the `sent_at_ns` the harness put in the
//! payload. Requests to `/baseline` (the raw reqwest client) are only counted.
//!
//! Bodies come in two forms (see [`Expect`]): the router's envelope (`{"id", …, "data": {"sent_at_ns", …}}`), or,
//! behind a transform plugin such as `redact`, the bare payload (`{"sent_at_ns", …}`), whose event id is then taken
//! from the `webhook-id` header (the event id in Standard Webhooks signing). A body in the other form, without its
//! id or timestamp, or still holding a field the transform should have removed counts as malformed, which fails
//! the run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One delivery the receiver accepted with `204`.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub endpoint: usize,
    pub event_id: String,
    /// Arrival time, Unix nanoseconds.
    pub arrived_ns: u64,
    /// Arrival minus the publisher's `sent_at_ns`.
    pub latency_ns: u64,
}

#[derive(Default)]
pub struct Recorded {
    pub receipts: Mutex<Vec<Receipt>>,
    /// Every request to `/ep/…`, including those answered `500`.
    pub requests: AtomicU64,
    pub failed: AtomicU64,
    pub baseline: AtomicU64,
    /// Arrival times (Unix nanoseconds) of the bodies a relay forwarded (see `relay`).
    pub relayed: Mutex<Vec<u64>>,
    /// Bodies that did not parse in the expected form (see [`Expect`]): any is a harness or router bug.
    pub malformed: AtomicU64,
}

/// The body form every delivery must arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The router's envelope: event id at `id`, timestamp at `data.sent_at_ns`.
    Envelope,
    /// A transformed body that is the event's payload: timestamp at the top level, event id from `webhook-id`, and
    /// this field removed by the transform.
    Payload { redacted: &'static str },
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub recorded: Arc<Recorded>,
    /// While `false`, delivery requests wait before being answered, so deliveries pile up in the router.
    gate: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    data: Payload,
}

#[derive(Deserialize)]
struct Payload {
    sent_at_ns: u64,
}

/// The event id and `sent_at_ns` of a delivery body in the `expect`ed form, or `None` if it is malformed.
/// `webhook_id`: the request's `webhook-id` header, which must agree with the envelope's id when both are there.
pub fn parse_delivery(body: &[u8], webhook_id: Option<&str>, expect: Expect) -> Option<(String, u64)> {
    match expect {
        Expect::Envelope => {
            let envelope: Envelope = serde_json::from_slice(body).ok()?;
            if webhook_id.is_some_and(|header| header != envelope.id) {
                return None;
            }
            Some((envelope.id, envelope.data.sent_at_ns))
        }
        Expect::Payload { redacted } => {
            let payload: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
            // An envelope here means the transform did not run; the redacted field means it did not redact.
            if payload.contains_key("data") || payload.contains_key(redacted) {
                return None;
            }
            let sent_at_ns = payload.get("sent_at_ns")?.as_u64()?;
            Some((webhook_id?.to_string(), sent_at_ns))
        }
    }
}

pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
}

/// Room for every connection the harness opens at once, twice over (Linux caps it at `net.core.somaxconn`).
pub const ACCEPT_BACKLOG: u32 = 4096;

impl Receiver {
    /// Starts listening on an ephemeral loopback port. `fail_every`: answer `500` to every n-th delivery request
    /// (5 = 20 %); a counter instead of randomness keeps the failure share exact and the run reproducible.
    /// `gated`: hold delivery requests until [`Receiver::open_gate`]. `expect`: the form every delivery body must have.
    pub async fn start(fail_every: Option<u64>, gated: bool, expect: Expect) -> anyhow::Result<Self> {
        // The baseline and the dispatcher each open up to 1,024 connections at once. With tokio's default backlog
        // (1,024) the accept queue overflowed now and then, and every dropped handshake stalled its connection
        // for a second or more (baseline rates from 5,500 to 53,000/s in one sitting).
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(ACCEPT_BACKLOG)?;
        let addr = listener.local_addr()?;
        let recorded = Arc::new(Recorded::default());
        let shared = recorded.clone();
        let (gate, gate_rx) = watch::channel(!gated);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let recorded = shared.clone();
                let gate = gate_rx.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, recorded.clone(), fail_every, gate.clone(), expect));
                    // Connection errors (the router closing a connection mid-request at shutdown) are not results.
                    let _ =
                        http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Self { addr, recorded, gate, task })
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

async fn handle(
    req: Request<Incoming>,
    recorded: Arc<Recorded>,
    fail_every: Option<u64>,
    mut gate: watch::Receiver<bool>,
    expect: Expect,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let webhook_id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    if path == "/baseline" {
        recorded.baseline.fetch_add(1, Ordering::Relaxed);
        return Ok(status(StatusCode::NO_CONTENT));
    }
    if path == "/relay" {
        // The work a delivery's receipt costs here, so the relay is measured against the same receiver.
        let arrived_ns = unix_nanos();
        if parse_delivery(&body, webhook_id.as_deref(), Expect::Envelope).is_none() {
            recorded.malformed.fetch_add(1, Ordering::Relaxed);
            return Ok(status(StatusCode::BAD_REQUEST));
        }
        recorded.relayed.lock().expect("receiver lock").push(arrived_ns);
        return Ok(status(StatusCode::NO_CONTENT));
    }
    let Some(endpoint) = path.strip_prefix("/ep/").and_then(|i| i.parse::<usize>().ok()) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    // The sender is kept alive by the `Receiver`, so this only fails while it is shutting down.
    let _ = gate.wait_for(|open| *open).await;
    // Taken after the gate, so held deliveries count as arriving when answered, as a real receiver would see.
    let arrived_ns = unix_nanos();
    let n = recorded.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if fail_every.is_some_and(|every| n.is_multiple_of(every)) {
        recorded.failed.fetch_add(1, Ordering::Relaxed);
        return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
    }
    match parse_delivery(&body, webhook_id.as_deref(), expect) {
        Some((event_id, sent_at_ns)) => {
            let receipt = Receipt { endpoint, event_id, arrived_ns, latency_ns: arrived_ns.saturating_sub(sent_at_ns) };
            recorded.receipts.lock().expect("receiver lock").push(receipt);
            Ok(status(StatusCode::NO_CONTENT))
        }
        None => {
            recorded.malformed.fetch_add(1, Ordering::Relaxed);
            Ok(status(StatusCode::BAD_REQUEST))
        }
    }
}

pub fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: &str = r#"{"id":"evt_1","type":"bench.tick","data":{"sent_at_ns":7,"currency":"EUR"}}"#;
    const PAYLOAD: &str = r#"{"sent_at_ns":7,"seq":1,"amount":1234}"#;
    const REDACT: Expect = Expect::Payload { redacted: "currency" };

    #[test]
    fn envelope_form() {
        assert_eq!(parse_delivery(ENVELOPE.as_bytes(), None, Expect::Envelope), Some(("evt_1".into(), 7)));
        assert_eq!(parse_delivery(ENVELOPE.as_bytes(), Some("evt_1"), Expect::Envelope), Some(("evt_1".into(), 7)));
        // The signed id must be the envelope's.
        assert_eq!(parse_delivery(ENVELOPE.as_bytes(), Some("evt_2"), Expect::Envelope), None);
        // A bare payload where an envelope is expected.
        assert_eq!(parse_delivery(PAYLOAD.as_bytes(), Some("evt_1"), Expect::Envelope), None);
    }

    #[test]
    fn transformed_payload_form() {
        assert_eq!(parse_delivery(PAYLOAD.as_bytes(), Some("evt_1"), REDACT), Some(("evt_1".into(), 7)));
        // No id without the header; an untransformed envelope; a field the transform should have removed.
        assert_eq!(parse_delivery(PAYLOAD.as_bytes(), None, REDACT), None);
        assert_eq!(parse_delivery(ENVELOPE.as_bytes(), Some("evt_1"), REDACT), None);
        let unredacted = r#"{"sent_at_ns":7,"currency":"EUR"}"#;
        assert_eq!(parse_delivery(unredacted.as_bytes(), Some("evt_1"), REDACT), None);
        assert_eq!(parse_delivery(b"{\"seq\":1}", Some("evt_1"), REDACT), None);
    }
}
