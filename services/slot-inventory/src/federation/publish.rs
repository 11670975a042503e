//! A hospital publishes its departments, doctors and schedules (with
//! segments and capacities), keyed by its own ids: an idempotent bulk
//! upsert. Changing a released schedule's capacity keeps every existing
//! booking: a segment cannot shrink below its highest booked seat, and
//! seats it gains go to the schedule's waitlist first.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use jyt_db::Prepared;
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::booking::cache::reload_segment;
use crate::booking::waitlist;
use crate::error::SlotError;
use crate::lottery::{ReleaseMode, WINDOW_SECONDS};
use crate::schedule::capacity::MAX_SEGMENT_CAPACITY;
use crate::schedule::queries::upsert_schedule;
use crate::schedule::{ClinicLevel, NewDepartment, NewDoctor, NewSchedule, NewSegment, Session};
use crate::state::AppState;

/// At most this many schedules per call.
pub const MAX_SCHEDULES: usize = 500;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub schedules: Vec<PublishedSchedule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedSchedule {
    /// The hospital's own id for this clinic session.
    pub id: String,
    pub department: PublishedDepartment,
    pub doctor: PublishedDoctor,
    pub date: NaiveDate,
    pub session: Session,
    pub level: ClinicLevel,
    pub fee_fen: i64,
    pub segments: Vec<PublishedSegment>,
    /// A session added for the waitlist (in answer to
    /// `waitlist.capacity_requested`): its seats serve, in order of joining,
    /// the lines of the doctor's other sessions that day.
    #[serde(default)]
    pub for_waitlist: bool,
    /// `first_come` or `lottery`; the stored policy's `release_mode` when
    /// absent. Changing it once patients have booked or entered is refused.
    #[serde(default)]
    pub release_mode: Option<ReleaseMode>,
    /// A lottery's window after the release instant, 1 to 300 s; the
    /// policy's `lottery_window_seconds` when absent.
    #[serde(default)]
    pub lottery_window_seconds: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedDepartment {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedDoctor {
    pub id: String,
    pub name: String,
    pub title: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedSegment {
    /// With its offset, e.g. `2026-12-08T08:00:00+08:00`.
    pub starts_at: DateTime<FixedOffset>,
    pub ends_at: DateTime<FixedOffset>,
    pub capacity: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedIds {
    pub id: String,
    pub schedule_id: Uuid,
    pub segment_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutcome {
    pub schedules: Vec<PublishedIds>,
    /// Waiting patients who got seats this publish added.
    pub promoted_from_waitlist: usize,
}

fn text(field: String, v: &str, max: usize) -> Result<(), SlotError> {
    let n = v.trim().chars().count();
    if n == 0 || n > max || v.chars().any(char::is_control) {
        return Err(RequestError::invalid(field, format!("must be 1 to {max} printable characters")).into());
    }
    Ok(())
}

fn validate(req: &PublishRequest) -> Result<(), SlotError> {
    if req.schedules.is_empty() || req.schedules.len() > MAX_SCHEDULES {
        return Err(
            RequestError::invalid("schedules", format!("must hold 1 to {MAX_SCHEDULES} schedules")).into(),
        );
    }
    for (i, s) in req.schedules.iter().enumerate() {
        let at = |f: &str| format!("schedules[{i}].{f}");
        text(at("id"), &s.id, 64)?;
        text(at("department.id"), &s.department.id, 64)?;
        text(at("department.name"), &s.department.name, 100)?;
        text(at("doctor.id"), &s.doctor.id, 64)?;
        text(at("doctor.name"), &s.doctor.name, 100)?;
        text(at("doctor.title"), &s.doctor.title, 100)?;
        if !(0..=10_000_000).contains(&s.fee_fen) {
            return Err(RequestError::invalid(at("fee_fen"), "must be between 0 and 10000000 fen").into());
        }
        if let Some(window) = s.lottery_window_seconds
            && !WINDOW_SECONDS.contains(&window)
        {
            return Err(
                RequestError::invalid(at("lottery_window_seconds"), "must be between 1 and 300").into(),
            );
        }
        if s.lottery_window_seconds.is_some() && s.release_mode == Some(ReleaseMode::FirstCome) {
            return Err(RequestError::invalid(
                at("lottery_window_seconds"),
                "only a lottery schedule has a window",
            )
            .into());
        }
        if s.segments.is_empty() || s.segments.len() > 96 {
            return Err(RequestError::invalid(at("segments"), "must hold 1 to 96 segments").into());
        }
        for (j, seg) in s.segments.iter().enumerate() {
            let at = |f: &str| format!("schedules[{i}].segments[{j}].{f}");
            if !(0..=MAX_SEGMENT_CAPACITY).contains(&seg.capacity) {
                return Err(RequestError::invalid(
                    at("capacity"),
                    format!("must be between 0 and {MAX_SEGMENT_CAPACITY}"),
                )
                .into());
            }
            if seg.ends_at <= seg.starts_at {
                return Err(RequestError::invalid(at("ends_at"), "must be after starts_at").into());
            }
            if jyt_domain::time::local(seg.starts_at.with_timezone(&Utc)).date_naive() != s.date {
                return Err(RequestError::invalid(
                    at("starts_at"),
                    "must be on the schedule's date in Asia/Shanghai",
                )
                .into());
            }
        }
    }
    Ok(())
}

/// [`publish_by`] for jyt's own tools and tests, which act as themselves.
pub async fn publish(state: &AppState, req: &PublishRequest) -> Result<PublishOutcome, SlotError> {
    publish_by(state, req, "local").await
}

/// Publish on behalf of `actor`, who is named in the
/// `waitlist.session_added` event of a session published for the
/// waitlist (the answer to the lines' capacity requests).
pub async fn publish_by(
    state: &AppState,
    req: &PublishRequest,
    actor: &str,
) -> Result<PublishOutcome, SlotError> {
    validate(req)?;
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let mut out = Vec::with_capacity(req.schedules.len());
    for (i, s) in req.schedules.iter().enumerate() {
        // Seats already booked keep their numbers: a segment may not shrink
        // below its highest live seat.
        for (j, seg) in s.segments.iter().enumerate() {
            let highest: Option<i32> = tx
                .query_opt_cached(
                    "SELECT max(b.seat_no) FROM segments seg
                           JOIN schedules sch ON sch.id = seg.schedule_id
                           JOIN bookings b ON b.segment_id = seg.id AND b.live
                          WHERE sch.external_id = $1 AND seg.starts_at = $2",
                    &[&s.id, &seg.starts_at.with_timezone(&Utc)],
                )
                .await?
                .and_then(|r| r.get(0));
            if let Some(highest) = highest
                && seg.capacity < highest
            {
                return Err(RequestError::invalid(
                    format!("schedules[{i}].segments[{j}].capacity"),
                    format!("seat {highest} is booked; the capacity cannot go below it"),
                )
                .into());
            }
        }
        let schedule = NewSchedule {
            external_id: s.id.trim().to_owned(),
            department: NewDepartment {
                external_id: s.department.id.trim().to_owned(),
                name: s.department.name.trim().to_owned(),
            },
            doctor: NewDoctor {
                external_id: s.doctor.id.trim().to_owned(),
                name: s.doctor.name.trim().to_owned(),
                title: s.doctor.title.trim().to_owned(),
            },
            visit_date: s.date,
            session: s.session,
            clinic_level: s.level,
            fee_fen: s.fee_fen,
            segments: s
                .segments
                .iter()
                .map(|seg| NewSegment {
                    starts_at: seg.starts_at.with_timezone(&Utc),
                    ends_at: seg.ends_at.with_timezone(&Utc),
                    capacity: seg.capacity,
                })
                .collect(),
        };
        let stored = upsert_schedule(&tx, &schedule, state.policy.get().release_at(s.date), now).await?;
        tx.execute_cached(
            "UPDATE schedules SET for_waitlist = $2 WHERE id = $1",
            &[&stored.schedule_id, &s.for_waitlist],
        )
        .await?;
        set_release_mode(&tx, i, s, stored.schedule_id, &state.policy.get()).await?;
        if s.for_waitlist {
            session_added(&tx, state, stored.schedule_id, actor).await?;
        }
        out.push(PublishedIds {
            id: schedule.external_id,
            schedule_id: stored.schedule_id,
            segment_ids: stored.segment_ids,
        });
    }
    tx.commit().await?;
    drop(client);
    // Redis follows: every segment reloaded from PostgreSQL (seats the
    // publish added are kept back for waiting patients), then the lines
    // are served (a session for the waitlist serves the lines of the
    // doctor's other sessions that day, see `waitlist::promote`).
    let mut promoted = 0;
    for s in &out {
        for segment in &s.segment_ids {
            reload_segment(state, *segment).await?;
        }
        promoted += waitlist::promote(state, s.schedule_id).await?;
    }
    // Patients matched by an expert's profile wait for a session to be
    // given a 加号 seat in (see `precise::seat`).
    let client = state.pool.get().await?;
    let ids: Vec<Uuid> = out.iter().map(|s| s.schedule_id).collect();
    let doctors = crate::precise::queries::doctors_of(&client, &ids).await?;
    drop(client);
    crate::precise::seat::seat_waiting(state, Some(&doctors)).await?;
    Ok(PublishOutcome {
        schedules: out,
        promoted_from_waitlist: promoted,
    })
}

/// `waitlist.session_added`: a session published for the waitlist, with
/// the lines it serves, their length and the seats it brings, so the
/// capacity requests of those lines show as answered (channel-accounting)
/// and the hospital's feed records what answered them.
async fn session_added(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    state: &AppState,
    schedule: Uuid,
    actor: &str,
) -> Result<(), SlotError> {
    let lines = waitlist::queries::lines_served_by(tx, schedule).await?;
    let served: Vec<Uuid> = lines.into_iter().filter(|l| *l != schedule).collect();
    let row = tx
        .query_one_cached(
            "SELECT (SELECT coalesce(sum(capacity), 0)::int FROM segments WHERE schedule_id = $1),
                    (SELECT count(*) FROM waitlist_entries WHERE schedule_id = ANY($2) AND status = 'waiting')",
            &[&schedule, &served],
        )
        .await?;
    let (seats, waiting): (i32, i64) = (row.get(0), row.get(1));
    jyt_events::append(
        tx,
        "waitlist.session_added",
        &schedule.to_string(),
        &serde_json::json!({
            "schema": 1,
            "hospital_id": state.hospital,
            "schedule_id": schedule,
            "schedule": waitlist::queries::schedule_for_hospital(tx, schedule).await?,
            "lines": served,
            "seats": seats,
            "waiting": waiting,
            "actor": actor,
        }),
    )
    .await?;
    Ok(())
}

/// The schedule's release mode and lottery window: as published, else the
/// policy's. Refused once patients have booked or entered (a change then
/// would rewrite the rules they played by).
async fn set_release_mode(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    i: usize,
    s: &PublishedSchedule,
    schedule: Uuid,
    policy: &crate::policy::Policy,
) -> Result<(), SlotError> {
    let mode = s.release_mode.unwrap_or(policy.release_mode);
    let window = match mode {
        ReleaseMode::FirstCome => None,
        ReleaseMode::Lottery => Some(
            i32::try_from(s.lottery_window_seconds.unwrap_or(policy.lottery_window_seconds)).unwrap_or(10),
        ),
    };
    let row = tx
        .query_one_cached(
            "SELECT release_mode, lottery_window_seconds,
                    EXISTS (SELECT 1 FROM bookings b WHERE b.schedule_id = s.id)
                    OR EXISTS (SELECT 1 FROM lottery_entries e WHERE e.schedule_id = s.id)
                    OR EXISTS (SELECT 1 FROM lottery_draws d WHERE d.schedule_id = s.id)
               FROM schedules s WHERE s.id = $1",
            &[&schedule],
        )
        .await?;
    let (was_mode, was_window, taken): (String, Option<i32>, bool) = (row.get(0), row.get(1), row.get(2));
    if was_mode == mode.as_str() && was_window == window {
        return Ok(());
    }
    if taken {
        return Err(RequestError::invalid(
            format!("schedules[{i}].release_mode"),
            "the schedule has bookings or lottery entries; its release mode and lottery window can no longer change",
        )
        .into());
    }
    tx.execute_cached(
        "UPDATE schedules SET release_mode = $2, lottery_window_seconds = $3 WHERE id = $1",
        &[&schedule, &mode.as_str(), &window],
    )
    .await?;
    Ok(())
}
