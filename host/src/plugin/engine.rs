//! The one `wasmtime::Engine`, its linker, the epoch ticker that enforces call deadlines, and the per-call store
//! state (WASI with nothing reaching outside, the memory limiter, captured log lines).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, UpdateDeadline,
};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, Level};
use super::cache::ArtifactCache;
use super::errors::{EngineError, LoadError};
use super::stats::{level_name, LogLine};
use super::PluginLimits;

/// Dirty linear-memory bytes per slot reset in place rather than released (see `PluginEngine::new`): a call's
/// stack and heap pages, with room to spare.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// Whether any swap area is active (`/proc/swaps` lists one below its header).
fn swap_enabled() -> bool {
    std::fs::read_to_string("/proc/swaps").map(|swaps| swaps.lines().count() > 1).unwrap_or(false)
}

/// How often the epoch advances: the granularity of the call deadline.
const TICK: Duration = Duration::from_millis(2);

/// Instance slots reserved for loads (which instantiate once to validate), beyond `max_concurrent_calls`.
const LOAD_SLOTS: u32 = 4;

/// The plugin engine. Cheap to clone; the ticker thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    limits: PluginLimits,
    cache: ArtifactCache,
    /// One permit per call slot: calls beyond the limit wait here instead of failing on an exhausted pool.
    call_permits: tokio::sync::Semaphore,
    ticker: Ticker,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").field("limits", &self.inner.limits).field("cache", &self.inner.cache).finish()
    }
}

impl PluginEngine {
    /// `cache_dir` holds precompiled artifacts; put it under the data directory, never in the plugins directory.
    pub fn new(cache_dir: impl Into<PathBuf>, limits: PluginLimits) -> Result<Self, EngineError> {
        let config_error = |e: wasmtime::Error| EngineError::Config(format!("{e:#}"));
        // Headroom beyond the call permits for the probe instance every load creates.
        let slots = limits.max_concurrent_calls.max(1) + LOAD_SLOTS;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasip2 component instantiates a handful of core modules (program, WASI adapter shims).
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .total_stacks(slots)
            .max_memory_size(limits.memory_bytes);
        // A fresh sandbox per call is only cheap if reusing a slot is: by default every freed linear memory is
        // `madvise`d away and the next call page-faults its stack and heap back in, one fault per page. With
        // PAGEMAP_SCAN (Linux 6.7+) wasmtime finds the pages a call dirtied and resets just those with `memset`,
        // keeping them resident. Reset pages get the module's initial contents (or zeros) back, so nothing
        // leaks between calls; except that the scan skips swapped-out pages, so it stays off while swap is on.
        if !swap_enabled() {
            pool.pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
        }
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(config_error)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(config_error)?;
        bindings::Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(config_error)?;

        let cache = ArtifactCache::new(cache_dir.into(), &engine)?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(PluginEngine {
            inner: Arc::new(Inner {
                call_permits: tokio::sync::Semaphore::new(limits.max_concurrent_calls.max(1) as usize),
                engine,
                linker,
                limits,
                cache,
                ticker,
            }),
        })
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.inner.limits
    }

    /// Waits for a call slot; hold the permit for the duration of the call.
    pub(crate) async fn call_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed, so this only fails if that changes; callers then run unthrottled and
        // the pool still bounds them.
        self.inner.call_permits.acquire().await.ok()
    }

    /// Where the precompiled artifact of the component with this sha256 is (or would be) cached.
    pub fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.inner.cache.path_for(sha256)
    }

    /// Compiles (or loads from the artifact cache) and links a component. Blocking: call it off the async
    /// runtime (see [`PluginVersion::load`](super::PluginVersion::load)). Returns whether the cache was hit.
    pub(crate) fn prepare(&self, sha256: &str, bytes: &[u8]) -> Result<(InstancePre<CallState>, bool), LoadError> {
        let (component, cached): (Component, bool) =
            self.inner.cache.load_or_compile(&self.inner.engine, sha256, bytes)?;
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok((pre, cached))
    }

    /// A fresh store for one call, with its memory limit and deadline armed.
    pub(crate) fn store(&self, tag: LogTag) -> Store<CallState> {
        let limits = &self.inner.limits;
        let state = CallState {
            _ticking: self.inner.ticker.keep_ticking(),
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryLimiter { max_bytes: limits.memory_bytes, exceeded: false },
            logs: LogCapture {
                tag,
                lines: Vec::new(),
                dropped: 0,
                max_lines: limits.max_log_lines_per_call,
                max_bytes: limits.max_log_line_bytes,
            },
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Checked on every epoch tick: yield to the executor so a busy plugin never holds a runtime worker for
        // more than a tick, and trap once the deadline has passed.
        let deadline = Instant::now() + limits.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store
    }
}

