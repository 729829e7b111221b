//! An in-memory [`Store`] with just the dispatcher's side, for exercising the dispatch loop (leases lost, store
//! errors, shutdown) in ways a real database makes awkward to provoke. The SQL store's own behaviour is covered
//! by the store conformance suite and the end-to-end dispatcher test.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::model::{
    ApiKey, Attempt, AuditEntry, Delivery, DeliveryStatus, Endpoint, EndpointSecret, EndpointStatus, Event, EventType,
    Millis, Subscription, Tenant,
};
use crate::secrets::SigningSecrets;
use crate::store::{
    AttemptCounts, AttemptOutcome, AuditFilter, DeadAttempt, DeliveryFilter, DispatchJob, Dropped, EndpointFilter,
    EndpointHour, EventFilter, EventTypeHour, NewEvent, NewSecret, Page, PluginUpload, Published, PublishedCounts,
    RequeueSelector, Resend, SentTo, ServerCounts, StatusBefore, Store, StoreError, StoreResult, TenantCounts,
};

#[derive(Default)]
pub struct FakeState {
    /// Waiting deliveries, due at `delivery.next_attempt_at`.
    pub waiting: Vec<DispatchJob>,
    pub leased: Vec<DispatchJob>,
    pub secrets: Vec<EndpointSecret>,
    pub recorded: Vec<AttemptOutcome>,
    pub released: Vec<String>,
    /// Every deferral, `(delivery id, due at)`, in order.
    pub deferred: Vec<(String, Millis)>,
    /// Every `bring_forward`, by endpoint id, with how many deliveries it moved.
    pub brought_forward: Vec<(String, u64)>,
    /// `record_attempt` answers "lease lost" while set.
    pub lose_leases: bool,
    /// How many records were refused because of `lose_leases`.
    pub lost_records: usize,
    /// This many upcoming `claim_due` calls fail.
    pub failing_claims: usize,
    /// This many upcoming `record_attempts` calls fail, as on a full disk.
    pub failing_records: usize,
    /// This many upcoming `record_attempts` calls panic, as a bug would.
    pub panicking_records: usize,
    pub record_calls: usize,
    pub claim_calls: usize,
    /// Every hourly count added, in order.
    pub hours: Vec<EndpointHour>,
}

pub struct FakeStore {
    pub state: Mutex<FakeState>,
    /// `record_attempts` waits while this is false, like a commit stuck on a slow disk.
    pub records_open: tokio::sync::watch::Sender<bool>,
}

impl Default for FakeStore {
    fn default() -> Self {
        Self { state: Mutex::default(), records_open: tokio::sync::watch::Sender::new(true) }
    }
}

impl FakeStore {
    pub fn with(f: impl FnOnce(&mut FakeState)) -> Self {
        let store = Self::default();
        f(&mut store.state.lock().unwrap());
        store
    }

    pub fn outcomes(&self) -> Vec<String> {
        self.state.lock().unwrap().recorded.iter().map(|o| o.attempt.outcome.clone()).collect()
    }
}

fn unused<T>() -> StoreResult<T> {
    Err(StoreError::Corrupt("not part of the fake dispatcher store".into()))
}

