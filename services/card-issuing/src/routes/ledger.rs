use actix_web::{HttpResponse, get, post, web};
use chrono::{NaiveDate, Utc};
use jyt_web::{Json, Query};
use serde::Deserialize;

use super::uuid_param;
use crate::error::CardError;
use crate::ledger::{self, PaymentRequest, Posted, RefundRequest, TopUpRequest};
use crate::state::AppState;

fn answer(p: Posted) -> HttpResponse {
    let mut res = if p.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    if !p.created {
        res.insert_header(("Idempotency-Replayed", "true"));
    }
    res.json(p.view)
}

/// Top up; idempotent under (`channel`, `channel_ref`).
#[post("/v1/cards/{card_id}/top-ups")]
#[tracing::instrument(skip_all, fields(card = %path, channel = %body.0.channel))]
pub async fn top_up(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<TopUpRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    Ok(answer(ledger::top_up(&state, id, &body.0, Utc::now()).await?))
}

/// Pay a registration fee; idempotent under `reference`.
#[post("/v1/cards/{card_id}/payments")]
#[tracing::instrument(skip_all, fields(card = %path, channel = %body.0.channel))]
pub async fn pay(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<PaymentRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    Ok(answer(ledger::pay_fee(&state, id, &body.0, Utc::now()).await?))
}

/// Refund (part of) a fee; idempotent under `reference`.
#[post("/v1/cards/{card_id}/refunds")]
#[tracing::instrument(skip_all, fields(card = %path))]
pub async fn refund(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<RefundRequest>,
) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    Ok(answer(ledger::refund(&state, id, &body.0, Utc::now()).await?))
}

#[get("/v1/cards/{card_id}/ledger")]
pub async fn history(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, CardError> {
    let id = uuid_param(&path, "card_id")?;
    Ok(HttpResponse::Ok().json(ledger::history(&state, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// An Asia/Shanghai calendar date, `YYYY-MM-DD`.
    date: NaiveDate,
}

/// The day's movements and balances per channel, for channel-accounting.
#[get("/v1/reports/daily-balances")]
pub async fn daily_report(
    state: web::Data<AppState>,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, CardError> {
    Ok(HttpResponse::Ok().json(ledger::daily_report(&state, query.0.date).await?))
}
