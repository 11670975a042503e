//! HTTP routes; each file holds one resource's handlers.

pub mod audit;
pub mod capacity_requests;
pub mod console;
pub mod draws;
pub mod family_doctor;
pub mod operations;
pub mod operators;
pub mod precise;
pub mod query;
pub mod reconciliation;
pub mod reports;
pub mod satisfaction;
pub mod surge;
pub mod surveys;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(reports::channels)
        .service(reports::money)
        .service(reports::settlement)
        .service(operators::login)
        .service(operators::me)
        .service(operators::logout)
        .service(reconciliation::import)
        .service(reconciliation::list)
        .service(console::overview)
        .service(audit::trail)
        .service(capacity_requests::list)
        .service(precise::figures)
        .service(family_doctor::view)
        .service(surge::surge)
        .service(satisfaction::satisfaction)
        .service(draws::list)
        .service(draws::draw_record)
        .service(operations::schedules)
        .service(operations::set_capacity)
        .service(operations::policy)
        .service(operations::set_policy)
        .service(operations::dead_letters)
        .service(operations::replay)
        .service(operations::appeals)
        .service(operations::decide_appeal)
        .service(console::page)
        .service(console::script)
        .service(console::style)
        .configure(surveys::configure);
}
