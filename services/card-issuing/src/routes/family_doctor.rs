//! Family doctor teams and signings (see `crate::family_doctor`); the
//! gateway calls these for a centre's federation key or a resident's app.

use actix_web::{HttpResponse, get, post, put, web};
use chrono::Utc;
use jyt_web::Json;

use super::uuid_param;
use crate::error::CardError;
use crate::family_doctor::{self, EndRequest, SignRequest, TeamsRequest};
use crate::state::AppState;

#[put("/v1/hospitals/{hospital_id}/family-doctor-teams")]
#[tracing::instrument(skip_all, fields(hospital = %path))]
pub async fn upsert_teams(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<TeamsRequest>,
) -> Result<HttpResponse, CardError> {
    let upserted = family_doctor::upsert_teams(&state, &path, &body.0, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "teams": upserted })))
}

#[get("/v1/hospitals/{hospital_id}/family-doctor-teams")]
pub async fn teams(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, CardError> {
    let client = state.pool.get().await?;
    let listed = family_doctor::teams_of(&client, &path, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "teams": listed })))
}

/// Sign with a team: 201, or 200 with the same active signing.
#[post("/v1/persons/{person_id}/family-doctor-signings")]
#[tracing::instrument(skip_all, fields(person = %path))]
pub async fn sign(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<SignRequest>,
) -> Result<HttpResponse, CardError> {
    let person = uuid_param(&path, "person_id")?;
    let (signing, created) = family_doctor::sign(&state, person, &body.0, Utc::now()).await?;
    Ok(if created {
        HttpResponse::Created().json(signing)
    } else {
        HttpResponse::Ok().json(signing)
    })
}

/// `active` (the signing in force, or `null`) and `signings` (all, newest first).
#[get("/v1/persons/{person_id}/family-doctor-signings")]
pub async fn of_person(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, CardError> {
    let person = uuid_param(&path, "person_id")?;
    let now = Utc::now();
    let active = family_doctor::active(&state, person, now).await?;
    let signings = family_doctor::history(&state, person, now).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "active": active, "signings": signings })))
}

#[post("/v1/persons/{person_id}/family-doctor-signings/{signing_id}/end")]
#[tracing::instrument(skip_all)]
pub async fn end(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: Json<EndRequest>,
) -> Result<HttpResponse, CardError> {
    let person = uuid_param(&path.0, "person_id")?;
    let signing = uuid_param(&path.1, "signing_id")?;
    Ok(HttpResponse::Ok().json(family_doctor::end(&state, person, signing, &body.0, Utc::now()).await?))
}
