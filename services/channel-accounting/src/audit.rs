//! The audit trail: who changed which capacity, stop, waiver or appeal,
//! and when, kept from the events that carry the actor; and the 加号
//! requests of waitlists with the capacity change that answered them.
//!
//! Events and what they leave:
//! - `segment.capacity_changed` (slot-inventory): a `capacity` row for the
//!   slot; answers the schedule's open capacity requests when it adds seats.
//! - `schedule.stopped` (slot-inventory): a `stop` row for the schedule,
//!   and each of its slots mapped to it, so every slot's provenance shows it.
//! - `policy.changed` (slot-inventory): a `policy` row for the hospital,
//!   naming the fields that changed.
//! - `waitlist.capacity_requested` (slot-inventory): an open request.
//! - `waitlist.session_added` (slot-inventory): a session published for
//!   the waitlist; a `capacity` row for it, and it answers the open
//!   requests of every line it serves.
//! - `standing.waived`, `appeal.decided` (card-issuing): `waiver` and
//!   `appeal` rows for the person (and the hospital of the no-show).
//!
//! An event without an actor is recorded with actor `unknown` rather than
//! dropped: the change happened, and the trail must show it did.

use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_events::Envelope;
use serde_json::Value;

/// The kinds of change the trail records, as stored and as queried.
pub const KINDS: [&str; 5] = ["capacity", "stop", "policy", "waiver", "appeal"];

