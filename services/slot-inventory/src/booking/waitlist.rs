//! 候补: a full schedule's waitlist. Patients join in order (one place per
//! person); whenever a seat of the schedule frees (cancellation, expiry,
//! added capacity) it is kept back in Redis for the line (the segment's
//! `reserved` count: ordinary bookings cannot take it) and the head of the
//! line is handed it as a hold through the same Lua script every booking
//! uses, so no pool and no person rule is bypassed.

use chrono::{DateTime, FixedOffset, Utc};
use jyt_domain::{BookingRef, Channel, IdempotencyKey, SlotRef};
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BookRequest;
use super::service::{self, segment_info};
use crate::error::SlotError;
use crate::state::AppState;

/// `POST /v1/schedules/{schedule_id}/waitlist`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub patient_id: Uuid,
    pub channel: Channel,
}

/// A place in a waitlist, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitlistEntry {
    pub entry_id: Uuid,
    pub schedule_id: Uuid,
    pub patient_id: Uuid,
    pub channel: Channel,
    /// `waiting`, `promoted` or `left`.
    pub status: String,
    /// 1 for the head of the line; `null` once no longer waiting.
    pub position: Option<i64>,
    /// The hold the patient was handed, once promoted.
    pub booking_id: Option<BookingRef>,
    pub created_at: DateTime<FixedOffset>,
}

/// The SQL of waitlists.
pub mod queries {
    use chrono::{DateTime, Utc};
    use jyt_db::deadpool_postgres::GenericClient;
    use jyt_db::tokio_postgres::Error;
    use uuid::Uuid;

    /// A schedule's bookability, with its row locked against concurrent joins.
    pub struct ScheduleFill {
        pub open: bool,
        pub release_at: DateTime<Utc>,
        pub capacity: i64,
        pub live: i64,
    }

