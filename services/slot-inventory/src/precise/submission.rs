//! A patient's history submitted to an expert whose clinic is sold out
//! for their channel, the expert's rule applied at once, and the
//! hospital's decision on the rest. A match is seated straight away
//! ([`super::seat`]). Nothing identifying beyond the patient's id is
//! taken: no ID number, no phone; documents are references.

use chrono::{DateTime, Days, NaiveDate, Utc};
use jyt_domain::{BookingRef, Channel};
use jyt_web::RequestError;
use uuid::Uuid;

use super::queries::{self, NewSubmission};
use super::rules::{self, Facts, Wanted};
use super::{Decision, DecisionInput, DocumentRef, Submission, SubmissionInput, seat};
use crate::booking::waitlist;
use crate::booking::waitlist_queries;
use crate::error::SlotError;
use crate::state::AppState;

/// The longest window of dates a submission may name.
const MAX_WINDOW_DAYS: u64 = 31;

fn validate(s: &SubmissionInput) -> Result<(), SlotError> {
    if matches!(s.channel, Channel::Referral | Channel::Clinic) {
        return Err(RequestError::invalid(
            "channel",
            "referral and in-clinic bookings have their own pools; submit through a patient's channel",
        )
        .into());
    }
    if s.diagnosis_codes.is_empty() {
        return Err(RequestError::invalid("diagnosis_codes", "name at least one ICD-10 code").into());
    }
    rules::list(
        "diagnosis_codes",
        &s.diagnosis_codes,
        |c| rules::icd10(c, false),
        "an ICD-10 code such as C34.1",
    )?;
    rules::list(
        "findings",
        &s.findings,
        rules::key,
        "a lower-case snake_case key of 1 to 40 characters",
    )?;
    if !(0..=150).contains(&s.age_years) {
        return Err(RequestError::invalid("age_years", "must be between 0 and 150").into());
    }
    if !(0..=36_500).contains(&s.symptom_days) {
        return Err(RequestError::invalid("symptom_days", "must be between 0 and 36500").into());
    }
    rules::text("prior_treatment", &s.prior_treatment)?;
    rules::documents(&s.documents)?;
    Ok(())
}

/// The dates asked about: as given, or today to the release window's end.
fn window(state: &AppState, s: &SubmissionInput) -> Result<(NaiveDate, NaiveDate), SlotError> {
    let today = state.clock.today();
    let policy = state.policy.get();
    let from = s.window_from.unwrap_or(today);
    let to = s.window_to.unwrap_or_else(|| {
        from.checked_add_days(Days::new(u64::from(policy.window_days)))
            .unwrap_or(from)
    });
    if from < today {
        return Err(RequestError::invalid("window_from", "must be today or later").into());
    }
    if to < from {
        return Err(RequestError::invalid("window_to", "must not be before window_from").into());
    }
    if from
        .checked_add_days(Days::new(MAX_WINDOW_DAYS))
        .is_some_and(|last| to > last)
    {
        return Err(RequestError::invalid(
            "window_to",
            format!("at most {MAX_WINDOW_DAYS} days after window_from"),
        )
        .into());
    }
    Ok((from, to))
}

/// Submit; answers the submission as stored and whether it is new
/// (`false`: the patient's open submission to this doctor, unchanged).
pub async fn submit(
    state: &AppState,
    doctor_id: &str,
    input: &SubmissionInput,
) -> Result<(Submission, bool), SlotError> {
    validate(input)?;
    let window = window(state, input)?;
    let (doctor, _) = super::profile::doctor(state, doctor_id).await?;
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let profile = queries::profile(&tx, doctor)
        .await?
        .ok_or_else(|| SlotError::PreciseProfileNotFound(doctor_id.to_owned()))?;
    let profile = super::profile::to_profile(&profile);
    if let Some(open) = queries::open_submission_of(&tx, doctor, input.patient_id).await? {
        drop(tx);
        return Ok((get(state, open).await?, false));
    }
    // Only against a sold-out clinic: every released session of the
    // doctor in the window, none with a seat this channel may book (the
    // waitlist's own count, so both doors agree).
    let sessions = queries::released_schedules(&tx, doctor, window.0, window.1, now).await?;
    if sessions.is_empty() {
        return Err(SlotError::ClinicNotSoldOut(
            "the doctor has no released clinic in the window".into(),
        ));
    }
    for schedule in &sessions {
        let Some(fill) = waitlist_queries::schedule_fill_for_update(&tx, *schedule).await? else {
            continue;
        };
        if waitlist::seats_for(state, &fill, input.channel, now) > 0 {
            return Err(SlotError::ClinicNotSoldOut(format!(
                "the clinic of {} still has seats for this channel; book one instead",
                fill.visit_date
            )));
        }
    }
    let wanted = Wanted {
        conditions: &profile.conditions,
        findings: &profile.findings,
        min_age: profile.min_age,
        max_age: profile.max_age,
        required_documents: &profile.required_documents,
        auto_match: profile.auto_match,
    };
    let facts = Facts {
        diagnosis_codes: &input.diagnosis_codes,
        findings: &input.findings,
        age_years: input.age_years,
        document_kinds: input.documents.iter().map(|d| d.kind.as_str()).collect(),
    };
    let auto = rules::auto_matches(&wanted, &facts);
    let id = Uuid::now_v7();
    let status = if auto { "matched" } else { "pending" };
    let inserted = queries::insert_submission(
        &tx,
        &NewSubmission {
            id,
            doctor,
            input,
            documents: serde_json::to_value(&input.documents).map_err(|e| SlotError::Unexpected(e.into()))?,
            window,
            status,
            auto_matched: auto,
            now,
        },
    )
    .await?;
    if !inserted {
        // A concurrent submission of the same patient won.
        return Err(SlotError::PreciseAlreadySubmitted);
    }
    jyt_events::append(
        &tx,
        "precise.submitted",
        &id.to_string(),
        &serde_json::json!({
            "schema": 1,
            "hospital_id": state.hospital,
            "submission_id": id,
            "doctor_id": doctor_id,
            "channel": input.channel,
            "owner_app": input.owner_app,
            "submitted_at": now,
        }),
    )
    .await?;
    if auto {
        decided_event(
            &tx,
            state,
            id,
            doctor_id,
            Decision::Matched,
            "rule:auto_match",
            now,
        )
        .await?;
    }
    tx.commit().await?;
    state.relay.wake();
    if auto {
        seat_now(state, id).await;
    }
    Ok((get(state, id).await?, true))
}

