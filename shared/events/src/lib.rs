//! # Layout
//! - [`append`]: write an event into the service's `outbox` table inside the
//!   caller's transaction, so the event exists exactly when the change does.
//! - [`OutboxRelay`]: moves outbox events to a Redis Stream in order,
//!   reading them by the transaction that wrote them, and moves its one
//!   position row on only once Redis has answered every `XADD` with an
//!   entry id. A crash between the `XADD` and that move publishes an event
//!   twice; consumers deduplicate on `event_id`. The relay
//!   also trims the stream, but only below what every consumer group has
//!   read and acknowledged ([`trim_floor`]): an entry stays replayable until
//!   the slowest group is past it.
//!
//! Every service's migrations create the same `outbox` table (see
//! [`OUTBOX_DDL`]) and change it the same way ([`OUTBOX_RELAY_DDL`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jyt_cache::RedisConn;
use jyt_cache::redis;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

/// The table each service's first migration creates (kept here for reference
/// and tests; migrations are plain SQL files in each service).
pub const OUTBOX_DDL: &str = include_str!("outbox.sql");

/// What turns [`OUTBOX_DDL`]'s table into the one [`OutboxRelay`] reads by
/// transaction: each service has a migration with exactly this text
/// (`tests/ddl.rs` holds them to it).
pub const OUTBOX_RELAY_DDL: &str = include_str!("outbox_relay.sql");

/// The advisory lock (per database) that lets one relay at a time read an
/// outbox ("relay" in ASCII).
const RELAY_LOCK: i64 = 0x72_656c_6179;

const TAKE_RELAY_LOCK_SQL: &str = "SELECT pg_try_advisory_xact_lock($1)";

/// The next batch: the relay's position (`target` is the snapshot being
/// drained, or this statement's own when none is), then the events
/// `target` sees and `relayed` did not, after `after_seq`, in `seq` order.
/// No rows at all unless this transaction holds the relay's lock ($2); one
/// row with no event when there is none.
///
/// A new target's first event is found through `outbox_by_xact` (`min`
/// of an expression, so the planner does not walk the primary key from
/// the outbox's first row instead); from there the primary key is read in
/// order. `LIMIT 1` on the position: without it the planner guessed the
/// one-row table at hundreds of rows, costed the join high enough to
/// compile it (JIT), and spent 150–270 ms doing so on every call.
const RELAY_BATCH_SQL: &str = "
WITH pos AS (
    SELECT relayed, coalesce(target, pg_current_snapshot()) AS target,
           target IS NOT NULL AS draining, after_seq
      FROM outbox_relay WHERE pg_try_advisory_xact_lock($2) LIMIT 1),
start AS (
    SELECT coalesce(pos.after_seq,
                    (SELECT min(o.seq + 0) - 1 FROM outbox o
                      WHERE o.xid >= pg_snapshot_xmin(pos.relayed)
                        AND o.xid < pg_snapshot_xmax(pos.target)
                        AND pg_visible_in_snapshot(o.xid, pos.target)
                        AND NOT pg_visible_in_snapshot(o.xid, pos.relayed))) AS after_seq
      FROM pos)
SELECT pos.target::text AS target, pos.draining, o.seq, o.event_id, o.event_type,
       o.aggregate_id, o.occurred_at, o.payload
  FROM pos CROSS JOIN start LEFT JOIN LATERAL (
      SELECT o.* FROM outbox o
       WHERE o.seq > start.after_seq
         AND pg_visible_in_snapshot(o.xid, pos.target)
         AND NOT pg_visible_in_snapshot(o.xid, pos.relayed)
       ORDER BY o.seq LIMIT $1) o ON true";

/// A full batch: more of the target may be left.
const DRAINING_SQL: &str = "UPDATE outbox_relay SET target = $1::text::pg_snapshot, after_seq = $2";

/// The target is relayed in full.
const RELAYED_SQL: &str =
    "UPDATE outbox_relay SET relayed = $1::text::pg_snapshot, target = NULL, after_seq = NULL";

