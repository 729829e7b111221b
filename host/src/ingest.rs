//! The publish side of a group commit (see [`writer`](crate::writer)): each event is matched against its
//! tenant's active endpoints, getting one delivery per match, and the deliveries the dispatcher can start at once
//! are leased to this node ([`Handover`]) so they need no claim: right after the commit they are handed over.
//! The others are stored waiting and claimed as usual.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::dispatch::Handoff;
use crate::hourly::HourlyTally;
use crate::model::{new_id_at, now_millis, Delivery, DeliveryStatus, Endpoint, Event};
use crate::routing::{is_reserved_event_type, FilterCache, FilterVerdicts};
use crate::secrets::SigningSecrets;
use crate::store::{
    secrets_by_endpoint, AttemptOutcome, DispatchJob, JobEndpoint, JobEvent, NewDelivery, NewEvent, Published, Store,
    StoreError, StoreResult,
};

pub(crate) type PublishReply = oneshot::Sender<StoreResult<Vec<Published>>>;

/// Payload bytes of filter work a request may leave to the writer (see [`Publishes::fan_out`]): about as much as
/// the request would have done inline.
const WRITER_FILTER_ALLOWANCE: usize = 32 << 10;

/// Where a publish request's events go.
#[derive(Debug, Clone)]
pub enum Route {
    /// To every active endpoint of the tenant whose subscriptions select the event, as the writer reads them,
    /// with what verdicts the caller has (by position). The writer evaluates the filters missing from them, within
    /// [`WRITER_FILTER_ALLOWANCE`] per request. For callers without a snapshot of the endpoints; the API's
    /// publishes use [`Route::Matched`].
    Subscriptions(Vec<FilterVerdicts>),
    /// As the request matched the events: against the tenant's endpoints as it read them (`endpoints`), with
    /// each event's verdicts of all their filters. Delivered to those of them still active at the commit; an
    /// endpoint created in between gets none, as if it came after the event.
    Matched { endpoints: Arc<Vec<Endpoint>>, verdicts: Vec<FilterVerdicts> },
    /// To this endpoint alone, if it is active, whatever its subscriptions (a test event).
    Only(String),
}

/// The publishes of one group commit, fanned out.
pub(crate) struct Publishes {
    /// Every request's events, in request order.
    events: Vec<NewEvent>,
    /// Which of `events` are each request's, and where its answer goes.
    requests: Vec<(Range<usize>, PublishReply)>,
    /// The active endpoints they were matched against, by tenant: handed-over jobs carry theirs.
    endpoints: HashMap<String, Arc<Vec<Endpoint>>>,
    handover: Handover,
}

impl Publishes {
    /// Fans the requests out. If the endpoints cannot be read, every request is answered with the error and
    /// nothing is left to publish.
    pub(crate) async fn fan_out(
        store: &dyn Store,
        filters: &mut FilterCache,
        dispatch: Option<&Handoff>,
        requests: Vec<(Vec<Event>, Route, PublishReply)>,
    ) -> Self {
        let tenants: BTreeSet<String> =
            requests.iter().flat_map(|(events, _, _)| events.iter().map(|e| e.tenant_id.clone())).collect();
        let mut endpoints: HashMap<String, Arc<Vec<Endpoint>>> = HashMap::new();
        for tenant_id in tenants {
            match store.active_endpoints(&tenant_id).await {
                Ok(found) => endpoints.insert(tenant_id, found),
                Err(e) => {
                    let message = e.to_string();
                    for (_, _, reply) in requests {
                        let _ = reply
                            .send(Err(StoreError::Unavailable(format!("cannot read the active endpoints: {message}"))));
                    }
                    return Publishes::empty();
                }
            };
        }
        let mut publishes = Publishes { endpoints, ..Publishes::empty() };
        let no_verdicts = FilterVerdicts::new();
        for (events, route, reply) in requests {
            if let Route::Only(endpoint_id) = &route {
                // Not stored at all rather than stored with no delivery: the caller asked for that one endpoint.
                let tenant = events.first().map(|e| e.tenant_id.as_str()).unwrap_or_default();
                let active =
                    publishes.endpoints.get(tenant).is_some_and(|found| found.iter().any(|e| e.id == *endpoint_id));
                if !active {
                    let _ = reply.send(Err(StoreError::Conflict(format!(
                        "endpoint {endpoint_id} is not active (paused, disabled or deleted; another node's change \
                         shows here within a second)"
                    ))));
                    continue;
                }
            }
            // Filters missing from the verdicts (only a caller without a snapshot leaves any) are evaluated here
            // only up to this much payload in all: beyond it the request is sent back, rather than hold every tenant.
            let mut allowance = WRITER_FILTER_ALLOWANCE;
            let mut routed = Vec::with_capacity(events.len());
            let mut still_active: Option<HashSet<&str>> = None;
            for (index, event) in events.iter().enumerate() {
                let current = publishes.endpoints.get(&event.tenant_id);
                let candidates = current.map(|e| e.as_slice()).unwrap_or_default();
                let chosen = match &route {
                    Route::Subscriptions(verdicts) => {
                        let known = verdicts.get(index).unwrap_or(&no_verdicts);
                        filters.matching_endpoints_within(candidates, event, known, &mut allowance)
                    }
                    Route::Matched { endpoints, verdicts } => {
                        let known = verdicts.get(index).unwrap_or(&no_verdicts);
                        let chosen = filters.matching_endpoints_within(endpoints, event, known, &mut allowance);
                        if current.is_some_and(|current| Arc::ptr_eq(current, endpoints)) {
                            chosen
                        } else {
                            let active =
                                still_active.get_or_insert_with(|| candidates.iter().map(|e| e.id.as_str()).collect());
                            chosen.map(|chosen| chosen.into_iter().filter(|e| active.contains(e.id.as_str())).collect())
                        }
                    }
                    Route::Only(endpoint_id) => Some(candidates.iter().filter(|e| e.id == *endpoint_id).collect()),
                };
                let Some(chosen) = chosen else { break };
                routed.push(
                    chosen
                        .into_iter()
                        .map(|endpoint| NewDelivery {
                            // Created at the event's receipt, and so in time windows of creation found by id.
                            id: new_id_at("dlv", event.received_at),
                            endpoint_id: endpoint.id.clone(),
                            lease: None,
                        })
                        .collect::<Vec<_>>(),
                );
            }
            if routed.len() < events.len() {
                let _ = reply.send(Err(StoreError::Unavailable(
                    "the tenant's subscription filters changed while this request was matched against them; send \
                     it again"
                        .into(),
                )));
                continue;
            }
            let start = publishes.events.len();
            for (event, deliveries) in events.into_iter().zip(routed) {
                publishes.events.push(NewEvent { event, deliveries });
            }
            publishes.requests.push((start..publishes.events.len(), reply));
        }
        if let Some(dispatch) = dispatch {
            publishes.handover = Handover::reserve(dispatch, &mut publishes.events);
        }
        publishes
    }

