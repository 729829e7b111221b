//! Locates the example plugins built by `./tests/run` (`cargo build --target wasm32-wasip2 --release -p <plugin>`).
//! When they are missing the plugin tests skip with a message, except under `CI=true`, where that is a failure.
#![allow(dead_code)] // shared by several test binaries, each using a part

use std::path::PathBuf;

/// `target/wasm32-wasip2/release/<crate_name>.wasm` (honouring `CARGO_TARGET_DIR`).
fn wasm_path(crate_name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("wasm32-wasip2/release").join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// The bytes of a built example plugin, or `None` (after saying why) when it has not been built outside CI.
pub fn plugin_bytes(crate_name: &str) -> Option<Vec<u8>> {
    let path = wasm_path(crate_name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            let why = format!("{}: {e}; run ./tests/run (it builds the plugins for wasm32-wasip2)", path.display());
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but a plugin is missing: {why}");
            }
            eprintln!("SKIP: {why}");
            None
        }
    }
}

/// All the named plugins, or `None` if any is missing (see [`plugin_bytes`]).
pub fn plugins<const N: usize>(names: [&str; N]) -> Option<[Vec<u8>; N]> {
    let mut found = Vec::with_capacity(N);
    for name in names {
        found.push(plugin_bytes(name)?);
    }
    found.try_into().ok()
}
