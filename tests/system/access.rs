//! Broken object-level authorisation, the top API risk: a channel app
//! cannot read or pay another app's booking, nor cancel a patient's
//! booking without that patient's identity; one hospital's ids never reach
//! another hospital's data; an account holder books only for people bound
//! to them. Every refusal leaves PostgreSQL as it was. (Hospital
//! credentials confined to their own hospital: `federation.rs`.)

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use jyt_domain::{BookingRef, SlotRef};
use jyt_system_tests::{ALL_SEATS_COMMON, TestCity, TestHospital, problem};
use reqwest::Method;
use uuid::Uuid;

async fn status_of(h: &TestHospital, booking: &BookingRef) -> String {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_one("SELECT status FROM bookings WHERE id = $1", &[&booking.id])
        .await
        .unwrap()
        .get(0)
}

async fn count_bookings(h: &TestHospital) -> i64 {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM bookings", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_channel_app_cannot_read_pay_or_cancel_another_apps_booking() {
    let city = TestCity::spawn_configured(&["bola"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slot = h.seed_visit_day(5).await.remove(0);
    let patient = city.patient().await;
    let res = city.book(&slot, patient, "wechat", "mine").await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    let id = booking["booking_id"].as_str().unwrap();
    let booking_ref: BookingRef = id.parse().unwrap();
    let pickup = booking["pickup_code"]
        .as_str()
        .unwrap_or("no pick-up code")
        .to_owned();
    let path = format!("/v1/bookings/{id}");

    // Read: refused, and the refusal shows nothing of the booking.
    let res = city
        .signed("kiosk", Method::GET, &path, None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body = problem(res).await;
    assert_eq!(body["code"], "NOT_YOUR_BOOKING");
    let text = body.to_string();
    assert!(!text.contains(&patient.to_string()) && !text.contains(&pickup));

    // Pay: refused before the hospital is asked; the booking stays held.
    let res = city.pay("phone114", &booking).await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    assert_eq!(status_of(h, &booking_ref).await, "held");

    // Cancel: only with the patient's own identity. Without one, or with
    // another patient's card, through any app, nothing changes.
    let stranger = city.patient().await;
    for app in ["kiosk", "wechat"] {
        for (body, status) in [
            (serde_json::json!({}), 400),
            (
                serde_json::json!({ "card_number": city.cards.card_of(stranger) }),
                404,
            ),
        ] {
            let res = city
                .signed(app, Method::POST, &format!("{path}/cancel"), Some(&body))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), status, "{app} {body}");
            let answer = problem(res).await.to_string();
            assert!(!answer.contains(&patient.to_string()) && !answer.contains(&pickup));
        }
    }
    assert_eq!(status_of(h, &booking_ref).await, "held");
    // At the hospital, only with the patient's own identity; someone else's
    // is told the booking does not exist (nothing revealed about whose it is).
    let http = h.http();
    let cancel = |who: Uuid| {
        http.post(format!("{}/v1/bookings/{id}/cancel", h.base_url))
            .json(&serde_json::json!({ "patient_id": who }))
            .send()
    };
    let res = cancel(city.patient().await).await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "BOOKING_NOT_FOUND");
    assert_eq!(status_of(h, &booking_ref).await, "held");
    // Whereas the owning app reads it, and the patient cancels it.
    let res = city
        .signed("wechat", Method::GET, &path, None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(cancel(patient).await.unwrap().status(), 200);
    assert_eq!(status_of(h, &booking_ref).await, "cancelled");
}

#[tokio::test]

async fn a_booking_made_through_another_door_is_not_shown_to_any_channel_app() {
    let city = TestCity::spawn_configured(&["door"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slot = h.seed_visit_day(5).await.remove(0);
    let patient = city.patient().await;
    // Booked at the hospital's own window system, not through the gateway.
    let res = h
        .http()
        .post(format!("{}/v1/bookings", h.base_url))
        .header("Idempotency-Key", "window-1")
        .json(&serde_json::json!({ "slot_id": slot.to_string(), "patient_id": patient, "channel": "window" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    let path = format!("/v1/bookings/{}", booking["booking_id"].as_str().unwrap());
    for app in ["wechat", "kiosk"] {
        let res = city.signed(app, Method::GET, &path, None).send().await.unwrap();
        assert!(
            res.status() == 403 || res.status() == 404,
            "{app} read a booking it did not make: {}",
            res.status()
        );
        let res = city.pay(app, &booking).await;
        assert!(
            res.status() == 403 || res.status() == 404,
            "{app} paid a booking it did not make"
        );
    }
    assert_eq!(
        status_of(h, &booking["booking_id"].as_str().unwrap().parse().unwrap()).await,
        "held"
    );
}

#[tokio::test]
async fn one_hospitals_ids_never_reach_another_hospitals_data() {
    let city = TestCity::spawn_configured(&["hosa", "hosb"], &[], ALL_SEATS_COMMON).await;
    let (a, b) = (city.hospital(0), city.hospital(1));
    let slot_a = a.seed_visit_day(5).await.remove(0);
    b.seed_visit_day(5).await;
    let patient = city.patient().await;
    let res = city.book(&slot_a, patient, "wechat", "at-a").await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    let at_a: BookingRef = booking["booking_id"].as_str().unwrap().parse().unwrap();
    let as_b = BookingRef::new(b.id.clone(), at_a.id);
    let (before_a, before_b) = (count_bookings(a).await, count_bookings(b).await);

    // A's booking under B's name: no app made such a booking, so the
    // gateway refuses it before asking anyone.
    let res = city
        .signed("wechat", Method::GET, &format!("/v1/bookings/{as_b}"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    for (hospital, other) in [(b, &at_a), (a, &as_b)] {
        // Each hospital refuses the other's ids, even for the right patient
        // and with the gateway's credentials for that hospital.
        let http = hospital.http();
        let res = http
            .get(format!("{}/v1/bookings/{other}", hospital.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{} read {other}", hospital.id);
        let res = http
            .post(format!("{}/v1/bookings/{other}/cancel", hospital.base_url))
            .json(&serde_json::json!({ "patient_id": patient }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{} cancelled {other}", hospital.id);
        let res = http
            .post(format!("{}/v1/bookings/{other}/confirm", hospital.base_url))
            .json(&serde_json::json!({ "payment_reference": "tx-cross", "payment_method": "self_pay" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{} confirmed {other}", hospital.id);
    }
    // A's segment under B's name books nothing anywhere.
    let disguised = SlotRef::new(b.id.clone(), slot_a.id);
    let res = city
        .book(&disguised, city.patient().await, "wechat", "disguised")
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "SLOT_NOT_FOUND");
    let direct = b
        .http()
        .post(format!("{}/v1/bookings", b.base_url))
        .header("Idempotency-Key", "direct")
        .json(&serde_json::json!({ "slot_id": slot_a.to_string(), "patient_id": Uuid::new_v4(), "channel": "window" }))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 404, "B books A's slot");
    assert_eq!(
        (count_bookings(a).await, count_bookings(b).await),
        (before_a, before_b)
    );
    assert_eq!(status_of(a, &at_a).await, "held");
}

#[tokio::test]
async fn an_account_holder_books_only_for_people_bound_to_them() {
    let city = TestCity::spawn_configured(&["family"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slot = h.seed_visit_day(5).await.remove(0);
    let holder = city.cards.register().await;
    let stranger = city.patient().await;
    let others_member = city.patient().await;
    let other_holder = city.patient().await;
    city.cards.bind_family(other_holder, others_member).await;
    let token = city.cards.ecard_token(&holder).await;

    for (i, target) in [stranger, others_member].into_iter().enumerate() {
        for body in [
            serde_json::json!({ "slot_id": slot.to_string(), "card_number": holder.card_number, "patient_id": target }),
            serde_json::json!({ "slot_id": slot.to_string(), "ecard_token": token, "patient_id": target }),
        ] {
            let res = city
                .book_with("wechat", &format!("not-mine-{i}-{}", Uuid::new_v4()), &body)
                .await;
            assert_eq!(res.status(), 403);
            assert_eq!(problem(res).await["code"], "NOT_FAMILY_MEMBER");
        }
    }
    // The member's own holder may, and the binding is not the other way
    // round: the member cannot book for their holder.
    let res = city
        .book_with(
            "wechat",
            "for-member",
            &serde_json::json!({ "slot_id": slot.to_string(), "card_number": city.cards.card_of(other_holder), "patient_id": others_member }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let res = city
        .book_with(
            "wechat",
            "for-holder",
            &serde_json::json!({ "slot_id": slot.to_string(), "card_number": city.cards.card_of(others_member), "patient_id": other_holder }),
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_FAMILY_MEMBER");
    let pg = h.pg_holders(&slot).await;
    assert_eq!(
        pg.keys().collect::<Vec<_>>(),
        vec![&others_member.to_string()],
        "only the member was booked"
    );
}
