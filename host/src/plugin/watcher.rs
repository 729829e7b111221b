//! Hot reload: watches the plugins directory and loads every new or changed `<name>.wasm` once the writes to it
//! have settled. Deleting a file does not unload the plugin: work pinned to it must still resolve.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::errors::{LoadError, WatchError};
use super::registry::PluginRegistry;

/// Quiet time after the last change to a file before it is loaded: a copy arrives as several writes.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);

/// Stops watching when dropped.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("wasm"))
}

/// Loads one file. Failures are recorded in the registry, except a file whose name is no plugin name: it has no
/// entry to record them in, and without this warning it would simply never show up.
async fn load(registry: &PluginRegistry, path: &Path) {
    if let Err(error @ LoadError::Name(_)) = registry.load_file(path).await {
        tracing::warn!(file = %path.display(), %error, "plugin file ignored");
    }
}

impl PluginWatcher {
    /// Creates `dir` if needed, loads every `*.wasm` already in it, then keeps watching. Load failures are recorded
    /// in the registry, not returned. Must be called inside a Tokio runtime.
    pub async fn start(registry: Arc<PluginRegistry>, dir: PathBuf, debounce: Duration) -> Result<Self, WatchError> {
        std::fs::create_dir_all(&dir).map_err(|source| WatchError::CreateDir { path: dir.clone(), source })?;
        let watch_error = |e: notify::Error| WatchError::Watch { path: dir.clone(), message: e.to_string() };
        let (changes, mut changed) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Remove(_) | EventKind::Access(notify::event::AccessKind::Open(_))) {
                return;
            }
            for path in event.paths.into_iter().filter(|path| is_plugin_file(path)) {
                let _ = changes.send(path);
            }
        })
        .map_err(watch_error)?;
        // Watch before the initial scan so nothing written in between is missed.
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(watch_error)?;

        let mut existing: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|source| WatchError::CreateDir { path: dir.clone(), source })?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| is_plugin_file(path) && path.is_file())
            .collect();
        existing.sort();
        for path in existing {
            load(&registry, &path).await;
        }

        let task = tokio::spawn(async move {
            while let Some(first) = changed.recv().await {
                let mut pending = BTreeSet::from([first]);
                // Debounce: keep collecting until the directory has been quiet for `debounce`.
                while let Ok(Some(path)) = tokio::time::timeout(debounce, changed.recv()).await {
                    pending.insert(path);
                }
                for path in pending.into_iter().filter(|path| path.is_file()) {
                    load(&registry, &path).await;
                }
            }
        });
        Ok(PluginWatcher { _watcher: watcher, task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_files_end_in_wasm_in_any_case() {
        for name in ["a.wasm", "b.WASM", "dir/c.Wasm"] {
            assert!(is_plugin_file(Path::new(name)), "{name}");
        }
        for name in ["a.wat", "wasm", "a.wasm.tmp", "a"] {
            assert!(!is_plugin_file(Path::new(name)), "{name}");
        }
    }
}
