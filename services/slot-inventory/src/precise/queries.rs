//! The SQL of 精准预约, apart from its rules.

use chrono::{DateTime, NaiveDate, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::{Error, Row};
use uuid::Uuid;

use super::ProfileInput;

/// A doctor by the hospital's own id: (uuid, name).
pub async fn doctor<C: GenericClient>(
    client: &C,
    external_id: &str,
) -> Result<Option<(Uuid, String)>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT id, name FROM doctors WHERE external_id = $1",
            &[&external_id],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

pub async fn upsert_profile<C: GenericClient>(
    client: &C,
    doctor: Uuid,
    p: &ProfileInput,
    now: DateTime<Utc>,
    actor: &str,
) -> Result<(), Error> {
    client
        .execute_cached(
            "INSERT INTO precise_profiles (doctor_id, conditions, findings, min_age, max_age,
                                           required_documents, auto_match, note, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (doctor_id) DO UPDATE
                SET conditions = EXCLUDED.conditions, findings = EXCLUDED.findings,
                    min_age = EXCLUDED.min_age, max_age = EXCLUDED.max_age,
                    required_documents = EXCLUDED.required_documents, auto_match = EXCLUDED.auto_match,
                    note = EXCLUDED.note, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
            &[
                &doctor,
                &p.conditions,
                &p.findings,
                &p.min_age,
                &p.max_age,
                &p.required_documents,
                &p.auto_match.as_str(),
                &p.note.trim(),
                &now,
                &actor,
            ],
        )
        .await?;
    Ok(())
}

/// Columns read by `profile::to_profile`.
pub const PROFILE_COLUMNS: &str = "d.external_id, d.name, p.conditions, p.findings, p.min_age, p.max_age,
     p.required_documents, p.auto_match, p.note, p.updated_at";

pub async fn profile<C: GenericClient>(client: &C, doctor: Uuid) -> Result<Option<Row>, Error> {
    client
        .query_opt_cached(
            &format!(
                "SELECT {PROFILE_COLUMNS} FROM precise_profiles p JOIN doctors d ON d.id = p.doctor_id
                  WHERE p.doctor_id = $1"
            ),
            &[&doctor],
        )
        .await
}

/// The doctor's open, released sessions with a date in `from..=to`.
pub async fn released_schedules<C: GenericClient>(
    client: &C,
    doctor: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT id FROM schedules WHERE doctor_id = $1 AND status = 'open'
                AND visit_date BETWEEN $2 AND $3 AND release_at <= $4 ORDER BY visit_date, id",
            &[&doctor, &from, &to, &now],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Columns read by `submission::to_submission`.
pub const SUBMISSION_COLUMNS: &str =
    "s.id, d.external_id, s.patient_id, s.channel, s.owner_app, s.diagnosis_codes,
     s.findings, s.age_years, s.symptom_days, s.prior_treatment, s.documents, s.window_from, s.window_to,
     s.status, s.auto_matched, s.decision_reason, s.decided_at, s.booking_id, s.seated_at, s.submitted_at";

pub async fn submission<C: GenericClient>(client: &C, id: Uuid) -> Result<Option<Row>, Error> {
    client
        .query_opt_cached(
            &format!(
                "SELECT {SUBMISSION_COLUMNS} FROM precise_submissions s JOIN doctors d ON d.id = s.doctor_id
                  WHERE s.id = $1"
            ),
            &[&id],
        )
        .await
}

/// The hospital's worklist: submissions in `status` (`all`: any), oldest
/// first.
pub async fn submissions<C: GenericClient>(client: &C, status: &str, limit: i64) -> Result<Vec<Row>, Error> {
    client
        .query_cached(
            &format!(
                "SELECT {SUBMISSION_COLUMNS} FROM precise_submissions s JOIN doctors d ON d.id = s.doctor_id
                  WHERE $1 = 'all' OR s.status = $1 ORDER BY s.submitted_at, s.id LIMIT $2"
            ),
            &[&status, &limit],
        )
        .await
}

/// The patient's open submission to the doctor, if any.
pub async fn open_submission_of<C: GenericClient>(
    client: &C,
    doctor: Uuid,
    patient: Uuid,
) -> Result<Option<Uuid>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT id FROM precise_submissions
              WHERE doctor_id = $1 AND patient_id = $2 AND status IN ('pending', 'matched')",
            &[&doctor, &patient],
        )
        .await?
        .map(|r| r.get(0)))
}

/// A new submission; `None` when the patient already has an open one for
/// this doctor (its unique index).
pub struct NewSubmission<'a> {
    pub id: Uuid,
    pub doctor: Uuid,
    pub input: &'a super::SubmissionInput,
    pub documents: serde_json::Value,
    pub window: (NaiveDate, NaiveDate),
    pub status: &'a str,
    pub auto_matched: bool,
    pub now: DateTime<Utc>,
}

