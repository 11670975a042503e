//! Everything after the surge: paying a hold, cancelling, checking in, and
//! the sweepers that expire unpaid holds and mark no-shows. Each change is
//! one PostgreSQL transaction (row locked, state checked, event appended);
//! a freed seat goes back to Redis only after the commit.

use chrono::{DateTime, TimeDelta, Utc};
use jyt_cache::redis;
use jyt_db::Prepared;
use jyt_domain::{BookingRef, BookingStatus};
use serde::Deserialize;
use uuid::Uuid;

use super::cache::segment_info;
use super::events::{self, EventKind};
use super::hold::{HeldSeat, SeatGoes};
use super::queries::{self, StoredBooking};
use super::writer::WriteError;
use crate::error::SlotError;
use crate::state::AppState;

/// How a fee was paid (for accounting and refunds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Through the channel's own payment (WeChat Pay, kiosk UnionPay, ...).
    SelfPay,
    /// Medical-insurance personal account.
    Insurance,
    /// The platform card's prepaid balance.
    PrepaidCard,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::SelfPay => "self_pay",
            PaymentMethod::Insurance => "insurance",
            PaymentMethod::PrepaidCard => "prepaid_card",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The payment's own reference (channel transaction id or ledger id);
    /// confirming again with the same reference answers the same booking.
    pub payment_reference: String,
    pub payment_method: PaymentMethod,
    /// What the channel collected, when it says: a payment of another
    /// amount is refused (`400 amount_fen`) and the booking stays held.
    /// The gateway sends it so it need not read the fee first.
    #[serde(default)]
    pub amount_fen: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Only the patient the booking is for may cancel it.
    pub patient_id: Uuid,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    pub pickup_code: String,
    /// When the channel knows who is checking in, it says so: a booking of
    /// another patient then answers as unknown, so ids cannot be probed.
    #[serde(default)]
    pub patient_id: Option<Uuid>,
}

/// Wrong pick-up codes a booking takes before check-in with a code locks:
/// enough for a patient's typos, a 1-in-200 000 chance for a guesser.
pub const MAX_WRONG_PICKUP_CODES: i16 = 5;

/// The booking, row-locked in the caller's transaction; another hospital's
/// id is not found.
pub(crate) async fn locked<C: jyt_db::deadpool_postgres::GenericClient>(
    tx: &C,
    state: &AppState,
    booking: &BookingRef,
) -> Result<StoredBooking, SlotError> {
    if booking.hospital != state.hospital {
        return Err(SlotError::BookingNotFound(booking.to_string()));
    }
    queries::get_booking_for_update(tx, &state.hospital, booking.id)
        .await?
        .ok_or_else(|| SlotError::BookingNotFound(booking.to_string()))
}

/// Why a payment was not taken (the confirmation matched no row): read
/// with the row locked, inside the payment's transaction. A payment again
/// with the same reference answers the confirmed booking.
async fn payment_refused(
    client: &jyt_db::deadpool_postgres::Object,
    state: &AppState,
    booking: &BookingRef,
    req: &ConfirmRequest,
    reference: &str,
) -> Result<StoredBooking, SlotError> {
    let current = locked(client, state, booking).await?;
    if let Some(amount) = req.amount_fen
        && amount != current.booking.fee_fen.0
    {
        return Err(jyt_web::RequestError::invalid(
            "amount_fen",
            format!("must be the booking's fee, {} fen", current.booking.fee_fen.0),
        )
        .into());
    }
    match current.booking.status {
        BookingStatus::Confirmed | BookingStatus::CheckedIn | BookingStatus::Completed
            if current.payment_reference.as_deref() == Some(reference) =>
        {
            Ok(current)
        }
        BookingStatus::Confirmed | BookingStatus::CheckedIn | BookingStatus::Completed => {
            Err(SlotError::AlreadyConfirmed)
        }
        // Held, but its deadline has passed: the sweeper will expire it.
        BookingStatus::Held | BookingStatus::Expired => Err(SlotError::HoldExpired),
        other => Err(SlotError::BookingNotHeld(other)),
    }
}

