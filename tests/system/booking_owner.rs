//! Every booking the platform makes reaches its patient. The channel app a
//! booking belongs to (`owner_app`) is kept on the hospital's booking row,
//! so the gateway's Redis is only its cache; a booking the platform makes
//! for a patient (a waitlist promotion, a priority offer after 停诊, an
//! in-clinic follow-up) belongs to the patient's own app; any other app
//! acts on a booking only with the patient's own card.

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::time::Duration;

use jyt_cache::redis;
use jyt_system_tests::{
    ALL_SEATS_COMMON, TEST_APP_SECRET, TestCity, TestHospital, TestPatient, eventually, problem, signed,
};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Forget every booking's app the gateway cached, as if its Redis
/// restarted empty; the hospitals' keys (same test prefix) stay.
async fn forget_gateway_owners(city: &TestCity) -> usize {
    let mut conn = city.hospital(0).state.redis.clone();
    let pattern = format!("{}:*booking-app:*", city.redis_prefix);
    let (mut cursor, mut deleted) = (0_u64, 0);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            deleted += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<usize>(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}

/// `GET /v1/bookings/{id}` as `app`, with a card presented in `header`.
async fn read(city: &TestCity, app: &str, id: &str, card: Option<(&str, &str)>) -> reqwest::Response {
    let mut req = city.signed(app, Method::GET, &format!("/v1/bookings/{id}"), None);
    if let Some((header, value)) = card {
        req = req.header(header, value);
    }
    req.send().await.unwrap()
}

/// The channel's own payment of the fee, as `app`, with the patient's card
/// when given (another app's consent).
async fn pay(city: &TestCity, app: &str, booking: &Value, card: Option<&str>) -> reqwest::Response {
    let mut body = json!({
        "payment_method": "self_pay",
        "payment_reference": format!("tx{}", Uuid::new_v4().simple()),
        "amount_fen": booking["fee_fen"],
    });
    if let Some(card) = card {
        body["card_number"] = json!(card);
    }
    let id = booking["booking_id"].as_str().unwrap();
    city.signed(
        app,
        Method::POST,
        &format!("/v1/bookings/{id}/payments"),
        Some(&body),
    )
    .send()
    .await
    .unwrap()
}

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

async fn refused(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status);
    let body = problem(res).await;
    assert_eq!(body["code"], code, "{body}");
    body
}

fn uuid_of(booking_id: &str) -> Uuid {
    booking_id.parse::<jyt_domain::BookingRef>().unwrap().id
}

/// The owner on the booking row, in PostgreSQL.
async fn owner_in_pg(h: &TestHospital, booking_id: &str) -> Option<String> {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT owner_app FROM bookings WHERE id = $1",
            &[&uuid_of(booking_id)],
        )
        .await
        .unwrap()
        .get(0)
}

