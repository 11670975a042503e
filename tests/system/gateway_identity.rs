//! Patients are named by their card or e-card, resolved through a real
//! card-issuing; the platform rules (standing, family, daily limit) are
//! applied before any hospital is asked.

use chrono::{Duration, Utc};
use jyt_system_tests::{TestCity, problem};
use reqwest::Method;

#[tokio::test]
async fn a_barred_patient_is_refused_with_the_date_the_bar_ends_and_the_hospital_is_not_asked() {
    let city = TestCity::spawn(&["barh"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(3).await;
    let patient = city.patient().await;
    let until = Utc::now() + Duration::days(60);
    city.cards.bar(patient, until).await;

    // The patient's first booking of the day: card-issuing is asked once,
    // and answers the bar with the card.
    let res = city.book(&slots[0], patient, "wechat", "barred-1").await;
    assert_barred_until(res, until).await;
    assert_eq!(h.live_bookings(&slots[0]).await, (0, 0));
    assert_eq!(cards_answered(&city, RESOLVE).await, 1);
    assert_eq!(cards_answered(&city, STANDING).await, 0);

    // Again, from the gateway's cache: the same refusal, nobody asked.
    let res = city.book(&slots[1], patient, "wechat", "barred-2").await;
    assert_barred_until(res, until).await;
    assert_eq!(h.live_bookings(&slots[1]).await, (0, 0));
    assert_eq!(cards_answered(&city, RESOLVE).await, 1);
    assert_eq!(cards_answered(&city, STANDING).await, 0);

    // Someone in good standing books the same slot, also on one call to
    // card-issuing.
    let other = city.patient().await;
    assert_eq!(
        city.book(&slots[0], other, "wechat", "fine-1").await.status(),
        201
    );
    assert_eq!(cards_answered(&city, RESOLVE).await, 2);
    assert_eq!(cards_answered(&city, STANDING).await, 0);

    // A barred member booked by their family's account holder: the
    // holder's card says nothing of the member's standing, which is asked.
    let holder = city.patient().await;
    let member = city.patient().await;
    city.cards.bind_family(holder, member).await;
    city.cards.bar(member, until).await;
    let res = city
        .book_with(
            "app",
            "barred-member",
            &serde_json::json!({
                "slot_id": slots[2].to_string(),
                "card_number": city.cards.card_of(holder),
                "patient_id": member,
            }),
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "PATIENT_BARRED");
    assert_eq!(cards_answered(&city, STANDING).await, 1);
    assert_eq!(h.live_bookings(&slots[2]).await, (0, 0));
}

/// A `403 PATIENT_BARRED` naming the end of the bar, to the second.
#[expect(clippy::unwrap_used, reason = "test helper: a failure is a failed test")]
async fn assert_barred_until(res: reqwest::Response, until: chrono::DateTime<Utc>) {
    assert_eq!(res.status(), 403);
    let body = problem(res).await;
    assert_eq!(body["code"], "PATIENT_BARRED");
    let shown = chrono::DateTime::parse_from_rfc3339(body["barred_until"].as_str().unwrap()).unwrap();
    assert_eq!(shown.timestamp(), until.timestamp());
}

/// Card numbers are resolved through the call that gathers many (the
/// one-card route serves e-card tokens).
const RESOLVE: &str = "/v1/cards/resolve-many";
const STANDING: &str = "/v1/persons/{person_id}/standing";

/// How many requests card-issuing has answered on `route` (its `/metrics`).
async fn cards_answered(city: &TestCity, route: &str) -> u64 {
    let label = format!("route=\"{route}\"");
    city.counter_sum(&city.cards.base_url, "jyt_http_requests_total", &[&label])
        .await
}

#[tokio::test]
async fn family_members_are_booked_by_their_account_holder_only() {
    let city = TestCity::spawn(&["famh"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    let holder = city.patient().await;
    let member = city.patient().await;
    let stranger = city.patient().await;
    city.cards.bind_family(holder, member).await;

    // The holder books for their bound member: the booking is the member's.
    let res = city
        .book_with(
            "app",
            "fam-1",
            &serde_json::json!({
                "slot_id": slots[0].to_string(),
                "card_number": city.cards.card_of(holder),
                "patient_id": member,
            }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let holders = h.pg_holders(&slots[0]).await;
    assert!(holders.contains_key(&member.to_string()), "{holders:?}");
    assert!(!holders.contains_key(&holder.to_string()));

    // Someone else's card cannot book the member, nor the holder.
    for victim in [member, holder] {
        let res = city
            .book_with(
                "app",
                &format!("fam-x-{victim}"),
                &serde_json::json!({
                    "slot_id": slots[1].to_string(),
                    "card_number": city.cards.card_of(stranger),
                    "patient_id": victim,
                }),
            )
            .await;
        assert_eq!(res.status(), 403);
        assert_eq!(problem(res).await["code"], "NOT_FAMILY_MEMBER");
    }
    // Nor can the member book the holder: binding is one way.
    let res = city
        .book_with(
            "app",
            "fam-rev",
            &serde_json::json!({
                "slot_id": slots[1].to_string(),
                "card_number": city.cards.card_of(member),
                "patient_id": holder,
            }),
        )
        .await;
    assert_eq!(problem(res).await["code"], "NOT_FAMILY_MEMBER");
    assert_eq!(h.live_bookings(&slots[1]).await, (0, 0));
}

#[tokio::test]
async fn e_card_tokens_are_verified_and_unknown_or_forged_cards_are_refused() {
    let city = TestCity::spawn(&["ecardh"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    let patient = city.cards.register().await;
    let token = city.cards.ecard_token(&patient).await;

    let res = city
        .book_with(
            "kiosk",
            "ecard-1",
            &serde_json::json!({ "slot_id": slots[0].to_string(), "ecard_token": token }),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert!(
        h.pg_holders(&slots[0])
            .await
            .contains_key(&patient.person_id.to_string())
    );

    let mut forged = token.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let res = city
        .book_with(
            "kiosk",
            "ecard-2",
            &serde_json::json!({ "slot_id": slots[1].to_string(), "ecard_token": String::from_utf8(forged).unwrap() }),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["code"], "ECARD_INVALID");

    // A well-formed card number nobody holds (Luhn-valid).
    let res = city
        .book_with(
            "kiosk",
            "ecard-3",
            &serde_json::json!({ "slot_id": slots[1].to_string(), "card_number": "4111111111111111" }),
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "CARD_NOT_FOUND");

    // Both at once is ambiguous.
    let res = city
        .book_with(
            "kiosk",
            "ecard-4",
            &serde_json::json!({ "slot_id": slots[1].to_string(), "card_number": patient.card_number, "ecard_token": token }),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["field"], "card_number");
}

#[tokio::test]
async fn the_city_wide_daily_limit_counts_across_hospitals_and_refusals_give_the_reservation_back() {
    let city = TestCity::spawn_with(
        &["dayone", "daytwo"],
        &[("LIMITS__DAILY_BOOKINGS_PER_PERSON", "1")],
    )
    .await;
    let (a, b) = (city.hospital(0), city.hospital(1));
    let slots_a = a.seed_visit_day(1).await;
    let slots_b = b.seed_visit_day(3).await;
    let patient = city.patient().await;

    // A sold-out refusal at the first hospital does not use up the day.
    let first = city.patient().await;
    assert_eq!(city.book(&slots_a[0], first, "wechat", "d-0").await.status(), 201);
    let res = city.book(&slots_a[0], patient, "wechat", "d-1").await;
    assert_eq!(problem(res).await["code"], "SLOT_SOLD_OUT");

    // So the patient can still book at the second hospital.
    let res = city.book(&slots_b[0], patient, "wechat", "d-2").await;
    assert_eq!(res.status(), 201);
    // A retry of that request is not a second booking of the day.
    assert_eq!(
        city.book(&slots_b[0], patient, "wechat", "d-2").await.status(),
        201
    );

    // But a second booking today, anywhere, is refused before routing.
    let res = city.book(&slots_b[1], patient, "wechat", "d-3").await;
    assert_eq!(res.status(), 409);
    let body = problem(res).await;
    assert_eq!(body["code"], "DAILY_LIMIT_REACHED");
    assert_eq!(body["limit"], 1);
    assert_eq!(b.live_bookings(&slots_b[1]).await, (0, 0));

    // The counter lives under the person's own hash tag.
    let mut conn = a.state.redis.clone();
    let day = jyt_domain::time::today();
    let key = format!("{}:{{p:{patient}}}:daily:{day}", city.redis_prefix);
    let held: i64 = jyt_cache::redis::cmd("HLEN")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 1);

    // A booking is shown to the channel app that made it only.
    let booked: serde_json::Value = city
        .book(&slots_b[0], patient, "wechat", "d-2")
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/v1/bookings/{}", booked["booking_id"].as_str().unwrap());
    let res = city
        .signed("wechat", Method::GET, &path, None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = city
        .signed("kiosk", Method::GET, &path, None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
}

/// A release second's first visits go to card-issuing together: with one
/// resolve call out at a time, patients' first bookings sent at once are
/// resolved in fewer calls than there are patients, and each is booked
/// for the patient its own card names. A lost card and a number no card
/// carries among them are refused as they would be alone, and hold up
/// nobody else.
#[tokio::test]
async fn first_visits_at_once_are_resolved_together_each_for_its_own_card() {
    let city = TestCity::spawn_with(&["gather"], &[("CARD_ISSUING__RESOLVE_CALLS_IN_FLIGHT", "1")]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(40).await;
    let patients = city.cards.register_many(24).await;
    let lost = city.cards.register().await;
    let res = city
        .cards
        .http
        .post(format!(
            "{}/v1/cards/{}/report-loss",
            city.cards.base_url, lost.card_id
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let body = "911099999999990";
    let digit = jyt_domain::card_number::luhn_check_digit(body).unwrap();
    let unknown = format!("{body}{digit}");

    // Each at a segment of its own: a channel's pool is a share of the seats.
    let book = |i: usize, card: String, key: String| {
        let city = &city;
        let slot = slots[i % slots.len()].to_string();
        async move {
            let body = serde_json::json!({ "slot_id": slot, "card_number": card });
            city.book_with("wechat", &key, &body).await
        }
    };
    let mut attempts: Vec<_> = patients
        .iter()
        .enumerate()
        .map(|(i, p)| book(i, p.card_number.clone(), format!("first-{}", p.person_id)))
        .collect();
    attempts.push(book(24, lost.card_number.clone(), "first-lost".into()));
    attempts.push(book(25, unknown, "first-unknown".into()));
    let answers = futures::future::join_all(attempts).await;

    let mut answers = answers.into_iter();
    for (patient, res) in patients.iter().zip(answers.by_ref()) {
        assert_eq!(res.status(), 201, "{}", patient.person_id);
        let booking: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            booking["patient_id"],
            patient.person_id.to_string(),
            "booked for the card's own holder"
        );
    }
    let lost_answer = answers.next().unwrap();
    assert_eq!(lost_answer.status(), 403);
    assert_eq!(problem(lost_answer).await["code"], "CARD_UNUSABLE");
    let unknown_answer = answers.next().unwrap();
    assert_eq!(unknown_answer.status(), 404);
    assert_eq!(problem(unknown_answer).await["code"], "CARD_NOT_FOUND");

    let calls = cards_answered(&city, RESOLVE).await;
    assert!(
        (1..26).contains(&calls),
        "26 first visits resolved in {calls} calls"
    );
    let mut booked = 0;
    for slot in slots.iter().take(24) {
        booked += h.live_bookings(slot).await.0;
    }
    assert_eq!(booked, 24);
}
