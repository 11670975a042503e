//! `POST /v1/reconciliation/statements?channel=&date=` imports a channel's
//! statement file (format: see [`crate::reconcile`]) and answers every
//! mismatch; `GET` the same path lists a day's statements. City operators only.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::NaiveDate;
use jyt_db::deadpool_postgres::Pool;
use jyt_domain::Channel;
use jyt_web::extract::BodyLimit;
use jyt_web::{Query, RequestError};
use serde::Deserialize;

use crate::auth::Operator;
use crate::error::AccountingError;
use crate::reconcile;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    pub channel: Option<String>,
    pub date: Option<NaiveDate>,
}

fn channel_of(raw: Option<&str>) -> Result<Option<Channel>, AccountingError> {
    raw.map(|c| {
        c.parse::<Channel>().map_err(|_| {
            AccountingError::invalid(
                "channel",
                "must be one of wechat, kiosk, phone114, window, app, referral, clinic",
            )
        })
    })
    .transpose()
}

#[post("/v1/reconciliation/statements")]
pub async fn import(
    req: HttpRequest,
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<StatementQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, AccountingError> {
    operator.require_city("importing a statement")?;
    let channel = channel_of(query.0.channel.as_deref())?
        .ok_or_else(|| AccountingError::invalid("channel", "is required"))?;
    let day = query
        .0
        .date
        .ok_or_else(|| AccountingError::invalid("date", "is required"))?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(
        content_type.as_str(),
        "text/csv" | "text/plain" | "application/octet-stream"
    ) {
        return Err(RequestError::UnsupportedMediaType.into());
    }
    let limit = req.app_data::<BodyLimit>().map_or(1024 * 1024, |l| l.0);
    let body = jyt_web::extract::read_limited(payload, None, limit).await?;
    let lines = reconcile::parse_statement(&body)?;
    let platform = reconcile::platform_payments(&pool, channel.as_str(), day).await?;
    let mismatches = reconcile::reconcile(&lines, &platform);
    let report = reconcile::store(&pool, channel.as_str(), day, &lines, mismatches, &operator.login).await?;
    tracing::info!(
        channel = %channel, %day, lines = report.lines, mismatches = report.mismatches.len(),
        "statement reconciled"
    );
    Ok(HttpResponse::Ok().json(report))
}

#[get("/v1/reconciliation/statements")]
pub async fn list(
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<StatementQuery>,
) -> Result<HttpResponse, AccountingError> {
    operator.require_city("reading statements")?;
    let channel = channel_of(query.0.channel.as_deref())?;
    let day = query.0.date.unwrap_or_else(jyt_domain::time::today);
    let statements = reconcile::statements(&pool, day, channel.map(Channel::as_str)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "date": day, "statements": statements })))
}
