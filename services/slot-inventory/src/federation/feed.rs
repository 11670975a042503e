//! The feed a HIS polls with `?since=<position>`: every booking change and
//! every request for more capacity (`waitlist.capacity_requested`, which
//! the hospital answers with 加号 or a session published for the waitlist)
//! exactly once, in order, across pages.
//!
//! Outbox rows get their `seq` at insert, but transactions commit out of
//! order; a reader paging by `seq` could pass a row that commits later and
//! never see it. Feed positions are therefore given afterwards, to rows
//! already committed, by one sequencer transaction at a time: when a reader
//! sees position n, every position below n is already visible.

use chrono::{DateTime, FixedOffset, Utc};
use jyt_db::Prepared;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::SlotError;
use crate::state::AppState;
use jyt_web::RequestError;

/// The advisory lock key of the sequencer ("feed" in ASCII).
const SEQUENCER_LOCK: i64 = 0x6665_6564;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// The `next` of the previous page; 0 (or absent) for the beginning.
    #[serde(default)]
    pub since: i64,
    #[serde(default = "default_limit")]
    pub limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// The event types a hospital's feed carries (SQL `LIKE` patterns).
const FEED_EVENTS: [&str; 2] = ["booking.%", "waitlist.capacity_requested"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedEntry {
    pub position: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<FixedOffset>,
    /// `booking.*`: the booking as the API shows it, plus `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking: Option<serde_json::Value>,
    /// `waitlist.capacity_requested`: the schedule (with the hospital's own
    /// ids), its segments and how many patients wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedPage {
    pub entries: Vec<FeedEntry>,
    /// Pass as `since` for the next page (the same value when nothing is new).
    pub next: i64,
}

/// Give feed positions to committed outbox rows that have none; returns how
/// many. Skipped (0) while another sequencer runs.
pub async fn sequence(state: &AppState) -> Result<u64, SlotError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one_cached("SELECT pg_try_advisory_xact_lock($1)", &[&SEQUENCER_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let n = tx
        .execute_cached(
            "UPDATE outbox o SET feed_seq = nextval('outbox_feed_seq')
               FROM (SELECT seq FROM outbox WHERE feed_seq IS NULL ORDER BY seq LIMIT 5000 FOR UPDATE) todo
              WHERE o.seq = todo.seq",
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

pub async fn page(state: &AppState, q: &FeedQuery) -> Result<FeedPage, SlotError> {
    if q.since < 0 {
        return Err(
            RequestError::invalid("since", "must be a position from an earlier page, 0 or more").into(),
        );
    }
    if !(1..=1000).contains(&q.limit) {
        return Err(RequestError::invalid("limit", "must be between 1 and 1000").into());
    }
    sequence(state).await?;
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT feed_seq, event_id, event_type, occurred_at, payload FROM outbox
              WHERE feed_seq > $1 AND event_type LIKE ANY($3)
              ORDER BY feed_seq LIMIT $2",
            &[&q.since, &q.limit, &&FEED_EVENTS[..]],
        )
        .await?;
    let entries: Vec<FeedEntry> = rows
        .iter()
        .map(|r| {
            let event_type: String = r.get(2);
            let payload: serde_json::Value = r.get(4);
            let (booking, capacity_request) = if event_type.starts_with("booking.") {
                (Some(payload), None)
            } else {
                (None, Some(payload))
            };
            FeedEntry {
                position: r.get(0),
                event_id: r.get(1),
                event_type,
                occurred_at: jyt_domain::time::local(r.get::<_, DateTime<Utc>>(3)),
                booking,
                capacity_request,
            }
        })
        .collect();
    let next = entries.last().map_or(q.since, |e| e.position);
    Ok(FeedPage { entries, next })
}
