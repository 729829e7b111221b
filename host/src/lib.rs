//! Switchyard, a webhook router: the REST API accepts events, the store persists them with one delivery per
//! subscribed endpoint, and the dispatcher sends each delivery as a signed HTTP POST, retrying until the receiver
//! accepts it or it is dead-lettered.
//!
//! [`run`] wires the pieces together and is what both the binary and the integration tests start.

pub mod api;
pub mod config;
pub mod destinations;
pub mod dispatch;
pub mod error;
pub mod event_schemas;
pub mod filter_work;
pub mod hourly;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod notices;
pub mod plugin;
pub mod retry;
pub mod routing;
pub mod same_json;
pub mod secrets;
pub mod signing;
pub mod store;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugin::{PluginEngine, PluginRegistry, PluginWatcher};
use crate::secrets::{MasterKey, SecretError};
use crate::store::sql::SqlStore;
use crate::store::{Store, StoreError};

/// What request handlers share. axum clones the state for every request, so it is one `Arc`: a clone of the
/// fields themselves would copy the master key's cipher and the admin key's hash for each request.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

pub struct SharedState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub master_key: MasterKey,
    /// SHA-256 (hex) of the bootstrap admin key.
    pub admin_key_hash: String,
    /// SHA-256 (hex) of `metrics_token`, which reads `/metrics` only.
    pub metrics_token_hash: Option<String>,
    /// Poked after a publish or requeue so idle dispatch workers look for work at once.
    pub dispatch_wakeup: Arc<Notify>,
    /// Group commit of publishes: every accepted event goes through it.
    pub ingest: writer::Ingest,
    /// Loaded plugin versions, fed by the watcher on `config.plugins_dir`.
    pub plugins: Arc<PluginRegistry>,
    /// Evaluates publishes' subscription filters before the writer, within `config.filter_budget`.
    pub filter_work: filter_work::FilterWork,
    /// Where deliveries may go; the dispatcher's resolver holds the same rule.
    pub destinations: Arc<destinations::Destinations>,
    /// Recently authenticated keys and known tenants.
    pub auth_cache: api::auth::AuthCache,
    /// Each publishing tenant's event type schemas, compiled.
    pub event_schemas: event_schemas::EventSchemas,
    /// Each tenant's request budget on this node (`tenant_rate_limit`).
    pub tenant_limits: api::limits::TenantLimits,
    /// Served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The endpoints `replay-missing` is running for.
    pub replays: api::replay::Replays,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(
        "configuration: `master_key`: it is not the key this database was created with; \
         secrets stored under the old key could not be read"
    )]
    MasterKeyMismatch,
    #[error("plugins: {0}")]
    PluginEngine(#[from] plugin::EngineError),
    #[error("plugins: {0}")]
    PluginWatch(#[from] plugin::WatchError),
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
}

/// How long `run` waits for the writer's last commit once the dispatcher has stopped.
const WRITER_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the API on `listener` and the dispatcher until `shutdown` completes, then stops accepting requests,
/// lets in-flight deliveries finish (or gives their leases back) and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
    // Before anything touches the database, migrations included; held until this function returns.
    let _process_lock = store::sql::lock_database(&config.database_url)?;
    let master_key = load_master_key(&config)?;
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&config.database_url).await?);
    check_master_key(store.as_ref(), &master_key).await?;
    let admin_key_hash = api::auth::hash_key(&load_admin_key(&config)?);

    let node_id = model::new_id("node");
    if config.is_sqlite() {
        // The embedded database has one process by design, so leases left by a crashed run are stale now.
        let released = store.release_foreign_leases(&node_id).await?;
        if released > 0 {
            tracing::info!(released, "took back deliveries leased by a previous run");
        }
    }

    let plugin_limits = config.plugin_limits.clone().admitting_payloads(config.max_payload_bytes);
    let engine = PluginEngine::new(config.data_dir.join("plugin-cache"), plugin_limits)?;
    let plugins = Arc::new(PluginRegistry::new(engine));
    // Loads what is already in the directory before the first request, so bindings to it validate at once.
    let watcher = PluginWatcher::start(plugins.clone(), config.plugins_dir.clone(), plugin::DEFAULT_DEBOUNCE).await?;
    let plugin_sync = plugin::sync::start(store.clone(), plugins.clone(), config.plugins_dir.clone()).await;

    let config = Arc::new(config);
    let dispatch_wakeup = Arc::new(Notify::new());
    let metrics = Arc::new(Metrics::default());
    let hourly = Arc::new(hourly::HourlyTally::default());
    let writer = writer::Writer::new(metrics.clone(), hourly.clone());
    let settings = dispatch::Settings::from_config(&config);
    let destinations = settings.destinations.clone();
    let dispatcher = dispatch::Dispatcher::new(
        store.clone(),
        master_key.clone(),
        settings,
        node_id.clone(),
        dispatch_wakeup.clone(),
        plugins.clone(),
        writer.recorder(),
    );
    let state = AppState(Arc::new(SharedState {
        store: store.clone(),
        config: config.clone(),
        master_key,
        admin_key_hash,
        metrics_token_hash: config.metrics_token.as_deref().map(api::auth::hash_key),
        dispatch_wakeup,
        ingest: writer.ingest(),
        plugins,
        auth_cache: api::auth::AuthCache::default(),
        event_schemas: event_schemas::EventSchemas::default(),
        tenant_limits: api::limits::TenantLimits::new(config.tenant_rate_limit),
        metrics,
        replays: api::replay::Replays::default(),
        filter_work: filter_work::FilterWork::new(config.filter_budget),
        destinations,
    }));
    let announcing_ingest = writer.ingest();
    let writer = writer.start(store.clone(), node_id, Some(dispatcher.handoff()));

    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(dispatcher.run(stop.clone()));
    let announcing =
        tokio::spawn(notices::keep_announcing(store.clone(), announcing_ingest, config.poll_interval, stop.clone()));
    let stop_counting = CancellationToken::new();
    let counting = tokio::spawn(hourly::keep_flushing(
        hourly.clone(),
        store.clone(),
        config.stats_interval,
        stop_counting.clone(),
    ));

    tracing::info!(address = %listener.local_addr()?, database = %config::redact_url(&config.database_url),
    "switchyard listening");
    let stop_on_signal = stop.clone();
    // The connection's address, for keys allowed only from some networks.
    let served = axum::serve(listener, api::router(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests or claims; finishing deliveries in flight");
            stop_on_signal.cancel();
        })
        .await;
    stop.cancel();
    if let Err(e) = dispatcher.await {
        tracing::error!(error = %e, "dispatcher task failed");
    }
    // What it has not announced yet, the next node to start announces.
    let _ = announcing.await;
    // The API and the dispatcher have let go of the writer: it ends after its last commit, which gives records
    // whose commit failed one more try. Waiting for it also closes the database before a restart opens it. Not
    // for long, though: with the database unreachable each try waits out a connection timeout, and what is not
    // written is left to its lease.
    match tokio::time::timeout(WRITER_SHUTDOWN_GRACE, writer).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "writer task failed"),
        Err(_) => tracing::warn!(grace = ?WRITER_SHUTDOWN_GRACE,
            "the writer's last commit did not finish in time; unrecorded attempts are left to their leases"),
    }
    // The counts of the writer's last commits too.
    stop_counting.cancel();
    let _ = counting.await;
    match tokio::time::timeout(WRITER_SHUTDOWN_GRACE, hourly.flush(store.as_ref())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not write the last hourly attempt counts"),
        Err(_) => tracing::warn!("writing the last hourly attempt counts did not finish in time"),
    }
    // Nothing may read the plugins table or write plugin files past this point.
    drop(plugin_sync);
    drop(watcher);
    // Bounded like the writer: a task still holding a connection (a replay walking its pages) finds the pool
    // closed at its next query and ends.
    if tokio::time::timeout(WRITER_SHUTDOWN_GRACE, store.close()).await.is_err() {
        tracing::warn!("closing the database did not finish in time");
    }
    served?;
    Ok(())
}

