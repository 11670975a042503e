//! # channel-accounting
//! Every booking event, from every hospital, counted once per channel,
//! hospital and day, for the municipal operators.
//!
//! # Layout
//! - [`settings`]: typed settings (streams to consume, consumer group).
//! - [`startup`]: [`Application::build`], one consumer task per stream.
//! - [`consumer`]: read, apply, acknowledge; consumer-lag metric.
//! - [`ledger`]: applies one event exactly once (event id unique in PostgreSQL).
//! - [`routes`]: the reports API, `/v1/reports/channels`.
//! - [`error`]: [`AccountingError`] and its machine codes.

pub mod consumer;
pub mod error;
pub mod ledger;
pub mod routes;
pub mod settings;
pub mod startup;

pub use error::AccountingError;
pub use settings::Settings;
pub use startup::Application;
