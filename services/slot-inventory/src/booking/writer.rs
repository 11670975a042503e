//! Group commit for won holds: the surge's winners are written to
//! PostgreSQL many to a statement (issue 20, "W toward I").
//!
//! A won hold used to be one statement and one commit of its own, so a
//! hospital's bookings went no faster than its few connections could each
//! wait for a round trip and a WAL flush. Now a winner queues its booking
//! and, if fewer than [`BookingWriter::new`]'s `concurrent_batches` are
//! being written, starts a writer; a writer takes everything queued (up to
//! [`MAX_BATCH`]) into one [`queries::INSERT_BOOKINGS_WITH_EVENTS`], and
//! goes on until the queue is empty. Alone, a booking is a batch of one:
//! no waiting for company. Under a surge the queue fills while a batch is
//! in flight, and the next batch takes it all.
//!
//! Each booking is still inserted with its outbox event in one
//! transaction; a batch's bookings share that transaction. A batch that
//! fails (a unique index refusing one seat, a lost connection) is written
//! again one booking at a time, so each winner gets the answer it would
//! have had alone, and one bad row never costs the others their seats.
//!
//! The write runs in a task of its own, not in the winner's request: a
//! request dropped mid-write (its client gone) must not take the other
//! winners' answers with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{Instrument, Span};
use uuid::Uuid;

use super::queries::{self, BookingToWrite, StoredBooking};
use crate::error::SlotError;
use crate::state::AppState;

/// The most bookings one statement writes: 14 arrays of this length, and
/// a batch's time in flight bounds its first winner's wait.
pub const MAX_BATCH: usize = 64;

/// Why a booking was not written.
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

/// A booking's write: the stored booking, or `None` when its seat is
/// beyond the segment's capacity or its schedule is stopped.
pub type WriteResult = Result<Option<StoredBooking>, WriteError>;

/// The hospital's queue of won holds waiting for PostgreSQL, and its
/// writers. Cloned handles share both.
#[derive(Clone)]
pub struct BookingWriter {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<Vec<Pending>>,
    /// One permit per batch in flight.
    writers: Arc<Semaphore>,
    /// The permits, all told.
    concurrent_batches: usize,
}

struct Pending {
    row: BookingToWrite,
    reply: oneshot::Sender<WriteResult>,
}

impl BookingWriter {
    /// At most `concurrent_batches` statements in flight (at least one).
    pub fn new(concurrent_batches: usize) -> Self {
        let concurrent_batches = concurrent_batches.max(1);
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Vec::new()),
                writers: Arc::new(Semaphore::new(concurrent_batches)),
                concurrent_batches,
            }),
        }
    }

    /// At most this many statements in flight.
    pub fn concurrent_batches(&self) -> usize {
        self.inner.concurrent_batches
    }

    /// Write one booking with its event, with whatever else is queued.
    pub async fn write(&self, state: &AppState, row: BookingToWrite) -> WriteResult {
        let (reply, answer) = oneshot::channel();
        self.inner.queue().push(Pending { row, reply });
        // Queued before asking for a writer: a writer finishing now looks
        // at the queue after it gives its permit back (`write_queued`), so
        // either it or this call sees the booking.
        if let Ok(permit) = self.inner.writers.clone().try_acquire_owned() {
            let (inner, state) = (self.inner.clone(), state.clone());
            // The batches' spans join the trace of the request that
            // started the writer.
            tokio::spawn(async move { inner.write_queued(&state, permit).await }.instrument(Span::current()));
        }
        // Every booking's own trace shows its wait for the batch that
        // wrote it, whoever's trace holds that batch's statement.
        let waited = tracing::info_span!(
            "INSERT bookings (queued)",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = "INSERT",
            db.sql.table = "bookings"
        );
        answer.instrument(waited).await.unwrap_or_else(|_| {
            Err(WriteError::Other(SlotError::Unexpected(anyhow::anyhow!(
                "the booking writer stopped before answering"
            ))))
        })
    }
}

impl Inner {
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch: the oldest queued bookings, up to [`MAX_BATCH`].
    fn take(&self) -> Vec<Pending> {
        let mut queue = self.queue();
        let n = queue.len().min(MAX_BATCH);
        queue.drain(..n).collect()
    }

    /// Write batches until the queue is empty, then give the permit back.
    async fn write_queued(self: Arc<Self>, state: &AppState, mut permit: OwnedSemaphorePermit) {
        loop {
            let batch = self.take();
            if !batch.is_empty() {
                write_batch(state, batch).await;
                continue;
            }
            drop(permit);
            // A booking queued after the take found every permit taken,
            // perhaps this one: take it up again, unless another writer has.
            if self.queue().is_empty() {
                return;
            }
            match self.writers.clone().try_acquire_owned() {
                Ok(p) => permit = p,
                Err(_) => return,
            }
        }
    }
}

/// Write a batch in one statement; if that fails, each booking alone.
async fn write_batch(state: &AppState, batch: Vec<Pending>) {
    let (rows, replies): (Vec<BookingToWrite>, Vec<oneshot::Sender<WriteResult>>) =
        batch.into_iter().map(|p| (p.row, p.reply)).unzip();
    if rows.len() > 1 {
        match insert(state, &rows).await {
            Ok(stored) => {
                let mut by_id: HashMap<Uuid, StoredBooking> =
                    stored.into_iter().map(|s| (s.booking.booking_id.id, s)).collect();
                for (row, reply) in rows.iter().zip(replies) {
                    // A reply nobody waits for: the request was dropped;
                    // its booking stands (held until paid or expired).
                    let _ = reply.send(Ok(by_id.remove(&row.id)));
                }
                return;
            }
            Err(e) => {
                tracing::info!(bookings = rows.len(), error = ?e, "a batch of bookings failed; writing each alone");
            }
        }
    }
    for (row, reply) in rows.iter().zip(replies) {
        let result = insert(state, std::slice::from_ref(row))
            .await
            .map(|stored| stored.into_iter().next());
        let _ = reply.send(result);
    }
}

#[tracing::instrument(
    name = "INSERT bookings",
    skip_all,
    fields(
        otel.kind = "client",
        db.system = "postgresql",
        db.operation = "INSERT",
        db.sql.table = "bookings",
        bookings = rows.len()
    )
)]
async fn insert(state: &AppState, rows: &[BookingToWrite]) -> Result<Vec<StoredBooking>, WriteError> {
    let client = state.pool.get().await.map_err(|e| WriteError::Other(e.into()))?;
    state.metrics.write_batch(rows.len());
    Ok(queries::insert_bookings_with_events(&client, &state.hospital, rows).await?)
}

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
