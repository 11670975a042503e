//! A patient's own actions through the gateway: cancel, waitlist, 取号;
//! another patient's card cannot act on someone's booking.

use jyt_system_tests::{TestCity, problem};
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