/// Pay a held booking. Paying twice with the same reference answers the
/// confirmed booking again; a payment after the hold expired is refused
/// (the channel refunds it).
pub async fn confirm(
    state: &AppState,
    booking: &BookingRef,
    req: &ConfirmRequest,
) -> Result<StoredBooking, SlotError> {
    let reference = req.payment_reference.trim();
    if reference.is_empty() || reference.len() > 64 {
        return Err(jyt_web::RequestError::invalid("payment_reference", "must be 1 to 64 characters").into());
    }
    if booking.hospital != state.hospital {
        return Err(SlotError::BookingNotFound(booking.to_string()));
    }
    // The usual case in one statement: a held booking, in time, of this
    // fee, confirmed with its event (built by PostgreSQL from the row,
    // `queries::CONFIRM_PAYMENTS_WITH_EVENTS`), in the same statement and
    // commit as the other payments that arrived meanwhile
    // (`booking::writer`). Only when it is not so is the row read, locked
    // in a transaction, to say why.
    let payment = queries::PaymentToConfirm {
        id: booking.id,
        reference: reference.to_owned(),
        method: req.payment_method.as_str(),
        amount_fen: req.amount_fen,
        now: state.clock.now(),
        event_id: uuid::Uuid::now_v7(),
    };
    let confirmed = match state.payments.write(state, payment).await {
        Err(WriteError::Unique(c)) if c == queries::PAYMENT_REFERENCE_TAKEN => {
            return Err(SlotError::PaymentReferenceUsed);
        }
        Err(WriteError::Unique(c)) => {
            return Err(SlotError::Unexpected(anyhow::anyhow!(
                "a payment's confirmation broke {c}"
            )));
        }
        Err(WriteError::Other(e)) => return Err(e),
        Ok(confirmed) => confirmed,
    };
    let Some(stored) = confirmed else {
        let client = state.pool.get().await?;
        let (client, refused) = jyt_db::Begun::begin_with(client, async |c| {
            Ok::<_, SlotError>(payment_refused(c, state, booking, req, reference).await)
        })
        .await?;
        client.roll_back().await;
        return refused;
    };
    // The writer has dropped the hold from the expiry index (`Payments`).
    state.relay.wake();
    Ok(stored)
}

/// The patient cancels before the deadline; a paid booking asks for its refund.
pub async fn cancel(
    state: &AppState,
    booking: &BookingRef,
    req: &CancelRequest,
) -> Result<StoredBooking, SlotError> {
    let now = state.clock.now();
    if booking.hospital != state.hospital {
        return Err(SlotError::BookingNotFound(booking.to_string()));
    }
    let mut client = state.pool.get().await?;
    // The usual case in one statement: the patient's own booking, held or
    // confirmed, before its deadline, cancelled with its events
    // (`queries::CANCEL_WITH_EVENTS`, the decision below as SQL). Only
    // when it is not so is the row read, locked, to say why.
    let first_cancellable = state.policy.get().first_cancellable_visit(now);
    if let Some(freed) = queries::cancel_with_events(
        &client,
        &state.hospital,
        booking.id,
        req.patient_id,
        now,
        first_cancellable,
    )
    .await?
    {
        drop(client);
        give_back(state, &freed.stored, Some(freed.line_waiting)).await;
        state.relay.wake();
        return Ok(freed.stored);
    }
    let tx = client.transaction().await?;
    let current = locked(&tx, state, booking).await?;
    if current.booking.patient_id != req.patient_id {
        // Do not reveal whose booking it is.
        return Err(SlotError::BookingNotFound(booking.to_string()));
    }
    if !matches!(
        current.booking.status,
        BookingStatus::Held | BookingStatus::Confirmed
    ) {
        return Err(SlotError::BookingNotCancellable(current.booking.status));
    }
    let deadline = state.policy.get().cancel_deadline(current.booking.visit_date);
    if now > deadline {
        return Err(SlotError::CancellationClosed(deadline));
    }
    let stored = queries::transition(
        &tx,
        &state.hospital,
        booking.id,
        &["held", "confirmed"],
        "cancelled",
        now,
    )
    .await?
    .ok_or_else(|| SlotError::BookingNotFound(booking.to_string()))?;
    events::append(&tx, EventKind::Cancelled, &stored.booking, serde_json::json!({})).await?;
    if let Some(reference) = &current.payment_reference {
        events::append(
            &tx,
            EventKind::RefundRequested,
            &stored.booking,
            serde_json::json!({ "payment_reference": reference, "amount_fen": stored.booking.fee_fen }),
        )
        .await?;
    }
    tx.commit().await?;
    // give_back asks the pool for connections of its own: holding this one
    // meanwhile lets concurrent cancellations take the whole pool and wait
    // on each other until the pool's timeout (found by the peak-day load).
    drop(client);
    give_back(state, &stored, None).await;
    state.relay.wake();
    Ok(stored)
}

