//! The console's operations that go through the gateway's relay, checked
//! here first (the gateway checks them again): 加号 on a hospital's
//! segment and the day's schedules to choose it from (a hospital operator
//! only for their own hospital), the notification dead letters and appeal
//! decisions (city operators only), and the appeals queue.
//!
//! - `GET  /v1/console/hospitals/{hospital}/schedules?date=`
//! - `PUT  /v1/console/hospitals/{hospital}/segments/{segment}/capacity` `{"capacity": n}`
//! - `GET  /v1/console/hospitals/{hospital}/policy`
//! - `PUT  /v1/console/hospitals/{hospital}/policy` (the whole policy; the hospital validates it)
//! - `GET  /v1/console/dead-letters`
//! - `POST /v1/console/dead-letters/{id}/replay`
//! - `GET  /v1/console/appeals?status=&hospital=` (a hospital operator: their own)
//! - `POST /v1/console/appeals/{appeal}/decision` `{"decision": "waive"|"refuse", "reason"}` (city)

use actix_web::{HttpResponse, get, post, put, web};
use chrono::NaiveDate;
use jyt_web::{Json, Query};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Operator;
use crate::error::AccountingError;
use crate::relay::Relay;

/// The relay, if configured (app data).
pub struct RelayHandle(pub Option<Relay>);

impl RelayHandle {
    pub(crate) fn get(&self) -> Result<&Relay, AccountingError> {
        self.0.as_ref().ok_or_else(|| {
            AccountingError::RelayUnavailable("no gateway relay is configured (gateway.url)".to_owned())
        })
    }
}

/// The most seats one segment can have (slot-inventory's own limit).
pub const MAX_SEGMENT_CAPACITY: i64 = 10_000;

