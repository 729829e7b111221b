//! Precompiled component artifacts, cached in the data directory (never in the plugins directory, which operators
//! own) under a key of the component's sha256 and the engine's compatibility hash, so a wasmtime upgrade or a
//! changed engine configuration misses instead of loading an incompatible artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::errors::{EngineError, LoadError};

#[derive(Debug)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_hash: String,
}

/// Feeds `Hash` output into SHA-256 so the key is stable across Rust releases (unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ArtifactCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::CacheDir { path: dir.clone(), source })?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex::encode(&hasher.0.finalize()[..8]);
        Ok(ArtifactCache { dir, engine_hash })
    }

    pub(crate) fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    /// Returns the component and whether it came from the cache. A corrupt or unreadable cache entry is
    /// recompiled and overwritten; a failure to write the cache only costs the next load a compilation.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(Component, bool), LoadError> {
        let path = self.path_for(sha256);
        // Read into memory rather than `deserialize_file`'s mmap: a mapped file truncated by anyone (an operator
        // cleaning the data dir) would crash the process with SIGBUS.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: the file was written by `precompile_component` of an engine with the same compatibility
            // hash, into the data directory the host owns; wasmtime still checks its header and version.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, true)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring an unusable cached plugin artifact")
                }
            }
        }
        let artifact = engine.precompile_component(bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        if let Err(error) = write_atomically(&path, &artifact) {
            tracing::warn!(path = %path.display(), %error, "cannot cache a compiled plugin");
        }
        // SAFETY: the bytes were produced just above by this engine.
        let component =
            unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Ok((component, false))
    }
}

/// Readers never see a half-written artifact: write a temporary sibling, then rename over.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{:016x}", rand::random::<u64>()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
