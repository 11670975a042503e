//! The payments' group commit (`booking::writer::Payments`): payments that
//! arrive together are confirmed in one statement and one transaction, each
//! with its own reference and its own event; a payment the batch cannot
//! take (a reference already used, a hold of another fee, a booking paid
//! twice) gets the answer it would have had alone, and costs the others
//! nothing.

use jyt_domain::{BookingRef, BookingStatus, Channel};
use jyt_web::RequestError;
use slot_inventory::booking::Booking;
use slot_inventory::booking::lifecycle::{self, ConfirmRequest, PaymentMethod};
use slot_inventory::booking::queries::StoredBooking;
use slot_inventory::error::SlotError;

use crate::helpers::{Hospital, beijing, code};

fn pay(reference: &str, amount_fen: Option<i64>) -> ConfirmRequest {
    ConfirmRequest {
        payment_reference: reference.to_owned(),
        payment_method: PaymentMethod::Insurance,
        amount_fen,
    }
}

/// Every payment's confirmation started before any is written: the test
/// runtime has one thread and a writer is a task of its own, so the first
/// writer finds them all queued.
async fn pay_together(
    h: &Hospital,
    payments: &[(BookingRef, ConfirmRequest)],
) -> Vec<Result<StoredBooking, SlotError>> {
    futures::future::join_all(
        payments
            .iter()
            .map(|(booking, req)| lifecycle::confirm(&h.state, booking, req)),
    )
    .await
}

/// The reference recorded as taken by a booking, if any.
async fn reference_of(h: &Hospital, booking: &Booking) -> Option<String> {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT reference FROM payment_references WHERE booking_id = $1",
            &[&booking.booking_id.id],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test]
async fn payments_arriving_together_are_one_commit_each_with_its_own_reference_and_event() {
    let h = Hospital::start(beijing(2, 9, 0), 12, &[]).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(h.book_expert(Channel::Wechat).await);
    }
    let fee = held[0].fee_fen.0;
    // Six plain payments (some saying the amount, some not), one of
    // another amount, and the first booking's payment delivered twice.
    let mut payments: Vec<(BookingRef, ConfirmRequest)> = held[..6]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let amount = (i % 2 == 0).then_some(fee);
            (b.booking_id.clone(), pay(&format!("ins-{i}"), amount))
        })
        .collect();
    payments.push((held[6].booking_id.clone(), pay("ins-wrong", Some(fee + 1))));
    payments.push((held[0].booking_id.clone(), pay("ins-0", Some(fee))));

    let answers = pay_together(&h, &payments).await;

    for (i, b) in held[..6].iter().enumerate() {
        let paid = answers[i].as_ref().map_err(|e| format!("{e:?}")).unwrap();
        assert_eq!(
            paid.booking.booking_id, b.booking_id,
            "each answer is its own booking"
        );
        assert_eq!(paid.booking.status, BookingStatus::Confirmed);
        let reference = format!("ins-{i}");
        assert_eq!(paid.payment_reference.as_deref(), Some(reference.as_str()));
        assert_eq!(reference_of(&h, b).await.as_deref(), Some(reference.as_str()));
        // Its one event, the payload Rust builds from the same booking.
        let built = slot_inventory::booking::events::payload(
            &paid.booking,
            serde_json::json!({ "payment_reference": reference }),
        );
        assert_eq!(h.events_of("booking.confirmed", b).await, [built]);
    }
    let paid: Vec<&Booking> = held[..6].iter().collect();
    assert_eq!(h.last_writers(&paid).await, 1, "one commit for the six");
    match &answers[6] {
        Err(SlotError::Request(RequestError::InvalidField { field, .. })) => assert_eq!(field, "amount_fen"),
        other => panic!("expected 400 amount_fen, got {other:?}"),
    }
    assert_eq!(h.booking(&held[6].booking_id).await.status, BookingStatus::Held);
    assert!(h.events_of("booking.confirmed", &held[6]).await.is_empty());
    assert_eq!(reference_of(&h, &held[6]).await, None);
    // The payment delivered twice answers the same booking, with one event.
    let again = answers[7].as_ref().map_err(|e| format!("{e:?}")).unwrap();
    assert_eq!(again.booking, answers[0].as_ref().unwrap().booking);
    assert_eq!(h.events_of("booking.confirmed", &held[0]).await.len(), 1);
    assert_eq!(
        h.booking(&held[7].booking_id).await.status,
        BookingStatus::Held,
        "unpaid"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE event_type = 'booking.confirmed'")
            .await,
        6
    );
    assert_eq!(h.count("SELECT count(*) FROM payment_references").await, 6);
    // The six paid holds left the expiry index (one ZREM for the batch);
    // the two unpaid are still in it, to lapse.
    let mut index: Vec<String> = h.expiry_index().await.into_iter().map(|(id, _)| id).collect();
    index.sort();
    let mut unpaid = [
        held[6].booking_id.id.to_string(),
        held[7].booking_id.id.to_string(),
    ];
    unpaid.sort();
    assert_eq!(index, unpaid);
    // What the hospital was paid, to the fen: the six fees, nothing more.
    assert_eq!(
        h.count("SELECT coalesce(sum(fee_fen), 0)::bigint FROM bookings WHERE status = 'confirmed'")
            .await,
        6 * fee
    );
}

