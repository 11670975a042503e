//! Group commit: many status changes of a hospital's bookings written to
//! PostgreSQL in one statement and one commit (issue 20). The surge's
//! winners ("W toward I") and the day's payments take it.
//!
//! A booking's write used to be one statement and one commit of its own,
//! so a hospital's writes went no faster than its few connections could
//! each wait for a round trip and a WAL flush, and on two cores the commit
//! itself was most of PostgreSQL's cost: `loadtest/pg-floor` measures an
//! update with its event at 0.16 ms of PostgreSQL's CPU alone, and eight
//! of them in one statement at 0.04 ms each. Now a write is queued and
//! gathered with the others ([`jyt_gather`]): at most
//! [`GroupWriter::new`]'s `concurrent_batches` statements in flight, each
//! taking everything queued (up to [`MAX_BATCH`]) into one statement
//! ([`GroupWrite::write`]). Alone, a write is a batch of one: no waiting
//! for company. Under load the queue fills while a batch is in flight,
//! and the next batch takes it all.
//!
//! Each booking's change is still written with its outbox event in one
//! transaction; a batch's changes share that transaction. A batch that
//! fails (a unique index refusing one row, a lost connection) is written
//! again one row at a time, so each caller gets the answer it would have
//! had alone, and one bad row never costs the others their writes.
//!
//! The write runs in a task of its own, not in the caller's request: a
//! request dropped mid-write (its client gone) must not take the other
//! callers' answers with it, and its own write stands.

use std::future::Future;
use std::marker::PhantomData;

use jyt_gather::Gather;
use tracing::Instrument;
use uuid::Uuid;

use super::queries::{self, BookingToWrite, StoredBooking};
use crate::error::SlotError;
use crate::state::AppState;

/// The most rows one statement writes: a batch's time in flight bounds
/// its first caller's wait.
pub const MAX_BATCH: usize = 64;

/// Why a row was not written.
#[derive(Debug)]
pub enum WriteError {
    /// A unique index refused it: the constraint's name.
    Unique(String),
    Other(SlotError),
}

impl From<jyt_db::tokio_postgres::Error> for WriteError {
    fn from(e: jyt_db::tokio_postgres::Error) -> Self {
        match jyt_db::unique_violation(&e) {
            Some(c) => WriteError::Unique(c.to_owned()),
            None => WriteError::Other(e.into()),
        }
    }
}

/// One kind of write that [`GroupWriter`] batches: its row, what a row's
/// write comes to, and the statement that writes many.
pub trait GroupWrite: Send + Sync + 'static {
    /// What a caller asks to write.
    type Row: Send + Sync + 'static;
    /// What one row's write came to (`None` where the statement's own
    /// conditions left the row unwritten).
    type Written: Send + 'static;
    /// The write's name in the metrics (`booking_group_commit_rows`).
    const NAME: &'static str;
    /// The statement's span (`INSERT bookings`) and its operation.
    const SPAN: &'static str;
    const OPERATION: &'static str;
    /// The span of a caller's wait for the batch that writes its row.
    const QUEUED_SPAN: &'static str;
    /// Write `rows` in one statement (one transaction) on `client`: what
    /// each came to, in `rows`' order; an error writes none of them. What
    /// follows from the commit for the whole batch (`Payments`: the paid
    /// holds out of the expiry index) is done here too, once a batch.
    fn write<'a>(
        client: &'a jyt_db::deadpool_postgres::Object,
        state: &'a AppState,
        rows: &'a [Self::Row],
    ) -> impl Future<Output = Result<Vec<Self::Written>, jyt_db::tokio_postgres::Error>> + Send + 'a;
}

/// A hospital's queue of one kind of write waiting for PostgreSQL, and its
/// writers. Cloned handles share both.
pub struct GroupWriter<W: GroupWrite> {
    gather: Gather<W::Row, RowResult<W>>,
}

impl<W: GroupWrite> Clone for GroupWriter<W> {
    fn clone(&self) -> Self {
        Self {
            gather: self.gather.clone(),
        }
    }
}

