//! Booking attempts per channel and minute. Losers of a surge never write
//! PostgreSQL (that is the point of the Redis lock), so their attempts are
//! counted in memory and written to the outbox as one `attempts.tallied`
//! event per channel and minute once the minute is over. A crash loses at
//! most the current minute's tallies, never a booking.
//!
//! Each minute also keeps its seconds, sent as `seconds` (`[second of the
//! minute, attempts, sold-out]` for each second that had attempts): the
//! operators' surge view shows the release instant second by second, and
//! a minute's total hides the one second that carries it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use jyt_domain::Channel;

use super::BookOutcome;
use crate::error::SlotError;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub attempts: u64,
    pub sold_out: u64,
    /// `[attempts, sold-out]` per second of the minute.
    pub seconds: [[u32; 2]; 60],
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            attempts: 0,
            sold_out: 0,
            seconds: [[0; 2]; 60],
        }
    }
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.attempts += other.attempts;
        self.sold_out += other.sold_out;
        for (mine, theirs) in self.seconds.iter_mut().zip(other.seconds.iter()) {
            mine[0] = mine[0].saturating_add(theirs[0]);
            mine[1] = mine[1].saturating_add(theirs[1]);
        }
    }

    /// The seconds that had attempts, as the event carries them.
    pub fn busy_seconds(&self) -> Vec<[u32; 3]> {
        (0u32..)
            .zip(self.seconds.iter())
            .filter(|(_, c)| c[0] > 0)
            .map(|(s, c)| [s, c[0], c[1]])
            .collect()
    }
}

/// A channel in one minute (the minute's start).
type ChannelMinute = (Channel, DateTime<Utc>);

#[derive(Clone, Default)]
pub struct AttemptTally {
    minutes: Arc<Mutex<HashMap<ChannelMinute, Counts>>>,
}

impl AttemptTally {
    pub fn record(&self, channel: Channel, now: DateTime<Utc>, result: &Result<BookOutcome, SlotError>) {
        if matches!(result, Ok(o) if o.replayed) {
            // A retry is not a new attempt.
            return;
        }
        let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let mut minutes = self
            .minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = minutes.entry((channel, minute)).or_default();
        let second = usize::try_from((now - minute).num_seconds().clamp(0, 59)).unwrap_or(0);
        let sold_out = matches!(result, Err(SlotError::SlotSoldOut));
        counts.attempts += 1;
        counts.seconds[second][0] = counts.seconds[second][0].saturating_add(1);
        if sold_out {
            counts.sold_out += 1;
            counts.seconds[second][1] = counts.seconds[second][1].saturating_add(1);
        }
    }

    /// Take the tallies of finished minutes (all of them when `everything`).
    fn take(&self, before: DateTime<Utc>, everything: bool) -> Vec<(ChannelMinute, Counts)> {
        let mut minutes = self
            .minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let done: Vec<_> = minutes
            .keys()
            .filter(|(_, minute)| everything || *minute < before)
            .copied()
            .collect();
        done.into_iter()
            .filter_map(|k| minutes.remove(&k).map(|c| (k, c)))
            .collect()
    }

    fn put_back(&self, taken: Vec<(ChannelMinute, Counts)>) {
        let mut minutes = self
            .minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (k, c) in taken {
            minutes.entry(k).or_default().add(&c);
        }
    }

    /// Write finished minutes to the outbox in one transaction; on failure
    /// they are kept for the next flush.
    pub async fn flush(&self, state: &AppState, everything: bool) -> Result<usize, SlotError> {
        let now = state.clock.now();
        let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let taken = self.take(this_minute, everything);
        if taken.is_empty() {
            return Ok(0);
        }
        let written = write(state, &taken).await;
        match written {
            Ok(()) => {
                state.relay.wake();
                Ok(taken.len())
            }
            Err(e) => {
                self.put_back(taken);
                Err(e)
            }
        }
    }
}

async fn write(state: &AppState, taken: &[(ChannelMinute, Counts)]) -> Result<(), SlotError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    for ((channel, minute), counts) in taken {
        jyt_events::append(
            &tx,
            "attempts.tallied",
            &format!("{}:{}:{}", state.hospital, channel.as_str(), minute.timestamp()),
            &serde_json::json!({
                "schema": 1,
                "hospital_id": state.hospital,
                "channel": channel,
                "minute": minute.to_rfc3339(),
                "attempts": counts.attempts,
                "sold_out": counts.sold_out,
                "seconds": counts.busy_seconds(),
            }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