async fn decided_event(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    state: &AppState,
    id: Uuid,
    doctor_id: &str,
    decision: Decision,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), SlotError> {
    jyt_events::append(
        tx,
        "precise.decided",
        &id.to_string(),
        &serde_json::json!({
            "schema": 1,
            "hospital_id": state.hospital,
            "submission_id": id,
            "doctor_id": doctor_id,
            "decision": decision,
            "automatic": actor == "rule:auto_match",
            "actor": actor,
            "decided_at": now,
        }),
    )
    .await?;
    Ok(())
}

/// The hospital's decision on a pending submission; a match is seated at
/// once (or waits, matched, for the doctor's next session).
pub async fn decide(
    state: &AppState,
    id: Uuid,
    input: &DecisionInput,
    actor: &str,
) -> Result<Submission, SlotError> {
    let reason = input.reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(RequestError::invalid("reason", "must be 1 to 200 printable characters").into());
    }
    let current = get(state, id).await?;
    let status = match input.decision {
        Decision::Matched => "matched",
        Decision::Rejected => "rejected",
    };
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if !queries::decide(&tx, id, status, reason, actor, now).await? {
        return Err(SlotError::PreciseAlreadyDecided(current.status));
    }
    decided_event(&tx, state, id, &current.doctor_id, input.decision, actor, now).await?;
    tx.commit().await?;
    state.relay.wake();
    if input.decision == Decision::Matched {
        seat_now(state, id).await;
    }
    get(state, id).await
}

/// Seat a match right away; the match is stored whatever happens, so a
/// failure (Redis briefly away, say) leaves it `matched` for the sweeper's
/// next pass rather than failing the answer.
async fn seat_now(state: &AppState, id: Uuid) {
    if let Err(e) = seat::seat(state, id).await {
        tracing::warn!(error = %e, submission = %id, "could not seat a precise-appointment match yet");
    }
}

pub async fn get(state: &AppState, id: Uuid) -> Result<Submission, SlotError> {
    let client = state.pool.get().await?;
    let row = queries::submission(&client, id)
        .await?
        .ok_or_else(|| SlotError::PreciseSubmissionNotFound(id.to_string()))?;
    Ok(to_submission(state, &row))
}

/// The hospital's worklist (`pending` by default).
pub async fn list(state: &AppState, status: Option<&str>) -> Result<Vec<Submission>, SlotError> {
    let status = status.unwrap_or("pending");
    if !["pending", "matched", "seated", "rejected", "all"].contains(&status) {
        return Err(
            RequestError::invalid("status", "must be pending, matched, seated, rejected or all").into(),
        );
    }
    let client = state.pool.get().await?;
    let rows = queries::submissions(&client, status, 500).await?;
    Ok(rows.iter().map(|r| to_submission(state, r)).collect())
}

fn to_submission(state: &AppState, row: &jyt_db::tokio_postgres::Row) -> Submission {
    let local = |t: Option<DateTime<Utc>>| t.map(jyt_domain::time::local);
    let channel: String = row.get(3);
    let documents: serde_json::Value = row.get(10);
    let submitted_at: DateTime<Utc> = row.get(19);
    Submission {
        submission_id: row.get(0),
        doctor_id: row.get(1),
        patient_id: row.get(2),
        // The CHECK constraint keeps the column to known channels.
        channel: channel.parse().unwrap_or(Channel::Window),
        owner_app: row.get(4),
        diagnosis_codes: row.get(5),
        findings: row.get(6),
        age_years: row.get(7),
        symptom_days: row.get(8),
        prior_treatment: row.get(9),
        documents: serde_json::from_value::<Vec<DocumentRef>>(documents).unwrap_or_default(),
        window_from: row.get(11),
        window_to: row.get(12),
        status: row.get(13),
        auto_matched: row.get(14),
        decision_reason: row.get(15),
        decided_at: local(row.get(16)),
        booking_id: row
            .get::<_, Option<Uuid>>(17)
            .map(|b| BookingRef::new(state.hospital.clone(), b)),
        seated_at: local(row.get(18)),
        submitted_at: jyt_domain::time::local(submitted_at),
    }
}
