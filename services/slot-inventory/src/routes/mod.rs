//! HTTP routes; each file holds one resource's handlers.

pub mod bookings;
pub mod draws;
pub mod federation;
pub mod patients;
pub mod policy;
pub mod precise;
pub mod referrals;
pub mod schedules;

use actix_web::{HttpMessage, HttpRequest, web};
use jyt_domain::BookingRef;
use jyt_web::RequestError;
use jyt_web::internal::InternalCaller;

use crate::error::SlotError;
use crate::settings::LockKind;

/// A `<hospital>-<uuid>` booking id from a path, or 400 naming `booking_id`.
pub(crate) fn booking_ref(raw: &str) -> Result<BookingRef, SlotError> {
    raw.parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("booking_id", e.to_string()).into())
}

/// The header in which the gateway names the person or system behind a
/// change (a hospital's federation key, a console operator), for the
/// audit trail the change's event feeds.
pub const ACTOR_HEADER: &str = "X-Actor";

/// Who made a change: the internal caller (only it can reach this
/// service), and the actor it vouches for when it names one, e.g.
/// `gateway/operator:pumch_ops`. A malformed `X-Actor` is refused rather
/// than recorded half-read.
pub(crate) fn actor(req: &HttpRequest) -> Result<String, SlotError> {
    let caller = req
        .extensions()
        .get::<InternalCaller>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.clone());
    let Some(value) = req.headers().get(ACTOR_HEADER) else {
        return Ok(caller);
    };
    let named = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| !c.is_control()))
        .ok_or_else(|| RequestError::invalid(ACTOR_HEADER, "must be 1 to 128 printable characters"))?;
    Ok(format!("{caller}/{named}"))
}

/// Every route; `lock` binds `POST /v1/bookings` to the Redis design or,
/// for the load test's baseline, to the PostgreSQL-lock one, once at start.
///
/// The routes under one id (a booking's, a schedule's, a doctor's, a
/// submission's) are a scope each, with the handlers' paths relative to
/// it. Why: the router compiles a regex for every pattern with an `{id}`
/// in it, and each of those holds about 20 KB (its one-pass DFA most of
/// it, for the Unicode class `[^/]`), once per app. An app is built per
/// listener and worker, so one process serving 20 hospitals on 2 workers
/// builds 40 (issue 20: under heaptrack, the routers were 30 MB of that
/// process's 69 MB peak heap in a quarter peak-day). A scope is one regex
/// for all of its routes, whose own paths are plain strings. Each scope
/// comes after the plain routes that share its prefix
/// (`/v1/bookings/lookup`, `/v1/precise-submissions`): a request that
/// matches a scope's prefix is answered inside it, or 404.
pub fn configure(cfg: &mut web::ServiceConfig, lock: LockKind) {
    match lock {
        LockKind::Redis => cfg.service(bookings::create),
        LockKind::Postgres => cfg.service(bookings::create_with_postgres_lock),
    };
    cfg.service(bookings::lookup)
        .service(draws::get_entry)
        .service(patients::bookings)
        .service(policy::get)
        .service(policy::put)
        .service(schedules::list)
        .service(schedules::get_waitlist_entry)
        .service(schedules::set_capacity)
        .service(federation::publish_schedules)
        .service(federation::bookings_feed)
        .service(precise::list_submissions)
        .service(referrals::issue)
        .service(referrals::get)
        .service(
            web::scope("/v1/bookings/{booking_id}")
                .service(bookings::get)
                .service(bookings::confirm)
                .service(bookings::cancel)
                .service(bookings::check_in)
                .service(patients::no_show_cause)
                .service(federation::arrive)
                .service(federation::complete),
        )
        .service(
            web::scope("/v1/schedules/{schedule_id}")
                .service(schedules::join_waitlist)
                .service(draws::get_draw)
                .service(federation::stop_schedule),
        )
        .service(
            web::scope("/v1/doctors/{doctor_id}")
                .service(precise::put_profile)
                .service(precise::get_profile)
                .service(precise::submit),
        )
        .service(
            web::scope("/v1/precise-submissions/{submission_id}")
                .service(precise::get_submission)
                .service(precise::decide),
        )
        .service(crate::fhir::routes::scope());
}