pub async fn insert_submission<C: GenericClient>(client: &C, s: &NewSubmission<'_>) -> Result<bool, Error> {
    let i = s.input;
    let decided_at = s.auto_matched.then_some(s.now);
    let decided_by = s.auto_matched.then_some("rule:auto_match");
    Ok(client
        .execute_cached(
            "INSERT INTO precise_submissions (id, doctor_id, patient_id, channel, owner_app, diagnosis_codes,
                    findings, age_years, symptom_days, prior_treatment, documents, window_from, window_to,
                    status, auto_matched, decided_by, decided_at, submitted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (doctor_id, patient_id) WHERE status IN ('pending', 'matched') DO NOTHING",
            &[
                &s.id,
                &s.doctor,
                &i.patient_id,
                &i.channel.as_str(),
                &i.owner_app,
                &i.diagnosis_codes,
                &i.findings,
                &i.age_years,
                &i.symptom_days,
                &i.prior_treatment.trim(),
                &s.documents,
                &s.window.0,
                &s.window.1,
                &s.status,
                &s.auto_matched,
                &decided_by,
                &decided_at,
                &s.now,
            ],
        )
        .await?
        == 1)
}

/// Record the hospital's decision on a pending submission; false when it
/// is no longer pending.
pub async fn decide<C: GenericClient>(
    client: &C,
    id: Uuid,
    status: &str,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    Ok(client
        .execute_cached(
            "UPDATE precise_submissions SET status = $2, decision_reason = $3, decided_by = $4, decided_at = $5
              WHERE id = $1 AND status = 'pending'",
            &[&id, &status, &reason, &actor, &now],
        )
        .await?
        == 1)
}

/// A matched submission, locked for seating: (patient, channel, owner
/// app, doctor, submitted at); `None` once it is no longer matched.
pub struct Matched {
    pub patient: Uuid,
    pub channel: String,
    pub owner_app: Option<String>,
    pub doctor: Uuid,
    pub submitted_at: DateTime<Utc>,
}

pub async fn matched_for_update<C: GenericClient>(client: &C, id: Uuid) -> Result<Option<Matched>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT patient_id, channel, owner_app, doctor_id, submitted_at FROM precise_submissions
              WHERE id = $1 AND status = 'matched' FOR UPDATE",
            &[&id],
        )
        .await?
        .map(|r| Matched {
            patient: r.get(0),
            channel: r.get(1),
            owner_app: r.get(2),
            doctor: r.get(3),
            submitted_at: r.get(4),
        }))
}

pub async fn mark_seated<C: GenericClient>(
    client: &C,
    id: Uuid,
    booking: Uuid,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    client
        .execute_cached(
            "UPDATE precise_submissions SET status = 'seated', booking_id = $2, seated_at = $3 WHERE id = $1",
            &[&id, &booking, &now],
        )
        .await?;
    Ok(())
}

/// The doctor's matched submissions still without a seat, in order of
/// their match.
pub async fn matched_of<C: GenericClient>(client: &C, doctors: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT id FROM precise_submissions WHERE status = 'matched' AND doctor_id = ANY($1)
              ORDER BY decided_at, id",
            &[&doctors],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Every matched submission still without a seat, in order of match.
pub async fn all_matched<C: GenericClient>(client: &C) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT id FROM precise_submissions WHERE status = 'matched' ORDER BY decided_at, id LIMIT 500",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The last segment not yet begun of each of the doctor's open, released
/// sessions from today on, the earliest session first: where a 加号 seat
/// goes (at the end of the session, as a hospital adds one).
pub async fn next_sessions<C: GenericClient>(
    client: &C,
    doctor: Uuid,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT DISTINCT ON (sch.visit_date, sch.id) seg.id, sch.visit_date, sch.id,
                    (SELECT min(s2.starts_at) FROM segments s2 WHERE s2.schedule_id = sch.id) AS first
               FROM schedules sch JOIN segments seg ON seg.schedule_id = sch.id
              WHERE sch.doctor_id = $1 AND sch.status = 'open' AND sch.visit_date >= $2
                AND sch.release_at <= $3 AND seg.starts_at > $3
              ORDER BY sch.visit_date, sch.id, seg.starts_at DESC",
            &[&doctor, &today, &now],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, DateTime<Utc>>(3), r.get::<_, Uuid>(0)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|(_, segment)| segment)
        .collect())
}

/// Doctors of these schedules.
pub async fn doctors_of<C: GenericClient>(client: &C, schedules: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT DISTINCT doctor_id FROM schedules WHERE id = ANY($1)",
            &[&schedules],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