#[async_trait]
impl Store for FakeStore {
    async fn claim_due(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> StoreResult<Vec<DispatchJob>> {
        let mut state = self.state.lock().unwrap();
        state.claim_calls += 1;
        if state.failing_claims > 0 {
            state.failing_claims -= 1;
            return Err(StoreError::Corrupt("injected claim failure".into()));
        }
        let mut claimed = Vec::new();
        let mut index = 0;
        while index < state.waiting.len() && (claimed.len() as i64) < limit {
            if state.waiting[index].delivery.next_attempt_at.is_some_and(|at| at <= now) {
                let mut job = state.waiting.remove(index);
                job.delivery.status = DeliveryStatus::Delivering;
                job.delivery.lease_owner = Some(owner.to_string());
                job.delivery.lease_expires_at = Some(lease_until);
                let endpoint_id = job.endpoint.id.clone();
                let secrets = state.secrets.iter().filter(|s| s.endpoint_id == endpoint_id).cloned().collect();
                job.signing_secrets = Arc::new(SigningSecrets::new(secrets));
                claimed.push(job);
            } else {
                index += 1;
            }
        }
        state.leased.extend(claimed.iter().cloned());
        Ok(claimed)
    }

    async fn record_attempts(&self, _owner: &str, outcomes: &[AttemptOutcome]) -> StoreResult<Vec<bool>> {
        let _ = self.records_open.subscribe().wait_for(|open| *open).await;
        let mut state = self.state.lock().unwrap();
        state.record_calls += 1;
        if state.panicking_records > 0 {
            state.panicking_records -= 1;
            drop(state); // not poisoned: the next call goes on
            panic!("injected panic while recording attempts");
        }
        if state.failing_records > 0 {
            state.failing_records -= 1;
            return Err(StoreError::Unavailable("injected record failure".into()));
        }
        let mut recorded = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let Some(position) = state.leased.iter().position(|j| j.delivery.id == outcome.attempt.delivery_id) else {
                recorded.push(false);
                continue;
            };
            if state.lose_leases {
                state.lost_records += 1;
                recorded.push(false);
                continue;
            }
            let mut job = state.leased.remove(position);
            job.delivery.attempts = outcome.attempt.attempt_number;
            job.delivery.status = outcome.status;
            job.delivery.next_attempt_at = outcome.next_attempt_at;
            job.delivery.lease_owner = None;
            if outcome.status == DeliveryStatus::Failed {
                state.waiting.push(job);
            }
            state.recorded.push(outcome.clone());
            recorded.push(true);
        }
        Ok(recorded)
    }

    async fn defer(&self, _owner: &str, deferrals: &[(String, Millis)]) -> StoreResult<()> {
        let mut state = self.state.lock().unwrap();
        state.deferred.extend(deferrals.iter().cloned());
        for (delivery_id, due_at) in deferrals {
            if let Some(position) = state.leased.iter().position(|j| &j.delivery.id == delivery_id) {
                let mut job = state.leased.remove(position);
                job.delivery.status = DeliveryStatus::Pending;
                job.delivery.next_attempt_at = Some(*due_at);
                job.delivery.lease_owner = None;
                state.waiting.push(job);
            }
        }
        Ok(())
    }

    async fn bring_forward(&self, _tenant_id: &str, endpoint_id: &str, now: Millis) -> StoreResult<u64> {
        let mut state = self.state.lock().unwrap();
        let mut moved = 0;
        for job in state.waiting.iter_mut().filter(|job| job.endpoint.id == endpoint_id) {
            let delivery = &mut job.delivery;
            if delivery.status == DeliveryStatus::Pending && delivery.next_attempt_at.is_some_and(|at| at > now) {
                delivery.next_attempt_at = Some(now);
                moved += 1;
            }
        }
        state.brought_forward.push((endpoint_id.to_string(), moved));
        Ok(moved)
    }

    async fn release(&self, _owner: &str, delivery_ids: &[String]) -> StoreResult<()> {
        let mut state = self.state.lock().unwrap();
        state.released.extend(delivery_ids.iter().cloned());
        let (back, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.leased).into_iter().partition(|j| delivery_ids.contains(&j.delivery.id));
        state.leased = kept;
        state.waiting.extend(back);
        Ok(())
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        Ok(self.state.lock().unwrap().waiting.iter().filter_map(|j| j.delivery.next_attempt_at).min())
    }

