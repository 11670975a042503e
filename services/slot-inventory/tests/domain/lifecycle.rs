//! Holds, payment, expiry, cancellation, check-in and no-shows, driven by
//! the clock.

use jyt_cache::redis;
use jyt_domain::{BookingStatus, Channel};
use jyt_web::RequestError;
use slot_inventory::booking::lifecycle::{
    self, CancelRequest, CheckInRequest, ConfirmRequest, PaymentMethod,
};
use slot_inventory::error::SlotError;
use uuid::Uuid;

use crate::helpers::{ALL_COMMON, Hospital, beijing, code, sched};

/// A check-in with the booking's pick-up code, by its own patient.
fn by_its_patient(b: &slot_inventory::booking::Booking) -> CheckInRequest {
    CheckInRequest {
        pickup_code: b.pickup_code.clone(),
        patient_id: Some(b.patient_id),
    }
}

fn pay(reference: &str) -> ConfirmRequest {
    ConfirmRequest {
        payment_reference: reference.to_owned(),
        payment_method: PaymentMethod::SelfPay,
        amount_fen: None,
    }
}

#[tokio::test]
async fn an_unpaid_hold_expires_at_its_deadline_and_the_seat_returns() {
    let h = Hospital::start(beijing(2, 9, 0), 1, &[]).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let held = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    assert_eq!(held.status, BookingStatus::Held);
    assert_eq!(held.hold_deadline.unwrap(), beijing(2, 9, 10));
    assert_eq!(
        code(&h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap_err()),
        "SLOT_SOLD_OUT"
    );

    // Nine minutes on, the sweeper leaves it alone.
    h.advance(9);
    lifecycle::expire_holds(&h.state).await.unwrap();
    assert_eq!(h.booking(&held.booking_id).await.status, BookingStatus::Held);

    h.advance(2);
    assert_eq!(lifecycle::expire_holds(&h.state).await.unwrap(), 1);
    assert_eq!(h.booking(&held.booking_id).await.status, BookingStatus::Expired);
    assert_eq!(h.redis_free(&slot).await, 1);
    let late = lifecycle::confirm(&h.state, &held.booking_id, &pay("tx-late")).await;
    assert_eq!(code(&late.unwrap_err()), "HOLD_EXPIRED");
    // The seat is for sale again.
    h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    assert_eq!(
        h.event_types().await,
        ["booking.held", "booking.expired", "booking.held"]
    );
}

/// Each of a sweep's `bookings` is now `status`, with its one `event_type`
/// event, the payload Rust builds from the booking as it is now, and all
/// were written by one commit.
async fn assert_swept_in_one_commit(
    h: &Hospital,
    bookings: &[slot_inventory::booking::Booking],
    status: BookingStatus,
    event_type: &str,
) {
    let mut swept = Vec::new();
    for b in bookings {
        let now = h.booking(&b.booking_id).await;
        assert_eq!(now.status, status);
        let built = slot_inventory::booking::events::payload(&now, serde_json::json!({}));
        assert_eq!(h.events_of(event_type, b).await, [built], "its one event");
        swept.push(now);
    }
    let swept: Vec<&slot_inventory::booking::Booking> = swept.iter().collect();
    assert_eq!(h.last_writers(&swept).await, 1, "one commit for them all");
}

/// A sweep's lapsed holds expire in one statement and one commit, each
/// with its own event (the payload Rust builds from the same booking),
/// each seat back for sale, and the expiry index emptied; a hold paid in
/// time is left confirmed.
#[tokio::test]
async fn a_sweeps_lapsed_holds_expire_in_one_commit_each_with_its_own_event_and_seat() {
    let h = Hospital::start(beijing(2, 9, 0), 5, &[]).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let mut lapsing = Vec::new();
    for _ in 0..4 {
        lapsing.push(h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap());
    }
    let paid = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    lifecycle::confirm(&h.state, &paid.booking_id, &pay("tx-in-time"))
        .await
        .unwrap();
    assert_eq!(h.redis_free(&slot).await, 0);

    h.advance(11);
    assert_eq!(lifecycle::expire_holds(&h.state).await.unwrap(), 4);
    assert_swept_in_one_commit(&h, &lapsing, BookingStatus::Expired, "booking.expired").await;
    assert_eq!(h.booking(&paid.booking_id).await.status, BookingStatus::Confirmed);
    assert!(h.events_of("booking.expired", &paid).await.is_empty());
    assert_eq!(h.redis_free(&slot).await, 4, "the four seats are for sale again");
    assert!(h.expiry_index().await.is_empty());
    h.assert_consistent(&slot).await;
    // Swept again: nothing to expire, no event twice.
    assert_eq!(lifecycle::expire_holds(&h.state).await.unwrap(), 0);
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE event_type = 'booking.expired'")
            .await,
        4
    );
}