fn text(v: &Value, field: &str) -> Option<String> {
    match v.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn actor_of(p: &Value) -> String {
    text(p, "actor")
        .or_else(|| text(p, "decided_by"))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One row of the trail, before it is stored.
struct Row {
    hospital: String,
    kind: &'static str,
    actor: String,
    schedule: Option<String>,
    slot: Option<String>,
    person: Option<String>,
    summary: String,
}

async fn insert<C: GenericClient>(client: &C, event: &Envelope, row: Row) -> anyhow::Result<()> {
    client
        .execute_cached(
            "INSERT INTO audit_trail (event_id, occurred_at, hospital_id, kind, actor, schedule_id,
                                      slot_id, person_id, summary, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING",
            &[
                &event.event_id,
                &event.occurred_at,
                &row.hospital,
                &row.kind,
                &row.actor,
                &row.schedule,
                &row.slot,
                &row.person,
                &row.summary,
                &event.payload,
            ],
        )
        .await?;
    Ok(())
}

async fn map_slot<C: GenericClient>(
    client: &C,
    slot: &str,
    hospital: &str,
    schedule: &str,
) -> anyhow::Result<()> {
    client
        .execute_cached(
            "INSERT INTO audit_slots (slot_id, hospital_id, schedule_id) VALUES ($1, $2, $3)
             ON CONFLICT (slot_id) DO NOTHING",
            &[&slot, &hospital, &schedule],
        )
        .await?;
    Ok(())
}

/// Apply an event the trail keeps; false when the ledger has more to do
/// with it (it is not one of them, or also moves a counter).
pub async fn apply<C: GenericClient>(client: &C, event: &Envelope) -> anyhow::Result<bool> {
    let p = &event.payload;
    let hospital = text(p, "hospital_id").unwrap_or_default();
    match event.event_type.as_str() {
        "segment.capacity_changed" => capacity_changed(client, event, hospital).await?,
        "schedule.stopped" => {
            let schedule = text(p, "schedule_id").unwrap_or_default();
            for slot in p
                .get("slot_ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                map_slot(client, slot, &hospital, &schedule).await?;
            }
            let summary = format!(
                "停诊 stopped: {} ({} bookings stopped)",
                text(p, "reason").unwrap_or_default(),
                p.get("stopped_bookings").and_then(Value::as_i64).unwrap_or(0)
            );
            let row = Row {
                hospital,
                kind: "stop",
                actor: actor_of(p),
                schedule: Some(schedule),
                slot: None,
                person: None,
                summary,
            };
            insert(client, event, row).await?;
        }
        "waitlist.capacity_requested" => {
            let empty = Value::Array(Vec::new());
            client
                .execute_cached(
                    "INSERT INTO capacity_requests (event_id, hospital_id, schedule_id, schedule, segment_ids,
                                                    waiting, requested_at)
                     VALUES ($1, $2, $3, $4, $5, GREATEST($6::bigint, 0), $7) ON CONFLICT (event_id) DO NOTHING",
                    &[
                        &event.event_id,
                        &hospital,
                        &text(p, "schedule_id").unwrap_or_default(),
                        p.get("schedule").unwrap_or(&Value::Null),
                        p.get("segment_ids").unwrap_or(&empty),
                        &p.get("waiting").and_then(Value::as_i64).unwrap_or(0),
                        &event.occurred_at,
                    ],
                )
                .await?;
            // The ledger still moves the waitlist depth with it.
            return Ok(false);
        }
        "waitlist.session_added" => session_added(client, event, hospital).await?,
        "policy.changed" => {
            let row = Row {
                hospital,
                kind: "policy",
                actor: actor_of(p),
                schedule: None,
                slot: None,
                person: None,
                summary: policy_summary(p),
            };
            insert(client, event, row).await?;
        }
        "standing.waived" | "appeal.decided" => person_change(client, event, hospital).await?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `booking policy changed: window_days 7 → 14; … (3 unreleased schedules)`.
fn policy_summary(p: &Value) -> String {
    let empty = serde_json::Map::new();
    let before = p.get("before").and_then(Value::as_object).unwrap_or(&empty);
    let after = p.get("after").and_then(Value::as_object).unwrap_or(&empty);
    let changes: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| {
            let was = before.get(k).map_or_else(|| "—".to_owned(), Value::to_string);
            format!("{k} {was} → {v}")
        })
        .collect();
    let affected = p.get("schedules_affected").and_then(Value::as_i64).unwrap_or(0);
    let what = if changes.is_empty() {
        "no field changed".to_owned()
    } else {
        changes.join("; ")
    };
    format!("booking policy changed: {what} ({affected} unreleased schedules)")
}

async fn capacity_changed<C: GenericClient>(
    client: &C,
    event: &Envelope,
    hospital: String,
) -> anyhow::Result<()> {
    let p = &event.payload;
    let schedule = text(p, "schedule_id").unwrap_or_default();
    let slot = text(p, "slot_id").unwrap_or_default();
    let before = p.get("capacity_before").and_then(Value::as_i64).unwrap_or(0);
    let after = p.get("capacity").and_then(Value::as_i64).unwrap_or(0);
    let actor = actor_of(p);
    if !slot.is_empty() && !schedule.is_empty() {
        map_slot(client, &slot, &hospital, &schedule).await?;
    }
    // A 精准预约 seat is one matched patient's, not an answer to the line.
    let for_line = text(p, "purpose").as_deref() != Some("precise");
    if after > before && for_line {
        // 加号 answers every request of the schedule still open.
        let added = i32::try_from(after - before).unwrap_or(i32::MAX);
        client
            .execute_cached(
                "UPDATE capacity_requests SET answered_at = $3, answered_by = $4, added_seats = $5
                  WHERE hospital_id = $1 AND schedule_id = $2 AND answered_at IS NULL AND requested_at <= $3",
                &[&hospital, &schedule, &event.occurred_at, &actor, &added],
            )
            .await?;
    }
    let verb = if after > before { "加号 added" } else { "reduced" };
    let row = Row {
        hospital,
        kind: "capacity",
        actor,
        schedule: Some(schedule),
        slot: Some(slot),
        person: None,
        summary: format!("capacity {before} → {after} ({verb})"),
    };
    insert(client, event, row).await
}

async fn session_added<C: GenericClient>(
    client: &C,
    event: &Envelope,
    hospital: String,
) -> anyhow::Result<()> {
    let p = &event.payload;
    let schedule = text(p, "schedule_id").unwrap_or_default();
    let seats = p.get("seats").and_then(Value::as_i64).unwrap_or(0);
    let lines: Vec<String> = p
        .get("lines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let actor = actor_of(p);
    client
        .execute_cached(
            "UPDATE capacity_requests SET answered_at = $3, answered_by = $4, added_seats = $5
              WHERE hospital_id = $1 AND schedule_id = ANY($2) AND answered_at IS NULL AND requested_at <= $3",
            &[
                &hospital,
                &lines,
                &event.occurred_at,
                &actor,
                &i32::try_from(seats).unwrap_or(i32::MAX),
            ],
        )
        .await?;
    let row = Row {
        hospital,
        kind: "capacity",
        actor,
        schedule: Some(schedule),
        slot: None,
        person: None,
        summary: format!(
            "加号 session for the waitlist: {seats} seats for {} lines ({} waiting)",
            lines.len(),
            p.get("waiting").and_then(Value::as_i64).unwrap_or(0)
        ),
    };
    insert(client, event, row).await
}

async fn person_change<C: GenericClient>(
    client: &C,
    event: &Envelope,
    hospital: String,
) -> anyhow::Result<()> {
    let p = &event.payload;
    let reason = text(p, "reason")
        .or_else(|| text(p, "decision_reason"))
        .unwrap_or_default();
    let (kind, summary) = if event.event_type == "standing.waived" {
        ("waiver", format!("no-show waived: {reason}"))
    } else {
        let decision = match text(p, "decision").or_else(|| text(p, "status")).as_deref() {
            Some("waive" | "granted") => "waived".to_owned(),
            Some("refuse" | "refused") => "refused".to_owned(),
            Some(other) => other.to_owned(),
            None => String::new(),
        };
        let automatic = p.get("automatic").and_then(Value::as_bool) == Some(true);
        let how = if automatic { " (automatic)" } else { "" };
        ("appeal", format!("appeal {decision}{how}: {reason}"))
    };
    let row = Row {
        hospital,
        kind,
        actor: actor_of(p),
        schedule: None,
        slot: None,
        person: text(p, "person_id"),
        summary,
    };
    insert(client, event, row).await
}

#[cfg(test)]
mod tests {
    use super::policy_summary;

    #[test]
    fn a_policy_row_names_the_fields_that_changed() {
        let event = serde_json::json!({
            "before": { "window_days": 7, "release_time": "08:30", "hold_minutes": 10 },
            "after": { "window_days": 14, "release_time": "07:30", "hold_minutes": 10 },
            "schedules_affected": 3,
        });
        assert_eq!(
            policy_summary(&event),
            "booking policy changed: release_time \"08:30\" → \"07:30\"; window_days 7 → 14 (3 unreleased schedules)"
        );
    }
}
