//! HTTP routes; each file holds one resource's handlers.

pub mod bookings;
pub mod federation;
pub mod patients;
pub mod schedules;

use actix_web::web;
use jyt_domain::BookingRef;
use jyt_web::RequestError;

use crate::error::SlotError;
use crate::settings::LockKind;

/// A `<hospital>-<uuid>` booking id from a path, or 400 naming `booking_id`.
pub(crate) fn booking_ref(raw: &str) -> Result<BookingRef, SlotError> {
    raw.parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("booking_id", e.to_string()).into())
}

/// Every route; `lock` binds `POST /v1/bookings` to the Redis design or,
/// for the load test's baseline, to the PostgreSQL-lock one, once at start.
pub fn configure(cfg: &mut web::ServiceConfig, lock: LockKind) {
    match lock {
        LockKind::Redis => cfg.service(bookings::create),
        LockKind::Postgres => cfg.service(bookings::create_with_postgres_lock),
    };
    cfg.service(bookings::get)
        .service(bookings::confirm)
        .service(bookings::cancel)
        .service(bookings::check_in)
        .service(patients::bookings)
        .service(patients::no_show_cause)
        .service(schedules::list)
        .service(schedules::join_waitlist)
        .service(schedules::get_waitlist_entry)
        .service(schedules::set_capacity)
        .service(federation::publish_schedules)
        .service(federation::stop_schedule)
        .service(federation::arrive)
        .service(federation::complete)
        .service(federation::bookings_feed)
        .service(crate::fhir::routes::scope());
}