    fn empty() -> Self {
        Publishes { events: Vec::new(), requests: Vec::new(), endpoints: HashMap::new(), handover: Handover::default() }
    }

    /// The group commit: these events and the attempt `outcomes` in one [`Store::write_batch`]. The handed-over
    /// deliveries' secrets are read on another connection meanwhile.
    pub(crate) async fn write(
        &mut self,
        store: &dyn Store,
        owner: &str,
        outcomes: &[AttemptOutcome],
    ) -> (StoreResult<Vec<Published>>, StoreResult<Vec<bool>>) {
        let (written, ()) =
            tokio::join!(store.write_batch(&self.events, owner, outcomes), self.handover.load_secrets(store));
        written
    }

    /// After the group commit: if it failed, stores each request on its own (nothing of the group was kept, and
    /// one bad request, or a bad attempt record it shared the transaction with, must fail alone); then counts the
    /// events stored in `hourly`, hands the leased deliveries over, wakes the dispatcher for the waiting ones, and
    /// answers every request.
    pub(crate) async fn finish(
        mut self,
        store: &dyn Store,
        dispatch: Option<&Handoff>,
        stored: StoreResult<Vec<Published>>,
        shared_with_others: bool,
        hourly: &HourlyTally,
    ) {
        let mut results: Vec<StoreResult<Vec<Published>>> = match stored {
            Ok(published) if published.len() == self.events.len() => {
                let mut published = published.into_iter();
                self.requests.iter().map(|(range, _)| Ok(published.by_ref().take(range.len()).collect())).collect()
            }
            // Committed, but the answer cannot be matched to the requests: storing again would duplicate events.
            Ok(published) => {
                let problem = format!("the store published {} of {} events", published.len(), self.events.len());
                self.requests.iter().map(|_| Err(StoreError::Corrupt(problem.clone()))).collect()
            }
            Err(e) if self.requests.len() > 1 || (shared_with_others && !self.requests.is_empty()) => {
                tracing::warn!(error = %e, requests = self.requests.len(), "grouped publish failed; storing one by one");
                let mut results = Vec::with_capacity(self.requests.len());
                for (range, _) in &self.requests {
                    results.push(store.publish(&self.events[range.clone()]).await);
                }
                results
            }
            Err(e) => vec![Err(e)],
        };
        let mut waiting = false;
        let mut stored = Vec::with_capacity(self.events.len());
        for ((range, _), result) in self.requests.iter().zip(&results) {
            let Ok(published) = result else { continue };
            for (new, published) in self.events[range.clone()].iter().zip(published) {
                if !published.replayed {
                    waiting |= published.deliveries > published.leased.len() as i64;
                    // Switchyard's own events are not among the types a tenant publishes.
                    if !is_reserved_event_type(&new.event.event_type) {
                        stored.push((&new.event, published.deliveries.max(0) as u64));
                    }
                }
                self.handover.take(new, published, &self.endpoints);
            }
        }
        hourly.count_published(stored);
        if let Some(dispatch) = dispatch {
            self.handover.start(store, dispatch).await;
            if waiting {
                dispatch.deliveries_waiting();
            }
        }
        for ((_, reply), result) in self.requests.into_iter().zip(results.drain(..)) {
            let _ = reply.send(result);
        }
    }
}