/// A cancellation's events are written by PostgreSQL in its one statement
/// (`queries::CANCEL_WITH_EVENTS`): each must be the payload Rust builds
/// from the same booking, the refund request after the cancellation and
/// only for a paid booking. At its deadline to the second a booking is
/// still cancelled; a stranger, a cancelled booking and a second past the
/// deadline are refused as before, with nothing written.
#[tokio::test]
async fn a_cancellations_events_built_by_postgresql_are_the_payloads_rust_builds() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let paid = h.book_expert(Channel::Wechat).await;
    lifecycle::confirm(&h.state, &paid.booking_id, &pay("tx-cancelled"))
        .await
        .unwrap();
    let held = h.book_expert(Channel::Kiosk).await;
    let late = h.book_expert(Channel::Kiosk).await;
    let by = |b: &slot_inventory::booking::Booking| CancelRequest {
        patient_id: b.patient_id,
    };
    let stranger = CancelRequest {
        patient_id: Uuid::new_v4(),
    };
    let refused = lifecycle::cancel(&h.state, &held.booking_id, &stranger).await;
    assert_eq!(code(&refused.unwrap_err()), "BOOKING_NOT_FOUND");

    // The deadline is the day before the visit at 15:00.
    h.clock.set(beijing(1, 15, 0));
    for b in [&paid, &held] {
        let cancelled = lifecycle::cancel(&h.state, &b.booking_id, &by(b)).await.unwrap();
        assert_eq!(cancelled.booking.status, BookingStatus::Cancelled);
        let now = h.booking(&b.booking_id).await;
        assert_eq!(now, cancelled.booking);
        let built = slot_inventory::booking::events::payload(&now, serde_json::json!({}));
        assert_eq!(h.events_of("booking.cancelled", b).await, [built]);
    }
    let now = h.booking(&paid.booking_id).await;
    let refund = slot_inventory::booking::events::payload(
        &now,
        serde_json::json!({ "payment_reference": "tx-cancelled", "amount_fen": now.fee_fen }),
    );
    assert_eq!(h.events_of("booking.refund_requested", &paid).await, [refund]);
    assert!(h.events_of("booking.refund_requested", &held).await.is_empty());
    let order: Vec<String> = h
        .column(&format!(
            "SELECT event_type FROM outbox WHERE aggregate_id = '{}' ORDER BY seq",
            paid.booking_id
        ))
        .await;
    assert_eq!(
        order,
        [
            "booking.held",
            "booking.confirmed",
            "booking.cancelled",
            "booking.refund_requested"
        ]
    );

    let again = lifecycle::cancel(&h.state, &paid.booking_id, &by(&paid)).await;
    assert_eq!(code(&again.unwrap_err()), "BOOKING_NOT_CANCELLABLE");
    h.clock.set(beijing(1, 15, 0) + chrono::TimeDelta::seconds(1));
    let closed = lifecycle::cancel(&h.state, &late.booking_id, &by(&late)).await;
    assert_eq!(code(&closed.unwrap_err()), "CANCELLATION_CLOSED");
    assert_eq!(h.booking(&late.booking_id).await.status, BookingStatus::Held);
    assert!(h.events_of("booking.cancelled", &late).await.is_empty());
}

#[tokio::test]
async fn paying_confirms_once_per_reference() {
    let h = Hospital::start(beijing(2, 9, 0), 2, &[]).await;
    let held = h.book_expert(Channel::Kiosk).await;
    let paid = lifecycle::confirm(&h.state, &held.booking_id, &pay("tx-1"))
        .await
        .unwrap();
    assert_eq!(paid.booking.status, BookingStatus::Confirmed);
    assert_eq!(paid.booking.payment_method.as_deref(), Some("self_pay"));
    let again = lifecycle::confirm(&h.state, &held.booking_id, &pay("tx-1"))
        .await
        .unwrap();
    assert_eq!(again.booking, paid.booking);
    let other = lifecycle::confirm(&h.state, &held.booking_id, &pay("tx-2")).await;
    assert_eq!(code(&other.unwrap_err()), "ALREADY_CONFIRMED");
    // A paid booking is not expired by the sweeper.
    h.advance(30);
    lifecycle::expire_holds(&h.state).await.unwrap();
    assert_eq!(h.booking(&held.booking_id).await.status, BookingStatus::Confirmed);
}

/// A payment's `booking.confirmed` event is written by PostgreSQL in the
/// payment's one statement (`queries::CONFIRM_PAYMENT_WITH_EVENT`); it must
/// be the payload `events::payload` builds in Rust from the same booking,
/// as every other `booking.*` event is: with and without an owning app,
/// each payment method, and a segment start with no fraction of a second,
/// a fraction in milliseconds and one in microseconds.
#[tokio::test]
async fn a_payment_s_event_built_by_postgresql_is_the_payload_rust_builds() {
    let h = Hospital::start(beijing(2, 9, 0), 1, &[]).await;
    let cases = [
        (0, None, PaymentMethod::SelfPay, "0"),
        (1, Some("wechatapp"), PaymentMethod::Insurance, "0.25"),
        (2, Some("kioskfleet"), PaymentMethod::SelfPay, "0.123456"),
        (3, None, PaymentMethod::SelfPay, "0.000001"),
    ];
    let client = h.state.pool.get().await.unwrap();
    for (segment, app, method, fraction) in cases {
        let slot = h.segment(sched::CARDIO_EXPERT_AM, segment);
        client
            .execute(
                "UPDATE segments SET starts_at = starts_at + make_interval(secs => $2::float8) WHERE id = $1",
                &[&slot.id, &fraction.parse::<f64>().unwrap()],
            )
            .await
            .unwrap();
        let held = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
        client
            .execute(
                "UPDATE bookings SET owner_app = $2::text WHERE id = $1",
                &[&held.booking_id.id, &app],
            )
            .await
            .unwrap();
        let reference = format!("tx-{segment}");
        let req = ConfirmRequest {
            payment_reference: reference.clone(),
            payment_method: method,
            amount_fen: Some(held.fee_fen.0),
        };
        let paid = lifecycle::confirm(&h.state, &held.booking_id, &req)
            .await
            .unwrap();
        let (aggregate, written): (String, serde_json::Value) = client
            .query_one(
                "SELECT aggregate_id, payload FROM outbox
                  WHERE event_type = 'booking.confirmed' AND payload->>'booking_id' = $1",
                &[&held.booking_id.to_string()],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(aggregate, held.booking_id.to_string());
        let built = slot_inventory::booking::events::payload(
            &paid.booking,
            serde_json::json!({ "payment_reference": reference }),
        );
        assert_eq!(written, built, "segment {segment}, start + {fraction} s");
        assert_eq!(written["owner_app"], serde_json::json!(app));
    }
    // One event per payment, and no other.
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE event_type = 'booking.confirmed'")
            .await,
        4
    );
}

