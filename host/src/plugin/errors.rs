//! Typed errors: what the registry records for a failed load and what a caller records for a failed call.

use std::path::PathBuf;
use std::time::Duration;

use super::PluginKind;

/// The engine could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Config(String),
    #[error("cannot create the plugin artifact cache {path}: {source}")]
    CacheDir { path: PathBuf, source: std::io::Error },
    #[error("cannot start the plugin deadline ticker: {0}")]
    Ticker(std::io::Error),
}

/// A plugin file could not become a live version. The previous version (if any) stays live.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("not a WebAssembly component (a core module or malformed file?): {0}")]
    Compile(String),
    #[error("the component imports something the host does not provide: {0}")]
    Link(String),
    #[error(
        "the component exports none of the plugin interfaces (switchyard:plugin/filter, transform or retry-policy \
         @0.1.0); build it against a world in wit/"
    )]
    NoInterface,
    #[error("the component's `{kind}` export does not match the contract: {message}")]
    Signature { kind: PluginKind, message: String },
    #[error("the component cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("the plugin name {0:?} is invalid: use letters, digits, `-` and `_`")]
    Name(String),
    #[error("compilation task failed: {0}")]
    Task(String),
}

/// A plugin call failed. The host is never affected; the caller records the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the plugin does not export `{0}`")]
    NotExported(PluginKind),
    #[error("input too large: {size} bytes (limit {limit})")]
    InputTooLarge { size: usize, limit: usize },
    #[error("the plugin exceeded its {} ms deadline", .0.as_millis())]
    Deadline(Duration),
    #[error("the plugin exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin returned an error: {0}")]
    Plugin(String),
    #[error("output too large: {size} bytes (limit {limit})")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    #[error("every plugin instance slot is busy; try again")]
    Busy,
    #[error("the plugin call task failed: {0}")]
    Task(String),
}

/// The plugins directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create the plugins directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot watch the plugins directory {path}: {message}")]
    Watch { path: PathBuf, message: String },
}
