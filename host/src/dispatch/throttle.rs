//! Endpoints' rate limits: when a rate-limited endpoint's delivery may be sent.
//!
//! A delivery that comes before its turn is not attempted: the dispatcher gives it back to the store due at its
//! turn, with no attempt recorded (see [`crate::store::Store::defer`]). Turns are handed out one interval apart,
//! so a backlog sent back in one claim comes due again at the endpoint's rate rather than all at once, and each
//! delivery is put off about once. The limit is per node: it lives in this process's memory.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// When a delivery may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    Now,
    /// From now.
    After(Duration),
}

pub(super) struct Throttle<C: Clock = DefaultClock> {
    clock: C,
    endpoints: HashMap<String, Paced<C>>,
}

struct Paced<C: Clock> {
    per_second: NonZeroU32,
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    /// The latest turn handed to a delivery put off.
    last_turn: Option<C::Instant>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

/// Bursts of up to a tenth of a second's worth, and at least 2: enough that deliveries due together, which a
/// claim takes together, go together, and that a delivery sent a little after its turn leaves the next one its
/// own (with bursts of 1, the next one, claimed on time, would come too early and be put off again); small enough
/// that no second sees much more than the limit.
fn quota(per_second: NonZeroU32) -> Quota {
    let burst = NonZeroU32::new((per_second.get() / 10).max(2)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

impl<C: Clock + Clone> Throttle<C> {
    pub fn with_clock(clock: C) -> Self {
        Self { clock, endpoints: HashMap::new() }
    }

    /// Takes a turn for one request to `endpoint_id`, whose limit is `per_second`: now if the limit allows,
    /// otherwise the first one after every turn already handed out.
    pub fn turn(&mut self, endpoint_id: &str, per_second: NonZeroU32) -> Turn {
        let paced = match self.endpoints.get_mut(endpoint_id) {
            // A changed limit starts afresh; the deliveries already put off keep their turns.
            Some(paced) if paced.per_second == per_second => paced,
            _ => {
                let limiter = RateLimiter::direct_with_clock(quota(per_second), self.clock.clone());
                let paced = Paced { per_second, limiter, last_turn: None };
                self.endpoints.insert(endpoint_id.to_string(), paced);
                self.endpoints.get_mut(endpoint_id).expect("just inserted")
            }
        };
        let Err(not_until) = paced.limiter.check() else {
            return Turn::Now;
        };
        let now = self.clock.now();
        let interval = Nanos::from(Duration::from_secs(1) / per_second.get());
        let earliest = not_until.earliest_possible();
        let turn = match paced.last_turn {
            Some(last) if last + interval > earliest => last + interval,
            _ => earliest,
        };
        paced.last_turn = Some(turn);
        Turn::After(Duration::from(turn.duration_since(now)))
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rate(per_second: u32) -> NonZeroU32 {
        NonZeroU32::new(per_second).unwrap()
    }

    #[test]
    fn within_the_burst_every_request_goes_now() {
        let mut throttle = Throttle::with_clock(FakeRelativeClock::default());
        let turns: Vec<_> = (0..10).map(|_| throttle.turn("ep_1", rate(100))).collect();
        assert_eq!(turns, vec![Turn::Now; 10]);
    }

    #[test]
    fn a_backlog_is_put_off_one_interval_apart() {
        let mut throttle = Throttle::with_clock(FakeRelativeClock::default());
        // 20 per second: 50 ms apart, bursts of 2.
        let turns: Vec<_> = (0..6).map(|_| throttle.turn("ep_1", rate(20))).collect();
        assert_eq!(
            turns,
            vec![
                Turn::Now,
                Turn::Now,
                Turn::After(50 * MS),
                Turn::After(100 * MS),
                Turn::After(150 * MS),
                Turn::After(200 * MS)
            ]
        );
    }

    #[test]
    fn put_off_deliveries_find_their_turn_free_when_it_comes() {
        let clock = FakeRelativeClock::default();
        let mut throttle = Throttle::with_clock(clock.clone());
        let first: Vec<_> = (0..5).map(|_| throttle.turn("ep_1", rate(10))).collect();
        let put_off = [Turn::After(100 * MS), Turn::After(200 * MS), Turn::After(300 * MS)];
        assert_eq!(first, [[Turn::Now, Turn::Now].as_slice(), &put_off].concat());
        // The first comes back 30 ms late for its turn, and leaves the next one its turn all the same.
        let mut now = Duration::ZERO;
        for back_at in [130, 200, 300] {
            clock.advance(back_at * MS - now);
            now = back_at * MS;
            assert_eq!(throttle.turn("ep_1", rate(10)), Turn::Now, "at {back_at} ms");
        }
    }

    #[test]
    fn endpoints_are_limited_apart() {
        let mut throttle = Throttle::with_clock(FakeRelativeClock::default());
        for endpoint in ["ep_1", "ep_2", "ep_1", "ep_2"] {
            assert_eq!(throttle.turn(endpoint, rate(1)), Turn::Now, "bursts of 2");
        }
        assert_eq!(throttle.turn("ep_1", rate(1)), Turn::After(1000 * MS));
        assert_eq!(throttle.turn("ep_2", rate(1)), Turn::After(1000 * MS));
    }

    #[test]
    fn a_changed_limit_applies_at_once() {
        let mut throttle = Throttle::with_clock(FakeRelativeClock::default());
        assert_eq!([throttle.turn("ep_1", rate(1)), throttle.turn("ep_1", rate(1))], [Turn::Now; 2]);
        assert_eq!(throttle.turn("ep_1", rate(1)), Turn::After(1000 * MS));
        assert_eq!(throttle.turn("ep_1", rate(1000)), Turn::Now);
    }

    #[test]
    fn no_second_sees_more_than_the_limit_and_its_burst() {
        let clock = FakeRelativeClock::default();
        let mut throttle = Throttle::with_clock(clock.clone());
        // Requests every millisecond for three seconds, against 50 per second.
        let mut sent_at = Vec::new();
        for ms in 0..3000u64 {
            if throttle.turn("ep_1", rate(50)) == Turn::Now {
                sent_at.push(ms);
            }
            clock.advance(MS);
        }
        let most_in_a_second =
            sent_at.iter().map(|&start| sent_at.iter().filter(|&&t| t >= start && t < start + 1000).count()).max();
        assert_eq!(most_in_a_second, Some(50 + 5 - 1));
        assert!(sent_at.len() <= 3 * 50 + 5, "{}", sent_at.len());
    }
}