/// The gateway sends what the channel collected instead of reading the fee
/// first: another amount is refused naming `amount_fen` and the fee, the
/// booking stays held, and the right amount then confirms it.
#[tokio::test]
async fn a_payment_of_another_amount_is_refused_naming_the_field_and_leaves_the_hold() {
    let h = Hospital::start(beijing(2, 9, 0), 2, &[]).await;
    let held = h.book_expert(Channel::Wechat).await;
    let fee = held.fee_fen.0;
    let with_amount = |amount: i64| ConfirmRequest {
        amount_fen: Some(amount),
        ..pay("tx-amount")
    };
    let wrong = lifecycle::confirm(&h.state, &held.booking_id, &with_amount(fee + 1))
        .await
        .unwrap_err();
    match &wrong {
        SlotError::Request(RequestError::InvalidField { field, reason }) => {
            assert_eq!(field, "amount_fen");
            assert!(reason.contains(&fee.to_string()), "{reason}");
        }
        other => panic!("expected 400 amount_fen, got {other:?}"),
    }
    assert_eq!(h.booking(&held.booking_id).await.status, BookingStatus::Held);
    assert_eq!(h.event_types().await, ["booking.held"], "nothing written");

    let paid = lifecycle::confirm(&h.state, &held.booking_id, &with_amount(fee))
        .await
        .unwrap();
    assert_eq!(paid.booking.status, BookingStatus::Confirmed);
    assert_eq!(paid.payment_reference.as_deref(), Some("tx-amount"));
    // Delivered again with its amount: the same booking, no second event.
    let again = lifecycle::confirm(&h.state, &held.booking_id, &with_amount(fee))
        .await
        .unwrap();
    assert_eq!(again.booking, paid.booking);
    assert_eq!(h.event_types().await, ["booking.held", "booking.confirmed"]);
}

#[tokio::test]
async fn cancelling_before_the_deadline_refunds_and_after_it_is_refused() {
    let h = Hospital::start(beijing(2, 9, 0), 2, &[]).await;
    let patient = Uuid::new_v4();
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let b = h.book(&slot, patient, Channel::Wechat).await.unwrap();
    lifecycle::confirm(&h.state, &b.booking_id, &pay("tx-c"))
        .await
        .unwrap();
    // Someone else cannot cancel it (and is not told whose it is).
    let stranger = lifecycle::cancel(
        &h.state,
        &b.booking_id,
        &CancelRequest {
            patient_id: Uuid::new_v4(),
        },
    )
    .await;
    assert_eq!(code(&stranger.unwrap_err()), "BOOKING_NOT_FOUND");
    let cancelled = lifecycle::cancel(&h.state, &b.booking_id, &CancelRequest { patient_id: patient })
        .await
        .unwrap();
    assert_eq!(cancelled.booking.status, BookingStatus::Cancelled);
    assert_eq!(
        h.event_types().await,
        [
            "booking.held",
            "booking.confirmed",
            "booking.cancelled",
            "booking.refund_requested"
        ]
    );
    assert_eq!(h.redis_free(&slot).await, 2);
    // The patient's day is free again: they may book this schedule anew.
    let again = h.book(&slot, patient, Channel::Wechat).await.unwrap();

    // Cancellation closes the day before the visit at 15:00.
    h.clock.set(beijing(1, 15, 1));
    let late = lifecycle::cancel(
        &h.state,
        &again.booking_id,
        &CancelRequest { patient_id: patient },
    )
    .await;
    let err = late.unwrap_err();
    assert_eq!(code(&err), "CANCELLATION_CLOSED");
    assert!(err.to_string().contains(&beijing(1, 15, 0).to_string()), "{err}");
}

/// A sweep's no-shows are marked in one statement and one commit, each
/// with its own event, the payload Rust builds from the same booking; a
/// booking checked in, or one whose segment is not yet past its grace, is
/// left as it is.
#[tokio::test]
async fn a_sweeps_no_shows_are_one_commit_each_with_its_own_event() {
    let h = Hospital::start(beijing(2, 9, 0), 6, &[]).await;
    // CT is free: confirmed at once. Its first segment is 08:00-08:30,
    // its second 08:30-09:00.
    let first = h.segment(sched::CT_AM, 0);
    let mut absent = Vec::new();
    for _ in 0..4 {
        absent.push(h.book(&first, Uuid::new_v4(), Channel::Wechat).await.unwrap());
    }
    let came = h.book(&first, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    let later = h
        .book(&h.segment(sched::CT_AM, 1), Uuid::new_v4(), Channel::Kiosk)
        .await
        .unwrap();
    h.clock.set(beijing(0, 8, 10));
    let checked_in = CheckInRequest {
        pickup_code: came.pickup_code.clone(),
        patient_id: None,
    };
    lifecycle::check_in(&h.state, &came.booking_id, &checked_in)
        .await
        .unwrap();

    // Past the first segment's end and grace (09:00), not the second's.
    h.clock.set(beijing(0, 9, 1));
    assert_eq!(lifecycle::mark_no_shows(&h.state).await.unwrap(), 4);
    assert_swept_in_one_commit(&h, &absent, BookingStatus::NoShow, "booking.no_show").await;
    assert_eq!(h.booking(&came.booking_id).await.status, BookingStatus::CheckedIn);
    assert_eq!(
        h.booking(&later.booking_id).await.status,
        BookingStatus::Confirmed
    );
    assert!(h.events_of("booking.no_show", &came).await.is_empty());
    assert!(h.events_of("booking.no_show", &later).await.is_empty());
    // Swept again: nothing more to mark, no event twice.
    assert_eq!(lifecycle::mark_no_shows(&h.state).await.unwrap(), 0);
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE event_type = 'booking.no_show'")
            .await,
        4
    );
}

