//! One attempt of one claimed delivery: prepare it with the endpoint's filter and transform (first attempt only),
//! unseal the signing secrets claimed with it, send, classify (asking the retry policy plugin, if one is bound),
//! and hand the outcome to the recorder.
//!
//! Runs in its own task, which holds a concurrency slot while it prepares, sends and classifies, then hands the
//! outcome to the writer and ends without waiting for the commit (the writer acts on what the commit finds). The
//! slot stands for the connection to the receiver, which is back in the pool by then. Holding it through the
//! commit left slots idle for a whole group commit, so under load the ingest writer found none free and stored
//! fresh deliveries waiting, to be claimed in transactions of their own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::Rng;
use tokio::sync::OwnedSemaphorePermit;

use super::failing::{self, FailingEndpoints, Streak};
use super::outcome::{self, FailureKind, Resolution, Verdict};
use super::send::{self, Answer, Outbound, RequestIdentity};
use super::Settings;
use crate::model::{
    now_millis, Attempt, Delivery, DeliveryStatus, Endpoint, Millis, PluginBinding, PluginUse, PreparedRequest,
};
use crate::plugin::bound::{self, Preparation};
use crate::plugin::{self, ErrorKind, PluginRegistry, RetryDecision};
use crate::retry::{self, RetryPolicy};
use crate::secrets::MasterKey;
use crate::store::{AttemptOutcome, DispatchJob, Dropped, Store};
use crate::writer::Recorder;

/// What every attempt needs, shared by all attempt tasks.
pub(super) struct Worker {
    pub store: Arc<dyn Store>,
    pub master_key: MasterKey,
    pub outbound: Outbound,
    pub settings: Settings,
    pub node_id: String,
    pub plugins: Arc<PluginRegistry>,
    pub recorder: Recorder,
    pub failing: FailingEndpoints,
}

impl Worker {
    /// Asks the database before disabling (see [`failing::still_failing`]); if the streak was broken, this node
    /// counts again from `now`. A store error leaves the question for the next failure.
    async fn confirm_failing(&self, endpoint: &Endpoint, streak: &Streak, now: Millis) -> bool {
        match failing::still_failing(&*self.store, endpoint, streak.since).await {
            Ok(true) => true,
            Ok(false) => {
                self.failing.restart(&endpoint.id, now);
                false
            }
            Err(error) => {
                tracing::warn!(endpoint_id = %endpoint.id, %error, "could not check a failing endpoint");
                false
            }
        }
    }