/// How many events are written and not yet on the stream, and how long
/// the oldest has waited (seconds, 0 when none): the outbox's lag, for
/// `/metrics` and tests. `LIMIT 1` for the same reason as the batch's:
/// without it PostgreSQL compiled this statement too; the upper bound on
/// `xid` (true of every row this statement can see) keeps the planner's
/// guess at a sliver of the index rather than a third of the outbox.
pub const UNRELAYED_SQL: &str = "
SELECT count(*), coalesce(extract(epoch FROM now() - min(o.occurred_at)), 0)::float8
  FROM (SELECT * FROM outbox_relay LIMIT 1) p JOIN outbox o
    ON o.xid >= pg_snapshot_xmin(p.relayed) AND o.xid < pg_snapshot_xmax(pg_current_snapshot())
   AND NOT pg_visible_in_snapshot(o.xid, p.relayed)
   AND NOT (p.target IS NOT NULL AND pg_visible_in_snapshot(o.xid, p.target) AND o.seq <= p.after_seq)";

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Db(#[from] jyt_db::DbError),
    #[error("PostgreSQL: {0}")]
    Query(#[from] jyt_db::tokio_postgres::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered the pipeline without an entry id for every `XADD`:
    /// the relay's position stays, the events go out again.
    #[error("Redis acknowledged {acknowledged} of {sent} XADDs")]
    Unacknowledged { sent: usize, acknowledged: usize },
    /// The relay's position row was not there to read or move
    /// (`outbox_relay` holds exactly one row): nothing is committed.
    #[error("the outbox relay's position moved {rows} rows, not 1")]
    Position { rows: u64 },
}

/// An event as it travels on a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    /// e.g. `booking.confirmed`.
    pub event_type: String,
    /// The entity the event is about, e.g. a booking reference.
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

/// The outbox insert: event id, type, aggregate id, payload.
pub const APPEND_SQL: &str =
    "INSERT INTO outbox (event_id, event_type, aggregate_id, payload) VALUES ($1, $2, $3, $4)";

/// Append an event to the outbox within the caller's transaction.
pub async fn append<C: GenericClient>(
    client: &C,
    event_type: &str,
    aggregate_id: &str,
    payload: &serde_json::Value,
) -> Result<Uuid, jyt_db::tokio_postgres::Error> {
    let event_id = Uuid::now_v7();
    // Prepared once per connection: every booking appends an event, and an
    // unprepared statement costs a second round trip each time.
    let insert = client.prepare_cached(APPEND_SQL).await?;
    client
        .execute(&insert, &[&event_id, &event_type, &aggregate_id, payload])
        .await?;
    Ok(event_id)
}

/// Relays one service's outbox to one Redis Stream.
#[derive(Clone)]
pub struct OutboxRelay {
    pub pool: Pool,
    pub redis: RedisConn,
    /// Full stream key, e.g. `jyt:events:slot-inventory`.
    pub stream: String,
    pub batch_size: i64,
    /// How often the stream is trimmed below its slowest consumer group
    /// ([`trim_floor`]). Never by length: a consumer that is behind (or
    /// down) must find every entry it has not acknowledged yet.
    pub trim_interval: Duration,
    /// How often to look for rows when nobody calls [`OutboxRelay::wake`].
    pub poll_interval: Duration,
    /// How long a wake-up waits for more commits before relaying: during
    /// a surge every booking's commit wakes the relay, and relaying each
    /// alone would take a pooled connection (and a transaction) per event
    /// away from the bookings. A few milliseconds batch them.
    pub linger: Duration,
    /// The linger while events keep coming (the last relay found some):
    /// longer, so a hospital's surge is relayed in tens of events a
    /// transaction rather than one or two. Each relay is a transaction
    /// and a WAL flush of its own: peak-day's quarter day relayed its
    /// 18,557 bookings in 12,716 transactions with 5 ms, 6,193–6,539 with
    /// 50 ms, and 1,923–2,094 with 200 ms, where the phase's statements
    /// fell from 53,107–54,328 to 39,354–40,827 (loadtest/README.md,
    /// 2026-12-05 18:32). An event after a quiet spell waits only
    /// [`OutboxRelay::linger`]; one during a surge at most this long more.
    pub busy_linger: Duration,
    wake: Arc<Notify>,
}

impl OutboxRelay {
    pub fn new(pool: Pool, redis: RedisConn, stream: String) -> Self {
        Self {
            pool,
            redis,
            stream,
            batch_size: 500,
            trim_interval: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            linger: Duration::from_millis(5),
            busy_linger: Duration::from_millis(200),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Ask the relay to run now (after a commit), instead of at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publish one batch; returns how many events were put on the stream.
    ///
    /// The outbox is read by transaction ([`OUTBOX_RELAY_DDL`]): the
    /// batch is the events that a snapshot (`target`) sees and the last
    /// snapshot relayed in full (`relayed`) did not, in `seq` order, at
    /// most [`OutboxRelay::batch_size`] of them; nothing is written to an
    /// event. Two round trips hold a pooled connection, as before: `BEGIN`,
    /// the relay's lock and the batch's statement go out together; once
    /// Redis has every entry, the relay's one row moves on and `COMMIT`
    /// goes with it. Anything short of that rolls the move back and the
    /// events go out again (consumers deduplicate on `event_id`).
    ///
    /// One relay at a time per outbox: a transaction-scoped advisory lock,
    /// taken in a statement of its own so that the batch's statement, and
    /// the snapshot it reads with, start after the last holder committed.
    /// A relay that finds the lock taken publishes nothing this time.
    ///
    /// A transaction left open anywhere on the server (snapshots span
    /// databases) delays nothing, but keeps `relayed`'s oldest running id
    /// where it is, so each new target's first event is looked for over
    /// every event written since: the cost grows with the open
    /// transaction's age, as it does for vacuum.
    pub async fn relay_once(&self) -> Result<usize, EventError> {
        let client = self.pool.get().await.map_err(jyt_db::DbError::from)?;
        let (lock, batch, draining_to, relayed_to) = futures::future::try_join4(
            client.prepare_cached(TAKE_RELAY_LOCK_SQL),
            client.prepare_cached(RELAY_BATCH_SQL),
            client.prepare_cached(DRAINING_SQL),
            client.prepare_cached(RELAYED_SQL),
        )
        .await?;
        let begun = futures::future::try_join3(
            client.batch_execute("BEGIN"),
            client.query_one(&lock, &[&RELAY_LOCK]),
            client.query(&batch, &[&self.batch_size, &RELAY_LOCK]),
        )
        .await;
        let rows = match begun {
            Ok((_, locked, rows)) if locked.get::<_, bool>(0) => rows,
            Ok(_) => {
                jyt_db::roll_back_or_close(client).await;
                return Ok(0);
            }
            Err(e) => {
                jyt_db::roll_back_or_close(client).await;
                return Err(e.into());
            }
        };
        // At least one row while the lock is held: the position, with no
        // event when the target holds nothing more. None means the
        // position row is gone, and the relay would go quiet for good.
        let Some(first) = rows.first() else {
            jyt_db::roll_back_or_close(client).await;
            return Err(EventError::Position { rows: 0 });
        };
        let target: String = first.get("target");
        let draining: bool = first.get("draining");
        let mut events: Vec<(i64, Envelope)> = rows
            .iter()
            .filter_map(|row| {
                Some((
                    row.get::<_, Option<i64>>("seq")?,
                    Envelope {
                        event_id: row.get("event_id"),
                        event_type: row.get("event_type"),
                        aggregate_id: row.get("aggregate_id"),
                        occurred_at: row.get("occurred_at"),
                        payload: row.get("payload"),
                    },
                ))
            })
            .collect();
        if events.is_empty() && !draining {
            // Nothing new, and nothing to write: the position stays.
            jyt_db::roll_back_or_close(client).await;
            return Ok(0);
        }
        // The join keeps no order: the stream gets the outbox's.
        events.sort_by_key(|(seq, _)| *seq);
        if !events.is_empty()
            && let Err(e) = self.publish(&events).await
        {
            jyt_db::roll_back_or_close(client).await;
            return Err(e);
        }
        // A full batch may leave more of the target: remember where it
        // stopped. Otherwise the target is relayed in full.
        let last_seq = events.last().map(|(seq, _)| *seq);
        let moved = match last_seq {
            Some(seq) if events.len() as i64 == self.batch_size => {
                futures::future::try_join(
                    client.execute(&draining_to, &[&target, &seq]),
                    client.batch_execute("COMMIT"),
                )
                .await
            }
            _ => {
                futures::future::try_join(
                    client.execute(&relayed_to, &[&target]),
                    client.batch_execute("COMMIT"),
                )
                .await
            }
        };
        match moved {
            // The move's own answer decides, not the `COMMIT`'s: after a
            // failed move PostgreSQL answers `COMMIT` with a rollback, not
            // an error, and a move of no row commits nothing useful.
            Ok((1, ())) => Ok(events.len()),
            Ok((n, ())) => Err(EventError::Position { rows: n }),
            Err(e) => {
                jyt_db::roll_back_or_close(client).await;
                Err(e.into())
            }
        }
    }

    /// `XADD` every event in one pipeline; an error unless Redis answered
    /// each with an entry id.
    async fn publish(&self, events: &[(i64, Envelope)]) -> Result<(), EventError> {
        let mut pipe = redis::pipe();
        for (_, envelope) in events {
            let body = serde_json::to_string(envelope).unwrap_or_default();
            // No MAXLEN: trimming by length would drop entries a slow
            // consumer group has not read yet (see `trim_once`).
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg(EVENT_ID_FIELD)
                .arg(envelope.event_id.to_string())
                .arg(EVENT_TYPE_FIELD)
                .arg(&envelope.event_type)
                .arg(ENVELOPE_FIELD)
                .arg(body);
        }
        let mut redis = self.redis.clone();
        // One entry id per XADD, or the whole pipeline fails: an event
        // counts as relayed only once Redis has acknowledged its entry.
        let ids = pipe.query_async::<Vec<Option<String>>>(&mut redis).await?;
        let added = ids
            .iter()
            .filter(|id| id.as_deref().is_some_and(|i| !i.is_empty()))
            .count();
        if added == events.len() {
            Ok(())
        } else {
            Err(EventError::Unacknowledged {
                sent: events.len(),
                acknowledged: added,
            })
        }
    }

    /// Trim the stream below the position every consumer group has read
    /// and acknowledged ([`trim_floor`]); the number of entries removed.
    /// A stream nobody reads yet is left alone.
    pub async fn trim_once(&self) -> Result<usize, EventError> {
        let mut redis = self.redis.clone();
        let Some(floor) = trim_floor(&mut redis, &self.stream).await? else {
            return Ok(0);
        };
        // Exact MINID: entries strictly below the floor go, the floor stays.
        let removed: usize = redis::cmd("XTRIM")
            .arg(&self.stream)
            .arg("MINID")
            .arg(&floor)
            .query_async(&mut redis)
            .await?;
        if removed > 0 {
            tracing::debug!(stream = %self.stream, removed, floor = %floor, "stream trimmed below its slowest group");
        }
        Ok(removed)
    }

    /// Run until `shutdown` resolves: relay whenever woken or every poll
    /// interval; on errors, back off and keep going (PostgreSQL or Redis may
    /// be restarting). Every `trim_interval`, trim what every group has read.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = self.poll_interval;
        let mut last_trim = std::time::Instant::now();
        loop {
            if last_trim.elapsed() >= self.trim_interval {
                last_trim = std::time::Instant::now();
                if let Err(err) = self.trim_once().await {
                    tracing::warn!(error = %err, stream = %self.stream, "stream trim failed; will retry");
                }
            }
            let relayed = self.relay_once().await;
            let busy = matches!(relayed, Ok(n) if n > 0);
            let wait = match relayed {
                Ok(n) if n as i64 == self.batch_size => Duration::ZERO,
                Ok(_) => {
                    backoff = self.poll_interval;
                    self.poll_interval
                }
                Err(err) => {
                    tracing::warn!(error = %err, stream = %self.stream, "outbox relay failed; will retry");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {
                    // Let the commits right behind this one join its batch.
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(if busy { self.busy_linger } else { self.linger }) => {}
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// A stream entry id (`<ms>-<seq>`) as a comparable pair.
fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn field<T: redis::FromRedisValue>(map: &HashMap<String, redis::Value>, name: &str) -> Option<T> {
    map.get(name)
        .and_then(|v| redis::from_redis_value::<T>(v.clone()).ok())
}

/// The lowest stream position some consumer group may still need: for each
/// group, its oldest pending (delivered, unacknowledged) entry, or else its
/// last-delivered id; the minimum over the groups. Every entry strictly
/// below it has been read and acknowledged by every group, so `XTRIM MINID`
/// at it loses nothing. `None` when the stream has no group (nobody has
/// said what they need yet) or a group has read nothing.
pub async fn trim_floor(redis: &mut RedisConn, stream: &str) -> Result<Option<String>, EventError> {
    let groups: Vec<HashMap<String, redis::Value>> = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(redis)
        .await
    {
        Ok(g) => g,
        // No such stream yet: nothing to trim.
        Err(e) if e.code() == Some("ERR") && e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut floor: Option<((u64, u64), String)> = None;
    for group in &groups {
        let (Some(name), Some(last)) = (
            field::<String>(group, "name"),
            field::<String>(group, "last-delivered-id"),
        ) else {
            return Ok(None);
        };
        let mut needed = last;
        if field::<i64>(group, "pending").unwrap_or(0) > 0 {
            // XPENDING's summary: [count, lowest id, highest id, consumers].
            let summary: (i64, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
                .arg(stream)
                .arg(&name)
                .query_async(redis)
                .await?;
            if let Some(lowest) = summary.1
                && entry_id(&lowest) < entry_id(&needed)
            {
                needed = lowest;
            }
        }
        let Some(position) = entry_id(&needed) else {
            return Ok(None);
        };
        if floor.as_ref().is_none_or(|(f, _)| position < *f) {
            floor = Some((position, needed));
        }
    }
    Ok(floor.and_then(|(position, id)| (position > (0, 0)).then_some(id)))
}

/// A stream entry's fields, as the relay writes them: the event's id and
/// type beside the envelope, so a reader can pass over an event by its type
/// without parsing it ([`StreamConsumer::wanting`]).
pub const EVENT_ID_FIELD: &str = "event_id";
pub const EVENT_TYPE_FIELD: &str = "event_type";
pub const ENVELOPE_FIELD: &str = "envelope";

/// Parse an envelope from a stream entry's fields.
pub fn envelope_from_fields(fields: &HashMap<String, redis::Value>) -> Option<Envelope> {
    let raw = fields.get(ENVELOPE_FIELD)?;
    let text: String = redis::from_redis_value(raw.clone()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Reads a stream as one member of a consumer group: at least once, in
/// order per consumer. After a crash, entries read but not acknowledged are
/// read again first, so the caller must apply each event idempotently (by
/// `event_id`) and acknowledge only after its transaction commits.
///
/// Each replica needs a consumer name of its own (the pod name). With
/// `claim_idle_ms` set, every that often the consumer takes over entries
/// any member of the group (a replica that died, or itself after a failed
/// apply) has left unacknowledged that long, and reads its own pending
/// list again, once through.
pub struct StreamConsumer {
    /// A connection of its own: `XREADGROUP ... BLOCK` would stall every
    /// other command multiplexed on a shared connection.
    redis: RedisConn,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub batch_size: usize,
    pub block_ms: usize,
    /// Take over entries unacknowledged this long (0: never).
    pub claim_idle_ms: u64,
    last_claim: std::time::Instant,
    /// Where the pass over our own pending entries has got to; `None` when
    /// no pass is due (new entries are read).
    pending_from: Option<String>,
    /// The event types this consumer applies (`None`: every type). An
    /// entry whose `event_type` field names another is neither parsed nor
    /// handed out; it is acknowledged with the next [`ack`](Self::ack).
    wanted: Option<Vec<String>>,
    /// Entries read that are of no wanted type, for the next `ack`.
    unwanted: Vec<String>,
}

/// One stream entry; `envelope` is `None` for an entry we cannot parse
/// (acknowledged and skipped, and logged, rather than blocking the stream).
#[derive(Debug, Clone)]
pub struct StreamEntry {
    pub id: String,
    pub envelope: Option<Envelope>,
}

impl StreamConsumer {
    pub fn new(redis: RedisConn, stream: String, group: String, consumer: String) -> Self {
        Self {
            redis,
            stream,
            group,
            consumer,
            batch_size: 200,
            block_ms: 1000,
            claim_idle_ms: 0,
            last_claim: std::time::Instant::now(),
            // Start with our own unacknowledged entries (after a restart).
            pending_from: Some("0".to_owned()),
            wanted: None,
            unwanted: Vec::new(),
        }
    }

    /// Hand out only events of `types`. A stream carries every event of
    /// its service and most consumers apply a few kinds: the others cost
    /// no parse, and are acknowledged in the same `XACK` as the batch they
    /// came with, not one round trip each. An entry without an
    /// `event_type` field is parsed and handed out as before.
    #[must_use]
    pub fn wanting(mut self, types: &[&str]) -> Self {
        self.wanted = Some(types.iter().map(|t| (*t).to_owned()).collect());
        self
    }

    /// Read our own pending entries again from the start at the next
    /// [`next_batch`](Self::next_batch): after an entry failed to apply,
    /// so that it is retried before the entries behind it.
    pub fn reread_pending(&mut self) {
        self.pending_from = Some("0".to_owned());
    }

    /// Create the group (reading from the stream's start) unless it exists.
    pub async fn ensure_group(&mut self) -> Result<(), EventError> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.redis)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// The next entries for this consumer: first its own pending ones (after
    /// a restart or a take-over), then new ones, waiting up to `block_ms`.
    pub async fn next_batch(&mut self) -> Result<Vec<StreamEntry>, EventError> {
        if self.claim_idle_ms > 0 && self.last_claim.elapsed() >= Duration::from_millis(self.claim_idle_ms) {
            self.last_claim = std::time::Instant::now();
            self.claim_abandoned().await?;
            self.pending_from = Some("0".to_owned());
        }
        if let Some(from) = self.pending_from.take() {
            let (pending, last) = self.read(&from, None).await?;
            if let Some(last) = last {
                // Go on after these next time: entries that fail again wait
                // for the next pass instead of being retried in a loop.
                self.pending_from = Some(last);
                return Ok(pending);
            }
        }
        Ok(self.read(">", Some(self.block_ms)).await?.0)
    }

    /// Make every entry of the group left unacknowledged for
    /// `claim_idle_ms` ours (`XAUTOCLAIM`, page by page).
    async fn claim_abandoned(&mut self) -> Result<(), EventError> {
        let mut start = "0-0".to_owned();
        loop {
            let reply: redis::streams::StreamAutoClaimReply = redis::AsyncCommands::xautoclaim_options(
                &mut self.redis,
                &self.stream,
                &self.group,
                &self.consumer,
                self.claim_idle_ms,
                &start,
                redis::streams::StreamAutoClaimOptions::default()
                    .count(self.batch_size)
                    .with_justid(),
            )
            .await?;
            if !reply.claimed.is_empty() {
                tracing::info!(
                    stream = %self.stream,
                    consumer = %self.consumer,
                    entries = reply.claimed.len(),
                    "took over unacknowledged entries"
                );
            }
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    /// The entries from `from` that this consumer wants, and the id of the
    /// last entry read, wanted or not (`None`: nothing was read).
    async fn read(
        &mut self,
        from: &str,
        block_ms: Option<usize>,
    ) -> Result<(Vec<StreamEntry>, Option<String>), EventError> {
        let mut opts = redis::streams::StreamReadOptions::default()
            .group(&self.group, &self.consumer)
            .count(self.batch_size);
        if let Some(ms) = block_ms {
            opts = opts.block(ms);
        }
        let reply: Option<redis::streams::StreamReadReply> =
            redis::AsyncCommands::xread_options(&mut self.redis, &[&self.stream], &[from], &opts).await?;
        let Some(reply) = reply else {
            return Ok((Vec::new(), None));
        };
        let mut last = None;
        let mut entries = Vec::new();
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            last = Some(entry.id.clone());
            if self.is_unwanted(&entry.map) {
                self.unwanted.push(entry.id);
                continue;
            }
            entries.push(StreamEntry {
                envelope: envelope_from_fields(&entry.map),
                id: entry.id,
            });
        }
        Ok((entries, last))
    }

    /// Whether the entry's `event_type` field names a type this consumer
    /// does not apply.
    fn is_unwanted(&self, fields: &HashMap<String, redis::Value>) -> bool {
        let (Some(wanted), Some(raw)) = (&self.wanted, fields.get(EVENT_TYPE_FIELD)) else {
            return false;
        };
        let event_type = match raw {
            redis::Value::BulkString(bytes) => bytes.as_slice(),
            redis::Value::SimpleString(text) => text.as_bytes(),
            _ => return false,
        };
        !wanted.iter().any(|w| w.as_bytes() == event_type)
    }

    /// Acknowledge `ids`, with the entries of unwanted types read since
    /// the last call, in one `XACK`.
    pub async fn ack(&mut self, ids: &[String]) -> Result<(), EventError> {
        // Taken either way: if the XACK fails they stay pending and come
        // back with the next pass over our pending entries.
        let unwanted = std::mem::take(&mut self.unwanted);
        if ids.is_empty() && unwanted.is_empty() {
            return Ok(());
        }
        redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(ids)
            .arg(&unwanted)
            .query_async::<()>(&mut self.redis)
            .await?;
        Ok(())
    }

    /// Entries in the stream not yet delivered to this group (Redis ≥ 7's
    /// `lag`), for the consumer-lag metric; `None` when Redis cannot say.
    pub async fn lag(&mut self) -> Result<Option<i64>, EventError> {
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut self.redis)
            .await?;
        Ok(groups
            .iter()
            .find(|g| {
                g.get("name")
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                    .is_some_and(|n| n == self.group)
            })
            .and_then(|g| g.get("lag"))
            .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok()))
    }
}