#[tokio::test]
async fn check_in_within_the_window_gives_queue_numbers_and_absent_patients_become_no_shows() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    // CT is free: confirmed at once. Its first segment is 08:00-08:30.
    let slot = h.segment(sched::CT_AM, 0);
    let first = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    let second = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    let absent = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    let code_of = |b: &slot_inventory::booking::Booking| CheckInRequest {
        pickup_code: b.pickup_code.clone(),
        patient_id: None,
    };

    // The window opens an hour before the segment.
    h.clock.set(beijing(0, 6, 59));
    let early = lifecycle::check_in(&h.state, &second.booking_id, &code_of(&second)).await;
    assert_eq!(code(&early.unwrap_err()), "CHECK_IN_CLOSED");
    h.clock.set(beijing(0, 7, 30));
    let wrong = lifecycle::check_in(
        &h.state,
        &second.booking_id,
        &CheckInRequest {
            pickup_code: "not-it".into(),
            patient_id: None,
        },
    )
    .await;
    assert_eq!(code(&wrong.unwrap_err()), "WRONG_PICKUP_CODE");
    let q1 = lifecycle::check_in(&h.state, &second.booking_id, &code_of(&second))
        .await
        .unwrap();
    let q2 = lifecycle::check_in(&h.state, &first.booking_id, &code_of(&first))
        .await
        .unwrap();
    assert_eq!(q1.booking.queue_number, Some(1));
    assert_eq!(q2.booking.queue_number, Some(2));
    assert_eq!(q1.booking.status, BookingStatus::CheckedIn);

    // The segment ends at 08:30; with 30 minutes' grace, 09:00 is the line.
    h.clock.set(beijing(0, 8, 59));
    lifecycle::mark_no_shows(&h.state).await.unwrap();
    assert_eq!(
        h.booking(&absent.booking_id).await.status,
        BookingStatus::Confirmed
    );
    h.clock.set(beijing(0, 9, 1));
    assert_eq!(lifecycle::mark_no_shows(&h.state).await.unwrap(), 1);
    assert_eq!(h.booking(&absent.booking_id).await.status, BookingStatus::NoShow);
    assert!(h.event_types().await.contains(&"booking.no_show".to_owned()));

    // The hospital's desk records the arrival late: taken, as a late
    // check-in, after the next patient in the queue.
    h.clock.set(beijing(0, 9, 20));
    let late = slot_inventory::federation::visits::arrive(&h.state, &absent.booking_id)
        .await
        .unwrap();
    assert_eq!(late.booking.status, BookingStatus::CheckedIn);
    assert_eq!(late.booking.queue_number, Some(3));
    let client = h.state.pool.get().await.unwrap();
    let detail: serde_json::Value = client
        .query_one(
            "SELECT payload->'detail' FROM outbox WHERE event_type = 'booking.checked_in'
              ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(detail, serde_json::json!({ "by": "hospital", "late": true }));
}

/// A check-in's `booking.checked_in` event is written by PostgreSQL in the
/// check-in's one statement (`queries::CHECK_IN_IF_DUE`), as
/// `events::payload` builds it from the same booking; the same booking
/// checked in twice at once takes one queue number (its row is locked
/// before the schedule's counter), and the next arrival the next number.
#[tokio::test]
async fn a_check_in_in_one_statement_writes_the_event_rust_builds_and_takes_one_number() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let slot = h.segment(sched::CT_AM, 0);
    let first = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    let next = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    h.clock.set(beijing(0, 7, 30));
    let twice = by_its_patient(&first);
    let (one, two) = tokio::join!(
        lifecycle::check_in(&h.state, &first.booking_id, &twice),
        lifecycle::check_in(&h.state, &first.booking_id, &twice),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.booking.queue_number, Some(1));
    assert_eq!(two.booking.queue_number, Some(1));
    assert_eq!(one.booking.status, BookingStatus::CheckedIn);
    let after = lifecycle::check_in(&h.state, &next.booking_id, &by_its_patient(&next))
        .await
        .unwrap();
    assert_eq!(after.booking.queue_number, Some(2));

    let client = h.state.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT aggregate_id, payload FROM outbox WHERE event_type = 'booking.checked_in' ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "one event per check-in");
    for (row, checked_in) in rows.iter().zip([&one, &after]) {
        assert_eq!(row.get::<_, String>(0), checked_in.booking.booking_id.to_string());
        let built = slot_inventory::booking::events::payload(&checked_in.booking, serde_json::json!({}));
        assert_eq!(row.get::<_, serde_json::Value>(1), built);
    }
}

/// Whether a booking's current row version is heap-only (HOT): written by
/// an update that added no entry to any of the table's indexes. Read from
/// its page with `pageinspect` (`HEAP_ONLY_TUPLE` is bit 0x8000 of
/// `t_infomask2`).
async fn current_version_is_heap_only(h: &Hospital, booking: Uuid) -> bool {
    h.page_reader()
        .await
        .query_one(
            "SELECT (i.t_infomask2 & 32768) <> 0
               FROM bookings b,
                    LATERAL heap_page_items(get_raw_page('bookings', (b.ctid::text::point)[0]::int)) i
              WHERE b.id = $1 AND i.lp = (b.ctid::text::point)[1]::int",
            &[&booking],
        )
        .await
        .unwrap()
        .get(0)
}

/// A payment and a check-in keep the booking's seat, so they change no
/// column an index reads (V17: the partial indexes' predicates read `live`,
/// not the status; V18: the payment references are unique in a table of
/// their own, and no index lists the open holds): PostgreSQL writes each
/// as a heap-only update, with no new entry in the booking's indexes. A
/// cancellation releases the seat, so it does write its entries.
#[tokio::test]
async fn a_payment_and_a_check_in_add_no_index_entry_and_a_cancellation_does() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let held = h.book_expert(Channel::Kiosk).await;
    assert!(!current_version_is_heap_only(&h, held.booking_id.id).await);
    lifecycle::confirm(&h.state, &held.booking_id, &pay("tx-hot"))
        .await
        .unwrap();
    assert!(
        current_version_is_heap_only(&h, held.booking_id.id).await,
        "a payment changes no indexed column: a heap-only version"
    );
    lifecycle::cancel(
        &h.state,
        &held.booking_id,
        &CancelRequest {
            patient_id: held.patient_id,
        },
    )
    .await
    .unwrap();
    assert!(
        !current_version_is_heap_only(&h, held.booking_id.id).await,
        "a cancellation leaves the seat's indexes: a new version with its entries"
    );

    // CT is free: confirmed at once; its first segment's window opens at 07:00.
    let confirmed = h
        .book(&h.segment(sched::CT_AM, 0), Uuid::new_v4(), Channel::Wechat)
        .await
        .unwrap();
    assert!(!current_version_is_heap_only(&h, confirmed.booking_id.id).await);
    h.clock.set(beijing(0, 7, 30));
    let checked_in = lifecycle::check_in(&h.state, &confirmed.booking_id, &by_its_patient(&confirmed))
        .await
        .unwrap();
    assert_eq!(checked_in.booking.status, BookingStatus::CheckedIn);
    assert!(
        current_version_is_heap_only(&h, confirmed.booking_id.id).await,
        "a check-in changes no indexed column: a heap-only version"
    );
}

