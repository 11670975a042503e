//! HTTP routes; each file holds one resource's handlers.

pub mod availability;
pub mod bookings;
pub mod cards;
pub mod draws;
pub mod family;
pub mod family_doctor;
pub mod federation;
pub mod hospitals;
pub mod ops;
pub mod patient_actions;
pub mod patients;
pub mod payments;
pub mod precise;
pub mod referrals;
pub mod standing;
pub mod surveys;
pub mod waitlist;

use actix_web::middleware::from_fn;
use actix_web::web;

/// Every route, each family in the scope whose middleware authenticates
/// it. Authentication is bound to the routed scope, not to a spelling of
/// the path: whatever percent-encoding or dot segment a request uses, if
/// actix routes it to a handler in `/v1`, `/fhir` (signed part) or
/// `/federation/v1`, that scope's check has run first. (Non-canonical
/// paths are refused before routing anyway: [`crate::auth::canonical_path`].)
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in this order, each pattern with parameters by
    // regex: the channels' `/v1`, nearly all the traffic, goes first
    // (no other route starts with `/v1`).
    cfg.service(
        web::scope("/v1")
            .wrap(from_fn(crate::auth::authenticate_channel))
            .configure(configure_channel),
    )
    .service(crate::openapi::document)
    .service(crate::notify::list_dead)
    .service(crate::notify::replay_dead)
    // The operators' relay: each handler checks the `gateway-ops`
    // token and the operator it names (`ops::OpsOperator`).
    .service(ops::dead_letters)
    .service(ops::replay_dead_letter)
    .service(ops::schedules)
    .service(ops::set_capacity)
    .service(ops::policy)
    .service(ops::set_policy)
    .service(ops::draw)
    .service(ops::appeals)
    .service(ops::decide_appeal)
    // The public FHIR reads (capability statement, SMART bulk feed)
    // are registered before the signed `/fhir` scope, which would
    // otherwise take every `/fhir/...` path.
    .configure(crate::fhir::configure_public)
    .service(
        web::scope("/fhir")
            .wrap(from_fn(crate::auth::authenticate_channel))
            .configure(crate::fhir::configure_signed),
    )
    .service(
        web::scope("/federation/v1")
            .wrap(from_fn(crate::auth::authenticate_hospital))
            .configure(configure_federation),
    );
}

/// `/v1`: channel apps' signed requests.
fn configure_channel(cfg: &mut web::ServiceConfig) {
    cfg.service(bookings::create)
        .service(bookings::get)
        .service(payments::pay)
        .service(patient_actions::cancel)
        .service(patient_actions::join_waitlist)
        .service(waitlist::get)
        .service(precise::profile)
        .service(precise::submit)
        .service(precise::get)
        .service(draws::entry)
        .service(patient_actions::check_in)
        .service(hospitals::list)
        .service(hospitals::schedules)
        .service(availability::search)
        .service(cards::top_up)
        .service(cards::ecard_token)
        .service(cards::cancel)
        .service(surveys::get)
        .service(surveys::answer)
        .configure(configure_patients);
}

/// `/v1/patients`, `/v1/family-verifications`: patient services (issue 22).
fn configure_patients(cfg: &mut web::ServiceConfig) {
    cfg.service(patients::register)
        .service(patients::get)
        .service(patients::cards)
        .service(patients::apply_ecard)
        .service(patients::report_loss)
        .service(patients::replace)
        .service(patients::ledger)
        .service(family::list)
        .service(family::bind)
        .service(family::confirm)
        .service(family_doctor::sign)
        .service(family_doctor::list)
        .service(family_doctor::end)
        .service(standing::get)
        .service(standing::appeal)
        .service(standing::bookings);
}

/// `/federation/v1`: member hospitals' signed requests.
fn configure_federation(cfg: &mut web::ServiceConfig) {
    cfg.service(federation::publish)
        .service(federation::set_capacity)
        .service(federation::stop)
        .service(federation::visit_step)
        .service(federation::feed)
        .service(federation::satisfaction)
        .service(draws::federation_record)
        .service(federation::follow_up)
        .service(federation::put_precise_profile)
        .service(federation::precise_submissions)
        .service(federation::decide_precise_submission)
        .service(referrals::put_teams)
        .service(referrals::teams)
        .service(referrals::issue)
        .service(crate::fhir::federation::read);
}
