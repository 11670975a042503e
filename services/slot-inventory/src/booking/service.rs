//! The surge path of one booking attempt:
//! 1. one Lua script decides in Redis (release time, schedule open,
//!    per-person rules, channel pool, a free seat); losers are answered
//!    without touching PostgreSQL;
//! 2. a winner's booking row and its outbox event are written in one
//!    PostgreSQL transaction;
//! 3. if that write fails, a compensating script gives the seat back.
//!
//! The caller runs [`book`] on a spawned task, so a client hanging up cannot
//! cancel it between steps 1 and 2.

use chrono::{DateTime, SubsecRound as _, TimeZone, Utc};
use jyt_cache::redis;
use jyt_db::Prepared;
use jyt_domain::{BookingRef, BookingStatus, Channel, Fen, IdempotencyKey};
use jyt_web::RequestError;
use rand::Rng;
use uuid::Uuid;

use super::cache::{invalidate_segment, load_segment, patient_day_ttl, segment_info};
use super::events::{self, EventKind};
use super::hold::{HeldSeat, HoldKind, HoldOutcome, HoldRequest, SeatGoes};
use super::queries::{self, BookingToWrite, NewBooking, SegmentInfo, StoredBooking};
use super::same_request;
use super::writer::WriteError;
use super::{BookRequest, Booking};
use crate::error::SlotError;
use crate::state::AppState;

/// How long a hold's idempotency record lives before its booking is
/// committed; if this process dies in between, a retry is not blocked for
/// longer than this.
const PENDING_IDEMPOTENCY_TTL_SECONDS: u64 = 30;

pub use super::BookOutcome;

pub async fn book(
    state: AppState,
    mut req: BookRequest,
    key: IdempotencyKey,
) -> Result<BookOutcome, SlotError> {
    let result = match super::owner::settle(&state, &mut req).await {
        Ok(()) => book_checked(&state, &req, &key).await,
        Err(e) => Err(e),
    };
    record(&state, &req, &result);
    result
}

/// The PostgreSQL-lock baseline's door (`booking.lock = "postgres"`, for
/// the load test's comparison): `POST /v1/bookings` is bound to it at
/// start (`routes::configure`), so [`book`]'s path never asks which lock
/// it runs on.
pub async fn book_with_postgres_lock(
    state: AppState,
    mut req: BookRequest,
    key: IdempotencyKey,
) -> Result<BookOutcome, SlotError> {
    let result = async {
        super::owner::settle(&state, &mut req).await?;
        check_request(&state, &req)?;
        let info = segment_info(&state, req.slot_id.id).await?;
        super::pg_lock::book(&state, &req, &key, &info).await
    }
    .await;
    record(&state, &req, &result);
    result
}

/// The hold a lottery's draw gives an entrant (`req.draw_entry` set): the
/// normal path (per-person rules, channel pools, the PostgreSQL write with
/// its events), past the lottery's gate in `hold.lua`. The key is the
/// entry's own, so a draw that is run again answers the same booking.
pub(crate) async fn hold_for_draw(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
) -> Result<BookOutcome, SlotError> {
    let result = book_checked(state, req, key).await;
    record(state, req, &result);
    result
}

/// Count the attempt: per channel, and in the release tally unless it was
/// the platform's own (a promotion or an offer).
fn record(state: &AppState, req: &BookRequest, result: &Result<BookOutcome, SlotError>) {
    state.metrics.record(req.channel, result);
    if req.waitlist_entry.is_none() && req.offer.is_none() && req.draw_entry.is_none() {
        state.tally.record(req.channel, state.clock.now(), result);
    }
}

/// What any booking request must be, whichever lock decides it.
fn check_request(state: &AppState, req: &BookRequest) -> Result<(), SlotError> {
    if req.slot_id.hospital != state.hospital {
        return Err(SlotError::SlotNotFound(req.slot_id.to_string()));
    }
    referral_of(req).map(|_| ())
}

/// The referral a request names: required for the `referral` channel and
/// refused elsewhere (it entitles only to the referral pool), and always a
/// referral's id, never free text.
fn referral_of(req: &BookRequest) -> Result<Option<Uuid>, SlotError> {
    match (&req.channel, &req.referral_id) {
        (Channel::Referral, None) => {
            Err(RequestError::invalid("referral_id", "the referral channel needs a referral id").into())
        }
        (Channel::Referral, Some(r)) => Ok(Some(super::referral::parse_id(r)?)),
        (_, Some(_)) => {
            Err(RequestError::invalid("referral_id", "only the referral channel names a referral").into())
        }
        (_, None) => Ok(None),
    }
}

