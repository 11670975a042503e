//! The federation API of family doctor care (家庭医生签约 and 转诊):
//!
//! - a community health centre registers its family doctor teams (its own
//!   team ids, names, its own doctor ids, capacities) in card-issuing;
//! - one of its family doctors refers a resident signed with their team to
//!   a department of another member hospital (the 医联体 green channel).
//!   The gateway checks, asking card-issuing fresh, that the resident's
//!   active signing is with this centre and that the doctor is in that
//!   team, then relays the referral to the target hospital, which keeps it
//!   and checks it when the `referral` pool is booked (its `hold.lua`).
//!
//! A hospital's key touches only its own path (`403 HOSPITAL_FORBIDDEN`),
//! and a centre refers only its own signed residents (`403
//! REFERRAL_NOT_ALLOWED`).

use actix_web::{HttpResponse, get, post, put, web};
use chrono::{DateTime, Utc};
use jyt_domain::HospitalId;
use jyt_web::extract::IDEMPOTENCY_KEY;
use jyt_web::{IdempotencyKeyHeader, Json, RequestError};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::routes::federation::own;
use crate::state::{GatewayState, HospitalCaller};

#[utoipa::path(
    put, path = "/federation/v1/hospitals/{hospital_id}/family-doctor-teams", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital (a community health centre)")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "`{\"teams\": [{\"team_id\", \"name\", \"doctor_ids\": [the centre's own doctor ids], \"capacity\"}]}`"),
    responses(
        (status = 200, description = "Upserted by the centre's own team ids: every team of the centre with `signed` (residents signed now)", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD (teams, teams[].team_id, name, doctor_ids, capacity)", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[put("/hospitals/{hospital_id}/family-doctor-teams")]
pub async fn put_teams(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<String>,
    body: Json<serde_json::Value>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path)?;
    let answer = state
        .patients
        .call(
            Method::PUT,
            &format!("/v1/hospitals/{hospital}/family-doctor-teams"),
            Some(&body.0),
            None,
        )
        .await?;
    Ok(answer.into_response())
}

#[utoipa::path(
    get, path = "/federation/v1/hospitals/{hospital_id}/family-doctor-teams", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital")),
    responses(
        (status = 200, description = "The centre's teams with `capacity` and `signed`", body = serde_json::Value),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[get("/hospitals/{hospital_id}/family-doctor-teams")]
pub async fn teams(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path)?;
    let answer = state
        .patients
        .call(
            Method::GET,
            &format!("/v1/hospitals/{hospital}/family-doctor-teams"),
            None,
            None,
        )
        .await?;
    Ok(answer.into_response())
}

/// A referral, as the issuing centre's HIS sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralRequest {
    /// The resident's platform card, as presented at the visit.
    pub card_number: String,
    /// The referring family doctor (the centre's own doctor id).
    pub doctor_id: String,
    /// The member hospital referred to (not the centre itself).
    pub target_hospital: String,
    /// The target hospital's department, by its published id.
    pub department: String,
    /// ICD-10 code of the diagnosis, e.g. `I20.9`.
    pub diagnosis_code: String,
    pub reason: String,
    /// At most 30 days ahead; 30 days when absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post, path = "/federation/v1/hospitals/{hospital_id}/referrals", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital: the referring centre"), ("Idempotency-Key" = String, Header, description = "Same key, same referral")),
    request_body = ReferralRequest,
    responses(
        (status = 201, description = "The referral, kept by the target hospital: `referral_id` (the patient books the target's `referral` pool with it), `expires_at`, `status`", body = serde_json::Value),
        (status = 200, description = "The referral of an earlier request with this key", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD (card_number, target_hospital, department, diagnosis_code, reason, expires_at)", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id; REFERRAL_NOT_ALLOWED: the resident is not signed with one of this centre's teams, or the doctor is not in their team", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND, HOSPITAL_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "IDEMPOTENCY_KEY_REUSED", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[post("/hospitals/{hospital_id}/referrals")]
#[tracing::instrument(skip_all, fields(hospital = %path))]
pub async fn issue(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<String>,
    key: IdempotencyKeyHeader,
    body: Json<ReferralRequest>,
) -> Result<HttpResponse, GatewayError> {
    let centre = own(&caller, &path)?;
    let r = body.0;
    let target: HospitalId = r
        .target_hospital
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("target_hospital", e.to_string()))?;
    if target == centre {
        return Err(RequestError::invalid("target_hospital", "a centre refers to another hospital").into());
    }
    state.upstreams.route(&target)?;
    let patient = state
        .patients
        .resolve(
            CardRef {
                card_number: Some(r.card_number.as_str()),
                ecard_token: None,
            },
            Utc::now(),
        )
        .await?;
    let signing =
        crate::signings::ask(&state.patients, patient)
            .await?
            .ok_or(GatewayError::ReferralNotAllowed(
                "the resident has no active family doctor signing",
            ))?;
    if signing.hospital != centre.as_str() {
        return Err(GatewayError::ReferralNotAllowed(
            "the resident is signed with another centre's team",
        ));
    }
    if !signing.doctor_ids.contains(&r.doctor_id) {
        return Err(GatewayError::ReferralNotAllowed(
            "the doctor is not in the resident's family doctor team",
        ));
    }
    let upstream = serde_json::json!({
        "patient_id": patient,
        "issuing_hospital": centre,
        "issuing_team": signing.team_id,
        "issuing_doctor": r.doctor_id,
        "department": r.department,
        "diagnosis_code": r.diagnosis_code,
        "reason": r.reason,
        "expires_at": r.expires_at,
    });
    let mut headers = HeaderMap::new();
    let key_header = HeaderValue::from_str(key.0.as_str())
        .map_err(|_| RequestError::invalid(IDEMPOTENCY_KEY, "must be visible ASCII"))?;
    headers.insert(IDEMPOTENCY_KEY, key_header);
    let body = serde_json::to_vec(&upstream).map_err(|e| GatewayError::Unexpected(e.into()))?;
    let answer = state
        .upstreams
        .forward(&target, Method::POST, "/v1/referrals", headers, Some(body))
        .await?;
    Ok(answer.into_response())
}
