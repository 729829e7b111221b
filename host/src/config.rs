//! Configuration: built-in defaults, overridden by an optional TOML file, overridden by `SWITCHYARD_*` environment
//! variables, overridden by command-line flags. A bad value fails start-up with a message naming the setting.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: a webhook router. Accepts events over a REST API, \
    persists them, fans them out to subscribed endpoints and delivers them as signed HTTP POSTs with retries."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the delivery workers.
    Serve(ServeArgs),
}

/// Every option can also be set in the TOML file (same name, `_` for `-`) or the environment variable shown.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML configuration file. Its settings are overridden by environment variables and flags.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address the API listens on [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    pub listen: Option<String>,

    /// Directory for the embedded database and generated key files [default: ./switchyard-data].
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Database URL: `sqlite://PATH` or `postgres://…` [default: SQLite file `switchyard.db` in the data dir].
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Bootstrap admin API key (at least 16 characters). If unset, one is generated into `<data dir>/admin.key`.
    #[arg(long, env = "SWITCHYARD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Bearer token (at least 16 characters) that may read `GET /metrics` and nothing else, for Prometheus'
    /// scrape config instead of the admin key. The admin key reads the metrics too.
    #[arg(long, env = "SWITCHYARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// 32-byte key encrypting endpoint secrets at rest, as 64 hex characters or base64. If unset with the
    /// embedded database, one is generated into `<data dir>/master.key`; required with PostgreSQL.
    #[arg(long, env = "SWITCHYARD_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// Development mode: allows endpoints on loopback addresses, over plain http:// too. Takes true/false, 1/0,
    /// yes/no or on/off, as environment variables are usually written.
    #[arg(
        long,
        env = "SWITCHYARD_DEV",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dev: Option<bool>,

    /// Let tenants give event types a JSON Schema that publishes must match. Off by default: a schema can be
    /// written so that checking an event against it takes exponential time, so turn it on only where the tenants
    /// registering schemas are trusted. Takes true/false, 1/0, yes/no or on/off.
    #[arg(
        long,
        env = "SWITCHYARD_EVENT_TYPE_SCHEMAS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub event_type_schemas: Option<bool>,

    /// Largest accepted event payload in bytes [default: 1048576].
    #[arg(long, env = "SWITCHYARD_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,

    /// Deliveries in flight at once in this process [default: 1024].
    #[arg(long, env = "SWITCHYARD_DISPATCH_CONCURRENCY")]
    pub dispatch_concurrency: Option<usize>,

    /// Deliveries in flight at once in this process to any one endpoint, so a slow receiver cannot hold every
    /// slot; below dispatch_concurrency, one endpoint's backlog drains more slowly [default and most:
    /// dispatch_concurrency].
    #[arg(long, env = "SWITCHYARD_ENDPOINT_CONCURRENCY")]
    pub endpoint_concurrency: Option<usize>,

    /// How long a claimed delivery stays leased before another worker may take it over, e.g. `6m`
    /// [default: 6m; must exceed the longest endpoint timeout, 300 s].
    #[arg(long, env = "SWITCHYARD_LEASE")]
    pub lease: Option<String>,

    /// Longest wait a receiver's Retry-After header can impose, e.g. `1h` [default: 1h].
    #[arg(long, env = "SWITCHYARD_MAX_RETRY_AFTER")]
    pub max_retry_after: Option<String>,

    /// How often idle workers look for due deliveries written by other processes, e.g. `1s` [default: 1s].
    #[arg(long, env = "SWITCHYARD_POLL_INTERVAL")]
    pub poll_interval: Option<String>,

    /// How long a rotated-out secret keeps signing unless the rotate request says otherwise [default: 24h].
    #[arg(long, env = "SWITCHYARD_SECRET_GRACE")]
    pub secret_grace: Option<String>,

    /// Delays between attempts for endpoints without a schedule of their own, e.g. `30s,5m,1h` (three retries,
    /// then the dead-letter queue); 1 to 20 delays of 1s to 7d [default: 1m,5m,15m,1h,6h,24h].
    #[arg(long, env = "SWITCHYARD_RETRY_SCHEDULE", value_delimiter = ',')]
    pub retry_schedule: Option<Vec<String>>,

    /// Disables an endpoint whose every attempt has failed for this long (and at least 10 of them), as a 410
    /// disables it; `0s` never disables one for failing [default: 5d].
    #[arg(long, env = "SWITCHYARD_DISABLE_FAILING_AFTER")]
    pub disable_failing_after: Option<String>,

    /// Disables an endpoint once this many attempts to it in a row have failed, however quickly (a circuit
    /// breaker), besides `disable_failing_after`; `0` never [default: 0].
    #[arg(long, env = "SWITCHYARD_DISABLE_FAILING_ATTEMPTS")]
    pub disable_failing_attempts: Option<u32>,

    /// How often a node adds the attempts it recorded and the events it stored to the hourly counts that
    /// `GET /stats` reads its success rate from, e.g. `5s`; what a crash loses of those counts [default: 5s].
    #[arg(long, env = "SWITCHYARD_STATS_INTERVAL")]
    pub stats_interval: Option<String>,

    /// Requests per second each tenant's API keys may make to this node, in bursts of up to a second's worth;
    /// more are refused with 429 and a Retry-After. The admin key is not limited [default: unlimited].
    #[arg(long, env = "SWITCHYARD_TENANT_RATE_LIMIT")]
    pub tenant_rate_limit: Option<u32>,

    /// Directory watched for `<name>.wasm` plugin components [default: `<data dir>/plugins`].
    #[arg(long, env = "SWITCHYARD_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,

    /// Memory one plugin call may use, in MiB [default: 32].
    #[arg(long, env = "SWITCHYARD_PLUGIN_MEMORY_MIB")]
    pub plugin_memory_mib: Option<usize>,

    /// Time one plugin call may run, e.g. `50ms` [default: 50ms].
    #[arg(long, env = "SWITCHYARD_PLUGIN_DEADLINE")]
    pub plugin_deadline: Option<String>,

    /// Time one publish request's subscription filters may take to match its events, e.g. `1s`; a request over it is
    /// refused with 413 and nothing of it is stored [default: 1s].
    #[arg(long, env = "SWITCHYARD_FILTER_BUDGET")]
    pub filter_budget: Option<String>,

    /// PEM file of CA certificates to trust for receivers' TLS besides the bundled public roots, for receivers
    /// whose certificates come from a private or corporate CA [default: none].
    #[arg(long, env = "SWITCHYARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Networks outside the public internet that endpoints may deliver to, as CIDR blocks or addresses, e.g.
    /// `10.20.0.0/16,fd00::/8`. Every other private, loopback, link-local (such as 169.254.169.254) or reserved
    /// address is refused, whether a URL names it or a name resolves to it [default: none; dev mode adds
    /// loopback].
    #[arg(long, env = "SWITCHYARD_ALLOWED_PRIVATE_NETWORKS", value_delimiter = ',')]
    pub allowed_private_networks: Option<Vec<String>>,

    /// Where the admin key may be used from, as CIDR blocks or addresses, e.g. `10.0.0.0/8,192.0.2.7`; a request
    /// with it from anywhere else gets 403 [default: anywhere].
    #[arg(long, env = "SWITCHYARD_ADMIN_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub admin_allowed_networks: Option<Vec<String>>,

    /// Where the metrics token (`metrics_token`) may be used from, as CIDR blocks or addresses; a scrape with it
    /// from anywhere else gets 403 [default: anywhere].
    #[arg(long, env = "SWITCHYARD_METRICS_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub metrics_allowed_networks: Option<Vec<String>>,

    /// Reverse proxies in front of Switchyard, as CIDR blocks or addresses: a request from one is taken to come
    /// from the address it names in `X-Forwarded-For`, for the keys' allowed networks [default: none, the
    /// connection's address counts].
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
}

