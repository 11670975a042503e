//! `GET /v1/console/capacity-requests?hospital=&status=open|answered|all`:
//! waitlists that crossed their hospital's threshold and asked for 加号,
//! the longest first, with the capacity change that answered each.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Pool;
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::auth::Operator;
use crate::error::AccountingError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityQuery {
    pub hospital: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CapacityRequest {
    pub event_id: uuid::Uuid,
    pub hospital_id: String,
    pub schedule_id: String,
    /// The hospital's own ids of the schedule, as the waitlist sent them.
    pub schedule: serde_json::Value,
    /// The segments 加号 can be added to.
    pub segment_ids: serde_json::Value,
    pub waiting: i64,
    /// Patients still waiting on the schedule now, as last reported.
    pub waiting_now: Option<i64>,
    pub requested_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub answered_by: Option<String>,
    pub added_seats: Option<i32>,
}

#[get("/v1/console/capacity-requests")]
pub async fn list(
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<CapacityQuery>,
) -> Result<HttpResponse, AccountingError> {
    let q = query.0;
    if let Some(h) = &q.hospital
        && (h.is_empty() || h.len() > 64)
    {
        return Err(AccountingError::invalid("hospital", "must be a hospital id"));
    }
    let status = q.status.unwrap_or_else(|| "open".to_owned());
    if !["open", "answered", "all"].contains(&status.as_str()) {
        return Err(AccountingError::invalid(
            "status",
            "must be `open`, `answered` or `all`",
        ));
    }
    let hospital = operator.hospital_scope(q.hospital.as_deref())?;
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT r.event_id, r.hospital_id, r.schedule_id, r.schedule, r.segment_ids, r.waiting,
                    d.waiting, r.requested_at, r.answered_at, r.answered_by, r.added_seats
               FROM capacity_requests r
               LEFT JOIN waitlist_depth d ON d.hospital_id = r.hospital_id AND d.schedule_id = r.schedule_id
              WHERE ($1::text IS NULL OR r.hospital_id = $1)
                AND ($2 = 'all' OR ($2 = 'open') = (r.answered_at IS NULL))
              ORDER BY r.answered_at IS NOT NULL, r.waiting DESC, r.requested_at
              LIMIT 500",
            &[&hospital, &status],
        )
        .await?;
    let requests: Vec<CapacityRequest> = rows
        .iter()
        .map(|r| CapacityRequest {
            event_id: r.get(0),
            hospital_id: r.get(1),
            schedule_id: r.get(2),
            schedule: r.get(3),
            segment_ids: r.get(4),
            waiting: r.get(5),
            waiting_now: r.get(6),
            requested_at: r.get(7),
            answered_at: r.get(8),
            answered_by: r.get(9),
            added_seats: r.get(10),
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "hospital": hospital,
        "status": status,
        "requests": requests,
    })))
}
