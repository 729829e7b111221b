//! The WebAssembly plugins the `wasm` scenario installs: where their built components are and the figures the
//! router measured for them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// How the components are built (also run by `tests/run` before the smoke run).
pub const BUILD_COMMAND: &str = "cargo build --target wasm32-wasip2 --release \
     -p amount-threshold -p slack-message -p redact -p business-hours -p misbehave";

/// Filter: keeps events whose `amount` (1234 in every bench event) is above 100, i.e. all of them.
pub const FILTER: &str = "amount-threshold";
/// Transform: the body becomes the payload without `currency`.
pub const TRANSFORM: &str = "redact";
/// The payload field the transform removes (the publisher always sets it).
pub const REDACTED_FIELD: &str = "currency";

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else the one this binary was built into
/// (`<target>/<profile>/switchyard-bench`), else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf)) {
        if dir.join("wasm32-wasip2").is_dir() {
            return dir;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

/// Where the component of the plugin crate `name` (e.g. `amount-threshold`) is built.
pub fn component_path(name: &str) -> PathBuf {
    target_dir().join("wasm32-wasip2").join("release").join(format!("{}.wasm", name.replace('-', "_")))
}

/// Whether every component the `wasm` scenario needs is built.
pub fn components_built() -> bool {
    [FILTER, TRANSFORM].iter().all(|name| component_path(name).is_file())
}

pub fn read_component(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = component_path(name);
    std::fs::read(&path).with_context(|| {
        format!(
            "reading the `{name}` plugin component {}: build the plugins first with `{BUILD_COMMAND}` \
             (set CARGO_TARGET_DIR if they were built elsewhere)",
            path.display()
        )
    })
}

/// Per-call figures the router measured for one plugin version (`GET /api/v1/plugins/{name}`).
#[derive(Debug, Clone, Serialize)]
pub struct PluginCalls {
    pub plugin: String,
    pub sha256: String,
    pub calls: u64,
    pub errors: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}
