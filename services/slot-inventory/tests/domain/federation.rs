//! The hospital's side: publish, 停诊 with refunds and offers, visit
//! progress, and the bookings feed.

use std::collections::HashSet;

use jyt_domain::{BookingStatus, Channel};
use slot_inventory::booking::lifecycle::{self, ConfirmRequest, PaymentMethod};
use slot_inventory::booking::waitlist::{self, JoinRequest};
use slot_inventory::federation::feed::{self, FeedQuery};
use slot_inventory::federation::publish::{self, PublishRequest};
use slot_inventory::federation::stop::{self, StopRequest};
use slot_inventory::federation::visits;
use uuid::Uuid;

use crate::helpers::{ALL_COMMON, Hospital, beijing, code, sched, visit_date};

fn pay(reference: &str) -> ConfirmRequest {
    ConfirmRequest {
        payment_reference: reference.to_owned(),
        payment_method: PaymentMethod::SelfPay,
        amount_fen: None,
    }
}

#[tokio::test]
async fn stopping_a_clinic_refunds_paid_bookings_once_and_offers_each_patient_an_equivalent_slot() {
    // One seat per segment: the expert's morning has 7, the afternoon 6.
    let h = Hospital::start(beijing(3, 9, 0), 1, ALL_COMMON).await;
    let schedule = h.schedules[sched::CARDIO_EXPERT_AM].schedule_id;
    let mut booked = Vec::new();
    for segment in 0..7 {
        let b = h
            .book(
                &h.segment(sched::CARDIO_EXPERT_AM, segment),
                Uuid::new_v4(),
                Channel::Wechat,
            )
            .await
            .unwrap();
        booked.push(b);
    }
    // Three paid, four still held.
    for b in &booked[..3] {
        lifecycle::confirm(&h.state, &b.booking_id, &pay(&format!("tx-{}", b.visit_number)))
            .await
            .unwrap();
    }
    let waiting = Uuid::new_v4();
    waitlist::join(
        &h.state,
        schedule,
        &JoinRequest {
            patient_id: waiting,
            channel: Channel::App,
            owner_app: None,
        },
    )
    .await
    .unwrap();

    let stop_req = StopRequest {
        reason: "专家临时出诊任务 (doctor called away)".into(),
    };
    let outcome = stop::stop(&h.state, schedule, &stop_req).await.unwrap();
    assert!(!outcome.already_stopped);
    assert_eq!(outcome.stopped_bookings, 7);
    assert_eq!(outcome.refunds_requested, 3);
    assert_eq!(
        outcome.offers.len(),
        8,
        "one offer per affected patient, waitlist included"
    );
    // The afternoon has 6 seats: the first six in booking order get one.
    let offered: Vec<bool> = outcome.offers.iter().map(|o| o.offered.is_some()).collect();
    assert_eq!(offered, [true, true, true, true, true, true, false, false]);
    for (offer, original) in outcome.offers.iter().zip(&booked) {
        assert_eq!(offer.patient_id, original.patient_id);
        assert_eq!(offer.replaces.as_ref(), Some(&original.booking_id));
    }
    for offer in outcome.offers.iter().filter_map(|o| o.offered.as_ref()) {
        let b = h.booking(offer).await;
        assert_eq!(
            b.schedule_id,
            h.schedules[sched::CARDIO_EXPERT_AM + 1].schedule_id
        );
        assert_eq!(
            b.status,
            BookingStatus::Held,
            "a priority hold to accept by paying"
        );
    }
    for b in &booked {
        assert_eq!(h.booking(&b.booking_id).await.status, BookingStatus::Stopped);
    }
    // Nobody can book the stopped clinic.
    let err = h
        .book(
            &h.segment(sched::CARDIO_EXPERT_AM, 0),
            Uuid::new_v4(),
            Channel::Kiosk,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "SCHEDULE_STOPPED");

    let count = |events: &[String], t: &str| events.iter().filter(|e| *e == t).count();
    let events = h.event_types().await;
    assert_eq!(count(&events, "booking.stopped"), 7);
    assert_eq!(count(&events, "booking.refund_requested"), 3);
    assert_eq!(count(&events, "booking.offered"), 6);
    assert_eq!(count(&events, "waitlist.stopped"), 1);

    // Stopping twice is harmless.
    let again = stop::stop(&h.state, schedule, &stop_req).await.unwrap();
    assert!(again.already_stopped);
    assert_eq!(h.event_types().await.len(), events.len());
}

