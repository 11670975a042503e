//! Appeals against a no-show. A patient appeals (through their channel and
//! the gateway); when the hospital caused the no-show (it stopped the
//! clinic, or it checked the patient in late) the gateway says so from the
//! hospital's own record and the appeal is granted at once, waiving the
//! no-show exactly as an operator's waiver does. Otherwise it waits in the
//! operators' queue until one waives or refuses it, with a reason.
//!
//! Every step is an event on our outbox (`appeal.submitted`,
//! `appeal.decided`, and `standing.waived` from the waiver), which the
//! regulator's audit trail reads. Views carry ids only: no name and no ID
//! number, so the operators' queue needs no personal-data audit.

use chrono::{DateTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::{GenericClient, Transaction};
use jyt_db::tokio_postgres::Row;
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CardError;
use crate::standing;
use crate::state::AppState;

/// The hospital's part in a no-show, as its slot-inventory reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HospitalCause {
    /// The clinic (schedule) was stopped (停诊).
    ClinicStopped,
    /// The hospital recorded the patient's arrival after the no-show cutoff.
    LateCheckIn,
}

impl HospitalCause {
    fn as_str(self) -> &'static str {
        match self {
            HospitalCause::ClinicStopped => "clinic_stopped",
            HospitalCause::LateCheckIn => "late_check_in",
        }
    }

    fn decision_reason(self) -> &'static str {
        match self {
            HospitalCause::ClinicStopped => "the hospital stopped the clinic",
            HospitalCause::LateCheckIn => "the hospital checked the patient in late",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub no_show_event_id: Uuid,
    /// The patient's own words.
    pub reason: String,
    /// Set only by the gateway, from the hospital's record of the booking.
    #[serde(default)]
    pub hospital_cause: Option<HospitalCause>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Waive,
    Refuse,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Waive => "waive",
            Decision::Refuse => "refuse",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
    pub reason: String,
    /// The console's login of the operator deciding.
    pub operator: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    Pending,
    Granted,
    Refused,
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub status: Option<StatusFilter>,
    #[serde(default)]
    pub hospital_id: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppealView {
    pub appeal_id: Uuid,
    pub person_id: Uuid,
    pub no_show_event_id: Uuid,
    pub hospital_id: String,
    pub booking_id: String,
    pub reason: String,
    pub status: String,
    pub automatic: bool,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct AppealList {
    pub appeals: Vec<AppealView>,
}

const COLUMNS: &str = "id, person_id, no_show_event_id, hospital_id, booking_id, reason, status, \
                       automatic, decided_by, decision_reason, created_at, decided_at";

fn view(r: &Row) -> AppealView {
    AppealView {
        appeal_id: r.get(0),
        person_id: r.get(1),
        no_show_event_id: r.get(2),
        hospital_id: r.get(3),
        booking_id: r.get(4),
        reason: r.get(5),
        status: r.get(6),
        automatic: r.get(7),
        decided_by: r.get(8),
        decision_reason: r.get(9),
        created_at: r.get(10),
        decided_at: r.get(11),
    }
}

fn checked_text<'a>(raw: &'a str, field: &str, max: usize) -> Result<&'a str, CardError> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(RequestError::invalid(field, format!("must be 1 to {max} characters")).into());
    }
    Ok(t)
}

async fn by_id<C: GenericClient>(client: &C, id: Uuid, lock: bool) -> Result<Option<AppealView>, CardError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM appeals WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(client.query_opt_cached(&sql, &[&id]).await?.as_ref().map(view))
}