async fn book_checked(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
) -> Result<BookOutcome, SlotError> {
    check_request(state, req)?;
    if !state.cache.is_ready() {
        // Make sure someone is rebuilding (a failed rebuild is not left to
        // the sweeper's next slow tick).
        super::cache::kick_rebuild(state);
        return Err(SlotError::LockUnavailable(
            "the slot cache is being rebuilt from PostgreSQL".into(),
        ));
    }
    let info = segment_info(state, req.slot_id.id).await?;
    // A stale Redis copy of the segment is repaired and the attempt retried
    // once; a second disagreement is reported rather than looped on.
    for attempt in 0..2 {
        match try_book(state, req, key, &info).await {
            Err(Stale) if attempt == 0 => {
                tracing::warn!(slot = %req.slot_id, "Redis disagreed with PostgreSQL; segment reloaded");
            }
            Err(Stale) => break,
            Ok(result) => return result,
        }
    }
    Err(SlotError::LockUnavailable(
        "segment state is being rebuilt".into(),
    ))
}

/// Redis held a seat PostgreSQL says is taken: reload and try again.
struct Stale;

async fn try_book(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
    info: &SegmentInfo,
) -> Result<Result<BookOutcome, SlotError>, Stale> {
    let keys = state.keys.segment(info);
    let idem_key = state.keys.idempotency(req.patient_id, key);
    let patient_day = state.keys.patient_day(req.patient_id, info.visit_date);
    let booking_id = Uuid::now_v7();
    let now = state.clock.now();
    let policy = state.policy.get();
    let lottery_entry = crate::lottery::entry::EntryRecord::from_request(req, now).to_json();
    let referral_key = state.keys.referral(referral_of(req).ok().flatten());
    let signed_pool = match super::signed::entitled(state, info.segment_id, &req.signed_doctors).await {
        Ok(yes) => yes,
        Err(e) => return Ok(Err(e)),
    };
    let hold_request = HoldRequest {
        patient: req.patient_id,
        booking_id,
        channel: req.channel,
        now: now.timestamp(),
        idempotency_key: &idem_key,
        idempotency_ttl_seconds: PENDING_IDEMPOTENCY_TTL_SECONDS,
        patient_day: &patient_day,
        max_per_day: policy.max_per_person_per_day,
        max_per_department: policy.max_per_person_per_department_per_day,
        patient_day_ttl_seconds: patient_day_ttl(info, now),
        kind: if req.waitlist_entry.is_some() {
            HoldKind::Promote
        } else if req.offer.is_some() {
            HoldKind::Offer
        } else if req.draw_entry.is_some() {
            HoldKind::Draw
        } else {
            HoldKind::Book
        },
        lottery_entry: &lottery_entry,
        referral_key: &referral_key,
        signed_pool,
    };

    let started = std::time::Instant::now();
    let held = state.scripts.hold(&state.redis, &keys, &hold_request).await;
    state.metrics.script("hold", started.elapsed());
    let mut outcome = match held {
        Ok(o) => o,
        Err(e) => return Ok(Err(e.into())),
    };
    if outcome == HoldOutcome::NotLoaded {
        // A segment missing because Redis restarted empty must not be
        // loaded alone: the patients' day counts went with it. Rebuild
        // everything first (bookings wait with 503 meanwhile).
        match super::cache::generation_present(state).await {
            Ok(true) => {}
            Ok(false) => {
                let rebuilding = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = super::cache::check_generation(&rebuilding).await {
                        tracing::error!(error = %e, "rebuilding the slot cache failed");
                    }
                });
                return Ok(Err(SlotError::LockUnavailable(
                    "the slot cache is being rebuilt from PostgreSQL".into(),
                )));
            }
            Err(e) => return Ok(Err(e)),
        }
        if let Err(e) = load_segment(state, info.segment_id).await {
            return Ok(Err(e));
        }
        outcome = match state.scripts.hold(&state.redis, &keys, &hold_request).await {
            Ok(o) => o,
            Err(e) => return Ok(Err(e.into())),
        };
    }

    Ok(match outcome {
        HoldOutcome::SoldOut => Err(SlotError::SlotSoldOut),
        HoldOutcome::NotLoaded => Err(SlotError::LockUnavailable("segment could not be loaded".into())),
        HoldOutcome::NotYetReleased { release_at } => Err(SlotError::NotYetReleased(
            Utc.timestamp_opt(release_at, 0).single().unwrap_or(now),
        )),
        HoldOutcome::ScheduleStopped => Err(SlotError::ScheduleStopped),
        HoldOutcome::SameSchedule => Err(SlotError::ScheduleAlreadyBooked),
        HoldOutcome::DepartmentLimit => Err(SlotError::DepartmentDailyLimit),
        HoldOutcome::DailyLimit => Err(SlotError::DailyLimit),
        HoldOutcome::Entered {
            entry,
            new,
            closes_at,
        } => match crate::lottery::entry::record(state, req, info, &entry, new, closes_at).await {
            Ok(entry) => Err(SlotError::LotteryEntered(Box::new(entry))),
            Err(e) => Err(e),
        },
        HoldOutcome::DrawPending { closes_at } => Err(SlotError::DrawPending(
            Utc.timestamp_opt(closes_at, 0).single().unwrap_or(now),
        )),
        HoldOutcome::Referral(refusal) => Err(SlotError::Referral(
            super::referral::explain(state, referral_of(req).ok().flatten(), refusal).await,
        )),
        HoldOutcome::Replay { booking_id } => replay(state, req, key, booking_id).await,
        HoldOutcome::AlreadyBooked { booking_id } => already_booked(state, req, key, booking_id).await,
        HoldOutcome::Held { seat, pool, visit_no } => {
            let held = Won {
                booking_id,
                seat,
                pool,
                visit_no,
                now,
            };
            return commit_hold(state, req, key, info, held).await;
        }
    })
}