/// What a row's write came to.
type RowResult<W> = Result<<W as GroupWrite>::Written, WriteError>;

impl<W: GroupWrite> GroupWriter<W> {
    /// At most `concurrent_batches` statements in flight (at least one).
    pub fn new(concurrent_batches: usize) -> Self {
        Self {
            gather: Gather::new(concurrent_batches, MAX_BATCH),
        }
    }

    /// At most this many statements in flight.
    pub fn concurrent_batches(&self) -> usize {
        self.gather.in_flight()
    }

    /// Write one row (with its event), with whatever else is queued.
    pub async fn write(&self, state: &AppState, row: W::Row) -> Result<W::Written, WriteError> {
        // The state is cloned only for a row that starts a writer; the
        // batches' spans join the trace of the request that started it.
        let answer = self.gather.ask(row, || Batches::<W> {
            state: state.clone(),
            kind: PhantomData,
        });
        // Every caller's own trace shows its wait for the batch that
        // wrote its row, whoever's trace holds that batch's statement.
        let waited = tracing::info_span!(
            "queued write",
            otel.name = W::QUEUED_SPAN,
            otel.kind = "client",
            db.system = "postgresql",
            db.sql.table = "bookings"
        );
        answer.instrument(waited).await.unwrap_or_else(|| {
            Err(WriteError::Other(SlotError::Unexpected(anyhow::anyhow!(
                "the group writer stopped before answering"
            ))))
        })
    }
}

/// A writer's batches of `W`, written with the state of the request that
/// started the writer.
struct Batches<W> {
    state: AppState,
    kind: PhantomData<fn() -> W>,
}

impl<W: GroupWrite> jyt_gather::Call<W::Row, RowResult<W>> for Batches<W> {
    fn call(&self, rows: Vec<W::Row>) -> impl Future<Output = Vec<RowResult<W>>> + Send {
        write_batch::<W>(&self.state, rows)
    }
}

/// Run `W`'s statement for `rows` on a pooled connection, in its span.
async fn write<W: GroupWrite>(state: &AppState, rows: &[W::Row]) -> Result<Vec<W::Written>, WriteError> {
    let span = tracing::info_span!(
        "statement",
        otel.name = W::SPAN,
        otel.kind = "client",
        db.system = "postgresql",
        db.operation = W::OPERATION,
        db.sql.table = "bookings",
        rows = rows.len()
    );
    async {
        let client = state.pool.get().await.map_err(|e| WriteError::Other(e.into()))?;
        state.metrics.group_commit(W::NAME, rows.len());
        Ok(W::write(&client, state, rows).await?)
    }
    .instrument(span)
    .await
}

/// Write a batch in one statement; if that fails, each row alone: what
/// each row came to, in `rows`' order.
async fn write_batch<W: GroupWrite>(state: &AppState, rows: Vec<W::Row>) -> Vec<RowResult<W>> {
    if rows.len() > 1 {
        match write::<W>(state, &rows).await {
            Ok(written) if written.len() == rows.len() => return written.into_iter().map(Ok).collect(),
            Ok(written) => {
                tracing::error!(
                    rows = rows.len(),
                    answers = written.len(),
                    "a batch answered for another number of rows; writing each alone"
                );
            }
            Err(e) => {
                tracing::info!(rows = rows.len(), error = ?e, "a batch failed; writing each alone");
            }
        }
    }
    let mut results = Vec::with_capacity(rows.len());
    for row in &rows {
        let result = write::<W>(state, std::slice::from_ref(row))
            .await
            .and_then(|written| {
                written.into_iter().next().ok_or_else(|| {
                    WriteError::Other(SlotError::Unexpected(anyhow::anyhow!(
                        "a write of one row answered nothing"
                    )))
                })
            });
        results.push(result);
    }
    results
}

/// A won hold's write: the stored booking, or `None` when its seat is
/// beyond the segment's capacity or its schedule is stopped.
pub type WriteResult = Result<Option<StoredBooking>, WriteError>;