/// 取号: within the check-in window, with the pick-up code; answers the
/// queue number. Every wrong code is counted; at
/// [`MAX_WRONG_PICKUP_CODES`] check-in with a code is locked for the rest
/// of the booking's segment (its check-in window closes with the segment
/// anyway). The hospital's desk can still check the patient in after
/// seeing them, without a code (`federation::visits::arrive`).
pub async fn check_in(
    state: &AppState,
    booking: &BookingRef,
    req: &CheckInRequest,
) -> Result<StoredBooking, SlotError> {
    let now = state.clock.now();
    if booking.hospital != state.hospital {
        return Err(SlotError::BookingNotFound(booking.to_string()));
    }
    // The usual case in one statement: the right code, in the window, a
    // confirmed booking of this patient, checked in with its queue number
    // and event (`queries::CHECK_INS_IF_DUE`, the decision below as SQL),
    // in the same statement and commit as the other check-ins that arrived
    // meanwhile (`booking::writer`).
    let check_in = queries::CheckInToMake {
        id: booking.id,
        pickup_code: req.pickup_code.clone(),
        patient: req.patient_id,
        now,
        event_id: uuid::Uuid::now_v7(),
    };
    match state.check_ins.write(state, check_in).await {
        Ok(Some(stored)) => {
            state.relay.wake();
            return Ok(stored);
        }
        Ok(None) => {}
        Err(WriteError::Other(e)) => return Err(e),
        Err(WriteError::Unique(c)) => {
            return Err(SlotError::Unexpected(anyhow::anyhow!("a check-in broke {c}")));
        }
    }
    let client = state.pool.get().await?;
    // Otherwise, to say why (or to count a wrong code), two round trips:
    // `BEGIN` goes with the locked read; the check-in, its event and
    // `COMMIT` go together. The schedule's queue counter row, which every
    // arrival at the schedule waits for, is then locked for that one flight
    // only. Every exit before the commit rolls back, and a request
    // cancelled in between closes the connection (`Begun`).
    let (client, current) =
        jyt_db::Begun::begin_with(client, async |c| locked(c, state, booking).await).await?;
    match check_in_decision(state, booking, req, &current, now) {
        CheckIn::Refuse(e) => {
            client.roll_back().await;
            Err(e)
        }
        CheckIn::AlreadyIn => {
            client.roll_back().await;
            Ok(current)
        }
        CheckIn::WrongCode => {
            // Committed although the request fails: rolled back, every
            // guess would be free.
            let failures = client
                .commit_with(async |c| queries::count_wrong_pickup_code(c, booking.id).await)
                .await?;
            let attempts_left = MAX_WRONG_PICKUP_CODES.saturating_sub(failures);
            Err(match u32::try_from(attempts_left) {
                Ok(left) if left > 0 => SlotError::WrongPickupCode { attempts_left: left },
                _ => SlotError::PickupLocked,
            })
        }
        CheckIn::Go => {
            // The event is known beforehand: a check-in changes only the
            // status of what an event carries. It is written only if the
            // booking is checked in by then (`queries::append_if_checked_in`).
            let mut checked_in = current.booking.clone();
            checked_in.status = BookingStatus::CheckedIn;
            let payload = events::payload(&checked_in, serde_json::json!({}));
            let aggregate_id = checked_in.booking_id.to_string();
            // Prepared first, so that the three leave in this order.
            client.prepare_cached(&queries::CHECK_IN_CONFIRMED).await?;
            client.prepare_cached(queries::APPEND_IF_CHECKED_IN).await?;
            let schedule = current.booking.schedule_id;
            let stored = client
                .commit_with(async |c| {
                    let (stored, _) = futures::future::try_join(
                        queries::check_in(c, &state.hospital, booking.id, schedule, now),
                        queries::append_if_checked_in(c, booking.id, &aggregate_id, &payload),
                    )
                    .await?;
                    Ok::<_, jyt_db::tokio_postgres::Error>(stored)
                })
                .await?;
            state.relay.wake();
            // Under the row lock the booking was confirmed, so the check-in
            // matched; were it not, neither it nor its event was written.
            stored.ok_or_else(|| SlotError::BookingNotFound(booking.to_string()))
        }
    }
}

/// What a check-in does with the booking it read (locked).
enum CheckIn {
    Refuse(SlotError),
    /// Checked in already: the same answer again.
    AlreadyIn,
    /// Count the wrong code, commit, and refuse.
    WrongCode,
    Go,
}

