//! A lottery's entries and draws (see [`crate::lottery`]).

use actix_web::{HttpResponse, get, web};
use jyt_domain::BookingRef;
use jyt_web::RequestError;
use uuid::Uuid;

use crate::error::SlotError;
use crate::lottery::record;
use crate::state::AppState;

/// One entry and, once drawn, its outcome. The gateway answers it only to
/// the entry's app or an app presenting the patient's card.
#[get("/v1/draw-entries/{entry_id}")]
pub async fn get_entry(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SlotError> {
    // Entry ids have the booking ids' shape: `<hospital>-<uuid>`.
    let entry: BookingRef = path
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("entry_id", e.to_string()))?;
    if entry.hospital != state.hospital {
        return Err(SlotError::EntryNotFound(path.into_inner()));
    }
    Ok(HttpResponse::Ok().json(record::entry(&state, entry.id).await?))
}

/// A schedule's draw record with the reproduction check (the hospital's
/// federation API and the operators' console reach it through the gateway).
///
/// `GET /v1/schedules/{schedule_id}/draw`.
#[get("/draw")]
pub async fn get_draw(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SlotError> {
    let schedule =
        Uuid::parse_str(&path).map_err(|_| RequestError::invalid("schedule_id", "must be a UUID"))?;
    Ok(HttpResponse::Ok().json(record::draw_record(&state, schedule).await?))
}