#[tokio::test]
async fn arrival_and_completion_are_recorded_once() {
    let h = Hospital::start(beijing(1, 9, 0), 2, &[]).await;
    let free = h
        .book(&h.segment(sched::CT_AM, 0), Uuid::new_v4(), Channel::Kiosk)
        .await
        .unwrap();
    let held = h.book_expert(Channel::Kiosk).await;
    let err = visits::arrive(&h.state, &held.booking_id).await.unwrap_err();
    assert_eq!(code(&err), "NOT_CHECK_INABLE");
    let err = visits::complete(&h.state, &free.booking_id).await.unwrap_err();
    assert_eq!(code(&err), "NOT_COMPLETABLE");

    let arrived = visits::arrive(&h.state, &free.booking_id).await.unwrap();
    assert_eq!(arrived.booking.status, BookingStatus::CheckedIn);
    assert_eq!(arrived.booking.queue_number, Some(1));
    assert_eq!(
        visits::arrive(&h.state, &free.booking_id).await.unwrap().booking,
        arrived.booking
    );
    let done = visits::complete(&h.state, &free.booking_id).await.unwrap();
    assert_eq!(done.booking.status, BookingStatus::Completed);
    visits::complete(&h.state, &free.booking_id).await.unwrap();
    let events = h.event_types().await;
    assert_eq!(events.iter().filter(|e| *e == "booking.completed").count(), 1);
    assert_eq!(events.iter().filter(|e| *e == "booking.checked_in").count(), 1);
}