fn check_in_decision(
    state: &AppState,
    booking: &BookingRef,
    req: &CheckInRequest,
    current: &StoredBooking,
    now: DateTime<Utc>,
) -> CheckIn {
    if req
        .patient_id
        .is_some_and(|patient| patient != current.booking.patient_id)
    {
        // Exactly an unknown booking's answer, and no guess counted: the
        // caller learns nothing about the booking, not even that it exists.
        return CheckIn::Refuse(SlotError::BookingNotFound(booking.to_string()));
    }
    if current.pickup_failures >= MAX_WRONG_PICKUP_CODES {
        // Checked before the code: once locked, the right code is refused
        // too, or the lock would only slow a guesser down.
        return CheckIn::Refuse(SlotError::PickupLocked);
    }
    if current.booking.pickup_code != req.pickup_code {
        return CheckIn::WrongCode;
    }
    match current.booking.status {
        BookingStatus::CheckedIn => return CheckIn::AlreadyIn,
        BookingStatus::Confirmed => {}
        other => return CheckIn::Refuse(SlotError::NotCheckInable(other)),
    }
    let opens = current.segment_starts_at
        - TimeDelta::minutes(i64::from(state.policy.get().checkin_opens_minutes_before));
    if now < opens || now > current.segment_ends_at {
        return CheckIn::Refuse(SlotError::CheckInClosed {
            opens,
            closes: current.segment_ends_at,
        });
    }
    CheckIn::Go
}

/// Give a released booking's seat back to Redis (after its commit): to the
/// schedule's waitlist if anyone waits (and hand it to the head of the
/// line), else on open sale. `line_waiting`: whether anyone does, as the
/// statement that freed the seat read it; `None`: asked here.
async fn give_back(state: &AppState, stored: &StoredBooking, line_waiting: Option<bool>) {
    let result = async {
        let waiting = match line_waiting {
            Some(waiting) => waiting,
            None => super::waitlist::has_waiting(state, stored.booking.schedule_id).await?,
        };
        let goes = if waiting {
            SeatGoes::Waitlist
        } else {
            SeatGoes::OnSale
        };
        let info = segment_info(state, stored.segment_id).await?;
        let keys = state.keys.segment(&info);
        let held = HeldSeat {
            patient: stored.booking.patient_id,
            booking_id: stored.booking.booking_id.id,
        };
        state
            .scripts
            .release(
                &state.redis,
                &keys,
                &state.keys.patient_day(held.patient, info.visit_date),
                &state.keys.no_idempotency(),
                &super::referral::key_of(state, stored.booking.referral_id.as_deref()),
                &held,
                goes,
            )
            .await?;
        Ok::<bool, SlotError>(waiting)
    }
    .await;
    if let Ok(true) = result {
        // The seat is back in Redis, kept for the line: its pass serves it
        // in a task, not in this request.
        super::waitlist::promote_freed(state, stored.booking.schedule_id);
    }
    if let Err(e) = result {
        // PostgreSQL is right either way; the seat is still counted as taken
        // in Redis until the reconciler or a rebuild.
        tracing::error!(error = %e, booking = %stored.booking.booking_id, "could not give a seat back to Redis");
    }
}

/// Expire unpaid holds whose deadline has passed; returns how many.
pub async fn expire_holds(state: &AppState) -> Result<usize, SlotError> {
    let now = state.clock.now();
    let mut conn = state.redis.clone();
    let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(state.keys.holds())
        .arg("-inf")
        .arg(now.timestamp())
        .arg("LIMIT")
        .arg(0)
        .arg(500)
        .query_async(&mut conn)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    // Every lapsed hold of the pass, each with its event, in one statement;
    // one paid or cancelled meanwhile is left as it is.
    let ids: Vec<Uuid> = due.iter().filter_map(|m| Uuid::parse_str(m).ok()).collect();
    let expired = {
        let client = state.pool.get().await?;
        queries::expire_holds_with_events(&client, &state.hospital, &ids, now).await?
    };
    // Each seat back to Redis (or kept for the schedule's line, which the
    // statement answered), with no connection held: a promotion asks the
    // pool for its own.
    for freed in &expired {
        give_back(state, &freed.stored, Some(freed.line_waiting)).await;
    }
    if !expired.is_empty() {
        state.relay.wake();
    }
    // Every entry read leaves the index: expired now, or paid, cancelled
    // or not a booking's id, nothing left for the sweep to do.
    redis::cmd("ZREM")
        .arg(state.keys.holds())
        .arg(&due)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(expired.len())
}

