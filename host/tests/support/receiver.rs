//! A real local webhook receiver: an HTTP server on `127.0.0.1:0` that records every request it gets (lower-cased
//! headers, exact body bytes, arrival and answer times) and answers from a programmable script.
//!
//! The script is a queue of [`Reply`]s consumed one per request, in arrival order; once it is empty every request
//! gets the default reply (`204 No Content` at once unless changed with [`Receiver::set_default`]).
#![allow(dead_code)] // shared by several test binaries, each using a part

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waited before answering (the request is recorded on arrival, before this delay).
    pub delay: Duration,
}

impl Default for Reply {
    fn default() -> Self {
        Self::status(204)
    }
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/hook?x=1`.
    pub path: String,
    /// Lower-cased names; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body exactly as received.
    pub body: Vec<u8>,
    pub received_at: Instant,
    /// When the handler produced its answer (after the reply's delay); `None` while it is still waiting, or if the
    /// connection went away first and the handler was dropped. Whether the sender actually read the answer is not
    /// known here.
    pub answered_at: Option<Instant>,
    /// The status the script chose for this request.
    pub replied_status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The body as text; panics (with the bytes shown) if it is not UTF-8.
    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|e| panic!("request body is not UTF-8 ({e}): {:?}", self.body))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<ScriptState>,
    changed: Notify,
}

#[derive(Default)]
struct ScriptState {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Reply,
}

pub struct Receiver {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("receiver: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("receiver: local address");
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver: server failed");
        });
        Self { addr, shared, task }
    }

    /// The URL an endpoint should point at: `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues replies for the next requests, in order.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// The reply for requests once the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = reply;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Waits until at least `n` requests arrived and returns all of them; panics after `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.wait_until(&format!("{n} request(s)"), timeout, |requests| requests.len() >= n).await
    }

    /// Waits until `done` holds for the requests so far and returns them; panics after `timeout`, describing
    /// what was awaited (`what`) and what arrived.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a request arriving in between still wakes us.
            let changed = self.shared.changed.notified();
            {
                let state = self.lock();
                if done(&state.requests) {
                    return state.requests.clone();
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let requests = self.requests();
                // The first few are enough to see what went wrong; a crash test sends dozens.
                let summary: Vec<String> = requests
                    .iter()
                    .take(20)
                    .map(|r| format!("{} {} webhook-id={:?}", r.method, r.path, r.header("webhook-id")))
                    .collect();
                panic!(
                    "receiver: timed out after {timeout:?} waiting for {what}; got {} request(s), the first ones: \
                     {summary:#?}",
                    requests.len()
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptState> {
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = Instant::now();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        names
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    let (index, reply) = {
        let mut state = shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let reply = match state.script.pop_front() {
            Some(reply) => reply,
            None => state.default.clone(),
        };
        state.requests.push(Recorded {
            method: method.to_string(),
            path: uri.path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_else(|| uri.path().to_string()),
            headers: names,
            body: body.to_vec(),
            received_at,
            answered_at: None,
            replied_status: reply.status,
        });
        (state.requests.len() - 1, reply)
    };
    shared.changed.notify_waiters();

    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::new(Body::from(reply.body.clone()));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("receiver: scripted status is valid");
    for (name, value) in &reply.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("receiver: scripted header name is valid"),
            HeaderValue::from_str(value).expect("receiver: scripted header value is valid"),
        );
    }
    {
        let mut state = shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.requests[index].answered_at = Some(Instant::now());
    }
    shared.changed.notify_waiters();
    response
}