    async fn signing_secrets(&self, endpoint_id: &str, _at: Millis) -> StoreResult<Vec<EndpointSecret>> {
        Ok(self.state.lock().unwrap().secrets.iter().filter(|s| s.endpoint_id == endpoint_id).cloned().collect())
    }
    async fn signing_secrets_of(&self, endpoint_ids: &[String], _at: Millis) -> StoreResult<Vec<EndpointSecret>> {
        let state = self.state.lock().unwrap();
        Ok(state.secrets.iter().filter(|s| endpoint_ids.contains(&s.endpoint_id)).cloned().collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn close(&self) {}
    async fn get_meta(&self, _: &str) -> StoreResult<Option<String>> {
        unused()
    }
    async fn put_meta(&self, _: &str, _: &str) -> StoreResult<()> {
        unused()
    }
    async fn create_tenant(&self, _: &Tenant) -> StoreResult<()> {
        unused()
    }
    async fn update_tenant(&self, _: &Tenant) -> StoreResult<bool> {
        unused()
    }
    async fn get_tenant(&self, _: &str) -> StoreResult<Option<Tenant>> {
        unused()
    }
    async fn list_tenants(&self, _: &Page) -> StoreResult<Vec<Tenant>> {
        unused()
    }
    async fn create_api_key(&self, _: &ApiKey) -> StoreResult<()> {
        unused()
    }
    async fn list_api_keys(&self, _: &str, _: &Page) -> StoreResult<Vec<ApiKey>> {
        unused()
    }
    async fn get_api_key(&self, _: &str, _: &str) -> StoreResult<Option<ApiKey>> {
        unused()
    }
    async fn update_api_key(&self, _: &ApiKey, _: &ApiKey) -> StoreResult<bool> {
        unused()
    }
    async fn revoke_api_key(&self, _: &str, _: &str, _: Millis) -> StoreResult<bool> {
        unused()
    }
    async fn find_api_key(&self, _: &str) -> StoreResult<Option<ApiKey>> {
        unused()
    }
    async fn create_endpoint(&self, _: &Endpoint, _: &NewSecret) -> StoreResult<()> {
        unused()
    }
    async fn get_endpoint(&self, _: &str, _: &str) -> StoreResult<Option<Endpoint>> {
        unused()
    }
    async fn list_endpoints(&self, _: &str, _: &EndpointFilter, _: &Page) -> StoreResult<Vec<Endpoint>> {
        unused()
    }
    async fn update_endpoint(&self, _: &Endpoint) -> StoreResult<bool> {
        unused()
    }
    async fn delete_endpoint(&self, _: &str, _: &str, _: Millis) -> StoreResult<bool> {
        unused()
    }
    async fn set_endpoint_status(
        &self,
        _: &str,
        _: &str,
        _: EndpointStatus,
        _: Option<&str>,
        _: Millis,
    ) -> StoreResult<Option<StatusBefore>> {
        unused()
    }
    async fn replace_subscriptions(&self, _: &str, _: &str, _: &[Subscription], _: Millis) -> StoreResult<bool> {
        unused()
    }
    async fn active_endpoints(&self, _: &str) -> StoreResult<Arc<Vec<Endpoint>>> {
        unused()
    }
    async fn endpoints_binding_plugin(&self, _: &str) -> StoreResult<Vec<(String, String)>> {
        unused()
    }
    async fn record_drop(&self, _: &str, _: &Dropped) -> StoreResult<bool> {
        unused()
    }
    async fn list_secrets(&self, _: &str, _: &str) -> StoreResult<Vec<EndpointSecret>> {
        unused()
    }
    async fn rotate_secret(
        &self,
        _: &str,
        _: &str,
        _: &NewSecret,
        _: Millis,
        _: Millis,
    ) -> StoreResult<Option<EndpointSecret>> {
        unused()
    }
    async fn register_event_type(&self, _: &str, _: &EventType) -> StoreResult<(EventType, bool)> {
        unused()
    }
    async fn get_event_type(&self, _: &str, _: &str) -> StoreResult<Option<EventType>> {
        unused()
    }
    async fn list_event_types(&self, _: &str, _: &Page) -> StoreResult<Vec<EventType>> {
        unused()
    }
    async fn event_type_schemas(&self, _: &str) -> StoreResult<Vec<(String, String)>> {
        unused()
    }
    async fn publish(&self, _: &[NewEvent]) -> StoreResult<Vec<Published>> {
        unused()
    }
    async fn get_event(&self, _: &str, _: &str) -> StoreResult<Option<Event>> {
        unused()
    }
    async fn events_by_idempotency_keys(&self, _: &str, _: &[String]) -> StoreResult<Vec<Event>> {
        unused()
    }
    async fn list_events(&self, _: &str, _: &EventFilter, _: &Page) -> StoreResult<Vec<Event>> {
        unused()
    }
    async fn get_delivery(&self, _: &str, _: &str) -> StoreResult<Option<Delivery>> {
        unused()
    }
    async fn list_deliveries(&self, _: &str, _: &DeliveryFilter, _: &Page) -> StoreResult<Vec<Delivery>> {
        unused()
    }
    async fn list_attempts(&self, _: &str, _: &str) -> StoreResult<Vec<Attempt>> {
        unused()
    }
    async fn retry_delivery(&self, _: &str, _: &str, _: Millis, _: Resend) -> StoreResult<Option<Delivery>> {
        unused()
    }
    async fn send_event_to(&self, _: &str, _: &str, _: &str, _: &str, _: Millis) -> StoreResult<SentTo> {
        unused()
    }
    async fn events_missed_by(&self, _: &str, _: &str, _: &EventFilter, _: &Page) -> StoreResult<Vec<Event>> {
        unused()
    }
    async fn send_events_to(&self, _: &str, _: &str, _: &[String], _: Millis) -> StoreResult<Option<u64>> {
        unused()
    }
    async fn requeue_dead(&self, _: &str, _: &RequeueSelector, _: Millis, _: Resend) -> StoreResult<u64> {
        unused()
    }
    async fn release_foreign_leases(&self, _: &str) -> StoreResult<u64> {
        unused()
    }
    async fn put_plugin_upload(&self, _: &str, _: &str, _: &[u8], _: Millis) -> StoreResult<()> {
        unused()
    }
    async fn delete_plugin_upload(&self, _: &str, _: &str, _: Millis) -> StoreResult<bool> {
        unused()
    }
    async fn plugin_uploads(&self) -> StoreResult<Vec<PluginUpload>> {
        unused()
    }
    async fn tenant_counts(&self, _: &str, _: u64) -> StoreResult<TenantCounts> {
        unused()
    }
    async fn server_counts(&self, _: u64) -> StoreResult<ServerCounts> {
        unused()
    }
    async fn add_endpoint_hours(&self, hours: &[EndpointHour]) -> StoreResult<()> {
        self.state.lock().unwrap().hours.extend_from_slice(hours);
        Ok(())
    }
    async fn tenant_hours(&self, _: &str, _: Option<&str>, _: Millis) -> StoreResult<Vec<(Millis, AttemptCounts)>> {
        unused()
    }
    async fn endpoint_totals(
        &self,
        _: &str,
        _: &[String],
        _: Range<Millis>,
    ) -> StoreResult<Vec<(String, AttemptCounts)>> {
        unused()
    }
    async fn add_event_type_hours(&self, _: &[EventTypeHour]) -> StoreResult<()> {
        unused()
    }
    async fn event_type_totals(&self, _: &str, _: Range<Millis>) -> StoreResult<Vec<(String, PublishedCounts)>> {
        unused()
    }
    async fn prune_hours(&self, _: Millis) -> StoreResult<u64> {
        unused()
    }
    async fn plugin_upload_wasm(&self, _: &str, _: &str) -> StoreResult<Option<Vec<u8>>> {
        unused()
    }
    async fn append_audit(&self, _: &AuditEntry) -> StoreResult<()> {
        unused()
    }
    async fn list_audit(&self, _: Option<&str>, _: &AuditFilter, _: &Page) -> StoreResult<Vec<AuditEntry>> {
        unused()
    }
    async fn tenant_audit_after(&self, _: &str, _: &Page) -> StoreResult<Vec<AuditEntry>> {
        unused()
    }
    async fn dead_attempts_after(&self, _: &Page) -> StoreResult<Vec<DeadAttempt>> {
        unused()
    }
}
