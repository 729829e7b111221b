//! Host-side bindings generated from the contract in the repository's `wit/` folder: the single source of truth
//! shared with the guest SDK.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // Async exports let a call be cancelled while the guest waits in a WASI host call (a sleep, a poll), which
    // epoch interruption alone cannot reach; the deadline then covers everything.
    exports: { default: async },
});

pub use exports::switchyard::plugin::filter::{Decision as FilterDecision, GuestIndices as FilterIndices};
pub use exports::switchyard::plugin::retry_policy::{
    Attempt, Decision as RetryDecision, ErrorKind, GuestIndices as RetryPolicyIndices, Outcome,
};
pub use exports::switchyard::plugin::transform::{GuestIndices as TransformIndices, Request};
// `self::` because the generated module `switchyard` (the WIT namespace) shares its name with this crate, which
// doctests see as an extern crate: the bare path would be ambiguous there.
pub use self::switchyard::plugin::log::Level;
pub use self::switchyard::plugin::types::{Endpoint, Event};
