//! One compiled, validated version of a plugin and the calls into it. Every call gets a fresh store (so no state
//! leaks between events) with the engine's limits armed; whatever the plugin does, the outcome is a value.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use wasmtime::component::InstancePre;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap};

use super::bindings::{
    Attempt, Endpoint, Event, FilterDecision, FilterIndices, Request, RetryDecision, RetryPolicyIndices,
    TransformIndices,
};
use super::engine::{CallState, LogTag, PluginEngine};
use super::errors::{CallError, LoadError};
use super::stats::{VersionStats, VersionStatsSnapshot};
use super::validate;
use super::PluginKind;

const CONTRACT_VERSION: &str = "0.1.0";

/// A loaded plugin version. Shared as `Arc<PluginVersion>`: holding it keeps this exact code callable.
pub struct PluginVersion {
    name: Arc<str>,
    sha256: Arc<str>,
    kinds: Vec<PluginKind>,
    size_bytes: u64,
    loaded_at_ms: u64,
    from_cache: bool,
    engine: PluginEngine,
    pre: InstancePre<CallState>,
    filter: Option<FilterIndices>,
    transform: Option<TransformIndices>,
    retry_policy: Option<RetryPolicyIndices>,
    stats: VersionStats,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One call: a fresh store and instance, the input cap, the deadline around everything (instantiation included),
/// then [`PluginVersion::finish`]. `$body` runs with `store: &mut Store<CallState>` and `instance: Instance` and
/// returns `wasmtime::Result<Result<R, CallError>>`.
macro_rules! call_guest {
    ($self:ident, $event_id:expr, $input_size:expr, |$store:ident, $instance:ident| $body:block) => {{
        let _permit = $self.engine.call_permit().await;
        let started = Instant::now();
        let limits = $self.engine.limits();
        let mut store = $self.engine.store($self.tag($event_id));
        let ran = match validate::check_input($input_size, limits.max_input_bytes) {
            Err(error) => Ok(Ok(Err(error))),
            Ok(()) => {
                tokio::time::timeout(limits.deadline, async {
                    let $instance = $self.pre.instantiate_async(&mut store).await?;
                    let $store = &mut store;
                    $body
                })
                .await
            }
        };
        $self.finish(started, &mut store, ran)
    }};
}

impl PluginVersion {
    /// Compiles (off the async runtime), links, detects the exported interfaces and instantiates once to
    /// type-check them.
    pub async fn load(engine: &PluginEngine, name: &str, bytes: Vec<u8>) -> Result<Self, LoadError> {
        let sha256 = sha256_hex(&bytes);
        let size_bytes = bytes.len() as u64;
        let (pre, from_cache) = {
            let (engine, sha256) = (engine.clone(), sha256.clone());
            tokio::task::spawn_blocking(move || engine.prepare(&sha256, &bytes))
                .await
                .map_err(|e| LoadError::Task(e.to_string()))??
        };
        let exported = |kind: PluginKind| {
            let export = format!("switchyard:plugin/{kind}@{CONTRACT_VERSION}");
            pre.component().get_export_index(None, &export).is_some()
        };
        let signature =
            |kind: PluginKind| move |e: wasmtime::Error| LoadError::Signature { kind, message: format!("{e:#}") };
        let filter = exported(PluginKind::Filter)
            .then(|| FilterIndices::new(&pre).map_err(signature(PluginKind::Filter)))
            .transpose()?;
        let transform = exported(PluginKind::Transform)
            .then(|| TransformIndices::new(&pre).map_err(signature(PluginKind::Transform)))
            .transpose()?;
        let retry_policy = exported(PluginKind::RetryPolicy)
            .then(|| RetryPolicyIndices::new(&pre).map_err(signature(PluginKind::RetryPolicy)))
            .transpose()?;
        let kinds: Vec<PluginKind> = [
            filter.as_ref().map(|_| PluginKind::Filter),
            transform.as_ref().map(|_| PluginKind::Transform),
            retry_policy.as_ref().map(|_| PluginKind::RetryPolicy),
        ]
        .into_iter()
        .flatten()
        .collect();
        if kinds.is_empty() {
            return Err(LoadError::NoInterface);
        }

        // Function types are only checked against an instance; a probe instance also proves the component's
        // start-up code runs within the limits.
        let (name, sha256): (Arc<str>, Arc<str>) = (name.into(), sha256.into());
        let mut store = engine.store(LogTag { plugin: name.clone(), version: sha256.clone(), event_id: None });
        let instance = tokio::time::timeout(engine.limits().deadline, pre.instantiate_async(&mut store))
            .await
            .map_err(|_| LoadError::Instantiate("instantiation exceeded the call deadline".into()))?
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        if let Some(indices) = &filter {
            indices.load(&mut store, &instance).map_err(signature(PluginKind::Filter))?;
        }
        if let Some(indices) = &transform {
            indices.load(&mut store, &instance).map_err(signature(PluginKind::Transform))?;
        }
        if let Some(indices) = &retry_policy {
            indices.load(&mut store, &instance).map_err(signature(PluginKind::RetryPolicy))?;
        }

        Ok(PluginVersion {
            name,
            stats: VersionStats::new(engine.limits().log_ring_size),
            sha256,
            kinds,
            size_bytes,
            loaded_at_ms: now_ms(),
            from_cache,
            engine: engine.clone(),
            pre,
            filter,
            transform,
            retry_policy,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version's identity: the hex sha256 of the component bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The interfaces this component exports, in [`PluginKind::ALL`] order; never empty.
    pub fn kinds(&self) -> &[PluginKind] {
        &self.kinds
    }

    pub fn exports(&self, kind: PluginKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Whether loading used a precompiled artifact from the cache instead of compiling.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn stats(&self) -> VersionStatsSnapshot {
        self.stats.snapshot(&self.sha256, &self.kinds, self.size_bytes, self.loaded_at_ms)
    }

    /// Runs the filter.
    pub async fn filter(&self, event: &Event, endpoint: &Endpoint) -> Result<FilterDecision, CallError> {
        let indices = self.filter.as_ref().ok_or(CallError::NotExported(PluginKind::Filter))?;
        let limit = self.engine.limits().max_output_bytes;
        call_guest!(self, Some(&event.id), validate::event_size(event, endpoint), |store, instance| {
            let answer = indices.load(&mut *store, &instance)?.call_filter(&mut *store, event, endpoint).await?;
            Ok(answer.map_err(|message| validate::plugin_error(message, limit)))
        })
    }

    /// Runs the transform and validates the request it returns.
    pub async fn transform(&self, event: &Event, endpoint: &Endpoint) -> Result<Request, CallError> {
        let indices = self.transform.as_ref().ok_or(CallError::NotExported(PluginKind::Transform))?;
        let limit = self.engine.limits().max_output_bytes;
        call_guest!(self, Some(&event.id), validate::event_size(event, endpoint), |store, instance| {
            let answer = indices.load(&mut *store, &instance)?.call_transform(&mut *store, event, endpoint).await?;
            Ok(answer.map_err(|message| validate::plugin_error(message, limit)).and_then(|request| {
                validate::check_request(&request, limit)?;
                Ok(request)
            }))
        })
    }

    /// Runs the retry policy.
    pub async fn retry_policy(&self, attempt: &Attempt, endpoint: &Endpoint) -> Result<RetryDecision, CallError> {
        let indices = self.retry_policy.as_ref().ok_or(CallError::NotExported(PluginKind::RetryPolicy))?;
        let limit = self.engine.limits().max_output_bytes;
        let size = validate::attempt_size(attempt) + validate::endpoint_size(endpoint);
        call_guest!(self, None, size, |store, instance| {
            let decision = indices.load(&mut *store, &instance)?.call_decide(&mut *store, attempt, endpoint).await?;
            Ok(validate::check_retry_decision(&decision, limit).map(|()| decision))
        })
    }

    /// Turns every way a call can end into a [`CallError`] and records the stats and captured logs.
    fn finish<R>(
        &self,
        started: Instant,
        store: &mut Store<CallState>,
        ran: Result<wasmtime::Result<Result<R, CallError>>, tokio::time::error::Elapsed>,
    ) -> Result<R, CallError> {
        let limits = self.engine.limits();
        let result = match ran {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => Err(classify(&error, store, limits.deadline, limits.memory_bytes)),
            // The guest was waiting in a host call (e.g. a WASI sleep) when the deadline passed.
            Err(_elapsed) => Err(CallError::Deadline(limits.deadline)),
        };
        let logs = std::mem::take(&mut store.data_mut().logs.lines);
        let dropped = store.data().logs.dropped;
        self.stats.record(started.elapsed(), result.is_err(), logs, dropped);
        result
    }

    fn tag(&self, event_id: Option<&str>) -> LogTag {
        LogTag { plugin: self.name.clone(), version: self.sha256.clone(), event_id: event_id.map(Into::into) }
    }
}

fn classify(
    error: &wasmtime::Error,
    store: &Store<CallState>,
    deadline: std::time::Duration,
    memory: usize,
) -> CallError {
    if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return CallError::Busy;
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return CallError::Deadline(deadline);
    }
    if store.data().limiter.exceeded {
        return CallError::MemoryLimit(memory);
    }
    CallError::Trap(format!("{error:#}"))
}
