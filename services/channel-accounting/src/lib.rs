//! # channel-accounting
//! Every booking, payment, refund and card event, from every hospital,
//! applied once into per channel, hospital and day figures and a money
//! ledger in fen, reconciled against each channel's statement, and shown to
//! the municipal operators on a console.
//!
//! # Layout
//! - [`settings`]: typed settings (streams, fee rates, operator accounts).
//! - [`startup`]: [`Application::build`], one consumer task per stream.
//! - [`consumer`]: read, apply, acknowledge; consumer-lag metric.
//! - [`ledger`]: applies one event exactly once (event id unique in
//!   PostgreSQL); what each event type does.
//! - [`audit`]: the audit trail (capacity, stops, waivers, appeals, with
//!   their actor) and the waitlists' 加号 requests, from events.
//! - [`precise`]: 精准预约 figures per submission, from events.
//! - [`family_doctor`]: signings per centre and team, referrals by target
//!   hospital (家庭医生签约, 转诊), from `signing.*` and `referral.*`.
//! - [`auth`]: operators (roles city / hospital), password hashes, sessions.
//! - [`relay`]: the client of the gateway's operators' relay (`/ops/v1`).
//! - [`reconcile`]: the statement file format, matching, mismatches.
//! - [`routes`]: reports (`/v1/reports/*`, JSON or CSV), login, statements,
//!   the console page and its overview.
//! - [`survey`]: the post-visit satisfaction survey: created from
//!   `booking.completed`, answered once through the gateway (the
//!   internal door in [`routes::surveys`]), counted on the 满意度 page
//!   ([`routes::satisfaction`]).
//! - [`error`]: [`AccountingError`] and its machine codes.

pub mod audit;
pub mod auth;
pub mod consumer;
pub mod error;
pub mod family_doctor;
pub mod ledger;
pub mod precise;
pub mod reconcile;
pub mod relay;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod survey;

pub use error::AccountingError;
pub use settings::Settings;
pub use startup::Application;
