//! What every publish would otherwise read or write again though it rarely changes: each tenant's active
//! endpoints (the fan-out candidates), the signing secrets of endpoints deliveries are handed over for, and the
//! event types known to be registered.
//!
//! Writes through this process keep the cache exact: every endpoint write forgets its tenant's entry once it
//! has committed. Another process sharing a PostgreSQL database is only seen when an entry expires, so a change
//! made there applies here within [`ACTIVE_ENDPOINTS_TTL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::model::{Endpoint, EndpointSecret, Millis};

/// How long another node's endpoint change (or secret rotation) can go unseen by this one.
pub const ACTIVE_ENDPOINTS_TTL: Duration = Duration::from_secs(1);
const TENANTS: u64 = 10_000;
const EVENT_TYPES: u64 = 100_000;
const ENDPOINTS: u64 = 100_000;

#[derive(Debug)]
pub(super) struct ReadCache {
    active_endpoints: Cache<String, Arc<Vec<Endpoint>>>,
    /// Bumped by every endpoint write; a read that began before a bump may hold what the write replaced, so it
    /// is not kept.
    generation: AtomicU64,
    /// `(tenant id, name)` of event types committed to the database. Types are never deleted.
    event_types: Cache<(String, String), ()>,
    /// Each endpoint's active and retiring secrets, whatever their expiry: which of them sign depends on the time
    /// they are asked for (see [`ReadCache::signing_secrets`]).
    secrets: Cache<String, Arc<Vec<EndpointSecret>>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache {
            active_endpoints: Cache::builder().max_capacity(TENANTS).time_to_live(ACTIVE_ENDPOINTS_TTL).build(),
            generation: AtomicU64::new(0),
            event_types: Cache::builder().max_capacity(EVENT_TYPES).build(),
            secrets: Cache::builder().max_capacity(ENDPOINTS).time_to_live(ACTIVE_ENDPOINTS_TTL).build(),
        }
    }
}

impl ReadCache {
    pub(super) fn active_endpoints(&self, tenant_id: &str) -> Option<Arc<Vec<Endpoint>>> {
        self.active_endpoints.get(tenant_id)
    }

    /// The generation to pass to [`ReadCache::keep_active_endpoints`]: read it before querying.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn keep_active_endpoints(&self, tenant_id: &str, read_at: u64, endpoints: Arc<Vec<Endpoint>>) {
        if self.generation() == read_at {
            self.active_endpoints.insert(tenant_id.to_string(), endpoints);
        }
    }

    /// Call after a write to a tenant's endpoints or subscriptions has committed (or failed).
    pub(super) fn endpoints_changed(&self, tenant_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.active_endpoints.invalidate(tenant_id);
    }

    /// The endpoint's secrets that sign at `at`, if its secrets are cached.
    pub(super) fn signing_secrets(&self, endpoint_id: &str, at: Millis) -> Option<Vec<EndpointSecret>> {
        let secrets = self.secrets.get(endpoint_id)?;
        Some(secrets.iter().filter(|s| s.signs_at(at)).cloned().collect())
    }

    /// Keeps an endpoint's active and retiring secrets, read after [`ReadCache::generation`] returned `read_at`.
    pub(super) fn keep_secrets(&self, endpoint_id: &str, read_at: u64, secrets: Vec<EndpointSecret>) {
        if self.generation() == read_at {
            self.secrets.insert(endpoint_id.to_string(), Arc::new(secrets));
        }
    }

    /// Call after a write to an endpoint's secrets (rotation, creation, deletion) has committed (or failed).
    pub(super) fn secrets_changed(&self, endpoint_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.secrets.invalidate(endpoint_id);
    }

    pub(super) fn event_type_known(&self, tenant_id: &str, name: &str) -> bool {
        self.event_types.contains_key(&(tenant_id.to_string(), name.to_string()))
    }

    /// Call once the transaction that registered (or found) the type has committed.
    pub(super) fn event_type_committed(&self, tenant_id: &str, name: &str) {
        self.event_types.insert((tenant_id.to_string(), name.to_string()), ());
    }
}