/// What the hold script gave a winner.
struct Won {
    booking_id: Uuid,
    seat: i32,
    pool: String,
    visit_no: i32,
    now: DateTime<Utc>,
}

/// Write the won hold to PostgreSQL, or give it back.
async fn commit_hold(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
    info: &SegmentInfo,
    won: Won,
) -> Result<Result<BookOutcome, SlotError>, Stale> {
    let keys = state.keys.segment(info);
    let idem_key = state.keys.idempotency(req.patient_id, key);
    let patient_day = state.keys.patient_day(req.patient_id, info.visit_date);
    let referral_key = state.keys.referral(referral_of(req).ok().flatten());
    let held = HeldSeat {
        patient: req.patient_id,
        booking_id: won.booking_id,
    };
    // A failed promotion keeps the seat for the waitlist it came from.
    let on_sale = if req.waitlist_entry.is_some() {
        SeatGoes::Waitlist
    } else {
        SeatGoes::OnSale
    };
    let release = |back_on_sale: SeatGoes| {
        let (keys, idem_key, patient_day, referral_key) = (&keys, &idem_key, &patient_day, &referral_key);
        async move {
            let released = state
                .scripts
                .release(
                    &state.redis,
                    keys,
                    patient_day,
                    idem_key,
                    referral_key,
                    &held,
                    back_on_sale,
                )
                .await;
            if let Err(e) = released {
                // The seat stays held in Redis until the reconciler or a
                // rebuild frees it; PostgreSQL has no booking for it, so
                // nothing is oversold.
                tracing::error!(error = %e, booking = %won.booking_id, "could not release a failed hold");
            }
        }
    };

    match write_booking(state, req, key, info, &won).await {
        Ok(Some(stored)) => {
            after_commit(state, &stored, &idem_key).await;
            Ok(Ok(BookOutcome {
                booking: stored.booking,
                replayed: false,
            }))
        }
        Ok(None) => {
            // Seat above capacity, or the schedule was stopped: Redis is stale.
            release(SeatGoes::Nowhere).await;
            invalidate_segment(state, info.segment_id).await;
            Err(Stale)
        }
        Err(WriteError::Unique(constraint)) => match constraint.as_str() {
            "bookings_idempotency_uq" => {
                // A concurrent request with the same key committed first.
                release(on_sale).await;
                Ok(find_by_idempotency_key(state, req, key).await)
            }
            "bookings_referral_uq" => {
                // Another booking took the referral first.
                release(on_sale).await;
                Ok(Err(SlotError::Referral(super::referral::Refusal::Used)))
            }
            "bookings_patient_segment_uq" => {
                release(on_sale).await;
                Ok(Err(SlotError::AlreadyBooked(BookingRef::new(
                    state.hospital.clone(),
                    won.booking_id,
                ))))
            }
            _ => {
                // bookings_seat_uq: the seat is really taken.
                release(SeatGoes::Nowhere).await;
                invalidate_segment(state, info.segment_id).await;
                Err(Stale)
            }
        },
        Err(WriteError::Other(e)) => {
            release(on_sale).await;
            Ok(Err(e))
        }
    }
}

