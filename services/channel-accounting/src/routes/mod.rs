//! HTTP routes; each file holds one resource's handlers.

pub mod reports;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(reports::channels);
}