/// A payment's reference (the channel's transaction id) pays one booking:
/// presented again for another booking, the payment is refused with 409
/// `PAYMENT_REFERENCE_USED` naming the field, and nothing of it is written
/// (the second booking still held, no event, the first untouched). Before
/// V18 the unique index's violation surfaced as a 503.
#[tokio::test]
async fn a_payment_reference_that_paid_one_booking_is_refused_for_another_and_nothing_is_written() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let first = h.book_expert(Channel::Wechat).await;
    let second = h.book_expert(Channel::Wechat).await;
    let paid = lifecycle::confirm(&h.state, &first.booking_id, &pay("tx-once"))
        .await
        .unwrap();
    let events_before = h.event_types().await;

    let refused = lifecycle::confirm(&h.state, &second.booking_id, &pay("tx-once"))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "PAYMENT_REFERENCE_USED");
    let answer = actix_web::ResponseError::error_response(&refused);
    assert_eq!(answer.status(), 409);
    let body = actix_web::body::to_bytes(answer.into_body()).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["field"], "payment_reference", "{problem}");
    assert!(
        !problem.to_string().contains(&first.booking_id.to_string()),
        "the other booking is not named: {problem}"
    );

    assert_eq!(h.booking(&second.booking_id).await.status, BookingStatus::Held);
    assert_eq!(
        h.event_types().await,
        events_before,
        "no event for the refused payment"
    );
    assert_eq!(h.booking(&first.booking_id).await, paid.booking);
    assert_eq!(
        h.count("SELECT count(*) FROM payment_references WHERE reference = 'tx-once'")
            .await,
        1
    );
    // The first booking's own notification delivered again still answers it,
    // and the second booking is paid by its own reference.
    let again = lifecycle::confirm(&h.state, &first.booking_id, &pay("tx-once"))
        .await
        .unwrap();
    assert_eq!(again.booking, paid.booking);
    let own = lifecycle::confirm(&h.state, &second.booking_id, &pay("tx-second"))
        .await
        .unwrap();
    assert_eq!(own.booking.status, BookingStatus::Confirmed);
}

/// Each schedule's queue numbers are counted in a row of their own (V14): arrivals at the
/// same moment, by code and at the desk, still never share a number and
/// leave no gap.
#[tokio::test]
async fn arrivals_at_the_same_moment_take_distinct_queue_numbers_without_gaps() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    // Three segments of CT (08:00, 08:30, 09:00), three seats each, by the
    // channels their pools allow; at 08:05 all three windows are open.
    let mut booked = Vec::new();
    for segment in 0..3 {
        let slot = h.segment(sched::CT_AM, segment);
        for channel in [Channel::Wechat, Channel::Kiosk, Channel::Kiosk] {
            booked.push(h.book(&slot, Uuid::new_v4(), channel).await.unwrap());
        }
    }
    h.clock.set(beijing(0, 8, 5));
    let (by_desk, by_code) = booked.split_at(2);
    let arrivals = by_code.iter().map(|b| async {
        lifecycle::check_in(
            &h.state,
            &b.booking_id,
            &CheckInRequest {
                pickup_code: b.pickup_code.clone(),
                patient_id: None,
            },
        )
        .await
        .unwrap()
        .booking
        .queue_number
    });
    let desk = by_desk.iter().map(|b| async {
        slot_inventory::federation::visits::arrive(&h.state, &b.booking_id)
            .await
            .unwrap()
            .booking
            .queue_number
    });
    let (a, d) = futures::join!(
        futures::future::join_all(arrivals),
        futures::future::join_all(desk)
    );
    let mut numbers: Vec<i32> = a.into_iter().chain(d).map(Option::unwrap).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=9).collect::<Vec<i32>>());
    // Arriving again answers the same number and takes none.
    let again = slot_inventory::federation::visits::arrive(&h.state, &booked[0].booking_id)
        .await
        .unwrap();
    assert!(again.booking.queue_number.is_some_and(|n| (1..=9).contains(&n)));
    let client = h.state.pool.get().await.unwrap();
    let counted: i32 = client
        .query_one(
            "SELECT last_no FROM schedule_queue_numbers WHERE schedule_id = $1",
            &[&h.schedules[sched::CT_AM].schedule_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 9);
}

#[tokio::test]
async fn the_every_second_no_show_sweep_reads_the_last_day_and_the_slow_one_all_of_history() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    // CT is free: confirmed at once. Its first segment is 08:00-08:30.
    let slot = h.segment(sched::CT_AM, 0);
    let lately = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    let long_ago = h
        .book(&h.segment(sched::CT_AM, 1), Uuid::new_v4(), Channel::Kiosk)
        .await
        .unwrap();
    // Neither patient came. The second segment is moved three days back;
    // with the first's grace passed, the every-second sweep marks its
    // patient.
    h.state
        .pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE segments SET starts_at = starts_at - interval '3 days', ends_at = ends_at - interval '3 days'
              WHERE id = $1",
            &[&h.schedules[sched::CT_AM].segment_ids[1]],
        )
        .await
        .unwrap();
    h.clock.set(beijing(0, 9, 1));
    assert_eq!(lifecycle::mark_recent_no_shows(&h.state).await.unwrap(), 1);
    assert_eq!(h.booking(&lately.booking_id).await.status, BookingStatus::NoShow);
    // A segment that ended days ago (a sweeper stopped meanwhile, a clock
    // moved far) is outside its window: the slow sweep marks it.
    assert_eq!(
        h.booking(&long_ago.booking_id).await.status,
        BookingStatus::Confirmed
    );
    assert_eq!(lifecycle::mark_no_shows(&h.state).await.unwrap(), 1);
    assert_eq!(
        h.booking(&long_ago.booking_id).await.status,
        BookingStatus::NoShow
    );
}