/// Best-effort Redis bookkeeping once the booking is safe in PostgreSQL.
async fn after_commit(state: &AppState, stored: &StoredBooking, idem_key: &str) {
    let mut pipe = redis::pipe();
    pipe.expire(
        idem_key,
        i64::try_from(state.settings.booking.idempotency_ttl_seconds).unwrap_or(86_400),
    )
    .ignore();
    if let Some(deadline) = &stored.booking.hold_deadline {
        pipe.zadd(
            state.keys.holds(),
            stored.booking.booking_id.id.to_string(),
            deadline.timestamp(),
        )
        .ignore();
    }
    let mut conn = state.redis.clone();
    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
        // PostgreSQL still answers replays through its unique key, and a
        // rebuild restores the expiry index from the held rows.
        tracing::warn!(error = %e, "could not record the booking's Redis bookkeeping");
    }
    state.relay.wake();
}

pub(crate) fn pickup_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000))
}

/// The row a won hold becomes.
fn new_booking<'a>(
    state: &AppState,
    req: &'a BookRequest,
    key: &'a IdempotencyKey,
    won: &'a Won,
    pickup_code: &'a str,
) -> NewBooking<'a> {
    NewBooking {
        id: won.booking_id,
        segment_id: req.slot_id.id,
        patient_id: req.patient_id,
        channel: req.channel,
        seat_no: won.seat,
        pool: &won.pool,
        visit_no: won.visit_no,
        pickup_code,
        idempotency_key: key.as_str(),
        referral_id: req.referral_id.as_deref(),
        owner_app: req.owner_app.as_deref(),
        // To the microsecond PostgreSQL keeps, so the event (which shows
        // this value) and the stored row agree.
        hold_deadline: (won.now + state.policy.get().hold_length()).trunc_subsecs(6),
    }
}

/// The booking row and its event, written by the hospital's
/// [`BookingWriter`](super::writer::BookingWriter) with the other winners
/// queued at the time, one statement and one commit for all
/// ([`queries::INSERT_BOOKINGS_WITH_EVENTS`]): a plain booking, the surge's
/// winners. The others write more, statement by statement.
async fn write_booking(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
    info: &SegmentInfo,
    won: &Won,
) -> Result<Option<StoredBooking>, WriteError> {
    if req.waitlist_entry.is_some()
        || req.offer.is_some()
        || req.draw_entry.is_some()
        || req.referral_id.is_some()
    {
        return write_booking_in_steps(state, req, key, info, won).await;
    }
    let code = pickup_code();
    let new = new_booking(state, req, key, won, &code);
    let mut booking = event_booking(state, req, info, won, &code);
    // The deadline a hold gets: the insert keeps it in the event only if
    // the visit has a fee (the database knows).
    booking.hold_deadline = Some(jyt_domain::time::local(new.hold_deadline));
    let payload = events::payload(&booking, serde_json::json!({}));
    let row = BookingToWrite::new(&new, Uuid::now_v7(), booking.booking_id.to_string(), payload);
    state.writer.write(state, row).await
}

/// The new booking as its event shows it, before the insert: what the
/// database alone knows (status, fee, department and doctor names) is
/// merged in by the insert itself ([`queries::INSERT_BOOKING_WITH_EVENT`]);
/// the placeholders here are overwritten. The lifecycle test
/// `a_new_bookings_event_is_the_payload_of_the_stored_booking` holds the
/// two to the same JSON.
fn event_booking(state: &AppState, req: &BookRequest, info: &SegmentInfo, won: &Won, code: &str) -> Booking {
    Booking {
        booking_id: BookingRef::new(state.hospital.clone(), won.booking_id),
        hospital_id: state.hospital.clone(),
        slot_id: req.slot_id.clone(),
        schedule_id: info.schedule_id,
        patient_id: req.patient_id,
        channel: req.channel,
        owner_app: req.owner_app.clone(),
        status: BookingStatus::Held,
        seat_number: won.seat,
        visit_number: won.visit_no,
        pool: won.pool.clone(),
        pickup_code: code.to_owned(),
        hold_deadline: None,
        payment_method: None,
        queue_number: None,
        referral_id: None,
        visit_date: info.visit_date,
        segment_starts_at: jyt_domain::time::local(info.starts_at),
        segment_ends_at: jyt_domain::time::local(info.ends_at),
        department: String::new(),
        doctor: String::new(),
        fee_fen: Fen(0),
        created_at: jyt_domain::time::local(won.now),
    }
}

