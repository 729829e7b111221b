//! Starts Switchyard for end-to-end tests — in-process through [`switchyard::run`] or as the real binary — and
//! talks to it through the REST API only, as a user would.
#![allow(dead_code)] // shared by several test binaries, each using a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// 32 bytes as hex; fixed so a restart on the same data directory decrypts the stored endpoint secrets.
pub const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// How often idle workers poll for due retries in these tests (the shipped default is 1 s); keeps retry tests
/// quick without changing any delivery rule.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Logs of the server under test, shown by `cargo test` for failing tests; `RUST_LOG` picks the level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("switchyard=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Switchyard running in this process on `127.0.0.1:0`, with SQLite in a temporary directory.
pub struct Server {
    pub base_url: String,
    dir: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), switchyard::StartError>>>,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("create a temporary data directory")).await
    }

    /// Starts on an existing data directory (e.g. the one a stopped server left).
    pub async fn start_in(dir: TempDir) -> Self {
        Self::start_configured(dir, |_| {}).await
    }

    /// Starts with the test settings below, then `configure`'s changes.
    pub async fn start_configured(dir: TempDir, configure: impl FnOnce(&mut switchyard::config::Config)) -> Self {
        init_tracing();
        let mut config = switchyard::config::Config::for_data_dir(dir.path());
        config.admin_key = Some(ADMIN_KEY.to_string());
        config.master_key = Some(MASTER_KEY.to_string());
        config.poll_interval = POLL_INTERVAL;
        // The success rate's counts reach the database at once rather than within 5 s.
        config.stats_interval = Duration::from_millis(100);
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(switchyard::run(config, listener, async move {
            let _ = stop.await;
        }));
        let server = Self { base_url, dir: Some(dir), shutdown: Some(shutdown), task: Some(task) };
        wait_ready(&server.base_url, Duration::from_secs(20), || {
            server.task.as_ref().is_some_and(|t| t.is_finished()).then(|| "switchyard::run returned".to_string())
        })
        .await;
        server
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("data directory").path()
    }

    /// Completes the shutdown future and waits (at most `limit`) for `run` to return, which must be `Ok`.
    /// Returns how long that took and the data directory, for a restart.
    pub async fn stop(mut self, limit: Duration) -> (Duration, TempDir) {
        let started = Instant::now();
        let _ = self.shutdown.take().expect("shutdown sender").send(());
        let task = self.task.take().expect("server task");
        let result = tokio::time::timeout(limit, task)
            .await
            .unwrap_or_else(|_| panic!("switchyard::run did not return within {limit:?} of the shutdown signal"))
            .expect("switchyard::run panicked");
        if let Err(e) = result {
            panic!("switchyard::run returned an error after shutdown: {e}");
        }
        (started.elapsed(), self.dir.take().expect("data directory"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls `GET /readyz` until it answers 200. `gone` reports (as `Some(why)`) that the server died, to fail at
/// once instead of at the timeout.
pub async fn wait_ready(base_url: &str, timeout: Duration, mut gone: impl FnMut() -> Option<String>) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        if let Some(why) = gone() {
            panic!("server at {base_url} stopped before it was ready: {why} (last /readyz: {last})");
        }
        match client.get(format!("{base_url}/readyz")).timeout(Duration::from_secs(2)).send().await {
            Ok(response) if response.status() == StatusCode::OK => return,
            Ok(response) => last = format!("HTTP {}", response.status()),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            panic!("server at {base_url} not ready after {timeout:?}; last /readyz: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (bound, read and released; the tiny race with other processes is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("address").port()
}

/// The `switchyard` binary running `serve` as a child process; killed (SIGKILL) when dropped, and its log printed
/// if the test is failing.
pub struct BinaryServer {
    pub base_url: String,
    child: Child,
    log: PathBuf,
}

impl BinaryServer {
    /// Starts `switchyard serve` on a fresh port with `data_dir`, the test admin key and dev mode, and waits until
    /// `/readyz` answers. `log_dir` receives the process output (`switchyard-<port>.log`).
    pub async fn start(data_dir: &Path, log_dir: &Path) -> Self {
        let mut server = Self::spawn(data_dir, log_dir);
        let base_url = server.base_url.clone();
        let log = server.log.clone();
        wait_ready(&base_url, Duration::from_secs(20), || match server.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited with {status}; log:\n{}", read_log(&log))),
            Ok(None) => None,
            Err(e) => Some(format!("cannot poll the child: {e}")),
        })
        .await;
        server
    }

    /// Starts `switchyard serve` as [`BinaryServer::start`] does, without waiting for it to be ready.
    pub fn spawn(data_dir: &Path, log_dir: &Path) -> Self {
        let port = free_port();
        let log = log_dir.join(format!("switchyard-{port}.log"));
        let out = std::fs::File::create(&log).expect("create the server log file");
        let err = out.try_clone().expect("clone the log file handle");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("serve")
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHYARD_DATA_DIR", data_dir)
            .env("SWITCHYARD_ADMIN_KEY", ADMIN_KEY)
            .env("SWITCHYARD_MASTER_KEY", MASTER_KEY)
            .env("SWITCHYARD_DEV", "true")
            .env("SWITCHYARD_POLL_INTERVAL", format!("{}ms", POLL_INTERVAL.as_millis()))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "switchyard=info".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_switchyard")));
        Self { base_url: format!("http://127.0.0.1:{port}"), child, log }
    }

    /// Waits (at most `limit`) for the process to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait().expect("poll the child") {
                Some(status) => return status,
                None if Instant::now() >= deadline => {
                    panic!("still running {limit:?} after start; log:\n{}", self.log())
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// What the process has written to its log so far (its last 20,000 characters).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// SIGKILL (on Unix `Child::kill` sends SIGKILL): no shutdown code runs.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        self.kill_now();
        if std::thread::panicking() {
            eprintln!("--- log of the switchyard process at {} ---\n{}", self.base_url, read_log(&self.log));
        }
    }
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    // The end is what explains a failure; keep failing output readable.
    let chars: Vec<char> = text.chars().collect();
    let start = chars.len().saturating_sub(20_000);
    chars[start..].iter().collect()
}

/// A REST client acting with one key (and, for the admin key, optionally on behalf of one tenant).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base_url: String,
    key: String,
    tenant_header: Option<String>,
    /// The tenant this client acts for, when known.
    pub tenant_id: Option<String>,
}

impl Api {
    pub fn admin(base_url: &str) -> Self {
        Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client"),
            base_url: base_url.to_string(),
            key: ADMIN_KEY.to_string(),
            tenant_header: None,
            tenant_id: None,
        }
    }

    /// Creates a tenant with the admin key, then an API key for it; returns a client using that tenant key.
    pub async fn new_tenant(base_url: &str, name: &str) -> Self {
        let admin = Self::admin(base_url);
        let tenant = admin.expect(Method::POST, "/api/v1/tenants", Some(json!({ "name": name })), 201).await;
        let tenant_id = str_field(&tenant, "id").to_string();
        let as_tenant = Self { tenant_header: Some(tenant_id.clone()), ..admin.clone() };
        let key = as_tenant.expect(Method::POST, "/api/v1/api-keys", Some(json!({ "name": "e2e" })), 201).await;
        Self { key: str_field(&key, "key").to_string(), tenant_id: Some(tenant_id), ..admin }
    }

    /// The same key against another server address (e.g. after a restart on a new port).
    pub fn at(&self, base_url: &str) -> Self {
        Self { base_url: base_url.to_string(), ..self.clone() }
    }

    pub fn tenant_id(&self) -> &str {
        self.tenant_id.as_deref().expect("a tenant client")
    }

    /// The key this client sends, for a client of another kind (a browser) to sign in with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty).
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send_text(method, path, body.map(|b| b.to_string())).await
    }

    /// Sends `body` verbatim as `application/json` (to control the exact bytes, e.g. number formatting).
    pub async fn send_text(&self, method: Method, path: &str, body: Option<String>) -> (StatusCode, Value) {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base_url)).bearer_auth(&self.key);
        if let Some(tenant) = &self.tenant_header {
            request = request.header("Switchyard-Tenant", tenant);
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: HTTP {status} with a body that is not JSON ({e}): {text}"))
        };
        (status, value)
    }

    /// Sends raw bytes (e.g. a WebAssembly component) with `Content-Type: application/wasm`.
    pub async fn send_bytes(&self, method: Method, path: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes);
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let value = response.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// Sends a request and asserts the status; returns the JSON body.
    pub async fn expect(&self, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
        let (got, value) = self.send(method.clone(), path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: expected HTTP {status}, got {got}: {value}");
        value
    }

    pub async fn get(&self, path: &str) -> Value {
        self.expect(Method::GET, path, None, 200).await
    }

    /// `POST /api/v1/endpoints` with `body`; returns the created endpoint (including its `secret`).
    pub async fn create_endpoint(&self, body: Value) -> Value {
        let endpoint = self.expect(Method::POST, "/api/v1/endpoints", Some(body), 201).await;
        let secret = str_field(&endpoint, "secret");
        assert!(secret.starts_with("whsec_"), "endpoint secret should be `whsec_…`, got {secret:?}");
        endpoint
    }

    pub async fn endpoint(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/endpoints/{id}")).await
    }

    /// `POST /api/v1/events`; returns the 202 body `{id, deliveries}`.
    pub async fn publish(&self, event_type: &str, data: Value) -> Value {
        self.expect(Method::POST, "/api/v1/events", Some(json!({ "type": event_type, "data": data })), 202).await
    }

    /// The one delivery of `event_id` to `endpoint_id`.
    pub async fn delivery_of(&self, event_id: &str, endpoint_id: &str) -> Value {
        let page = self.get(&format!("/api/v1/deliveries?event_id={event_id}&endpoint_id={endpoint_id}")).await;
        let data = page["data"].as_array().unwrap_or_else(|| panic!("deliveries page without `data`: {page}"));
        assert_eq!(data.len(), 1, "expected exactly one delivery of {event_id} to {endpoint_id}, got {page}");
        data[0].clone()
    }

    /// `GET /api/v1/deliveries/{id}` (with its `attempts_log`).
    pub async fn delivery(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/deliveries/{id}")).await
    }

    /// Polls the delivery every 50 ms until `done` holds; panics after `timeout` with the last state seen.
    pub async fn wait_delivery(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let delivery = self.delivery(id).await;
            if done(&delivery) {
                return delivery;
            }
            if Instant::now() > deadline {
                panic!("delivery {id}: timed out after {timeout:?} waiting for {what}; last state: {delivery:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the delivery's status is `status`; returns the delivery with its attempts log.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_delivery(id, &format!("status `{status}`"), timeout, |d| d["status"] == status).await
    }

    /// Waits until the delivery is `succeeded` or `dead`, after which nothing happens to it on its own.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        self.wait_delivery(id, "a final status (succeeded or dead)", timeout, |d| {
            d["status"] == "succeeded" || d["status"] == "dead"
        })
        .await
    }
}

/// A string field of a JSON object, or a panic naming it.
pub fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_else(|| panic!("expected a string `{field}` in {value}"))
}

/// The `attempts_log` of a delivery.
pub fn attempts_log(delivery: &Value) -> &Vec<Value> {
    delivery["attempts_log"].as_array().unwrap_or_else(|| panic!("delivery without `attempts_log`: {delivery:#}"))
}

/// The `outcome` of each attempt, oldest first.
pub fn outcomes(delivery: &Value) -> Vec<String> {
    attempts_log(delivery).iter().map(|a| a["outcome"].as_str().unwrap_or("<missing>").to_string()).collect()
}

/// `GET /metrics` with the admin key: the text, after checking it is answered as OpenMetrics.
pub async fn scrape_metrics(base_url: &str) -> String {
    let scraped = reqwest::Client::new()
        .get(format!("{base_url}/metrics"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(scraped.status(), 200);
    let content_type = scraped.headers()["content-type"].to_str().unwrap_or_default().to_string();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    scraped.text().await.expect("the metrics' text")
}
