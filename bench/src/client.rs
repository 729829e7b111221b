//! Talking to the router's REST API (setup, publishing, reading back deliveries) and the baseline client that
//! posts straight to the receiver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::plugins::PluginCalls;
use crate::receiver::unix_nanos;
use crate::router_process::ADMIN_KEY;

pub const EVENT_TYPE: &str = "bench.tick";

pub struct Api {
    http: reqwest::Client,
    base: String,
    tenant: String,
    /// Appended to every event's data as a `padding` field (see [`padding`]).
    padding: Option<String>,
}

/// What publishing produced: the router's own count of deliveries it created, per accepted event.
pub struct Published {
    pub accepted: u64,
    pub deliveries: u64,
    pub elapsed: Duration,
}

/// The router's record of one delivery.
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: String,
    pub attempts: i64,
}

impl Api {
    pub async fn new(base: &str, pool_size: usize, payload_bytes: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(pool_size).tcp_nodelay(true).build()?;
        let tenant: Value = http
            .post(format!("{base}/api/v1/tenants"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": "bench"}))
            .send()
            .await?
            .error_for_status()
            .context("creating the tenant")?
            .json()
            .await?;
        let tenant = tenant["id"].as_str().context("tenant without id")?.to_string();
        Ok(Self { http, base: base.to_string(), tenant, padding: padding(payload_bytes) })
    }

    fn event(&self, seq: u64) -> Value {
        json!({"type": EVENT_TYPE, "data": event_data(unix_nanos(), seq, self.padding.as_deref())})
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(ADMIN_KEY)
            .header("Switchyard-Tenant", &self.tenant)
    }

    /// Creates an endpoint subscribed to every bench event (optionally through a JSONPath `filter`) and returns its
    /// id. `extra`: further create fields (`retry`, `timeout_secs`), as a JSON object.
    pub async fn create_endpoint(&self, url: &str, filter: Option<&str>, extra: Value) -> anyhow::Result<String> {
        let mut subscription = json!({"event_type": "bench.*"});
        if let Some(filter) = filter {
            subscription["filter"] = json!(filter);
        }
        let mut body = json!({"url": url, "subscriptions": [subscription]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let response = self.request(reqwest::Method::POST, "/endpoints").json(&body).send().await?;
        if !response.status().is_success() {
            bail!("creating endpoint: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        let endpoint: Value = response.json().await?;
        Ok(endpoint["id"].as_str().context("endpoint without id")?.to_string())
    }

    /// Gives the bench's event type a JSON Schema its events match (`--event-schema`): every publish is checked.
    pub async fn register_event_schema(&self) -> anyhow::Result<()> {
        let schema = json!({
            "type": "object",
            "required": ["sent_at_ns", "seq", "parity", "amount", "currency"],
            "properties": {
                "sent_at_ns": {"type": "integer", "minimum": 0},
                "seq": {"type": "integer", "minimum": 0},
                "parity": {"enum": [0, 1]},
                "amount": {"type": "integer", "minimum": 0},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "padding": {"type": "string"}
            },
            "additionalProperties": false
        });
        let body = json!({"name": EVENT_TYPE, "description": "The bench's events", "schema": schema});
        let response = self.request(reqwest::Method::POST, "/event-types").json(&body).send().await?;
        if !response.status().is_success() {
            bail!(
                "registering the event type's schema: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Installs (or replaces) plugin `name` through the admin API; returns the sha256 of the version it loaded.
    pub async fn upload_plugin(&self, name: &str, component: Vec<u8>) -> anyhow::Result<String> {
        let response = self
            .http
            .put(format!("{}/api/v1/plugins/{name}", self.base))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/wasm")
            .body(component)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("uploading plugin {name}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        let plugin: Value = response.json().await?;
        Ok(plugin["latest"]
            .as_str()
            .with_context(|| format!("plugin {name} has no latest version: {plugin}"))?
            .to_string())
    }

    /// The router's call statistics of every loaded version of plugin `name`, newest first.
    pub async fn plugin_calls(&self, name: &str) -> anyhow::Result<Vec<PluginCalls>> {
        let plugin: Value = self
            .http
            .get(format!("{}/api/v1/plugins/{name}", self.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("fetching plugin {name}"))?
            .json()
            .await?;
        let versions = plugin["versions"].as_array().with_context(|| format!("plugin {name} without versions"))?;
        Ok(versions
            .iter()
            .map(|v| PluginCalls {
                plugin: name.to_string(),
                sha256: v["sha256"].as_str().unwrap_or_default().to_string(),
                calls: v["calls"].as_u64().unwrap_or_default(),
                errors: v["errors"].as_u64().unwrap_or_default(),
                p50_us: v["p50_us"].as_u64(),
                p99_us: v["p99_us"].as_u64(),
            })
            .collect())
    }

    /// The errors recorded on a delivery's attempts (e.g. a plugin call that failed), oldest first.
    pub async fn attempt_errors(&self, delivery_id: &str) -> anyhow::Result<Vec<String>> {
        let delivery: Value = self
            .request(reqwest::Method::GET, &format!("/deliveries/{delivery_id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let attempts = delivery["attempts_log"].as_array().context("delivery without attempts_log")?;
        Ok(attempts.iter().filter_map(|a| a["error"].as_str().map(str::to_string)).collect())
    }

    /// Publishes one event; returns how many deliveries the router created for it.
    async fn publish(&self, seq: u64) -> anyhow::Result<u64> {
        let response = self.request(reqwest::Method::POST, "/events").json(&self.event(seq)).send().await?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            bail!("publish {seq}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        let accepted: Value = response.json().await?;
        accepted["deliveries"].as_u64().context("202 without a deliveries count")
    }

    /// Publishes events `seqs` in one `POST /events/batch`; returns how many deliveries the router created.
    async fn publish_batch(&self, seqs: std::ops::Range<u64>) -> anyhow::Result<u64> {
        let body = json!({"events": seqs.clone().map(|seq| self.event(seq)).collect::<Vec<_>>()});
        let response = self.request(reqwest::Method::POST, "/events/batch").json(&body).send().await?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            bail!("publish batch {seqs:?}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        let accepted: Value = response.json().await?;
        let items = accepted["data"].as_array().context("202 without data")?;
        ensure!(items.len() as u64 == seqs.end - seqs.start, "the batch answer has {} items", items.len());
        items.iter().map(|item| item["deliveries"].as_u64().context("item without a deliveries count")).sum()
    }

    /// Publishes `count` events as fast as `concurrency` publishers can (closed loop), `batch` events per request
    /// (1: `POST /events`, more: `POST /events/batch`).
    pub async fn publish_closed_loop(
        self: &Arc<Self>,
        count: u64,
        concurrency: usize,
        batch: u64,
    ) -> anyhow::Result<Published> {
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let workers = (0..concurrency).map(|_| {
            let api = self.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut deliveries = 0;
                let mut accepted = 0;
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= count {
                        return anyhow::Ok((accepted, deliveries));
                    }
                    let last = (first + batch).min(count);
                    deliveries +=
                        if batch == 1 { api.publish(first).await? } else { api.publish_batch(first..last).await? };
                    accepted += last - first;
                }
            })
        });
        let mut published = Published { accepted: 0, deliveries: 0, elapsed: Duration::ZERO };
        for result in join_all(workers).await {
            let (accepted, deliveries) = result??;
            published.accepted += accepted;
            published.deliveries += deliveries;
        }
        published.elapsed = start.elapsed();
        Ok(published)
    }

    /// Publishes at a fixed `rate` (events/s) for `duration` (open loop: the schedule does not wait for
    /// responses, so a slow router shows up as latency, not as a lower offered load). At most `max_in_flight`
    /// requests are outstanding; if that limit is hit the offered rate drops, and the achieved rate shows it.
    pub async fn publish_fixed_rate(
        self: &Arc<Self>,
        rate: u64,
        duration: Duration,
        max_in_flight: usize,
    ) -> anyhow::Result<Published> {
        // 10 ms ticks: tokio timers have millisecond resolution, so per-event sleeps above 1,000/s would drift.
        const TICK: Duration = Duration::from_millis(10);
        let total = rate * duration.as_millis() as u64 / 1000;
        let permits = Arc::new(Semaphore::new(max_in_flight));
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        let mut seq = 0;
        while seq < total {
            interval.tick().await;
            // Events due by now according to the schedule, so rounding never accumulates.
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
            while seq < due {
                let permit = permits.clone().acquire_owned().await?;
                let api = self.clone();
                let this = seq;
                tasks.push(tokio::spawn(async move {
                    let result = api.publish(this).await;
                    drop(permit);
                    result
                }));
                seq += 1;
            }
        }
        let mut published = Published { accepted: 0, deliveries: 0, elapsed: Duration::ZERO };
        for result in join_all(tasks).await {
            published.deliveries += result??;
            published.accepted += 1;
        }
        published.elapsed = start.elapsed();
        Ok(published)
    }

    /// Whether the router still has a delivery of the tenant waiting, in flight or scheduled for a retry: one
    /// row per status at most, so asking costs the router next to nothing (listing every delivery does not).
    pub async fn any_unfinished_delivery(&self) -> anyhow::Result<bool> {
        for status in ["pending", "delivering", "failed"] {
            let request =
                self.request(reqwest::Method::GET, "/deliveries").query(&[("status", status), ("limit", "1")]);
            let page: Value = request.send().await?.error_for_status()?.json().await?;
            if !page["data"].as_array().context("page without data")?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every delivery of the tenant, as the router records it.
    pub async fn deliveries(&self) -> anyhow::Result<Vec<DeliveryRecord>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self.request(reqwest::Method::GET, "/deliveries").query(&[("limit", "1000")]);
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            let page: Value = request.send().await?.error_for_status()?.json().await?;
            for d in page["data"].as_array().context("page without data")? {
                all.push(DeliveryRecord {
                    id: d["id"].as_str().unwrap_or_default().to_string(),
                    event_id: d["event_id"].as_str().unwrap_or_default().to_string(),
                    endpoint_id: d["endpoint_id"].as_str().unwrap_or_default().to_string(),
                    status: d["status"].as_str().unwrap_or_default().to_string(),
                    attempts: d["attempts"].as_i64().unwrap_or_default(),
                });
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(all),
            }
        }
    }
}

/// A bench event's data. `parity` lets the JSONPath scenario route each event to half of the endpoints.
fn event_data(sent_at_ns: u64, seq: u64, padding: Option<&str>) -> Value {
    let mut data = json!({"sent_at_ns": sent_at_ns, "seq": seq, "parity": seq % 2, "amount": 1234, "currency": "EUR"});
    if let Some(padding) = padding {
        data["padding"] = Value::String(padding.to_string());
    }
    data
}

/// The bench events' own data is about 90 bytes; `--payload-bytes` pads it to about that size with a string field
/// (real webhook payloads are often a few KiB). None when no padding is asked for.
fn padding(payload_bytes: usize) -> Option<String> {
    const OWN_DATA_BYTES: usize = 90;
    (payload_bytes > OWN_DATA_BYTES).then(|| "x".repeat(payload_bytes - OWN_DATA_BYTES))
}

/// The machine's limit for a dispatcher: `count` POSTs of an envelope-sized body from one keep-alive reqwest
/// client straight to the receiver, `concurrency` at a time. Returns requests per second.
pub async fn baseline(url: &str, count: u64, concurrency: usize, payload_bytes: usize) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let data = event_data(0, 0, padding(payload_bytes).as_deref());
    let body = json!({
        "id": "evt_02fq8c1wq6vd2k00000000", "type": EVENT_TYPE, "timestamp": "2026-11-22T21:56:34.123Z",
        "tenant_id": "ten_02fq8c1wq6vd2k00000000",
        "data": data,
    })
    .to_string();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (http, next, body, url) = (http.clone(), next.clone(), body.clone(), url.to_string());
        tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let response =
                    http.post(&url).header("content-type", "application/json").body(body.clone()).send().await?;
                if !response.status().is_success() {
                    bail!("baseline receiver answered {}", response.status());
                }
            }
            anyhow::Ok(())
        })
    });
    for result in join_all(workers).await {
        result??;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}
