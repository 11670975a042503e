//! Patient services through the gateway (issue 22 A): registration with
//! real-name data, online e-card application, loss and replacement, the
//! ledger, family binding by the Gansu rules, standing and appeals, and a
//! patient's bookings gathered from every hospital. Each route refuses an
//! outsider (unsigned), another app, and another patient.
#![expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use jyt_system_tests::{ALL_SEATS_COMMON, Callback, TestCity, eventually, problem, spawn_accounting};

/// A valid resident ID number of someone born on `birth` (`YYYYMMDD`).
fn id_number_born(birth: &str) -> String {
    let seq = Uuid::new_v4().as_u128() % 1000;
    let first17 = format!("110105{birth}{seq:03}");
    let check = jyt_domain::id_number::id_check_char(first17.as_bytes()).unwrap();
    format!("{first17}{}", char::from(check))
}

fn adult_id() -> String {
    id_number_born(&format!(
        "19{:02}0{}1{}",
        60 + Uuid::new_v4().as_u128() % 30,
        1 + Uuid::new_v4().as_u128() % 9,
        Uuid::new_v4().as_u128() % 9
    ))
}

fn child_id() -> String {
    id_number_born(&format!(
        "20{:02}0{}1{}",
        15 + Uuid::new_v4().as_u128() % 5,
        1 + Uuid::new_v4().as_u128() % 9,
        Uuid::new_v4().as_u128() % 9
    ))
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn call(city: &TestCity, app: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    send(city.signed(app, method, path, body)).await
}

/// Register through `app`; the person id.
async fn enrol(city: &TestCity, app: &str, id_number: &str) -> Uuid {
    let body = json!({ "name": "王小明", "id_number": id_number, "phone": "13912345678" });
    let (status, person) = call(city, app, Method::POST, "/v1/patients", Some(&body)).await;
    assert_eq!(status, 201, "{person}");
    person["person_id"].as_str().unwrap().parse().unwrap()
}

/// Apply for an e-card through `app`; the card.
async fn ecard(city: &TestCity, app: &str, person: Uuid) -> Value {
    let res = city
        .signed(app, Method::POST, &format!("/v1/patients/{person}/ecard"), None)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

async fn persons_in_card_db(city: &TestCity) -> i64 {
    let (client, conn) =
        jyt_db::tokio_postgres::connect(&city.cards.database_url, jyt_db::tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM persons", &[])
        .await
        .unwrap()
        .get(0)
}

async fn card_sql(city: &TestCity, sql: &str) {
    let (client, conn) =
        jyt_db::tokio_postgres::connect(&city.cards.database_url, jyt_db::tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one patient's story, step by step")]
async fn a_patient_enrols_gets_an_ecard_tops_up_loses_and_replaces_it_through_their_channel() {
    let city = TestCity::spawn(&["psa"]).await;
    let (accounting, _db, token) = spawn_accounting(&city.redis_prefix).await;

    // Unsigned: refused before anything.
    let res = city
        .http
        .post(format!("{}/v1/patients", city.gateway_url))
        .json(&json!({ "name": "x", "id_number": adult_id(), "phone": "13912345678" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Bad input names the field and writes nothing.
    let before = persons_in_card_db(&city).await;
    let good = adult_id();
    let mut bad_check = good.clone();
    let last = bad_check.pop().unwrap();
    bad_check.push(if last == '1' { '2' } else { '1' });
    for (body, field, code) in [
        (
            json!({ "name": "王", "id_number": bad_check, "phone": "13912345678" }),
            "id_number",
            "ID_NUMBER_BAD_CHECK_DIGIT",
        ),
        (
            json!({ "name": "王", "id_number": id_number_born("20991231"), "phone": "13912345678" }),
            "id_number",
            "ID_NUMBER_BAD_BIRTH_DATE",
        ),
        (
            json!({ "name": "", "id_number": good, "phone": "13912345678" }),
            "name",
            "INVALID_FIELD",
        ),
        (
            json!({ "name": "王", "id_number": good, "phone": "12345" }),
            "phone",
            "INVALID_FIELD",
        ),
        (
            json!({ "name": "王", "id_number": good, "phone": "13912345678", "enrolled_by_app": "kiosk" }),
            "enrolled_by_app",
            "INVALID_FIELD",
        ),
    ] {
        let res = city
            .signed("wechat", Method::POST, "/v1/patients", Some(&body))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let p = problem(res).await;
        assert_eq!(p["field"], field, "{p}");
        assert_eq!(p["code"], code, "{p}");
    }
    assert_eq!(persons_in_card_db(&city).await, before, "nothing written");

    let person = enrol(&city, "wechat", &good).await;
    let (status, again) = call(
        &city,
        "app",
        Method::POST,
        "/v1/patients",
        Some(&json!({ "name": "王小明", "id_number": good, "phone": "13912345678" })),
    )
    .await;
    assert_eq!(status, 200, "the same ID number again: the existing person");
    assert_eq!(again["enrolled_by_app"], "wechat", "another app enrols nobody");
    assert!(again["id_number_masked"].as_str().unwrap().contains('*'));
    let (status, conflict) = call(
        &city,
        "wechat",
        Method::POST,
        "/v1/patients",
        Some(&json!({ "name": "李四", "id_number": good, "phone": "13912345678" })),
    )
    .await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (409, Some("IDENTITY_CONFLICT"))
    );

    // Whose patient: the enrolling app, not another one.
    let me = format!("/v1/patients/{person}");
    assert_eq!(call(&city, "wechat", Method::GET, &me, None).await.0, 200);
    let (status, refused) = call(&city, "app", Method::GET, &me, None).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("NOT_YOUR_PATIENT"))
    );
    let stranger = format!("/v1/patients/{}", Uuid::now_v7());
    assert_eq!(
        call(&city, "wechat", Method::GET, &stranger, None).await.1["code"],
        "NOT_YOUR_PATIENT"
    );

    // Online e-card: idempotent under the key, only for the enrolling app.
    let ecard_path = format!("{me}/ecard");
    let key = Uuid::new_v4().to_string();
    let first = send(
        city.signed("wechat", Method::POST, &ecard_path, None)
            .header("Idempotency-Key", &key),
    )
    .await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(first.1["kind"], "ecard");
    assert_eq!(first.1["channel"], "wechat");
    let replay = send(
        city.signed("wechat", Method::POST, &ecard_path, None)
            .header("Idempotency-Key", &key),
    )
    .await;
    assert_eq!((replay.0, &replay.1["card_id"]), (200, &first.1["card_id"]));
    let no_key = send(city.signed("wechat", Method::POST, &ecard_path, None)).await;
    assert_eq!(
        (no_key.0, no_key.1["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );
    let other = send(
        city.signed("app", Method::POST, &ecard_path, None)
            .header("Idempotency-Key", &key),
    )
    .await;
    assert_eq!(
        (other.0, other.1["code"].as_str()),
        (403, Some("NOT_YOUR_PATIENT"))
    );
    let card_id = first.1["card_id"].as_str().unwrap().to_owned();
    let card_number = first.1["card_number"].as_str().unwrap().to_owned();

    // Another app reads with the patient's card as consent; another
    // patient's card is no consent for this patient.
    let read = send(
        city.signed("app", Method::GET, &me, None)
            .header("X-Patient-Card", &card_number),
    )
    .await;
    assert_eq!(read.0, 200);
    let other_person = enrol(&city, "app", &adult_id()).await;
    let other_card = ecard(&city, "app", other_person).await;
    let wrong = send(
        city.signed("app", Method::GET, &me, None)
            .header("X-Patient-Card", other_card["card_number"].as_str().unwrap()),
    )
    .await;
    assert_eq!(wrong.1["code"], "NOT_YOUR_PATIENT");
    // A card number is consent to read, not to act.
    let act = send(
        city.signed("app", Method::POST, &ecard_path, None)
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .header("X-Patient-Card", &card_number),
    )
    .await;
    assert_eq!(act.1["code"], "NOT_YOUR_PATIENT");

    // Top-ups only from the channel's signed payment notification.
    let top_up = |reference: &str, amount: i64| json!({ "card_number": card_number, "amount_fen": amount, "payment_reference": reference });
    for (reference, amount) in [("wx-100", 5_000), ("wx-101", 1_234), ("wx-100", 5_000)] {
        let (status, _) = call(
            &city,
            "wechat",
            Method::POST,
            "/v1/cards/top-ups",
            Some(&top_up(reference, amount)),
        )
        .await;
        assert!(status == 201 || status == 200);
    }
    let ledger_path = format!("{me}/cards/{card_id}/ledger");
    let (status, ledger) = call(&city, "wechat", Method::GET, &ledger_path, None).await;
    assert_eq!(status, 200, "{ledger}");
    assert_eq!(ledger["balance_fen"], 6_234);
    let credited: i64 = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount_fen"].as_i64().unwrap())
        .sum();
    assert_eq!(credited, 6_234, "the ledger sums to the balance");
    assert_eq!(
        call(&city, "app", Method::GET, &ledger_path, None).await.1["code"],
        "NOT_YOUR_PATIENT"
    );
    let others_card = format!("{me}/cards/{}/ledger", other_card["card_id"].as_str().unwrap());
    assert_eq!(
        call(&city, "wechat", Method::GET, &others_card, None).await.1["code"],
        "NOT_YOUR_PATIENT"
    );
    // channel-accounting counted the same money, to the fen.
    let today = jyt_domain::time::today();
    eventually(
        Duration::from_secs(20),
        "the top-ups in the money report",
        || async {
            let report: Value = city
                .http
                .get(format!("{accounting}/v1/reports/money?date={today}"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (report["total_topups_fen"] == 6_234).then_some(())
        },
    )
    .await;

    // Loss and replacement: the balance moves to the new e-card.
    let loss = format!("{me}/cards/{card_id}/report-loss");
    assert_eq!(
        call(&city, "app", Method::POST, &loss, None).await.1["code"],
        "NOT_YOUR_PATIENT"
    );
    let (status, lost) = call(&city, "wechat", Method::POST, &loss, None).await;
    assert_eq!((status, lost["status"].as_str()), (200, Some("lost")), "{lost}");
    let (status, _) = call(
        &city,
        "wechat",
        Method::POST,
        "/v1/cards/top-ups",
        Some(&top_up("wx-102", 1)),
    )
    .await;
    assert_eq!(status, 403, "a lost card takes no money");
    let replace = format!("{me}/cards/{card_id}/replace");
    let (status, bad) = call(
        &city,
        "wechat",
        Method::POST,
        &replace,
        Some(&json!({ "chip_serial": "ABCDEF0123" })),
    )
    .await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("chip_serial")));
    let (status, new_card) = call(&city, "wechat", Method::POST, &replace, Some(&json!({}))).await;
    assert_eq!(status, 201, "{new_card}");
    assert_eq!(new_card["balance_fen"], 6_234);
    assert_eq!(new_card["replaces_card_id"], card_id.as_str());
    let (_, cards) = call(&city, "wechat", Method::GET, &format!("{me}/cards"), None).await;
    assert_eq!(cards["cards"].as_array().unwrap().len(), 2);
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "the Gansu rules at their limits, one after another"
)]
async fn family_binding_follows_the_gansu_rules_and_adults_confirm_with_their_own_code() {
    let member_app = Callback::start().await;
    let city = TestCity::spawn_with(
        &["psf"],
        &[("CHANNEL_APPS__APP__CALLBACK_URL", member_app.url.as_str())],
    )
    .await;
    let holder = enrol(&city, "wechat", &adult_id()).await;
    let family = format!("/v1/patients/{holder}/family");

    // Under 16: the guardian proof's reference is needed; with it, bound.
    let child = enrol(&city, "wechat", &child_id()).await;
    let (status, p) = call(
        &city,
        "wechat",
        Method::POST,
        &family,
        Some(&json!({ "member_id": child, "relationship": "child" })),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str(), p["field"].as_str()),
        (422, Some("GUARDIAN_PROOF_REQUIRED"), Some("guardian_proof_ref"))
    );
    let bind_child = |member: Uuid| json!({ "member_id": member, "relationship": "child", "guardian_proof_ref": "birth-cert-0001" });
    let (status, bound) = call(&city, "wechat", Method::POST, &family, Some(&bind_child(child))).await;
    assert_eq!(status, 201, "{bound}");
    assert_eq!(bound["proof_kind"], "guardian_proof");
    // Another app, and a bad body, are refused.
    assert_eq!(
        call(&city, "app", Method::POST, &family, Some(&bind_child(child)))
            .await
            .1["code"],
        "NOT_YOUR_PATIENT"
    );
    let (status, p) = call(
        &city,
        "wechat",
        Method::POST,
        &family,
        Some(&json!({ "member_id": "x", "relationship": "child" })),
    )
    .await;
    assert_eq!((status, p["field"].as_str()), (400, Some("member_id")));

    // 16 and over: a one-time code to the member's OWN app, never a reference.
    let adult = enrol(&city, "app", &adult_id()).await;
    let (status, p) = call(
        &city,
        "wechat",
        Method::POST,
        &family,
        Some(&json!({ "member_id": adult, "relationship": "spouse", "guardian_proof_ref": "made-up" })),
    )
    .await;
    assert_eq!(
        (status, p["field"].as_str()),
        (400, Some("guardian_proof_ref")),
        "{p}"
    );
    // Not bound yet: the holder cannot book for them (the gateway caches
    // the holder's family meanwhile; the binding below must reach it).
    let slots = city.hospital(0).seed_visit_day(5).await;
    let holder_card = ecard(&city, "wechat", holder).await["card_number"]
        .as_str()
        .unwrap()
        .to_owned();
    let for_member =
        json!({ "slot_id": slots[0].to_string(), "card_number": holder_card, "patient_id": adult });
    let res = city.book_with("wechat", "fam-1", &for_member).await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_FAMILY_MEMBER");
    let (status, started) = call(
        &city,
        "wechat",
        Method::POST,
        &family,
        Some(&json!({ "member_id": adult, "relationship": "spouse" })),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    assert!(
        started.get("code").is_none(),
        "the holder's app never sees the code"
    );
    let verification = started["verification_id"].as_str().unwrap().to_owned();
    let code = member_app
        .wait_for("the member's code", Duration::from_secs(10), |seen| {
            seen.iter()
                .find(|r| r.body["verification_id"] == verification.as_str())
                .map(|r| {
                    assert!(r.signed_by("app"), "signed with the member's app's secret");
                    assert_eq!(r.notice_type(), "family.verification_code");
                    r.body["code"].as_str().unwrap().to_owned()
                })
        })
        .await;
    let confirm = format!("/v1/family-verifications/{verification}/confirm");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(
        call(
            &city,
            "wechat",
            Method::POST,
            &confirm,
            Some(&json!({ "code": code }))
        )
        .await
        .1["code"],
        "NOT_YOUR_PATIENT",
        "the holder's app cannot confirm for the member"
    );
    let (status, p) = call(
        &city,
        "app",
        Method::POST,
        &confirm,
        Some(&json!({ "code": "12ab" })),
    )
    .await;
    assert_eq!((status, p["field"].as_str()), (400, Some("code")));
    let (status, p) = call(
        &city,
        "app",
        Method::POST,
        &confirm,
        Some(&json!({ "code": wrong })),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str(), p["attempts_left"].as_i64()),
        (422, Some("VERIFICATION_CODE_WRONG"), Some(4))
    );
    let (status, binding) = call(
        &city,
        "app",
        Method::POST,
        &confirm,
        Some(&json!({ "code": code })),
    )
    .await;
    assert_eq!(status, 201, "{binding}");
    assert_eq!(binding["proof_kind"], "member_verification");
    let res = city.book_with("wechat", "fam-2", &for_member).await;
    assert_eq!(res.status(), 201, "the holder books for the member once bound");
    let (_, listed) = call(&city, "wechat", Method::GET, &family, None).await;
    assert_eq!(listed["members"].as_array().unwrap().len(), 2);

    // Five wrong codes lock a verification; an expired one is refused.
    let adult2 = enrol(&city, "app", &adult_id()).await;
    let (_, started) = call(
        &city,
        "wechat",
        Method::POST,
        &family,
        Some(&json!({ "member_id": adult2, "relationship": "parent" })),
    )
    .await;
    let locked = format!(
        "/v1/family-verifications/{}/confirm",
        started["verification_id"].as_str().unwrap()
    );
    for left in (1..5).rev() {
        let (_, p) = call(
            &city,
            "app",
            Method::POST,
            &locked,
            Some(&json!({ "code": "999999" })),
        )
        .await;
        if p["code"] == "VERIFICATION_CODE_WRONG" {
            assert_eq!(p["attempts_left"], left);
        } else {
            // The random code was 999999: vanishingly rare; still bound.
            assert_eq!(p["proof_kind"], "member_verification");
            return;
        }
    }
    let (status, p) = call(
        &city,
        "app",
        Method::POST,
        &locked,
        Some(&json!({ "code": "999999" })),
    )
    .await;
    assert_eq!((status, p["code"].as_str()), (409, Some("VERIFICATION_LOCKED")));
    let adult3 = enrol(&city, "app", &adult_id()).await;
    let (_, started) = call(
        &city,
        "wechat",
        Method::POST,
        &family,
        Some(&json!({ "member_id": adult3, "relationship": "parent" })),
    )
    .await;
    let id3 = started["verification_id"].as_str().unwrap().to_owned();
    let code3 = member_app
        .wait_for("the third code", Duration::from_secs(10), |seen| {
            seen.iter()
                .find(|r| r.body["verification_id"] == id3.as_str())
                .map(|r| r.body["code"].as_str().unwrap().to_owned())
        })
        .await;
    // Five minutes pass (the clock is card-issuing's database's).
    card_sql(
        &city,
        &format!(
            "UPDATE family_verifications SET expires_at = now() - interval '1 second' WHERE id = '{id3}'"
        ),
    )
    .await;
    let (status, p) = call(
        &city,
        "app",
        Method::POST,
        &format!("/v1/family-verifications/{id3}/confirm"),
        Some(&json!({ "code": code3 })),
    )
    .await;
    assert_eq!((status, p["code"].as_str()), (409, Some("VERIFICATION_EXPIRED")));

    // A member of an app without a callback cannot be sent a code.
    let deskless = enrol(&city, "kiosk", &adult_id()).await;
    let (status, p) = call(
        &city,
        "wechat",
        Method::POST,
        &family,
        Some(&json!({ "member_id": deskless, "relationship": "parent" })),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (409, Some("MEMBER_CHANNEL_UNKNOWN"))
    );

    // The holder's 5 new bindings this month: 2 made, 3 more, the 6th refused.
    for _ in 0..3 {
        let c = enrol(&city, "wechat", &child_id()).await;
        assert_eq!(
            call(&city, "wechat", Method::POST, &family, Some(&bind_child(c)))
                .await
                .0,
            201
        );
    }
    let sixth = enrol(&city, "wechat", &child_id()).await;
    let (status, p) = call(&city, "wechat", Method::POST, &family, Some(&bind_child(sixth))).await;
    assert_eq!(
        (status, p["code"].as_str(), p["limit"].as_i64()),
        (409, Some("FAMILY_HOLDER_MONTHLY_LIMIT"), Some(5))
    );

    // One person bound at most twice a month: a third holder is refused.
    let popular = enrol(&city, "wechat", &child_id()).await;
    for n in 0..3 {
        let h = enrol(&city, "wechat", &adult_id()).await;
        let (status, p) = call(
            &city,
            "wechat",
            Method::POST,
            &format!("/v1/patients/{h}/family"),
            Some(&bind_child(popular)),
        )
        .await;
        if n < 2 {
            assert_eq!(status, 201, "{p}");
        } else {
            assert_eq!(
                (status, p["code"].as_str(), p["limit"].as_i64()),
                (409, Some("FAMILY_MEMBER_MONTHLY_LIMIT"), Some(2))
            );
        }
    }
}

/// Book a slot for a patient named by card, confirmed (paid if held).
async fn confirmed_booking(
    city: &TestCity,
    slot: &jyt_domain::SlotRef,
    card_number: &str,
    key: &str,
) -> Value {
    let res = city
        .book_with(
            "wechat",
            key,
            &json!({ "slot_id": slot.to_string(), "card_number": card_number }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let booking: Value = res.json().await.unwrap();
    if booking["status"] == "held" {
        assert_eq!(city.pay("wechat", &booking).await.status(), 200);
    }
    booking
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "three no-shows, three appeals")]
async fn appeals_are_granted_when_the_hospital_caused_the_no_show_and_queued_otherwise() {
    let city = TestCity::spawn_configured(&["psn"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    // Three patients, one booking each, in three different clinics.
    let mut people = Vec::new();
    for (i, slot) in slots.iter().take(3).enumerate() {
        let person = enrol(&city, "wechat", &adult_id()).await;
        let card = ecard(&city, "wechat", person).await;
        let number = card["card_number"].as_str().unwrap().to_owned();
        let booking = confirmed_booking(&city, slot, &number, &format!("ps-{i}")).await;
        people.push((person, number, booking));
    }
    // The patient's bookings, gathered from the hospitals.
    let (person0, _, booking0) = &people[0];
    let (status, listed) = call(
        &city,
        "wechat",
        Method::GET,
        &format!("/v1/patients/{person0}/bookings"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["bookings"][0]["booking_id"], booking0["booking_id"]);
    assert_eq!(listed["unavailable_hospitals"], json!([]));
    assert_eq!(
        call(
            &city,
            "app",
            Method::GET,
            &format!("/v1/patients/{person0}/bookings"),
            None
        )
        .await
        .1["code"],
        "NOT_YOUR_PATIENT"
    );

    // The visits pass with nobody checked in: the hospital's own sweeper
    // marks the no-shows and card-issuing counts them.
    for (_, _, booking) in &people {
        let slot = booking["slot_id"].as_str().unwrap();
        let segment = slot.split_once('-').unwrap().1;
        h.sql(&format!(
            "UPDATE segments SET starts_at = now() - interval '3 hours', ends_at = now() - interval '2 hours' WHERE id = '{segment}'"
        ))
        .await;
    }
    let mut events = Vec::new();
    for (person, _, booking) in &people {
        let standing = eventually(Duration::from_secs(20), "the no-show counted", || async {
            let (_, s) = call(
                &city,
                "wechat",
                Method::GET,
                &format!("/v1/patients/{person}/standing"),
                None,
            )
            .await;
            (s["no_shows"].as_array().map_or(0, Vec::len) == 1).then_some(s)
        })
        .await;
        assert_eq!(standing["no_shows"][0]["booking_id"], booking["booking_id"]);
        assert_eq!(standing["appeals"], json!([]));
        events.push(standing["no_shows"][0]["event_id"].as_str().unwrap().to_owned());
    }

    // 1: the hospital stops the clinic afterwards (the doctor never came).
    let schedule = people[0].2["schedule_id"].as_str().unwrap();
    let res = h
        .http()
        .post(format!("{}/v1/schedules/{schedule}/stop", h.base_url))
        .json(&json!({ "reason": "医生未出诊" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // 2: the hospital records the arrival late.
    let late = people[1].2["booking_id"].as_str().unwrap();
    let res = h
        .http()
        .post(format!("{}/v1/bookings/{late}/arrive", h.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let appeal = |i: usize| {
        let (person, _, _) = &people[i];
        (
            format!("/v1/patients/{person}/appeals"),
            json!({ "no_show_event_id": events[i], "reason": "医院原因" }),
        )
    };
    // Refused for another app, bad input, another patient's no-show.
    let (path0, body0) = appeal(0);
    assert_eq!(
        call(&city, "app", Method::POST, &path0, Some(&body0)).await.1["code"],
        "NOT_YOUR_PATIENT"
    );
    let (status, p) = call(
        &city,
        "wechat",
        Method::POST,
        &path0,
        Some(&json!({ "no_show_event_id": events[0], "reason": " " })),
    )
    .await;
    assert_eq!((status, p["field"].as_str()), (400, Some("reason")));
    let (status, p) = call(
        &city,
        "wechat",
        Method::POST,
        &path0,
        Some(&json!({ "no_show_event_id": events[1], "reason": "x" })),
    )
    .await;
    assert_eq!((status, p["code"].as_str()), (404, Some("NO_SHOW_NOT_FOUND")));

    for (i, (status, automatic, by)) in [
        ("granted", true, "auto"),
        ("granted", true, "auto"),
        ("pending", false, ""),
    ]
    .into_iter()
    .enumerate()
    {
        let (path, body) = appeal(i);
        let (code, a) = call(&city, "wechat", Method::POST, &path, Some(&body)).await;
        assert_eq!(code, 201, "{a}");
        assert_eq!(a["status"], status, "appeal {i}: {a}");
        assert_eq!(a["automatic"], automatic);
        if automatic {
            assert_eq!(a["decided_by"], by);
        }
        let (_, s) = call(
            &city,
            "wechat",
            Method::GET,
            &format!("/v1/patients/{}/standing", people[i].0),
            None,
        )
        .await;
        assert_eq!(s["no_shows"][0]["waived"], automatic, "{s}");
        assert_eq!(s["appeals"][0]["appeal_id"], a["appeal_id"]);
    }
    // The third waits in the operators' queue at card-issuing.
    let queue: Value = city
        .cards
        .http
        .get(format!(
            "{}/v1/appeals?status=pending&hospital_id=psn",
            city.cards.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pending = queue["appeals"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["person_id"], people[2].0.to_string());
}

#[tokio::test]
async fn a_patients_bookings_name_the_hospital_that_did_not_answer() {
    let city = TestCity::spawn_with_dead(&["psl"], &["psdown"], &[("UPSTREAM__TIMEOUT_MS", "500")]).await;
    let slots = city.hospital(0).seed_visit_day(5).await;
    let person = enrol(&city, "wechat", &adult_id()).await;
    let card = ecard(&city, "wechat", person).await;
    let booking = confirmed_booking(&city, &slots[0], card["card_number"].as_str().unwrap(), "psl-1").await;
    let path = format!("/v1/patients/{person}/bookings");
    let (status, listed) = call(&city, "wechat", Method::GET, &path, None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["bookings"].as_array().unwrap().len(), 1);
    assert_eq!(listed["bookings"][0]["booking_id"], booking["booking_id"]);
    let down = listed["unavailable_hospitals"].as_array().unwrap();
    assert_eq!(down.len(), 1, "{listed}");
    assert_eq!(down[0]["hospital_id"], "psdown");
    // Another patient's card is no consent; the patient's own card is.
    let other = enrol(&city, "app", &adult_id()).await;
    let other_card = ecard(&city, "app", other).await;
    let theirs = send(
        city.signed("app", Method::GET, &path, None)
            .header("X-Patient-Card", other_card["card_number"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        (theirs.0, theirs.1["code"].as_str()),
        (403, Some("NOT_YOUR_PATIENT"))
    );
    let own = send(
        city.signed("app", Method::GET, &path, None)
            .header("X-Patient-Card", card["card_number"].as_str().unwrap()),
    )
    .await;
    assert_eq!(own.0, 200);
}

#[tokio::test]
async fn fhir_patient_and_related_person_follow_the_same_rules_and_validate() {
    let city = TestCity::spawn(&["psr"]).await;
    let id_number = adult_id();
    let patient = json!({
        "resourceType": "Patient",
        "name": [{ "text": "赵六" }],
        "identifier": [{ "system": "urn:jyt:resident-id", "value": id_number }],
        "telecom": [{ "system": "phone", "value": "13912345678" }],
    });
    let (status, created) = call(&city, "wechat", Method::POST, "/fhir/Patient", Some(&patient)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["resourceType"], "Patient");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(!created.to_string().contains(&id_number), "no ID number in FHIR");

    // Bad input: an OperationOutcome naming the element.
    let mut bad = patient.clone();
    bad["identifier"][0]["value"] = json!("110105199001011230");
    let (status, outcome) = call(&city, "wechat", Method::POST, "/fhir/Patient", Some(&bad)).await;
    assert_eq!(status, 400, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.identifier");
    let (status, outcome) = call(
        &city,
        "wechat",
        Method::POST,
        "/fhir/Patient",
        Some(&json!({ "resourceType": "Patient" })),
    )
    .await;
    assert_eq!(
        (status, outcome["issue"][0]["expression"][0].as_str()),
        (400, Some("Patient.name[0].text"))
    );

    let (status, read) = call(&city, "wechat", Method::GET, &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["name"][0]["text"], "赵六");
    let (status, refused) = call(&city, "app", Method::GET, &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(status, 403);
    assert_eq!(
        refused["issue"][0]["details"]["coding"][0]["code"],
        "NOT_YOUR_PATIENT"
    );
    let unsigned = city
        .http
        .get(format!("{}/fhir/Patient/{id}", city.gateway_url))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    // A child bound to them, as a RelatedPerson of the child.
    let holder: Uuid = id.parse().unwrap();
    let child = enrol(&city, "wechat", &child_id()).await;
    let (status, _) = call(
        &city,
        "wechat",
        Method::POST,
        &format!("/v1/patients/{holder}/family"),
        Some(&json!({ "member_id": child, "relationship": "child", "guardian_proof_ref": "hukou-7" })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, bundle) = call(
        &city,
        "wechat",
        Method::GET,
        &format!("/fhir/RelatedPerson?patient=Patient/{child}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(bundle["total"], 1);
    let related = &bundle["entry"][0]["resource"];
    assert_eq!(related["patient"]["reference"], format!("Patient/{child}"));
    assert_eq!(related["identifier"][0]["value"], id.as_str());
    let (status, _) = call(&city, "wechat", Method::GET, "/fhir/RelatedPerson?name=x", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        call(
            &city,
            "app",
            Method::GET,
            &format!("/fhir/RelatedPerson?patient=Patient/{child}"),
            None
        )
        .await
        .0,
        403
    );
    crate::fhir::validate(&[created, read, bundle, refused, outcome]).await;
}
