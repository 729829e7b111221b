//! An HTTPS receiver whose certificate comes from a private CA (`support/tls/`: a test CA and a certificate for
//! 127.0.0.1 it signed, both valid until 2126; the key is a throw-away), for the `ca_file` tests. It answers 204
//! and counts the requests that reached it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub const CA_PEM: &[u8] = include_bytes!("tls/ca.pem");
const CERTIFICATE_PEM: &[u8] = include_bytes!("tls/receiver.pem");
const KEY_PEM: &[u8] = include_bytes!("tls/receiver.key");

pub struct TlsReceiver {
    pub url: String,
    received: Arc<AtomicUsize>,
}

impl TlsReceiver {
    pub async fn start() -> Self {
        let certificates: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(CERTIFICATE_PEM).collect::<Result<_, _>>().expect("test certificate");
        let key = PrivateKeyDer::from_pem_slice(KEY_PEM).expect("test key");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .expect("server certificate");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("https://{}/hook", tcp.local_addr().expect("address"));
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { axum::http::StatusCode::NO_CONTENT }
            }),
        );
        let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(Arc::new(config)) };
        tokio::spawn(async move { axum::serve(listener, app).await });
        TlsReceiver { url, received }
    }

    pub fn count(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else { continue };
            // A client that does not trust the certificate ends the handshake; wait for the next one.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
