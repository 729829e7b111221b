//! What every route shares: health probes, JSON errors for unknown routes and methods, malformed bodies and
//! pagination.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn health_probes() {
    let server = TestServer::start().await;
    let anyone = server.anonymous();
    assert_eq!(anyone.get("/healthz").await.expect_status(200).json, json!({ "status": "ok" }));
    assert_eq!(anyone.get("/readyz").await.expect_status(200).json, json!({ "status": "ready" }));
}

/// `/metrics` takes the metrics token, which opens nothing else, or the admin key; not a tenant key, nor nothing.
#[tokio::test]
async fn metrics_are_read_with_the_metrics_token_or_the_admin_key() {
    const TOKEN: &str = "prometheus-scrape-token-0123";
    let server = TestServer::start_with(|config| config.metrics_token = Some(TOKEN.into())).await;
    let scraper = server.anonymous().with_key(TOKEN);
    let scraped = scraper.get("/metrics").await.expect_status(200);
    assert!(scraped.text.contains("# TYPE switchyard_events_published counter"), "{}", scraped.text);
    assert!(scraped.text.ends_with("# EOF\n"), "{}", scraped.text);
    server.admin().get("/metrics").await.expect_status(200);
    scraper.get("/api/v1/tenants").await.expect_error(401, "unauthorized", None);
    server.anonymous().get("/metrics").await.expect_error(401, "unauthorized", None);
    server.anonymous().with_key("prometheus-scrape-token-0124").get("/metrics").await.expect_status(401);
    server.tenant("Alice").await.get("/metrics").await.expect_error(403, "forbidden", None);
}

