//! The gateway's sold-out set (services/gateway/src/soldout.rs): once a
//! segment's last seat is gone, or the last seat a channel may take before
//! the merge time, its losers (that channel's) are answered `409
//! SLOT_SOLD_OUT` by the gateway without a hop to the hospital; a seat that
//! comes back (cancellation, 加号) clears the mark within 100 ms, and no
//! seat stays unsold because of a stale mark. Measured against the real
//! services and the real Redis pub/sub.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jyt_domain::SlotRef;
use jyt_system_tests::{ALL_SEATS_COMMON, TestCity, TestHospital, TestPatient, problem};
use reqwest::Method;

/// The promise: a patient is never told "sold out" this long after a seat
/// came back.
const CLEAR_WITHIN: Duration = Duration::from_millis(100);

/// How many `POST /v1/bookings` the hospital has answered (its `/metrics`).
async fn hospital_booking_calls(city: &TestCity, h: &TestHospital) -> u64 {
    city.counter_sum(
        &h.base_url,
        "jyt_http_requests_total",
        &["method=\"POST\"", "route=\"/v1/bookings\""],
    )
    .await
}

/// The gateway's count of attempts it answered from a mark (`/metrics`).
async fn gateway_sold_out_answers(city: &TestCity) -> u64 {
    city.counter_sum(&city.gateway_url, "jyt_gateway_sold_out_answers_total", &[])
        .await
}

/// Book `slot` for `patient` through WeChat (a fresh key); status and body.
async fn attempt(
    city: &TestCity,
    slot: &SlotRef,
    patient: &TestPatient,
    key: &str,
) -> (u16, serde_json::Value) {
    attempt_through(city, "wechat", slot, patient, key).await
}

