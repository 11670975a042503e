//! The draw, run by the sweeper once a lottery's window has closed:
//!
//! 1. entries Redis took that PostgreSQL lacks are copied (a process that
//!    died between the two must not cost a patient their entry);
//! 2. the draw record is created once (`ON CONFLICT DO NOTHING` on the
//!    schedule): a fresh 256-bit seed, the entry ids in ascending order and
//!    the seeded permutation of them ([`super::permutation`]);
//! 3. one replica locks the `drawing` row (`FOR UPDATE SKIP LOCKED`; any
//!    other replica skips it) and, in permutation order, gives each
//!    entrant a hold through the normal hold path: the segment they asked
//!    for, then the schedule's other segments in time order. Per-person
//!    rules and channel pools apply as to a first-come booking. Each hold's
//!    booking row carries its `booking.held` and `draw.won` events (the
//!    winner's app is told once, by the latter). The hold's key is the
//!    entry's, so a draw interrupted here and run again answers the same
//!    bookings instead of new ones;
//! 4. in the locked row's transaction: each entry's outcome, the record's
//!    outcomes, a `draw.lost` event per loser (their app is told and
//!    offered the waitlist) and one `draw.drawn` summary, then the row is
//!    `drawn`. Redis is then reloaded, so the seats left go first-come.

use std::collections::HashMap;

use jyt_cache::redis;
use jyt_domain::{IdempotencyKey, SlotRef};
use serde_json::json;
use uuid::Uuid;

use super::entry::EntryRecord;
use super::permutation::{ALGORITHM, fresh_seed, permutation};
use super::queries::{self, EntryOutcome, NewDraw};
use crate::booking::BookRequest;
use crate::booking::cache::reload_segment;
use crate::error::SlotError;
use crate::state::AppState;

/// Draw every lottery whose window has closed; returns how many this
/// replica drew.
pub async fn draw_due(state: &AppState) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let due = queries::due_draws(&client, state.clock.now(), state.clock.today()).await?;
    drop(client);
    let mut drawn = 0;
    for schedule in due {
        if draw(state, schedule).await? {
            drawn += 1;
        }
    }
    Ok(drawn)
}

/// Draw one schedule: true if this call finished its draw, false if
/// another replica is drawing it or it was drawn already.
pub async fn draw(state: &AppState, schedule: Uuid) -> Result<bool, SlotError> {
    copy_entries_from_redis(state, schedule).await?;
    start_record(state, schedule).await?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(record) = queries::lock_pending_draw(&tx, schedule).await? else {
        return Ok(false);
    };
    let entries: HashMap<Uuid, (Uuid, EntryRecord)> = queries::entries(&tx, schedule)
        .await?
        .into_iter()
        .map(|(patient, e)| (e.entry_id, (patient, e)))
        .collect();
    let segments: Vec<Uuid> = queries::segments_with_free_seats(&tx, schedule)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut outcomes = Vec::with_capacity(record.permutation.len());
    let mut sold_out = false;
    for &k in &record.permutation {
        let Some((patient, entry)) = record.entrants.get(k).and_then(|id| entries.get(id)) else {
            return Err(SlotError::Unexpected(anyhow::anyhow!(
                "draw {} names an unknown entry",
                record.id
            )));
        };
        let outcome = if sold_out {
            lost(entry.entry_id, "SLOT_SOLD_OUT")
        } else {
            give_hold(state, *patient, entry, &segments).await?
        };
        sold_out |= outcome.lost_reason.as_deref() == Some("SOLD_OUT_EVERYWHERE");
        outcomes.push((*patient, entry, outcome));
    }
    finish(state, &tx, &record, schedule, &outcomes).await?;
    tx.commit().await?;
    drop(client);
    state.relay.wake();
    for segment in segments {
        reload_segment(state, segment).await?;
    }
    tracing::info!(%schedule, draw = %record.id, entrants = outcomes.len(), "lottery drawn");
    Ok(true)
}

