//! # FHIR R4
//! The hospital's own FHIR R4 API, reached only through the gateway like
//! the `/v1` routes: read models of its Location, Schedules, Slots and
//! Appointments, the booking operations `$find`, `$hold` and `$book` (thin
//! wrappers around the same service functions `/v1/bookings` runs), and the
//! SMART Scheduling Links bulk feed (`$bulk-publish`).
//!
//! - [`resources`]: our rows as FHIR resources (the one place the mapping
//!   of statuses, ids and extensions lives).
//! - [`params`]: search parameters and `Parameters` bodies, refused with a
//!   400 naming the parameter.
//! - [`queries`]: the SQL of the read models.
//! - [`operations`]: `$find`, `$hold`, `$book`.
//! - [`bulk`]: the manifest, NDJSON files and their ETag.
//! - [`outcome`]: every error as an `OperationOutcome`.
//! - [`routes`]: the `/fhir` scope.

pub mod bulk;
pub mod operations;
pub mod outcome;
pub mod params;
pub mod queries;
pub mod resources;
pub mod routes;

use actix_web::HttpRequest;

use crate::state::AppState;

pub const FHIR_JSON: &str = "application/fhir+json";
pub const FHIR_NDJSON: &str = "application/fhir+ndjson";
/// Codes of departments (the hospital's own ids).
pub const DEPARTMENT_SYSTEM: &str = "urn:jyt:department";
/// general, expert, special, ct, mri.
pub const CLINIC_LEVEL_SYSTEM: &str = "urn:jyt:clinic-level";
/// The service's stable machine codes (`SLOT_SOLD_OUT`, ...).
pub const ERROR_CODE_SYSTEM: &str = "urn:jyt:error-code";
/// An unpaid hold's deadline on a `pending` Appointment.
pub const HOLD_EXPIRES: &str = "https://jyt.example/fhir/StructureDefinition/hold-expires";
pub const SLOT_CAPACITY: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/slot-capacity";
pub const BOOKING_DEEP_LINK: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/booking-deep-link";
pub const BOOKING_PHONE: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/booking-phone";
/// The channel the gateway established for a `$hold` (same values as
/// `/v1/bookings`' `channel`).
pub const CHANNEL_HEADER: &str = "Jyt-Channel";

/// The absolute base every `fullUrl` and manifest URL starts with: the
/// configured public one, else this request's scheme and host.
pub fn base_url(state: &AppState, req: &HttpRequest) -> String {
    let configured = &state.settings.fhir.public_base_url;
    if !configured.is_empty() {
        return configured.clone();
    }
    let info = req.connection_info();
    let host = info.host();
    // A Host header is the client's word: only a plain host[:port] may
    // become part of the URLs we hand out.
    let host = if !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        host
    } else {
        "localhost"
    };
    let scheme = if info.scheme() == "https" { "https" } else { "http" };
    format!("{scheme}://{host}/fhir")
}
