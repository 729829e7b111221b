//! Name → versions. A successful load atomically becomes the latest version; a failed one leaves the previous
//! version live and is remembered as the plugin's last load error. Old versions stay resolvable by sha256 (up to
//! a bound) so work pinned to a version keeps its exact behaviour.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::engine::PluginEngine;
use super::errors::LoadError;
use super::stats::VersionStatsSnapshot;
use super::version::{sha256_hex, PluginVersion};

/// Previous versions kept per plugin by default (beyond the latest).
pub const DEFAULT_KEPT_VERSIONS: usize = 16;

/// Everything phase B's API shows for one plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginSnapshot {
    pub name: String,
    /// The sha256 of the latest version; `None` when no load has succeeded yet.
    pub latest: Option<String>,
    /// Newest first.
    pub versions: Vec<VersionStatsSnapshot>,
    pub last_load_error: Option<LoadFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadFailure {
    pub message: String,
    /// The sha256 of the bytes that failed, when they could be read.
    pub sha256: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

#[derive(Default)]
struct Entry {
    /// Newest first; the first one is the latest.
    versions: Vec<Arc<PluginVersion>>,
    last_load_error: Option<LoadFailure>,
}

pub struct PluginRegistry {
    engine: PluginEngine,
    kept_versions: usize,
    plugins: RwLock<BTreeMap<String, Entry>>,
    /// Loads are serialized so a slow compilation of an older file can never overtake a newer one.
    loading: tokio::sync::Mutex<()>,
    /// See [`PluginRegistry::changing`].
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").field("plugins", &self.names()).finish_non_exhaustive()
    }
}

