//! Referrals (转诊, the 医联体 green channel): a family doctor of a
//! community health centre refers a resident signed with their team to one
//! department of this hospital. The gateway checks the signing and the
//! doctor (card-issuing owns those) and relays the issue here, to the
//! target hospital, which keeps the record: its booking script checks it.
//!
//! - PostgreSQL (`referrals`) is the truth; a referral is *used* by the one
//!   live booking naming it (`bookings_referral_uq`), so a cancelled or
//!   expired booking frees it again without another write.
//! - Redis holds a copy per referral, `{h:<hospital>}:referral:<id>`, a hash
//!   of `patient`, `dept`, `expires_at` (unix s) and `used_by` (the live
//!   booking), beside the segments it may be used on, so `hold.lua` checks
//!   it and takes the seat in one step and `release.lua` frees it with the
//!   seat. A rebuild reloads every live referral ([`reload_all`]).

use chrono::{DateTime, Duration, Utc};
use jyt_cache::redis;
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::Row;
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::SlotError;
use crate::state::AppState;

/// The longest a referral stays valid (the issuing doctor may choose less).
pub const MAX_VALID_DAYS: i64 = 30;

/// Why the booking script refused a referral; each a stable machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no referral with this id was issued to this hospital")]
    Unknown,
    #[error("the referral has expired")]
    Expired,
    #[error("the referral is already used by a live booking")]
    Used,
    #[error("the referral is for another department of this hospital")]
    NotForDepartment,
    #[error("the referral was issued to another patient")]
    OfAnotherPatient,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unknown => "REFERRAL_UNKNOWN",
            Refusal::Expired => "REFERRAL_EXPIRED",
            Refusal::Used => "REFERRAL_USED",
            Refusal::NotForDepartment => "REFERRAL_NOT_FOR_DEPARTMENT",
            Refusal::OfAnotherPatient => "REFERRAL_OF_ANOTHER_PATIENT",
        }
    }

    pub fn status(self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            Refusal::Unknown => StatusCode::NOT_FOUND,
            Refusal::OfAnotherPatient => StatusCode::FORBIDDEN,
            Refusal::Expired | Refusal::Used | Refusal::NotForDepartment => StatusCode::CONFLICT,
        }
    }

    /// The script's answer, e.g. `REFERRAL_USED`.
    pub fn from_code(code: &str) -> Option<Self> {
        [
            Refusal::Unknown,
            Refusal::Expired,
            Refusal::Used,
            Refusal::NotForDepartment,
            Refusal::OfAnotherPatient,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// A booking's `referral_id`: the id of a referral issued to this hospital.
/// Free text (the old free-string referral) is refused as such.
pub fn parse_id(raw: &str) -> Result<Uuid, RequestError> {
    Uuid::parse_str(raw).map_err(|_| {
        RequestError::invalid(
            "referral_id",
            "must be the id of a referral the family doctor issued (a UUID)",
        )
    })
}

/// `POST /v1/referrals`, called by the gateway for the issuing community
/// health centre once it checked the patient's signing and the doctor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub patient_id: Uuid,
    pub issuing_hospital: String,
    pub issuing_team: String,
    pub issuing_doctor: String,
    /// This hospital's department, by its own (published) id.
    pub department: String,
    pub diagnosis_code: String,
    pub reason: String,
    /// At most [`MAX_VALID_DAYS`] ahead; that long when absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A referral as the issuing centre and the console see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralView {
    pub referral_id: Uuid,
    pub patient_id: Uuid,
    pub issuing_hospital: String,
    pub issuing_team: String,
    pub issuing_doctor: String,
    pub target_hospital: String,
    pub department: String,
    pub diagnosis_code: String,
    pub reason: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `issued`, `used`, `expired` or `revoked`, at the time of reading.
    pub status: String,
    /// The live booking that uses it, `<hospital>-<uuid>`.
    pub used_by_booking: Option<String>,
}

const SELECT: &str = "SELECT r.id, r.patient_id, r.issuing_hospital, r.issuing_team, r.issuing_doctor,
        r.department, r.diagnosis_code, r.reason, r.issued_at, r.expires_at, r.revoked_at,
        (SELECT b.id FROM bookings b
          WHERE b.referral_id = r.id::text AND b.live) AS used_by
   FROM referrals r";

fn view(state: &AppState, row: &Row, now: DateTime<Utc>) -> ReferralView {
    let expires_at: DateTime<Utc> = row.get("expires_at");
    let used_by: Option<Uuid> = row.get("used_by");
    let revoked: Option<DateTime<Utc>> = row.get("revoked_at");
    let status = if used_by.is_some() {
        "used"
    } else if revoked.is_some() {
        "revoked"
    } else if now >= expires_at {
        "expired"
    } else {
        "issued"
    };
    ReferralView {
        referral_id: row.get("id"),
        patient_id: row.get("patient_id"),
        issuing_hospital: row.get("issuing_hospital"),
        issuing_team: row.get("issuing_team"),
        issuing_doctor: row.get("issuing_doctor"),
        target_hospital: state.hospital.to_string(),
        department: row.get("department"),
        diagnosis_code: row.get("diagnosis_code"),
        reason: row.get("reason"),
        issued_at: row.get("issued_at"),
        expires_at,
        status: status.to_owned(),
        used_by_booking: used_by.map(|b| format!("{}-{b}", state.hospital)),
    }
}

fn text(field: &str, v: &str, max: usize) -> Result<String, RequestError> {
    let v = v.trim();
    if (1..=max).contains(&v.chars().count()) && !v.chars().any(char::is_control) {
        Ok(v.to_owned())
    } else {
        Err(RequestError::invalid(
            field,
            format!("must be 1 to {max} printable characters"),
        ))
    }
}

/// Issue a referral to this hospital; a retry with the same key (from the
/// same centre) answers the first one (`false`).
pub async fn issue(
    state: &AppState,
    req: &IssueRequest,
    key: &str,
) -> Result<(ReferralView, bool), SlotError> {
    let now = state.clock.now();
    let issuing_hospital = text("issuing_hospital", &req.issuing_hospital, 64)?;
    if issuing_hospital == state.hospital.as_str() {
        return Err(RequestError::invalid("target_hospital", "a hospital cannot refer to itself").into());
    }
    let team = text("issuing_team", &req.issuing_team, 64)?;
    let doctor = text("issuing_doctor", &req.issuing_doctor, 64)?;
    let department = text("department", &req.department, 64)?;
    let diagnosis = text("diagnosis_code", &req.diagnosis_code, 32)?;
    let reason = text("reason", &req.reason, 500)?;
    let expires_at = req.expires_at.unwrap_or(now + Duration::days(MAX_VALID_DAYS));
    if expires_at <= now || expires_at > now + Duration::days(MAX_VALID_DAYS) {
        return Err(RequestError::invalid(
            "expires_at",
            format!("must be in the future and at most {MAX_VALID_DAYS} days ahead"),
        )
        .into());
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if let Some(existing) = tx
        .query_opt_cached(
            &format!("{SELECT} WHERE r.issuing_hospital = $1 AND r.idempotency_key = $2"),
            &[&issuing_hospital, &key],
        )
        .await?
    {
        let v = view(state, &existing, now);
        if v.patient_id != req.patient_id || v.department != department {
            return Err(SlotError::IdempotencyKeyReused);
        }
        return Ok((v, false));
    }
    let known = tx
        .query_opt_cached("SELECT 1 FROM departments WHERE external_id = $1", &[&department])
        .await?;
    if known.is_none() {
        return Err(RequestError::invalid("department", "no such department at the target hospital").into());
    }
    let id = Uuid::now_v7();
    tx.execute_cached(
        "INSERT INTO referrals (id, patient_id, issuing_hospital, issuing_team, issuing_doctor, department,
                                diagnosis_code, reason, issued_at, expires_at, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &id,
            &req.patient_id,
            &issuing_hospital,
            &team,
            &doctor,
            &department,
            &diagnosis,
            &reason,
            &now,
            &expires_at,
            &key,
        ],
    )
    .await?;
    let row = tx
        .query_one_cached(&format!("{SELECT} WHERE r.id = $1"), &[&id])
        .await?;
    let v = view(state, &row, now);
    jyt_events::append(&tx, "referral.issued", &id.to_string(), &event_payload(&v)).await?;
    tx.commit().await?;
    state.relay.wake();
    // The copy the booking script reads; a failure here is repaired by the
    // next rebuild, and until then the referral answers REFERRAL_UNKNOWN.
    if let Err(e) = load(state, &v).await {
        tracing::warn!(error = %e, referral = %id, "could not copy a referral to Redis");
    }
    Ok((v, true))
}

/// `referral.*` events: the referral, for channel-accounting's console.
pub fn event_payload(v: &ReferralView) -> serde_json::Value {
    serde_json::json!({
        "schema": 1,
        "referral_id": v.referral_id,
        "patient_id": v.patient_id,
        "issuing_hospital": v.issuing_hospital,
        "issuing_team": v.issuing_team,
        "issuing_doctor": v.issuing_doctor,
        "target_hospital": v.target_hospital,
        "department": v.department,
        "issued_at": v.issued_at,
        "expires_at": v.expires_at,
        "used_by_booking": v.used_by_booking,
    })
}

pub async fn get(state: &AppState, id: Uuid) -> Result<Option<ReferralView>, SlotError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt_cached(&format!("{SELECT} WHERE r.id = $1"), &[&id])
        .await?;
    Ok(row.map(|r| view(state, &r, state.clock.now())))
}

