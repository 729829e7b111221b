//! Group commit of publishes. Request handlers hand their events to one writer task, which fans out and stores
//! everything queued at that moment: one read of each tenant's active endpoints and one [`Store::publish`] (one
//! transaction, one fsync) for the lot. Each handler still waits until its own events are committed before
//! answering `202`, so "accepted" keeps meaning "durably stored".

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::model::{new_id, Endpoint, Event};
use crate::routing::FilterCache;
use crate::store::{NewEvent, Published, Store, StoreError, StoreResult};

/// At most this many events share one transaction.
const MAX_EVENTS_PER_COMMIT: usize = 1000;

type Reply = oneshot::Sender<StoreResult<Vec<Published>>>;
type Request = (Vec<Event>, Reply);

/// The handlers' handle; cheap to clone. The writer task ends when every handle is dropped.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::UnboundedSender<Request>,
}

impl Ingest {
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, queued));
        Ingest { queue }
    }

    /// Matches the events against their tenant's active endpoints and stores them with their deliveries (grouped
    /// with others waiting at the same moment). Returns their results in input order.
    pub async fn publish(&self, events: Vec<Event>) -> StoreResult<Vec<Published>> {
        let (reply, stored) = oneshot::channel();
        self.queue.send((events, reply)).map_err(|_| stopped())?;
        stored.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the ingest writer has stopped".into())
}

async fn write_batches(store: Arc<dyn Store>, mut queued: mpsc::UnboundedReceiver<Request>) {
    let mut filters = FilterCache::default();
    while let Some(first) = queued.recv().await {
        let mut requests = vec![first];
        let mut events = requests[0].0.len();
        while events < MAX_EVENTS_PER_COMMIT {
            match queued.try_recv() {
                Ok(request) => {
                    events += request.0.len();
                    requests.push(request);
                }
                Err(_) => break,
            }
        }
        write(store.as_ref(), &mut filters, requests).await;
    }
}

async fn write(store: &dyn Store, filters: &mut FilterCache, requests: Vec<Request>) {
    let requests = match fan_out(store, filters, requests).await {
        Ok(requests) => requests,
        Err((e, replies)) => {
            let message = e.to_string();
            for reply in replies {
                let _ =
                    reply.send(Err(StoreError::Unavailable(format!("cannot read the active endpoints: {message}"))));
            }
            return;
        }
    };
    if requests.len() == 1 {
        let (events, reply) = requests.into_iter().next().expect("one request");
        let _ = reply.send(store.publish(&events).await);
        return;
    }
    let all: Vec<NewEvent> = requests.iter().flat_map(|(events, _)| events.iter().cloned()).collect();
    match store.publish(&all).await {
        Ok(published) if published.len() == all.len() => {
            let mut published = published.into_iter();
            for (events, reply) in requests {
                let _ = reply.send(Ok(published.by_ref().take(events.len()).collect()));
            }
        }
        // Committed, but the answer cannot be matched to the requests: storing again would duplicate events.
        Ok(published) => {
            let problem = format!("the store published {} of {} events", published.len(), all.len());
            for (_, reply) in requests {
                let _ = reply.send(Err(StoreError::Corrupt(problem.clone())));
            }
        }
        // Nothing of the batch was kept. One request's failure must not fail the others: store each on its own.
        Err(e) => {
            tracing::warn!(error = %e, requests = requests.len(), "grouped publish failed; storing one by one");
            for (events, reply) in requests {
                let _ = reply.send(store.publish(&events).await);
            }
        }
    }
}

/// Adds each event's deliveries: one per active endpoint of its tenant with a matching subscription.
async fn fan_out(
    store: &dyn Store,
    filters: &mut FilterCache,
    requests: Vec<Request>,
) -> Result<Vec<(Vec<NewEvent>, Reply)>, (StoreError, Vec<Reply>)> {
    let tenants: BTreeSet<String> =
        requests.iter().flat_map(|(events, _)| events.iter().map(|e| e.tenant_id.clone())).collect();
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    for tenant_id in tenants {
        match store.active_endpoints(&tenant_id).await {
            Ok(found) => endpoints.insert(tenant_id, found),
            Err(e) => return Err((e, requests.into_iter().map(|(_, reply)| reply).collect())),
        };
    }
    Ok(requests
        .into_iter()
        .map(|(events, reply)| {
            let matched = events
                .into_iter()
                .map(|event| {
                    let candidates = endpoints.get(&event.tenant_id).map(Vec::as_slice).unwrap_or_default();
                    let deliveries = filters
                        .matching_endpoints(candidates, &event)
                        .into_iter()
                        .map(|endpoint| (new_id("dlv"), endpoint.id.clone()))
                        .collect();
                    NewEvent { event, deliveries }
                })
                .collect();
            (matched, reply)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::model::Tenant;
    use crate::store::sql::SqlStore;

    fn event(tenant: &str) -> Event {
        Event {
            id: new_id("evt"),
            tenant_id: tenant.into(),
            event_type: "order.created".into(),
            data: RawValue::from_string("{}".into()).unwrap(),
            idempotency_key: None,
            received_at: 1_700_000_000_000,
        }
    }

    /// Requests queued together share a commit; one that fails is stored on its own, and the others still are.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_requests_share_a_commit_and_a_bad_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ingest.db").display());
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.unwrap());
        let tenant = Tenant { id: new_id("ten"), name: "t".into(), created_at: 0 };
        store.create_tenant(&tenant).await.unwrap();
        let ingest = Ingest::start(store.clone());

        // An event id that is already stored: the database refuses the whole transaction that holds it.
        let earlier = event(&tenant.id);
        store.publish(&[NewEvent { event: earlier.clone(), deliveries: Vec::new() }]).await.unwrap();
        let bad = earlier;
        let good: Vec<Event> = (0..3).map(|_| event(&tenant.id)).collect();
        let ids: Vec<String> = good.iter().map(|e| e.id.clone()).collect();
        let (a, b, c, bad) = tokio::join!(
            ingest.publish(vec![good[0].clone()]),
            ingest.publish(vec![good[1].clone(), good[2].clone()]),
            ingest.publish(Vec::new()),
            ingest.publish(vec![bad]),
        );
        assert_eq!(a.unwrap().iter().map(|p| &p.event_id).collect::<Vec<_>>(), vec![&ids[0]]);
        assert_eq!(b.unwrap().iter().map(|p| &p.event_id).collect::<Vec<_>>(), vec![&ids[1], &ids[2]]);
        assert!(c.unwrap().is_empty());
        assert!(matches!(bad, Err(StoreError::Conflict(_))), "{bad:?}");
        for id in &ids {
            assert!(store.get_event(&tenant.id, id).await.unwrap().is_some(), "{id} was stored");
        }
    }
}
