//! # gateway
//! The city-wide front door for every booking channel. Stateless: any
//! replica answers any request; nonces, caches and city-wide counters live
//! in Redis, and slot and booking ids carry their hospital, so routing
//! needs no lookup.
//!
//! A `/v1` request passes, in order: signature and nonce ([`auth`]), the
//! app's and the address's token buckets ([`limits`]), the handler's input
//! checks, the patient's identity ([`identity`]), the person's buckets and
//! anti-scalping rules, standing, the daily limit, and finally the
//! hospital's lane ([`upstream`]).
//!
//! # Layout
//! - [`settings`]: typed settings: channel apps, hospital registry, limits.
//! - [`startup`]: [`Application::build`] binds the listener and serves.
//! - request signing is the shared `jyt_signing::channel` (channels, tests
//!   and the load generator sign with it).
//! - [`auth`]: the middleware that verifies every `/v1` request.
//! - [`identity`]: card / e-card → person, standing, family (card-issuing, cached).
//! - [`limits`]: rate limits, anti-scalping and the daily limit.
//! - [`upstream`]: per-hospital timeouts, bulkheads and circuit breakers.
//! - [`booking`]: the booking pipeline and the ownership rule every door
//!   shares (`/v1` and FHIR).
//! - [`routes`]: `/v1/bookings` (and their payments), `/v1/hospitals`,
//!   `/v1/availability`, `/v1/waitlist`.
//! - [`summaries`]: the hospitals' availability summaries in Redis, read
//!   per date and kept for `search.max_age_ms`, for search.
//! - [`notify`]: signed booking notices to channels' callbacks, with
//!   retries, backoff and an operator-visible dead-letter list; which
//!   notices for which event, and when, in [`notices`].
//! - [`surveys`]: the client of channel-accounting's survey door; the
//!   post-visit survey routes (`/v1/surveys`) check the app and patient.
//! - [`fhir`]: FHIR R4 for channels (signed), hospitals (their keys) and
//!   aggregators (the public SMART Scheduling Links bulk feed).
//! - [`openapi`]: the OpenAPI 3 document at `/openapi.json`.
//! - [`error`]: [`GatewayError`] and its machine codes.

pub mod auth;
pub mod booking;
pub mod error;
pub mod fhir;
pub mod identity;
pub mod limits;
pub mod notices;
pub mod notify;
pub mod openapi;
pub mod payment;
pub mod routes;
pub mod settings;
pub mod signings;
pub mod soldout;
pub mod startup;
pub mod state;
pub mod summaries;
pub mod surveys;
pub mod upstream;

pub use error::GatewayError;
pub use settings::Settings;
pub use startup::Application;