/// The same rule as the booking script, checked again in the booking's
/// own transaction (PostgreSQL is the truth even when Redis lies): the
/// referral as a `referral.used` event payload, or why it is refused.
pub async fn check_for_booking<C: GenericClient>(
    state: &AppState,
    client: &C,
    id: Uuid,
    patient: Uuid,
    department: &str,
) -> Result<ReferralView, SlotError> {
    let row = client
        .query_opt_cached(&format!("{SELECT} WHERE r.id = $1 FOR UPDATE OF r"), &[&id])
        .await?
        .ok_or(SlotError::Referral(Refusal::Unknown))?;
    let v = view(state, &row, state.clock.now());
    let refusal = if v.patient_id != patient {
        Some(Refusal::OfAnotherPatient)
    } else if v.department != department {
        Some(Refusal::NotForDepartment)
    } else {
        match v.status.as_str() {
            "used" => Some(Refusal::Used),
            "issued" => None,
            // Revoked reads as unknown: it no longer entitles anyone.
            "revoked" => Some(Refusal::Unknown),
            _ => Some(Refusal::Expired),
        }
    };
    refusal.map_or(Ok(v), |r| Err(SlotError::Referral(r)))
}

/// Redis forgets a referral a day after it expired: an UNKNOWN from the
/// script is told apart in PostgreSQL (refusals only, never the surge's
/// winners), so a late patient hears EXPIRED.
pub async fn explain(state: &AppState, id: Option<Uuid>, refusal: Refusal) -> Refusal {
    let (Refusal::Unknown, Some(id)) = (refusal, id) else {
        return refusal;
    };
    match get(state, id).await {
        Ok(Some(v)) if v.status == "expired" => Refusal::Expired,
        _ => refusal,
    }
}