/// The insert of won holds with their events
/// ([`queries::INSERT_BOOKINGS_WITH_EVENTS`]).
pub struct WonHolds;

impl GroupWrite for WonHolds {
    type Row = BookingToWrite;
    type Written = Option<StoredBooking>;
    const NAME: &'static str = "won_holds";
    const SPAN: &'static str = "INSERT bookings";
    const OPERATION: &'static str = "INSERT";
    const QUEUED_SPAN: &'static str = "INSERT bookings (queued)";

    async fn write(
        client: &jyt_db::deadpool_postgres::Object,
        state: &AppState,
        rows: &[BookingToWrite],
    ) -> Result<Vec<Option<StoredBooking>>, jyt_db::tokio_postgres::Error> {
        let written = queries::insert_bookings_with_events(client, &state.hospital, rows).await?;
        Ok(queries::answer_in_order(written, rows, |row| row.id, |_, _| true))
    }
}

/// The hospital's queue of won holds waiting for PostgreSQL.
pub type BookingWriter = GroupWriter<WonHolds>;

/// The confirmation of paid holds with their events
/// ([`queries::CONFIRM_PAYMENTS_WITH_EVENTS`]): the day's payments, many
/// to a commit when many arrive together. The confirmed holds then leave
/// the expiry index together too: one `ZREM` a batch, where each payment
/// made its own round trip to Redis.
pub struct Payments;

impl GroupWrite for Payments {
    type Row = queries::PaymentToConfirm;
    type Written = Option<StoredBooking>;
    const NAME: &'static str = "payments";
    const SPAN: &'static str = "UPDATE bookings";
    const OPERATION: &'static str = "UPDATE";
    const QUEUED_SPAN: &'static str = "UPDATE bookings (queued payment)";

    async fn write(
        client: &jyt_db::deadpool_postgres::Object,
        state: &AppState,
        rows: &[queries::PaymentToConfirm],
    ) -> Result<Vec<Option<StoredBooking>>, jyt_db::tokio_postgres::Error> {
        let confirmed = queries::confirm_payments(client, &state.hospital, rows).await?;
        let paid: Vec<String> = confirmed
            .iter()
            .flatten()
            .map(|stored| stored.booking.booking_id.id.to_string())
            .collect();
        if !paid.is_empty() {
            let mut conn = state.redis.clone();
            if let Err(e) = jyt_cache::redis::cmd("ZREM")
                .arg(state.keys.holds())
                .arg(&paid)
                .query_async::<()>(&mut conn)
                .await
            {
                // The sweeper finds them confirmed and only drops the entries.
                tracing::warn!(error = %e, holds = paid.len(), "could not drop paid holds from the expiry index");
            }
        }
        Ok(confirmed)
    }
}

/// The hospital's queue of payments waiting for PostgreSQL.
pub type PaymentWriter = GroupWriter<Payments>;

/// Check-ins with their queue numbers and events
/// ([`queries::CHECK_INS_IF_DUE`]): a clinic's morning of arrivals, many to
/// a commit when many arrive together. A check-in that is not simply due
/// comes back `None`, and its caller finds out why on its own.
pub struct CheckIns;

impl GroupWrite for CheckIns {
    type Row = queries::CheckInToMake;
    type Written = Option<StoredBooking>;
    const NAME: &'static str = "check_ins";
    const SPAN: &'static str = "UPDATE bookings";
    const OPERATION: &'static str = "UPDATE";
    const QUEUED_SPAN: &'static str = "UPDATE bookings (queued check-in)";

    async fn write(
        client: &jyt_db::deadpool_postgres::Object,
        state: &AppState,
        rows: &[queries::CheckInToMake],
    ) -> Result<Vec<Option<StoredBooking>>, jyt_db::tokio_postgres::Error> {
        let opens = i32::try_from(state.policy.get().checkin_opens_minutes_before).unwrap_or(i32::MAX);
        queries::check_ins_if_due(client, &state.hospital, rows, opens).await
    }
}

/// The hospital's queue of check-ins waiting for PostgreSQL.
pub type CheckInWriter = GroupWriter<CheckIns>;

