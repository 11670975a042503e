//! An expert's patient profile: published by the hospital (federation
//! API, its key named as the actor), read by patients' apps.

use chrono::{DateTime, Utc};
use jyt_web::RequestError;
use uuid::Uuid;

use super::rules::{self, MAX_TEXT};
use super::{AutoMatch, Profile, ProfileInput, queries};
use crate::error::SlotError;
use crate::state::AppState;

fn validate(p: &ProfileInput) -> Result<(), SlotError> {
    if p.conditions.is_empty() {
        return Err(RequestError::invalid("conditions", "name at least one ICD-10 code or prefix").into());
    }
    rules::list(
        "conditions",
        &p.conditions,
        |c| rules::icd10(c, true),
        "an ICD-10 code or prefix such as C34 or I25.1",
    )?;
    let snake = "a lower-case snake_case key of 1 to 40 characters";
    rules::list("findings", &p.findings, rules::key, snake)?;
    rules::list("required_documents", &p.required_documents, rules::key, snake)?;
    for (field, age) in [("min_age", p.min_age), ("max_age", p.max_age)] {
        if age.is_some_and(|a| !(0..=150).contains(&a)) {
            return Err(RequestError::invalid(field, "must be between 0 and 150").into());
        }
    }
    if let (Some(min), Some(max)) = (p.min_age, p.max_age)
        && min > max
    {
        return Err(RequestError::invalid("max_age", "must not be below min_age").into());
    }
    if p.auto_match == AutoMatch::ConditionAndFinding && p.findings.is_empty() {
        return Err(RequestError::invalid(
            "findings",
            "the rule condition_and_finding needs at least one finding",
        )
        .into());
    }
    if p.note.chars().count() > MAX_TEXT {
        return Err(RequestError::invalid("note", format!("at most {MAX_TEXT} characters")).into());
    }
    rules::text("note", &p.note)?;
    Ok(())
}

/// The doctor by the hospital's own id, or 404.
pub async fn doctor(state: &AppState, external_id: &str) -> Result<(Uuid, String), SlotError> {
    let client = state.pool.get().await?;
    queries::doctor(&client, external_id)
        .await?
        .ok_or_else(|| SlotError::DoctorNotFound(external_id.to_owned()))
}

/// Publish (or replace) the doctor's profile on behalf of `actor`.
pub async fn put(
    state: &AppState,
    doctor_id: &str,
    input: &ProfileInput,
    actor: &str,
) -> Result<Profile, SlotError> {
    validate(input)?;
    let (doctor, _) = doctor(state, doctor_id).await?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let now = state.clock.now();
    queries::upsert_profile(&tx, doctor, input, now, actor).await?;
    jyt_events::append(
        &tx,
        "precise.profile_published",
        &doctor.to_string(),
        &serde_json::json!({
            "schema": 1,
            "hospital_id": state.hospital,
            "doctor_id": doctor_id,
            "auto_match": input.auto_match,
            "conditions": input.conditions,
            "actor": actor,
        }),
    )
    .await?;
    let row = queries::profile(&tx, doctor)
        .await?
        .ok_or_else(|| SlotError::PreciseProfileNotFound(doctor_id.to_owned()))?;
    tx.commit().await?;
    state.relay.wake();
    Ok(to_profile(&row))
}

pub async fn get(state: &AppState, doctor_id: &str) -> Result<Profile, SlotError> {
    let (doctor, _) = doctor(state, doctor_id).await?;
    let client = state.pool.get().await?;
    let row = queries::profile(&client, doctor)
        .await?
        .ok_or_else(|| SlotError::PreciseProfileNotFound(doctor_id.to_owned()))?;
    Ok(to_profile(&row))
}

pub(crate) fn to_profile(row: &jyt_db::tokio_postgres::Row) -> Profile {
    let updated_at: DateTime<Utc> = row.get(9);
    Profile {
        doctor_id: row.get(0),
        doctor: row.get(1),
        conditions: row.get(2),
        findings: row.get(3),
        min_age: row.get(4),
        max_age: row.get(5),
        required_documents: row.get(6),
        auto_match: AutoMatch::parse(row.get(7)),
        note: row.get(8),
        updated_at: jyt_domain::time::local(updated_at),
    }
}