fn load_master_key(config: &Config) -> Result<MasterKey, StartError> {
    if let Some(text) = &config.master_key {
        return Ok(MasterKey::parse(text)?);
    }
    if !config.is_sqlite() {
        return Err(config::ConfigError {
            setting: "master_key",
            problem: "required with PostgreSQL: every node must encrypt with the same key".into(),
        }
        .into());
    }
    let path = config.data_dir.join("master.key");
    let (key, created) = MasterKey::load_or_create(&path)?;
    if created {
        tracing::warn!(path = %path.display(), "generated a master key for endpoint secrets; back this file up \
        (losing it makes stored secrets unreadable) or set SWITCHYARD_MASTER_KEY");
    }
    Ok(key)
}

async fn check_master_key(store: &dyn Store, key: &MasterKey) -> Result<(), StartError> {
    match store.get_meta(secrets::KEY_CHECK_META).await? {
        Some(stored) if secrets::verify_key_check(key, &stored) => Ok(()),
        Some(_) => Err(StartError::MasterKeyMismatch),
        None => Ok(store.put_meta(secrets::KEY_CHECK_META, &secrets::key_check_value(key)).await?),
    }
}

fn load_admin_key(config: &Config) -> Result<String, StartError> {
    if let Some(key) = &config.admin_key {
        return Ok(key.trim().to_string());
    }
    let path = config.data_dir.join("admin.key");
    match std::fs::read_to_string(&path) {
        Ok(key) => Ok(key.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = api::auth::generate_key("sy_admin");
            secrets::write_private_file(&path, &key)
                .map_err(|source| SecretError::KeyFile { path: path.display().to_string(), source })?;
            tracing::warn!(path = %path.display(), "generated the bootstrap admin API key into this file");
            Ok(key)
        }
        Err(source) => Err(SecretError::KeyFile { path: path.display().to_string(), source }.into()),
    }
}
