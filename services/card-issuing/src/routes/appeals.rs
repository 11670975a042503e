use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use jyt_web::{Json, Query};

use super::uuid_param;
use crate::appeals::{self, DecisionRequest, ListQuery, SubmitRequest};
use crate::error::CardError;
use crate::state::AppState;

/// A patient appeals a no-show (the gateway calls this for the patient's
/// channel); 201 new, 200 the no-show's existing appeal.
#[post("/v1/persons/{person_id}/appeals")]
#[tracing::instrument(skip_all, fields(person = %path))]
pub async fn submit(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<SubmitRequest>,
) -> Result<HttpResponse, CardError> {
    let person = uuid_param(&path, "person_id")?;
    let (appeal, created) = appeals::submit(&state, person, &body.0, Utc::now()).await?;
    let mut res = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(res
        .insert_header((header::LOCATION, format!("/v1/appeals/{}", appeal.appeal_id)))
        .json(appeal))
}

#[get("/v1/persons/{person_id}/appeals")]
pub async fn of_person(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, CardError> {
    let person = uuid_param(&path, "person_id")?;
    Ok(HttpResponse::Ok().json(appeals::of_person(&state, person).await?))
}

/// The operators' queue (the console calls this for a logged-in operator).
#[get("/v1/appeals")]
pub async fn list(state: web::Data<AppState>, query: Query<ListQuery>) -> Result<HttpResponse, CardError> {
    Ok(HttpResponse::Ok().json(appeals::list(&state, &query.0).await?))
}

/// An operator's decision: `waive` lifts the no-show like a waiver,
/// `refuse` leaves it counted.
#[post("/v1/appeals/{appeal_id}/decision")]
#[tracing::instrument(skip_all, fields(appeal = %path))]
pub async fn decide(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<DecisionRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "appeal_id")?;
    Ok(HttpResponse::Ok().json(appeals::decide(&state, id, &body.0, Utc::now()).await?))
}
