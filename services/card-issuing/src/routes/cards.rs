use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use jyt_web::{IdempotencyKeyHeader, Json};

use super::uuid_param;
use crate::cards::{self, CancelRequest, IssueRequest, ReplaceRequest, ResolveRequest};
use crate::error::CardError;
use crate::state::AppState;

fn created_or_ok(created: bool) -> actix_web::HttpResponseBuilder {
    if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
}

/// Issue a physical card or an e-card; idempotent under `Idempotency-Key`.
#[post("/v1/persons/{person_id}/cards")]
#[tracing::instrument(skip_all, fields(person = %path))]
pub async fn issue(
    state: web::Data<AppState>,
    path: web::Path<String>,
    key: IdempotencyKeyHeader,
    body: Json<IssueRequest>,
) -> Result<HttpResponse, CardError> {
    let person = uuid_param(&path, "person_id")?;
    let (card, created) = cards::issue(&state, person, &body.0, &key.0, Utc::now()).await?;
    Ok(created_or_ok(created)
        .insert_header((header::LOCATION, format!("/v1/cards/{}", card.card_id)))
        .json(card))
}

#[get("/v1/cards/{card_id}")]
pub async fn get(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(cards::get(&client, id).await?))
}

#[get("/v1/persons/{person_id}/cards")]
pub async fn of_person(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "person_id")?;
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cards": cards::of_person(&client, id).await? })))
}

/// Report loss: refused everywhere from the commit on. Idempotent.
#[post("/v1/cards/{card_id}/report-loss")]
#[tracing::instrument(skip_all, fields(card = %path))]
pub async fn report_loss(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    Ok(HttpResponse::Ok().json(cards::report_loss(&state, id, Utc::now()).await?))
}

/// Replace: naturally idempotent (a card is replaced once; a retry gets
/// the same replacement with 200).
#[post("/v1/cards/{card_id}/replace")]
#[tracing::instrument(skip_all, fields(card = %path))]
pub async fn replace(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<ReplaceRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    let (card, created) = cards::replace(&state, id, &body.0, Utc::now()).await?;
    Ok(created_or_ok(created)
        .insert_header((header::LOCATION, format!("/v1/cards/{}", card.card_id)))
        .json(card))
}

/// Cancel and pay the balance out; naturally idempotent.
#[post("/v1/cards/{card_id}/cancel")]
#[tracing::instrument(skip_all, fields(card = %path))]
pub async fn cancel(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<CancelRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    Ok(HttpResponse::Ok().json(cards::cancel(&state, id, &body.0, Utc::now()).await?))
}

/// A fresh QR token for an e-card (nothing is written).
#[post("/v1/cards/{card_id}/ecard-token")]
#[tracing::instrument(skip_all, fields(card = %path))]
pub async fn ecard_token(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    let token = cards::ecard_token(&state, id, Utc::now()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(token))
}

/// Many card numbers → their holders, for the gateway's first visits
/// that arrive together (`cards::resolve_many`).
#[post("/v1/cards/resolve-many")]
#[tracing::instrument(skip_all)]
pub async fn resolve_many(
    state: web::Data<AppState>,
    body: Json<cards::ResolveManyRequest>,
) -> Result<HttpResponse, CardError> {
    Ok(HttpResponse::Ok().json(cards::resolve_many(&state, &body.0, Utc::now()).await?))
}

/// Card number or e-card token → person, for the gateway. A POST so a
/// token never sits in a URL or an access log.
#[post("/v1/cards/resolve")]
#[tracing::instrument(skip_all)]
pub async fn resolve(
    state: web::Data<AppState>,
    body: Json<ResolveRequest>,
) -> Result<HttpResponse, CardError> {
    Ok(HttpResponse::Ok().json(cards::resolve(&state, &body.0, Utc::now()).await?))
}