/// Book `slot` for `patient` through `channel`'s app; status and body.
async fn attempt_through(
    city: &TestCity,
    channel: &str,
    slot: &SlotRef,
    patient: &TestPatient,
    key: &str,
) -> (u16, serde_json::Value) {
    let res = city.book(slot, patient.person_id, channel, key).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

/// Attempts with fresh patients until one is answered by the gateway
/// alone (the hospital's count stands still), within a deadline: the mark
/// of the last seat's sale has arrived.
async fn until_marked(city: &TestCity, slot: &SlotRef, patients: &mut Vec<TestPatient>, tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    loop {
        let before = hospital_booking_calls(city, city.hospital(0)).await;
        let p = patients.pop().expect("enough patients");
        let (status, body) = attempt(city, slot, &p, &format!("{tag}-mark-{i}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("SLOT_SOLD_OUT")),
            "{body}"
        );
        if hospital_booking_calls(city, city.hospital(0)).await == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never marked {slot} sold out"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After a seat came back at `back` (the hospital had answered the change),
/// attempts with fresh patients until one books: every "sold out" must
/// have been sent within [`CLEAR_WITHIN`] of `back`. Answers the booking
/// and how long after `back` the winning attempt was sent.
async fn until_sold_again(
    city: &TestCity,
    slot: &SlotRef,
    patients: &mut Vec<TestPatient>,
    back: Instant,
    tag: &str,
) -> (serde_json::Value, Duration) {
    let mut i = 0;
    loop {
        let p = patients.pop().expect("enough patients");
        let sent = Instant::now();
        let (status, body) = attempt(city, slot, &p, &format!("{tag}-again-{i}")).await;
        let after = sent.duration_since(back);
        match status {
            201 => return (body, after),
            409 => {
                assert_eq!(body["code"], "SLOT_SOLD_OUT", "{body}");
                assert!(
                    after <= CLEAR_WITHIN,
                    "told sold out {after:?} after a seat came back ({tag})"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
        i += 1;
    }
}

async fn cancel(city: &TestCity, booking: &serde_json::Value, card: &str) {
    let id = booking["booking_id"].as_str().expect("a booking id");
    let body = serde_json::json!({ "card_number": card });
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!("/v1/bookings/{id}/cancel"),
            Some(&body),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", problem(res).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losers_stop_at_the_gateway_and_a_seat_back_is_sold_within_100_ms() {
    let city = TestCity::spawn_configured(&["mark"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    // One seat per segment; CT (the 11th schedule) is free, so confirmed at once.
    let slots = h.seed_visit_day(1).await;
    let slot = &slots[10];
    let mut patients = city.cards.register_many(60).await;

    let first = patients.pop().unwrap();
    let (status, booking) = attempt(&city, slot, &first, "first").await;
    assert_eq!(status, 201, "{booking}");
    until_marked(&city, slot, &mut patients, "cancel").await;
    // Marked: five more losers, not one hop.
    let before = hospital_booking_calls(&city, h).await;
    for i in 0..5 {
        let p = patients.pop().unwrap();
        let (status, body) = attempt(&city, slot, &p, &format!("loser-{i}")).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("SLOT_SOLD_OUT")));
        assert_eq!(body["status"], 409);
    }
    assert_eq!(
        hospital_booking_calls(&city, h).await,
        before,
        "a marked loser reached the hospital"
    );

    // A cancellation gives the seat back: sold again at once.
    cancel(&city, &booking, &first.card_number).await;
    let back = Instant::now();
    let (again, delay) = until_sold_again(&city, slot, &mut patients, back, "cancel").await;
    println!("after a cancellation, booked again {delay:?} after the seat came back");
    let (live, _) = h.live_bookings(slot).await;
    assert_eq!(live, 1, "{again}");

    // 加号: the segment's capacity raised to 2 reloads it; sold again too.
    until_marked(&city, slot, &mut patients, "capacity").await;
    let res = h
        .http()
        .put(format!("{}/v1/segments/{}/capacity", h.base_url, slot.id))
        .json(&serde_json::json!({ "capacity": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let back = Instant::now();
    let (_, delay) = until_sold_again(&city, slot, &mut patients, back, "capacity").await;
    println!("after 加号, booked again {delay:?} after the seat came back");
    let (live, _) = h.live_bookings(slot).await;
    assert_eq!(live, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_seat_stays_unsold_behind_a_stale_mark_while_seats_churn() {
    const SEATS: i32 = 4;
    const ROUNDS: usize = 3;
    let city = Arc::new(TestCity::spawn_configured(&["churn"], &[], ALL_SEATS_COMMON).await);
    let h = city.hospital(0);
    let slots = h.seed_visit_day(SEATS).await;
    let slot = slots[10].clone();
    let patients = city.cards.register_many(400).await;
    let mut fresh = patients.into_iter();

    let mut holders: Vec<(serde_json::Value, String)> = Vec::new();
    for round in 0..ROUNDS {
        // Everyone at once: the winners of the last round cancel while a
        // crowd books, so seats go and come back while marks are set and
        // cleared.
        let mut tasks = Vec::new();
        for (booking, card) in holders.drain(..) {
            let city = city.clone();
            tasks.push(tokio::spawn(async move {
                cancel(&city, &booking, &card).await;
                None
            }));
        }
        for i in 0..40 {
            let p = fresh.next().expect("enough patients");
            let city = city.clone();
            let slot = slot.clone();
            tasks.push(tokio::spawn(async move {
                let (status, body) = attempt(&city, &slot, &p, &format!("churn-{round}-{i}")).await;
                match status {
                    201 => Some((body, p.card_number)),
                    409 => {
                        assert_eq!(body["code"], "SLOT_SOLD_OUT", "{body}");
                        None
                    }
                    other => panic!("unexpected {other}: {body}"),
                }
            }));
        }
        for t in tasks {
            if let Some(won) = t.await.unwrap() {
                holders.push(won);
            }
        }
        // Then one by one until the gateway says sold out: every seat must
        // be sold by then, or a stale mark kept one off sale.
        let mut i = 0;
        loop {
            let p = fresh.next().expect("enough patients");
            let (status, body) = attempt(&city, &slot, &p, &format!("fill-{round}-{i}")).await;
            if status == 201 {
                holders.push((body, p.card_number));
                i += 1;
                continue;
            }
            assert_eq!(body["code"], "SLOT_SOLD_OUT", "{body}");
            break;
        }
        let (live, _) = h.live_bookings(&slot).await;
        assert_eq!(live, i64::from(SEATS), "round {round}: a seat stayed unsold");
        assert_eq!(holders.len(), usize::try_from(SEATS).unwrap());
        assert!(h.oversold_segments().await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_seats_are_gone_stops_at_the_gateway_while_the_others_book() {
    // The default pools: of 10 seats WeChat has 4, the kiosks 3, 114 one,
    // common 2 (window, app and referral none). WeChat may take 6 before
    // the merge time (tomorrow 15:00); the kiosks' and 114's stay theirs.
    let city = TestCity::spawn_configured(&["pool"], &[], &[]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(10).await;
    let slot = &slots[10];
    let mut patients = city.cards.register_many(60).await;

    let mut wechat_bookings = Vec::new();
    for i in 0..6 {
        let p = patients.pop().unwrap();
        let (status, body) = attempt(&city, slot, &p, &format!("wechat-{i}")).await;
        assert_eq!(status, 201, "{body}");
        wechat_bookings.push((body, p.card_number));
    }
    // WeChat's seats are gone: its losers stop at the gateway.
    until_marked(&city, slot, &mut patients, "pool").await;
    let before = hospital_booking_calls(&city, h).await;
    let answered_before = gateway_sold_out_answers(&city).await;
    for i in 0..5 {
        let p = patients.pop().unwrap();
        let (status, body) = attempt(&city, slot, &p, &format!("wechat-loser-{i}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("SLOT_SOLD_OUT")),
            "{body}"
        );
    }
    assert_eq!(
        hospital_booking_calls(&city, h).await,
        before,
        "a marked WeChat loser reached the hospital"
    );
    assert_eq!(
        gateway_sold_out_answers(&city).await,
        answered_before + 5,
        "each marked loser counted on the gateway's /metrics"
    );

    // The kiosks' seats are not WeChat's mark: every one is sold, each
    // attempt asked of the hospital.
    for i in 0..3 {
        let p = patients.pop().unwrap();
        let before = hospital_booking_calls(&city, h).await;
        let (status, body) = attempt_through(&city, "kiosk", slot, &p, &format!("kiosk-{i}")).await;
        assert_eq!(status, 201, "kiosk seat {i}: {body}");
        assert_eq!(hospital_booking_calls(&city, h).await, before + 1);
    }
    let (live, _) = h.live_bookings(slot).await;
    assert_eq!(live, 9, "114's seat is the only one left");

    // A WeChat seat back (a cancellation) is WeChat's again within 100 ms.
    let (booking, card) = &wechat_bookings[0];
    cancel(&city, booking, card).await;
    let back = Instant::now();
    let (_, delay) = until_sold_again(&city, slot, &mut patients, back, "pool").await;
    println!("after a cancellation, WeChat booked again {delay:?} after its seat came back");
    let (live, _) = h.live_bookings(slot).await;
    assert_eq!(live, 9);

    // 114's one seat was never marked away: still sold to 114.
    let p = patients.pop().unwrap();
    let (status, body) = attempt_through(&city, "phone114", slot, &p, "phone114").await;
    assert_eq!(status, 201, "{body}");
    assert!(h.oversold_segments().await.is_empty());
}
