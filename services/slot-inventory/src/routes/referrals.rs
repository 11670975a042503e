//! Referrals issued to this hospital (see `booking::referral`); only the
//! gateway reaches them, for the issuing community health centre.

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use jyt_web::{IdempotencyKeyHeader, Json};

use crate::booking::referral::{self, IssueRequest};
use crate::error::SlotError;
use crate::state::AppState;

/// Issue a referral to this hospital: 201, or 200 with the first one for a
/// retried `Idempotency-Key`.
#[post("/v1/referrals")]
#[tracing::instrument(skip_all, fields(department = %body.0.department))]
pub async fn issue(
    state: web::Data<AppState>,
    key: IdempotencyKeyHeader,
    body: Json<IssueRequest>,
) -> Result<HttpResponse, SlotError> {
    let (view, created) = referral::issue(&state, &body.0, key.0.as_str()).await?;
    let mut res = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(res
        .insert_header((header::LOCATION, format!("/v1/referrals/{}", view.referral_id)))
        .json(view))
}

#[get("/v1/referrals/{referral_id}")]
pub async fn get(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, SlotError> {
    let id = referral::parse_id(&path)?;
    let view = referral::get(&state, id)
        .await?
        .ok_or(SlotError::Referral(referral::Refusal::Unknown))?;
    Ok(HttpResponse::Ok().json(view))
}
