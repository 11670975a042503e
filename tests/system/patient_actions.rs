//! A patient's own actions through the gateway: cancel, waitlist, 取号;
//! another patient's card cannot act on someone's booking.

use std::time::Duration;

use jyt_system_tests::{TestCity, eventually, problem};
use reqwest::Method;

#[tokio::test]
async fn only_the_patients_own_card_cancels_and_check_in_needs_the_pickup_code() {
    let city = TestCity::spawn(&["tiantan"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(3).await;
    // CT (free: confirmed at once) is the 11th schedule of the demo day.
    let ct = &slots[10];
    let owner = city.cards.register().await;
    let stranger = city.cards.register().await;
    let res = city.book(ct, owner.person_id, "kiosk", "pa-1").await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    let id = booking["booking_id"].as_str().unwrap();
    assert_eq!(booking["status"], "confirmed");

    let cancel = |card: &str| {
        let body = serde_json::json!({ "card_number": card });
        city.signed(
            "wechat",
            Method::POST,
            &format!("/v1/bookings/{id}/cancel"),
            Some(&body),
        )
        .send()
    };
    // Another patient's card, even through another channel app: not found.
    let res = cancel(&stranger.card_number).await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "BOOKING_NOT_FOUND");

    // 取号 needs the pick-up code; the visit day's window is not open yet.
    let check_in = |code: &str| {
        let body = serde_json::json!({ "pickup_code": code });
        city.signed(
            "kiosk",
            Method::POST,
            &format!("/v1/bookings/{id}/check-in"),
            Some(&body),
        )
        .send()
    };
    let res = check_in("000000x").await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "WRONG_PICKUP_CODE");
    let res = check_in(booking["pickup_code"].as_str().unwrap()).await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(problem(res).await["code"], "CHECK_IN_CLOSED");

    // The schedule still has seats: no waitlist yet.
    let schedule = booking["schedule_id"].as_str().unwrap();
    let body = serde_json::json!({ "card_number": stranger.card_number });
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!("/v1/hospitals/tiantan/schedules/{schedule}/waitlist"),
            Some(&body),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(problem(res).await["code"], "SEATS_AVAILABLE");

    // The owner's card cancels it; the seat is free again.
    let res = cancel(&owner.card_number).await.unwrap();
    assert_eq!(res.status(), 200);
    let cancelled: serde_json::Value = res.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(h.live_bookings(ct).await, (0, 0));
}

