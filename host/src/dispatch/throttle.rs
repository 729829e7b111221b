//! Endpoints' rate limits: when a rate-limited endpoint's delivery may be sent.
//!
//! Every delivery to such an endpoint takes a turn, now or later, on a GCRA schedule: one interval (a second
//! divided by the limit) after the previous turn, with bursts of up to a tenth of a second's worth. A delivery
//! whose turn is later is not attempted: the dispatcher gives it back to the store due at its turn, with no
//! attempt recorded (see [`crate::store::Store::defer`]), and the turn stays reserved for it. When it comes back it
//! is sent without asking again, so a delivery is put off once, and those that arrived meanwhile take the turns
//! after it instead of its own.
//!
//! A delivery back late for its turn (the host is busy) makes the whole schedule slip by its lateness beyond the
//! burst tolerance: the turns after it keep their spacing instead of falling due together, and those already back
//! wait the difference. One back more than a second late (the endpoint was paused, a lease expired, another node
//! had it) lines up again like a fresh delivery instead: slipping by that much would stall every turn after it.
//!
//! An endpoint holds at most [`MAX_RESERVED`] reservations, about 170 bytes each in memory. A delivery beyond them
//! takes no turn: it is given back due when the turns reserved ahead of it, and the other deliveries already
//! beyond them, would have run out, and asks again then. A backlog of millions thus costs the memory of ten
//! thousand, and a delivery is given back about twice whatever the backlog's length: more when fresh deliveries
//! take turns freed ahead of one coming back, which then lines up again (the unit tests measure both).
//!
//! Hand-written rather than `governor`'s: a rate limiter answers "now, or not yet", where this must hand out
//! turns ahead and honour them later. The limit is per node: the schedule lives in this process's memory.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::model::Millis;

/// How early a delivery may come back for its turn and still take it: the store's clock and this one round
/// differently.
const EARLY: Duration = Duration::from_millis(5);
/// A reservation whose delivery has not come back this long after its turn is forgotten: another node took the
/// delivery, or it was deleted, retried or requeued by hand.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Lateness beyond which a turn no longer counts (see the module's documentation).
const SLIP_AT_MOST: Duration = Duration::from_secs(1);
/// Reservations an endpoint may hold (see the module's documentation).
const MAX_RESERVED: usize = 10_000;

/// When a delivery may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    Now,
    /// From now.
    After(Duration),
}

/// What a turn is asked for: the endpoint as the job carries it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit<'a> {
    pub endpoint_id: &'a str,
    pub per_second: NonZeroU32,
    /// The endpoint row's `updated_at`, so that a job carrying an older copy of the endpoint (handovers read a
    /// cache) does not undo a change another job brought.
    pub version: Millis,
}

pub(super) struct Throttle {
    endpoints: HashMap<String, Schedule>,
    max_reserved: usize,
    last_prune: Option<Instant>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self { endpoints: HashMap::new(), max_reserved: MAX_RESERVED, last_prune: None }
    }
}

/// Turns are planned on the schedule's own clock, which runs `behind` real time by as much as the schedule has
/// slipped.
struct Schedule {
    per_second: NonZeroU32,
    version: Millis,
    /// GCRA's theoretical arrival time: the turn after the last one handed out, were there no bursts.
    next: Option<Instant>,
    behind: Duration,
    /// Deliveries put off, by id, with their turn.
    reserved: HashMap<String, Instant>,
    /// When the deliveries given back beyond the reservations run out: the next one given back is due then.
    unreserved_until: Option<Instant>,
    last_sweep: Option<Instant>,
}

