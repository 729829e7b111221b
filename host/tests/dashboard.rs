//! The operators' dashboard in a real browser: `tests/browser/dashboard.mjs` drives Debian's Chromium through
//! playwright-core against a real server, and this test checks what the clicks did through the REST API.
//!
//! Needs Node.js 20 or later as `node`, `tests/browser/node_modules` (`npm ci --prefix tests/browser`) and Chromium (`/usr/bin/chromium`,
//! or `SWITCHYARD_TEST_CHROMIUM`); `tests/run` installs them. Without them the test is skipped locally and fails
//! under `CI=true`.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/receiver.rs"]
mod receiver;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use harness::{outcomes, str_field, Api, Server, ADMIN_KEY};
use receiver::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(20);

struct Browser {
    script: PathBuf,
    chromium: PathBuf,
}

/// What the browser test needs, or `None` (after saying why) when it is missing outside CI.
fn browser() -> Option<Browser> {
    let browser_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser"));
    let chromium = std::env::var_os("SWITCHYARD_TEST_CHROMIUM")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    // playwright-core needs Node.js 20 or later.
    let node = std::process::Command::new("node")
        .args(["-e", "process.exit(Number(process.versions.node.split('.')[0]) < 20 ? 1 : 0)"])
        .output();
    let missing = if !matches!(node, Ok(ref out) if out.status.success()) {
        Some("Node.js 20 or later does not run as `node`".to_string())
    } else if !browser_dir.join("node_modules/playwright-core").is_dir() {
        Some("tests/browser/node_modules is missing (run `npm ci --prefix tests/browser`)".to_string())
    } else if !chromium.is_file() {
        Some(format!(
            "no Chromium at {} (install Debian's `chromium` or set SWITCHYARD_TEST_CHROMIUM)",
            chromium.display()
        ))
    } else {
        None
    };
    match missing {
        None => Some(Browser { script: browser_dir.join("dashboard.mjs"), chromium }),
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the browser test cannot run: {why}")
        }
        Some(why) => {
            eprintln!("SKIP: dashboard browser test: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_requeues_dead_letters_and_pauses_an_endpoint_in_the_dashboard() {
    let Some(browser) = browser() else { return };
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let server = Server::start_configured(data_dir, |config| config.event_type_schemas = true).await;
    let api = Api::new_tenant(&server.base_url, "Acme").await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(400).body("no such order"));
    let endpoint_url = receiver.url("/hook");
    // A long word in the description: the page must wrap it, not grow wider than the window.
    let description = format!("orders-{}", "x".repeat(600));
    let endpoint = api.create_endpoint(json!({ "url": endpoint_url, "description": description })).await;
    let endpoint_id = str_field(&endpoint, "id").to_string();

    let mut dead = Vec::new();
    for n in 0..3 {
        let event = api.publish("order.created", json!({ "n": n })).await;
        let delivery = api.delivery_of(str_field(&event, "id"), &endpoint_id).await;
        let delivery = api.wait_status(str_field(&delivery, "id"), "dead", WAIT).await;
        dead.push(str_field(&delivery, "id").to_string());
    }
    receiver.set_default(Reply::status(204));
    let publish_key = api
        .expect(Method::POST, "/api/v1/api-keys", Some(json!({ "name": "checkout", "scope": "publish" })), 201)
        .await;

    let run = tokio::process::Command::new("node")
        .arg(&browser.script)
        .env("SWITCHYARD_URL", &server.base_url)
        .env("ADMIN_KEY", ADMIN_KEY)
        .env("TENANT_KEY", api.key())
        .env("PUBLISH_KEY", str_field(&publish_key, "key"))
        .env("TENANT_ID", api.tenant_id())
        .env("ENDPOINT_URL", &endpoint_url)
        .env("DEAD_IDS", dead.join(","))
        .env("CHROMIUM", &browser.chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the browser test ends").unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser test failed:\n{said}");

    // What the clicks did, as the API sees it.
    for id in &dead {
        let delivery = api.wait_status(id, "succeeded", WAIT).await;
        assert_eq!(outcomes(&delivery), ["dead", "succeeded"], "{id}");
    }
    assert_eq!(receiver.count(), 7, "three refused and three accepted requests, and the test event");
    let tests: Vec<_> = receiver.requests().into_iter().filter(|r| r.json()["type"] == "switchyard.test").collect();
    assert_eq!(tests.len(), 1, "one test event");
    assert_eq!(api.endpoint(&endpoint_id).await["status"], "paused");
    let audit = api.get("/api/v1/audit-log?action=dead_letters.requeued").await;
    let requeues: Vec<_> =
        audit["data"].as_array().unwrap().iter().map(|e| (&e["actor"], &e["details"]["requeued"])).collect();
    assert_eq!(requeues, [(&json!("admin"), &json!(2)), (&json!("admin"), &json!(1))], "{audit:#}");
    let changes = api.get("/api/v1/audit-log?resource_id=").await;
    let by_admin: Vec<&str> = changes["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "admin" && e["resource_type"] == "endpoint")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_admin,
        [
            "endpoint.deleted",
            "endpoint.deleted",
            "endpoint.secret_rotated",
            "endpoint.created",
            "endpoint.secret_rotated",
            "endpoint.created",
            "endpoint.paused",
            "endpoint.tested"
        ],
        "newest first: {changes:#}"
    );
    let created = api.get("/api/v1/audit-log?action=endpoint.created").await;
    let asymmetric: Vec<&Value> =
        created["data"].as_array().unwrap().iter().map(|e| &e["details"]["asymmetric"]).collect();
    assert_eq!(asymmetric[..2], [&json!(true), &json!(false)], "the dashboard's Ed25519 endpoint: {created:#}");
    let key_changes = api.get("/api/v1/audit-log?action=api_key.updated").await;
    assert_eq!(key_changes["data"][0]["details"]["allowed_networks"], json!(["198.51.100.0/24"]), "{key_changes:#}");
    let keys = api.get("/api/v1/api-keys").await;
    let billing = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"].as_str().unwrap().starts_with("billing-service-"))
        .cloned();
    let billing = billing.expect("the key made in the dashboard is listed");
    assert_eq!(billing["scope"], "publish");
    assert!(billing["revoked_at"].is_string(), "revoked in the dashboard: {billing}");
    let endpoints = api.get("/api/v1/endpoints").await;
    assert_eq!(endpoints["data"].as_array().unwrap().len(), 1, "the endpoint made in the dashboard is gone");
    let stats = api.expect(Method::GET, "/api/v1/stats", None, 200).await;
    assert_eq!(stats["deliveries"]["dead"], 0);
    assert_eq!(stats["endpoints"], json!({ "active": 0, "paused": 1, "disabled": 0 }));
}