/// A statement named by its SQL text is prepared on a connection once and
/// reused (`jyt_db::Prepared`): PostgreSQL parsed and planned every
/// booking read again before (loadtest/README.md, 2026-12-04).
#[tokio::test]
async fn a_booking_read_is_prepared_once_per_connection() {
    let h = Hospital::start(beijing(2, 9, 0), 1, &[]).await;
    let booked = h
        .book(&h.segment(sched::CT_AM, 0), Uuid::new_v4(), Channel::Wechat)
        .await
        .unwrap();
    let client = h.state.pool.get().await.unwrap();
    let prepared = || async {
        client
            .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let read = || async {
        slot_inventory::booking::queries::get_booking(&client, &h.state.hospital, booked.booking_id.id)
            .await
            .unwrap()
            .unwrap()
    };
    let before = prepared().await;
    read().await;
    let once = prepared().await;
    assert!(once - before <= 1, "{before} → {once}");
    for _ in 0..5 {
        read().await;
    }
    assert_eq!(prepared().await, once, "the same read prepared again");
    let reads: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%FROM bookings b%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        reads >= 1,
        "the booking read is not among the connection's prepared statements"
    );
}

#[tokio::test]
async fn many_cancellations_at_once_on_a_small_pool_all_go_through() {
    // Each cancellation used to keep its connection while giving the seat
    // back asked the pool for more: with 2 connections, concurrent
    // cancellations waited on each other until the pool timed out.
    let seats = 24;
    let small_pool_no_channel_pools: Vec<_> = [
        ("POSTGRES__POOL_MAX_SIZE", "2"),
        ("POLICY__POOL_SHARES__CLINIC", "0"),
    ]
    .into_iter()
    .chain(ALL_COMMON.iter().copied())
    .collect();
    let h = Hospital::start(beijing(2, 9, 0), seats, &small_pool_no_channel_pools).await;
    let slot = h.segment(sched::CT_AM, 0);
    let mut booked = Vec::new();
    for _ in 0..seats {
        let patient = Uuid::new_v4();
        let b = h.book(&slot, patient, Channel::Wechat).await.unwrap();
        booked.push((patient, b.booking_id));
    }
    assert_eq!(h.redis_free(&slot).await, 0);
    let cancels = booked.into_iter().map(|(patient, id)| {
        let state = h.state.clone();
        tokio::spawn(
            async move { lifecycle::cancel(&state, &id, &CancelRequest { patient_id: patient }).await },
        )
    });
    for answer in futures::future::join_all(cancels).await {
        let stored = answer.unwrap().unwrap();
        assert_eq!(stored.booking.status, BookingStatus::Cancelled);
    }
    assert_eq!(h.redis_free(&slot).await, i64::from(seats));
}

/// The problem+json a check-in refusal answers over HTTP.
async fn answer(e: &slot_inventory::SlotError) -> (u16, serde_json::Value) {
    let res = actix_web::ResponseError::error_response(e);
    let status = res.status().as_u16();
    let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn wrong_pickup_codes_are_counted_and_the_fifth_locks_check_in() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let slot = h.segment(sched::CT_AM, 0);
    let guessed = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    let typo = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    h.clock.set(beijing(0, 7, 30));
    let with = |code: &str| CheckInRequest {
        pickup_code: code.to_owned(),
        patient_id: None,
    };
    let failures = |id: Uuid| {
        let pool = h.state.pool.clone();
        async move {
            let client = pool.get().await.unwrap();
            let row = client
                .query_one("SELECT pickup_failures FROM bookings WHERE id = $1", &[&id])
                .await
                .unwrap();
            row.get::<_, i16>(0)
        }
    };

    // Each wrong code says how many are left, and is committed although
    // the request fails.
    for left in (1..=4).rev() {
        let err = lifecycle::check_in(&h.state, &guessed.booking_id, &with("000000x"))
            .await
            .unwrap_err();
        let (status, body) = answer(&err).await;
        assert_eq!(status, 403);
        assert_eq!(body["code"], "WRONG_PICKUP_CODE", "{body}");
        assert_eq!(body["field"], "pickup_code", "{body}");
        assert_eq!(body["attempts_left"], left, "{body}");
    }
    assert_eq!(failures(guessed.booking_id.id).await, 4);
    let fifth = lifecycle::check_in(&h.state, &guessed.booking_id, &with("000000x"))
        .await
        .unwrap_err();
    let (status, locked) = answer(&fifth).await;
    assert_eq!(status, 423);
    assert_eq!(locked["code"], "PICKUP_LOCKED", "{locked}");
    assert_eq!(locked["field"], "pickup_code", "{locked}");
    assert_eq!(locked["attempts_left"], 0, "{locked}");

    // Locked: the right code is refused too, and nothing was checked in.
    let right = lifecycle::check_in(&h.state, &guessed.booking_id, &with(&guessed.pickup_code))
        .await
        .unwrap_err();
    assert_eq!(answer(&right).await, (423, locked));
    assert_eq!(
        h.booking(&guessed.booking_id).await.status,
        BookingStatus::Confirmed
    );
    assert_eq!(failures(guessed.booking_id.id).await, 5);
    assert!(!h.event_types().await.contains(&"booking.checked_in".to_owned()));

    // Four typos still leave the patient their check-in.
    for _ in 0..4 {
        let err = lifecycle::check_in(&h.state, &typo.booking_id, &with("not-it"))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "WRONG_PICKUP_CODE");
    }
    let checked_in = lifecycle::check_in(&h.state, &typo.booking_id, &with(&typo.pickup_code))
        .await
        .unwrap();
    assert_eq!(checked_in.booking.status, BookingStatus::CheckedIn);
    assert_eq!(checked_in.booking.queue_number, Some(1));
}

#[tokio::test]
async fn check_in_naming_another_patient_answers_as_an_unknown_booking() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let slot = h.segment(sched::CT_AM, 0);
    let patient = Uuid::new_v4();
    let b = h.book(&slot, patient, Channel::Wechat).await.unwrap();
    h.clock.set(beijing(0, 7, 30));

    // Even with the right code: the other patient learns nothing.
    let stranger = lifecycle::check_in(
        &h.state,
        &b.booking_id,
        &CheckInRequest {
            pickup_code: b.pickup_code.clone(),
            patient_id: Some(Uuid::new_v4()),
        },
    )
    .await
    .unwrap_err();
    let unknown = slot_inventory::SlotError::BookingNotFound(b.booking_id.to_string());
    assert_eq!(answer(&stranger).await, answer(&unknown).await);
    assert_eq!(answer(&stranger).await.0, 404);
    assert_eq!(code(&stranger), "BOOKING_NOT_FOUND");
    assert_eq!(h.booking(&b.booking_id).await.status, BookingStatus::Confirmed);

    let own = lifecycle::check_in(
        &h.state,
        &b.booking_id,
        &CheckInRequest {
            pickup_code: b.pickup_code.clone(),
            patient_id: Some(patient),
        },
    )
    .await
    .unwrap();
    assert_eq!(own.booking.status, BookingStatus::CheckedIn);
}

