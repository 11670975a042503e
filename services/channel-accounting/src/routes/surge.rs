//! `GET /v1/console/surge?until=&seconds=&hospital=`: the release instant
//! second by second: attempts, sold-out refusals and seats taken (bookings)
//! per second, hospital and channel, over the `seconds` before `until`
//! (default: the last two minutes). The console polls it.
//!
//! Seats taken arrive with their booking events, within a second or so;
//! attempts arrive when the hospital flushes the minute's tally, after the
//! minute ends, so the newest minute's attempts fill in late. The answer
//! says so in `attempts_complete_until`.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Pool;
use jyt_domain::time::local;
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::auth::Operator;
use crate::error::AccountingError;

/// The longest window one answer covers (ten minutes of seconds).
pub const MAX_SECONDS: i64 = 600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurgeQuery {
    pub until: Option<DateTime<Utc>>,
    pub seconds: Option<i64>,
    pub hospital: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Counts {
    pub attempts: i64,
    pub sold_out: i64,
    pub bookings: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SecondPoint {
    /// Beijing wall-clock second, `HH:MM:SS`.
    pub second: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelCounts {
    pub channel: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HospitalSurge {
    pub hospital_id: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The busiest second's seats taken.
    pub peak_bookings_per_second: i64,
    pub channels: Vec<ChannelCounts>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Surge {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub hospital: Option<String>,
    /// Attempts are tallied per finished minute: before this instant they
    /// are complete, after it they may still grow.
    pub attempts_complete_until: DateTime<Utc>,
    pub totals: Counts,
    /// Every second of the window, quiet ones as zero.
    pub seconds: Vec<SecondPoint>,
    /// Busiest (most attempts, then seats taken) first.
    pub hospitals: Vec<HospitalSurge>,
}

#[get("/v1/console/surge")]
pub async fn surge(
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<SurgeQuery>,
) -> Result<HttpResponse, AccountingError> {
    let q = query.0;
    let seconds = q.seconds.unwrap_or(120);
    if !(10..=MAX_SECONDS).contains(&seconds) {
        return Err(AccountingError::invalid(
            "seconds",
            format!("must be between 10 and {MAX_SECONDS}"),
        ));
    }
    if let Some(h) = &q.hospital
        && (h.is_empty() || h.len() > 64)
    {
        return Err(AccountingError::invalid("hospital", "must be a hospital id"));
    }
    let hospital = operator.hospital_scope(q.hospital.as_deref())?;
    let now = Utc::now();
    let until = q
        .until
        .unwrap_or(now)
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap_or(now);
    let from = until - Duration::seconds(seconds);
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT second, hospital_id, channel, attempts, sold_out, bookings FROM traffic_second
              WHERE second >= $1 AND second < $2 AND ($3::text IS NULL OR hospital_id = $3)",
            &[&from, &until, &hospital],
        )
        .await?;
    let mut per_second = vec![Counts::default(); usize::try_from(seconds).unwrap_or(0)];
    let mut hospitals: Vec<HospitalSurge> = Vec::new();
    let mut peaks: std::collections::HashMap<(String, DateTime<Utc>), i64> = Default::default();
    let mut totals = Counts::default();
    for r in &rows {
        let (second, h, channel): (DateTime<Utc>, String, String) = (r.get(0), r.get(1), r.get(2));
        let c = Counts {
            attempts: r.get(3),
            sold_out: r.get(4),
            bookings: r.get(5),
        };
        if let Some(slot) = usize::try_from((second - from).num_seconds())
            .ok()
            .and_then(|i| per_second.get_mut(i))
        {
            slot.add(&c);
        }
        totals.add(&c);
        *peaks.entry((h.clone(), second)).or_default() += c.bookings;
        let line = match hospitals.iter_mut().position(|x| x.hospital_id == h) {
            Some(i) => &mut hospitals[i],
            None => {
                hospitals.push(HospitalSurge {
                    hospital_id: h.clone(),
                    counts: Counts::default(),
                    peak_bookings_per_second: 0,
                    channels: Vec::new(),
                });
                let last = hospitals.len() - 1;
                &mut hospitals[last]
            }
        };
        line.counts.add(&c);
        match line.channels.iter_mut().find(|x| x.channel == channel) {
            Some(x) => x.counts.add(&c),
            None => line.channels.push(ChannelCounts { channel, counts: c }),
        }
    }
    for ((h, _), n) in peaks {
        if let Some(line) = hospitals.iter_mut().find(|x| x.hospital_id == h) {
            line.peak_bookings_per_second = line.peak_bookings_per_second.max(n);
        }
    }
    for h in &mut hospitals {
        h.channels.sort_by(|a, b| {
            b.counts
                .attempts
                .cmp(&a.counts.attempts)
                .then(a.channel.cmp(&b.channel))
        });
    }
    hospitals.sort_by(|a, b| {
        (b.counts.attempts, b.counts.bookings)
            .cmp(&(a.counts.attempts, a.counts.bookings))
            .then(a.hospital_id.cmp(&b.hospital_id))
    });
    let seconds = per_second
        .into_iter()
        .enumerate()
        .map(|(i, counts)| SecondPoint {
            second: local(from + Duration::seconds(i64::try_from(i).unwrap_or(0)))
                .format("%H:%M:%S")
                .to_string(),
            counts,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Surge {
        from,
        until,
        hospital,
        attempts_complete_until: now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now),
        totals,
        seconds,
        hospitals,
    }))
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.attempts += other.attempts;
        self.sold_out += other.sold_out;
        self.bookings += other.bookings;
    }
}