/// `owner_app` of each `event_type` event of a booking, in the outbox.
async fn event_owners(h: &TestHospital, event_type: &str, booking_id: &str) -> Vec<Option<String>> {
    let client = h.state.pool.get().await.unwrap();
    client
        .query(
            "SELECT payload->>'owner_app' FROM outbox WHERE event_type = $1 AND aggregate_id = $2 ORDER BY seq",
            &[&event_type, &booking_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The segments of the schedule a slot is in, in order.
async fn schedule_of(h: &TestHospital, slot: &jyt_domain::SlotRef) -> (Uuid, Vec<Uuid>) {
    let client = h.state.pool.get().await.unwrap();
    let schedule: Uuid = client
        .query_one("SELECT schedule_id FROM segments WHERE id = $1", &[&slot.id])
        .await
        .unwrap()
        .get(0);
    let segments = client
        .query(
            "SELECT id FROM segments WHERE schedule_id = $1 ORDER BY starts_at",
            &[&schedule],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (schedule, segments)
}

/// Gateway settings giving `hospital` the federation key `key`.
fn hospital_key(key: &str, hospital: &str) -> Vec<(String, String)> {
    let key = key.to_uppercase();
    vec![
        (format!("HOSPITAL_KEYS__{key}__HOSPITAL"), hospital.to_owned()),
        (
            format!("HOSPITAL_KEYS__{key}__SECRET"),
            TEST_APP_SECRET.to_owned(),
        ),
    ]
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn the_owning_app_reads_and_pays_after_the_gateways_redis_forgot_and_others_stay_refused() {
    let city = TestCity::spawn_with_dead(&["ownr"], &["gone"], &[]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    let patient = city.cards.register().await;
    let stranger = city.cards.register().await;

    let booking = json_of(
        city.book(&slots[0], patient.person_id, "wechat", "own-1").await,
        201,
    )
    .await;
    let id = booking["booking_id"].as_str().unwrap();
    assert_eq!(booking["owner_app"], "wechat", "{booking}");
    assert_eq!(owner_in_pg(h, id).await.as_deref(), Some("wechat"));
    assert_eq!(
        event_owners(h, "booking.held", id).await,
        [Some("wechat".to_owned())]
    );
    // FHIR `$hold` records its app the same way.
    let hold = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "slot", "valueReference": { "reference": format!("Slot/{}", slots[4]) } },
        { "name": "patient", "valueIdentifier": { "system": "urn:jyt:card-number", "value": patient.card_number } },
    ]});
    let res = city
        .signed("kiosk", Method::POST, "/fhir/Appointment/$hold", Some(&hold))
        .header("Idempotency-Key", "own-fhir")
        .send()
        .await
        .unwrap();
    let appointment = json_of(res, 201).await;
    assert_eq!(
        owner_in_pg(h, appointment["id"].as_str().unwrap())
            .await
            .as_deref(),
        Some("kiosk")
    );

    // The gateway's Redis forgets: the hospital's row still says whose.
    assert!(forget_gateway_owners(&city).await >= 2);
    refused(read(&city, "kiosk", id, None).await, 403, "NOT_YOUR_BOOKING").await;
    forget_gateway_owners(&city).await;
    assert_eq!(json_of(read(&city, "wechat", id, None).await, 200).await, booking);
    forget_gateway_owners(&city).await;
    refused(
        pay(&city, "phone114", &booking, None).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    forget_gateway_owners(&city).await;

    // Another app with the patient's own card (their consent) reads it; with
    // someone else's card, or a malformed one, it does not.
    let ecard = city.cards.ecard_token(&patient).await;
    for card in [
        ("X-Patient-Card", patient.card_number.as_str()),
        ("X-Patient-Ecard-Token", ecard.as_str()),
    ] {
        let read_back = json_of(read(&city, "kiosk", id, Some(card)).await, 200).await;
        assert_eq!(read_back["booking_id"], id);
    }
    refused(
        read(
            &city,
            "kiosk",
            id,
            Some(("X-Patient-Card", &stranger.card_number)),
        )
        .await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    let bad = refused(
        read(&city, "kiosk", id, Some(("X-Patient-Card", "1234"))).await,
        400,
        "INVALID_FIELD",
    )
    .await;
    assert_eq!(bad["field"], "X-Patient-Card");
    let both = city
        .signed("kiosk", Method::GET, &format!("/v1/bookings/{id}"), None)
        .header("X-Patient-Card", &patient.card_number)
        .header("X-Patient-Ecard-Token", &ecard)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused(both, 400, "INVALID_FIELD").await["field"],
        "X-Patient-Card"
    );

    // The owner pays, the gateway's cache empty again.
    forget_gateway_owners(&city).await;
    let paid = json_of(pay(&city, "wechat", &booking, None).await, 200).await;
    assert_eq!(paid["status"], "confirmed");
    assert_eq!(paid["owner_app"], "wechat");

    // A hospital that cannot say whose booking it is: unavailable, not
    // "not yours" (fail closed, and retryable).
    let unknown = json!({ "booking_id": format!("gone-{}", Uuid::now_v7()), "fee_fen": 100 });
    let gone = unknown["booking_id"].as_str().unwrap();
    refused(
        read(&city, "wechat", gone, None).await,
        503,
        "HOSPITAL_UNAVAILABLE",
    )
    .await;
    refused(
        pay(&city, "wechat", &unknown, None).await,
        503,
        "HOSPITAL_UNAVAILABLE",
    )
    .await;
    // A booking the hospital does not know is nobody's: nothing told apart.
    let nobody = format!("ownr-{}", Uuid::now_v7());
    refused(
        read(&city, "wechat", &nobody, None).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;

    // Only the gateway names the app: a channel's own `Jyt-App` is not
    // passed on.
    let other = city.cards.register().await;
    let res = city
        .signed(
            "wechat",
            Method::POST,
            "/v1/bookings",
            Some(&json!({ "slot_id": slots[1].to_string(), "card_number": other.card_number })),
        )
        .header("Idempotency-Key", "own-spoof")
        .header("Jyt-App", "kiosk")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res, 201).await["owner_app"], "wechat");
    // At the hospital: a malformed app, or a follow-up's field on another
    // channel's booking, is refused naming it.
    let at_hospital = |key: &str, app: &str, body: Value| {
        h.http()
            .post(format!("{}/v1/bookings", h.base_url))
            .header("Idempotency-Key", key)
            .header("Jyt-App", app)
            .json(&body)
            .send()
    };
    let body = json!({ "slot_id": slots[2].to_string(), "patient_id": Uuid::new_v4(), "channel": "wechat" });
    let res = at_hospital("own-bad-app", "Kiosk App", body).await.unwrap();
    assert_eq!(refused(res, 400, "INVALID_FIELD").await["field"], "Jyt-App");
    let body = json!({ "slot_id": slots[2].to_string(), "patient_id": Uuid::new_v4(), "channel": "wechat", "follows_booking_id": id });
    let res = at_hospital("own-bad-follows", "wechat", body).await.unwrap();
    assert_eq!(
        refused(res, 400, "INVALID_FIELD").await["field"],
        "follows_booking_id"
    );
}

#[tokio::test]
async fn a_waitlist_promotion_belongs_to_the_app_the_patient_joined_through() {
    let city = TestCity::spawn_configured(&["ownw"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(1).await;
    // The expert's morning (a fee: a promotion is a hold to pay), full.
    let (schedule, segments) = schedule_of(h, &slots[0]).await;
    let mut holders = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let patient = Uuid::new_v4();
        let res = h
            .http()
            .post(format!("{}/v1/bookings", h.base_url))
            .header("Idempotency-Key", format!("fill-{i}"))
            .json(
                &json!({ "slot_id": format!("ownw-{segment}"), "patient_id": patient, "channel": "window" }),
            )
            .send()
            .await
            .unwrap();
        let b = json_of(res, 201).await;
        assert!(b["owner_app"].is_null(), "a window's booking is no app's");
        holders.push((patient, b["booking_id"].as_str().unwrap().to_owned()));
    }
    let waiter = city.cards.register().await;
    let stranger = city.cards.register().await;
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!("/v1/hospitals/ownw/schedules/{schedule}/waitlist"),
            Some(&json!({ "card_number": waiter.card_number })),
        )
        .send()
        .await
        .unwrap();
    let entry = json_of(res, 201).await;
    assert_eq!(entry["owner_app"], "wechat", "{entry}");

    // A cancellation frees a seat: the waiting patient is handed it.
    let (patient, cancelled) = &holders[3];
    let res = h
        .http()
        .post(format!("{}/v1/bookings/{cancelled}/cancel", h.base_url))
        .json(&json!({ "patient_id": patient }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The place in line, read through the app that joined (the entry id
    // the gateway answers carries its hospital: `<hospital>-<uuid>`).
    let entry_path = format!("/v1/waitlist/{}", entry["entry_id"].as_str().unwrap());
    let promoted: String = eventually(Duration::from_secs(10), "the promotion", || {
        let req = city.signed("wechat", Method::GET, &entry_path, None);
        async move {
            let e: Value = req.send().await.ok()?.json().await.ok()?;
            e["booking_id"].as_str().map(str::to_owned)
        }
    })
    .await;
    assert_eq!(owner_in_pg(h, &promoted).await.as_deref(), Some("wechat"));
    assert_eq!(
        event_owners(h, "booking.promoted", &promoted).await,
        [Some("wechat".to_owned())]
    );

    // The app the patient joined through reads it (never cached by the
    // gateway: the hospital's row says whose)...
    let booking = json_of(read(&city, "wechat", &promoted, None).await, 200).await;
    assert_eq!(
        (&booking["status"], &booking["owner_app"]),
        (&json!("held"), &json!("wechat"))
    );
    assert_eq!(booking["patient_id"], waiter.person_id.to_string());
    // ...another app only with the patient's own card...
    refused(
        read(&city, "kiosk", &promoted, None).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    let card = ("X-Patient-Card", waiter.card_number.as_str());
    assert_eq!(
        json_of(read(&city, "kiosk", &promoted, Some(card)).await, 200).await,
        booking
    );
    refused(pay(&city, "kiosk", &booking, None).await, 403, "NOT_YOUR_BOOKING").await;
    refused(
        pay(&city, "kiosk", &booking, Some(&stranger.card_number)).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    // ...and the patient's app pays it.
    let paid = json_of(pay(&city, "wechat", &booking, None).await, 200).await;
    assert_eq!(paid["status"], "confirmed");
    // With the card, another app gets past the gateway to the hospital's
    // own answer (already paid), and cancels for the patient.
    refused(
        pay(&city, "kiosk", &booking, Some(&waiter.card_number)).await,
        409,
        "ALREADY_CONFIRMED",
    )
    .await;
    let res = city
        .signed(
            "kiosk",
            Method::POST,
            &format!("/v1/bookings/{promoted}/cancel"),
            Some(&json!({ "card_number": waiter.card_number })),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res, 200).await["status"], "cancelled");
}

#[tokio::test]
async fn a_priority_offer_after_a_stopped_clinic_belongs_to_the_app_that_made_the_stopped_booking() {
    let keys = hospital_key("ownsk1", "owns");
    let city = TestCity::spawn_configured(&["owns"], &pairs(&keys), ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(3).await;
    let patient = city.cards.register().await;
    let stopped = json_of(
        city.book(&slots[0], patient.person_id, "wechat", "own-stop")
            .await,
        201,
    )
    .await;
    let schedule = stopped["schedule_id"].as_str().unwrap();

    let res = signed(
        &city.http,
        &city.gateway_url,
        "ownsk1",
        Method::POST,
        &format!("/federation/v1/hospitals/owns/schedules/{schedule}/stop"),
        Some(&json!({ "reason": "doctor ill" })),
    )
    .send()
    .await
    .unwrap();
    let outcome = json_of(res, 200).await;
    assert_eq!(outcome["offers"][0]["replaces"], stopped["booking_id"]);
    let offered = outcome["offers"][0]["offered"].as_str().unwrap().to_owned();
    let stopped_id = stopped["booking_id"].as_str().unwrap();
    assert_eq!(
        event_owners(h, "booking.stopped", stopped_id).await,
        [Some("wechat".to_owned())]
    );
    assert_eq!(
        event_owners(h, "booking.offered", &offered).await,
        [Some("wechat".to_owned())]
    );

    forget_gateway_owners(&city).await;
    let offer = json_of(read(&city, "wechat", &offered, None).await, 200).await;
    assert_eq!(offer["owner_app"], "wechat");
    assert_eq!(offer["status"], "held", "a priority hold to accept by paying");
    assert_ne!(offer["schedule_id"], stopped["schedule_id"]);
    refused(
        read(&city, "kiosk", &offered, None).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    refused(pay(&city, "kiosk", &offer, None).await, 403, "NOT_YOUR_BOOKING").await;
    let paid = json_of(pay(&city, "wechat", &offer, None).await, 200).await;
    assert_eq!(paid["status"], "confirmed");
}

/// The hospital books `patient`'s follow-up in `slot` through the
/// federation API.
async fn follow_up(
    city: &TestCity,
    slot: &jyt_domain::SlotRef,
    patient: &TestPatient,
    follows: Option<&str>,
    key: &str,
) -> reqwest::Response {
    let mut body = json!({ "slot_id": slot.to_string(), "card_number": patient.card_number });
    if let Some(follows) = follows {
        body["follows_booking_id"] = json!(follows);
    }
    signed(
        &city.http,
        &city.gateway_url,
        "ownfk1",
        Method::POST,
        "/federation/v1/hospitals/ownf/follow-ups",
        Some(&body),
    )
    .header("Idempotency-Key", key)
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn a_follow_up_belongs_to_the_app_of_the_visit_it_follows_else_the_patients_latest() {
    let keys = hospital_key("ownfk1", "ownf");
    // Four bookings for one patient in one day here: the visit, a scan and
    // two follow-ups (each in its own department).
    let mut hospital: Vec<(&str, &str)> = ALL_SEATS_COMMON.to_vec();
    hospital.push(("POLICY__MAX_PER_PERSON_PER_DAY", "4"));
    let city = TestCity::spawn_configured(&["ownf"], &pairs(&keys), &hospital).await;
    let h = city.hospital(0);
    // 0: cardiology (expert), 4: pediatrics (expert), 8: endocrinology, 10: CT.
    let slots = h.seed_visit_day(3).await;
    let patient = city.cards.register().await;
    let visit = json_of(
        city.book(&slots[0], patient.person_id, "kiosk", "own-visit")
            .await,
        201,
    )
    .await;
    let visit_id = visit["booking_id"].as_str().unwrap();
    // Booked later, through another app.
    let scan = json_of(
        city.book(&slots[10], patient.person_id, "wechat", "own-scan")
            .await,
        201,
    )
    .await;
    assert_eq!(scan["owner_app"], "wechat");

    // Not naming the visit: the app of the patient's latest booking here.
    let latest = json_of(
        follow_up(&city, &slots[8], &patient, None, "fu-latest").await,
        201,
    )
    .await;
    assert_eq!(
        (&latest["channel"], &latest["owner_app"]),
        (&json!("clinic"), &json!("wechat"))
    );
    // Naming it: the visit's app.
    let named = json_of(
        follow_up(&city, &slots[4], &patient, Some(visit_id), "fu-named").await,
        201,
    )
    .await;
    assert_eq!(named["owner_app"], "kiosk");
    let named_id = named["booking_id"].as_str().unwrap();
    assert_eq!(owner_in_pg(h, named_id).await.as_deref(), Some("kiosk"));
    assert_eq!(
        event_owners(h, "booking.held", named_id).await,
        [Some("kiosk".to_owned())]
    );

    // The patient's app reads and pays it, even with the gateway's cache gone.
    forget_gateway_owners(&city).await;
    assert_eq!(
        json_of(read(&city, "kiosk", named_id, None).await, 200).await,
        named
    );
    refused(
        read(&city, "wechat", named_id, None).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    let paid = json_of(pay(&city, "kiosk", &named, None).await, 200).await;
    assert_eq!(paid["status"], "confirmed");
    assert_eq!(
        json_of(
            read(&city, "wechat", latest["booking_id"].as_str().unwrap(), None).await,
            200
        )
        .await,
        latest
    );

    // A patient with no booking made through an app: no app's, until the
    // patient's card is shown.
    let newcomer = city.cards.register().await;
    let orphan = json_of(
        follow_up(&city, &slots[8], &newcomer, None, "fu-orphan").await,
        201,
    )
    .await;
    assert!(orphan["owner_app"].is_null(), "{orphan}");
    let orphan_id = orphan["booking_id"].as_str().unwrap();
    refused(
        read(&city, "wechat", orphan_id, None).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    let card = ("X-Patient-Card", newcomer.card_number.as_str());
    json_of(read(&city, "wechat", orphan_id, Some(card)).await, 200).await;

    // The visit named must be this patient's, at this hospital.
    let other_hospital = format!("elsewhere-{}", Uuid::now_v7());
    for (follows, key) in [
        (visit_id, "fu-not-theirs"),
        (other_hospital.as_str(), "fu-elsewhere"),
        ("not-a-booking", "fu-garbage"),
    ] {
        let body = refused(
            follow_up(&city, &slots[2], &newcomer, Some(follows), key).await,
            400,
            "INVALID_FIELD",
        )
        .await;
        assert_eq!(body["field"], "follows_booking_id", "{follows}: {body}");
    }
}