/// A plain booking's event is written by its insert, in SQL, with the
/// fields only the database knows merged in (status, fee, department and
/// doctor). It must be, field for field, the event `events::payload`
/// makes of the stored booking, as every other booking event is: held
/// (a fee) and confirmed (a free CT), through both lock kinds' callers.
#[tokio::test]
async fn a_new_bookings_event_is_the_payload_of_the_stored_booking() {
    let h = Hospital::start(beijing(2, 9, 0), 2, &[]).await;
    let held = h.book_expert(Channel::Wechat).await;
    let free = h
        .book(&h.segment(sched::CT_AM, 0), Uuid::new_v4(), Channel::Kiosk)
        .await
        .unwrap();
    assert_eq!(held.status, BookingStatus::Held);
    assert_eq!(free.status, BookingStatus::Confirmed);
    assert!(
        held.fee_fen.0 > 0 && free.fee_fen.0 == 0,
        "a fee and a free visit"
    );

    let client = h.state.pool.get().await.unwrap();
    for (booking, event_type) in [(&held, "booking.held"), (&free, "booking.confirmed")] {
        let row = client
            .query_one(
                "SELECT event_type, payload FROM outbox WHERE aggregate_id = $1",
                &[&booking.booking_id.to_string()],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), event_type);
        let written: serde_json::Value = row.get(1);
        let stored = h.booking(&booking.booking_id).await;
        assert_eq!(
            written,
            slot_inventory::booking::events::payload(&stored, serde_json::json!({})),
            "the event of {event_type}"
        );
        assert!(!written["department"].as_str().unwrap_or("").is_empty());
        assert!(!written["doctor"].as_str().unwrap_or("").is_empty());
        // A hold's deadline travels with it (the gateway warns the app
        // before it without asking the hospital when); nothing else has one.
        assert_eq!(
            written["hold_deadline"].is_string(),
            event_type == "booking.held",
            "{written}"
        );
    }
}

/// A booking the insert refuses (Redis sold a seat PostgreSQL no longer
/// has) leaves no event behind: the event is written only with its row.
#[tokio::test]
async fn an_insert_that_writes_no_booking_writes_no_event() {
    let h = Hospital::start(beijing(2, 9, 0), 2, &[]).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    // The first booking loads the segment's two seats into Redis.
    h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    assert_eq!(h.redis_free(&slot).await, 1);
    // One seat in PostgreSQL while Redis still sells the second: the
    // insert's `$5 <= seg.capacity` refuses the row.
    h.state
        .pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE segments SET capacity = 1 WHERE id = $1", &[&slot.id])
        .await
        .unwrap();
    let refused = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await;
    assert_eq!(code(&refused.unwrap_err()), "SLOT_SOLD_OUT");
    assert_eq!(
        h.event_types().await,
        ["booking.held"],
        "an event without its booking"
    );
    assert_eq!(h.count("SELECT count(*) FROM bookings").await, 1);
}

/// A check-in begins its transaction by hand (`BEGIN` pipelined with the
/// locked read; a payment's refusal too). A request cancelled between `BEGIN` and `COMMIT` (the
/// caller hung up) must not hand its connection back to the pool inside
/// the transaction: the next request would run in it, holding its locks.
/// `jyt_db::Begun` closes such a connection; the write is rolled back.
#[tokio::test]
async fn a_transaction_begun_by_hand_and_abandoned_never_returns_to_the_pool() {
    let h = Hospital::start(beijing(2, 9, 0), 1, &[]).await;
    let begun = jyt_db::Begun::new(h.state.pool.get().await.unwrap());
    begun.batch_execute("BEGIN").await.unwrap();
    begun
        .batch_execute(
            "INSERT INTO outbox (event_id, event_type, aggregate_id, payload)
             VALUES (gen_random_uuid(), 'probe.abandoned', 'probe', '{}')",
        )
        .await
        .unwrap();
    drop(begun);

    // Every connection the pool hands out is outside that transaction
    // (inside it, the insert's transaction id is assigned).
    let size = h.state.pool.status().max_size;
    let mut held = Vec::new();
    for _ in 0..size {
        let client = h.state.pool.get().await.unwrap();
        let xid: Option<i64> = client
            .query_one("SELECT txid_current_if_assigned()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(xid, None, "a pooled connection was still in the transaction");
        held.push(client);
    }
    drop(held);
    let written = h
        .count("SELECT count(*) FROM outbox WHERE event_type = 'probe.abandoned'")
        .await;
    assert_eq!(written, 0);
    // The server ends the abandoned session, and its transaction, too.
    jyt_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the session to end",
        || async {
            let open = h
                .count(
                    "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
                )
                .await;
            (open == 0).then_some(())
        },
    )
    .await;
}

/// The plan of a payment's statement on `bookings`: the index it reads
/// and that index's condition, for each plan PostgreSQL may cache.
async fn payment_scans(h: &Hospital, held: &slot_inventory::booking::Booking) -> Vec<String> {
    let client = h.state.pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "PREPARE pay(uuid, text, text, timestamptz, bigint, uuid, text, text) AS {}",
            *slot_inventory::booking::queries::CONFIRM_PAYMENT_WITH_EVENT
        ))
        .await
        .unwrap();
    let mut scans = Vec::new();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        let plan = jyt_testkit::explain(
            &client,
            &format!(
                "EXECUTE pay('{}', 'pay-1', 'self_pay', '{}', NULL, '{}', 'booking.confirmed', '{}')",
                held.booking_id.id,
                h.clock.now().to_rfc3339(),
                Uuid::now_v7(),
                held.hospital_id
            ),
        )
        .await;
        let scan = plan
            .iter()
            .position(|l| l.contains("Scan") && l.contains(" on bookings"))
            .ok_or_else(|| format!("{mode}: no scan of bookings in\n{}", plan.join("\n")))
            .unwrap();
        let cond = plan[scan + 1..]
            .iter()
            .take_while(|l| !l.contains("->"))
            .find(|l| l.contains("Index Cond"))
            .cloned()
            .unwrap_or_default();
        scans.push(format!("{mode}: {} / {}", plan[scan].trim(), cond.trim()));
    }
    client
        .batch_execute("DEALLOCATE pay; RESET plan_cache_mode")
        .await
        .unwrap();
    scans
}

