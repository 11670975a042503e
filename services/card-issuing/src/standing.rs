//! A person's standing: no-shows reported by slot-inventory, the bar that
//! follows too many of them, and operator waivers.
//!
//! Rule: when a no-show makes the count of unwaived no-shows with visit
//! dates in the rolling window ending at its visit date reach the
//! threshold, the person is barred from `now` for `bar_days`. A waiver
//! recounts that same window; below the threshold, the bar is lifted.
//! Each person's changes are serialised by a transaction-scoped advisory
//! lock, since a person with no-shows need not have a row of ours yet.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Transaction;
use jyt_domain::time;
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CardError;
use crate::operator::OperatorId;
use crate::state::AppState;

/// The payload of slot-inventory's `booking.no_show` event.
#[derive(Debug, Clone, Deserialize)]
pub struct NoShowPayload {
    pub patient_id: Uuid,
    pub booking_id: String,
    pub hospital_id: String,
    pub visit_date: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiveRequest {
    /// Why the no-show does not count (e.g. the clinic was stopped).
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct NoShowView {
    pub event_id: Uuid,
    pub booking_id: String,
    pub hospital_id: String,
    pub visit_date: NaiveDate,
    pub waived: bool,
    pub waive_reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Standing {
    pub person_id: Uuid,
    /// The gateway refuses bookings while true.
    pub barred: bool,
    pub barred_until: Option<DateTime<Utc>>,
    /// Unwaived no-shows in the window ending today.
    pub no_shows_in_window: i64,
    pub threshold: i64,
    pub window_days: i64,
    /// Every no-show in the window, waived or not, newest first.
    pub no_shows: Vec<NoShowView>,
}

pub(crate) async fn lock_person(tx: &Transaction<'_>, person: Uuid) -> Result<(), CardError> {
    tx.execute_cached(
        "SELECT pg_advisory_xact_lock(hashtextextended('standing:' || ($1::uuid)::text, 0))",
        &[&person],
    )
    .await?;
    Ok(())
}

async fn unwaived_in_window(
    tx: &Transaction<'_>,
    person: Uuid,
    window_end: NaiveDate,
    window_days: i64,
) -> Result<i64, CardError> {
    let start = window_end - Duration::days(window_days);
    Ok(tx
        .query_one_cached(
            "SELECT COUNT(*) FROM no_shows
              WHERE person_id = $1 AND waived_at IS NULL AND visit_date > $2 AND visit_date <= $3",
            &[&person, &start, &window_end],
        )
        .await?
        .get(0))
}

/// Record one no-show event; `false` if this event id was seen before.
pub async fn record_no_show(
    state: &AppState,
    event_id: Uuid,
    ev: &NoShowPayload,
    now: DateTime<Utc>,
) -> Result<bool, CardError> {
    let rules = &state.settings.standing;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    lock_person(&tx, ev.patient_id).await?;
    let inserted = tx
        .execute_cached(
            "INSERT INTO no_shows (event_id, person_id, booking_id, hospital_id, visit_date, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            &[
                &event_id,
                &ev.patient_id,
                &ev.booking_id,
                &ev.hospital_id,
                &ev.visit_date,
                &now,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    let already_barred = tx
        .query_opt_cached(
            "SELECT 1 FROM bars WHERE person_id = $1 AND lifted_at IS NULL AND barred_until > $2",
            &[&ev.patient_id, &now],
        )
        .await?
        .is_some();
    let count = unwaived_in_window(&tx, ev.patient_id, ev.visit_date, rules.window_days).await?;
    if !already_barred && count >= rules.no_show_threshold {
        let until = now + Duration::days(rules.bar_days);
        tx.execute_cached(
            "INSERT INTO bars (id, person_id, barred_at, barred_until, window_end) VALUES ($1, $2, $3, $4, $5)",
            &[&Uuid::now_v7(), &ev.patient_id, &now, &until, &ev.visit_date],
        )
        .await?;
        jyt_events::append(
            &tx,
            "person.barred",
            &ev.patient_id.to_string(),
            &serde_json::json!({
                "person_id": ev.patient_id, "barred_until": until, "no_shows": count,
            }),
        )
        .await?;
        tracing::info!(person = %ev.patient_id, %until, no_shows = count, "person barred for no-shows");
    }
    tx.commit().await?;
    state.relay.wake();
    Ok(true)
}

/// An operator waives a no-show; a bar it helped cause is lifted if the
/// count falls below the threshold. Waiving twice answers the same.
pub async fn waive(
    state: &AppState,
    person_id: Uuid,
    event_id: Uuid,
    operator: &OperatorId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Standing, CardError> {
    let reason = reason.trim();
    if !(1..=500).contains(&reason.chars().count()) {
        return Err(RequestError::invalid("reason", "must be 1 to 500 characters").into());
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    waive_in(state, &tx, person_id, event_id, &operator.0, reason, now).await?;
    tx.commit().await?;
    state.relay.wake();
    standing(state, person_id, now).await
}

/// The waiver itself, inside the caller's transaction, so an appeal's
/// decision and the waiver it grants commit together. `actor` is the
/// operator's login, or `auto` for an appeal granted automatically.
/// A no-show waived before is left as it is (no second event).
pub(crate) async fn waive_in(
    state: &AppState,
    tx: &Transaction<'_>,
    person_id: Uuid,
    event_id: Uuid,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), CardError> {
    let rules = &state.settings.standing;
    lock_person(tx, person_id).await?;
    let row = tx
        .query_opt_cached(
            "SELECT booking_id, hospital_id FROM no_shows WHERE event_id = $1 AND person_id = $2",
            &[&event_id, &person_id],
        )
        .await?
        .ok_or(CardError::NoShowNotFound)?;
    let (booking_id, hospital_id): (String, String) = (row.get(0), row.get(1));
    let waived = tx
        .execute_cached(
            "UPDATE no_shows SET waived_at = $3, waived_by = $4, waive_reason = $5
              WHERE event_id = $1 AND person_id = $2 AND waived_at IS NULL",
            &[&event_id, &person_id, &now, &actor, &reason],
        )
        .await?;
    if waived == 1 {
        // The regulator's audit trail reads every waiver from this event.
        jyt_events::append(
            tx,
            "standing.waived",
            &person_id.to_string(),
            &serde_json::json!({
                "person_id": person_id, "hospital_id": hospital_id, "booking_id": booking_id,
                "no_show_event_id": event_id, "actor": actor, "reason": reason, "at": now,
            }),
        )
        .await?;
    }
    let bars = tx
        .query_cached(
            "SELECT id, window_end FROM bars WHERE person_id = $1 AND lifted_at IS NULL AND barred_until > $2",
            &[&person_id, &now],
        )
        .await?;
    for bar in bars {
        let (bar_id, window_end): (Uuid, NaiveDate) = (bar.get(0), bar.get(1));
        let count = unwaived_in_window(tx, person_id, window_end, rules.window_days).await?;
        if count < rules.no_show_threshold {
            tx.execute_cached(
                "UPDATE bars SET lifted_at = $2, lifted_by = $3, lift_reason = $4 WHERE id = $1",
                &[&bar_id, &now, &actor, &reason],
            )
            .await?;
            jyt_events::append(
                tx,
                "person.unbarred",
                &person_id.to_string(),
                &serde_json::json!({ "person_id": person_id, "waived_event_id": event_id }),
            )
            .await?;
            tracing::info!(person = %person_id, actor, "bar lifted by waiver");
        }
    }
    Ok(())
}

/// The bar in force on a person at `now`: the latest end of the bars
/// neither lifted nor over, NULL when there is none. A SQL expression over
/// an expression naming the person and one naming the moment, so that the
/// card resolve ([`crate::cards::resolve`]) answers the same bar as
/// [`standing`] within its own single statement.
pub(crate) fn bar_in_force(person: &str, now: &str) -> String {
    format!(
        "(SELECT max(barred_until) FROM bars
           WHERE person_id = {person} AND lifted_at IS NULL AND barred_until > {now})"
    )
}

/// [`standing`]'s statement: the bar in force and every no-show in the window.
static STANDING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT bar.until, n.event_id, n.booking_id, n.hospital_id, n.visit_date,
                n.waived_at IS NOT NULL, n.waive_reason
           FROM (SELECT {} AS until) bar
           LEFT JOIN LATERAL (
                SELECT event_id, booking_id, hospital_id, visit_date, waived_at, waive_reason, recorded_at
                  FROM no_shows WHERE person_id = $1 AND visit_date > $3) n ON true
          ORDER BY n.visit_date DESC, n.recorded_at DESC",
        bar_in_force("$1", "$2")
    )
});

pub async fn standing(state: &AppState, person_id: Uuid, now: DateTime<Utc>) -> Result<Standing, CardError> {
    let rules = &state.settings.standing;
    let client = state.pool.get().await?;
    let today = time::local(now).date_naive();
    let start = today - Duration::days(rules.window_days);
    // One statement, so one snapshot for both reads: a no-show and the bar
    // it causes commit together (`record_no_show`), and two statements
    // each with its own snapshot could show the third no-show without its
    // bar (the card API's standing test caught it under a loaded machine).
    // One statement rather than a read-only transaction: one round trip
    // where `BEGIN`, two reads and `COMMIT` took four, on every first
    // booking of a patient's day.
    let rows = client
        .query_cached(&STANDING, &[&person_id, &now, &start])
        .await?;
    let bar: Option<DateTime<Utc>> = rows.first().and_then(|r| r.get(0));
    // No no-show: the one row of the bar, with the no-show's columns null.
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<_, Option<Uuid>>(1).is_some())
        .collect();
    let no_shows: Vec<NoShowView> = rows
        .iter()
        .map(|r| NoShowView {
            event_id: r.get(1),
            booking_id: r.get(2),
            hospital_id: r.get(3),
            visit_date: r.get(4),
            waived: r.get(5),
            waive_reason: r.get(6),
        })
        .collect();
    let counted = no_shows
        .iter()
        .filter(|n| !n.waived && n.visit_date <= today)
        .count();
    Ok(Standing {
        person_id,
        barred: bar.is_some(),
        barred_until: bar,
        no_shows_in_window: i64::try_from(counted).unwrap_or(i64::MAX),
        threshold: rules.no_show_threshold,
        window_days: rules.window_days,
        no_shows,
    })
}