impl Schedule {
    fn new(per_second: NonZeroU32, version: Millis) -> Self {
        Self {
            per_second,
            version,
            next: None,
            behind: Duration::ZERO,
            reserved: HashMap::new(),
            unreserved_until: None,
            last_sweep: None,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_second.get()
    }

    /// How far ahead of the schedule a turn may be, so that deliveries due together, which a claim takes
    /// together, go together; small enough that no second sees more than a tenth more than the limit.
    fn burst_tolerance(&self) -> Duration {
        let burst = (self.per_second.get() / 10).max(1);
        self.interval() * (burst - 1)
    }

    /// Nothing reserved or given back ahead, and the last turn long past: a new schedule would hand out the same
    /// turns, so this one can go (its endpoint may well have been deleted). Its `version` goes with it, but no
    /// job carries a copy of the endpoint a minute old: handovers read a cache that lives a second.
    fn idle(&self, now: Instant) -> bool {
        let past =
            |at: Option<Instant>| at.is_none_or(|at| now.saturating_duration_since(at + self.behind) >= FORGET_AFTER);
        // Every reservation's turn is before `next`.
        past(self.next) && past(self.unreserved_until)
    }
}

impl Throttle {
    /// Forgets the schedule of an endpoint whose limit was lifted (`version` being the endpoint's `updated_at`
    /// without a limit), so that a limit set again starts afresh rather than behind the old backlog's turns.
    pub fn lifted(&mut self, endpoint_id: &str, version: Millis) {
        // Most deliveries come here, and most servers limit no endpoint: no hashing then.
        if self.endpoints.is_empty() {
            return;
        }
        if self.endpoints.get(endpoint_id).is_some_and(|schedule| schedule.version < version) {
            self.endpoints.remove(endpoint_id);
        }
    }

