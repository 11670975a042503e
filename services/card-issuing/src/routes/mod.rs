//! HTTP routes; each file holds one resource's handlers.

pub mod appeals;
pub mod cards;
pub mod family;
pub mod family_doctor;
pub mod ledger;
pub mod persons;
pub mod standing;

use actix_web::web;
use jyt_web::RequestError;
use uuid::Uuid;

/// Every route. actix tries the routes in this order, matching each
/// dynamic path by regex, and once more to name the matched route for
/// the trace, so the gateway's calls on a booking's path come first:
/// standing, resolve (one card, and many), payments and refunds, a
/// holder's family. With the standing read 29th of 34, regex matching was
/// a quarter of this service's CPU in the peak-day bookings phase
/// (loadtest/README.md, 2026-12-05). Moving them shadows nothing: no route
/// after them has a path of the same shape, except `family::bind`, told
/// apart by method.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(standing::get)
        .service(cards::resolve)
        .service(cards::resolve_many)
        .service(ledger::pay)
        .service(ledger::refund)
        .service(family::list)
        .service(persons::register)
        .service(persons::search)
        .service(persons::get)
        .service(persons::reveal)
        .service(cards::issue)
        .service(cards::get)
        .service(cards::of_person)
        .service(cards::report_loss)
        .service(cards::replace)
        .service(cards::cancel)
        .service(cards::ecard_token)
        .service(ledger::top_up)
        .service(ledger::history)
        .service(ledger::daily_report)
        .service(family::bind)
        .service(family::unbind)
        .service(family::start_verification)
        .service(family::verification)
        .service(family::confirm_verification)
        .service(family_doctor::upsert_teams)
        .service(family_doctor::teams)
        .service(family_doctor::sign)
        .service(family_doctor::of_person)
        .service(family_doctor::end)
        .service(standing::waive)
        .service(appeals::submit)
        .service(appeals::of_person)
        .service(appeals::list)
        .service(appeals::decide);
}

/// A path segment that must be a UUID, refused naming `field`.
pub fn uuid_param(raw: &str, field: &str) -> Result<Uuid, RequestError> {
    Uuid::parse_str(raw).map_err(|_| RequestError::invalid(field, "must be a UUID"))
}