/// Validated settings the server runs with.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub admin_key: Option<String>,
    pub metrics_token: Option<String>,
    pub master_key: Option<String>,
    pub dev_mode: bool,
    /// Whether event types may have JSON Schemas, and publishes are checked against them.
    pub event_type_schemas: bool,
    pub max_payload_bytes: usize,
    pub dispatch_concurrency: usize,
    pub endpoint_concurrency: usize,
    pub lease: Duration,
    pub max_retry_after: Duration,
    pub poll_interval: Duration,
    pub secret_grace: Duration,
    /// Delays in ms between attempts for endpoints without a schedule of their own (`retry_schedule`).
    pub retry_schedule_ms: Vec<i64>,
    /// None: endpoints are never disabled for failing for a time.
    pub disable_failing_after: Option<Duration>,
    /// None: endpoints are never disabled for a number of failures in a row.
    pub disable_failing_attempts: Option<u32>,
    /// How often the attempts' and publishes' hourly counts are written (see [`crate::hourly`]).
    pub stats_interval: Duration,
    /// Requests per second a tenant's keys may make to this node (see [`crate::api::limits`]); None:
    /// unlimited.
    pub tenant_rate_limit: Option<NonZeroU32>,
    pub plugins_dir: PathBuf,
    pub plugin_limits: crate::plugin::PluginLimits,
    /// Time a publish request's subscription filters may take (see [`FilterWork`](crate::filter_work::FilterWork)).
    pub filter_budget: Duration,
    /// Trusted for receivers' TLS besides the bundled public roots (`ca_file`).
    pub extra_root_certificates: Vec<reqwest::Certificate>,
    /// Non-public networks deliveries may go to (see [`crate::destinations`]).
    pub allowed_private_networks: Vec<ipnet::IpNet>,
    /// Where the admin key may be used from; empty: anywhere.
    pub admin_allowed_networks: Vec<ipnet::IpNet>,
    /// Where the metrics token may be used from; empty: anywhere.
    pub metrics_allowed_networks: Vec<ipnet::IpNet>,
    /// Proxies whose `X-Forwarded-For` names the client (see [`crate::api::auth`]).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl std::fmt::Debug for Config {
    // Hand-written so the admin and master keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &redact_url(&self.database_url))
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<set>"))
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<set>"))
            .field("master_key", &self.master_key.as_ref().map(|_| "<set>"))
            .field("dev_mode", &self.dev_mode)
            .field("event_type_schemas", &self.event_type_schemas)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("dispatch_concurrency", &self.dispatch_concurrency)
            .field("endpoint_concurrency", &self.endpoint_concurrency)
            .field("lease", &self.lease)
            .field("max_retry_after", &self.max_retry_after)
            .field("poll_interval", &self.poll_interval)
            .field("secret_grace", &self.secret_grace)
            .field("filter_budget", &self.filter_budget)
            .field("retry_schedule_ms", &self.retry_schedule_ms)
            .field("disable_failing_after", &self.disable_failing_after)
            .field("disable_failing_attempts", &self.disable_failing_attempts)
            .field("stats_interval", &self.stats_interval)
            .field("tenant_rate_limit", &self.tenant_rate_limit)
            .field("plugins_dir", &self.plugins_dir)
            .field("plugin_limits", &self.plugin_limits)
            .field("extra_root_certificates", &self.extra_root_certificates.len())
            .field("allowed_private_networks", &self.allowed_private_networks)
            .field("admin_allowed_networks", &self.admin_allowed_networks)
            .field("metrics_allowed_networks", &self.metrics_allowed_networks)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

