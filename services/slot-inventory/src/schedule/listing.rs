//! `GET /v1/schedules?date=`: schedules of a date with each segment's
//! remaining seats. Remaining counts come from Redis where the segment is
//! loaded (that is what the next booking attempt will see) and from
//! PostgreSQL otherwise.

use chrono::{DateTime, FixedOffset, NaiveDate};
use jyt_cache::redis;
use jyt_domain::time::local;
use jyt_domain::{HospitalId, SlotRef};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::queries;
use crate::booking::queries::SegmentInfo;
use crate::error::SlotError;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaySchedules {
    pub hospital_id: HospitalId,
    pub hospital_name: String,
    pub date: NaiveDate,
    pub schedules: Vec<ScheduleView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleView {
    pub schedule_id: Uuid,
    pub department_id: String,
    pub department: String,
    pub doctor_id: String,
    pub doctor: String,
    pub doctor_title: String,
    pub session: String,
    pub clinic_level: String,
    pub fee_fen: i64,
    pub status: String,
    pub slots: Vec<SlotView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotView {
    pub slot_id: SlotRef,
    pub starts_at: DateTime<FixedOffset>,
    pub ends_at: DateTime<FixedOffset>,
    pub capacity: i32,
    pub remaining: i64,
}

pub async fn schedules_on(state: &AppState, date: NaiveDate) -> Result<DaySchedules, SlotError> {
    let client = state.pool.get().await?;
    let rows = queries::segments_on(&client, date).await?;
    drop(client);

    // One pipelined round trip for every segment's Redis state.
    let mut pipe = redis::pipe();
    for row in &rows {
        let info = SegmentInfo {
            segment_id: row.get("segment_id"),
            schedule_id: row.get("schedule_id"),
            department: row.get("department_id"),
            department_name: row.get("department_name"),
            clinic_level: row.get("clinic_level"),
            visit_date: date,
            starts_at: row.get("starts_at"),
            ends_at: row.get("ends_at"),
        };
        let keys = state.keys.segment(&info);
        pipe.exists(&keys.meta).llen(&keys.free);
    }
    let mut conn = state.redis.clone();
    let cached: Option<Vec<(bool, i64)>> = if rows.is_empty() {
        Some(Vec::new())
    } else {
        match pipe.query_async::<Vec<(bool, i64)>>(&mut conn).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable; remaining counts from PostgreSQL");
                None
            }
        }
    };

    let mut schedules: Vec<ScheduleView> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let schedule_id: Uuid = row.get("schedule_id");
        let status: String = row.get("status");
        let capacity: i32 = row.get("capacity");
        let live: i64 = row.get("live");
        let remaining = match cached.as_ref().and_then(|c| c.get(i)) {
            Some((true, free)) => *free,
            _ if status == "open" => (i64::from(capacity) - live).max(0),
            _ => 0,
        };
        let slot = SlotView {
            slot_id: SlotRef::new(state.hospital.clone(), row.get("segment_id")),
            starts_at: local(row.get("starts_at")),
            ends_at: local(row.get("ends_at")),
            capacity,
            remaining,
        };
        match schedules.last_mut() {
            Some(last) if last.schedule_id == schedule_id => last.slots.push(slot),
            _ => schedules.push(ScheduleView {
                schedule_id,
                department_id: row.get("department_id"),
                department: row.get("department_name"),
                doctor_id: row.get("doctor_id"),
                doctor: row.get("doctor_name"),
                doctor_title: row.get("doctor_title"),
                session: row.get("session"),
                clinic_level: row.get("clinic_level"),
                fee_fen: row.get("fee_fen"),
                status,
                slots: vec![slot],
            }),
        }
    }
    Ok(DaySchedules {
        hospital_id: state.hospital.clone(),
        hospital_name: state.settings.hospital.name.clone(),
        date,
        schedules,
    })
}
