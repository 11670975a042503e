//! The booking's one admission round trip (services/gateway/src/limits.rs):
//! `POST /v1/bookings` spends its nonce in the admission script, under the
//! patient's hash tag, instead of at the signature check. A replay of the
//! very same signed booking is still refused, books nothing, and does not
//! spend the patient's rate bucket.

use chrono::Utc;
use jyt_signing::channel::{new_nonce, sign_request};
use jyt_system_tests::{ALL_SEATS_COMMON, TEST_APP_SECRET, TestCity, problem};

#[tokio::test]
async fn a_replayed_booking_is_refused_replayed_nonce_and_books_nothing() {
    let city = TestCity::spawn_configured(&["admit"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(3).await;
    let slot = &slots[10];
    let patient = city.cards.register().await;
    let body =
        serde_json::json!({ "slot_id": slot.to_string(), "card_number": patient.card_number }).to_string();
    let signed = sign_request(
        "wechat",
        TEST_APP_SECRET.as_bytes(),
        "POST",
        "/v1/bookings",
        body.as_bytes(),
        Utc::now().timestamp(),
        &new_nonce(),
    );
    let send = || {
        let req = city
            .http
            .post(format!("{}/v1/bookings", city.gateway_url))
            .header("content-type", "application/json")
            .header("Idempotency-Key", "admit-1")
            .body(body.clone());
        signed
            .pairs()
            .into_iter()
            .fold(req, |r, (k, v)| r.header(k, v))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);

    // The same signed request again, many times: each one is refused as a
    // replay, before the person's bucket is touched.
    for _ in 0..20 {
        let again = send().await.unwrap();
        assert_eq!(again.status(), 401);
        assert_eq!(problem(again).await["code"], "REPLAYED_NONCE");
    }
    let (live, _) = h.live_bookings(slot).await;
    assert_eq!(live, 1);

    // The patient's own retry (a fresh nonce, the same Idempotency-Key)
    // still answers their booking: the replays spent nothing of theirs.
    let retry = city.book(slot, patient.person_id, "wechat", "admit-1").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
}
