use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use jyt_web::Json;
use serde::Deserialize;

use super::uuid_param;
use crate::error::CardError;
use crate::operator::OperatorId;
use crate::persons::{self, RegisterRequest};
use crate::state::AppState;

/// Real-name registration; naturally idempotent on the ID number:
/// 201 for a new person, 200 with the existing one.
#[post("/v1/persons")]
#[tracing::instrument(skip_all, fields(person))]
pub async fn register(
    state: web::Data<AppState>,
    body: Json<RegisterRequest>,
) -> Result<HttpResponse, CardError> {
    let registered = persons::register(&state, &body.0, Utc::now()).await?;
    tracing::Span::current().record("person", tracing::field::display(registered.person.person_id));
    let mut res = if registered.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((
        header::LOCATION,
        format!("/v1/persons/{}", registered.person.person_id),
    ));
    Ok(res.json(registered.person))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    id_number: String,
}

/// Find a person by ID number (a POST so the number stays out of URLs and access logs).
#[post("/v1/persons/search")]
#[tracing::instrument(skip_all)]
pub async fn search(
    state: web::Data<AppState>,
    body: Json<SearchRequest>,
) -> Result<HttpResponse, CardError> {
    match persons::find_by_id_number(&state, &body.0.id_number, Utc::now()).await? {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Err(CardError::PersonNotRegistered),
    }
}

#[get("/v1/persons/{person_id}")]
#[tracing::instrument(skip_all, fields(person = %path))]
pub async fn get(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "person_id")?;
    let client = state.pool.get().await?;
    let person = persons::get(&client, &state.keyring, id).await?;
    Ok(HttpResponse::Ok().json(person))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealRequest {
    reason: String,
}

/// An operator reads unmasked data; audited in the same transaction.
#[post("/v1/persons/{person_id}/reveal")]
#[tracing::instrument(skip_all, fields(person = %path, operator = %operator.0))]
pub async fn reveal(
    state: web::Data<AppState>,
    operator: OperatorId,
    path: web::Path<String>,
    body: Json<RevealRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "person_id")?;
    let revealed = persons::reveal(&state, id, &operator, &body.0.reason).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(revealed))
}