fn lost(entry: Uuid, reason: &str) -> EntryOutcome {
    EntryOutcome {
        entry,
        booking: None,
        lost_reason: Some(reason.to_owned()),
    }
}

/// One entrant's turn: the segment asked for, then the others in time
/// order; a refusal other than "sold out" (a per-person rule) ends the
/// turn. Unavailable Redis or PostgreSQL aborts the draw, to be run again.
async fn give_hold(
    state: &AppState,
    patient: Uuid,
    entry: &EntryRecord,
    segments: &[Uuid],
) -> Result<EntryOutcome, SlotError> {
    let key: IdempotencyKey = format!("draw-{}", entry.entry_id)
        .parse()
        .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("a draw's idempotency key: {e:?}")))?;
    let asked =
        std::iter::once(entry.segment_id).chain(segments.iter().copied().filter(|s| *s != entry.segment_id));
    for segment in asked {
        let req = BookRequest {
            referral_id: entry.referral_id.clone(),
            owner_app: entry.owner_app.clone(),
            draw_entry: Some(entry.entry_id),
            ..BookRequest::new(
                SlotRef::new(state.hospital.clone(), segment),
                patient,
                entry.channel,
            )
        };
        match crate::booking::service::hold_for_draw(state, &req, &key).await {
            Ok(won) => {
                return Ok(EntryOutcome {
                    entry: entry.entry_id,
                    booking: Some(won.booking.booking_id.id),
                    lost_reason: None,
                });
            }
            Err(SlotError::SlotSoldOut) => {}
            Err(
                e @ (SlotError::LockUnavailable(_)
                | SlotError::DatabaseUnavailable(_)
                | SlotError::RequestInProgress
                | SlotError::Unexpected(_)),
            ) => return Err(e),
            Err(refused) => return Ok(lost(entry.entry_id, refused.code())),
        }
    }
    // Only when no segment had a seat for anyone is the rest of the line
    // answered without asking: a pool rule may refuse one entrant a seat
    // that another channel's entrant can still take.
    let everywhere = all_sold_out(state, segments).await?;
    Ok(lost(
        entry.entry_id,
        if everywhere {
            "SOLD_OUT_EVERYWHERE"
        } else {
            "SLOT_SOLD_OUT"
        },
    ))
}