/// The booking row and its events, in one transaction, statement by
/// statement: a waitlist promotion or a change offer, which write more than
/// a plain booking.
#[tracing::instrument(
    name = "INSERT bookings (waitlist or offer)",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation = "INSERT", db.sql.table = "bookings")
)]
async fn write_booking_in_steps(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
    info: &SegmentInfo,
    won: &Won,
) -> Result<Option<StoredBooking>, WriteError> {
    let mut client = state.pool.get().await.map_err(|e| WriteError::Other(e.into()))?;
    let tx = client.transaction().await?;
    // The script checked the referral in Redis; PostgreSQL checks it again
    // (row locked), so a stale Redis copy cannot book on a bad one.
    let referral = match referral_of(req).map_err(WriteError::Other)? {
        Some(id) => Some(
            super::referral::check_for_booking(state, &tx, id, req.patient_id, &info.department)
                .await
                .map_err(WriteError::Other)?,
        ),
        None => None,
    };
    let code = pickup_code();
    let inserted = queries::insert_booking(&tx, &new_booking(state, req, key, won, &code)).await?;
    if inserted.is_none() {
        return Ok(None);
    }
    let Some(stored) = queries::get_booking(&tx, &state.hospital, won.booking_id).await? else {
        return Ok(None);
    };
    let kind = if stored.booking.hold_deadline.is_some() {
        EventKind::Held
    } else {
        EventKind::Confirmed
    };
    if let Some(entry) = req.waitlist_entry {
        if !super::waitlist_queries::mark_promoted(&tx, entry, won.booking_id).await? {
            // The patient left the line meanwhile: nothing is written.
            return Err(WriteError::Other(SlotError::WaitlistEntryGone));
        }
        events::append(
            &tx,
            EventKind::Promoted,
            &stored.booking,
            serde_json::json!({ "waitlist_entry_id": entry }),
        )
        .await?;
        if kind == EventKind::Confirmed {
            events::append(&tx, kind, &stored.booking, serde_json::json!({})).await?;
        }
    } else if let Some(offer) = req.offer {
        if let Some(replaced) = offer.replaces {
            tx.execute_cached(
                "UPDATE bookings SET replaces_booking_id = $2 WHERE id = $1",
                &[&won.booking_id, &replaced],
            )
            .await?;
        }
        events::append(
            &tx,
            EventKind::Offered,
            &stored.booking,
            serde_json::json!({ "replaces": offer.replaces }),
        )
        .await?;
        if kind == EventKind::Confirmed {
            events::append(&tx, kind, &stored.booking, serde_json::json!({})).await?;
        }
    } else if let Some(entry) = req.draw_entry {
        events::append(&tx, kind, &stored.booking, serde_json::json!({})).await?;
        events::append(
            &tx,
            EventKind::DrawWon,
            &stored.booking,
            serde_json::json!({ "entry_id": crate::lottery::entry_ref(&state.hospital, entry) }),
        )
        .await?;
    } else {
        events::append(&tx, kind, &stored.booking, serde_json::json!({})).await?;
    }
    if let Some(mut used) = referral {
        used.status = "used".to_owned();
        used.used_by_booking = Some(stored.booking.booking_id.to_string());
        jyt_events::append(
            &tx,
            "referral.used",
            &used.referral_id.to_string(),
            &super::referral::event_payload(&used),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(stored))
}

async fn find_by_idempotency_key(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
) -> Result<BookOutcome, SlotError> {
    let client = state.pool.get().await?;
    match queries::get_booking_by_idempotency_key(&client, &state.hospital, req.patient_id, key.as_str())
        .await?
    {
        Some(existing) => same_request(existing, req),
        None => Err(SlotError::RequestInProgress),
    }
}

/// A retry: answer the first result if it was the same request.
async fn replay(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
    booking_id: Uuid,
) -> Result<BookOutcome, SlotError> {
    let client = state.pool.get().await?;
    match queries::get_booking(&client, &state.hospital, booking_id).await? {
        Some(existing) if existing.idempotency_key == key.as_str() => same_request(existing, req),
        Some(_) => Err(SlotError::IdempotencyKeyReused),
        None => Err(SlotError::RequestInProgress),
    }
}

async fn already_booked(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
    booking_id: Uuid,
) -> Result<BookOutcome, SlotError> {
    let client = state.pool.get().await?;
    match queries::get_booking(&client, &state.hospital, booking_id).await? {
        // The first request committed and its Redis record has expired.
        Some(existing) if existing.idempotency_key == key.as_str() => same_request(existing, req),
        _ => Err(SlotError::AlreadyBooked(BookingRef::new(
            state.hospital.clone(),
            booking_id,
        ))),
    }
}
