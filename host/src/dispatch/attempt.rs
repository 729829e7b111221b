//! One attempt of one claimed delivery: unseal the signing secrets, send, classify, record.
//!
//! Runs in its own task while holding a concurrency slot; the slot is freed when the task ends.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::SystemTime;

use rand::Rng;
use reqwest::Client;
use tokio::sync::OwnedSemaphorePermit;

use super::outcome;
use super::send::{self, Answer};
use super::Settings;
use crate::model::{now_millis, Attempt, Endpoint, EndpointSecret, Millis, SecretStatus};
use crate::retry::{self, RetryPolicy};
use crate::secrets::{secret_aad, MasterKey};
use crate::signing;
use crate::store::{AttemptOutcome, DispatchJob, Store, StoreError};

/// Error texts recorded on the attempt when no request could be made; the receiver is not to blame, so these
/// are retried like a network failure.
pub const UNDECRYPTABLE_SECRET: &str = "signing secret could not be decrypted";
pub const NO_SIGNING_SECRET: &str = "endpoint has no signing secret";

/// What every attempt needs, shared by all attempt tasks.
pub(super) struct Worker {
    pub store: Arc<dyn Store>,
    pub master_key: MasterKey,
    pub client: Client,
    pub settings: Settings,
    pub node_id: String,
}

enum SecretsProblem {
    /// The store could not be asked: not the delivery's fault, so no attempt is recorded.
    Store(StoreError),
    /// The secrets are there but cannot sign: recorded as a failed, retryable attempt with this text.
    Unusable(&'static str),
}

impl Worker {
    pub(super) async fn attempt(self: Arc<Self>, job: DispatchJob, _slot: OwnedSemaphorePermit) {
        let DispatchJob { delivery, event, endpoint } = job;
        let started_at = now_millis();
        let answer = match self.plaintext_secrets(&endpoint, started_at).await {
            Ok(secrets) => {
                let body = event.envelope().into_bytes();
                let signature = signing::signature_headers(
                    endpoint.signature_scheme,
                    &secrets,
                    &event.id,
                    started_at.div_euclid(1000),
                    &body,
                );
                let headers = send::request_headers(&endpoint, &event.id, signature);
                send::send(&self.client, &endpoint.url, headers, body, send::request_timeout(&endpoint)).await
            }
            Err(SecretsProblem::Unusable(text)) => Answer::local_failure(text),
            Err(SecretsProblem::Store(e)) => {
                tracing::error!(delivery_id = %delivery.id, endpoint_id = %endpoint.id, error = %e,
                    "could not load signing secrets; giving the delivery back");
                // Pause first so a store that fails this query but not claiming cannot make us spin on it.
                tokio::time::sleep(self.settings.error_backoff).await;
                if let Err(e) = self.store.release(&self.node_id, std::slice::from_ref(&delivery.id)).await {
                    tracing::error!(delivery_id = %delivery.id, error = %e, "could not release the lease; it will expire");
                }
                return;
            }
        };

        let finished_at = now_millis();
        let policy = RetryPolicy::for_endpoint(&endpoint);
        let resolution = outcome::resolve(
            answer.verdict(SystemTime::now()),
            &policy,
            retry::cycle_index(&delivery),
            rand::thread_rng().gen_range(-1.0..=1.0),
            finished_at,
            self.settings.max_retry_after,
        );
        let attempt = Attempt {
            id: crate::model::new_id("att"),
            tenant_id: delivery.tenant_id.clone(),
            delivery_id: delivery.id.clone(),
            attempt_number: delivery.attempts + 1,
            started_at,
            duration_ms: i64::try_from(answer.duration.as_millis()).unwrap_or(i64::MAX),
            status_code: answer.status.map(i64::from),
            response_body: answer.body.clone(),
            error: answer.error_text(),
            outcome: resolution.outcome.to_string(),
        };
        log_attempt(&attempt, &endpoint, resolution.next_attempt_at);

        let record = AttemptOutcome {
            attempt,
            status: resolution.status,
            next_attempt_at: resolution.next_attempt_at,
            disable_endpoint: resolution.disable_endpoint,
        };
        match self.store.record_attempt(&self.node_id, &record).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(delivery_id = %delivery.id, endpoint_id = %endpoint.id,
                "lease was lost before the attempt was recorded; another worker owns the delivery now"),
            // The lease expires and the delivery is attempted again: at-least-once, never lost.
            Err(e) => tracing::error!(delivery_id = %delivery.id, endpoint_id = %endpoint.id, error = %e,
                "could not record the attempt; the delivery will be retried when its lease expires"),
        }
    }

    /// The `whsec_…` texts that sign now: the active secret first, then retiring ones, newest first.
    async fn plaintext_secrets(&self, endpoint: &Endpoint, at: Millis) -> Result<Vec<String>, SecretsProblem> {
        let mut sealed = self.store.signing_secrets(&endpoint.id, at).await.map_err(SecretsProblem::Store)?;
        sealed.retain(|s| s.status != SecretStatus::Revoked);
        if sealed.is_empty() {
            // Sending unsigned would only be rejected by the receiver, or worse, accepted.
            return Err(SecretsProblem::Unusable(NO_SIGNING_SECRET));
        }
        sealed.sort_by_key(|s| (s.status != SecretStatus::Active, Reverse(s.version)));
        sealed.iter().map(|secret| self.unseal(endpoint, secret)).collect()
    }

    fn unseal(&self, endpoint: &Endpoint, secret: &EndpointSecret) -> Result<String, SecretsProblem> {
        let opened = self.master_key.open(&secret.ciphertext, &secret_aad(&endpoint.id, &secret.id));
        match opened.ok().and_then(|bytes| String::from_utf8(bytes).ok()) {
            Some(text) => Ok(text),
            None => {
                tracing::error!(endpoint_id = %endpoint.id, version = secret.version,
                    "{UNDECRYPTABLE_SECRET}; is the master key the one the secret was stored with?");
                Err(SecretsProblem::Unusable(UNDECRYPTABLE_SECRET))
            }
        }
    }
}

fn log_attempt(attempt: &Attempt, endpoint: &Endpoint, next_attempt_at: Option<Millis>) {
    // Ids, status and timing only: payloads, response bodies and secrets stay out of logs.
    let status = attempt.status_code.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    if attempt.outcome == "gone" {
        tracing::warn!(delivery_id = %attempt.delivery_id, endpoint_id = %endpoint.id, attempt = attempt.attempt_number,
            duration_ms = attempt.duration_ms, "receiver answered 410 Gone; disabling the endpoint");
    } else if attempt.outcome == "succeeded" {
        tracing::info!(delivery_id = %attempt.delivery_id, endpoint_id = %endpoint.id, attempt = attempt.attempt_number,
            status = %status, duration_ms = attempt.duration_ms, "delivered");
    } else {
        tracing::warn!(delivery_id = %attempt.delivery_id, endpoint_id = %endpoint.id, attempt = attempt.attempt_number,
            status = %status, duration_ms = attempt.duration_ms, outcome = %attempt.outcome,
            error = attempt.error.as_deref().unwrap_or(""),
            retry_in_ms = next_attempt_at.map(|at| at - now_millis()), "delivery attempt failed");
    }
}