    pub(super) async fn attempt(self: Arc<Self>, job: DispatchJob, slot: OwnedSemaphorePermit) {
        let DispatchJob { delivery, event, endpoint, signing_secrets } = job;
        let in_flight = self.recorder.metrics().attempt_started();
        let started_at = now_millis();
        // Filter and transform run once per delivery; later attempts resend what the first one prepared.
        // The plugin calls' futures are boxed: inline, the largest of them sized every attempt's task (3.3 KiB
        // rather than 1.9), and tokio copies a task's future in and its stage out, whether plugins ran or not.
        let (prepared, newly_prepared) = match &delivery.prepared {
            Some(prepared) => (Ok(prepared.clone()), false),
            None => match Box::pin(bound::prepare(&self.plugins, self.recorder.metrics(), &event, &endpoint)).await {
                Preparation::Send(prepared) => (Ok(prepared), true),
                Preparation::Drop { prepared, reason } => {
                    return Box::pin(self.drop_delivery(&delivery, prepared, reason)).await
                }
                Preparation::Failed { prepared, error } => (Err((prepared, error)), false),
            },
        };
        let signer = signing_secrets.signer(&self.master_key, &endpoint);
        // Whether the receiver had its say: a plugin or a local problem that stopped the request is no failure of
        // the endpoint's.
        let mut sent = false;
        let answer = match (&prepared, signer, &endpoint.url) {
            (Err((_, error)), _, _) => Answer::local_failure(error),
            (_, Err(problem), _) => Answer::local_failure(problem),
            (_, _, None) => Answer::local_failure("the endpoint's URL does not parse"),
            (Ok(prepared), Ok(signer), Some(url)) => {
                let body = match &prepared.body {
                    Some(transformed) => Bytes::from(transformed.clone()),
                    None => event.envelope.clone(),
                };
                let signature = signer.headers(&event.id, started_at, &body);
                let identity = RequestIdentity {
                    event_id: &event.id,
                    event_type: &event.event_type,
                    attempt: Some((&delivery.id, delivery.attempts + 1)),
                };
                let headers = send::request_headers(&endpoint, Some(prepared), identity, signature);
                sent = true;
                self.outbound.send(url.clone(), headers, body, send::request_timeout(&endpoint)).await
            }
        };

        let finished_at = now_millis();
        let policy = RetryPolicy::for_endpoint(&endpoint, &self.settings.retry_schedule_ms);
        let verdict = answer.verdict(SystemTime::now());
        let mut resolution = outcome::resolve(
            verdict,
            &policy,
            retry::cycle_index(&delivery),
            rand::thread_rng().gen_range(-1.0..=1.0),
            finished_at,
            self.settings.max_retry_after,
        );
        let mut error = answer.error_text();
        // The retry policy judges the receiver's answers; a plugin that failed to prepare the request is not one.
        let mut policy_used = None;
        if let (Some(binding), Ok(_)) = (&endpoint.plugins.retry_policy, &prepared) {
            if !matches!(verdict, Verdict::Succeeded | Verdict::Gone) {
                let asked = Box::pin(self.ask_retry_policy(binding, &delivery, &endpoint, &answer, finished_at)).await;
                policy_used = asked.0;
                apply_retry_decision(&mut resolution, &mut error, asked.1, finished_at);
            }
        }
        let duration_ms = i64::try_from(answer.duration.as_millis()).unwrap_or(i64::MAX);
        if sent {
            let failed = resolution.outcome != "succeeded";
            // Timed as the store records the attempt's end (the disabled endpoint's `updated_at`, the audit
            // entry's time), so a streak reported as 2 s long spans 2 s of the recorded times. `finished_at` is a
            // few milliseconds later: the request's preparation is not in its duration.
            let recorded_end = started_at.saturating_add(duration_ms);
            if let Some(streak) = self.failing.observe(&endpoint, failed, recorded_end) {
                if resolution.disable_endpoint.is_none()
                    && Box::pin(self.confirm_failing(&endpoint, &streak, recorded_end)).await
                {
                    resolution.disable_endpoint = Some(self.failing.reason(&streak));
                }
            }
        }
        let attempt = Attempt {
            id: crate::model::new_id("att"),
            tenant_id: delivery.tenant_id.clone(),
            delivery_id: delivery.id.clone(),
            attempt_number: delivery.attempts + 1,
            started_at,
            duration_ms,
            status_code: answer.status.map(i64::from),
            response_body: answer.body.clone(),
            error,
            outcome: resolution.outcome.to_string(),
        };
        log_attempt(&attempt, &endpoint, resolution.next_attempt_at);
        let since_received = (resolution.outcome == "succeeded")
            .then(|| Duration::from_millis(u64::try_from(finished_at - event.received_at).unwrap_or(0)));
        self.recorder.metrics().attempted(resolution.outcome, answer.duration, since_received);

        // Stored with the attempt that prepared it, and again when the retry policy ran so its version is recorded.
        let prepared = match (prepared, policy_used) {
            (Ok(mut prepared), Some(used)) => {
                prepared.plugin_versions.insert("retry_policy".into(), used);
                Some(prepared)
            }
            (Ok(prepared), None) if newly_prepared => Some(prepared),
            _ => None,
        };
        let record = AttemptOutcome {
            attempt,
            endpoint_id: delivery.endpoint_id.clone(),
            status: resolution.status,
            next_attempt_at: resolution.next_attempt_at,
            disable_endpoint: resolution.disable_endpoint,
            prepared,
        };
        // The writer takes at least `concurrency` records per commit, so records waiting for a commit stay
        // bounded (about twice the concurrency at worst) even though their slots are already reused.
        drop(slot);
        drop(in_flight);
        if let Err(stopped) = self.recorder.submit(record) {
            // The lease expires and the delivery is attempted again: at-least-once, never lost.
            tracing::error!(delivery_id = %delivery.id, endpoint_id = %endpoint.id, error = %stopped,
                "could not record the attempt; the delivery will be retried when its lease expires");
        }
    }