/// With `metrics_allowed_networks`, the metrics token is refused from anywhere else, as the admin key is with its
/// own networks; the tests' requests come from 127.0.0.1.
#[tokio::test]
async fn the_metrics_token_may_be_limited_to_networks() {
    const TOKEN: &str = "prometheus-scrape-token-0123";
    let elsewhere = TestServer::start_with(|config| {
        config.metrics_token = Some(TOKEN.into());
        config.metrics_allowed_networks = vec!["10.9.0.0/16".parse().unwrap()];
    })
    .await;
    let refused = elsewhere.anonymous().with_key(TOKEN).get("/metrics").await;
    refused.expect_error(403, "forbidden", None);
    assert!(refused.text.contains("the metrics token may not be used from 127.0.0.1"), "{}", refused.text);
    elsewhere.admin().get("/metrics").await.expect_status(200);
    let here = TestServer::start_with(|config| {
        config.metrics_token = Some(TOKEN.into());
        config.metrics_allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    here.anonymous().with_key(TOKEN).get("/metrics").await.expect_status(200);
}

/// The dashboard is served without a key (it asks for one) and may run only its own files.
#[tokio::test]
async fn the_dashboard_is_served_under_a_strict_content_security_policy() {
    let server = TestServer::start().await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/", "/dashboard"] {
        let answer = no_redirects.get(format!("{}{path}", server.base_url)).send().await.unwrap();
        assert_eq!(answer.status(), 303, "{path}");
        assert_eq!(answer.headers()["location"], "/dashboard/", "{path}");
    }
    let anyone = server.anonymous();
    for (path, content_type, holds) in [
        ("/dashboard/", "text/html; charset=utf-8", "<script type=\"module\" src=\"app.js\"></script>"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8", "sessionStorage"),
        ("/dashboard/style.css", "text/css; charset=utf-8", ".card"),
        ("/dashboard/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let answer = anyone.get(path).await.expect_status(200);
        assert_eq!(answer.header("content-type"), Some(content_type), "{path}");
        assert!(answer.text.contains(holds), "{path}");
        let policy = answer.header("content-security-policy").unwrap_or_default();
        assert!(policy.starts_with("default-src 'none'; script-src 'self';"), "{path}: {policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{path}: {policy}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "{path}");
    }
    anyone.get("/dashboard/missing.js").await.expect_error(404, "not_found", None);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    for path in ["/nope", "/api/v1/nope", "/api/v2/endpoints", "/api/v1/endpoints/ep_1/explode"] {
        alice.get(path).await.expect_error(404, "not_found", None);
    }
    let wrong = alice.send(alice.request(Method::DELETE, "/api/v1/tenants")).await;
    wrong.expect_error(405, "method_not_allowed", None);
    let allow = wrong.header("allow").unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");
    alice.send(alice.request(Method::PUT, "/api/v1/events")).await.expect_error(405, "method_not_allowed", None);
    alice.send(alice.request(Method::POST, "/healthz")).await.expect_error(405, "method_not_allowed", None);
    alice.get("/api/v1/endpoints/%FF%FE").await.expect_error(404, "not_found", None);
}

#[tokio::test]
async fn malformed_bodies_are_400_not_500() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    for body in [
        "{",
        "{\"url\": }",
        "not json",
        "{\"url\": \"https://x.example\"} {}",
        "[\"https://x.example\"]",
        "null",
        "\u{0}",
    ] {
        let answer = alice.send_raw(Method::POST, "/api/v1/endpoints", body).await;
        answer.expect_error(400, "invalid_request", None);
    }
    let bad_utf8 =
        alice.send_raw(Method::POST, "/api/v1/endpoints", vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}']).await;
    bad_utf8.expect_error(400, "invalid_request", None);
    let no_type = alice.request(Method::POST, "/api/v1/endpoints").body(r#"{"url": "https://x.example"}"#);
    alice.send(no_type).await.expect_error(415, "unsupported_media_type", None);
    let charset = alice
        .request(Method::POST, "/api/v1/endpoints")
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"url": "https://x.example"}"#);
    alice.send(charset).await.expect_status(201);
}

#[tokio::test]
async fn pagination_walks_every_item_once_newest_first() {
    let server = TestServer::start().await;
    let alice = server.tenant("Alice").await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(alice.create_endpoint(json!({})).await.expect_status(201).str("id"));
    }
    created.reverse();
    let ids =
        |items: Vec<Value>| -> Vec<String> { items.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect() };
    assert_eq!(ids(alice.all_pages("/api/v1/endpoints", 2).await), created);
    assert_eq!(ids(alice.all_pages("/api/v1/endpoints", 5).await), created);
    assert_eq!(ids(alice.all_pages("/api/v1/endpoints", 1000).await), created);

    let first = alice.get("/api/v1/endpoints?limit=2").await.expect_status(200);
    assert_eq!(first.json["next_cursor"], created[1].as_str());
    // A page that ends exactly at the last item says there is no more.
    let last = alice.get(&format!("/api/v1/endpoints?limit=3&cursor={}", created[1])).await.expect_status(200);
    assert_eq!(last.json["data"].as_array().unwrap().len(), 3);
    assert!(last.json["next_cursor"].is_null());
    let default = alice.get("/api/v1/endpoints").await.expect_status(200);
    assert_eq!(default.json["data"].as_array().unwrap().len(), 5);
    assert!(default.json["next_cursor"].is_null());

    for query in ["limit=0", "limit=1001", "limit=ten", "limit=-5", "limit=1&limit=2"] {
        alice.get(&format!("/api/v1/endpoints?{query}")).await.expect_invalid("limit");
    }
    alice.get("/api/v1/endpoints?page=2").await.expect_invalid("page");
    alice.get("/api/v1/audit-log?limit=0").await.expect_invalid("limit");
    alice.get("/api/v1/api-keys?cursor=x&extra=1").await.expect_invalid("extra");
    server.admin().get("/api/v1/tenants?limit=abc").await.expect_invalid("limit");
}

/// A request refused before its body is read (here a wrong key) still gets its answer, and its connection can be
/// used again: the rest of the body is read and thrown away. Without that hyper closed the connection while the
/// client was still sending a body larger than the socket's buffers, and the client got a reset, not a `401`.
#[tokio::test]
async fn a_request_refused_before_its_body_is_read_keeps_its_connection() {
    let server = TestServer::start().await;
    let address = server.base_url.trim_start_matches("http://").to_string();
    let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
    let body = format!(r#"{{"type": "a.b", "data": {{"pad": "{}"}}}}"#, "x".repeat(500_000));
    let refused = format!(
        "POST /api/v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sy_wrong\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (mut reader, mut writer) = connection.split();
    let (sent, answer) = tokio::join!(writer.write_all(refused.as_bytes()), read_answer(&mut reader));
    sent.expect("the whole body is taken");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");

    writer.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let again = read_answer(&mut reader).await;
    assert!(again.starts_with("HTTP/1.1 200"), "the same connection answers the next request: {again}");
}

/// One HTTP/1.1 answer's head and `content-length` body, as text.
async fn read_answer(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        assert_eq!(reader.read(&mut byte).await.expect("an answer, not a reset"), 1, "closed: {answer:?}");
        answer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    answer.extend(body);
    String::from_utf8_lossy(&answer).into_owned()
}