/// Advances the engine's epoch every [`TICK`]; after [`IDLE_TICKS_BEFORE_PARKING`] ticks without a live store it
/// parks until the next store is created, so an idle router (or one without plugins) is not woken 500 times a
/// second. It parks only after a quiet spell because waking it costs a futex wake and a context switch, too much
/// to pay on every call of a busy router. Stops when dropped.
struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

const IDLE_TICKS_BEFORE_PARKING: u32 = 100;

#[derive(Default)]
struct TickerShared {
    state: Mutex<TickerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TickerState {
    live_stores: usize,
    parked: bool,
    stop: bool,
}

impl TickerShared {
    fn lock(&self) -> MutexGuard<'_, TickerState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ticker {
    fn start(engine: Engine) -> Result<Self, EngineError> {
        let shared = Arc::new(TickerShared::default());
        let ticking = shared.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                let mut idle_ticks = 0;
                let mut state = ticking.lock();
                while !state.stop {
                    idle_ticks = if state.live_stores == 0 { idle_ticks + 1 } else { 0 };
                    if idle_ticks >= IDLE_TICKS_BEFORE_PARKING {
                        state.parked = true;
                        while state.live_stores == 0 && !state.stop {
                            state = ticking.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                        }
                        state.parked = false;
                        idle_ticks = 0;
                        continue;
                    }
                    // Only a stop or an unparking notifies, so this wait lasts the full tick.
                    state = ticking.wake.wait_timeout(state, TICK).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
                    engine.increment_epoch();
                }
            })
            .map_err(EngineError::Ticker)?;
        Ok(Ticker { shared, thread: Some(thread) })
    }

    /// Keeps the epoch advancing until the guard is dropped: held by every store, as deadlines are only
    /// checked on a tick.
    fn keep_ticking(&self) -> TickGuard {
        let mut state = self.shared.lock();
        state.live_stores += 1;
        if state.parked {
            self.shared.wake.notify_one();
        }
        TickGuard { shared: self.shared.clone() }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) struct TickGuard {
    shared: Arc<TickerShared>,
}

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.shared.lock().live_stores -= 1;
    }
}

/// Plugins get time only through their inputs, so their decisions are reproducible (and simulate-able): WASI's
/// clocks are frozen at the epoch.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Who is logging: copied onto every captured line. Shared strings, as a tag is made for every call and most calls
/// log nothing.
#[derive(Debug, Clone)]
pub(crate) struct LogTag {
    pub plugin: Arc<str>,
    pub version: Arc<str>,
    pub event_id: Option<String>,
}

pub(crate) struct LogCapture {
    tag: LogTag,
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: u64,
    max_lines: usize,
    max_bytes: usize,
}

pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    /// Set when a growth was refused, so the trap that usually follows is reported as what it is.
    pub(crate) exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

pub(crate) struct CallState {
    _ticking: TickGuard,
    /// Built on the first WASI call: building one costs a dozen allocations and seeding two random generators,
    /// and most plugin calls never make a WASI call.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) logs: LogCapture,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self
            .wasi
            .get_or_insert_with(|| WasiCtx::builder().wall_clock(FrozenClock).monotonic_clock(FrozenClock).build());
        WasiCtxView { ctx, table: &mut self.table }
    }
}

impl bindings::switchyard::plugin::types::Host for CallState {}

impl bindings::switchyard::plugin::log::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let logs = &mut self.logs;
        if logs.lines.len() >= logs.max_lines {
            logs.dropped += 1;
            return;
        }
        let mut message = message;
        if message.len() > logs.max_bytes {
            let mut end = logs.max_bytes;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let tag = &logs.tag;
        tracing::debug!(plugin = %tag.plugin, version = %tag.version, event = ?tag.event_id,
            level = level_name(level), "plugin log: {message}");
        logs.lines.push(LogLine {
            plugin: tag.plugin.to_string(),
            version: tag.version.to_string(),
            event_id: tag.event_id.clone(),
            level: level_name(level),
            message,
            at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_ticker_parks_after_a_quiet_spell_and_wakes_for_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let engine = PluginEngine::new(dir.path(), PluginLimits::default()).unwrap();
        let parked = || engine.inner.ticker.shared.lock().parked;
        eventually("the idle ticker parks", parked);
        let tag = LogTag { plugin: "p".into(), version: "v".into(), event_id: None };
        let store = engine.store(tag);
        eventually("a live store wakes the ticker", || !parked());
        // While a store lives it keeps ticking, however long that is.
        std::thread::sleep(TICK * (IDLE_TICKS_BEFORE_PARKING + 20));
        assert!(!parked());
        drop(store);
        eventually("the ticker parks again", parked);
    }
}
