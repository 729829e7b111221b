//! Plugins uploaded through the API reach every node. An upload is written to this node's plugins directory and
//! to the store, which keeps each plugin's latest upload or deletion; every node reads that list at start and
//! then every [`SYNC_INTERVAL`], and makes its own directory agree with it, as an upload to it would have.
//!
//! The newer wins: a row changed after the plugin's file in this node's directory was last written is applied
//! (the version installed, or for a deletion, every version unloaded and the file removed); a file written
//! after the row (copied into one node's directory by hand) is left alone. So a node that was down while a
//! plugin was uploaded or deleted catches up when it starts, and a file copied by hand overrides what was
//! uploaded before it, on that node only, until the next upload or deletion. Files are compared by their
//! modification time with the row's time, taken by the node that changed it: clocks should agree. A file written
//! by an upload or by this sync carries its row's time, so only a file copied by hand can be newer than its row
//! (and a copy that keeps its source's time, `cp -p` or `rsync -a`, is as old as that).
//!
//! Each row is acted on once per change while the node runs (a file copied by hand afterwards stays until the
//! next change), and again at its next start, by the same rule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::task::JoinHandle;

use super::errors::LoadError;
use super::registry::{valid_plugin_name, PluginRegistry};
use super::version::{sha256_hex, PluginVersion};
use crate::model::{new_id, Millis};
use crate::store::{PluginUpload, Store, StoreError};

/// How often each node reads the list of uploads: a tiny query, and a new version is live everywhere this soon.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Why a plugin could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The component did not load; the previous version stays live.
    #[error("the component was not loaded: {0}")]
    Load(#[from] LoadError),
    /// Loaded and live, but not written to the directory, so a restart would bring back the previous file.
    #[error("loaded, but cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub fn plugin_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.wasm"))
}

/// Compiles and validates `bytes` first, so a broken component never reaches the directory (where a restart would
/// find it instead of the version that works); then writes it atomically (temporary file, rename). The watcher
/// sees the new file and finds that version already loaded.
///
/// The file's modification time is set to `uploaded_at`, the time of the upload it copies (as stored in the
/// list), not when it was written: a change to the list made while this node compiled is then still newer than
/// the file, as the sync's rule needs.
pub async fn install(
    registry: &PluginRegistry,
    dir: &Path,
    name: &str,
    bytes: Vec<u8>,
    uploaded_at: Millis,
) -> Result<Arc<PluginVersion>, InstallError> {
    let target = plugin_file(dir, name);
    let temporary = dir.join(format!(".{}.upload", new_id(name)));
    let modified = UNIX_EPOCH + Duration::from_millis(u64::try_from(uploaded_at).unwrap_or(0));
    let persist = async {
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::write(&temporary, &bytes).await?;
        let file = tokio::fs::File::options().write(true).open(&temporary).await?.into_std().await;
        let file = tokio::task::spawn_blocking(move || file.set_modified(modified).and_then(|()| file.sync_all()))
            .await
            .map_err(std::io::Error::other)?;
        file?;
        tokio::fs::rename(&temporary, &target).await
    };
    match registry.load_and_persist(name, bytes.clone(), persist).await? {
        Ok(version) => Ok(version),
        Err(source) => {
            let _ = tokio::fs::remove_file(&temporary).await;
            Err(InstallError::Write { path: target, source })
        }
    }
}

/// Removes the plugin's file and unloads every version of it (calls in flight finish). Returns whether there was
/// either to remove.
pub async fn uninstall(registry: &PluginRegistry, dir: &Path, name: &str) -> std::io::Result<bool> {
    let target = plugin_file(dir, name);
    let file_removed = match tokio::fs::remove_file(&target).await {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    Ok(registry.remove(name) | file_removed)
}

/// Reads the uploads once, installing what this node lacks, then keeps reading them in a task of its own. The
/// first round runs before this returns, so bindings to an uploaded plugin validate at once on a fresh node; a
/// store that does not answer then only delays it to the next round.
pub async fn start(store: Arc<dyn Store>, registry: Arc<PluginRegistry>, dir: PathBuf) -> PluginSync {
    let mut applied = Applied::default();
    if let Err(e) = applied.round(store.as_ref(), &registry, &dir).await {
        tracing::warn!(error = %e, "could not read the plugins uploaded through the API; trying again shortly");
    }
    let task = tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(SYNC_INTERVAL).await;
            match applied.round(store.as_ref(), &registry, &dir).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "could not read the plugins uploaded through the API; retrying");
                }
                Err(_) => {}
            }
        }
    });
    PluginSync { task }
}

