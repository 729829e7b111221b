//! A cap on each endpoint's attempts in flight in this process, so that one slow receiver cannot hold every
//! dispatch slot while other endpoints' deliveries wait behind its backlog.
//!
//! A delivery to an endpoint at its cap is not attempted: like one put off for a rate limit, it goes back to the
//! store, due when a slot of its endpoint should be free, with no attempt recorded. Putting it off (rather than
//! keeping it here) is what lets claims reach other endpoints' deliveries: claims take deliveries in due order,
//! and a slow endpoint's backlog would otherwise stay first in line.
//!
//! When a slot should be free is estimated from the endpoint's attempts: slots free up about `cap` per attempt
//! duration, so the deliveries put off take turns that far apart, one after the other. The duration is the
//! average of the attempts finished lately, or the age of the oldest one still running if that is longer: a
//! receiver that stopped answering finishes nothing to average. An estimate that comes out short only costs a
//! delivery being put off again when it comes back. One that comes out long, because the receiver answers
//! quickly again (an attempt takes less than a quarter of the duration the line was planned with), would keep the
//! backlog waiting for turns planned for a slow receiver: the line is dropped, and the dispatcher has the store
//! bring the endpoint's deliveries put off forward ([`crate::store::Store::bring_forward`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Shortest attempt duration assumed, so a burst before any attempt has finished is not put off by nothing.
const MIN_DURATION: Duration = Duration::from_millis(1);
/// Weight of the newest attempt in the average duration.
const AVERAGE_WEIGHT: f64 = 0.125;
/// An endpoint with nothing running or put off is forgotten this long after its last attempt ended (the endpoint
/// may well be gone); its average goes with it.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// What [`EndpointCaps::admit`] decides for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Attempt it now; hand the ticket back to [`EndpointCaps::finished`] when the attempt ends.
    Start(Ticket),
    /// Put it off for this long.
    PutOff(Duration),
}

/// One attempt admitted, by the order it was admitted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket(u64);

pub(super) struct EndpointCaps {
    /// None: no endpoint can reach it (it is at least the dispatch concurrency), so nothing is tracked.
    cap: Option<usize>,
    endpoints: HashMap<String, Load>,
    next_ticket: u64,
    last_prune: Option<Instant>,
}

#[derive(Default)]
struct Load {
    /// Attempts running, by ticket (in the order they started), with when they started.
    running: BTreeMap<u64, Instant>,
    average: Option<Duration>,
    /// The turn after the last one handed out to a delivery put off.
    next_turn: Option<Instant>,
    /// The attempt duration that turn was planned with.
    planned_with: Option<Duration>,
    last_ended: Option<Instant>,
}

impl Load {
    fn idle(&self, now: Instant) -> bool {
        let past = |at: Option<Instant>| at.is_none_or(|at| now.saturating_duration_since(at) >= FORGET_AFTER);
        self.running.is_empty() && past(self.next_turn) && past(self.last_ended)
    }
}

impl EndpointCaps {
    pub fn new(cap: usize, concurrency: usize) -> Self {
        let cap = (cap < concurrency).then_some(cap.max(1));
        Self { cap, endpoints: HashMap::new(), next_ticket: 0, last_prune: None }
    }

    /// Whether a delivery to `endpoint_id` may be attempted `now`, or how long to put it off.
    pub fn admit(&mut self, endpoint_id: &str, now: Instant) -> Admission {
        let Some(cap) = self.cap else { return Admission::Start(Ticket(0)) };
        // At most once a minute: a prune reads every endpoint's entry.
        if self.last_prune.is_none_or(|at| now.saturating_duration_since(at) >= FORGET_AFTER) {
            self.endpoints.retain(|_, load| !load.idle(now));
            self.last_prune = Some(now);
        }
        let load = match self.endpoints.get_mut(endpoint_id) {
            Some(load) => load,
            None => self.endpoints.entry(endpoint_id.to_string()).or_default(),
        };
        if load.running.len() < cap {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            load.running.insert(ticket, now);
            return Admission::Start(Ticket(ticket));
        }
        let oldest = load.running.first_key_value().map_or(Duration::ZERO, |(_, &started)| now - started);
        let duration = load.average.unwrap_or(Duration::ZERO).max(oldest).max(MIN_DURATION);
        let spacing = duration / u32::try_from(cap).unwrap_or(u32::MAX);
        // The first slot should free up within one spacing of now; later ones line up behind the turns already
        // handed out.
        let turn = load.next_turn.filter(|&turn| turn > now).unwrap_or(now) + spacing;
        load.next_turn = Some(turn);
        load.planned_with = Some(duration);
        Admission::PutOff(turn - now)
    }

