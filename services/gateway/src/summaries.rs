//! The availability summaries every hospital's slot-inventory keeps in
//! Redis, read for a whole date at once and kept in memory, renewed every
//! `search.max_age_ms` (a snapshot is never served older than twice that):
//!
//! - `<prefix>:{h:<hospital>}:avail:<YYYY-MM-DD>`: hash
//!   `<department_external_id>|<clinic_level>` → remaining seats;
//! - `<prefix>:{h:<hospital>}:departments`: hash department id → name.
//!
//! Why a cache: at the release second every patient searches, and each
//! search would otherwise read two hashes per hospital in the registry
//! (58 reads in a 29-hospital city). A snapshot per date, refreshed by one
//! request while the others wait for it, turns thousands of searches a
//! second into a couple of Redis pipelines a second. A search may then be
//! up to 2 × `max_age` behind a booking; the booking itself is decided by the
//! hospital's hold script, never by the search.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use jyt_cache::{Keyspace, RedisConn, redis};
use jyt_domain::HospitalId;

use crate::error::GatewayError;

pub use jyt_domain::ClinicLevel;

/// One hospital's remaining seats in one department at one clinic level.
#[derive(Debug, Clone)]
pub struct Summary {
    pub hospital: HospitalId,
    pub department_id: String,
    pub department_name: String,
    pub clinic_level: ClinicLevel,
    pub remaining: i64,
}

/// Every hospital's summaries for one date, as read at `read_at`.
pub struct Snapshot {
    read_at: Instant,
    pub summaries: Vec<Summary>,
}

/// Dates kept beyond this many are forgotten when stale, so a client
/// asking for every date of the year cannot grow the map without bound.
const MAX_DATES: usize = 128;

/// One date: its latest snapshot, and the right to read a new one.
#[derive(Default)]
struct DateEntry {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl DateEntry {
    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn store(&self, s: Arc<Snapshot>) {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s);
    }
}

/// What a read needs, cheap to clone into a background refresh.
#[derive(Clone)]
struct Reader {
    redis: RedisConn,
    keys: Keyspace,
    /// Every hospital in the registry, sorted: a snapshot serves any filter.
    hospitals: Arc<Vec<HospitalId>>,
}

pub struct Summaries {
    reader: Reader,
    max_age: Duration,
    dates: Mutex<HashMap<NaiveDate, Arc<DateEntry>>>,
}

impl Summaries {
    pub fn new(redis: RedisConn, keys: Keyspace, max_age: Duration, mut hospitals: Vec<HospitalId>) -> Self {
        hospitals.sort();
        Self {
            reader: Reader {
                redis,
                keys,
                hospitals: Arc::new(hospitals),
            },
            max_age,
            dates: Mutex::new(HashMap::new()),
        }
    }

    /// The date's snapshot. Younger than `max_age`: served as is. Up to
    /// twice that: served while one background read replaces it, so no
    /// search waits for Redis under steady traffic (the tail of the
    /// release second's searches was those waits). Older, or none yet:
    /// read now, concurrent callers waiting for that one read.
    pub async fn for_date(&self, date: NaiveDate) -> Result<Arc<Snapshot>, GatewayError> {
        let entry = self.entry(date);
        if let Some(s) = entry.current() {
            let age = s.read_at.elapsed();
            if age <= self.max_age {
                return Ok(s);
            }
            if age <= 2 * self.max_age {
                if let Ok(reading) = entry.reading.clone().try_lock_owned() {
                    let (reader, entry) = (self.reader.clone(), entry.clone());
                    tokio::spawn(async move {
                        let _reading = reading;
                        match reader.read(date).await {
                            Ok(fresh) => entry.store(Arc::new(fresh)),
                            // The next search past 2 × max_age reads
                            // again, and answers the error if it persists.
                            Err(e) => tracing::warn!(error = %e, "refreshing availability summaries failed"),
                        }
                    });
                }
                return Ok(s);
            }
        }
        let _reading = entry.reading.lock().await;
        if let Some(s) = entry.current()
            && s.read_at.elapsed() <= self.max_age
        {
            // Read by the caller we waited for.
            return Ok(s);
        }
        let fresh = Arc::new(self.reader.read(date).await?);
        entry.store(fresh.clone());
        Ok(fresh)
    }

    fn entry(&self, date: NaiveDate) -> Arc<DateEntry> {
        let mut dates = self
            .dates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if dates.len() >= MAX_DATES && !dates.contains_key(&date) {
            // Forget the dates whose snapshot is past use (older than
            // 2 × max_age, so the next search reads anyway).
            let limit = 2 * self.max_age;
            dates.retain(|_, e| e.current().is_some_and(|s| s.read_at.elapsed() <= limit));
        }
        dates.entry(date).or_default().clone()
    }
}

impl Reader {
    /// Two hashes per hospital, all in one pipeline.
    async fn read(&self, date: NaiveDate) -> Result<Snapshot, GatewayError> {
        let read_at = Instant::now();
        let hospitals: &[HospitalId] = &self.hospitals;
        if hospitals.is_empty() {
            return Ok(Snapshot {
                read_at,
                summaries: Vec::new(),
            });
        }
        let mut pipe = redis::pipe();
        for id in hospitals {
            pipe.cmd("HGETALL")
                .arg(jyt_cache::hospital::availability(&self.keys, id.as_str(), date));
            pipe.cmd("HGETALL")
                .arg(jyt_cache::hospital::departments(&self.keys, id.as_str()));
        }
        let mut conn = self.redis.clone();
        let replies: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let mut summaries = Vec::new();
        for (id, pair) in hospitals.iter().zip(replies.chunks(2)) {
            let [avail, departments] = pair else { continue };
            for (field, remaining) in avail {
                // Fields not in the contract's shape are skipped, not fatal:
                // a newer writer may add kinds this reader does not know yet.
                let Some((dept, level)) = jyt_cache::hospital::parse_availability_field(field) else {
                    continue;
                };
                let Some(clinic_level) = ClinicLevel::parse(level) else {
                    continue;
                };
                let Ok(remaining) = remaining.parse::<i64>() else {
                    continue;
                };
                summaries.push(Summary {
                    hospital: id.clone(),
                    department_id: dept.to_owned(),
                    department_name: departments.get(dept).cloned().unwrap_or_else(|| dept.to_owned()),
                    clinic_level,
                    remaining: remaining.max(0),
                });
            }
        }
        Ok(Snapshot { read_at, summaries })
    }
}
