//! An in-process Switchyard for REST API tests: started through `switchyard::run` on `127.0.0.1:0` with SQLite
//! in a temporary directory, plus a small client that keeps the status, headers and raw text of each answer.
#![allow(dead_code)] // each test binary uses a part

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use switchyard::config::Config;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_KEY: &str = "sy_admin_api-tests-0123456789";

/// A running server; stopped when dropped.
pub struct TestServer {
    pub base_url: String,
    /// The configuration it runs with (to reach its database and master key from a test).
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), switchyard::StartError>>,
    _dir: TempDir,
}

impl TestServer {
    /// Defaults as shipped, in dev mode (so endpoints may point at `http://127.0.0.1`).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mut config = Config::for_data_dir(dir.path());
        config.admin_key = Some(ADMIN_KEY.to_string());
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(switchyard::run(config.clone(), listener, async move {
            let _ = stop.await;
        }));
        let server = Self { base_url, config, shutdown: Some(shutdown), task, _dir: dir };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(!self.task.is_finished(), "switchyard::run returned before the server was ready");
            let answer = client.get(format!("{}/readyz", self.base_url)).timeout(Duration::from_secs(2)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "server at {} not ready after 20s", self.base_url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client with the admin key and no tenant.
    pub fn admin(&self) -> Client {
        Client::new(&self.base_url, Some(ADMIN_KEY))
    }

    /// A client sending no key at all.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.base_url, None)
    }

    /// Creates a tenant (admin key) and a key for it; returns a client with that tenant key.
    pub async fn tenant(&self, name: &str) -> Client {
        let tenant = self.admin().post("/api/v1/tenants", json!({ "name": name })).await.expect_status(201);
        let tenant_id = tenant.str("id");
        let key = self.admin().for_tenant(&tenant_id).post("/api/v1/api-keys", json!({ "name": "tests" })).await;
        let key = key.expect_status(201);
        let mut client = Client::new(&self.base_url, Some(&key.str("key")));
        client.tenant_id = Some(tenant_id);
        client.key_id = Some(key.str("id"));
        client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

/// A REST client with one key (or none), optionally sending `Switchyard-Tenant`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    key: Option<String>,
    tenant_header: Option<String>,
    /// For a tenant-key client: its tenant and the key's id (the audit log's actor).
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
}

impl Client {
    pub fn new(base_url: &str, key: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client"),
            base_url: base_url.to_string(),
            key: key.map(str::to_string),
            tenant_header: None,
            tenant_id: None,
            key_id: None,
        }
    }

    /// The same key, sending `Switchyard-Tenant: tenant_id`.
    pub fn for_tenant(&self, tenant_id: &str) -> Self {
        Self { tenant_header: Some(tenant_id.to_string()), tenant_id: Some(tenant_id.to_string()), ..self.clone() }
    }

    pub fn with_key(&self, key: &str) -> Self {
        Self { key: Some(key.to_string()), ..self.clone() }
    }

    pub fn tenant_id(&self) -> &str {
        self.tenant_id.as_deref().expect("a client for a tenant")
    }

    /// A request with this client's key and tenant header, to add anything else by hand.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base_url));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(tenant) = &self.tenant_header {
            request = request.header("Switchyard-Tenant", tenant);
        }
        request
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        // Every answer of the API is JSON; the metrics' text and the dashboard's files are not the API's.
        let not_api = headers.get("content-type").is_some_and(|t| {
            [&b"application/openmetrics"[..], b"text/", b"image/"].iter().any(|kind| t.as_bytes().starts_with(kind))
        });
        let json = if text.is_empty() || not_api {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("HTTP {status}: body is not JSON ({e}): {text}"))
        };
        Answer { status, headers, text, json }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send_json(Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.send_json(Method::PATCH, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.send_json(Method::PUT, path, body).await
    }

    pub async fn send_json(&self, method: Method, path: &str, body: Value) -> Answer {
        self.send_raw(method, path, body.to_string()).await
    }

    /// Sends `body` verbatim as `application/json`.
    pub async fn send_raw(&self, method: Method, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(self.request(method, path).header("content-type", "application/json").body(body)).await
    }

    /// `POST /api/v1/endpoints` to a loopback URL nothing listens on (so no test reaches the network); `extra`
    /// fields are merged into the body.
    pub async fn create_endpoint(&self, extra: Value) -> Answer {
        let mut body = json!({ "url": "http://127.0.0.1:9/hook" });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.post("/api/v1/endpoints", body).await
    }

    /// Every item of a list route, following `next_cursor` with `limit` per page.
    pub async fn all_pages(&self, path: &str, limit: usize) -> Vec<Value> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{path}{separator}limit={limit}");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&url).await.expect_status(200);
            let data = page.json["data"].as_array().expect("a page has `data`").clone();
            assert!(data.len() <= limit, "page larger than limit: {}", page.text);
            items.extend(data);
            match page.json["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return items,
            }
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub fn expect_status(self, status: u16) -> Self {
        assert_eq!(self.status, status, "expected HTTP {status}, got {}: {}", self.status, self.text);
        self
    }

    /// Asserts the JSON error shape, its status, code and `field`.
    pub fn expect_error(&self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status, status, "expected HTTP {status} ({code}, {field:?}), got: {}", self.text);
        let error = &self.json["error"];
        assert_eq!(error["code"], code, "{}", self.text);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "error without message: {}", self.text);
        assert_eq!(error["field"].as_str(), field, "{}", self.text);
    }

    pub fn expect_invalid(&self, field: &str) {
        self.expect_error(400, "invalid_request", Some(field));
    }

    pub fn str(&self, key: &str) -> String {
        self.json[key].as_str().unwrap_or_else(|| panic!("no string `{key}` in {}", self.text)).to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