/// The URL without its password, for logs. Query values are masked too: sqlx takes a password as
/// `?password=`, and a URL that does not parse is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return "<a URL that does not parse>".into() };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let keys: Vec<String> = parsed.query_pairs().map(|(key, _)| key.into_owned()).collect();
        parsed.query_pairs_mut().clear().extend_pairs(keys.iter().map(|key| (key, "***")));
    }
    parsed.to_string()
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: `{setting}`: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

/// The certificates of a `ca_file`: at least one, every one parsed.
fn root_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| bad("ca_file", format!("cannot read {}: {e}", path.display())))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad("ca_file", format!("{} is not a PEM certificate bundle: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(bad("ca_file", format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}

/// A CIDR block, or one address as a block of its own. An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) is its
/// IPv4 block: addresses are compared in their IPv4 form, which the mapped one would never match.
pub fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    let parsed = text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    let network = parsed.ok()?.trunc();
    if let ipnet::IpNet::V6(v6) = network {
        if let (Some(v4), Some(prefix)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
            return ipnet::Ipv4Net::new(v4, prefix).ok().map(ipnet::IpNet::V4);
        }
    }
    Some(network)
}

/// A network entry as an error message quotes it: at most 50 characters, as it may be any size.
pub fn shown_entry(text: &str) -> String {
    let mut shown: String = text.chars().take(50).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// The networks a setting lists. An empty variable, or a trailing comma, lists nothing rather than a network
/// without a name.
fn networks(setting: &'static str, texts: Option<Vec<String>>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let texts = texts.unwrap_or_default();
    let listed = texts.iter().map(|text| text.trim()).filter(|text| !text.is_empty());
    listed
        .map(|text| {
            parse_network(text).ok_or_else(|| {
                bad(setting, format!("`{}` is not a network such as 10.20.0.0/16 or fd00::/8", shown_entry(text)))
            })
        })
        .collect()
}

fn bad(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting, problem: problem.into() }
}

/// The highest tenant request rate limit, server-wide or a tenant's own: per second on each node.
pub const MAX_TENANT_RATE_LIMIT: u32 = 1_000_000;

/// The longest per-endpoint timeout; a lease must outlast it or a slow attempt could be taken over mid-flight.
pub const MAX_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(300);

impl Config {
    /// Merges the flags/environment (`args`) over the TOML file named by `args.config`, then validates.
    pub fn load(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        Self::from_layers(args, file)
    }

    fn from_layers(over: ServeArgs, under: ServeArgs) -> Result<Self, ConfigError> {
        let listen_text = over.listen.or(under.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text
            .parse()
            .map_err(|e| bad("listen", format!("`{listen_text}` is not an address such as 127.0.0.1:8080: {e}")))?;
        let data_dir = over.data_dir.or(under.data_dir).unwrap_or_else(|| PathBuf::from("switchyard-data"));
        let database_url = over
            .database_url
            .or(under.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("switchyard.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(bad("database_url", "must start with sqlite:, postgres:// or postgresql://"));
        }
        let admin_key = over.admin_key.or(under.admin_key);
        if admin_key.as_ref().is_some_and(|k| k.trim().len() < 16) {
            return Err(bad("admin_key", "must be at least 16 characters"));
        }
        let metrics_token = over.metrics_token.or(under.metrics_token);
        if metrics_token.as_ref().is_some_and(|token| token.trim().len() < 16) {
            return Err(bad("metrics_token", "must be at least 16 characters"));
        }
        let master_key = over.master_key.or(under.master_key);
        if let Some(key) = &master_key {
            crate::secrets::MasterKey::parse(key).map_err(|e| bad("master_key", e.to_string()))?;
        }
        let max_payload_bytes = over.max_payload_bytes.or(under.max_payload_bytes).unwrap_or(1 << 20);
        if !(1024..=64 << 20).contains(&max_payload_bytes) {
            return Err(bad("max_payload_bytes", "must be between 1024 and 67108864"));
        }
        let dispatch_concurrency = over.dispatch_concurrency.or(under.dispatch_concurrency).unwrap_or(1024);
        if !(1..=10_000).contains(&dispatch_concurrency) {
            return Err(bad("dispatch_concurrency", "must be between 1 and 10000"));
        }
        let endpoint_concurrency =
            over.endpoint_concurrency.or(under.endpoint_concurrency).unwrap_or(dispatch_concurrency);
        if !(1..=dispatch_concurrency).contains(&endpoint_concurrency) {
            return Err(bad(
                "endpoint_concurrency",
                format!("must be between 1 and dispatch_concurrency ({dispatch_concurrency})"),
            ));
        }
        let lease = duration("lease", over.lease.or(under.lease), "6m")?;
        if lease <= MAX_ENDPOINT_TIMEOUT {
            return Err(bad("lease", "must be longer than the longest endpoint timeout (300s)"));
        }
        let plugins_dir = over.plugins_dir.or(under.plugins_dir).unwrap_or_else(|| data_dir.join("plugins"));
        let plugin_memory_mib = over.plugin_memory_mib.or(under.plugin_memory_mib).unwrap_or(32);
        if !(1..=4096).contains(&plugin_memory_mib) {
            return Err(bad("plugin_memory_mib", "must be between 1 and 4096"));
        }
        let plugin_deadline = duration("plugin_deadline", over.plugin_deadline.or(under.plugin_deadline), "50ms")?;
        if plugin_deadline < Duration::from_millis(1) || plugin_deadline > Duration::from_secs(10) {
            return Err(bad("plugin_deadline", "must be between 1ms and 10s"));
        }
        let plugin_limits = crate::plugin::PluginLimits {
            memory_bytes: plugin_memory_mib << 20,
            deadline: plugin_deadline,
            ..Default::default()
        };
        let filter_budget = duration("filter_budget", over.filter_budget.or(under.filter_budget), "1s")?;
        if filter_budget < Duration::from_millis(10) || filter_budget > Duration::from_secs(60) {
            return Err(bad("filter_budget", "must be between 10ms and 60s"));
        }
        let tenant_rate_limit = match over.tenant_rate_limit.or(under.tenant_rate_limit) {
            None => None,
            Some(rate) => {
                Some(NonZeroU32::new(rate).filter(|rate| rate.get() <= MAX_TENANT_RATE_LIMIT).ok_or_else(|| {
                    bad(
                        "tenant_rate_limit",
                        format!("must be between 1 and {MAX_TENANT_RATE_LIMIT} requests per second"),
                    )
                })?)
            }
        };
        let extra_root_certificates = match over.ca_file.or(under.ca_file) {
            Some(path) => root_certificates(&path)?,
            None => Vec::new(),
        };
        let allowed_private_networks =
            networks("allowed_private_networks", over.allowed_private_networks.or(under.allowed_private_networks))?;
        let admin_allowed_networks =
            networks("admin_allowed_networks", over.admin_allowed_networks.or(under.admin_allowed_networks))?;
        let metrics_allowed_networks =
            networks("metrics_allowed_networks", over.metrics_allowed_networks.or(under.metrics_allowed_networks))?;
        let trusted_proxies = networks("trusted_proxies", over.trusted_proxies.or(under.trusted_proxies))?;
        let retry_schedule_ms = match over.retry_schedule.or(under.retry_schedule) {
            Some(texts) => crate::retry::parse_schedule(&texts).map_err(|(step, problem)| {
                let step = step.map(|step| format!("delay {} ", step + 1)).unwrap_or_default();
                bad("retry_schedule", format!("{step}{problem}"))
            })?,
            None => crate::retry::DEFAULT_SCHEDULE_MS.to_vec(),
        };
        let config = Config {
            retry_schedule_ms,
            allowed_private_networks,
            admin_allowed_networks,
            metrics_allowed_networks,
            trusted_proxies,
            plugins_dir,
            plugin_limits,
            filter_budget,
            tenant_rate_limit,
            extra_root_certificates,
            listen,
            data_dir,
            database_url,
            admin_key,
            metrics_token,
            master_key,
            dev_mode: over.dev.or(under.dev).unwrap_or(false),
            event_type_schemas: over.event_type_schemas.or(under.event_type_schemas).unwrap_or(false),
            max_payload_bytes,
            dispatch_concurrency,
            endpoint_concurrency,
            lease,
            max_retry_after: duration("max_retry_after", over.max_retry_after.or(under.max_retry_after), "1h")?,
            poll_interval: duration("poll_interval", over.poll_interval.or(under.poll_interval), "1s")?,
            secret_grace: duration("secret_grace", over.secret_grace.or(under.secret_grace), "24h")?,
            disable_failing_after: Some(duration(
                "disable_failing_after",
                over.disable_failing_after.or(under.disable_failing_after),
                "5d",
            )?)
            .filter(|after| !after.is_zero()),
            disable_failing_attempts: over
                .disable_failing_attempts
                .or(under.disable_failing_attempts)
                .filter(|&attempts| attempts > 0),
            stats_interval: duration("stats_interval", over.stats_interval.or(under.stats_interval), "5s")?,
        };
        if config.poll_interval.is_zero() {
            return Err(bad("poll_interval", "must be greater than zero"));
        }
        if config.stats_interval < Duration::from_millis(10) || config.stats_interval > Duration::from_secs(600) {
            return Err(bad("stats_interval", "must be between 10ms and 10m"));
        }
        if config.disable_failing_after.is_some_and(|after| after < Duration::from_secs(1)) {
            return Err(bad("disable_failing_after", "must be 0s (never) or at least 1s"));
        }
        Ok(config)
    }

    /// Defaults for tests and embedding: SQLite in `data_dir`, dev mode, everything else as shipped.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        Self::from_layers(
            ServeArgs { data_dir: Some(data_dir.to_path_buf()), dev: Some(true), ..Default::default() },
            ServeArgs::default(),
        )
        .expect("built-in defaults are valid")
    }

    /// Where deliveries may go: public addresses, the allowed networks, and loopback in dev mode.
    pub fn destinations(&self) -> crate::destinations::Destinations {
        crate::destinations::Destinations::new(self.allowed_private_networks.clone(), self.dev_mode)
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad("config", format!("{}: {e}", path.display())))?;
    // toml's own rendering quotes the offending line, which may hold a key or a password.
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
        let at = line.map(|line| format!(", line {line}")).unwrap_or_default();
        bad("config", format!("{}{at}: {}", path.display(), e.message()))
    })
}

