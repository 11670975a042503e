//! The check-ins' group commit (`booking::writer::CheckIns`): check-ins
//! that arrive together are made in one statement and one transaction,
//! each with its own event; each schedule's queue numbers stay exact (no
//! gap, no number twice, in the order the check-ins arrived); a check-in
//! the batch cannot make (a wrong code, a booking checked in twice) gets
//! the answer it would have had alone.

use jyt_domain::{BookingRef, BookingStatus, Channel};
use slot_inventory::booking::Booking;
use slot_inventory::booking::lifecycle::{self, CheckInRequest, ConfirmRequest, PaymentMethod};
use slot_inventory::booking::queries::StoredBooking;
use slot_inventory::error::SlotError;
use uuid::Uuid;

use crate::helpers::{Hospital, beijing, code, sched};

fn by_its_patient(b: &Booking) -> CheckInRequest {
    CheckInRequest {
        pickup_code: b.pickup_code.clone(),
        patient_id: Some(b.patient_id),
    }
}

/// Every check-in started before any is written: the test runtime has one
/// thread and a writer is a task of its own, so the first writer finds
/// them all queued.
async fn check_in_together(
    h: &Hospital,
    check_ins: &[(BookingRef, CheckInRequest)],
) -> Vec<Result<StoredBooking, SlotError>> {
    futures::future::join_all(
        check_ins
            .iter()
            .map(|(booking, req)| lifecycle::check_in(&h.state, booking, req)),
    )
    .await
}

#[tokio::test]
async fn check_ins_arriving_together_are_one_commit_numbered_in_arrival_order_per_schedule() {
    let h = Hospital::start(beijing(2, 9, 0), 12, &[]).await;
    // CT is free (confirmed at once); the cardiology general clinic is paid.
    let ct = h.segment(sched::CT_AM, 0);
    let mut at_ct = Vec::new();
    for _ in 0..5 {
        at_ct.push(h.book(&ct, Uuid::new_v4(), Channel::Kiosk).await.unwrap());
    }
    let cardio = h
        .book(
            &h.segment(sched::CARDIO_GENERAL_AM, 0),
            Uuid::new_v4(),
            Channel::Wechat,
        )
        .await
        .unwrap();
    let pay = ConfirmRequest {
        payment_reference: "tx-cardio".into(),
        payment_method: PaymentMethod::SelfPay,
        amount_fen: None,
    };
    lifecycle::confirm(&h.state, &cardio.booking_id, &pay)
        .await
        .unwrap();
    // One CT patient arrived earlier, alone: number 1.
    h.clock.set(beijing(0, 7, 30));
    let earlier = lifecycle::check_in(&h.state, &at_ct[0].booking_id, &by_its_patient(&at_ct[0]))
        .await
        .unwrap();
    assert_eq!(earlier.booking.queue_number, Some(1));

    // Then, together: three CT arrivals, the cardiology one between them,
    // a CT arrival with a wrong code, and the first CT arrival again.
    let wrong = CheckInRequest {
        pickup_code: "not-it".into(),
        patient_id: Some(at_ct[4].patient_id),
    };
    let check_ins = [
        (at_ct[2].booking_id.clone(), by_its_patient(&at_ct[2])),
        (cardio.booking_id.clone(), by_its_patient(&cardio)),
        (at_ct[1].booking_id.clone(), by_its_patient(&at_ct[1])),
        (at_ct[4].booking_id.clone(), wrong),
        (at_ct[3].booking_id.clone(), by_its_patient(&at_ct[3])),
        (at_ct[2].booking_id.clone(), by_its_patient(&at_ct[2])),
    ];

    let answers = check_in_together(&h, &check_ins).await;

    let number = |i: usize| {
        let answer = answers[i].as_ref().map_err(|e| format!("{e:?}")).unwrap();
        assert_eq!(
            answer.booking.booking_id, check_ins[i].0,
            "each answer is its own booking"
        );
        assert_eq!(answer.booking.status, BookingStatus::CheckedIn);
        answer.booking.queue_number
    };
    // CT's next numbers, in the order the check-ins arrived; cardiology's first.
    assert_eq!(number(0), Some(2));
    assert_eq!(number(2), Some(3));
    assert_eq!(number(4), Some(4));
    assert_eq!(number(1), Some(1));
    // Checked in twice: the same booking, the same number, one event.
    assert_eq!(number(5), Some(2));
    assert_eq!(h.events_of("booking.checked_in", &at_ct[2]).await.len(), 1);
    match &answers[3] {
        Err(SlotError::WrongPickupCode { attempts_left }) => assert_eq!(*attempts_left, 4),
        other => panic!("expected WRONG_PICKUP_CODE, got {other:?}"),
    }
    assert_eq!(
        h.booking(&at_ct[4].booking_id).await.status,
        BookingStatus::Confirmed
    );
    assert!(h.events_of("booking.checked_in", &at_ct[4]).await.is_empty());

    let together = [&at_ct[1], &at_ct[2], &at_ct[3], &cardio];
    assert_eq!(h.last_writers(&together).await, 1, "one commit for the four");
    for b in together {
        let stored = h.booking(&b.booking_id).await;
        let built = slot_inventory::booking::events::payload(&stored, serde_json::json!({}));
        assert_eq!(
            h.events_of("booking.checked_in", b).await,
            [built],
            "the event Rust builds"
        );
    }
    // Each schedule's numbers: no gap, none twice; the counters agree.
    assert_eq!(
        h.column::<i32>("SELECT queue_no FROM bookings WHERE queue_no IS NOT NULL ORDER BY schedule_id = (SELECT schedule_id FROM bookings WHERE payment_reference = 'tx-cardio'), queue_no")
            .await,
        [1, 2, 3, 4, 1]
    );
    assert_eq!(
        h.column::<i32>("SELECT last_no FROM schedule_queue_numbers ORDER BY last_no")
            .await,
        [1, 4]
    );
    // The arrival after them takes the next number.
    let last = lifecycle::check_in(&h.state, &at_ct[4].booking_id, &by_its_patient(&at_ct[4]))
        .await
        .unwrap();
    assert_eq!(last.booking.queue_number, Some(5));
}