/// 候补 with the default channel pools: a WeChat patient joins once WeChat's
/// seats and the common ones are gone (other channels' seats wait for the
/// merge), and reads their place through the app that joined, or any app
/// with their card, until a cancellation promotes them.
#[tokio::test]
async fn a_patient_reads_their_place_in_line_through_the_app_that_joined_or_with_their_card() {
    let city = TestCity::spawn(&["tiantan"]).await;
    let h = city.hospital(0);
    // 20 seats: wechat 8, kiosk 6, phone114 2, window 1, app 1, referral 1,
    // common 1; only the first segment of CT's morning keeps its seats.
    let slots = h.seed_visit_day(20).await;
    let ct = &slots[10];
    let client = h.state.pool.get().await.unwrap();
    let schedule: uuid::Uuid = client
        .query_one("SELECT schedule_id FROM segments WHERE id = $1", &[&ct.id])
        .await
        .unwrap()
        .get(0);
    let others: Vec<uuid::Uuid> = client
        .query(
            "SELECT id FROM segments WHERE schedule_id = $1 AND id <> $2",
            &[&schedule, &ct.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    for segment in others {
        let cut = slot_inventory::schedule::capacity::CapacityChange { capacity: 0 };
        slot_inventory::schedule::capacity::set_segment_capacity(&h.state, segment, &cut)
            .await
            .unwrap();
    }
    let mut booked = Vec::new();
    for (i, holder) in city.cards.register_many(9).await.into_iter().enumerate() {
        let res = city
            .book(ct, holder.person_id, "wechat", &format!("wl-{i}"))
            .await;
        assert_eq!(res.status(), 201);
        let b: serde_json::Value = res.json().await.unwrap();
        booked.push((holder, b));
    }
    let join = |app: &'static str, card: String| {
        let body = serde_json::json!({ "card_number": card });
        city.signed(
            app,
            Method::POST,
            &format!("/v1/hospitals/tiantan/schedules/{schedule}/waitlist"),
            Some(&body),
        )
        .send()
    };
    // Kiosk seats are left: a kiosk patient books one instead.
    let kiosk_patient = city.cards.register().await;
    let res = join("kiosk", kiosk_patient.card_number.clone()).await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(problem(res).await["code"], "SEATS_AVAILABLE");
    // None for WeChat: its patient joins, and gets an id to read again.
    let waiting = city.cards.register().await;
    let res = join("wechat", waiting.card_number.clone()).await.unwrap();
    assert_eq!(res.status(), 201);
    let joined: serde_json::Value = res.json().await.unwrap();
    let entry = joined["entry_id"].as_str().unwrap().to_owned();
    assert!(entry.starts_with("tiantan-"), "{entry}");
    assert_eq!(joined["position"], 1);
    assert_eq!(joined["owner_app"], "wechat");

    let read = |app: &'static str, card: Option<&str>| {
        let mut req = city.signed(app, Method::GET, &format!("/v1/waitlist/{entry}"), None);
        if let Some(card) = card {
            req = req.header("X-Patient-Card", card);
        }
        req.send()
    };
    let res = read("wechat", None).await.unwrap();
    assert_eq!(res.status(), 200);
    let place: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        (&place["status"], &place["position"], &place["booking_id"]),
        (&"waiting".into(), &1.into(), &serde_json::Value::Null)
    );
    assert_eq!(place["entry_id"], entry.as_str());
    // Another app: only with the patient's own card.
    let res = read("kiosk", None).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    let res = read("kiosk", Some(&kiosk_patient.card_number)).await.unwrap();
    assert_eq!(res.status(), 403);
    let res = read("kiosk", Some(&waiting.card_number)).await.unwrap();
    assert_eq!(res.status(), 200);
    // An id of no entry is answered like another app's; a malformed one
    // names the field.
    let res = city
        .signed(
            "wechat",
            Method::GET,
            &format!("/v1/waitlist/tiantan-{}", uuid::Uuid::now_v7()),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    let res = city
        .signed("wechat", Method::GET, "/v1/waitlist/not-an-entry", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["field"], "entry_id");

    // A WeChat booking is cancelled: its seat goes to the line.
    let (holder, cancelled) = &booked[0];
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!(
                "/v1/bookings/{}/cancel",
                cancelled["booking_id"].as_str().unwrap()
            ),
            Some(&serde_json::json!({ "card_number": holder.card_number })),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The line's pass runs in a task of the hospital's, after the answer.
    let place: serde_json::Value = eventually(Duration::from_secs(10), "the promotion", || async {
        let place: serde_json::Value = read("wechat", None).await.ok()?.json().await.ok()?;
        (place["status"] == "promoted").then_some(place)
    })
    .await;
    assert_eq!(place["status"], "promoted");
    assert_eq!(place["position"], serde_json::Value::Null);
    let promoted = place["booking_id"].as_str().unwrap();
    let res = city.get_booking(promoted).await;
    assert_eq!(res.status(), 200, "the promotion's booking is the joining app's");
    let booking: serde_json::Value = res.json().await.unwrap();
    assert_eq!(booking["patient_id"], waiting.person_id.to_string());
    assert_eq!(booking["status"], "confirmed", "CT is free");
    assert!(h.oversold_segments().await.is_empty());
    assert_eq!(h.redis_segment(ct).await.1, h.pg_holders(ct).await);
}
