use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use jyt_web::Json;

use super::uuid_param;
use crate::error::CardError;
use crate::operator::OperatorId;
use crate::standing::{self, WaiveRequest};
use crate::state::AppState;

/// Asked by the gateway before each booking; it may cache the answer for
/// `standing.cache_seconds`.
#[get("/v1/persons/{person_id}/standing")]
pub async fn get(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "person_id")?;
    let standing = standing::standing(&state, id, Utc::now()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("private, max-age={}", state.settings.standing.cache_seconds),
        ))
        .json(standing))
}

/// An operator waives a no-show (e.g. the clinic was stopped); idempotent.
#[post("/v1/persons/{person_id}/no-shows/{event_id}/waiver")]
#[tracing::instrument(skip_all, fields(operator = %operator.0))]
pub async fn waive(
    state: web::Data<AppState>,
    operator: OperatorId,
    path: web::Path<(String, String)>,
    body: Json<WaiveRequest>,
) -> Result<HttpResponse, CardError> {
    let person = uuid_param(&path.0, "person_id")?;
    let event = uuid_param(&path.1, "event_id")?;
    let standing = standing::waive(&state, person, event, &operator, &body.0.reason, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(standing))
}