    pub async fn schedule_fill_for_update<C: GenericClient>(
        client: &C,
        schedule: Uuid,
    ) -> Result<Option<ScheduleFill>, Error> {
        let Some(row) = client
            .query_opt(
                "SELECT status = 'open', release_at FROM schedules WHERE id = $1 FOR UPDATE",
                &[&schedule],
            )
            .await?
        else {
            return Ok(None);
        };
        let fill = client
            .query_one(
                "SELECT (SELECT coalesce(sum(capacity), 0)::bigint FROM segments WHERE schedule_id = $1),
                        (SELECT count(*) FROM bookings
                          WHERE schedule_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped'))",
                &[&schedule],
            )
            .await?;
        Ok(Some(ScheduleFill {
            open: row.get(0),
            release_at: row.get(1),
            capacity: fill.get(0),
            live: fill.get(1),
        }))
    }

    pub async fn has_live_booking<C: GenericClient>(
        client: &C,
        schedule: Uuid,
        patient: Uuid,
    ) -> Result<bool, Error> {
        Ok(client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM bookings WHERE schedule_id = $1 AND patient_id = $2
                                   AND status NOT IN ('cancelled', 'expired', 'stopped', 'no_show'))",
                &[&schedule, &patient],
            )
            .await?
            .get(0))
    }

    /// Insert a waiting entry; `None` if the person already waits.
    pub async fn insert<C: GenericClient>(
        client: &C,
        id: Uuid,
        schedule: Uuid,
        patient: Uuid,
        channel: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Uuid>, Error> {
        Ok(client
            .query_opt(
                "INSERT INTO waitlist_entries (id, schedule_id, patient_id, channel, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (schedule_id, patient_id) WHERE status = 'waiting' DO NOTHING
                 RETURNING id",
                &[&id, &schedule, &patient, &channel, &now],
            )
            .await?
            .map(|r| r.get(0)))
    }

    pub const ENTRY_COLUMNS: &str =
        "w.id, w.schedule_id, w.patient_id, w.channel, w.status, w.booking_id, w.created_at,
         CASE WHEN w.status = 'waiting' THEN
              (SELECT count(*) FROM waitlist_entries o
                WHERE o.schedule_id = w.schedule_id AND o.status = 'waiting'
                  AND (o.created_at, o.id) <= (w.created_at, w.id))
         END";

    pub async fn entry<C: GenericClient>(
        client: &C,
        id: Uuid,
    ) -> Result<Option<jyt_db::tokio_postgres::Row>, Error> {
        client
            .query_opt(
                &format!("SELECT {ENTRY_COLUMNS} FROM waitlist_entries w WHERE w.id = $1"),
                &[&id],
            )
            .await
    }

    pub async fn waiting_entry_of<C: GenericClient>(
        client: &C,
        schedule: Uuid,
        patient: Uuid,
    ) -> Result<Option<Uuid>, Error> {
        Ok(client
            .query_opt(
                "SELECT id FROM waitlist_entries WHERE schedule_id = $1 AND patient_id = $2 AND status = 'waiting'",
                &[&schedule, &patient],
            )
            .await?
            .map(|r| r.get(0)))
    }

    pub async fn waiting_count<C: GenericClient>(client: &C, schedule: Uuid) -> Result<i64, Error> {
        Ok(client
            .query_one(
                "SELECT count(*) FROM waitlist_entries WHERE schedule_id = $1 AND status = 'waiting'",
                &[&schedule],
            )
            .await?
            .get(0))
    }

    /// The head of the line: (entry, patient, channel).
    pub async fn head<C: GenericClient>(
        client: &C,
        schedule: Uuid,
    ) -> Result<Option<(Uuid, Uuid, String)>, Error> {
        Ok(client
            .query_opt(
                "SELECT id, patient_id, channel FROM waitlist_entries
                  WHERE schedule_id = $1 AND status = 'waiting'
                  ORDER BY created_at, id LIMIT 1",
                &[&schedule],
            )
            .await?
            .map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    /// Schedules with someone waiting, visit date `from` or later.
    pub async fn schedules_with_waiting<C: GenericClient>(
        client: &C,
        from: chrono::NaiveDate,
    ) -> Result<Vec<Uuid>, Error> {
        Ok(client
            .query(
                "SELECT DISTINCT w.schedule_id FROM waitlist_entries w
                   JOIN schedules s ON s.id = w.schedule_id
                  WHERE w.status = 'waiting' AND s.visit_date >= $1",
                &[&from],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub async fn segment_ids<C: GenericClient>(client: &C, schedule: Uuid) -> Result<Vec<Uuid>, Error> {
        Ok(client
            .query(
                "SELECT id FROM segments WHERE schedule_id = $1 ORDER BY starts_at",
                &[&schedule],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// In the promotion's own transaction: false if the entry is no longer
    /// waiting (the patient left), which aborts the promotion.
    pub async fn mark_promoted<C: GenericClient>(
        client: &C,
        entry: Uuid,
        booking: Uuid,
    ) -> Result<bool, Error> {
        Ok(client
            .execute(
                "UPDATE waitlist_entries SET status = 'promoted', booking_id = $2
                  WHERE id = $1 AND status = 'waiting'",
                &[&entry, &booking],
            )
            .await?
            == 1)
    }

    pub async fn mark_left<C: GenericClient>(client: &C, entry: Uuid) -> Result<bool, Error> {
        Ok(client
            .execute(
                "UPDATE waitlist_entries SET status = 'left' WHERE id = $1 AND status = 'waiting'",
                &[&entry],
            )
            .await?
            == 1)
    }
}

fn to_entry(state: &AppState, row: &jyt_db::tokio_postgres::Row) -> WaitlistEntry {
    let channel: String = row.get(3);
    let created_at: DateTime<Utc> = row.get(6);
    WaitlistEntry {
        entry_id: row.get(0),
        schedule_id: row.get(1),
        patient_id: row.get(2),
        // The CHECK constraint keeps the column to known channels.
        channel: channel.parse().unwrap_or(Channel::Window),
        status: row.get(4),
        booking_id: row
            .get::<_, Option<Uuid>>(5)
            .map(|id| BookingRef::new(state.hospital.clone(), id)),
        created_at: jyt_domain::time::local(created_at),
        position: row.get(7),
    }
}

/// Join a full schedule's waitlist. Joining again answers the existing
/// place (`false`: nothing new was created).
pub async fn join(
    state: &AppState,
    schedule: Uuid,
    req: &JoinRequest,
) -> Result<(WaitlistEntry, bool), SlotError> {
    if matches!(req.channel, Channel::Referral | Channel::Clinic) {
        return Err(RequestError::invalid(
            "channel",
            "referral and in-clinic bookings have their own pools and no waitlist",
        )
        .into());
    }
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let fill = queries::schedule_fill_for_update(&tx, schedule)
        .await?
        .ok_or_else(|| SlotError::ScheduleNotFound(schedule.to_string()))?;
    if !fill.open {
        return Err(SlotError::ScheduleStopped);
    }
    if now < fill.release_at {
        return Err(SlotError::NotYetReleased(fill.release_at));
    }
    if let Some(existing) = queries::waiting_entry_of(&tx, schedule, req.patient_id).await? {
        let row = queries::entry(&tx, existing)
            .await?
            .ok_or_else(|| SlotError::ScheduleNotFound(schedule.to_string()))?;
        return Ok((to_entry(state, &row), false));
    }
    if fill.live < fill.capacity {
        return Err(SlotError::SeatsAvailable);
    }
    if queries::has_live_booking(&tx, schedule, req.patient_id).await? {
        return Err(SlotError::ScheduleAlreadyBooked);
    }
    let id = Uuid::now_v7();
    if queries::insert(&tx, id, schedule, req.patient_id, req.channel.as_str(), now)
        .await?
        .is_none()
    {
        return Err(SlotError::AlreadyWaitlisted);
    }
    let row = queries::entry(&tx, id)
        .await?
        .ok_or_else(|| SlotError::ScheduleNotFound(schedule.to_string()))?;
    let entry = to_entry(state, &row);
    jyt_events::append(
        &tx,
        "waitlist.joined",
        &id.to_string(),
        &serde_json::json!({
            "schema": 1,
            "entry_id": id,
            "hospital_id": state.hospital,
            "schedule_id": schedule,
            "patient_id": req.patient_id,
            "channel": req.channel,
            "position": entry.position,
        }),
    )
    .await?;
    let waiting = queries::waiting_count(&tx, schedule).await?;
    let threshold = i64::from(state.settings.policy.waitlist_capacity_request_threshold);
    if waiting == threshold + 1 {
        // Asked once per crossing, not for every later joiner.
        jyt_events::append(
            &tx,
            "waitlist.capacity_requested",
            &schedule.to_string(),
            &serde_json::json!({
                "schema": 1,
                "hospital_id": state.hospital,
                "schedule_id": schedule,
                "waiting": waiting,
            }),
        )
        .await?;
    }
    tx.commit().await?;
    state.relay.wake();
    Ok((entry, true))
}

pub async fn get(state: &AppState, entry: Uuid) -> Result<WaitlistEntry, SlotError> {
    let client = state.pool.get().await?;
    let row = queries::entry(&client, entry)
        .await?
        .ok_or_else(|| SlotError::Request(RequestError::invalid("entry_id", "no such waitlist entry")))?;
    Ok(to_entry(state, &row))
}

/// Whether a seat freed in `schedule` must be kept back for its waitlist.
pub async fn has_waiting(state: &AppState, schedule: Uuid) -> Result<bool, SlotError> {
    let client = state.pool.get().await?;
    Ok(queries::waiting_count(&client, schedule).await? > 0)
}

/// Hand freed seats of `schedule` to the head of its line, one hold each,
/// until the seats or the line run out; an emptied line puts kept-back
/// seats on open sale. Returns how many patients were promoted.
pub async fn promote(state: &AppState, schedule: Uuid) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let segments = queries::segment_ids(&client, schedule).await?;
    drop(client);
    let mut promoted = 0;
    // Each turn either promotes or drops one entry, or stops.
    for _ in 0..10_000 {
        let client = state.pool.get().await?;
        let head = queries::head(&client, schedule).await?;
        drop(client);
        let Some((entry, patient, channel)) = head else {
            unreserve(state, &segments).await?;
            break;
        };
        let channel: Channel = channel.parse().unwrap_or(Channel::Window);
        let key: IdempotencyKey = format!("waitlist-{}", entry.simple())
            .parse()
            .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("waitlist idempotency key: {e}")))?;
        let mut outcome = Err(SlotError::SlotSoldOut);
        for segment in &segments {
            let req = BookRequest {
                slot_id: SlotRef::new(state.hospital.clone(), *segment),
                patient_id: patient,
                channel,
                referral_id: None,
                waitlist_entry: Some(entry),
                offer: None,
            };
            outcome = service::book(state.clone(), req, key.clone()).await;
            if !matches!(outcome, Err(SlotError::SlotSoldOut)) {
                break;
            }
        }
        match outcome {
            Ok(_) => promoted += 1,
            // No seat anywhere in the schedule: the line waits.
            Err(SlotError::SlotSoldOut) => break,
            Err(SlotError::WaitlistEntryGone) => {}
            Err(
                SlotError::ScheduleAlreadyBooked
                | SlotError::DepartmentDailyLimit
                | SlotError::DailyLimit
                | SlotError::AlreadyBooked(_),
            ) => {
                // The patient booked elsewhere meanwhile and may not hold
                // this one too: they leave the line, the next one is asked.
                let client = state.pool.get().await?;
                queries::mark_left(&client, entry).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(promoted)
}

async fn unreserve(state: &AppState, segments: &[Uuid]) -> Result<(), SlotError> {
    for segment in segments {
        let info = segment_info(state, *segment).await?;
        let keys = state.keys.segment(&info);
        state.scripts.unreserve(&state.redis, &keys).await?;
    }
    Ok(())
}

/// The sweeper's pass: promote wherever someone waits (seats added by a
/// capacity change, or freed while this process was down).
pub async fn promote_all(state: &AppState) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let schedules = queries::schedules_with_waiting(&client, state.clock.today()).await?;
    drop(client);
    let mut promoted = 0;
    for schedule in schedules {
        promoted += promote(state, schedule).await?;
    }
    Ok(promoted)
}
