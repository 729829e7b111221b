//! Test-only plugin exporting all three interfaces, misbehaving as its config says:
//! `{"mode": "ok" | "trap" | "loop" | "memory" | "oversized" | "invalid-json" | "bad-header" | "log" | "spin" | "sleep" | "error",
//!   "count": N}` (`count`: log lines for `log`, iterations for `spin`).

use exports::switchyard::plugin::filter::{Decision as FilterDecision, Guest as Filter};
use exports::switchyard::plugin::retry_policy::{Attempt, Decision as RetryDecision, Guest as RetryPolicy};
use exports::switchyard::plugin::transform::{Guest as Transform, Request};
use switchyard::plugin::log::{log, Level};
use switchyard::plugin::types::{Endpoint, Event};
use switchyard_plugin_sdk as sdk;

#[derive(serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Ok,
    Trap,
    Loop,
    Memory,
    Oversized,
    InvalidJson,
    BadHeader,
    Log,
    Spin,
    Sleep,
    Error,
}

#[derive(serde::Deserialize)]
struct Config {
    mode: Mode,
    #[serde(default)]
    count: u64,
}

pub fn config(json: &str) -> Result<(Mode, u64), String> {
    let config: Config = sdk::config(json)?;
    Ok((config.mode, config.count))
}

/// Modes that misbehave the same way whatever the interface; returns normally only for the others.
fn act(mode: Mode, count: u64) -> Result<(), String> {
    match mode {
        Mode::Trap => panic!("misbehave: trap on purpose"),
        Mode::Loop => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Mode::Memory => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        Mode::Spin => {
            let mut n = 0u64;
            for i in 0..count {
                n = std::hint::black_box(n.wrapping_add(i));
            }
            std::hint::black_box(n);
        }
        // Waits in a WASI host call, where epoch interruption cannot reach it.
        Mode::Sleep => std::thread::sleep(std::time::Duration::from_secs(60)),
        Mode::Log => (0..count).for_each(|i| log(Level::Info, &format!("line {i}"))),
        Mode::Error => return Err("misbehave: failing on purpose".into()),
        Mode::Oversized => return Err("x".repeat(2 << 20)),
        Mode::Ok | Mode::InvalidJson | Mode::BadHeader => {}
    }
    Ok(())
}

struct Misbehave;

impl Filter for Misbehave {
    fn filter(_event: Event, endpoint: Endpoint) -> Result<FilterDecision, String> {
        let (mode, count) = config(&endpoint.config)?;
        act(mode, count)?;
        Ok(FilterDecision::Keep)
    }
}

impl Transform for Misbehave {
    fn transform(event: Event, endpoint: Endpoint) -> Result<Request, String> {
        let (mode, count) = config(&endpoint.config)?;
        let json = |body: Vec<u8>, headers| Request { body, content_type: "application/json".into(), headers };
        match mode {
            Mode::Oversized => Ok(json(format!("\"{}\"", "x".repeat(2 << 20)).into_bytes(), Vec::new())),
            Mode::InvalidJson => Ok(json(b"{\"unterminated\": ".to_vec(), Vec::new())),
            Mode::BadHeader => {
                Ok(json(event.payload.into_bytes(), vec![("webhook-signature".into(), "v1,forged".into())]))
            }
            _ => {
                act(mode, count)?;
                Ok(json(event.payload.into_bytes(), Vec::new()))
            }
        }
    }
}

impl RetryPolicy for Misbehave {
    fn decide(_attempt: Attempt, endpoint: Endpoint) -> RetryDecision {
        match config(&endpoint.config).and_then(|(mode, count)| act(mode, count)) {
            Ok(()) => RetryDecision::UseDefault,
            Err(reason) => RetryDecision::GiveUp(reason),
        }
    }
}

sdk::plugin!(Misbehave);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!(config(r#"{"mode": "invalid-json"}"#), Ok((Mode::InvalidJson, 0)));
        assert_eq!(config(r#"{"mode": "spin", "count": 5}"#), Ok((Mode::Spin, 5)));
        assert!(config(r#"{"mode": "explode"}"#).is_err());
    }

    #[test]
    fn harmless_modes_return() {
        assert_eq!(act(Mode::Spin, 1000), Ok(()));
        assert!(act(Mode::Error, 0).is_err());
        assert_eq!(act(Mode::Oversized, 0).unwrap_err().len(), 2 << 20);
    }
}
