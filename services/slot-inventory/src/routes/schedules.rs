use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use jyt_web::{Json, RequestError};
use uuid::Uuid;

use crate::booking::waitlist;
use crate::schedule::capacity;
use chrono::NaiveDate;
use jyt_web::Query;
use serde::Deserialize;

use crate::error::SlotError;
use crate::schedule::listing;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateQuery {
    /// Visit date, `YYYY-MM-DD`, in Asia/Shanghai.
    pub date: NaiveDate,
}

#[get("/v1/schedules")]
pub async fn list(state: web::Data<AppState>, query: Query<DateQuery>) -> Result<HttpResponse, SlotError> {
    Ok(HttpResponse::Ok().json(listing::schedules_on(&state, query.0.date).await?))
}

fn uuid_of(field: &str, raw: &str) -> Result<Uuid, SlotError> {
    Uuid::parse_str(raw).map_err(|_| RequestError::invalid(field, "must be a UUID").into())
}

/// 候补: join a full schedule's waitlist (201), or see one's place again
/// (200), for the channel app the gateway names in `Jyt-App`.
///
/// `POST /v1/schedules/{schedule_id}/waitlist`.
#[post("/waitlist")]
pub async fn join_waitlist(
    state: web::Data<AppState>,
    path: web::Path<String>,
    http: HttpRequest,
    body: Json<waitlist::JoinRequest>,
) -> Result<HttpResponse, SlotError> {
    let schedule = uuid_of("schedule_id", &path)?;
    let mut req = body.0;
    req.owner_app = crate::booking::owner::acting_app(&http)?;
    let (entry, created) = waitlist::join(&state, schedule, &req).await?;
    Ok(if created {
        HttpResponse::Created().json(entry)
    } else {
        HttpResponse::Ok().json(entry)
    })
}

#[get("/v1/waitlist/{entry_id}")]
pub async fn get_waitlist_entry(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SlotError> {
    let entry = uuid_of("entry_id", &path)?;
    Ok(HttpResponse::Ok().json(waitlist::get(&state, entry).await?))
}

/// 加号 (or a cut down to the highest booked seat): answers the segment's
/// new capacity and how many waiting patients the new seats went to.
#[put("/v1/segments/{segment_id}/capacity")]
pub async fn set_capacity(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<capacity::CapacityChange>,
) -> Result<HttpResponse, SlotError> {
    let segment = uuid_of("segment_id", &path)?;
    let actor = super::actor(&req)?;
    let promoted = capacity::set_segment_capacity_by(&state, segment, &body.0, &actor).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "segment_id": segment,
        "capacity": body.0.capacity,
        "promoted_from_waitlist": promoted,
    })))
}