/// How often each booking statement is run on a connection before the
/// release may need it: PostgreSQL (`plan_cache_mode = auto`) plans a
/// prepared statement afresh for its first five runs and weighs its
/// generic plan at the sixth.
const WARM_RUNS: usize = 6;

/// Rows of the warm-up's batch form: the generic plan's own guess (ten)
/// for an array of unknown length, so the custom plans PostgreSQL weighs
/// it against are made for batches of the same size.
const WARM_BATCH: usize = 10;

/// Ready the hospital's connections for the release second: as many as
/// its writers and the outbox relay keep busy at once are opened, with
/// both forms of the booking insert prepared and run until PostgreSQL has
/// settled on their generic plans, on rows that name no segment, so
/// nothing is written.
///
/// A fresh connection's first bookings pay for the backend's catalog
/// caches and for five full plans of each statement (0.5 to 0.8 ms a plan,
/// issue 20's profile: in a surge right after a start, a third of
/// PostgreSQL's statement time went to planning). A hospital restarted
/// minutes before its release would pay that with its first winners.
///
/// Only statements whose generic plan stays right as the table grows: a
/// generic plan is made once, on the tables as they are at the warm-up,
/// and kept (this machine's PostgreSQL never analyzes, and nothing else
/// makes it plan again). The booking inserts read segments, schedules,
/// departments and doctors by key, whose sizes the warm-up already sees.
/// The payments' and check-ins' batch statements were tried here too
/// (issue 20: their batches of 3.5 and 3.8 rows are planned afresh most
/// of the time, 5.3 s of a day's PostgreSQL time for the payments). Made
/// on an empty bookings table, their generic plans scan every booking, and
/// in a whole day a payment batch took 2.33 ms against 0.62 ms with its
/// custom plans, a check-in batch 4.83 ms against 0.51 ms.
///
/// Not the whole pool: the pool opens its connections as they are needed,
/// and every hospital of a test city or of `jyt up` shares one PostgreSQL
/// server (100 connections), so the warm-up opens no more than the
/// booking path keeps busy. A connection the pool opens later plans for
/// itself, once.
pub async fn warm_connections(state: &AppState) -> Result<(), SlotError> {
    let count = warm_connection_count(state.writer.concurrent_batches(), state.pool.status().max_size);
    // Held together, so the pool opens `count` connections, not one `count` times.
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(state.pool.get().await?);
    }
    let nothing: Vec<BookingToWrite> = (0..WARM_BATCH).map(|_| unwritable(state)).collect();
    let warm = clients.iter().map(|client| {
        let nothing = &nothing;
        async move {
            for _ in 0..WARM_RUNS {
                for rows in [&nothing[..1], &nothing[..]] {
                    let written = queries::insert_bookings_with_events(client, &state.hospital, rows).await?;
                    if !written.is_empty() {
                        return Err(SlotError::Unexpected(anyhow::anyhow!(
                            "the warm-up wrote {} bookings",
                            written.len()
                        )));
                    }
                }
            }
            Ok(())
        }
    });
    futures::future::try_join_all(warm).await?;
    Ok(())
}

/// The connections [`warm_connections`] readies: one per writer and one
/// for the relay, within the pool.
pub fn warm_connection_count(writers: usize, pool_max_size: usize) -> usize {
    (writers + 1).min(pool_max_size)
}

/// A booking of no segment: the insert's join finds nothing to write.
fn unwritable(state: &AppState) -> BookingToWrite {
    let id = Uuid::now_v7();
    BookingToWrite {
        id,
        segment_id: Uuid::nil(),
        patient_id: Uuid::nil(),
        channel: jyt_domain::Channel::Wechat,
        seat_no: 1,
        pool: "common".to_owned(),
        visit_no: 1,
        pickup_code: "000000".to_owned(),
        idempotency_key: id.simple().to_string(),
        owner_app: None,
        hold_deadline: state.clock.now(),
        event_id: id,
        aggregate_id: id.to_string(),
        payload: serde_json::Value::Object(serde_json::Map::new()),
    }
}