#[tokio::test]
async fn the_feed_returns_every_change_exactly_once_across_pages_even_with_concurrent_writers() {
    let h = Hospital::start(beijing(3, 9, 0), 20, ALL_COMMON).await;
    let mut seen = Vec::new();
    let mut since = 0;
    // Writers and a reader at once: pages interleave with commits.
    let writer = {
        let state = h.state.clone();
        let slots: Vec<_> = (0..7).map(|s| h.segment(sched::CT_AM, s)).collect();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..60 {
                let state = state.clone();
                let slot = slots[i % slots.len()].clone();
                tasks.push(tokio::spawn(async move {
                    let req = crate::helpers::book_request(&slot, Uuid::new_v4(), Channel::Kiosk, None);
                    slot_inventory::booking::service::book(state, req, format!("f{i}").parse().unwrap())
                        .await
                        .unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    loop {
        let page = feed::page(&h.state, &FeedQuery { since, limit: 7 })
            .await
            .unwrap();
        for e in &page.entries {
            assert!(e.position > since);
            seen.push(e.event_id);
        }
        since = page.next;
        if writer.is_finished() && page.entries.is_empty() {
            break;
        }
    }
    writer.await.unwrap();
    let all: HashSet<Uuid> = h
        .column::<Uuid>("SELECT event_id FROM outbox WHERE event_type LIKE 'booking.%'")
        .await
        .into_iter()
        .collect();
    assert_eq!(all.len(), 60);
    assert_eq!(seen.len(), 60, "nothing repeated");
    assert_eq!(
        seen.iter().copied().collect::<HashSet<_>>(),
        all,
        "nothing missed"
    );

    let err = feed::page(&h.state, &FeedQuery { since: -1, limit: 7 })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("since"));
    let err = feed::page(&h.state, &FeedQuery { since: 0, limit: 0 })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit"));
}

/// Entries in the feed's unique index (`outbox_feed_seq_key`), read from
/// its one leaf page with `pageinspect` (a handful of events fit there).
async fn feed_index_entries(h: &Hospital) -> i64 {
    let client = h.page_reader().await;
    let root: i64 = client
        .query_one("SELECT root::bigint FROM bt_metap('outbox_feed_seq_key')", &[])
        .await
        .unwrap()
        .get(0);
    if root == 0 {
        return 0;
    }
    client
        .query_one(
            "SELECT count(*) FROM bt_page_items('outbox_feed_seq_key', $1::int)",
            &[&i32::try_from(root).unwrap()],
        )
        .await
        .unwrap()
        .get(0)
}

/// An event enters the feed's unique index only once it has a feed
/// number (V19: the index leaves out the NULLs every event starts with,
/// so a booking's write and the relay's mark add no entry there), and the
/// feed still reads through it.
#[tokio::test]
async fn an_event_enters_the_feed_index_only_when_numbered() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let booked = h.book_expert(Channel::Kiosk).await;
    lifecycle::confirm(
        &h.state,
        &booked.booking_id,
        &ConfirmRequest {
            payment_reference: "tx-feed".to_owned(),
            payment_method: PaymentMethod::SelfPay,
            amount_fen: None,
        },
    )
    .await
    .unwrap();
    while h.state.relay.relay_once().await.unwrap() > 0 {}
    assert_eq!(
        h.count(jyt_events::UNRELAYED_SQL).await,
        0,
        "held and confirmed, both relayed"
    );
    assert_eq!(feed_index_entries(&h).await, 0, "no entry before a feed number");

    let page = feed::page(&h.state, &FeedQuery { since: 0, limit: 10 })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2);
    assert_eq!(feed_index_entries(&h).await, 2, "one entry per numbered event");
    let plan: Vec<String> = h
        .column("EXPLAIN SELECT feed_seq FROM outbox WHERE feed_seq > 0 ORDER BY feed_seq LIMIT 10")
        .await;
    assert!(
        plan.iter().any(|l| l.contains("outbox_feed_seq_key")),
        "the feed's read uses the index: {plan:?}"
    );
}

fn published(capacity: i32) -> PublishRequest {
    let date = visit_date();
    serde_json::from_value(serde_json::json!({
        "schedules": [{
            "id": "his-ent-0930",
            "department": { "id": "ent", "name": "耳鼻喉科 ENT" },
            "doctor": { "id": "doc-ent-7", "name": "赵医生", "title": "主治医师" },
            "date": date,
            "session": "morning",
            "level": "ct",
            "fee_fen": 0,
            "segments": [
                { "starts_at": format!("{date}T09:00:00+08:00"), "ends_at": format!("{date}T09:30:00+08:00"), "capacity": capacity },
                { "starts_at": format!("{date}T09:30:00+08:00"), "ends_at": format!("{date}T10:00:00+08:00"), "capacity": 1 }
            ]
        }]
    }))
    .unwrap()
}

#[tokio::test]
async fn publishing_is_idempotent_keeps_bookings_and_gives_added_seats_to_the_waitlist() {
    let h = Hospital::start(beijing(3, 9, 0), 1, ALL_COMMON).await;
    let first = publish::publish(&h.state, &published(1)).await.unwrap();
    let again = publish::publish(&h.state, &published(1)).await.unwrap();
    assert_eq!(first.schedules[0].schedule_id, again.schedules[0].schedule_id);
    assert_eq!(first.schedules[0].segment_ids, again.schedules[0].segment_ids);
    let schedule = first.schedules[0].schedule_id;
    let seg =
        |i: usize| jyt_domain::SlotRef::new(h.state.hospital.clone(), first.schedules[0].segment_ids[i]);

    h.book(&seg(0), Uuid::new_v4(), Channel::Wechat).await.unwrap();
    h.book(&seg(1), Uuid::new_v4(), Channel::Wechat).await.unwrap();
    let waiting = Uuid::new_v4();
    let (entry, _) = waitlist::join(
        &h.state,
        schedule,
        &JoinRequest {
            patient_id: waiting,
            channel: Channel::Wechat,
            owner_app: None,
        },
    )
    .await
    .unwrap();

    // Cannot shrink below a booked seat.
    let err = publish::publish(&h.state, &published(0)).await.unwrap_err();
    assert!(
        err.to_string().contains("schedules[0].segments[0].capacity"),
        "{err}"
    );
    // Two more seats: the first goes to the waiting patient.
    let grown = publish::publish(&h.state, &published(3)).await.unwrap();
    assert_eq!(grown.promoted_from_waitlist, 1);
    assert_eq!(
        waitlist::get(&h.state, entry.entry_id).await.unwrap().status,
        "promoted"
    );
    h.book(&seg(0), Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    let err = h.book(&seg(0), Uuid::new_v4(), Channel::Kiosk).await.unwrap_err();
    assert_eq!(code(&err), "SLOT_SOLD_OUT");

    let mut bad = published(1);
    bad.schedules[0].fee_fen = -5;
    let err = publish::publish(&h.state, &bad).await.unwrap_err();
    assert!(err.to_string().contains("schedules[0].fee_fen"), "{err}");
    let mut bad = published(1);
    bad.schedules[0].segments[1].ends_at = bad.schedules[0].segments[1].starts_at;
    let err = publish::publish(&h.state, &bad).await.unwrap_err();
    assert!(
        err.to_string().contains("schedules[0].segments[1].ends_at"),
        "{err}"
    );
}