/// A payment finds its booking by id, whatever PostgreSQL knows of the
/// table. A hospital's bookings table has no statistics at its first
/// release, and the planner then took the open-holds index (hold_deadline,
/// status 'held') for the payment's `id = $1 AND status = 'held' AND
/// hold_deadline > $4`: every payment read every open hold to find its own
/// (peak-day, quarter day: 770 index entries and their rows per payment,
/// a fifth of PostgreSQL's CPU in the payments phase).
#[tokio::test]
async fn a_payment_reads_its_booking_by_id_on_a_table_without_statistics() {
    let h = Hospital::start(beijing(2, 9, 0), 40, ALL_COMMON).await;
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(
            h.book(
                &h.segment(sched::CARDIO_EXPERT_AM, 0),
                Uuid::new_v4(),
                Channel::Wechat,
            )
            .await
            .unwrap(),
        );
    }
    assert!(held.iter().all(|b| b.status == BookingStatus::Held));
    for scan in payment_scans(&h, &held[7]).await {
        assert!(
            scan.contains("Index Cond: (id = "),
            "a payment's booking is not read by its id: {scan}"
        );
    }
    // And the payment itself still takes only a held booking in time.
    let paid = lifecycle::confirm(&h.state, &held[7].booking_id, &pay("pay-plan"))
        .await
        .unwrap();
    assert_eq!(paid.booking.status, BookingStatus::Confirmed);
}

/// The booking row's value rules hold now that every one is a column's
/// domain (V16 the IN-lists, V24 the columns' types): each column refuses
/// a value outside its rule (check_violation) and takes one inside it,
/// NULL stays allowed where it was, and no CHECK constraint is left on
/// bookings for PostgreSQL to read back on every write.
#[tokio::test]
async fn a_booking_refuses_a_value_outside_its_columns_rule() {
    let h = Hospital::start(beijing(2, 9, 0), 1, &[]).await;
    let held = h.book_expert(Channel::Wechat).await;
    let mut client = h.state.pool.get().await.unwrap();
    // (column, the base type a statement binds it as, outside, inside)
    let cases = [
        ("channel", "text", "'pigeon'", "'kiosk'"),
        ("status", "text", "'lost'", "'confirmed'"),
        ("pool", "text", "'vip'", "'common'"),
        ("payment_method", "text", "'barter'", "'insurance'"),
        ("owner_app", "text", "'No Such App!'", "'wxmini'"),
        ("payment_method", "text", "'barter'", "NULL"),
        ("owner_app", "text", "'x'", "NULL"),
        ("seat_no", "int4", "0", "2"),
        ("fee_fen", "int8", "-1", "0"),
        ("pickup_failures", "int2", "-1", "3"),
    ];
    for (column, base, outside, inside) in cases {
        for (value, taken) in [(outside, false), (inside, true)] {
            let tx = client.transaction().await.unwrap();
            let done = tx
                .execute(
                    &format!("UPDATE bookings SET {column} = ({value})::{base} WHERE id = $1"),
                    &[&held.booking_id.id],
                )
                .await;
            if taken {
                assert_eq!(done.map_err(|e| e.to_string()), Ok(1), "{column} = {value}");
            } else {
                let refused = done.expect_err(&format!("{column} = {value} was taken"));
                assert_eq!(
                    refused.code(),
                    Some(&jyt_db::tokio_postgres::error::SqlState::CHECK_VIOLATION),
                    "{column}: {refused}"
                );
            }
            tx.rollback().await.unwrap();
        }
    }
    drop(client);
    let checks: Vec<String> = h
        .column(
            "SELECT conname FROM pg_constraint
              WHERE conrelid = 'bookings'::regclass AND contype = 'c'",
        )
        .await;
    assert!(
        checks.is_empty(),
        "CHECKs PostgreSQL reads back on every write: {checks:?}"
    );
}

/// Redis' expiry index of unpaid holds is rebuilt from PostgreSQL when
/// Redis comes back empty, read through the days' schedules (V18: no index
/// lists the holds): the open hold is back with its deadline, the paid
/// booking is not, and the sweeper then lapses the hold and gives its seat
/// back.
#[tokio::test]
async fn the_expiry_index_of_open_holds_is_rebuilt_after_redis_is_lost_and_the_hold_lapses() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let open = h.book_expert(Channel::Wechat).await;
    let paid = h.book_expert(Channel::Kiosk).await;
    lifecycle::confirm(&h.state, &paid.booking_id, &pay("tx-paid"))
        .await
        .unwrap();
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let before: Vec<(String, i64)> = h.expiry_index().await;
    assert_eq!(before.len(), 1, "only the open hold: {before:?}");

    let mut conn = h.state.redis.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", h.state.settings.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(h.expiry_index().await.is_empty());
    slot_inventory::booking::cache::rebuild(&h.state).await.unwrap();
    assert_eq!(
        h.expiry_index().await,
        before,
        "the open hold and its deadline, not the paid booking"
    );
    assert_eq!(before[0].0, open.booking_id.id.to_string());

    assert_eq!(h.redis_free(&slot).await, 1);
    h.advance(30);
    lifecycle::expire_holds(&h.state).await.unwrap();
    assert_eq!(h.booking(&open.booking_id).await.status, BookingStatus::Expired);
    assert_eq!(h.booking(&paid.booking_id).await.status, BookingStatus::Confirmed);
    assert_eq!(h.redis_free(&slot).await, 2, "the lapsed hold's seat is back");
    h.assert_consistent(&slot).await;
}
