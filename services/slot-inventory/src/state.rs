//! The one typed state every handler receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jyt_cache::RedisConn;
use jyt_db::deadpool_postgres::Pool;
use jyt_domain::HospitalId;
use jyt_events::OutboxRelay;
use prometheus::{IntCounterVec, Opts, Registry};
use uuid::Uuid;

use jyt_domain::time::Clock;

use crate::booking::cache::CacheHealth;
use crate::booking::hold::{HoldScripts, HospitalKeys};
use crate::booking::queries::SegmentInfo;
use crate::booking::service::BookOutcome;
use crate::booking::tally::AttemptTally;
use crate::error::SlotError;
use crate::settings::Settings;

#[derive(Clone)]
pub struct AppState {
    pub hospital: HospitalId,
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub redis: RedisConn,
    pub keys: HospitalKeys,
    pub scripts: HoldScripts,
    /// Woken after each commit so events leave promptly.
    pub relay: OutboxRelay,
    pub metrics: BookingMetrics,
    pub loads: SegmentLoads,
    /// Where "now" comes from: the system clock, or a test's.
    pub clock: Clock,
    pub segments: SegmentDirectory,
    pub cache: CacheHealth,
    /// Booking attempts per channel and minute, flushed to the outbox.
    pub tally: AttemptTally,
}

/// Immutable facts about segments (schedule, department, date), cached so
/// the surge path names its Redis keys without asking PostgreSQL.
#[derive(Clone, Default)]
pub struct SegmentDirectory {
    known: Arc<std::sync::RwLock<HashMap<Uuid, SegmentInfo>>>,
}

impl SegmentDirectory {
    pub fn get(&self, segment: Uuid) -> Option<SegmentInfo> {
        let known = self.known.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        known.get(&segment).cloned()
    }

    pub fn insert(&self, info: SegmentInfo) {
        let mut known = self
            .known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bounded: past segments are dropped before the map outgrows a
        // large hospital's few weeks of clinics.
        if known.len() > 200_000 {
            known.clear();
        }
        known.insert(info.segment_id, info);
    }
}

/// One PostgreSQL snapshot per segment at a time. When a segment is missing
/// from Redis at release time, thousands of attempts notice at once; one
/// loads it while the rest wait for that load instead of each querying
/// PostgreSQL.
#[derive(Clone, Default)]
pub struct SegmentLoads {
    gates: Arc<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
}

impl SegmentLoads {
    /// The gate to pass through before loading `segment`.
    pub fn gate(&self, segment: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        gates.entry(segment).or_default().clone()
    }

    /// The load is finished; later arrivals will find the segment in Redis.
    pub fn done(&self, segment: Uuid) {
        let mut gates = self.gates.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        gates.remove(&segment);
    }
}

/// Booking attempts by outcome code: the surge dashboard's first graph.
#[derive(Clone)]
pub struct BookingMetrics {
    hospital: String,
    attempts: IntCounterVec,
}

impl BookingMetrics {
    pub fn register(registry: &Registry, hospital: &HospitalId) -> Result<Self, prometheus::Error> {
        let attempts = IntCounterVec::new(
            Opts::new("booking_attempts_total", "Booking attempts by outcome"),
            &["hospital", "outcome"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        Ok(Self {
            hospital: hospital.to_string(),
            attempts,
        })
    }

    pub fn record(&self, result: &Result<BookOutcome, SlotError>) {
        let outcome = match result {
            Ok(o) if o.replayed => "REPLAYED",
            Ok(_) => "BOOKED",
            Err(e) => e.code(),
        };
        self.attempts
            .with_label_values(&[self.hospital.as_str(), outcome])
            .inc();
    }
}