/// Plugin names come from file names and end up in URLs and logs.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl PluginRegistry {
    pub fn new(engine: PluginEngine) -> Self {
        Self::with_kept_versions(engine, DEFAULT_KEPT_VERSIONS)
    }

    pub fn with_kept_versions(engine: PluginEngine, kept_versions: usize) -> Self {
        PluginRegistry {
            engine,
            kept_versions,
            plugins: RwLock::new(BTreeMap::new()),
            loading: tokio::sync::Mutex::new(()),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// Held across reading which version of a plugin runs and changing it, by an upload or a deletion through
    /// the API and by the sync of uploads made on other nodes, so that one of them cannot act on what another
    /// is replacing. (The watcher does not take it: a file copied by hand can land at any time, and the latest
    /// load wins.)
    pub async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Loads `<name>.wasm`; the plugin's name is the file stem. The file is read once no other load is running,
    /// so a late watcher event can never reinstall bytes an upload has already replaced.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<PluginVersion>, LoadError> {
        let name = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or_default().to_string();
        if !valid_plugin_name(&name) {
            return Err(LoadError::Name(name));
        }
        let _serialized = self.loading.lock().await;
        match tokio::fs::read(path).await {
            Ok(bytes) => self.load_serialized(&name, bytes).await,
            Err(e) => {
                let error = LoadError::Read { path: path.to_path_buf(), message: e.to_string() };
                self.record_failure(&name, None, &error);
                Err(error)
            }
        }
    }

    /// Compiles (off the async runtime) and validates `bytes`; on success they become the latest version of `name`.
    /// Loading bytes identical to a kept version reuses it without compiling.
    pub async fn load(&self, name: &str, bytes: Vec<u8>) -> Result<Arc<PluginVersion>, LoadError> {
        let _serialized = self.loading.lock().await;
        self.load_serialized(name, bytes).await
    }

    /// Like [`load`](Self::load), with `persist` (e.g. writing the file into the plugins directory) run between
    /// the compilation and the version becoming the latest, which it does only if `persist` succeeds; all before
    /// any other load may start, so a watcher event that arrives meanwhile reads the persisted file, never an
    /// older one.
    pub async fn load_and_persist<E>(
        &self,
        name: &str,
        bytes: Vec<u8>,
        persist: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<Result<Arc<PluginVersion>, E>, LoadError> {
        let _serialized = self.loading.lock().await;
        // Compiled, then written, and only then live: a version that serves is one whose file is on disk, so a
        // stop in between (or a failed write) leaves neither.
        let version = self.compile(name, bytes).await?;
        if let Err(failed) = persist.await {
            return Ok(Err(failed));
        }
        self.make_latest(name, &version);
        Ok(Ok(version))
    }

    async fn load_serialized(&self, name: &str, bytes: Vec<u8>) -> Result<Arc<PluginVersion>, LoadError> {
        let version = self.compile(name, bytes).await?;
        self.make_latest(name, &version);
        Ok(version)
    }

    /// The version of `bytes`: one already kept, or a fresh compilation. Not made the latest.
    async fn compile(&self, name: &str, bytes: Vec<u8>) -> Result<Arc<PluginVersion>, LoadError> {
        if !valid_plugin_name(name) {
            return Err(LoadError::Name(name.into()));
        }
        let sha256 = sha256_hex(&bytes);
        if let Some(existing) = self.version(name, &sha256) {
            return Ok(existing);
        }
        match PluginVersion::load(&self.engine, name, bytes).await {
            Ok(version) => {
                let version = Arc::new(version);
                tracing::info!(plugin = name, sha256 = %version.sha256(), kinds = ?version.kinds(),
                    cached = version.from_cache(), "plugin version loaded");
                Ok(version)
            }
            Err(error) => {
                tracing::warn!(plugin = name, %sha256, %error, "plugin load failed; the previous version stays live");
                self.record_failure(name, Some(sha256), &error);
                Err(error)
            }
        }
    }

    fn make_latest(&self, name: &str, version: &Arc<PluginVersion>) {
        // The latest already: nothing changes, and a failed load's error stays shown (the watcher reads a file an
        // upload has just written after the debounce, maybe after a later upload that failed).
        if self.latest(name).is_some_and(|latest| Arc::ptr_eq(&latest, version)) {
            return;
        }
        self.install(name, version.clone());
    }

    fn install(&self, name: &str, version: Arc<PluginVersion>) {
        let mut plugins = self.plugins.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = plugins.entry(name.to_string()).or_default();
        entry.versions.retain(|kept| kept.sha256() != version.sha256());
        entry.versions.insert(0, version);
        entry.versions.truncate(self.kept_versions + 1);
        entry.last_load_error = None;
    }

    fn record_failure(&self, name: &str, sha256: Option<String>, error: &LoadError) {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut plugins = self.plugins.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        plugins.entry(name.to_string()).or_default().last_load_error =
            Some(LoadFailure { message: error.to_string(), sha256, at_ms });
    }

    fn read<R>(&self, name: &str, f: impl FnOnce(&Entry) -> Option<R>) -> Option<R> {
        let plugins = self.plugins.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        plugins.get(name).and_then(f)
    }

    /// The version new work should use.
    pub fn latest(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.read(name, |entry| entry.versions.first().cloned())
    }

    /// A specific kept version, by its full sha256.
    pub fn version(&self, name: &str, sha256: &str) -> Option<Arc<PluginVersion>> {
        self.read(name, |entry| entry.versions.iter().find(|v| v.sha256() == sha256).cloned())
    }

    /// The pinned version when `pin` is set, else the latest.
    pub fn resolve(&self, name: &str, pin: Option<&str>) -> Option<Arc<PluginVersion>> {
        match pin {
            Some(sha256) => self.version(name, sha256),
            None => self.latest(name),
        }
    }

    pub fn last_load_error(&self, name: &str) -> Option<LoadFailure> {
        self.read(name, |entry| entry.last_load_error.clone())
    }

    /// Forgets a plugin and every version of it. Calls already running finish on the versions they hold.
    pub fn remove(&self, name: &str) -> bool {
        let mut plugins = self.plugins.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        plugins.remove(name).is_some()
    }

    /// Every plugin the registry has seen, loaded or only failed.
    pub fn names(&self) -> Vec<String> {
        let plugins = self.plugins.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        plugins.keys().cloned().collect()
    }

    pub fn snapshot(&self, name: &str) -> Option<PluginSnapshot> {
        self.read(name, |entry| {
            Some(PluginSnapshot {
                name: name.to_string(),
                latest: entry.versions.first().map(|v| v.sha256().to_string()),
                versions: entry.versions.iter().map(|v| v.stats()).collect(),
                last_load_error: entry.last_load_error.clone(),
            })
        })
    }

    pub fn snapshots(&self) -> Vec<PluginSnapshot> {
        self.names().iter().filter_map(|name| self.snapshot(name)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::valid_plugin_name;

    #[test]
    fn plugin_names_are_file_stems_safe_for_urls() {
        assert!(valid_plugin_name("amount-threshold_2"));
        for bad in ["", "../x", "a b", "a.wasm", &"x".repeat(65)] {
            assert!(!valid_plugin_name(bad), "{bad:?}");
        }
    }
}
