//! 精准预约 figures from slot-inventory's events, one row per submission:
//! - `precise.submitted`: the submission, its doctor, channel and time;
//! - `precise.decided`: matched or rejected, by the expert's rule or the
//!   hospital, and when;
//! - `precise.seated`: the 加号 seat's booking and when it was given.
//!
//! Each event fills only its own columns (an upsert), so the order they
//! arrive in does not matter.

use chrono::{DateTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_events::Envelope;
use serde_json::Value;

fn text(p: &Value, field: &str) -> String {
    p.get(field).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn instant(p: &Value, field: &str, or: DateTime<Utc>) -> DateTime<Utc> {
    p.get(field)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(or, |t| t.with_timezone(&Utc))
}

/// Apply a `precise.*` event; false when it is not one.
pub async fn apply<C: GenericClient>(client: &C, event: &Envelope) -> anyhow::Result<bool> {
    let p = &event.payload;
    let (hospital, submission, doctor) = (
        text(p, "hospital_id"),
        text(p, "submission_id"),
        text(p, "doctor_id"),
    );
    let at = |field: &str| instant(p, field, event.occurred_at);
    match event.event_type.as_str() {
        "precise.submitted" => {
            client
                .execute_cached(
                    "INSERT INTO precise_submissions (hospital_id, submission_id, doctor_id, channel, submitted_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (hospital_id, submission_id) DO UPDATE
                        SET channel = EXCLUDED.channel, submitted_at = EXCLUDED.submitted_at",
                    &[&hospital, &submission, &doctor, &text(p, "channel"), &at("submitted_at")],
                )
                .await?;
        }
        "precise.decided" => {
            let decision = match text(p, "decision").as_str() {
                "matched" => "matched",
                _ => "rejected",
            };
            let automatic = p.get("automatic").and_then(Value::as_bool) == Some(true);
            client
                .execute_cached(
                    "INSERT INTO precise_submissions (hospital_id, submission_id, doctor_id, decision,
                                                      auto_matched, decided_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (hospital_id, submission_id) DO UPDATE
                        SET decision = EXCLUDED.decision, auto_matched = EXCLUDED.auto_matched,
                            decided_at = EXCLUDED.decided_at",
                    &[
                        &hospital,
                        &submission,
                        &doctor,
                        &decision,
                        &automatic,
                        &at("decided_at"),
                    ],
                )
                .await?;
        }
        "precise.seated" => {
            client
                .execute_cached(
                    "INSERT INTO precise_submissions (hospital_id, submission_id, doctor_id, submitted_at,
                                                      booking_id, seated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (hospital_id, submission_id) DO UPDATE
                        SET booking_id = EXCLUDED.booking_id, seated_at = EXCLUDED.seated_at,
                            submitted_at = coalesce(precise_submissions.submitted_at, EXCLUDED.submitted_at)",
                    &[
                        &hospital,
                        &submission,
                        &doctor,
                        &at("submitted_at"),
                        &text(p, "booking_id"),
                        &at("seated_at"),
                    ],
                )
                .await?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}