/// The event both steps emit, in the audit trail's one shape.
async fn emit(
    tx: &Transaction<'_>,
    event_type: &str,
    a: &AppealView,
    decision: Option<&str>,
    reason: &str,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<(), CardError> {
    jyt_events::append(
        tx,
        event_type,
        &a.appeal_id.to_string(),
        &serde_json::json!({
            "appeal_id": a.appeal_id, "person_id": a.person_id, "hospital_id": a.hospital_id,
            "booking_id": a.booking_id, "no_show_event_id": a.no_show_event_id,
            "decision": decision, "reason": reason, "actor": actor,
            "automatic": a.automatic, "at": at,
        }),
    )
    .await?;
    Ok(())
}

/// A patient appeals one of their no-shows; `(appeal, created)`. The same
/// no-show appealed again answers its one appeal, whatever became of it.
pub async fn submit(
    state: &AppState,
    person_id: Uuid,
    req: &SubmitRequest,
    now: DateTime<Utc>,
) -> Result<(AppealView, bool), CardError> {
    let reason = checked_text(&req.reason, "reason", 500)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // The person's standing lock first, as every writer of no-shows takes it.
    standing::lock_person(&tx, person_id).await?;
    let no_show = tx
        .query_opt_cached(
            "SELECT hospital_id, booking_id, waived_at IS NOT NULL FROM no_shows
              WHERE event_id = $1 AND person_id = $2 FOR UPDATE",
            &[&req.no_show_event_id, &person_id],
        )
        .await?
        .ok_or(CardError::NoShowNotFound)?;
    if let Some(existing) = tx
        .query_opt_cached(
            &format!("SELECT {COLUMNS} FROM appeals WHERE no_show_event_id = $1"),
            &[&req.no_show_event_id],
        )
        .await?
    {
        return Ok((view(&existing), false));
    }
    if no_show.get::<_, bool>(2) {
        return Err(CardError::NoShowAlreadyWaived);
    }
    let cause = req.hospital_cause;
    let (status, decided_by, decision_reason, decided_at) = match cause {
        Some(c) => ("granted", Some("auto"), Some(c.decision_reason()), Some(now)),
        None => ("pending", None, None, None),
    };
    let row = tx
        .query_one_cached(
            &format!(
                "INSERT INTO appeals (id, person_id, no_show_event_id, hospital_id, booking_id, reason,
                                      status, automatic, hospital_cause, decided_by, decision_reason,
                                      created_at, decided_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &person_id,
                &req.no_show_event_id,
                &no_show.get::<_, String>(0),
                &no_show.get::<_, String>(1),
                &reason,
                &status,
                &cause.is_some(),
                &cause.map(HospitalCause::as_str),
                &decided_by,
                &decision_reason,
                &now,
                &decided_at,
            ],
        )
        .await?;
    let appeal = view(&row);
    emit(&tx, "appeal.submitted", &appeal, None, reason, "patient", now).await?;
    if let Some(c) = cause {
        standing::waive_in(
            state,
            &tx,
            person_id,
            req.no_show_event_id,
            "auto",
            c.decision_reason(),
            now,
        )
        .await?;
        emit(
            &tx,
            "appeal.decided",
            &appeal,
            Some(Decision::Waive.as_str()),
            c.decision_reason(),
            "auto",
            now,
        )
        .await?;
        tracing::info!(appeal = %appeal.appeal_id, cause = c.as_str(), "appeal granted automatically");
    }
    tx.commit().await?;
    state.relay.wake();
    Ok((appeal, true))
}

/// An operator waives or refuses a pending appeal.
pub async fn decide(
    state: &AppState,
    appeal_id: Uuid,
    req: &DecisionRequest,
    now: DateTime<Utc>,
) -> Result<AppealView, CardError> {
    let reason = checked_text(&req.reason, "reason", 500)?;
    let operator = checked_text(&req.operator, "operator", 64)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let person: Uuid = tx
        .query_opt_cached("SELECT person_id FROM appeals WHERE id = $1", &[&appeal_id])
        .await?
        .ok_or(CardError::AppealNotFound)?
        .get(0);
    // The person's standing lock before the row's, as every writer of
    // no-shows takes them.
    standing::lock_person(&tx, person).await?;
    let current = by_id(&tx, appeal_id, true)
        .await?
        .ok_or(CardError::AppealNotFound)?;
    if current.status != "pending" {
        return Err(CardError::AppealAlreadyDecided);
    }
    let status = match req.decision {
        Decision::Waive => {
            standing::waive_in(
                state,
                &tx,
                current.person_id,
                current.no_show_event_id,
                operator,
                reason,
                now,
            )
            .await?;
            "granted"
        }
        Decision::Refuse => "refused",
    };
    let row = tx
        .query_one_cached(
            &format!(
                "UPDATE appeals SET status = $2, decided_by = $3, decision_reason = $4, decided_at = $5
                  WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&appeal_id, &status, &operator, &reason, &now],
        )
        .await?;
    let appeal = view(&row);
    emit(
        &tx,
        "appeal.decided",
        &appeal,
        Some(req.decision.as_str()),
        reason,
        operator,
        now,
    )
    .await?;
    tx.commit().await?;
    state.relay.wake();
    tracing::info!(appeal = %appeal_id, operator, decision = req.decision.as_str(), "appeal decided");
    Ok(appeal)
}

/// The operators' queue (or history), newest first.
pub async fn list(state: &AppState, q: &ListQuery) -> Result<AppealList, CardError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(RequestError::invalid("limit", "must be 1 to 500").into());
    }
    if let Some(h) = &q.hospital_id {
        let ok = (1..=64).contains(&h.len())
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(RequestError::invalid("hospital_id", "must be a hospital id").into());
        }
    }
    let status = match q.status.unwrap_or(StatusFilter::Pending) {
        StatusFilter::Pending => Some("pending"),
        StatusFilter::Granted => Some("granted"),
        StatusFilter::Refused => Some("refused"),
        StatusFilter::All => None,
    };
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(
            &format!(
                "SELECT {COLUMNS} FROM appeals
                  WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR hospital_id = $2)
                  ORDER BY created_at DESC, id DESC LIMIT $3"
            ),
            &[&status, &q.hospital_id, &limit],
        )
        .await?;
    Ok(AppealList {
        appeals: rows.iter().map(view).collect(),
    })
}

/// One person's appeals, newest first.
pub async fn of_person(state: &AppState, person_id: Uuid) -> Result<AppealList, CardError> {
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(
            &format!("SELECT {COLUMNS} FROM appeals WHERE person_id = $1 ORDER BY created_at DESC, id DESC"),
            &[&person_id],
        )
        .await?;
    Ok(AppealList {
        appeals: rows.iter().map(view).collect(),
    })
}