#[tokio::test]
async fn a_check_in_not_due_in_a_batch_costs_the_others_nothing_and_takes_no_number() {
    let h = Hospital::start(beijing(2, 9, 0), 12, &[]).await;
    let first = h.segment(sched::CT_AM, 0);
    let later = h.segment(sched::CT_AM, 6);
    let a = h.book(&first, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    let b = h.book(&first, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    // A segment whose window has not opened yet at 07:30.
    let not_yet = h.book(&later, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    let stranger = CheckInRequest {
        patient_id: Some(Uuid::new_v4()),
        ..by_its_patient(&b)
    };
    h.clock.set(beijing(0, 7, 30));
    let check_ins = [
        (not_yet.booking_id.clone(), by_its_patient(&not_yet)),
        (b.booking_id.clone(), stranger),
        (a.booking_id.clone(), by_its_patient(&a)),
    ];

    let answers = check_in_together(&h, &check_ins).await;

    assert_eq!(code(answers[0].as_ref().unwrap_err()), "CHECK_IN_CLOSED");
    assert_eq!(
        code(answers[1].as_ref().unwrap_err()),
        "BOOKING_NOT_FOUND",
        "another patient's booking answers as unknown"
    );
    assert_eq!(answers[2].as_ref().unwrap().booking.queue_number, Some(1));
    for refused in [&not_yet, &b] {
        assert_eq!(
            h.booking(&refused.booking_id).await.status,
            BookingStatus::Confirmed
        );
        assert!(h.events_of("booking.checked_in", refused).await.is_empty());
    }
    assert_eq!(
        h.column::<i32>("SELECT last_no FROM schedule_queue_numbers")
            .await,
        [1],
        "no number taken for a check-in that was not made"
    );
}