    /// The turn of delivery `delivery_id` to the endpoint `limit` describes, at `now`.
    pub fn turn(&mut self, limit: Limit<'_>, delivery_id: &str, now: Instant) -> Turn {
        // At most once a minute, like the sweep of reservations below.
        if self.last_prune.is_none_or(|at| now.saturating_duration_since(at) >= FORGET_AFTER) {
            self.endpoints.retain(|_, schedule| !schedule.idle(now));
            self.last_prune = Some(now);
        }
        let schedule = match self.endpoints.get_mut(limit.endpoint_id) {
            Some(schedule) if limit.version < schedule.version || limit.per_second == schedule.per_second => {
                schedule.version = schedule.version.max(limit.version);
                schedule
            }
            // New, or a changed limit: it applies at once, to every delivery from now on. Those put off keep
            // their turn in the store (an update of the limit brings it forward, see `update_endpoint`) but lose
            // their reservation here, so they line up again under the new limit.
            _ => {
                let schedule = Schedule::new(limit.per_second, limit.version);
                self.endpoints.insert(limit.endpoint_id.to_string(), schedule);
                self.endpoints.get_mut(limit.endpoint_id).expect("just inserted")
            }
        };
        // At most once a minute: a sweep reads every reservation, and a long backlog holds many.
        if schedule.last_sweep.is_none_or(|at| now.saturating_duration_since(at) >= FORGET_AFTER) {
            let behind = schedule.behind;
            schedule.reserved.retain(|_, turn| now.saturating_duration_since(*turn + behind) < FORGET_AFTER);
            schedule.last_sweep = Some(now);
        }
        if let Some(&reserved) = schedule.reserved.get(delivery_id) {
            let due = reserved + schedule.behind;
            if now + EARLY < due {
                // Back before its turn: the schedule slipped since it was put off.
                return Turn::After(due - now);
            }
            schedule.reserved.remove(delivery_id);
            // Late within the burst tolerance, the turns after it may still come on time: GCRA allows a request
            // that much early. Later than that, the schedule slips by the rest; far later, the turn is void.
            let slack = schedule.burst_tolerance().max(EARLY);
            let late = now.saturating_duration_since(due + slack);
            if late <= SLIP_AT_MOST {
                schedule.behind += late;
                return Turn::Now;
            }
        }
        let schedule_now = now.checked_sub(schedule.behind).unwrap_or(now);
        let next = schedule.next.unwrap_or(schedule_now);
        let turn = schedule_now.max(next.checked_sub(schedule.burst_tolerance()).unwrap_or(schedule_now));
        if turn > schedule_now && schedule.reserved.len() >= self.max_reserved {
            let back_at = schedule.unreserved_until.map_or(next, |until| until.max(next));
            schedule.unreserved_until = Some(back_at + schedule.interval());
            return Turn::After(back_at - schedule_now);
        }
        schedule.next = Some(next.max(turn) + schedule.interval());
        if turn <= schedule_now {
            return Turn::Now;
        }
        schedule.reserved.insert(delivery_id.to_string(), turn);
        Turn::After(turn - schedule_now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limit(per_second: u32) -> Limit<'static> {
        Limit { endpoint_id: "ep_1", per_second: NonZeroU32::new(per_second).unwrap(), version: 0 }
    }

    /// Turns for deliveries `dlv_<first>..`, all asked at `at`.
    fn turns(throttle: &mut Throttle, limit: Limit<'_>, ids: std::ops::Range<u32>, at: Instant) -> Vec<Turn> {
        ids.map(|n| throttle.turn(limit, &format!("dlv_{n}"), at)).collect()
    }

    /// What [`simulate`] saw.
    struct Simulated {
        /// When each delivery was sent, in ms.
        sent_at: Vec<u32>,
        /// How often each delivery was put off.
        put_off: HashMap<String, u32>,
        most_reserved: usize,
    }

    /// `millis` at 50 per second, a millisecond at a time: `backlog` deliveries at the start, then a new one every
    /// `arrive_every` ms (if any), and the deliveries put off asked again every `reclaim_every` ms once their turn
    /// has come.
    fn simulate(
        throttle: &mut Throttle,
        backlog: u32,
        arrive_every: Option<u32>,
        reclaim_every: u32,
        millis: u32,
    ) -> Simulated {
        let start = Instant::now();
        let mut seen = Simulated { sent_at: Vec::new(), put_off: HashMap::new(), most_reserved: 0 };
        let mut waiting: Vec<(Duration, String)> = Vec::new();
        for ms in 0..millis {
            let now = start + ms * MS;
            let mut asking: Vec<String> = Vec::new();
            if ms == 0 {
                asking.extend((0..backlog).map(|n| format!("dlv_backlog_{n}")));
            }
            if ms % reclaim_every == 0 {
                waiting.retain(|(due, id)| {
                    let back = *due <= ms * MS;
                    if back {
                        asking.push(id.clone());
                    }
                    !back
                });
            }
            if arrive_every.is_some_and(|every| ms % every == 0) {
                asking.push(format!("dlv_{ms}"));
            }
            for id in asking {
                match throttle.turn(limit(50), &id, now) {
                    Turn::Now => seen.sent_at.push(ms),
                    Turn::After(wait) => {
                        *seen.put_off.entry(id.clone()).or_default() += 1;
                        waiting.push((ms * MS + wait, id));
                    }
                }
            }
            let reserved = throttle.endpoints.get("ep_1").map_or(0, |schedule| schedule.reserved.len());
            seen.most_reserved = seen.most_reserved.max(reserved);
        }
        seen
    }

    /// The most of `sent_at` within any `window` ms.
    fn most_within(sent_at: &[u32], window: u32) -> Option<usize> {
        sent_at.iter().map(|&start| sent_at.iter().filter(|&&t| t >= start && t < start + window).count()).max()
    }

    #[test]
    fn within_the_burst_every_request_goes_now() {
        let mut throttle = Throttle::default();
        assert_eq!(turns(&mut throttle, limit(100), 0..10, Instant::now()), vec![Turn::Now; 10]);
    }

    #[test]
    fn a_backlog_is_put_off_one_interval_apart() {
        let mut throttle = Throttle::default();
        // 20 per second: 50 ms apart, bursts of 2.
        let expected = [Turn::Now, Turn::Now, Turn::After(50 * MS), Turn::After(100 * MS), Turn::After(150 * MS)];
        assert_eq!(turns(&mut throttle, limit(20), 0..5, Instant::now()), expected);
        // 5 per second: bursts of 1.
        let expected = [Turn::Now, Turn::After(200 * MS), Turn::After(400 * MS)];
        assert_eq!(turns(&mut throttle, Limit { endpoint_id: "ep_2", ..limit(5) }, 0..3, Instant::now()), expected);
    }

    #[test]
    fn a_delivery_put_off_keeps_its_turn_when_others_come_first() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(turns(&mut throttle, limit(10), 0..3, start)[1..], [Turn::After(100 * MS), Turn::After(200 * MS)]);
        // A fresh delivery before dlv_1 comes back lines up behind the reserved turns...
        assert_eq!(throttle.turn(limit(10), "dlv_fresh", start + 50 * MS), Turn::After(250 * MS));
        // ...and dlv_1 and dlv_2 take theirs.
        assert_eq!(throttle.turn(limit(10), "dlv_1", start + 102 * MS), Turn::Now);
        assert_eq!(throttle.turn(limit(10), "dlv_2", start + 200 * MS), Turn::Now);
        assert_eq!(throttle.turn(limit(10), "dlv_fresh", start + 301 * MS), Turn::Now);
        // A turn is taken once: the same delivery asking again lines up anew.
        assert_eq!(throttle.turn(limit(10), "dlv_fresh", start + 301 * MS), Turn::After(99 * MS));
    }