#[tokio::test]
async fn a_batch_with_a_used_reference_is_paid_again_one_by_one_and_only_that_payment_is_refused() {
    let h = Hospital::start(beijing(2, 9, 0), 12, &[]).await;
    let earlier = h.book_expert(Channel::Kiosk).await;
    lifecycle::confirm(&h.state, &earlier.booking_id, &pay("ins-used", None))
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(h.book_expert(Channel::Wechat).await);
    }
    // The third pays with the reference the earlier booking took; the
    // fifth with the same reference as the fourth.
    let references = ["ins-a", "ins-b", "ins-used", "ins-d", "ins-d"];
    let payments: Vec<(BookingRef, ConfirmRequest)> = held
        .iter()
        .zip(references)
        .map(|(b, r)| (b.booking_id.clone(), pay(r, None)))
        .collect();

    let answers = pay_together(&h, &payments).await;

    for i in [0, 1, 3] {
        let paid = answers[i].as_ref().map_err(|e| format!("{e:?}")).unwrap();
        assert_eq!(paid.booking.booking_id, held[i].booking_id);
        assert_eq!(paid.booking.status, BookingStatus::Confirmed);
        assert_eq!(h.events_of("booking.confirmed", &held[i]).await.len(), 1);
    }
    for i in [2, 4] {
        assert_eq!(
            code(answers[i].as_ref().unwrap_err()),
            "PAYMENT_REFERENCE_USED",
            "payment {i}"
        );
        assert_eq!(h.booking(&held[i].booking_id).await.status, BookingStatus::Held);
        assert!(h.events_of("booking.confirmed", &held[i]).await.is_empty());
        assert_eq!(reference_of(&h, &held[i]).await, None);
    }
    let paid = [&held[0], &held[1], &held[3]];
    assert_eq!(h.last_writers(&paid).await, 3, "each written alone");
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE event_type = 'booking.confirmed'")
            .await,
        4,
        "the earlier payment's and the three"
    );
}

#[tokio::test]
async fn a_booking_paid_twice_in_one_batch_is_confirmed_once_by_the_first_payment() {
    let h = Hospital::start(beijing(2, 9, 0), 12, &[]).await;
    let a = h.book_expert(Channel::Wechat).await;
    let b = h.book_expert(Channel::Wechat).await;
    let payments = [
        (a.booking_id.clone(), pay("ins-first", None)),
        (b.booking_id.clone(), pay("ins-b", None)),
        (a.booking_id.clone(), pay("ins-second", None)),
    ];

    let answers = pay_together(&h, &payments).await;

    let first = answers[0].as_ref().map_err(|e| format!("{e:?}")).unwrap();
    assert_eq!(first.payment_reference.as_deref(), Some("ins-first"));
    assert!(answers[1].is_ok());
    assert_eq!(code(answers[2].as_ref().unwrap_err()), "ALREADY_CONFIRMED");
    assert_eq!(reference_of(&h, &a).await.as_deref(), Some("ins-first"));
    assert_eq!(h.events_of("booking.confirmed", &a).await.len(), 1);
    assert_eq!(h.count("SELECT count(*) FROM payment_references").await, 2);
}