/// Whether no segment of the schedule has a free seat left in Redis.
async fn all_sold_out(state: &AppState, segments: &[Uuid]) -> Result<bool, SlotError> {
    let mut conn = state.redis.clone();
    for segment in segments {
        let info = crate::booking::cache::segment_info(state, *segment).await?;
        let free: i64 = redis::cmd("LLEN")
            .arg(state.keys.segment(&info).free)
            .query_async(&mut conn)
            .await?;
        if free > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Entries Redis has that PostgreSQL lacks (a first press whose write was
/// cut short), written before the entrants are fixed.
async fn copy_entries_from_redis(state: &AppState, schedule: Uuid) -> Result<(), SlotError> {
    let mut conn = state.redis.clone();
    let in_redis: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(state.keys.lottery_entries(schedule))
        .query_async(&mut conn)
        .await?;
    if in_redis.is_empty() {
        return Ok(());
    }
    let client = state.pool.get().await?;
    for (patient, json) in in_redis {
        let (Ok(patient), Ok(entry)) = (
            Uuid::parse_str(&patient),
            serde_json::from_str::<EntryRecord>(&json),
        ) else {
            tracing::warn!(%schedule, "an unreadable lottery entry in Redis was skipped");
            continue;
        };
        queries::insert_entry(&client, schedule, patient, &entry).await?;
    }
    Ok(())
}

/// Create the schedule's draw record unless it exists: seed, entrants in
/// canonical order, permutation, seats.
async fn start_record(state: &AppState, schedule: Uuid) -> Result<(), SlotError> {
    let client = state.pool.get().await?;
    if queries::draw_of_schedule(&client, schedule).await?.is_some() {
        return Ok(());
    }
    let entrants: Vec<Uuid> = queries::entries(&client, schedule)
        .await?
        .into_iter()
        .map(|(_, e)| e.entry_id)
        .collect();
    let seats: i64 = queries::segments_with_free_seats(&client, schedule)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let seed = fresh_seed();
    let order = permutation(&seed, entrants.len());
    queries::insert_draw(
        &client,
        &NewDraw {
            id: Uuid::now_v7(),
            schedule,
            algorithm: ALGORITHM,
            seed: &seed,
            entrants: json!(entrants),
            permutation: json!(order),
            seats: i32::try_from(seats).unwrap_or(i32::MAX),
            started_at: state.clock.now(),
        },
    )
    .await?;
    Ok(())
}

/// Outcomes, events and the record's last state, in the locked row's
/// transaction.
async fn finish(
    state: &AppState,
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    record: &queries::StoredDraw,
    schedule: Uuid,
    outcomes: &[(Uuid, &EntryRecord, EntryOutcome)],
) -> Result<(), SlotError> {
    let hospital = &state.hospital;
    let schedule_ref = super::schedule_ref(hospital, schedule);
    let mut listed = Vec::with_capacity(outcomes.len());
    let mut winners = 0;
    for (patient, entry, outcome) in outcomes {
        // "Sold out everywhere" is the draw's own shortcut; the patient
        // hears the ordinary code.
        let reason = outcome.lost_reason.as_deref().map(|r| {
            if r == "SOLD_OUT_EVERYWHERE" {
                "SLOT_SOLD_OUT"
            } else {
                r
            }
        });
        let stored = EntryOutcome {
            entry: outcome.entry,
            booking: outcome.booking,
            lost_reason: reason.map(str::to_owned),
        };
        queries::set_entry_outcome(tx, &stored).await?;
        let entry_id = super::entry_ref(hospital, entry.entry_id);
        let booking_id = outcome.booking.map(|b| format!("{hospital}-{b}"));
        if outcome.booking.is_some() {
            winners += 1;
        } else {
            jyt_events::append(
                tx,
                "draw.lost",
                &entry_id,
                &json!({
                    "schema": 1,
                    "hospital_id": hospital,
                    "schedule_id": schedule,
                    "entry_id": entry_id,
                    "draw_id": record.id,
                    "patient_id": patient,
                    "channel": entry.channel,
                    "owner_app": entry.owner_app,
                    "lost_reason": reason,
                    // Losers are offered the schedule's waitlist: the
                    // gateway's route, for the app to offer the patient.
                    "waitlist": {
                        "method": "POST",
                        "path": format!("/v1/hospitals/{hospital}/schedules/{schedule}/waitlist"),
                    },
                }),
            )
            .await?;
        }
        listed.push(json!({
            "entry_id": entry_id,
            "patient_id": patient,
            "channel": entry.channel,
            "outcome": if outcome.booking.is_some() { "won" } else { "lost" },
            "booking_id": booking_id,
            "lost_reason": reason,
        }));
    }
    let now = state.clock.now();
    let by = format!("slot-inventory/{}", std::process::id());
    let outcomes_json = json!(listed);
    queries::finish_draw(tx, record.id, &outcomes_json, winners, now, &by).await?;
    jyt_events::append(
        tx,
        "draw.drawn",
        &schedule_ref,
        &json!({
            "schema": 1,
            "hospital_id": hospital,
            "schedule_id": schedule,
            "draw_id": record.id,
            "algorithm": record.algorithm,
            "seed": hex::encode(&record.seed),
            "entrants": record.entrants.len(),
            "seats": record.seats,
            "winners": winners,
            "started_at": record.started_at,
            "drawn_at": now,
        }),
    )
    .await?;
    Ok(())
}