fn duration(setting: &'static str, value: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_string());
    humantime::parse_duration(&text)
        .map_err(|e| bad(setting, format!("`{text}` is not a duration such as 30s, 5m or 1h: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded_sqlite_on_loopback() {
        let config = Config::from_layers(ServeArgs::default(), ServeArgs::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.database_url, "sqlite://switchyard-data/switchyard.db");
        assert!(config.is_sqlite());
        assert!(!config.dev_mode);
        assert_eq!(config.max_payload_bytes, 1 << 20);
        assert_eq!(config.secret_grace, Duration::from_secs(24 * 3600));
        assert_eq!(config.filter_budget, Duration::from_secs(1));
        assert_eq!(config.tenant_rate_limit, None);
        assert_eq!((config.dispatch_concurrency, config.endpoint_concurrency), (1024, 1024));
        assert_eq!(config.plugins_dir, PathBuf::from("switchyard-data/plugins"));
        assert_eq!(config.plugin_limits.deadline, Duration::from_millis(50));
        assert_eq!(config.plugin_limits.memory_bytes, 32 << 20);
        assert_eq!(config.stats_interval, Duration::from_secs(5));
    }

    #[test]
    fn environment_and_flags_override_the_file() {
        let file: ServeArgs = toml::from_str("listen = \"0.0.0.0:9000\"\ndev = true\nlease = \"10m\"").unwrap();
        let over = ServeArgs { listen: Some("127.0.0.1:7000".into()), ..Default::default() };
        let config = Config::from_layers(over, file).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert!(config.dev_mode);
        assert_eq!(config.lease, Duration::from_secs(600));
    }

    #[test]
    fn failing_endpoints_are_disabled_after_five_days_unless_turned_off() {
        let config = Config::from_layers(ServeArgs::default(), ServeArgs::default()).unwrap();
        assert_eq!(config.disable_failing_after, Some(Duration::from_secs(5 * 24 * 3600)));
        let off = ServeArgs { disable_failing_after: Some("0s".into()), ..Default::default() };
        assert_eq!(Config::from_layers(off, ServeArgs::default()).unwrap().disable_failing_after, None);
        let day = ServeArgs { disable_failing_after: Some("1day".into()), ..Default::default() };
        let config = Config::from_layers(day, ServeArgs::default()).unwrap();
        assert_eq!(config.disable_failing_after, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(config.disable_failing_attempts, None, "no count unless set");
        let file: ServeArgs = toml::from_str("disable_failing_attempts = 25").unwrap();
        assert_eq!(Config::from_layers(ServeArgs::default(), file).unwrap().disable_failing_attempts, Some(25));
        let zero = ServeArgs { disable_failing_attempts: Some(0), ..Default::default() };
        assert_eq!(Config::from_layers(zero, ServeArgs::default()).unwrap().disable_failing_attempts, None);
    }

    #[test]
    fn bad_settings_are_named() {
        let cases = [
            (ServeArgs { listen: Some("nope".into()), ..Default::default() }, "listen"),
            (ServeArgs { database_url: Some("mysql://x".into()), ..Default::default() }, "database_url"),
            (ServeArgs { admin_key: Some("short".into()), ..Default::default() }, "admin_key"),
            (ServeArgs { metrics_token: Some("short".into()), ..Default::default() }, "metrics_token"),
            (ServeArgs { master_key: Some("zz".into()), ..Default::default() }, "master_key"),
            (ServeArgs { lease: Some("1m".into()), ..Default::default() }, "lease"),
            (ServeArgs { poll_interval: Some("soon".into()), ..Default::default() }, "poll_interval"),
            (ServeArgs { max_payload_bytes: Some(10), ..Default::default() }, "max_payload_bytes"),
            (ServeArgs { plugin_memory_mib: Some(0), ..Default::default() }, "plugin_memory_mib"),
            (ServeArgs { plugin_deadline: Some("1h".into()), ..Default::default() }, "plugin_deadline"),
            (ServeArgs { filter_budget: Some("1ms".into()), ..Default::default() }, "filter_budget"),
            (ServeArgs { tenant_rate_limit: Some(0), ..Default::default() }, "tenant_rate_limit"),
            (ServeArgs { tenant_rate_limit: Some(1_000_001), ..Default::default() }, "tenant_rate_limit"),
            (ServeArgs { endpoint_concurrency: Some(0), ..Default::default() }, "endpoint_concurrency"),
            (
                ServeArgs { dispatch_concurrency: Some(8), endpoint_concurrency: Some(9), ..Default::default() },
                "endpoint_concurrency",
            ),
            (ServeArgs { disable_failing_after: Some("never".into()), ..Default::default() }, "disable_failing_after"),
            (ServeArgs { disable_failing_after: Some("1ms".into()), ..Default::default() }, "disable_failing_after"),
            (ServeArgs { stats_interval: Some("0s".into()), ..Default::default() }, "stats_interval"),
            (ServeArgs { stats_interval: Some("1h".into()), ..Default::default() }, "stats_interval"),
        ];
        for (args, setting) in cases {
            let err = Config::from_layers(args, ServeArgs::default()).unwrap_err();
            assert_eq!(err.setting, setting);
            assert!(err.to_string().contains(setting));
        }
    }

    #[test]
    fn dev_mode_takes_the_usual_spellings_of_a_boolean() {
        let dev = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["switchyard", "serve"], args].concat()).unwrap();
            let Command::Serve(serve) = cli.command;
            serve.dev
        };
        assert_eq!(dev(&[]), None);
        assert_eq!(dev(&["--dev"]), Some(true));
        for (text, value) in [("1", true), ("yes", true), ("on", true), ("true", true), ("0", false), ("no", false)] {
            assert_eq!(dev(&[&format!("--dev={text}")]), Some(value), "{text}");
        }
        assert!(Cli::try_parse_from(["switchyard", "serve", "--dev=maybe"]).is_err());
    }

    #[test]
    fn event_type_schemas_are_off_unless_turned_on() {
        assert!(!Config::from_layers(ServeArgs::default(), ServeArgs::default()).unwrap().event_type_schemas);
        let file = || toml::from_str::<ServeArgs>("event_type_schemas = true").unwrap();
        assert!(Config::from_layers(ServeArgs::default(), file()).unwrap().event_type_schemas);
        let off = ServeArgs { event_type_schemas: Some(false), ..Default::default() };
        assert!(!Config::from_layers(off, file()).unwrap().event_type_schemas, "the flag or variable wins");
        let cli = Cli::try_parse_from(["switchyard", "serve", "--event-type-schemas"]).unwrap();
        let Command::Serve(serve) = cli.command;
        assert_eq!(serve.event_type_schemas, Some(true));
    }

    #[test]
    fn allowed_private_networks_come_from_a_list_or_a_comma_separated_flag() {
        let file: ServeArgs = toml::from_str(r#"allowed_private_networks = ["10.20.0.0/16", "fd00::1"]"#).unwrap();
        let config = Config::from_layers(ServeArgs::default(), file).unwrap();
        let shown: Vec<String> = config.allowed_private_networks.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.20.0.0/16", "fd00::1/128"]);
        assert!(config.destinations().check("10.20.3.4".parse().unwrap()).is_ok());
        assert!(config.destinations().check("10.21.0.1".parse().unwrap()).is_err());

        let cli =
            Cli::try_parse_from(["switchyard", "serve", "--allowed-private-networks", "192.168.7.9/24, 127.0.0.1"]);
        let Command::Serve(flags) = cli.unwrap().command;
        let config = Config::from_layers(flags, ServeArgs::default()).unwrap();
        let shown: Vec<String> = config.allowed_private_networks.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["192.168.7.0/24", "127.0.0.1/32"], "a block is cut to its network");

        let empty = ServeArgs {
            allowed_private_networks: Some(vec!["".into(), "10.0.0.0/8 ".into(), " ".into()]),
            ..Default::default()
        };
        let config = Config::from_layers(empty, ServeArgs::default()).unwrap();
        assert_eq!(config.allowed_private_networks.len(), 1, "blank entries list nothing");
        let wrong = ServeArgs { allowed_private_networks: Some(vec!["10.0.0.0/33".into()]), ..Default::default() };
        let error = Config::from_layers(wrong, ServeArgs::default()).expect_err("refused");
        assert_eq!(error.setting, "allowed_private_networks");
        assert!(error.problem.contains("`10.0.0.0/33`"), "{}", error.problem);
    }

    #[test]
    fn the_admin_keys_networks_and_trusted_proxies_are_lists_of_networks() {
        let file: ServeArgs = toml::from_str(
            "admin_allowed_networks = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"192.0.2.1\", \"fd00::/8\"]",
        )
        .unwrap();
        let config = Config::from_layers(ServeArgs::default(), file).unwrap();
        let shown = |networks: &[ipnet::IpNet]| networks.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown(&config.admin_allowed_networks), ["10.0.0.0/8"]);
        assert_eq!(shown(&config.trusted_proxies), ["192.0.2.1/32", "fd00::/8"]);
        let defaults = Config::from_layers(ServeArgs::default(), ServeArgs::default()).unwrap();
        assert!(defaults.admin_allowed_networks.is_empty() && defaults.trusted_proxies.is_empty());
        let huge = ServeArgs { trusted_proxies: Some(vec!["1".repeat(20_000)]), ..Default::default() };
        let error = Config::from_layers(huge, ServeArgs::default()).unwrap_err();
        assert!(error.problem.len() < 150, "the entry is quoted, not repeated: {}", error.problem);
        let wrong = ServeArgs { trusted_proxies: Some(vec!["proxy.internal".into()]), ..Default::default() };
        assert_eq!(Config::from_layers(wrong, ServeArgs::default()).unwrap_err().setting, "trusted_proxies");
        // Addresses are compared in their IPv4 form, so a mapped block is its IPv4 block.
        let mapped = |text: &str| parse_network(text).map(|network| network.to_string());
        assert_eq!(mapped("::ffff:10.1.1.1").as_deref(), Some("10.1.1.1/32"));
        assert_eq!(mapped("::ffff:10.0.0.0/104").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(mapped("::ffff:0:0/96").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(mapped("::/0").as_deref(), Some("::/0"));
        assert_eq!(mapped("2001:db8::1").as_deref(), Some("2001:db8::1/128"));
        let wrong = ServeArgs { admin_allowed_networks: Some(vec!["10.0.0.0/40".into()]), ..Default::default() };
        assert_eq!(Config::from_layers(wrong, ServeArgs::default()).unwrap_err().setting, "admin_allowed_networks");
        let scrapers = ServeArgs { metrics_allowed_networks: Some(vec!["10.9.0.0/16".into()]), ..Default::default() };
        let config = Config::from_layers(scrapers, ServeArgs::default()).unwrap();
        assert_eq!(shown(&config.metrics_allowed_networks), ["10.9.0.0/16"]);
        let wrong = ServeArgs { metrics_allowed_networks: Some(vec!["scraper".into()]), ..Default::default() };
        assert_eq!(Config::from_layers(wrong, ServeArgs::default()).unwrap_err().setting, "metrics_allowed_networks");
    }

    #[test]
    fn the_retry_schedule_is_the_built_in_one_unless_set() {
        let config = Config::from_layers(ServeArgs::default(), ServeArgs::default()).unwrap();
        assert_eq!(config.retry_schedule_ms, crate::retry::DEFAULT_SCHEDULE_MS);
        let file: ServeArgs = toml::from_str(r#"retry_schedule = ["30s", "5m", "1h"]"#).unwrap();
        let config = Config::from_layers(ServeArgs::default(), file).unwrap();
        assert_eq!(config.retry_schedule_ms, [30_000, 300_000, 3_600_000]);
        let cli = Cli::try_parse_from(["switchyard", "serve", "--retry-schedule", "10s,1m"]).unwrap();
        let Command::Serve(flags) = cli.command;
        assert_eq!(Config::from_layers(flags, ServeArgs::default()).unwrap().retry_schedule_ms, [10_000, 60_000]);
        for (texts, problem) in [(vec![], "must hold 1 to 20 delays"), (vec!["1m", "later"], "delay 2 `later` is not")]
        {
            let wrong =
                ServeArgs { retry_schedule: Some(texts.iter().map(|t| t.to_string()).collect()), ..Default::default() };
            let error = Config::from_layers(wrong, ServeArgs::default()).expect_err("refused");
            assert_eq!(error.setting, "retry_schedule");
            assert!(error.problem.starts_with(problem), "{}", error.problem);
        }
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<ServeArgs>("listne = \"x\"").is_err());
    }

    #[test]
    fn debug_output_hides_keys_and_database_password() {
        let mut config = Config::for_data_dir(Path::new("/tmp/x"));
        config.admin_key = Some("super-secret-admin-key".into());
        config.metrics_token = Some("scrape-secret-token".into());
        config.database_url = "postgres://u:hunter2@db/x".into();
        let shown = format!("{config:?}");
        assert!(!shown.contains("super-secret"));
        assert!(!shown.contains("scrape-secret"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn logged_database_urls_keep_no_password() {
        assert_eq!(redact_url("postgres://u:hunter2@db:5432/x"), "postgres://u:***@db:5432/x");
        assert_eq!(
            redact_url("postgres://u@db/x?password=hunter2&sslmode=require"),
            "postgres://u@db/x?password=***&sslmode=***"
        );
        assert_eq!(redact_url("sqlite://switchyard-data/switchyard.db"), "sqlite://switchyard-data/switchyard.db");
        assert!(!redact_url("postgres://u:hunter2@[bad").contains("hunter2"));
    }

    #[test]
    fn a_bad_config_file_is_reported_without_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nadmin-key = \"hunter2-hunter2-hunter2\"\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("line 2") && err.contains("admin-key"), "{err}");
        std::fs::write(&path, "master_key = abc-hunter2\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tls/ca.pem");
        let with = |path: &str| {
            Config::from_layers(ServeArgs { ca_file: Some(path.into()), ..Default::default() }, ServeArgs::default())
        };
        assert_eq!(with(ca).unwrap().extra_root_certificates.len(), 1);
        let missing = with("/nonexistent/ca.pem").unwrap_err();
        assert_eq!(missing.setting, "ca_file");
        let not_pem = with(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap_err();
        assert_eq!(not_pem.setting, "ca_file", "{not_pem}");
    }
}