    async fn drop_delivery(&self, delivery: &Delivery, prepared: PreparedRequest, reason: String) {
        tracing::debug!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, %reason, "delivery dropped");
        self.recorder.metrics().dropped();
        let dropped = Dropped {
            tenant_id: delivery.tenant_id.clone(),
            delivery_id: delivery.id.clone(),
            prepared,
            reason,
            at: now_millis(),
        };
        match self.store.record_drop(&self.node_id, &dropped).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(delivery_id = %delivery.id, "lease was lost before the drop was recorded"),
            Err(e) => tracing::error!(delivery_id = %delivery.id, error = %e,
                "could not record the drop; the delivery will be filtered again when its lease expires"),
        }
    }

    async fn ask_retry_policy(
        &self,
        binding: &PluginBinding,
        delivery: &Delivery,
        endpoint: &Endpoint,
        answer: &Answer,
        finished_at: Millis,
    ) -> (Option<PluginUse>, Result<RetryDecision, String>) {
        let outcome = match (answer.status, &answer.failure) {
            (Some(status), None) => plugin::Outcome::Status(status),
            (_, Some((FailureKind::Timeout, _))) => plugin::Outcome::Error(ErrorKind::Timeout),
            (_, Some((FailureKind::Connect, _))) => plugin::Outcome::Error(ErrorKind::Connect),
            _ => plugin::Outcome::Error(ErrorKind::Other),
        };
        let headers = answer.retry_after.iter().map(|value| ("retry-after".to_string(), value.clone())).collect();
        let attempt = plugin::Attempt {
            number: u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX),
            outcome,
            headers,
            // Deliveries are due from the moment they are created, so that is when the first attempt was made.
            since_first_attempt_ms: u64::try_from(finished_at - delivery.created_at).unwrap_or(0),
            now_ms: u64::try_from(finished_at).unwrap_or(0),
        };
        bound::decide_retry(&self.plugins, self.recorder.metrics(), binding, &attempt, endpoint).await
    }
}

/// The longest delay a retry policy may ask for: a week, so a policy bug cannot park a delivery for years.
const MAX_POLICY_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

/// Overrides the default resolution with what the retry policy decided. A policy that failed leaves the default
/// in place, and its error is recorded next to the attempt's own.
fn apply_retry_decision(
    resolution: &mut Resolution,
    error: &mut Option<String>,
    decision: Result<RetryDecision, String>,
    finished_at: Millis,
) {
    let note = match decision {
        Ok(RetryDecision::UseDefault) => return,
        Ok(RetryDecision::RetryAfter(delay_ms)) => {
            let delay_ms = i64::try_from(delay_ms.min(MAX_POLICY_DELAY_MS)).unwrap_or(i64::MAX);
            *resolution = Resolution {
                outcome: "retry",
                status: DeliveryStatus::Failed,
                next_attempt_at: Some(finished_at.saturating_add(delay_ms)),
                disable_endpoint: None,
            };
            return;
        }
        Ok(RetryDecision::GiveUp(reason)) => {
            *resolution = Resolution {
                outcome: "dead",
                status: DeliveryStatus::Dead,
                next_attempt_at: None,
                disable_endpoint: None,
            };
            format!("retry policy gave up: {reason}")
        }
        // The note first: a long plugin error (a trap's backtrace) is what gets cut to fit.
        Err(failure) => format!("default retry schedule applied; {failure}"),
    };
    let combined = match error.take() {
        Some(existing) => format!("{existing}; {note}"),
        None => note,
    };
    *error = Some(send::truncate_chars(&combined, send::MAX_ERROR_CHARS));
}

