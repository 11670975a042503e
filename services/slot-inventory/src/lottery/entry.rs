//! A lottery entry: decided in Redis by `hold.lua` in the window (one per
//! person; a second press answers the first entry from Redis alone), the
//! first press of each person written to PostgreSQL at once, so an entry
//! survives Redis losing its state.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use jyt_cache::redis;
use jyt_domain::{Channel, HospitalId, SlotRef};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::queries;
use crate::booking::BookRequest;
use crate::booking::queries::SegmentInfo;
use crate::error::SlotError;
use crate::state::AppState;

/// What Redis keeps of an entry (its hash field's value, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub entry_id: Uuid,
    pub segment_id: Uuid,
    pub channel: Channel,
    #[serde(default)]
    pub owner_app: Option<String>,
    #[serde(default)]
    pub referral_id: Option<String>,
    pub entered_at: DateTime<Utc>,
}

impl EntryRecord {
    /// The entry a booking attempt would make, were it in a window.
    pub fn from_request(req: &BookRequest, now: DateTime<Utc>) -> Self {
        Self {
            entry_id: Uuid::now_v7(),
            segment_id: req.slot_id.id,
            channel: req.channel,
            owner_app: req.owner_app.clone(),
            referral_id: req.referral_id.clone(),
            entered_at: now,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An entry as the patient's app reads it (and the `202` to an attempt
/// in the window). Times in Asia/Shanghai.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `<hospital>-<uuid>`.
    pub entry_id: String,
    pub hospital_id: HospitalId,
    pub schedule_id: Uuid,
    /// The segment asked for; a winner is given it if it still has a seat.
    pub slot_id: SlotRef,
    pub patient_id: Uuid,
    pub channel: Channel,
    #[serde(default)]
    pub owner_app: Option<String>,
    /// `entered`, then `won` or `lost` once drawn.
    pub status: String,
    /// When the window closes and the draw runs.
    pub draw_at: DateTime<FixedOffset>,
    #[serde(default)]
    pub booking_id: Option<String>,
    /// Why it lost: the refusal's machine code (`SLOT_SOLD_OUT`, ...).
    #[serde(default)]
    pub lost_reason: Option<String>,
    pub entered_at: DateTime<FixedOffset>,
}

impl Entry {
    pub fn entered(
        hospital: &HospitalId,
        schedule: Uuid,
        patient: Uuid,
        record: &EntryRecord,
        draw_at: DateTime<Utc>,
    ) -> Self {
        Self {
            entry_id: format!("{hospital}-{}", record.entry_id),
            hospital_id: hospital.clone(),
            schedule_id: schedule,
            slot_id: SlotRef::new(hospital.clone(), record.segment_id),
            patient_id: patient,
            channel: record.channel,
            owner_app: record.owner_app.clone(),
            status: "entered".to_owned(),
            draw_at: jyt_domain::time::local(draw_at),
            booking_id: None,
            lost_reason: None,
            entered_at: jyt_domain::time::local(record.entered_at),
        }
    }
}

/// The hold script answered `ENTERED`: make sure PostgreSQL has the
/// patient's entry and answer it. A first press is written (if PostgreSQL
/// already has another entry of the patient's, from before Redis lost its
/// copy, that one is answered and put back in Redis); a later press is
/// answered from Redis alone.
pub async fn record(
    state: &AppState,
    req: &BookRequest,
    info: &SegmentInfo,
    stored_json: &str,
    new: bool,
    closes_at: i64,
) -> Result<Entry, SlotError> {
    let record: EntryRecord = serde_json::from_str(stored_json)
        .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("an unreadable lottery entry in Redis: {e}")))?;
    let draw_at = Utc
        .timestamp_opt(closes_at, 0)
        .single()
        .unwrap_or_else(|| state.clock.now());
    let entered =
        |r: &EntryRecord| Entry::entered(&state.hospital, info.schedule_id, req.patient_id, r, draw_at);
    if !new {
        return Ok(entered(&record));
    }
    let key = state.keys.lottery_entries(info.schedule_id);
    let written = async {
        let client = state.pool.get().await?;
        let inserted = queries::insert_entry(&client, info.schedule_id, req.patient_id, &record).await?;
        if inserted {
            return Ok::<_, SlotError>(record.clone());
        }
        queries::entry_of(&client, info.schedule_id, req.patient_id)
            .await?
            .ok_or_else(|| SlotError::Unexpected(anyhow::anyhow!("a lottery entry vanished")))
    }
    .await;
    let mut conn = state.redis.clone();
    match written {
        Ok(kept) if kept == record => Ok(entered(&kept)),
        Ok(kept) => {
            // PostgreSQL's entry wins: Redis answers it from now on.
            redis::cmd("HSET")
                .arg(&key)
                .arg(req.patient_id.to_string())
                .arg(kept.to_json())
                .query_async::<()>(&mut conn)
                .await?;
            Ok(entered(&kept))
        }
        Err(e) => {
            // Not written: forget it in Redis too, so a retry enters again
            // (the draw would otherwise copy it from Redis, which is also
            // safe, but the patient was told it failed).
            if let Err(undo) = redis::cmd("HDEL")
                .arg(&key)
                .arg(req.patient_id.to_string())
                .query_async::<()>(&mut conn)
                .await
            {
                tracing::warn!(error = %undo, "could not forget an unwritten lottery entry; the draw copies it");
            }
            Err(e)
        }
    }
}
