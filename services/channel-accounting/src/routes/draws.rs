//! The hospitals' lottery draws (fair release, 抽签放号) on the console:
//!
//! - `GET /v1/console/draws?hospital=`: every draw, newest first, from the
//!   `draw.drawn` events (a hospital operator: their own hospital's);
//! - `GET /v1/console/hospitals/{hospital}/schedules/{schedule}/draw`: the
//!   hospital's full record with its reproduction check, through the
//!   gateway's relay.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::{GenericClient, Pool};
use jyt_events::Envelope;
use jyt_web::Query;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::operations::{RelayHandle, own_hospital};
use crate::auth::Operator;
use crate::error::AccountingError;

/// Record a `draw.drawn` event (once per draw).
pub async fn record<C: GenericClient>(client: &C, event: &Envelope) -> anyhow::Result<()> {
    let p = &event.payload;
    let text = |f: &str| p[f].as_str().unwrap_or_default().to_owned();
    let int = |f: &str| i32::try_from(p[f].as_i64().unwrap_or(0)).unwrap_or(i32::MAX);
    let at = |f: &str| {
        p[f].as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(event.occurred_at, |t| t.with_timezone(&Utc))
    };
    let draw: Uuid = serde_json::from_value(p["draw_id"].clone())?;
    client
        .execute_cached(
            "INSERT INTO lottery_draws
                    (draw_id, hospital_id, schedule_id, algorithm, seed, entrants, seats, winners, started_at, drawn_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (draw_id) DO NOTHING",
            &[
                &draw,
                &text("hospital_id"),
                &text("schedule_id"),
                &text("algorithm"),
                &text("seed"),
                &int("entrants"),
                &int("seats"),
                &int("winners"),
                &at("started_at"),
                &at("drawn_at"),
            ],
        )
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrawsQuery {
    pub hospital: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrawRow {
    pub draw_id: Uuid,
    pub hospital_id: String,
    pub schedule_id: String,
    pub algorithm: String,
    pub seed: String,
    pub entrants: i32,
    pub seats: i32,
    pub winners: i32,
    pub started_at: DateTime<Utc>,
    pub drawn_at: DateTime<Utc>,
    /// The console's route to the hospital's full record.
    pub record: String,
}

#[get("/v1/console/draws")]
pub async fn list(
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<DrawsQuery>,
) -> Result<HttpResponse, AccountingError> {
    if let Some(h) = &query.0.hospital
        && (h.is_empty() || h.len() > 64)
    {
        return Err(AccountingError::invalid("hospital", "must be a hospital id"));
    }
    let hospital = operator.hospital_scope(query.0.hospital.as_deref())?;
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT draw_id, hospital_id, schedule_id, algorithm, seed, entrants, seats, winners, started_at, drawn_at
               FROM lottery_draws WHERE ($1::text IS NULL OR hospital_id = $1)
              ORDER BY drawn_at DESC LIMIT 500",
            &[&hospital],
        )
        .await?;
    let draws: Vec<DrawRow> = rows
        .iter()
        .map(|r| {
            let (hospital_id, schedule_id): (String, String) = (r.get(1), r.get(2));
            DrawRow {
                draw_id: r.get(0),
                record: format!("/v1/console/hospitals/{hospital_id}/schedules/{schedule_id}/draw"),
                hospital_id,
                schedule_id,
                algorithm: r.get(3),
                seed: r.get(4),
                entrants: r.get(5),
                seats: r.get(6),
                winners: r.get(7),
                started_at: r.get(8),
                drawn_at: r.get(9),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "hospital": hospital, "draws": draws })))
}

/// The hospital's full record of a schedule's draw, with its reproduction check.
#[get("/v1/console/hospitals/{hospital}/schedules/{schedule}/draw")]
pub async fn draw_record(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AccountingError> {
    let hospital = own_hospital(&operator, &path.0)?;
    let schedule = Uuid::parse_str(&path.1)
        .map_err(|_| AccountingError::invalid("schedule", "must be a schedule UUID"))?;
    relay
        .get()?
        .call(
            &operator,
            reqwest::Method::GET,
            &format!("/ops/v1/hospitals/{hospital}/schedules/{schedule}/draw"),
            None,
        )
        .await
}
