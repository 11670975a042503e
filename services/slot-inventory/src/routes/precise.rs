//! 精准预约: an expert's profile (the hospital publishes it, patients'
//! apps read it), patients' submissions and the hospital's decisions. Only
//! the gateway reaches these: it checks who may call which (a hospital's
//! key for `PUT` profile, the list and the decision; a patient's app for
//! the rest) and names the app in `Jyt-App`, the actor in `X-Actor`.

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use jyt_web::{Json, Query, RequestError};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::SlotError;
use crate::precise::{DecisionInput, ProfileInput, SubmissionInput, profile, submission};
use crate::state::AppState;

fn submission_id(raw: &str) -> Result<Uuid, SlotError> {
    Uuid::parse_str(raw).map_err(|_| RequestError::invalid("submission_id", "must be a UUID").into())
}

/// `PUT /v1/doctors/{doctor_id}/precise-profile`.
#[put("/precise-profile")]
pub async fn put_profile(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<ProfileInput>,
) -> Result<HttpResponse, SlotError> {
    let actor = super::actor(&req)?;
    Ok(HttpResponse::Ok().json(profile::put(&state, &path, &body.0, &actor).await?))
}

/// `GET /v1/doctors/{doctor_id}/precise-profile`.
#[get("/precise-profile")]
pub async fn get_profile(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SlotError> {
    Ok(HttpResponse::Ok().json(profile::get(&state, &path).await?))
}

/// 201 a new submission (matched at once by the expert's rule, and then
/// seated, or pending the hospital's decision); 200 the patient's open
/// submission to this doctor, unchanged.
///
/// `POST /v1/doctors/{doctor_id}/precise-submissions`.
#[post("/precise-submissions")]
pub async fn submit(
    http: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<SubmissionInput>,
) -> Result<HttpResponse, SlotError> {
    let mut input = body.0;
    input.owner_app = crate::booking::owner::acting_app(&http)?;
    let (stored, created) = submission::submit(&state, &path, &input).await?;
    Ok(if created {
        HttpResponse::Created().json(stored)
    } else {
        HttpResponse::Ok().json(stored)
    })
}

/// `GET /v1/precise-submissions/{submission_id}`.
#[get("")]
pub async fn get_submission(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SlotError> {
    Ok(HttpResponse::Ok().json(submission::get(&state, submission_id(&path)?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
}

#[get("/v1/precise-submissions")]
pub async fn list_submissions(
    state: web::Data<AppState>,
    query: Query<ListQuery>,
) -> Result<HttpResponse, SlotError> {
    let submissions = submission::list(&state, query.0.status.as_deref()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "submissions": submissions })))
}

/// `POST /v1/precise-submissions/{submission_id}/decision`.
#[post("/decision")]
pub async fn decide(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<DecisionInput>,
) -> Result<HttpResponse, SlotError> {
    let actor = super::actor(&req)?;
    let id = submission_id(&path)?;
    Ok(HttpResponse::Ok().json(submission::decide(&state, id, &body.0, &actor).await?))
}
