//! Each tenant's request rate on this node. A tenant whose keys go over `tenant_rate_limit` is answered 429 with a
//! `Retry-After` until its budget refills, so one tenant's flood of publishes or polling cannot take the node from
//! the others. The admin key is never limited: an operator must be able to act on a tenant that floods.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The budgets, by tenant id, or none when tenants are not limited.
pub struct TenantLimits(Option<DefaultKeyedRateLimiter<String>>);

impl TenantLimits {
    /// `per_second` requests a second, in bursts of up to a second's worth (GCRA: an idle tenant's budget refills
    /// one request every `1 / per_second`).
    pub fn new(per_second: Option<NonZeroU32>) -> Self {
        TenantLimits(per_second.map(|rate| RateLimiter::keyed(Quota::per_second(rate))))
    }

    /// Takes one request from the tenant's budget; when it is spent, says how long until the next one is allowed.
    pub fn check(&self, tenant_id: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else { return Ok(()) };
        limiter.check_key(&tenant_id.to_string()).map_err(|refused| refused.wait_time_from(limiter.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_a_seconds_worth_at_once_and_then_waits() {
        let limits = TenantLimits::new(NonZeroU32::new(4));
        for n in 1..=4 {
            assert_eq!(limits.check("ten_a"), Ok(()), "request {n} of the burst");
        }
        let wait = limits.check("ten_a").expect_err("the fifth request in the same instant");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(250), "{wait:?}");
        assert_eq!(limits.check("ten_b"), Ok(()), "another tenant has its own budget");
        std::thread::sleep(wait);
        assert_eq!(limits.check("ten_a"), Ok(()), "one request came back after the wait");
    }

    #[test]
    fn without_a_limit_every_request_passes() {
        let limits = TenantLimits::new(None);
        assert!((0..10_000).all(|_| limits.check("ten_a").is_ok()));
    }
}
