//! The hospital's booking policy, read and changed by the console through
//! the gateway's relay (the internal-token door guards every route).

use actix_web::{HttpRequest, HttpResponse, get, put, web};
use jyt_web::Json;

use crate::booking_policy;
use crate::error::SlotError;
use crate::policy::Policy;
use crate::state::AppState;

#[get("/v1/policy")]
pub async fn get(state: web::Data<AppState>) -> Result<HttpResponse, SlotError> {
    let stored = booking_policy::read(&state).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "hospital_id": state.hospital,
        "version": stored.version,
        "updated_at": stored.updated_at,
        "updated_by": stored.updated_by,
        "policy": stored.policy,
    })))
}

/// Replace the whole policy; 400 naming the field when it is invalid.
#[put("/v1/policy")]
pub async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<Policy>,
) -> Result<HttpResponse, SlotError> {
    let actor = super::actor(&req)?;
    let changed = booking_policy::change(&state, body.0, &actor).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "hospital_id": state.hospital,
        "version": changed.stored.version,
        "updated_at": changed.stored.updated_at,
        "updated_by": changed.stored.updated_by,
        "policy": changed.stored.policy,
        "schedules_affected": changed.schedules_affected,
    })))
}