    /// An attempt admitted with `ticket` for `endpoint_id` has ended. Returns whether the deliveries put off for
    /// the endpoint should be brought forward: the attempt was much quicker than their turns were planned for.
    pub fn finished(&mut self, endpoint_id: &str, ticket: Ticket, now: Instant) -> bool {
        let Some(load) = self.endpoints.get_mut(endpoint_id) else { return false };
        let Some(started) = load.running.remove(&ticket.0) else { return false };
        let took = now.saturating_duration_since(started);
        load.last_ended = Some(now);
        let line_ahead = load.next_turn.is_some_and(|turn| turn > now);
        if line_ahead && load.planned_with.is_some_and(|planned| took * 4 < planned) {
            load.next_turn = None;
            load.planned_with = None;
            // The slow attempts' durations would plan the next line as long as the last one.
            load.average = Some(took);
            return true;
        }
        load.average = Some(match load.average {
            None => took,
            Some(average) => average.mul_f64(1.0 - AVERAGE_WEIGHT) + took.mul_f64(AVERAGE_WEIGHT),
        });
        false
    }

    /// Gives back the slot of an attempt admitted with `ticket` that did not start after all.
    pub fn cancel(&mut self, endpoint_id: &str, ticket: Ticket) {
        if let Some(load) = self.endpoints.get_mut(endpoint_id) {
            load.running.remove(&ticket.0);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.endpoints.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn started(admission: Admission) -> Ticket {
        match admission {
            Admission::Start(ticket) => ticket,
            Admission::PutOff(wait) => panic!("put off for {wait:?}"),
        }
    }

    fn put_off(admission: Admission) -> Duration {
        match admission {
            Admission::PutOff(wait) => wait,
            Admission::Start(_) => panic!("started"),
        }
    }

    #[test]
    fn a_cap_no_endpoint_can_reach_tracks_nothing() {
        let mut caps = EndpointCaps::new(4, 4);
        let now = Instant::now();
        let tickets: Vec<Ticket> = (0..8).map(|_| started(caps.admit("e", now))).collect();
        assert_eq!(caps.tracked(), 0);
        assert!(!caps.finished("e", tickets[0], now));
    }

    #[test]
    fn an_endpoint_runs_up_to_its_cap_and_others_are_not_held_up() {
        let mut caps = EndpointCaps::new(2, 100);
        let now = Instant::now();
        let first = started(caps.admit("slow", now));
        started(caps.admit("slow", now));
        put_off(caps.admit("slow", now));
        // Another endpoint has its own slots.
        started(caps.admit("fast", now));
        started(caps.admit("fast", now));
        // A slot freed is taken again.
        caps.finished("slow", first, now + 10 * MS);
        started(caps.admit("slow", now + 10 * MS));
        put_off(caps.admit("slow", now + 10 * MS));
    }

    #[test]
    fn deliveries_put_off_take_turns_a_share_of_the_attempt_duration_apart() {
        let mut caps = EndpointCaps::new(4, 100);
        let start = Instant::now();
        // Attempts of 400 ms: slots free up one per 100 ms.
        let tickets: Vec<Ticket> = (0..4).map(|_| started(caps.admit("e", start))).collect();
        let done = start + 400 * MS;
        for ticket in tickets {
            caps.finished("e", ticket, done);
        }
        for _ in 0..4 {
            started(caps.admit("e", done));
        }
        let waits: Vec<Duration> = (0..3).map(|_| put_off(caps.admit("e", done))).collect();
        assert_eq!(waits, [100 * MS, 200 * MS, 300 * MS]);
    }

    #[test]
    fn a_receiver_that_stopped_answering_puts_deliveries_off_by_how_long_it_has_been_silent() {
        let mut caps = EndpointCaps::new(2, 100);
        let start = Instant::now();
        // Fast at first: the average is 2 ms.
        let quick = started(caps.admit("e", start));
        caps.finished("e", quick, start + 2 * MS);
        started(caps.admit("e", start + 2 * MS));
        started(caps.admit("e", start + 2 * MS));
        // Ten seconds later neither attempt has ended: a slot is not expected in a millisecond.
        let later = start + Duration::from_secs(10);
        let wait = put_off(caps.admit("e", later));
        assert!(wait >= Duration::from_secs(4), "{wait:?}");
    }

    #[test]
    fn a_turn_in_the_past_is_not_held_against_later_deliveries() {
        let mut caps = EndpointCaps::new(1, 100);
        let start = Instant::now();
        started(caps.admit("e", start));
        let first = put_off(caps.admit("e", start));
        // Much later, still at the cap: the wait counts from now, not from the old turn.
        let later = start + Duration::from_secs(60);
        let wait = put_off(caps.admit("e", later));
        assert!(first <= MIN_DURATION && wait >= Duration::from_secs(59), "{first:?} {wait:?}");
    }

    #[test]
    fn a_receiver_quick_again_has_its_line_dropped_once() {
        let mut caps = EndpointCaps::new(2, 100);
        let start = Instant::now();
        let held: Vec<Ticket> = (0..2).map(|_| started(caps.admit("e", start))).collect();
        // Held for 5 s: a backlog put off then lines up 2.5 s apart.
        let held_until = start + Duration::from_secs(5);
        let waits: Vec<Duration> = (0..3).map(|_| put_off(caps.admit("e", held_until))).collect();
        assert_eq!(waits[2], Duration::from_millis(7_500));
        // The held attempts ending as slowly as planned change nothing.
        assert!(!caps.finished("e", held[0], held_until));
        assert!(!caps.finished("e", held[1], held_until));
        // One taking 10 ms does: the line goes, and the next one is planned with its duration.
        let quick = started(caps.admit("e", held_until));
        assert!(caps.finished("e", quick, held_until + 10 * MS));
        let again = held_until + 10 * MS;
        started(caps.admit("e", again));
        started(caps.admit("e", again));
        assert_eq!(put_off(caps.admit("e", again)), 5 * MS);
        // A receiver as slow as its line was planned for keeps it.
        let slow = caps.endpoints["e"].running.keys().copied().next().unwrap();
        assert!(!caps.finished("e", Ticket(slow), again + 10 * MS));
    }

    #[test]
    fn an_endpoint_idle_for_a_minute_is_forgotten() {
        let mut caps = EndpointCaps::new(1, 100);
        let start = Instant::now();
        let ticket = started(caps.admit("idle", start));
        caps.finished("idle", ticket, start + MS);
        // A ticket seen twice, or of an endpoint not tracked, changes nothing.
        caps.finished("idle", ticket, start + MS);
        caps.finished("gone", ticket, start + MS);
        let busy = started(caps.admit("busy", start));
        let cancelled = started(caps.admit("cancelled", start));
        caps.cancel("cancelled", cancelled);
        assert_eq!(caps.tracked(), 3);
        // A minute on, only the endpoint with an attempt still running is kept.
        let later = start + FORGET_AFTER + MS;
        started(caps.admit("new", later));
        assert_eq!(caps.tracked(), 2);
        caps.finished("busy", busy, later);
        assert!(caps.endpoints.contains_key("busy"));
    }
}
