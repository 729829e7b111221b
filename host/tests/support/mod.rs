//! Shared test helpers for test binaries that use `mod support;`. (Binaries may also include a single helper
//! file with `#[path = "support/<file>.rs"]`, which is how the delivery tests use theirs.)

pub mod receiver;
pub mod server;
