//! Each tenant's request rate on this node. A tenant whose keys go over `tenant_rate_limit` is answered 429 with a
//! `Retry-After` until its budget refills, so one tenant's flood of publishes or polling cannot take the node from
//! the others. The admin key is never limited: an operator must be able to act on a tenant that floods.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The budgets, by tenant id: of the tenants under the server's limit (none when tenants are not limited), and of
/// those given their own.
pub struct TenantLimits {
    server: Option<DefaultKeyedRateLimiter<String>>,
    /// Few: only the tenants an operator gave a limit of their own, each with the rate its budget was made for.
    own: Mutex<HashMap<String, (NonZeroU32, DefaultDirectRateLimiter)>>,
}

impl TenantLimits {
    /// `per_second` requests a second, in bursts of up to a second's worth (GCRA: an idle tenant's budget refills
    /// one request every `1 / per_second`).
    pub fn new(per_second: Option<NonZeroU32>) -> Self {
        TenantLimits {
            server: per_second.map(|rate| RateLimiter::keyed(Quota::per_second(rate))),
            own: Mutex::default(),
        }
    }

    /// Takes one request from the tenant's budget, under its own limit if it has one (`own_limit`), else the
    /// server's; when it is spent, says how long until the next one is allowed.
    pub fn check(&self, tenant_id: &str, own_limit: Option<NonZeroU32>) -> Result<(), Duration> {
        let Some(rate) = own_limit else {
            let Some(limiter) = &self.server else { return Ok(()) };
            return limiter
                .check_key(&tenant_id.to_string())
                .map_err(|refused| refused.wait_time_from(limiter.clock().now()));
        };
        let mut own = self.own.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // New, or its limit changed: a fresh budget at the new rate.
        if own.get(tenant_id).is_none_or(|(made_for, _)| *made_for != rate) {
            own.insert(tenant_id.to_string(), (rate, RateLimiter::direct(Quota::per_second(rate))));
        }
        let budget = &own[tenant_id].1;
        budget.check().map_err(|refused| refused.wait_time_from(budget.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_a_seconds_worth_at_once_and_then_waits() {
        let limits = TenantLimits::new(NonZeroU32::new(4));
        for n in 1..=4 {
            assert_eq!(limits.check("ten_a", None), Ok(()), "request {n} of the burst");
        }
        let wait = limits.check("ten_a", None).expect_err("the fifth request in the same instant");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(250), "{wait:?}");
        assert_eq!(limits.check("ten_b", None), Ok(()), "another tenant has its own budget");
        std::thread::sleep(wait);
        assert_eq!(limits.check("ten_a", None), Ok(()), "one request came back after the wait");
    }

    #[test]
    fn without_a_limit_every_request_passes() {
        let limits = TenantLimits::new(None);
        assert!((0..10_000).all(|_| limits.check("ten_a", None).is_ok()));
    }

    #[test]
    fn a_tenant_with_its_own_limit_is_held_to_it_whatever_the_servers() {
        let rate = |n| NonZeroU32::new(n);
        let limits = TenantLimits::new(rate(2));
        assert!((0..10).all(|_| limits.check("ten_big", rate(10)).is_ok()), "more than the server's");
        assert!(limits.check("ten_big", rate(10)).is_err());
        assert!(limits.check("ten_small", None).is_ok() && limits.check("ten_small", None).is_ok());
        assert!(limits.check("ten_small", None).is_err(), "the server's limit for the others");

        assert!(limits.check("ten_big", rate(3)).is_ok(), "a changed limit starts a fresh budget");
        assert!(limits.check("ten_big", rate(3)).is_ok() && limits.check("ten_big", rate(3)).is_ok());
        assert!(limits.check("ten_big", rate(3)).is_err());

        let unlimited = TenantLimits::new(None);
        assert!(unlimited.check("ten_small", rate(1)).is_ok(), "limited without a server limit");
        assert!(unlimited.check("ten_small", rate(1)).is_err());
        assert!((0..100).all(|_| unlimited.check("ten_other", None).is_ok()));
    }
}
