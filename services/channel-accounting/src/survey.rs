//! The post-visit satisfaction survey (广东省中医患者满意度调查): created
//! from `booking.completed`, one per visit, answered once through the
//! gateway by the booking's own app, and counted for the operators'
//! 满意度 page ([`crate::routes::satisfaction`]).
//!
//! - A visit gets a survey when a channel app booked it (`owner_app`): that
//!   app is who the gateway invites and the only one that may answer. A
//!   visit booked at a hospital window has nobody to ask.
//! - The survey's id is derived from the booking
//!   ([`jyt_domain::survey::survey_id`]); `booking_id` is unique, so a
//!   second `booking.completed` for a visit (another event id) changes
//!   nothing.
//! - It takes answers until `expires_at`: the hospital's completion instant
//!   (`detail.completed_at`, else the event's) plus seven days.
//! - An answer is recorded once. The same answers again are answered with
//!   the stored record (a retry after a lost reply); other answers are
//!   refused with 409 and the first answer stands: a patient's second
//!   thoughts would otherwise rewrite figures operators already saw.

use chrono::{DateTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::{GenericClient, Pool};
use jyt_domain::survey::{self, Answers};
use jyt_domain::time::local;
use jyt_events::Envelope;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::AccountingError;

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Create the survey of a completed visit (once per booking); nothing for a
/// visit no channel app booked, or an event too malformed to say whose.
pub async fn create<C: GenericClient>(client: &C, event: &Envelope) -> anyhow::Result<()> {
    let p = &event.payload;
    let detail = p.get("detail").unwrap_or(&Value::Null);
    let (Some(booking), Some(owner_app)) = (text(p, "booking_id"), text(p, "owner_app")) else {
        tracing::debug!(event = %event.event_id, "completed visit without a channel app: no survey");
        return Ok(());
    };
    let Some(patient) = text(p, "patient_id").and_then(|s| s.parse::<Uuid>().ok()) else {
        tracing::warn!(event = %event.event_id, "booking.completed without a patient id: no survey");
        return Ok(());
    };
    let completed_at = text(detail, "completed_at")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map_or(event.occurred_at, |t| t.with_timezone(&Utc));
    let field = |v: &Value, f: &str| text(v, f).unwrap_or_default();
    client
        .execute_cached(
            "INSERT INTO surveys (survey_id, booking_id, hospital_id, department_id, department, doctor_id,
                                  doctor, channel, owner_app, patient_id, completed_at, completed_day,
                                  expires_at, questions_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (booking_id) DO NOTHING",
            &[
                &survey::survey_id(&booking),
                &booking,
                &field(p, "hospital_id"),
                &field(detail, "department_id"),
                &field(p, "department"),
                &field(detail, "doctor_id"),
                &field(p, "doctor"),
                &field(p, "channel"),
                &owner_app,
                &patient,
                &completed_at,
                &local(completed_at).date_naive(),
                &survey::expires_at(completed_at),
                &survey::QUESTIONS_VERSION,
            ],
        )
        .await?;
    Ok(())
}

/// A survey as the gateway reads it: whom it belongs to (the gateway
/// checks the app and the patient), and its answer once given.
#[derive(Debug, Serialize)]
pub struct Survey {
    pub survey_id: Uuid,
    pub booking_id: String,
    pub hospital_id: String,
    pub department: String,
    pub doctor: String,
    pub owner_app: String,
    pub patient_id: Uuid,
    pub completed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub questions_version: i32,
    /// `open`, `answered` or `expired` (unanswered past `expires_at`).
    pub status: &'static str,
    pub answer: Option<Answered>,
}

/// A recorded answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answered {
    pub answered_at: DateTime<Utc>,
    #[serde(flatten)]
    pub answers: Answers,
}

async fn answer_of<C: GenericClient>(client: &C, id: Uuid) -> Result<Option<Answered>, AccountingError> {
    let row = client
        .query_opt_cached(
            "SELECT answered_at, overall, wait_time, explanation, would_recommend, comment
               FROM survey_answers WHERE survey_id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| Answered {
        answered_at: r.get(0),
        answers: Answers {
            overall: r.get(1),
            wait_time: r.get(2),
            explanation: r.get(3),
            would_recommend: r.get(4),
            comment: r.get(5),
        },
    }))
}

async fn survey_of<C: GenericClient>(
    client: &C,
    id: Uuid,
    now: DateTime<Utc>,
    lock: bool,
) -> Result<Survey, AccountingError> {
    let sql = format!(
        "SELECT survey_id, booking_id, hospital_id, department, doctor, owner_app, patient_id,
                completed_at, expires_at, questions_version
           FROM surveys WHERE survey_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let r = client
        .query_opt_cached(&sql, &[&id])
        .await?
        .ok_or(AccountingError::SurveyNotFound(id))?;
    let answer = answer_of(client, id).await?;
    let expires_at: DateTime<Utc> = r.get(8);
    let status = match (&answer, now >= expires_at) {
        (Some(_), _) => "answered",
        (None, true) => "expired",
        (None, false) => "open",
    };
    Ok(Survey {
        survey_id: r.get(0),
        booking_id: r.get(1),
        hospital_id: r.get(2),
        department: r.get(3),
        doctor: r.get(4),
        owner_app: r.get(5),
        patient_id: r.get(6),
        completed_at: r.get(7),
        expires_at,
        questions_version: r.get(9),
        status,
        answer,
    })
}

pub async fn get(pool: &Pool, id: Uuid, now: DateTime<Utc>) -> Result<Survey, AccountingError> {
    let client = pool.get().await?;
    survey_of(&client, id, now, false).await
}

/// Record `answers` (already [`Answers::checked`]) unless the survey closed
/// or holds other answers; the survey as it now stands, and whether this
/// call recorded it (false: the same answers were there already).
pub async fn answer(
    pool: &Pool,
    id: Uuid,
    answers: Answers,
    now: DateTime<Utc>,
) -> Result<(Survey, bool), AccountingError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Locked: two answers at once are one first and one second.
    let current = survey_of(&tx, id, now, true).await?;
    if let Some(previous) = &current.answer {
        return if previous.answers == answers {
            Ok((current, false))
        } else {
            Err(AccountingError::SurveyAlreadyAnswered {
                answered_at: previous.answered_at,
            })
        };
    }
    if now >= current.expires_at {
        return Err(AccountingError::SurveyExpired {
            expires_at: current.expires_at,
        });
    }
    tx.execute_cached(
        "INSERT INTO survey_answers (survey_id, answered_at, questions_version, overall, wait_time,
                                     explanation, would_recommend, comment)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id,
            &now,
            &current.questions_version,
            &answers.overall,
            &answers.wait_time,
            &answers.explanation,
            &answers.would_recommend,
            &answers.comment,
        ],
    )
    .await?;
    let stored = survey_of(&tx, id, now, false).await?;
    tx.commit().await?;
    Ok((stored, true))
}
