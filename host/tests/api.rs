//! REST API tests through real HTTP against an in-process server: status codes, the JSON error shape with its
//! `field`, authentication and tenancy, validation, idempotency, pagination, secret masking and the audit log.
//! Delivery itself (signing, retries, receivers) is tested in `delivery.rs`.

mod support;

#[path = "api/auth.rs"]
mod auth;
#[path = "api/deliveries.rs"]
mod deliveries;
#[path = "api/endpoints.rs"]
mod endpoints;
#[path = "api/events.rs"]
mod events;
#[path = "api/general.rs"]
mod general;
