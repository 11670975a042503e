use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use jyt_web::Json;

use super::uuid_param;
use crate::error::CardError;
use crate::family::{self, BindRequest, UnbindRequest};
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
