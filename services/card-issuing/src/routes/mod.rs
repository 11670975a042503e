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

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(persons::register)
        .service(persons::search)
        .service(persons::get)
        .service(persons::reveal)
        .service(cards::issue)
        .service(cards::resolve)
        .service(cards::get)
        .service(cards::of_person)
        .service(cards::report_loss)
        .service(cards::replace)
        .service(cards::cancel)
        .service(cards::ecard_token)
        .service(ledger::top_up)
        .service(ledger::pay)
        .service(ledger::refund)
        .service(ledger::history)
        .service(ledger::daily_report)
        .service(family::bind)
        .service(family::list)
        .service(family::unbind)
        .service(family::start_verification)
        .service(family::verification)
        .service(family::confirm_verification)
        .service(family_doctor::upsert_teams)
        .service(family_doctor::teams)
        .service(family_doctor::sign)
        .service(family_doctor::of_person)
        .service(family_doctor::end)
        .service(standing::get)
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
