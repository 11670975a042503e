//! The survey door, `/internal/v1/surveys`: only the gateway calls it (an
//! internal token for audience `channel-accounting`, checked by the
//! scope's middleware), on behalf of the app that owns the booking, after
//! the gateway checked that app's signature, that it owns the booking and
//! that the patient's card is the visit's patient's. Operators never come
//! through here; they see counts on the 满意度 page.
//!
//! - `GET /internal/v1/surveys/{id}`: the survey, with its owner app and
//!   patient (for the gateway's checks) and its answer once given.
//! - `PUT /internal/v1/surveys/{id}/answers`: record the answers. 201 the
//!   with the stored record, the first time and for the same answers again
//!   (`Idempotency-Replayed: true`), 409
//!   `SURVEY_ALREADY_ANSWERED` for others, 410 `SURVEY_EXPIRED` once
//!   closed, 400 `INVALID_FIELD` naming the field.
//! - `GET /internal/v1/hospitals/{hospital}/satisfaction`: one hospital's
//!   满意度 figures, for the gateway's federation API (member hospitals).

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, get, put, web};
use chrono::Utc;
use jyt_db::deadpool_postgres::Pool;
use jyt_domain::survey::Answers;
use jyt_web::Json;
use uuid::Uuid;

use crate::error::AccountingError;
use crate::survey;

fn survey_id(raw: &str) -> Result<Uuid, AccountingError> {
    raw.parse()
        .map_err(|_| AccountingError::invalid("survey_id", "must be a survey id (a UUID)"))
}

#[get("/surveys/{survey_id}")]
async fn read(pool: web::Data<Pool>, path: web::Path<String>) -> Result<HttpResponse, AccountingError> {
    let id = survey_id(&path)?;
    Ok(HttpResponse::Ok().json(survey::get(&pool, id, Utc::now()).await?))
}

#[put("/surveys/{survey_id}/answers")]
async fn answer(
    pool: web::Data<Pool>,
    path: web::Path<String>,
    body: Json<Answers>,
) -> Result<HttpResponse, AccountingError> {
    let id = survey_id(&path)?;
    let answers = body
        .0
        .checked()
        .map_err(|(field, reason)| AccountingError::invalid(field, reason))?;
    let (stored, recorded) = survey::answer(&pool, id, answers, Utc::now()).await?;
    // 200 either way with the stored record, so a retry after a lost reply
    // reads exactly what the first call would have; the header tells them apart.
    Ok(HttpResponse::Ok()
        .insert_header(("Idempotency-Replayed", if recorded { "false" } else { "true" }))
        .json(stored))
}

/// The door, its token checked before routing (a missing or wrong token
/// is 401 `INTERNAL_AUTH_REQUIRED`, whatever the path under it).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/internal/v1")
            .wrap(from_fn(jyt_web::internal::require_internal_token))
            .service(read)
            .service(answer)
            .service(crate::routes::satisfaction::hospital_figures)
            .default_service(web::to(jyt_web::problem::not_found)),
    );
}
