//! The hospital's side (reached only through the gateway's federation
//! API, which checks the hospital's credentials).

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use jyt_web::{Json, Query, RequestError};
use uuid::Uuid;

use super::booking_ref;
use crate::error::SlotError;
use crate::federation::{feed, publish, stop, visits};
use crate::state::AppState;

/// Bulk upsert of departments, doctors and schedules by the hospital's ids.
#[put("/v1/schedules")]
pub async fn publish_schedules(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<publish::PublishRequest>,
) -> Result<HttpResponse, SlotError> {
    let actor = super::actor(&req)?;
    Ok(HttpResponse::Ok().json(publish::publish_by(&state, &body.0, &actor).await?))
}

/// 停诊.
///
/// `POST /v1/schedules/{schedule_id}/stop`.
#[post("/stop")]
pub async fn stop_schedule(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<stop::StopRequest>,
) -> Result<HttpResponse, SlotError> {
    let schedule =
        Uuid::parse_str(&path).map_err(|_| RequestError::invalid("schedule_id", "must be a UUID"))?;
    let actor = super::actor(&req)?;
    Ok(HttpResponse::Ok().json(stop::stop_by(&state, schedule, &body.0, &actor).await?))
}

/// `POST /v1/bookings/{booking_id}/arrive`.
#[post("/arrive")]
pub async fn arrive(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, SlotError> {
    let stored = visits::arrive(&state, &booking_ref(&path)?).await?;
    Ok(HttpResponse::Ok().json(stored.booking))
}

/// `POST /v1/bookings/{booking_id}/complete`.
#[post("/complete")]
pub async fn complete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SlotError> {
    let stored = visits::complete(&state, &booking_ref(&path)?).await?;
    Ok(HttpResponse::Ok().json(stored.booking))
}

/// Booking changes after `since`, in order, each exactly once.
#[get("/v1/feed")]
pub async fn bookings_feed(
    state: web::Data<AppState>,
    query: Query<feed::FeedQuery>,
) -> Result<HttpResponse, SlotError> {
    Ok(HttpResponse::Ok().json(feed::page(&state, &query.0).await?))
}