/// The deliveries of one group commit that go straight to the dispatcher: their reserved slots, their endpoints'
/// signing secrets, and, once stored, the jobs.
#[derive(Default)]
struct Handover {
    slots: Vec<OwnedSemaphorePermit>,
    endpoint_ids: Vec<String>,
    /// None until loaded, and if they could not be read: the leased deliveries are then given back.
    secrets: Option<HashMap<String, Arc<SigningSecrets>>>,
    /// The endpoints the jobs go to, each shared by its jobs.
    endpoints: HashMap<String, Arc<JobEndpoint>>,
    jobs: Vec<DispatchJob>,
    /// Leased deliveries that cannot be started (no secrets, no slot, dispatcher stopped).
    orphans: Vec<String>,
}

impl Handover {
    /// Reserves slots and leases that many deliveries, in order; the rest stay waiting.
    fn reserve(dispatch: &Handoff, events: &mut [NewEvent]) -> Self {
        let wanted = events.iter().map(|new| new.deliveries.len()).sum();
        let slots = dispatch.reserve(wanted);
        if slots.is_empty() {
            return Handover::default();
        }
        let lease = dispatch.lease(now_millis());
        let mut endpoint_ids = BTreeSet::new();
        for delivery in events.iter_mut().flat_map(|new| &mut new.deliveries).take(slots.len()) {
            delivery.lease = Some(lease.clone());
            endpoint_ids.insert(delivery.endpoint_id.clone());
        }
        let jobs = Vec::with_capacity(slots.len());
        Handover { slots, endpoint_ids: endpoint_ids.into_iter().collect(), jobs, ..Handover::default() }
    }

    async fn load_secrets(&mut self, store: &dyn Store) {
        if self.endpoint_ids.is_empty() {
            return;
        }
        match store.signing_secrets_of(&self.endpoint_ids, now_millis()).await {
            Ok(found) => self.secrets = Some(secrets_by_endpoint(found)),
            // Nothing is lost: the leases are given back and the deliveries claimed instead.
            Err(e) => tracing::warn!(error = %e, "cannot read signing secrets; fresh deliveries will be claimed"),
        }
    }

    /// Adds a job for each delivery of `new` that was stored leased.
    fn take(&mut self, new: &NewEvent, published: &Published, endpoints: &HashMap<String, Arc<Vec<Endpoint>>>) {
        if published.leased.is_empty() {
            return;
        }
        let event = &new.event;
        let shared_event = Arc::new(JobEvent::from(event.clone()));
        for delivery_id in &published.leased {
            let leased = new.deliveries.iter().find(|d| d.id == *delivery_id);
            let endpoint = leased.and_then(|d| self.endpoint(endpoints, &event.tenant_id, &d.endpoint_id));
            let (Some(NewDelivery { id, endpoint_id, lease: Some(lease) }), Some(endpoint), Some(secrets)) =
                (leased, endpoint, &self.secrets)
            else {
                self.orphans.push(delivery_id.clone());
                continue;
            };
            let delivery = Delivery {
                id: id.clone(),
                tenant_id: event.tenant_id.clone(),
                event_id: event.id.clone(),
                endpoint_id: endpoint_id.clone(),
                event_type: event.event_type.clone(),
                status: DeliveryStatus::Delivering,
                attempts: 0,
                schedule_offset: 0,
                next_attempt_at: Some(event.received_at),
                lease_owner: Some(lease.owner.clone()),
                lease_expires_at: Some(lease.until),
                last_status_code: None,
                last_error: None,
                prepared: None,
                created_at: event.received_at,
                updated_at: event.received_at,
            };
            let signing_secrets = secrets.get(endpoint_id).cloned().unwrap_or_default();
            self.jobs.push(DispatchJob { delivery, event: shared_event.clone(), endpoint, signing_secrets });
        }
    }

    /// The shared copy of a tenant's endpoint, made on first use.
    fn endpoint(
        &mut self,
        endpoints: &HashMap<String, Arc<Vec<Endpoint>>>,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> Option<Arc<JobEndpoint>> {
        if let Some(shared) = self.endpoints.get(endpoint_id) {
            return Some(shared.clone());
        }
        let endpoint = endpoints.get(tenant_id)?.iter().find(|e| e.id == endpoint_id)?;
        let shared = Arc::new(JobEndpoint::from(endpoint.clone()));
        self.endpoints.insert(endpoint_id.to_string(), shared.clone());
        Some(shared)
    }

    /// Starts every job in its slot; a lease nobody can act on is given back.
    async fn start(self, store: &dyn Store, dispatch: &Handoff) {
        let mut slots = self.slots.into_iter();
        let mut orphans = self.orphans;
        for job in self.jobs {
            let Some(slot) = slots.next() else {
                orphans.push(job.delivery.id);
                continue;
            };
            if let Err(delivery_id) = dispatch.start(job, slot) {
                orphans.push(delivery_id);
            }
        }
        if !orphans.is_empty() {
            dispatch.release(store, &orphans).await;
        }
    }
}