fn log_attempt(attempt: &Attempt, endpoint: &Endpoint, next_attempt_at: Option<Millis>) {
    // Ids, status and timing only: payloads, response bodies and secrets stay out of logs.
    let status = attempt.status_code.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    if attempt.outcome == "gone" {
        tracing::warn!(delivery_id = %attempt.delivery_id, endpoint_id = %endpoint.id, attempt = attempt.attempt_number,
            duration_ms = attempt.duration_ms, "receiver answered 410 Gone; disabling the endpoint");
    } else if attempt.outcome == "succeeded" {
        // Successes are the bulk and are recorded in the store; failures stay visible at warn.
        tracing::debug!(delivery_id = %attempt.delivery_id, endpoint_id = %endpoint.id, attempt = attempt.attempt_number,
            status = %status, duration_ms = attempt.duration_ms, "delivered");
    } else {
        tracing::warn!(delivery_id = %attempt.delivery_id, endpoint_id = %endpoint.id, attempt = attempt.attempt_number,
            status = %status, duration_ms = attempt.duration_ms, outcome = %attempt.outcome,
            error = attempt.error.as_deref(),
            retry_in_ms = next_attempt_at.map(|at| at - now_millis()), "delivery attempt failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Millis = 1_700_000_000_000;

    fn default_retry() -> Resolution {
        Resolution {
            outcome: "retry",
            status: DeliveryStatus::Failed,
            next_attempt_at: Some(AT + 60_000),
            disable_endpoint: None,
        }
    }

    fn applied(decision: Result<RetryDecision, String>) -> (Resolution, Option<String>) {
        let mut resolution = default_retry();
        let mut error = Some("HTTP 503".to_string());
        apply_retry_decision(&mut resolution, &mut error, decision, AT);
        (resolution, error)
    }

    #[test]
    fn use_default_changes_nothing() {
        assert_eq!(applied(Ok(RetryDecision::UseDefault)), (default_retry(), Some("HTTP 503".into())));
    }

    #[test]
    fn retry_after_replaces_the_schedule_within_a_week() {
        let (resolution, error) = applied(Ok(RetryDecision::RetryAfter(5_000)));
        assert_eq!((resolution.status, resolution.next_attempt_at), (DeliveryStatus::Failed, Some(AT + 5_000)));
        assert_eq!(error.as_deref(), Some("HTTP 503"));
        let (resolution, _) = applied(Ok(RetryDecision::RetryAfter(u64::MAX)));
        assert_eq!(resolution.next_attempt_at, Some(AT + MAX_POLICY_DELAY_MS as i64));
    }

    #[test]
    fn give_up_dead_letters_with_the_reason() {
        let (resolution, error) = applied(Ok(RetryDecision::GiveUp("closed for the weekend".into())));
        assert_eq!(
            (resolution.status, resolution.outcome, resolution.next_attempt_at),
            (DeliveryStatus::Dead, "dead", None)
        );
        assert_eq!(error.as_deref(), Some("HTTP 503; retry policy gave up: closed for the weekend"));
    }

    #[test]
    fn a_failing_policy_keeps_the_default_and_says_so() {
        let (resolution, error) = applied(Err("retry policy plugin `p` (abc): the plugin trapped: x".into()));
        assert_eq!(resolution, default_retry());
        let error = error.unwrap();
        assert_eq!(
            error,
            "HTTP 503; default retry schedule applied; retry policy plugin `p` (abc): the plugin trapped: x"
        );
    }
}