pub(crate) fn own_hospital(operator: &Operator, raw: &str) -> Result<String, AccountingError> {
    let valid = !raw.is_empty()
        && raw.len() <= 20
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid {
        return Err(AccountingError::invalid("hospital", "must be a hospital id"));
    }
    operator
        .hospital_scope(Some(raw))?
        .ok_or_else(|| AccountingError::invalid("hospital", "must be a hospital id"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateQuery {
    pub date: NaiveDate,
}

#[get("/v1/console/hospitals/{hospital}/schedules")]
pub async fn schedules(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    path: web::Path<String>,
    query: Query<DateQuery>,
) -> Result<HttpResponse, AccountingError> {
    let hospital = own_hospital(&operator, &path)?;
    let target = format!("/ops/v1/hospitals/{hospital}/schedules?date={}", query.0.date);
    relay
        .get()?
        .call(&operator, reqwest::Method::GET, &target, None)
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityChange {
    pub capacity: i64,
}

/// 加号 (or a cut): the segment's new capacity.
#[put("/v1/console/hospitals/{hospital}/segments/{segment}/capacity")]
pub async fn set_capacity(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    path: web::Path<(String, String)>,
    body: Json<CapacityChange>,
) -> Result<HttpResponse, AccountingError> {
    let hospital = own_hospital(&operator, &path.0)?;
    let segment = Uuid::parse_str(&path.1)
        .map_err(|_| AccountingError::invalid("segment", "must be a segment UUID"))?;
    if !(0..=MAX_SEGMENT_CAPACITY).contains(&body.0.capacity) {
        return Err(AccountingError::invalid(
            "capacity",
            format!("must be between 0 and {MAX_SEGMENT_CAPACITY}"),
        ));
    }
    let target = format!("/ops/v1/hospitals/{hospital}/segments/{segment}/capacity");
    let res = relay
        .get()?
        .call(
            &operator,
            reqwest::Method::PUT,
            &target,
            Some(serde_json::json!({ "capacity": body.0.capacity })),
        )
        .await?;
    tracing::info!(operator = %operator.login, %hospital, %segment, status = %res.status(), "加号 relayed");
    Ok(res)
}

/// A hospital's booking policy (a hospital operator: their own).
#[get("/v1/console/hospitals/{hospital}/policy")]
pub async fn policy(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    path: web::Path<String>,
) -> Result<HttpResponse, AccountingError> {
    let hospital = own_hospital(&operator, &path)?;
    relay
        .get()?
        .call(
            &operator,
            reqwest::Method::GET,
            &format!("/ops/v1/hospitals/{hospital}/policy"),
            None,
        )
        .await
}

/// Replace a hospital's booking policy as a whole; the hospital validates
/// it (400 naming the field) and applies it to unreleased schedules only.
#[put("/v1/console/hospitals/{hospital}/policy")]
pub async fn set_policy(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    path: web::Path<String>,
    body: Json<serde_json::Value>,
) -> Result<HttpResponse, AccountingError> {
    let hospital = own_hospital(&operator, &path)?;
    if !body.0.is_object() {
        return Err(AccountingError::invalid("policy", "must be a JSON object"));
    }
    let res = relay
        .get()?
        .call(
            &operator,
            reqwest::Method::PUT,
            &format!("/ops/v1/hospitals/{hospital}/policy"),
            Some(body.0),
        )
        .await?;
    tracing::info!(operator = %operator.login, %hospital, status = %res.status(), "policy change relayed");
    Ok(res)
}

#[get("/v1/console/dead-letters")]
pub async fn dead_letters(
    relay: web::Data<RelayHandle>,
    operator: Operator,
) -> Result<HttpResponse, AccountingError> {
    operator.require_city("the notification dead letters")?;
    relay
        .get()?
        .call(
            &operator,
            reqwest::Method::GET,
            "/ops/v1/notifications/dead-letters",
            None,
        )
        .await
}

#[post("/v1/console/dead-letters/{id}/replay")]
pub async fn replay(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    path: web::Path<String>,
) -> Result<HttpResponse, AccountingError> {
    operator.require_city("replaying a dead letter")?;
    let id = path.into_inner();
    if id.is_empty()
        || id.len() > 200
        || id
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '?' || c == '#')
    {
        return Err(AccountingError::invalid("id", "must be a dead letter's id"));
    }
    let target = format!(
        "/ops/v1/notifications/dead-letters/{}/replay",
        encode_segment(&id)
    );
    relay
        .get()?
        .call(&operator, reqwest::Method::POST, &target, None)
        .await
}

/// Percent-encode one path segment (ids look like `<kind>:<booking>`).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppealsQuery {
    pub status: Option<String>,
    pub hospital: Option<String>,
}

/// The appeals queue: pending by default; a hospital operator's own
/// hospital's only.
#[get("/v1/console/appeals")]
pub async fn appeals(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    query: Query<AppealsQuery>,
) -> Result<HttpResponse, AccountingError> {
    let q = query.0;
    let status = q.status.unwrap_or_else(|| "pending".to_owned());
    if !["pending", "granted", "refused", "all"].contains(&status.as_str()) {
        return Err(AccountingError::invalid(
            "status",
            "must be pending, granted, refused or all",
        ));
    }
    let hospital = match q.hospital.as_deref() {
        Some(h) => Some(own_hospital(&operator, h)?),
        None => operator.hospital_scope(None)?,
    };
    let mut target = format!("/ops/v1/appeals?status={status}&limit=500");
    if let Some(h) = hospital {
        target.push_str(&format!("&hospital_id={h}"));
    }
    relay
        .get()?
        .call(&operator, reqwest::Method::GET, &target, None)
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppealDecision {
    pub decision: String,
    pub reason: String,
}

/// Waive or refuse an appeal, with a reason (city operators: a bar stops
/// booking at every hospital, so it is the commission's decision).
#[post("/v1/console/appeals/{appeal}/decision")]
pub async fn decide_appeal(
    relay: web::Data<RelayHandle>,
    operator: Operator,
    path: web::Path<String>,
    body: Json<AppealDecision>,
) -> Result<HttpResponse, AccountingError> {
    operator.require_city("deciding an appeal")?;
    let appeal =
        Uuid::parse_str(&path).map_err(|_| AccountingError::invalid("appeal", "must be an appeal's UUID"))?;
    if !["waive", "refuse"].contains(&body.0.decision.as_str()) {
        return Err(AccountingError::invalid(
            "decision",
            "must be `waive` or `refuse`",
        ));
    }
    let reason = body.0.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AccountingError::invalid("reason", "must be 1 to 500 characters"));
    }
    let res = relay
        .get()?
        .call(
            &operator,
            reqwest::Method::POST,
            &format!("/ops/v1/appeals/{appeal}/decision"),
            Some(serde_json::json!({ "decision": body.0.decision, "reason": reason })),
        )
        .await?;
    tracing::info!(operator = %operator.login, %appeal, status = %res.status(), "appeal decision relayed");
    Ok(res)
}
