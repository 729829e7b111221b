//! A ceiling for `deliver`: a relay that stores nothing. It takes each published body over HTTP, posts it on to
//! every target with reqwest (keep-alive, at most the dispatch concurrency in flight) and answers `202` as soon as
//! those posts have started: the two HTTP exchanges a delivery of a published event needs, and nothing else. It
//! runs as a process of its own (this binary, `relay-serve`), as the router does, so its CPU can be read alone.
//!
//! `deliver / relay` is then the share of that ceiling the router reaches with everything it does beside the two
//! exchanges (the durable group commit, attempt records, signing, subscriptions). The relay's receiving end costs
//! what a delivery's does: the receiver parses its body the same way (`/relay` in `receiver`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

use crate::proc_cpu::{self, MachineCpu};
use crate::receiver::{status, Receiver, ACCEPT_BACKLOG};
use crate::report::sustained_rate_of;
use crate::{client, router_process};

/// Serves until killed (the `relay-serve` command): binds `listen` and relays every request body to `targets`.
pub async fn serve(listen: SocketAddr, targets: Vec<String>, concurrency: usize) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(listen)?;
    serve_on(socket.listen(ACCEPT_BACKLOG)?, targets, concurrency).await
}

/// The relay on a bound listener; returns only if accepting fails.
pub async fn serve_on(listener: TcpListener, targets: Vec<String>, concurrency: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let relay = Arc::new(Relay { http, targets, permits: Arc::new(Semaphore::new(concurrency)), failed: 0.into() });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let relay = relay.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| relay.clone().take(req));
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

struct Relay {
    http: reqwest::Client,
    targets: Vec<String>,
    permits: Arc<Semaphore>,
    failed: AtomicU64,
}

impl Relay {
    async fn take(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
        let Ok(body) = req.into_body().collect().await.map(|collected| collected.to_bytes()) else {
            return Ok(status(StatusCode::BAD_REQUEST));
        };
        for target in 0..self.targets.len() {
            // Taken before answering: a publish is accepted only once its deliveries can start, so publishing and
            // delivering share the machine as they do in the router, instead of a burst of accepted publishes
            // followed by their deliveries alone.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return Ok(status(StatusCode::SERVICE_UNAVAILABLE));
            };
            let (relay, body) = (self.clone(), body.clone());
            tokio::spawn(async move {
                let sent = relay.http.post(&relay.targets[target]).header("content-type", "application/json");
                let ok = matches!(sent.body(body).send().await, Ok(response) if response.status().is_success());
                drop(permit);
                if !ok {
                    // A lost relay shows as a missing arrival, which fails the measurement; this says why.
                    let failed = relay.failed.fetch_add(1, Ordering::Relaxed) + 1;
                    if failed.is_power_of_two() {
                        eprintln!("relay: {failed} requests to the receiver failed");
                    }
                }
            });
        }
        Ok(status(StatusCode::ACCEPTED))
    }
}

/// The relay process, killed when dropped.
struct RelayProcess {
    child: Child,
    url: String,
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RelayProcess {
    async fn start(harness: &Path, targets: &[String], concurrency: usize) -> anyhow::Result<Self> {
        let port = router_process::free_port()?;
        let mut command = Command::new(harness);
        command
            .args(["relay-serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--dispatch-concurrency", &concurrency.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for target in targets {
            command.args(["--relay-target", target]);
        }
        let child = command.spawn().with_context(|| format!("starting the relay ({})", harness.display()))?;
        let mut relay = Self { child, url: format!("http://127.0.0.1:{port}/") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            relay.check_alive()?;
            if Instant::now() > deadline {
                bail!("the relay is not listening after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(relay)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the relay exited: {status}");
        }
        Ok(())
    }
}

/// What the relay reached in one run.
pub struct RelayFigures {
    /// Bodies/s the relay accepted.
    pub ingest_per_s: f64,
    /// Relayed bodies/s received, sustained (10 %–90 % of arrivals), as `deliver` is measured.
    pub per_s: f64,
    pub cpu_s_per_1000: f64,
    /// The whole machine's busy CPU per relayed delivery over the same span: publishers, relay and receiver.
    pub machine_cpu_us_per_delivery: f64,
}

/// Publishes `events` bodies to a fresh relay, `publishers` at a time and one per request, fanned out to
/// `endpoints` targets on `receiver`, and waits until every copy has arrived.
pub async fn measure(
    receiver: &Receiver,
    endpoints: usize,
    events: u64,
    publishers: usize,
    concurrency: usize,
    payload_bytes: usize,
    timeout: Duration,
) -> anyhow::Result<RelayFigures> {
    let harness = std::env::current_exe().context("locating the harness binary")?;
    let targets = vec![receiver.url("/relay"); endpoints];
    let mut relay = RelayProcess::start(&harness, &targets, concurrency).await?;
    let pid = relay.child.id();
    let expected = events * endpoints as u64;
    let already = receiver.recorded.relayed.lock().expect("receiver lock").len() as u64;
    let cpu_before = proc_cpu::cpu_seconds(Some(pid))?;
    let machine_before = MachineCpu::now()?;
    let deadline = Instant::now() + timeout;
    let ingest_per_s =
        client::baseline(&relay.url, events, publishers, payload_bytes).await.context("publishing to the relay")?;
    loop {
        let arrived = receiver.recorded.relayed.lock().expect("receiver lock").len() as u64 - already;
        if arrived >= expected {
            break;
        }
        relay.check_alive()?;
        if Instant::now() > deadline {
            bail!("timed out: the receiver got {arrived} of {expected} relayed bodies");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = proc_cpu::cpu_seconds(Some(pid))? - cpu_before;
    let machine = MachineCpu::now()?.since(machine_before);
    let arrivals = receiver.recorded.relayed.lock().expect("receiver lock")[already as usize..].to_vec();
    Ok(RelayFigures {
        ingest_per_s,
        per_s: sustained_rate_of(arrivals),
        cpu_s_per_1000: cpu / expected as f64 * 1000.0,
        machine_cpu_us_per_delivery: machine.busy_s / expected as f64 * 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::Expect;

    #[tokio::test]
    async fn relays_every_body_to_every_target_once() {
        let receiver = Receiver::start(None, false, Expect::Envelope).await.unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let listener = socket.listen(64).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let relay = tokio::spawn(serve_on(listener, vec![receiver.url("/relay"); 3], 2));
        client::baseline(&url, 7, 4, 0).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.recorded.relayed.lock().unwrap().len() < 21 {
            assert!(Instant::now() < deadline, "relayed bodies missing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(receiver.recorded.relayed.lock().unwrap().len(), 21);
        assert_eq!(receiver.recorded.malformed.load(Ordering::Relaxed), 0);
        relay.abort();
    }
}
