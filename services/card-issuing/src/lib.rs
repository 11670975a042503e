//! # card-issuing
//! The city's patient index and platform card (京医通卡): real-name
//! registration, personal data sealed at rest, physical cards and e-cards,
//! family members (就诊人), the prepaid ledger and no-show standing. One
//! instance (or several replicas) for the whole city, with its own
//! PostgreSQL database (`jyt_card`).
//!
//! # Layout
//! - [`settings`]: typed settings and their validation.
//! - [`startup`]: [`Application::build`] binds the listener and wires state,
//!   the outbox relay and the booking-event consumer.
//! - [`identity`]: resident ID numbers (GB 11643 check digit), phones,
//!   masking; their `Debug` never shows a whole number.
//! - [`crypto`]: AES-256-GCM keyring with rotation; HMAC blind index.
//! - [`persons`]: registration, masked views, audited operator reveal.
//! - [`cards`]: issue, report loss, replace, cancel, resolve; Luhn numbers.
//! - [`ecard`]: pure e-card token signing and [`verify_ecard_token`], which
//!   the gateway calls with the shared secret and no database.
//! - [`family`]: binding rules and monthly limits (Asia/Shanghai months).
//! - [`family_doctor`]: family doctor teams and residents' year-long
//!   signings (家庭医生签约), one per person, capacity per team.
//! - [`ledger`]: double-entry prepaid balance and the daily channel report.
//! - [`standing`]: no-shows, bars and waivers; [`consumer`] feeds it (and
//!   credits back prepaid-card fees of refunded bookings) from
//!   slot-inventory's event stream.
//! - [`appeals`]: patients' appeals against no-shows, granted at once when
//!   the hospital caused the no-show, else queued for an operator.
//! - [`operator`]: bearer-token operators (tokens kept as SHA-256 hashes).
//! - [`routes`]: HTTP handlers, one file per resource.
//! - [`error`]: [`CardError`], every answer's machine code.

pub mod appeals;
pub mod cards;
pub mod consumer;
pub mod crypto;
pub mod ecard;
pub mod error;
pub mod family;
pub mod family_doctor;
pub mod identity;
pub mod ledger;
pub mod operator;
pub mod persons;
pub mod routes;
pub mod settings;
pub mod standing;
pub mod startup;
pub mod state;

pub use ecard::{EcardClaims, EcardTokenError, sign_ecard_token, verify_ecard_token};
pub use error::CardError;
pub use settings::Settings;
pub use startup::Application;
pub use state::AppState;
