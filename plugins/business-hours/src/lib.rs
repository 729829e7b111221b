//! Retry policy: honour `Retry-After`, only retry inside business hours, give up after a maximum age.
//! Config (all optional): `{"open_hour": 9, "close_hour": 17, "days": [1, 2, 3, 4, 5], "utc_offset_minutes": 60,
//! "give_up_after_secs": 86400}`; `days` are ISO weekdays (Monday = 1).

use exports::switchyard::plugin::retry_policy::{Attempt, Decision, Guest};
use switchyard::plugin::types::Endpoint;
use switchyard_plugin_sdk as sdk;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub open_hour: u8,
    pub close_hour: u8,
    pub days: Vec<u8>,
    pub utc_offset_minutes: i32,
    pub give_up_after_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            open_hour: 9,
            close_hour: 17,
            days: vec![1, 2, 3, 4, 5],
            utc_offset_minutes: 0,
            give_up_after_secs: 86_400,
        }
    }
}

/// The plugin's decision, independent of the generated types so it is testable natively.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    RetryAfterMs(u64),
    GiveUp(String),
    UseDefault,
}

impl Config {
    fn parse(json: &str) -> Result<Config, String> {
        let config: Config = sdk::config(json)?;
        if config.open_hour >= config.close_hour || config.close_hour > 24 {
            return Err("invalid plugin config: need open_hour < close_hour <= 24".into());
        }
        if config.days.is_empty() || config.days.iter().any(|d| !(1..=7).contains(d)) {
            return Err("invalid plugin config: days must be ISO weekdays 1..=7, at least one".into());
        }
        Ok(config)
    }

    /// The earliest moment at or after `at_ms` (UTC) inside business hours.
    fn next_open_ms(&self, at_ms: u64) -> u64 {
        let offset = i64::from(self.utc_offset_minutes) * 60_000;
        let local = at_ms as i64 + offset;
        let today = local.div_euclid(DAY_MS);
        (0..=7)
            .map(|d| today + d)
            .filter(|day| self.days.contains(&(((day + 3).rem_euclid(7)) as u8 + 1)))
            .find_map(|day| {
                let open = day * DAY_MS + i64::from(self.open_hour) * HOUR_MS;
                let close = day * DAY_MS + i64::from(self.close_hour) * HOUR_MS;
                (close > local).then(|| (open.max(local) - offset).max(0) as u64)
            })
            .unwrap_or(at_ms)
    }
}

pub fn decide(since_first_ms: u64, now_ms: u64, retry_after: Option<&str>, config: &str) -> Result<Verdict, String> {
    let config = Config::parse(config)?;
    let limit_ms = config.give_up_after_secs.saturating_mul(1000);
    if since_first_ms >= limit_ms {
        return Ok(Verdict::GiveUp(format!("still failing after {} s", since_first_ms / 1000)));
    }
    let requested = retry_after.and_then(|value| sdk::retry_after_ms(value, now_ms));
    let earliest = now_ms.saturating_add(requested.unwrap_or(0));
    let delay = config.next_open_ms(earliest) - now_ms;
    if since_first_ms.saturating_add(delay) >= limit_ms {
        return Ok(Verdict::GiveUp(format!(
            "the next retry inside business hours would be past the {} s limit",
            config.give_up_after_secs
        )));
    }
    Ok(if requested.is_some() || delay > 0 { Verdict::RetryAfterMs(delay) } else { Verdict::UseDefault })
}

struct BusinessHours;

impl Guest for BusinessHours {
    fn decide(attempt: Attempt, endpoint: Endpoint) -> Decision {
        let retry_after = sdk::header(&attempt.headers, "retry-after");
        match decide(attempt.since_first_attempt_ms, attempt.now_ms, retry_after, &endpoint.config) {
            Ok(Verdict::RetryAfterMs(ms)) => Decision::RetryAfter(ms),
            Ok(Verdict::GiveUp(reason)) => Decision::GiveUp(reason),
            Ok(Verdict::UseDefault) => Decision::UseDefault,
            // A broken config must not silently stop retries: fall back to the endpoint's schedule.
            Err(message) => {
                switchyard::plugin::log::log(switchyard::plugin::log::Level::Error, &message);
                Decision::UseDefault
            }
        }
    }
}

sdk::retry_policy_plugin!(BusinessHours);

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2024-01-01 00:00 UTC.
    const MONDAY: u64 = 1_704_067_200_000;
    const H: u64 = 3_600_000;

    #[test]
    fn inside_hours_without_retry_after_uses_the_default() {
        assert_eq!(decide(0, MONDAY + 10 * H, None, "{}"), Ok(Verdict::UseDefault));
    }

    #[test]
    fn retry_after_is_honoured_inside_hours() {
        assert_eq!(decide(0, MONDAY + 10 * H, Some("120"), "{}"), Ok(Verdict::RetryAfterMs(120_000)));
    }

    #[test]
    fn outside_hours_defers_to_the_next_opening() {
        // Monday 18:00 → Tuesday 09:00.
        assert_eq!(decide(0, MONDAY + 18 * H, None, "{}"), Ok(Verdict::RetryAfterMs(15 * H)));
        // Saturday 10:00 → Monday 09:00.
        assert_eq!(
            decide(0, MONDAY + 5 * 24 * H + 10 * H, None, r#"{"give_up_after_secs": 999999}"#),
            Ok(Verdict::RetryAfterMs(47 * H))
        );
        // Retry-After landing after closing time is deferred too.
        assert_eq!(decide(0, MONDAY + 16 * H, Some("7200"), "{}"), Ok(Verdict::RetryAfterMs(17 * H)));
    }

    #[test]
    fn utc_offset_shifts_the_window() {
        // 08:00 UTC is 09:00 at UTC+1: open.
        assert_eq!(decide(0, MONDAY + 8 * H, None, r#"{"utc_offset_minutes": 60}"#), Ok(Verdict::UseDefault));
    }

    #[test]
    fn gives_up_after_the_configured_age() {
        let config = r#"{"give_up_after_secs": 3600}"#;
        assert!(matches!(decide(3_600_000, MONDAY + 10 * H, None, config), Ok(Verdict::GiveUp(_))));
        // A deferral past the limit gives up now rather than later.
        assert!(matches!(decide(0, MONDAY + 18 * H, None, config), Ok(Verdict::GiveUp(_))));
    }

    #[test]
    fn rejects_nonsense_config() {
        assert!(decide(0, MONDAY, None, r#"{"open_hour": 18, "close_hour": 9}"#).is_err());
        assert!(decide(0, MONDAY, None, r#"{"days": []}"#).is_err());
    }
}
