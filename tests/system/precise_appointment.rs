//! 精准预约 (issue 23, part 1), end to end through the gateway, the
//! federation API and the console: the hospital publishes an expert's
//! patient profile; a patient whose expert clinic is sold out submits
//! their history; the expert's rule (or the hospital's decision) matches
//! it, and one seat is added (加号) to the expert's next session, held for
//! that patient and not the waitlist; the patient's app is told and pays
//! it like any hold, and the money agrees to the fen. A match with no
//! session to add a seat to waits, matched, until the hospital publishes
//! one. Every refusal leaves nothing changed.

#![expect(clippy::unwrap_used, reason = "test: a failure is a failed test")]

use std::time::Duration;

use jyt_system_tests::{
    ALL_SEATS_COMMON, Callback, Session, TestCity, TestConsole, TestPatient, eventually, fed, federated_city,
    problem, visit_day,
};
use reqwest::Method;
use serde_json::{Value, json};

const FEE_FEN: i64 = 5_000;
const DOCTOR: &str = "doc-lung-1";

async fn city(callback: &Callback) -> (TestCity, TestConsole) {
    federated_city(callback, ALL_SEATS_COMMON).await
}

/// The expert's session on `date` (2 seats), published by pumch; (schedule, slot).
async fn session(city: &TestCity, id: &str, date: chrono::NaiveDate) -> (String, jyt_domain::SlotRef) {
    let body = Session {
        id,
        doctor: DOCTOR,
        date,
        session: "morning",
        starts: "09:00",
        capacity: 2,
        fee_fen: FEE_FEN,
        for_waitlist: false,
    }
    .body();
    let res = fed(
        city,
        "pumchk1",
        Method::PUT,
        "/federation/v1/hospitals/pumch/schedules",
        Some(&body),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let out: Value = res.json().await.unwrap();
    let schedule = out["schedules"][0]["schedule_id"].as_str().unwrap().to_owned();
    let slot = format!(
        "pumch-{}",
        out["schedules"][0]["segment_ids"][0].as_str().unwrap()
    )
    .parse()
    .unwrap();
    (schedule, slot)
}

fn profile(auto_match: &str) -> Value {
    json!({
        "conditions": ["C34", "D02.2"],
        "findings": ["ct_nodule_over_8mm", "ground_glass_opacity"],
        "min_age": 18,
        "max_age": 90,
        "required_documents": ["ct_report"],
        "auto_match": auto_match,
        "note": "肺结节、早期肺癌 lung nodules, early lung cancer",
    })
}

async fn put_profile(city: &TestCity, body: &Value) -> reqwest::Response {
    fed(
        city,
        "pumchk1",
        Method::PUT,
        &format!("/federation/v1/hospitals/pumch/doctors/{DOCTOR}/precise-profile"),
        Some(body),
    )
    .send()
    .await
    .unwrap()
}

/// A history; `finding`: whether it reports the expert's finding.
fn history(patient: &TestPatient, finding: bool) -> Value {
    json!({
        "card_number": patient.card_number,
        "diagnosis_codes": ["C34.1"],
        "findings": if finding { json!(["ct_nodule_over_8mm"]) } else { json!(["cough"]) },
        "age_years": 58,
        "symptom_days": 40,
        "prior_treatment": "抗炎治疗两周 two weeks of antibiotics",
        "documents": [{ "kind": "ct_report", "id": "ct-2026-000123" }],
    })
}

async fn submit(city: &TestCity, app: &str, body: &Value) -> reqwest::Response {
    city.signed(
        app,
        Method::POST,
        &format!("/v1/hospitals/pumch/doctors/{DOCTOR}/precise-submissions"),
        Some(body),
    )
    .send()
    .await
    .unwrap()
}

async fn read(city: &TestCity, app: &str, id: &str, card: Option<&str>) -> reqwest::Response {
    let mut req = city.signed(app, Method::GET, &format!("/v1/precise-submissions/{id}"), None);
    if let Some(card) = card {
        req = req.header("X-Patient-Card", card);
    }
    req.send().await.unwrap()
}

async fn decide(city: &TestCity, key: &str, hospital: &str, id: &str, body: &Value) -> reqwest::Response {
    fed(
        city,
        key,
        Method::POST,
        &format!("/federation/v1/hospitals/{hospital}/precise-submissions/{id}/decision"),
        Some(body),
    )
    .send()
    .await
    .unwrap()
}

/// The hospital's worklist in `status`.
async fn worklist(city: &TestCity, status: &str) -> Vec<Value> {
    let res = fed(
        city,
        "pumchk1",
        Method::GET,
        &format!("/federation/v1/hospitals/pumch/precise-submissions?status={status}"),
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["submissions"].as_array().unwrap().clone()
}

async fn booking(city: &TestCity, id: &str) -> Value {
    let res = city.get_booking(id).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The hospital's uuid of a `<hospital>-<uuid>` submission id.
fn uuid_of(id: &str) -> &str {
    id.trim_start_matches("pumch-")
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn a_matching_history_gets_a_seat_added_for_that_patient_who_pays_it_and_the_console_counts_it() {
    let callback = Callback::start().await;
    let (city, console) = city(&callback).await;
    let (schedule, slot) = session(&city, "his-lung-am", visit_day()).await;
    let res = put_profile(&city, &profile("condition_and_finding")).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // Any patient's app reads the profile.
    let res = city
        .signed(
            "kiosk",
            Method::GET,
            &format!("/v1/hospitals/pumch/doctors/{DOCTOR}/precise-profile"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let published: Value = res.json().await.unwrap();
    assert_eq!(published["conditions"], json!(["C34", "D02.2"]));
    assert_eq!(published["auto_match"], "condition_and_finding");

    // Not while the clinic has a seat for the channel.
    let a = city.cards.register().await;
    let res = submit(&city, "wechat", &history(&a, true)).await;
    assert_eq!(problem(res).await["code"], "CLINIC_NOT_SOLD_OUT");
    // Sold out, with a patient waiting in its line.
    let mut paid = Vec::new();
    for i in 0..2 {
        let patient = city.patient().await;
        let res = city.book(&slot, patient, "wechat", &format!("am-{i}")).await;
        assert_eq!(res.status(), 201);
        let b: Value = res.json().await.unwrap();
        assert_eq!(city.pay("wechat", &b).await.status(), 200);
        paid.push(b["booking_id"].as_str().unwrap().to_owned());
    }
    let waiter = city.cards.register().await;
    let res = city
        .join_waitlist("wechat", "pumch", &schedule, &waiter.card_number)
        .await;
    assert_eq!(res.status(), 201);
    let waiting: Value = res.json().await.unwrap();
    let waiting = waiting["entry_id"].as_str().unwrap().to_owned();

    // Bad input names the field, and leaves nothing behind.
    for (field, value, named) in [
        ("diagnosis_codes", json!(["lung cancer"]), "diagnosis_codes[0]"),
        ("diagnosis_codes", json!([]), "diagnosis_codes"),
        ("findings", json!(["CT Nodule"]), "findings[0]"),
        ("age_years", json!(151), "age_years"),
        ("symptom_days", json!(-1), "symptom_days"),
        (
            "documents",
            json!([{ "kind": "ct_report", "id": "x".repeat(65) }]),
            "documents[0].id",
        ),
        (
            "documents",
            json!([{ "kind": "CT", "id": "ct-1" }]),
            "documents[0].kind",
        ),
        ("window_from", json!("2020-01-01"), "window_from"),
    ] {
        let mut body = history(&a, true);
        body[field] = value;
        let res = submit(&city, "wechat", &body).await;
        assert_eq!(res.status(), 400, "{field}");
        assert_eq!(problem(res).await["field"], named, "{field}");
    }
    let mut body = history(&a, true);
    body["id_number"] = json!("110101199003070000");
    assert_eq!(
        submit(&city, "wechat", &body).await.status(),
        400,
        "no ID number taken"
    );
    assert!(worklist(&city, "all").await.is_empty());

    // The expert's rule matches: a seat is added for this patient at once.
    let res = submit(&city, "wechat", &history(&a, true)).await;
    assert_eq!(res.status(), 201);
    let seated: Value = res.json().await.unwrap();
    assert_eq!(seated["status"], "seated", "{seated}");
    assert_eq!(seated["auto_matched"], true);
    let a_submission = seated["submission_id"].as_str().unwrap().to_owned();
    assert!(a_submission.starts_with("pumch-"));
    let held = booking(&city, seated["booking_id"].as_str().unwrap()).await;
    assert_eq!(held["status"], "held");
    assert_eq!(held["patient_id"], a.person_id.to_string());
    assert_eq!(held["schedule_id"], schedule.as_str());
    assert_eq!(held["seat_number"], 3, "the 加号 seat");
    assert_eq!(held["owner_app"], "wechat");
    // Not the waitlist's: the patient waiting is still waiting, first.
    let res = city
        .signed("wechat", Method::GET, &format!("/v1/waitlist/{waiting}"), None)
        .send()
        .await
        .unwrap();
    let place: Value = res.json().await.unwrap();
    assert_eq!(
        (place["status"].as_str(), place["position"].as_i64()),
        (Some("waiting"), Some(1))
    );
    // Told through the app, like an offer; the same submission again
    // answers the same one.
    let a_booking = held["booking_id"].as_str().unwrap().to_owned();
    callback
        .wait_for("the 加号 notice", Duration::from_secs(10), |d| {
            d.iter()
                .any(|r| r.notice_type() == "booking.offered" && r.booking_id() == a_booking)
                .then_some(())
        })
        .await;

    // A history the rule does not match waits for the hospital; nobody
    // submits for a patient they are not bound to.
    let b = city.cards.register().await;
    let mut for_b = history(&a, false);
    for_b["patient_id"] = json!(b.person_id);
    let res = submit(&city, "kiosk", &for_b).await;
    assert_eq!(problem(res).await["code"], "NOT_FAMILY_MEMBER");
    let res = submit(&city, "wechat", &history(&b, false)).await;
    assert_eq!(res.status(), 201);
    let pending: Value = res.json().await.unwrap();
    assert_eq!(pending["status"], "pending");
    let b_submission = pending["submission_id"].as_str().unwrap().to_owned();
    let res = submit(&city, "wechat", &history(&b, false)).await;
    assert_eq!(res.status(), 200, "one open submission per patient and doctor");
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["submission_id"], b_submission.as_str());

    // Reading it: its app, or another app with the patient's own card;
    // never an outsider, another app alone, or another patient's card.
    assert_eq!(read(&city, "wechat", &b_submission, None).await.status(), 200);
    assert_eq!(
        read(&city, "kiosk", &b_submission, Some(&b.card_number))
            .await
            .status(),
        200
    );
    let res = read(&city, "kiosk", &b_submission, None).await;
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    let res = read(&city, "kiosk", &b_submission, Some(&a.card_number)).await;
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    let res = city
        .http
        .get(format!(
            "{}/v1/precise-submissions/{b_submission}",
            city.gateway_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Deciding: never an outsider, a channel app or another hospital's key.
    let matched = json!({ "decision": "matched", "reason": "符合专家需求 fits the expert's profile" });
    let id = uuid_of(&b_submission);
    let path = format!("/federation/v1/hospitals/pumch/precise-submissions/{id}/decision");
    let res = city
        .http
        .post(format!("{}{path}", city.gateway_url))
        .json(&matched)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = city
        .signed("wechat", Method::POST, &path, Some(&matched))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = decide(&city, "bjhk1", "pumch", id, &matched).await;
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    let res = decide(&city, "bjhk1", "bjh", id, &matched).await;
    assert_eq!(problem(res).await["code"], "PRECISE_SUBMISSION_NOT_FOUND");
    let res = decide(
        &city,
        "pumchk1",
        "pumch",
        id,
        &json!({ "decision": "matched", "reason": " " }),
    )
    .await;
    assert_eq!(problem(res).await["field"], "reason");
    let res = decide(
        &city,
        "pumchk1",
        "pumch",
        id,
        &json!({ "decision": "maybe", "reason": "x" }),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(worklist(&city, "pending").await.len(), 1, "still pending");

    // The hospital matches it: another seat, for this patient.
    let res = decide(&city, "pumchk1", "pumch", id, &matched).await;
    assert_eq!(res.status(), 200);
    let decided: Value = res.json().await.unwrap();
    assert_eq!(decided["status"], "seated", "{decided}");
    assert_eq!(decided["auto_matched"], false);
    let res = decide(&city, "pumchk1", "pumch", id, &matched).await;
    assert_eq!(problem(res).await["code"], "PRECISE_ALREADY_DECIDED");
    let b_held = booking(&city, decided["booking_id"].as_str().unwrap()).await;
    assert_eq!(b_held["patient_id"], b.person_id.to_string());
    assert_eq!(b_held["seat_number"], 4);

    // Both pay like any hold; the money agrees to the fen.
    for b in [&held, &b_held] {
        let res = city.pay("wechat", b).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        paid.push(b["booking_id"].as_str().unwrap().to_owned());
    }
    for id in &paid {
        assert_eq!(booking(&city, id).await["status"], "confirmed");
    }
    let h = city.hospital(0);
    let client = h.state.pool.get().await.unwrap();
    let hospital_fees: i64 = client
        .query_one(
            "SELECT coalesce(sum(fee_fen), 0)::bigint FROM bookings WHERE status = 'confirmed' AND payment_method = 'self_pay'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hospital_fees, FEE_FEN * 4);
    let city_ops = console.login("city_ops").await;
    let money = eventually(Duration::from_secs(20), "the money report", || {
        let (console, token) = (&console, city_ops.clone());
        async move {
            let report = console.json(&token, "/v1/reports/money?hospital=pumch").await?;
            let rows = report["rows"].as_array()?.clone();
            let fees: i64 = rows.iter().filter_map(|r| r["fees_fen"].as_i64()).sum();
            (fees == hospital_fees).then_some(rows)
        }
    })
    .await;
    let counted: i64 = money.iter().filter_map(|r| r["fee_count"].as_i64()).sum();
    assert_eq!(counted, 4);
    assert!(h.oversold_segments().await.is_empty());
    assert_eq!(h.redis_segment(&slot).await.1, h.pg_holders(&slot).await);

    // The console: per doctor, what was submitted, matched and added.
    let row = eventually(Duration::from_secs(20), "the console's figures", || {
        let (console, token) = (&console, city_ops.clone());
        async move {
            let body = console.json(&token, "/v1/console/precise?hospital=pumch").await?;
            let row = body["rows"].as_array()?.first()?.clone();
            (row["seated"] == 2).then_some(row)
        }
    })
    .await;
    // The figures the docs quote (docs/seed-systems/precise-and-queue.md).
    eprintln!("precise figures: {row}");
    assert_eq!(row["doctor_id"], DOCTOR);
    assert_eq!(
        (row["submitted"].as_i64(), row["matched"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (row["auto_matched"].as_i64(), row["rejected"].as_i64()),
        (Some(1), Some(0))
    );
    assert!(row["median_seconds_to_seat"].as_f64().unwrap() >= 0.0);
    assert!(row["p90_seconds_to_seat"].as_f64().unwrap() >= row["median_seconds_to_seat"].as_f64().unwrap());
    let res = console
        .call(
            Some(&city_ops),
            Method::GET,
            "/v1/console/precise?hospital=pumch&format=csv",
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let csv = res.text().await.unwrap();
    assert!(
        csv.starts_with("hospital_id,doctor_id,submitted,matched"),
        "{csv}"
    );
    assert!(csv.contains(&format!("pumch,{DOCTOR},2,2,1,0,2,")), "{csv}");
    // Another hospital's operator sees none of it.
    let bjh_ops = console.login("bjh_ops").await;
    let res = console
        .call(
            Some(&bjh_ops),
            Method::GET,
            "/v1/console/precise?hospital=pumch",
            None,
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = console.call(None, Method::GET, "/v1/console/precise", None).await;
    assert_eq!(res.status(), 401);
    let res = read(&city, "wechat", &a_submission, None).await;
    let mine: Value = res.json().await.unwrap();
    assert_eq!(mine["booking_id"], a_booking.as_str());
}

#[tokio::test]
async fn a_match_with_no_session_to_add_a_seat_to_waits_until_the_hospital_publishes_one() {
    let callback = Callback::start().await;
    let (city, _console) = city(&callback).await;
    let (schedule, slot) = session(&city, "his-lung-am", visit_day()).await;

    // The profile: only the hospital, only its own doctors, fields named.
    let body = profile("review");
    let path = format!("/federation/v1/hospitals/pumch/doctors/{DOCTOR}/precise-profile");
    let res = city
        .signed("wechat", Method::PUT, &path, Some(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = fed(&city, "bjhk1", Method::PUT, &path, Some(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    for (field, value, named) in [
        ("conditions", json!(["lung"]), "conditions[0]"),
        ("conditions", json!([]), "conditions"),
        ("max_age", json!(10), "max_age"),
        (
            "required_documents",
            json!(["CT report"]),
            "required_documents[0]",
        ),
        ("auto_match", json!("always"), "auto_match"),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let res = put_profile(&city, &bad).await;
        assert_eq!(res.status(), 400, "{field}");
        let p = problem(res).await;
        assert!(
            p["field"] == named || p["code"] == "MALFORMED_JSON",
            "{field}: {p}"
        );
    }
    let res = city
        .signed(
            "wechat",
            Method::GET,
            &format!("/v1/hospitals/pumch/doctors/{DOCTOR}/precise-profile"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(res).await["code"],
        "PRECISE_PROFILE_NOT_FOUND",
        "nothing was published"
    );
    let res = fed(
        &city,
        "pumchk1",
        Method::PUT,
        "/federation/v1/hospitals/pumch/doctors/nobody/precise-profile",
        Some(&body),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(problem(res).await["code"], "DOCTOR_NOT_FOUND");
    assert_eq!(put_profile(&city, &body).await.status(), 200);

    // Sold out; a patient submits; the expert reviews everything.
    for i in 0..2 {
        let patient = city.patient().await;
        assert_eq!(
            city.book(&slot, patient, "wechat", &format!("am-{i}"))
                .await
                .status(),
            201
        );
    }
    let patient = city.cards.register().await;
    let res = submit(&city, "wechat", &history(&patient, true)).await;
    assert_eq!(res.status(), 201);
    let pending: Value = res.json().await.unwrap();
    assert_eq!(pending["status"], "pending", "the rule is review");
    let id = pending["submission_id"].as_str().unwrap().to_owned();

    // The clinic is stopped before the decision: no session to add to.
    let res = fed(
        &city,
        "pumchk1",
        Method::POST,
        &format!("/federation/v1/hospitals/pumch/schedules/{schedule}/stop"),
        Some(&json!({ "reason": "专家出差 the expert is away" })),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let matched = json!({ "decision": "matched", "reason": "疑难病例 a difficult case" });
    let res = decide(&city, "pumchk1", "pumch", uuid_of(&id), &matched).await;
    assert_eq!(res.status(), 200);
    let waiting: Value = res.json().await.unwrap();
    assert_eq!(waiting["status"], "matched", "{waiting}");
    assert!(waiting["booking_id"].is_null());
    assert_eq!(worklist(&city, "matched").await.len(), 1);

    // The hospital publishes the expert's next session: the match is
    // seated in it, one seat added to its 2.
    let next_day = visit_day().succ_opt().unwrap();
    let (next, next_slot) = session(&city, "his-lung-next", next_day).await;
    let res = read(&city, "wechat", &id, None).await;
    let seated: Value = res.json().await.unwrap();
    assert_eq!(seated["status"], "seated", "{seated}");
    let held = booking(&city, seated["booking_id"].as_str().unwrap()).await;
    assert_eq!(held["schedule_id"], next.as_str());
    assert_eq!(held["patient_id"], patient.person_id.to_string());
    assert_eq!(held["seat_number"], 3);
    // Its two ordinary seats are still on sale, and only two.
    for i in 0..2 {
        let other = city.patient().await;
        assert_eq!(
            city.book(&next_slot, other, "wechat", &format!("next-{i}"))
                .await
                .status(),
            201
        );
    }
    let late = city.patient().await;
    assert_eq!(
        problem(city.book(&next_slot, late, "wechat", "next-late").await).await["code"],
        "SLOT_SOLD_OUT"
    );
    let h = city.hospital(0);
    assert!(h.oversold_segments().await.is_empty());
    assert_eq!(
        h.redis_segment(&next_slot).await.1,
        h.pg_holders(&next_slot).await
    );
}
