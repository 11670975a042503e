//! # Layout
//! The HTTP conventions every service follows, in one place:
//! - [`problem`]: `application/problem+json` bodies with a stable machine
//!   `code`, and [`RequestError`] for input that fails before a handler runs.
//! - [`extract`]: `Json`, `Query` and header extractors whose errors name the
//!   offending field (`patient_id`, `Idempotency-Key`, ...).
//! - [`ops`]: `/healthz`, `/readyz` and `/metrics`, plus the request metrics
//!   middleware and OpenTelemetry request tracing.
//! - [`server`]: binding the API and ops listeners and serving, once for all.
//! - [`internal`]: the internal-token door of the services behind the gateway.

pub mod extract;
pub mod internal;
pub mod ops;
pub mod problem;
pub mod server;

pub use extract::{IdempotencyKeyHeader, Json, Query};
pub use ops::{Metrics, Readiness};
pub use problem::{Problem, RequestError};
