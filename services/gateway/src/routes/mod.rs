//! HTTP routes; each file holds one resource's handlers.

pub mod availability;
pub mod bookings;
pub mod federation;
pub mod hospitals;
pub mod patient_actions;
pub mod payments;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(bookings::create)
        .service(bookings::get)
        .service(payments::pay)
        .service(patient_actions::cancel)
        .service(patient_actions::join_waitlist)
        .service(patient_actions::check_in)
        .service(hospitals::list)
        .service(hospitals::schedules)
        .service(availability::search)
        .service(crate::openapi::document)
        .service(crate::notify::list_dead)
        .service(crate::notify::replay_dead)
        .service(federation::publish)
        .service(federation::set_capacity)
        .service(federation::stop)
        .service(federation::visit_step)
        .service(federation::feed)
        .service(federation::follow_up)
        .configure(crate::fhir::configure);
}
