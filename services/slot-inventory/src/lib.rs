//! # slot-inventory
//! One hospital's (or campus's) bookable slots. Runs once per hospital, with
//! its own PostgreSQL database; Redis keys are under the hospital's hash tag.
//!
//! # Layout
//! - [`settings`]: typed settings and their validation.
//! - [`startup`]: [`Application::build`] binds the listener and wires state.
//! - [`policy`]: release window, cancellation deadline, holds, pools, limits.
//! - [`schedule`]: departments, doctors, schedules, time segments; listing.
//! - [`booking`]: the surge path: [`booking::hold`] (Redis Lua scripts),
//!   [`booking::service`] (hold → write → compensate), [`booking::queries`].
//! - [`routes`]: HTTP handlers, one file per resource.
//! - [`precise`]: 精准预约: experts' patient profiles, submissions, 加号 seats.
//! - [`lottery`]: fair release by draw: entries, the seeded draw, its record.
//! - [`fhir`]: the hospital's FHIR R4 API and SMART Scheduling Links feed.
//! - [`error`]: [`SlotError`], every answer's machine code.
//! - [`seed`]: a demo day of clinics.

pub mod booking;
pub mod booking_policy;
pub mod error;
pub mod federation;
pub mod fhir;
pub mod lottery;
pub mod policy;
pub mod precise;
pub mod routes;
pub mod schedule;
pub mod seed;
pub mod settings;
pub mod startup;
pub mod state;

pub use error::SlotError;
pub use settings::Settings;
pub use startup::{Application, Hospital, Served, serve_together};
pub use state::AppState;
