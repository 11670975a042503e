//! The post-visit satisfaction survey (广东省中医 model), for the app the
//! booking belongs to: after `booking.completed` that app is sent a
//! `survey.invited` notice naming the survey; it shows the questions to
//! its patient and sends the answers here. The survey lives in
//! channel-accounting ([`crate::surveys`]); the gateway checks who asks:
//!
//! - the signing app must be the booking's own (`owner_app`), else 403
//!   `NOT_YOUR_SURVEY`: another app learns nothing, not even whether the
//!   visit happened;
//! - the patient's card or e-card token (`X-Patient-Card` /
//!   `X-Patient-Ecard-Token`) must name the visit's patient, or the card
//!   holder a family member was booked for, else 403 `NOT_YOUR_SURVEY`:
//!   the app shows that its patient, present now, answers.

use actix_web::{HttpRequest, HttpResponse, get, put, web};
use chrono::Utc;
use jyt_domain::survey::Answers;
use jyt_web::{Json, RequestError};
use uuid::Uuid;

use crate::booking::{PATIENT_CARD_HEADER, as_card_header, patient_card_headers};
use crate::error::GatewayError;
use crate::state::{Caller, GatewayState};
use crate::surveys::SurveyOwner;
use crate::upstream::Forwarded;

fn survey_id(raw: &str) -> Result<Uuid, GatewayError> {
    raw.parse()
        .map_err(|_| RequestError::invalid("survey_id", "must be a survey id (a UUID)").into())
}

/// The survey, once the caller proved it may see it; a survey that does
/// not exist is answered as channel-accounting said (404).
async fn checked(
    state: &GatewayState,
    caller: &Caller,
    req: &HttpRequest,
    id: Uuid,
) -> Result<Result<Forwarded, Forwarded>, GatewayError> {
    let card = patient_card_headers(req)?.ok_or_else(|| {
        GatewayError::from(RequestError::invalid(
            PATIENT_CARD_HEADER,
            "the patient's card number (or X-Patient-Ecard-Token) is required: the patient answers",
        ))
    })?;
    let (
        survey,
        SurveyOwner {
            owner_app,
            patient_id,
        },
    ) = match state.surveys.read(id).await? {
        Ok(found) => found,
        Err(not_found) => return Ok(Err(not_found)),
    };
    if owner_app != caller.app_id {
        return Err(GatewayError::NotYourSurvey);
    }
    match state.patients.acting(card, Some(patient_id), Utc::now()).await {
        Ok(_) => Ok(Ok(survey)),
        Err(GatewayError::NotFamilyMember) => Err(GatewayError::NotYourSurvey),
        Err(e) => Err(as_card_header(e)),
    }
}

#[utoipa::path(
    get,
    path = "/v1/surveys/{survey_id}",
    tag = "surveys",
    params(
        ("survey_id" = String, Path, description = "From the `survey.invited` notice"),
        ("X-Patient-Card" = Option<String>, Header, description = "The visit's patient's platform card number (or the card holder's who booked for a family member); this or X-Patient-Ecard-Token is required"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or the patient's e-card QR token"),
    ),
    responses(
        (status = 200, description = "The survey: `status` open, answered or expired, `expires_at`, `questions_version`, and `answer` once given", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD (survey_id, or X-Patient-Card when no card is given), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_SURVEY: another app's survey, or another patient's card; CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "SURVEY_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "SURVEYS_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/surveys/{survey_id}")]
pub async fn get(
    state: web::Data<GatewayState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = survey_id(&path)?;
    Ok(match checked(&state, &caller, &req, id).await? {
        Ok(survey) | Err(survey) => survey.into_response(),
    })
}

#[utoipa::path(
    put,
    path = "/v1/surveys/{survey_id}/answers",
    tag = "surveys",
    params(
        ("survey_id" = String, Path, description = "From the `survey.invited` notice"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET: required, or X-Patient-Ecard-Token"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or the patient's e-card QR token"),
    ),
    request_body = jyt_domain::survey::Answers,
    responses(
        (status = 200, description = "Recorded: the survey with its answer. The same answers again answer the same (`Idempotency-Replayed: true`)", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD naming the field (scores 1 to 5, comment at most 500 characters), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_SURVEY, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "SURVEY_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "SURVEY_ALREADY_ANSWERED: other answers were recorded first; they stand", body = crate::openapi::ProblemDoc),
        (status = 410, description = "SURVEY_EXPIRED: seven days after the visit (with expires_at); nothing recorded", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "SURVEYS_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[put("/surveys/{survey_id}/answers")]
pub async fn answer(
    state: web::Data<GatewayState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<Answers>,
) -> Result<HttpResponse, GatewayError> {
    let id = survey_id(&path)?;
    // Bad input is refused before anyone is asked.
    let answers = body
        .0
        .checked()
        .map_err(|(field, reason)| GatewayError::from(RequestError::invalid(field, reason)))?;
    if let Err(not_found) = checked(&state, &caller, &req, id).await? {
        return Ok(not_found.into_response());
    }
    let answers = serde_json::to_value(&answers).map_err(|e| GatewayError::Unexpected(e.into()))?;
    Ok(state.surveys.answer(id, &answers).await?.into_response())
}
