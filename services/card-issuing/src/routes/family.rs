use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use jyt_web::Json;

use super::uuid_param;
use crate::error::CardError;
use crate::family::{self, BindRequest, ConfirmRequest, UnbindRequest, VerificationRequest};
use crate::state::AppState;

/// Bind a family member; a live binding of the same pair answers 200.
#[post("/v1/persons/{holder_id}/family")]
#[tracing::instrument(skip_all, fields(holder = %path))]
pub async fn bind(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<BindRequest>,
) -> Result<HttpResponse, CardError> {
    let holder = uuid_param(&path, "holder_id")?;
    let (binding, created) = family::bind(&state, holder, &body.0, Utc::now()).await?;
    Ok(if created {
        HttpResponse::Created().json(binding)
    } else {
        HttpResponse::Ok().json(binding)
    })
}

#[get("/v1/persons/{person_id}/family")]
pub async fn list(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "person_id")?;
    Ok(HttpResponse::Ok().json(family::list(&state, id).await?))
}

/// Unbind, by either party; idempotent.
#[post("/v1/family-bindings/{binding_id}/unbind")]
#[tracing::instrument(skip_all, fields(binding = %path))]
pub async fn unbind(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<UnbindRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "binding_id")?;
    Ok(HttpResponse::Ok().json(family::unbind(&state, id, body.0.acting_person_id, Utc::now()).await?))
}

/// A holder asks to bind a member aged 16 or over: a one-time code for the
/// member's own channel (answered to the gateway only).
#[post("/v1/persons/{holder_id}/family/verifications")]
#[tracing::instrument(skip_all, fields(holder = %path))]
pub async fn start_verification(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<VerificationRequest>,
) -> Result<HttpResponse, CardError> {
    let holder = uuid_param(&path, "holder_id")?;
    let started = family::start_verification(&state, holder, &body.0, Utc::now()).await?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(started))
}

#[get("/v1/family-verifications/{verification_id}")]
pub async fn verification(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "verification_id")?;
    Ok(HttpResponse::Ok().json(family::verification(&state, id).await?))
}

/// The member's code: the binding (201), or why not.
#[post("/v1/family-verifications/{verification_id}/confirm")]
#[tracing::instrument(skip_all, fields(verification = %path))]
pub async fn confirm_verification(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<ConfirmRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "verification_id")?;
    let (binding, created) = family::confirm_verification(&state, id, &body.0, Utc::now()).await?;
    Ok(if created {
        HttpResponse::Created().json(binding)
    } else {
        HttpResponse::Ok().json(binding)
    })
}