/// Copy one referral to Redis (kept a day past its expiry, so a late
/// attempt is told EXPIRED rather than UNKNOWN).
pub async fn load(state: &AppState, v: &ReferralView) -> Result<(), SlotError> {
    let key = state.keys.referral(Some(v.referral_id));
    let used_by = v.used_by_booking.as_deref().map(booking_uuid).unwrap_or_default();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .del(&key)
        .ignore()
        .hset_multiple(
            &key,
            &[
                ("patient", v.patient_id.to_string()),
                ("dept", v.department.clone()),
                ("expires_at", v.expires_at.timestamp().to_string()),
            ],
        )
        .ignore();
    if !used_by.is_empty() {
        pipe.hset(&key, "used_by", used_by).ignore();
    }
    pipe.expire_at(&key, (v.expires_at + Duration::days(1)).timestamp())
        .ignore();
    let mut conn = state.redis.clone();
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// `<hospital>-<uuid>` → `<uuid>`, as the scripts record bookings.
fn booking_uuid(booking: &str) -> String {
    booking
        .len()
        .checked_sub(36)
        .and_then(|at| booking.get(at..))
        .unwrap_or(booking)
        .to_owned()
}

/// Reload every referral still worth knowing (not revoked, expired less
/// than a day ago) into Redis: part of a rebuild. Returns how many.
pub async fn reload_all(state: &AppState) -> Result<usize, SlotError> {
    let now = state.clock.now();
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(
            &format!("{SELECT} WHERE r.revoked_at IS NULL AND r.expires_at > $1"),
            &[&(now - Duration::days(1))],
        )
        .await?;
    drop(client);
    for row in &rows {
        load(state, &view(state, row, now)).await?;
    }
    Ok(rows.len())
}

/// The Redis key of a booking's referral (a key nothing writes for none,
/// or for an old free-string one).
pub fn key_of(state: &AppState, referral_id: Option<&str>) -> String {
    state
        .keys
        .referral(referral_id.and_then(|r| uuid::Uuid::parse_str(r).ok()))
}
