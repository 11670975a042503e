//! The one typed state every handler receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jyt_cache::RedisConn;
use jyt_db::deadpool_postgres::Pool;
use jyt_domain::Channel;
use jyt_domain::HospitalId;
use jyt_events::OutboxRelay;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use uuid::Uuid;

use jyt_domain::time::Clock;

use crate::booking::cache::CacheHealth;
use crate::booking::hold::{HoldScripts, HospitalKeys};
use crate::booking::queries::SegmentInfo;
use crate::booking::service::BookOutcome;
use crate::booking::tally::AttemptTally;
use crate::booking_policy::CurrentPolicy;
use crate::error::SlotError;
use crate::settings::Settings;

#[derive(Clone)]
pub struct AppState {
    pub hospital: HospitalId,
    pub settings: Arc<Settings>,
    /// The booking policy in force (stored in PostgreSQL, changed from the
    /// console); `settings.policy` only seeds it at first start.
    pub policy: CurrentPolicy,
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
    /// Won holds on their way to PostgreSQL, many to a statement.
    pub writer: crate::booking::writer::BookingWriter,
    /// The payments' group commit (`booking::writer`).
    pub payments: crate::booking::writer::PaymentWriter,
    /// The check-ins' group commit (`booking::writer`).
    pub check_ins: crate::booking::writer::CheckInWriter,
    /// Waitlist passes started by freed seats, one at a time per schedule.
    pub waitlist_passes: crate::booking::waitlist::PassesInFlight,
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

/// The surge dashboard's figures: booking attempts by channel and outcome
/// code, Lua script latency, hold expiries and the outbox's lag.
#[derive(Clone)]
pub struct BookingMetrics {
    hospital: String,
    attempts: IntCounterVec,
    script_seconds: HistogramVec,
    hold_expiries: IntCounterVec,
    outbox_unpublished: IntGaugeVec,
    outbox_oldest_seconds: GaugeVec,
    group_commit_rows: HistogramVec,
}

impl BookingMetrics {
    pub fn register(registry: &Registry, hospital: &HospitalId) -> Result<Self, prometheus::Error> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "booking_attempts_total",
                "Booking attempts by channel and outcome",
            ),
            &["hospital", "channel", "outcome"],
        )?;
        let script_seconds = HistogramVec::new(
            HistogramOpts::new(
                "redis_script_duration_seconds",
                "Lua script round trips by script",
            )
            .buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
            &["hospital", "script"],
        )?;
        let hold_expiries = IntCounterVec::new(
            Opts::new(
                "booking_hold_expiries_total",
                "Unpaid holds expired by the sweeper",
            ),
            &["hospital"],
        )?;
        let outbox_unpublished = IntGaugeVec::new(
            Opts::new(
                "outbox_unpublished_events",
                "Events written but not yet relayed to the stream",
            ),
            &["hospital"],
        )?;
        let outbox_oldest_seconds = GaugeVec::new(
            Opts::new(
                "outbox_oldest_unpublished_seconds",
                "Age of the oldest event not yet relayed (0 when none)",
            ),
            &["hospital"],
        )?;
        let group_commit_rows = HistogramVec::new(
            HistogramOpts::new(
                "booking_group_commit_rows",
                "Rows per statement of booking::writer's group commit, by write (won_holds, payments, check_ins)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            &["hospital", "write"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(group_commit_rows.clone()))?;
        registry.register(Box::new(script_seconds.clone()))?;
        registry.register(Box::new(hold_expiries.clone()))?;
        registry.register(Box::new(outbox_unpublished.clone()))?;
        registry.register(Box::new(outbox_oldest_seconds.clone()))?;
        Ok(Self {
            hospital: hospital.to_string(),
            attempts,
            script_seconds,
            hold_expiries,
            outbox_unpublished,
            outbox_oldest_seconds,
            group_commit_rows,
        })
    }

    pub fn record(&self, channel: Channel, result: &Result<BookOutcome, SlotError>) {
        let outcome = match result {
            Ok(o) if o.replayed => "REPLAYED",
            Ok(_) => "BOOKED",
            Err(e) => e.code(),
        };
        self.attempts
            .with_label_values(&[self.hospital.as_str(), channel.as_str(), outcome])
            .inc();
    }

    /// Every attempt this hospital has answered so far, of any channel and
    /// outcome (the load test's count of the gateway's hops to it).
    pub fn attempts_answered(&self) -> u64 {
        use prometheus::core::Collector;
        self.attempts
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum::<f64>() as u64
    }

    pub fn script(&self, script: &str, took: std::time::Duration) {
        self.script_seconds
            .with_label_values(&[self.hospital.as_str(), script])
            .observe(took.as_secs_f64());
    }

    /// One statement of `booking::writer`'s group commit: `write` names
    /// the kind of write, `rows` how many it took.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a batch is at most booking::writer::MAX_BATCH"
    )]
    pub fn group_commit(&self, write: &str, rows: usize) {
        self.group_commit_rows
            .with_label_values(&[self.hospital.as_str(), write])
            .observe(rows as f64);
    }

    pub fn hold_expired(&self, n: usize) {
        self.hold_expiries
            .with_label_values(&[self.hospital.as_str()])
            .inc_by(u64::try_from(n).unwrap_or(0));
    }

    pub fn outbox(&self, unpublished: i64, oldest_seconds: f64) {
        self.outbox_unpublished
            .with_label_values(&[self.hospital.as_str()])
            .set(unpublished);
        self.outbox_oldest_seconds
            .with_label_values(&[self.hospital.as_str()])
            .set(oldest_seconds);
    }
}