/// Mark confirmed bookings not checked in by their segment's end plus the
/// grace period as no-shows (card-issuing counts them).
pub async fn mark_no_shows(state: &AppState) -> Result<usize, SlotError> {
    mark_no_shows_since(state, None).await
}

/// [`mark_no_shows`] over the segments that ended in the last day only: the
/// sweeper's every-second pass (the whole history is its slow tick's).
pub async fn mark_recent_no_shows(state: &AppState) -> Result<usize, SlotError> {
    mark_no_shows_since(state, Some(NO_SHOW_RECENT)).await
}

/// How far back the every-second no-show sweep looks; the whole history is
/// swept on the slow tick (a sweeper that was stopped, or a clock moved
/// by more than this, is caught up there).
const NO_SHOW_RECENT: TimeDelta = TimeDelta::days(1);

/// [`mark_no_shows`] over the segments that ended since `ended_since`
/// (before the grace cutoff), or over all of them.
async fn mark_no_shows_since(state: &AppState, ended_since: Option<TimeDelta>) -> Result<usize, SlotError> {
    let now = state.clock.now();
    let cutoff = now - TimeDelta::minutes(i64::from(state.policy.get().no_show_grace_minutes));
    let client = state.pool.get().await?;
    let overdue = queries::overdue_arrivals(&client, cutoff, ended_since.map(|d| cutoff - d), 500).await?;
    if overdue.is_empty() {
        return Ok(0);
    }
    // All of the pass's no-shows, each with its event, in one statement.
    let marked = queries::mark_no_shows_with_events(&client, &state.hospital, &overdue, now)
        .await?
        .len();
    if marked > 0 {
        state.relay.wake();
    }
    Ok(marked)
}

/// The outbox's lag, for `/metrics`: events written but not yet relayed.
async fn measure_outbox(state: &AppState) -> Result<(), SlotError> {
    let client = state.pool.get().await?;
    let row = client.query_one_cached(jyt_events::UNRELAYED_SQL, &[]).await?;
    state.metrics.outbox(row.get(0), row.get(1));
    Ok(())
}

/// The sweepers, every second until the process ends.
pub async fn run_sweepers(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slow_tick: u64 = 1;
    loop {
        tick.tick().await;
        // Another replica may have changed the booking policy.
        if let Err(e) = crate::booking_policy::refresh(&state).await {
            tracing::warn!(error = %e, "could not re-read the booking policy");
        }
        match expire_holds(&state).await {
            Ok(n) => state.metrics.hold_expired(n),
            Err(e) => tracing::warn!(error = %e, "hold expiry sweep failed"),
        }
        if let Err(e) = measure_outbox(&state).await {
            tracing::warn!(error = %e, "could not measure the outbox");
        }
        // Every second the segments that ended in the last day (an index
        // range); the whole history on the first tick and every 15th.
        let recent_only = (slow_tick % 15 != 1).then_some(NO_SHOW_RECENT);
        if let Err(e) = mark_no_shows_since(&state, recent_only).await {
            tracing::warn!(error = %e, "no-show sweep failed");
        }
        // A lottery whose window closed is drawn before anything else
        // may take its seats.
        if let Err(e) = crate::lottery::draw::draw_due(&state).await {
            tracing::warn!(error = %e, "lottery draw failed; tried again next tick");
        }
        if let Err(e) = super::waitlist::promote_all(&state).await {
            tracing::warn!(error = %e, "waitlist promotion sweep failed");
        }
        if let Err(e) = crate::precise::seat::seat_waiting(&state, None).await {
            tracing::warn!(error = %e, "precise-appointment seating sweep failed");
        }
        if let Err(e) = state.tally.flush(&state, false).await {
            tracing::warn!(error = %e, "could not record booking attempt tallies");
        }
        // Less often: orphan holds, and a Redis that lost our state.
        if slow_tick.is_multiple_of(15) {
            if let Err(e) = super::cache::check_generation(&state).await {
                tracing::warn!(error = %e, "slot cache check failed");
            }
            if let Err(e) = super::cache::reconcile(&state).await {
                tracing::warn!(error = %e, "orphan hold reconciliation failed");
            }
        }
        slow_tick = slow_tick.wrapping_add(1);
    }
}