    #[test]
    fn a_delivery_back_before_its_turn_keeps_it() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(turns(&mut throttle, limit(10), 0..3, start)[2], Turn::After(200 * MS));
        assert_eq!(throttle.turn(limit(10), "dlv_2", start + 10 * MS), Turn::After(190 * MS));
        assert_eq!(throttle.turn(limit(10), "dlv_fresh", start + 10 * MS), Turn::After(290 * MS));
    }

    #[test]
    fn after_a_pause_the_turns_that_fell_due_keep_their_spacing() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        turns(&mut throttle, limit(10), 0..5, start);
        // Paused for a minute: all four come back at once on activation, line up again, and go 100 ms apart.
        let back = start + Duration::from_secs(60);
        let expected = [Turn::Now, Turn::After(100 * MS), Turn::After(200 * MS), Turn::After(300 * MS)];
        assert_eq!(turns(&mut throttle, limit(10), 1..5, back), expected);
        assert_eq!(throttle.turn(limit(10), "dlv_fresh", back), Turn::After(400 * MS), "fresh ones after them");
        assert_eq!(throttle.turn(limit(10), "dlv_2", back + 100 * MS), Turn::Now);
    }

    #[test]
    fn deliveries_back_late_do_not_bunch() {
        // A busy host: deliveries put off are claimed again only every 150 ms, so they come back late and several
        // at once.
        let sent_at = simulate(&mut Throttle::default(), 0, Some(4), 150, 3000).sent_at;
        assert!(most_within(&sent_at, 1000) <= Some(50 + 5 - 1), "{sent_at:?}");
        // GCRA's own bound on a shorter window: the burst, and one more for each interval it spans.
        assert!(most_within(&sent_at, 30) <= Some(5 + 1), "{sent_at:?}");
    }

    #[test]
    fn endpoints_are_limited_apart() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        let other = Limit { endpoint_id: "ep_2", ..limit(1) };
        assert_eq!([throttle.turn(limit(1), "a", now), throttle.turn(other, "b", now)], [Turn::Now; 2]);
        assert_eq!(throttle.turn(limit(1), "c", now), Turn::After(1000 * MS));
        assert_eq!(throttle.turn(other, "d", now), Turn::After(1000 * MS));
    }

    #[test]
    fn a_newer_limit_applies_at_once_and_an_older_copy_does_not_undo_it() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        let (slow, fast) = (Limit { version: 1, ..limit(1) }, Limit { version: 2, ..limit(1000) });
        assert_eq!(turns(&mut throttle, slow, 0..2, now), [Turn::Now, Turn::After(1000 * MS)]);
        assert_eq!(turns(&mut throttle, fast, 2..102, now), vec![Turn::Now; 100], "a fresh burst at the new limit");
        assert_eq!(throttle.turn(slow, "dlv_old_copy", now), Turn::After(MS), "paced at 1000/s, not 1/s");
        assert_eq!(throttle.turn(Limit { version: 3, ..limit(1) }, "dlv_x", now), Turn::Now, "newer again");
    }

    #[test]
    fn no_second_sees_more_than_the_limit_and_a_tenth() {
        // A new delivery every millisecond; each put off comes back at its turn.
        let sent_at = simulate(&mut Throttle::default(), 0, Some(1), 1, 3000).sent_at;
        assert_eq!(most_within(&sent_at, 1000), Some(50 + 5 - 1));
        assert_eq!(sent_at.len(), 5 + 3 * 50 - 1, "every turn used");
    }

    #[test]
    fn one_turn_taken_very_late_does_not_stall_the_others() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        // 50 per second: dlv_5 (turn at 20 ms) comes back half a minute late (another node had it, say), while
        // the others have taken their turns.
        turns(&mut throttle, limit(50), 0..20, start);
        for n in 6..20u32 {
            let id = format!("dlv_{n}");
            assert_eq!(throttle.turn(limit(50), &id, start + (n - 4) * 20 * MS), Turn::Now, "{id}");
        }
        let late = start + Duration::from_secs(30);
        assert_eq!(throttle.turn(limit(50), "dlv_5", late), Turn::Now, "lines up again, and the burst is free");
        assert_eq!(throttle.turn(limit(50), "dlv_fresh", late), Turn::Now, "no stall behind it");
    }

    #[test]
    fn a_limit_lifted_and_set_again_starts_afresh() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        let backlog = turns(&mut throttle, Limit { version: 1, ..limit(1) }, 0..3600, now);
        assert_eq!(backlog.last(), Some(&Turn::After(Duration::from_secs(3599))));
        throttle.lifted("ep_1", 0);
        assert_eq!(
            throttle.turn(Limit { version: 1, ..limit(1) }, "dlv_x", now),
            Turn::After(Duration::from_secs(3600))
        );
        throttle.lifted("ep_1", 2);
        assert_eq!(throttle.turn(Limit { version: 3, ..limit(1) }, "dlv_y", now), Turn::Now);
    }

    #[test]
    fn reservations_never_taken_are_forgotten() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        turns(&mut throttle, limit(1000), 0..200, start);
        let later = start + FORGET_AFTER + Duration::from_secs(1);
        turns(&mut throttle, limit(1000), 200..300, later);
        assert!(throttle.endpoints["ep_1"].reserved.keys().all(|id| id != "dlv_150"));
        assert!(throttle.endpoints["ep_1"].reserved.len() <= 100);
    }

    #[test]
    fn a_backlog_beyond_the_reservations_takes_no_memory_and_keeps_the_pace() {
        // 1,000 at once at 50 per second, at most 100 reserved: 20 s, and each given back at most twice.
        let mut throttle = Throttle { max_reserved: 100, ..Throttle::default() };
        let seen = simulate(&mut throttle, 1000, None, 1, 25_000);
        assert_eq!(seen.most_reserved, 100);
        assert_eq!(seen.sent_at.len(), 1000, "all sent");
        assert!(seen.sent_at[999] < 20_000, "{}", seen.sent_at[999]);
        assert!(most_within(&seen.sent_at, 1000) <= Some(50 + 5 - 1));
        assert!(seen.put_off.values().all(|&times| times <= 2), "{:?}", seen.put_off.values().max());

        // The same, with one more every 100 ms, half the limit. The fresh ones take turns freed ahead of some
        // given back, which then go round again: fewer than two puts-off a delivery all the same.
        let mut throttle = Throttle { max_reserved: 100, ..Throttle::default() };
        let seen = simulate(&mut throttle, 1000, Some(100), 1, 40_000);
        assert_eq!(seen.most_reserved, 100);
        assert_eq!(seen.sent_at.len(), 1000 + 400, "all sent");
        assert!(most_within(&seen.sent_at, 1000) <= Some(50 + 5 - 1));
        assert!(seen.put_off.values().sum::<u32>() < 2 * 1400, "{}", seen.put_off.values().sum::<u32>());
        assert!(seen.put_off.values().all(|&times| times <= 4), "{:?}", seen.put_off.values().max());
    }

    #[test]
    fn schedules_long_idle_are_dropped() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        turns(&mut throttle, limit(10), 0..3, start);
        let other = Limit { endpoint_id: "ep_2", ..limit(10) };
        turns(&mut throttle, other, 0..1, start + FORGET_AFTER);
        assert!(throttle.endpoints.contains_key("ep_1"), "a reservation's turn less than a minute ago");
        turns(&mut throttle, other, 1..2, start + 2 * FORGET_AFTER + Duration::from_secs(1));
        assert_eq!(throttle.endpoints.keys().collect::<Vec<_>>(), ["ep_2"]);
    }
}