/// Stops reading the uploads when dropped.
#[derive(Debug)]
pub struct PluginSync {
    task: JoinHandle<()>,
}

impl Drop for PluginSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Each plugin's upload or deletion this node has acted on, by name. Its time is part of it: the same version
/// uploaded again (say, after this node's own API replaced it) is a change to act on.
#[derive(Default)]
struct Applied(HashMap<String, PluginUpload>);

impl Applied {
    async fn round(&mut self, store: &dyn Store, registry: &PluginRegistry, dir: &Path) -> Result<(), StoreError> {
        for upload in store.plugin_uploads().await? {
            if self.0.get(&upload.name) == Some(&upload) {
                continue;
            }
            if apply(store, registry, dir, &upload).await? {
                self.0.insert(upload.name.clone(), upload);
            }
        }
        Ok(())
    }
}

/// Acts on one upload or deletion. Returns false when it should be tried again next round.
async fn apply(
    store: &dyn Store,
    registry: &PluginRegistry,
    dir: &Path,
    upload: &PluginUpload,
) -> Result<bool, StoreError> {
    let name = upload.name.as_str();
    if !valid_plugin_name(name) {
        // Only a bug or a hand-edited table gets here; its name must not reach a path or the registry.
        tracing::warn!(plugin = ?name, "plugin upload under an invalid name ignored");
        return Ok(true);
    }
    let _changing = registry.changing().await;
    let file = plugin_file(dir, name);
    if modified_millis(&file).await.is_some_and(|modified| modified > upload.changed_at) {
        return Ok(true);
    }
    let running = registry.latest(name).map(|version| version.sha256().to_string());
    if upload.deleted {
        match uninstall(registry, dir, name).await {
            Ok(true) => tracing::info!(plugin = name, "plugin deleted through the API: unloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(plugin = name, error = %e, "could not remove a plugin deleted through the API");
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if running.as_deref() == Some(upload.sha256.as_str()) {
        return Ok(true);
    }
    // Replaced or deleted since the list was read: the next round sees what replaced it.
    let Some(bytes) = store.plugin_upload_wasm(name, &upload.sha256).await? else { return Ok(false) };
    if sha256_hex(&bytes) != upload.sha256 {
        tracing::error!(plugin = name, sha256 = %upload.sha256, "an uploaded plugin's stored bytes do not match \
        their sha256; not installed");
        return Ok(true);
    }
    match install(registry, dir, name, bytes, upload.changed_at).await {
        Ok(_) => tracing::info!(plugin = name, sha256 = %upload.sha256, "plugin uploaded through the API: installed"),
        // Recorded as the plugin's `last_load_error`; the same bytes would fail again.
        Err(InstallError::Load(_)) => {}
        // Live until the node restarts, which installs it again.
        Err(e @ InstallError::Write { .. }) => {
            tracing::error!(plugin = name, error = %e, "plugin uploaded through the API is live on this node, but \
            its file could not be written")
        }
    }
    Ok(true)
}

/// When `file` was last written, in milliseconds since the Unix epoch; `None` if it does not exist.
async fn modified_millis(file: &Path) -> Option<Millis> {
    let modified = tokio::fs::metadata(file).await.ok()?.modified().ok()?;
    let since_epoch = modified.duration_since(UNIX_EPOCH).ok()?;
    Some(i64::try_from(since_epoch.as_millis()).unwrap_or(Millis::MAX))
}
