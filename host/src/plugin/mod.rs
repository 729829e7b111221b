//! The WebAssembly plugin host: platform teams write components against the contract in `wit/` (filter, transform,
//! retry policy); operators drop `<name>.wasm` files into a plugins directory and the [`PluginRegistry`] compiles,
//! validates and hot-swaps them.
//!
//! * [`PluginEngine`]: one `wasmtime::Engine` (pooling allocator, epoch interruption) plus the limits every call
//!   runs under and the precompiled-artifact cache in the data directory.
//! * [`PluginVersion`]: one compiled, validated version of a plugin (identified by the sha256 of its bytes). Calls
//!   run in a fresh store each time; hold the `Arc` and a call finishes on the version it started with. Calls are
//!   async: the deadline covers instantiation, guest code (epoch interruption, yielding every tick so a runtime
//!   worker is never held) and time spent waiting in WASI host calls (the call future is dropped).
//! * [`PluginRegistry`]: name → latest version, every loaded version by sha256, last load error, per-version stats.
//! * [`PluginWatcher`]: watches the plugins directory and feeds the registry.
//! * [`sync`]: installs on every node the plugins uploaded through the API to any of them.
//! * [`bound`]: runs the plugins an endpoint binds (shared by the dispatcher and simulate).

mod bindings;
pub mod bound;
mod cache;
mod engine;
mod errors;
mod registry;
mod stats;
pub mod sync;
mod validate;
mod version;
mod watcher;

use std::time::Duration;

pub use bindings::{Attempt, Endpoint, ErrorKind, Event, FilterDecision, Level, Outcome, Request, RetryDecision};
pub use engine::PluginEngine;
pub use errors::{CallError, EngineError, LoadError, WatchError};
pub use registry::{valid_plugin_name, LoadFailure, PluginRegistry, PluginSnapshot, DEFAULT_KEPT_VERSIONS};
pub use stats::{LogLine, VersionStatsSnapshot};
pub use version::PluginVersion;
pub use watcher::{PluginWatcher, DEFAULT_DEBOUNCE};

/// The interfaces of the contract a component can export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Filter,
    Transform,
    RetryPolicy,
}

impl PluginKind {
    pub const ALL: [PluginKind; 3] = [PluginKind::Filter, PluginKind::Transform, PluginKind::RetryPolicy];

    /// The kind's name in the contract (and in the API).
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Filter => "filter",
            PluginKind::Transform => "transform",
            PluginKind::RetryPolicy => "retry-policy",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every plugin call runs under. The defaults suit small, fast plugins on the delivery path.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Linear memory a single call may grow to.
    pub memory_bytes: usize,
    /// Wall-clock budget of one call (enforced by epoch interruption), not CPU time: a call descheduled on a busy
    /// host can miss it.
    pub deadline: Duration,
    /// Largest accepted input: payload plus endpoint config plus the other strings of the call.
    pub max_input_bytes: usize,
    /// Largest accepted output: a transform's body plus headers, an error message, a give-up reason.
    pub max_output_bytes: usize,
    /// How many calls may run at the same time (instance slots reserved by the pooling allocator); further calls
    /// wait for a slot.
    pub max_concurrent_calls: u32,
    /// Log lines one call may emit; later ones are counted but dropped.
    pub max_log_lines_per_call: usize,
    /// Longer log messages are truncated.
    pub max_log_line_bytes: usize,
    /// Recent log lines kept per version.
    pub log_ring_size: usize,
}

/// Room beyond an event's payload in a plugin's input and output: the endpoint's config (at most 64 KiB), its URL
/// (at most 2 KiB), the ids and the event type; or a transform's headers and content type.
const BEYOND_PAYLOAD_BYTES: usize = 128 << 10;

impl PluginLimits {
    /// These limits with input and output caps large enough for any event the API accepts: otherwise a payload
    /// near `max_payload_bytes` would fail every plugin call, deterministically, for the whole retry schedule.
    pub fn admitting_payloads(mut self, max_payload_bytes: usize) -> Self {
        let needed = max_payload_bytes.saturating_add(BEYOND_PAYLOAD_BYTES);
        self.max_input_bytes = self.max_input_bytes.max(needed);
        self.max_output_bytes = self.max_output_bytes.max(needed);
        self
    }
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 32 << 20,
            deadline: Duration::from_millis(50),
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_concurrent_calls: 64,
            max_log_lines_per_call: 20,
            max_log_line_bytes: 1024,
            log_ring_size: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_admit_the_largest_payload_the_api_accepts() {
        let shipped = PluginLimits::default().admitting_payloads(1 << 20);
        assert!(shipped.max_input_bytes >= (1 << 20) + (64 << 10) + 2048, "payload, config and URL fit");
        assert_eq!(shipped.max_input_bytes, shipped.max_output_bytes);
        let large = PluginLimits::default().admitting_payloads(32 << 20);
        assert!(large.max_input_bytes > 32 << 20 && large.max_output_bytes > 32 << 20);
        let small = PluginLimits::default().admitting_payloads(1024);
        assert_eq!(small.max_input_bytes, PluginLimits::default().max_input_bytes, "never below the default");
    }
}
