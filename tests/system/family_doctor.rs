//! Family doctor signing (家庭医生签约, the Haizhu 580 model) and referrals
//! (转诊, the 医联体 green channel), through the gateway against the real
//! services: a community health centre (`hzchc`) registers its teams and
//! refers its signed residents to a tertiary hospital (`hztop`).
#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::time::Duration;

use futures::StreamExt;
use jyt_system_tests::{TEST_APP_SECRET, TestCity, TestPatient, eventually, problem, signed, spawn_console};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use uuid::Uuid;

const CENTRE: &str = "hzchc";
const TOP: &str = "hztop";
/// The centre's family doctor team: its doctor of the demo day's cardiology
/// general clinic (`d-cardio-2`).
const TEAM: &str = "team-cardio";
const TEAM_DOCTOR: &str = "d-cardio-2";

fn hospital_keys() -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (key, hospital) in [("hzchck1", CENTRE), ("hztopk1", TOP)] {
        let k = key.to_uppercase();
        env.push((format!("HOSPITAL_KEYS__{k}__HOSPITAL"), hospital.to_owned()));
        env.push((format!("HOSPITAL_KEYS__{k}__SECRET"), TEST_APP_SECRET.to_owned()));
    }
    env
}

/// Every segment: 40 % for signed residents, 20 % for referrals, the rest
/// common (no channel shares); two visits a day per department, so a
/// second use of a referral meets the referral rule, not the day's.
const POOLS: &[(&str, &str)] = &[
    ("POLICY__POOL_SHARES__WECHAT", "0"),
    ("POLICY__POOL_SHARES__KIOSK", "0"),
    ("POLICY__POOL_SHARES__PHONE114", "0"),
    ("POLICY__POOL_SHARES__WINDOW", "0"),
    ("POLICY__POOL_SHARES__APP", "0"),
    ("POLICY__POOL_SHARES__CLINIC", "0"),
    ("POLICY__POOL_SHARES__SIGNED", "40"),
    ("POLICY__POOL_SHARES__REFERRAL", "20"),
    ("POLICY__MAX_PER_PERSON_PER_DEPARTMENT_PER_DAY", "2"),
    ("POLICY__MAX_PER_PERSON_PER_DAY", "4"),
];

async fn city() -> TestCity {
    let mut env = hospital_keys();
    env.push(("HOSPITALS__HZCHC__LEVEL".to_owned(), "community".to_owned()));
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestCity::spawn_configured(&[CENTRE, TOP], &extra, POOLS).await
}

async fn fed(city: &TestCity, key: &str, method: Method, path: &str, body: Option<&Value>) -> Response {
    signed(&city.http, &city.gateway_url, key, method, path, body)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap()
}

async fn register_team(city: &TestCity, capacity: i32) {
    let teams = json!({ "teams": [
        { "team_id": TEAM, "name": "心内家医团队", "doctor_ids": [TEAM_DOCTOR, "gp-1"], "capacity": capacity },
        { "team_id": "team-peds", "name": "儿科家医团队", "doctor_ids": ["d-peds-2"], "capacity": 100 },
    ]});
    let path = format!("/federation/v1/hospitals/{CENTRE}/family-doctor-teams");
    let res = fed(city, "hzchck1", Method::PUT, &path, Some(&teams)).await;
    assert_eq!(res.status(), 200);
}

/// A request at a kiosk with the patient's card (a desk may act for them).
async fn at_kiosk(
    city: &TestCity,
    patient: &TestPatient,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    city.signed("kiosk", method, path, body)
        .header("X-Patient-Card", &patient.card_number)
        .send()
        .await
        .unwrap()
}

async fn sign(city: &TestCity, patient: &TestPatient, team: &str) -> Response {
    let body =
        json!({ "hospital": CENTRE, "team": team, "signature_trace": format!("strokes:{}", Uuid::new_v4()) });
    let path = format!("/v1/patients/{}/family-doctor-signings", patient.person_id);
    at_kiosk(city, patient, Method::POST, &path, Some(&body)).await
}

async fn team_signed(city: &TestCity) -> i64 {
    let path = format!("/federation/v1/hospitals/{CENTRE}/family-doctor-teams");
    let res = fed(city, "hzchck1", Method::GET, &path, None).await;
    let body: Value = res.json().await.unwrap();
    body["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team_id"] == TEAM)
        .unwrap()["signed"]
        .as_i64()
        .unwrap()
}

/// card-issuing's own database, for moving a signing's term into the past.
async fn cards_sql(city: &TestCity, sql: &str, signing: &str) {
    let (client, connection) =
        jyt_db::tokio_postgres::connect(&city.cards.database_url, jyt_db::tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let id: Uuid = signing.parse().unwrap();
    client.execute(sql, &[&id]).await.unwrap();
}

#[tokio::test]
async fn one_active_signing_per_person_a_years_term_and_the_teams_capacity_under_concurrency() {
    let city = city().await;
    register_team(&city, 7).await;
    let first = city.cards.register().await;
    let second = city.cards.register().await;

    let res = sign(&city, &first, TEAM).await;
    assert_eq!(res.status(), 201);
    let signing: Value = res.json().await.unwrap();
    assert_eq!(signing["status"], "active");
    assert_eq!(signing["doctor_ids"], json!([TEAM_DOCTOR, "gp-1"]));
    assert_eq!(signing["signature_sha256"].as_str().unwrap().len(), 64);
    // The same signing again answers it; another team is refused.
    assert_eq!(sign(&city, &first, TEAM).await.status(), 200);
    let res = sign(&city, &first, "team-peds").await;
    assert_eq!(res.status(), 409);
    assert_eq!(problem(res).await["code"], "ALREADY_SIGNED");
    let res = sign(&city, &first, "team-none").await;
    assert_eq!(
        problem(res).await["code"],
        "ALREADY_SIGNED",
        "the rule before the team"
    );
    assert_eq!(
        problem(sign(&city, &second, "team-none").await).await["code"],
        "TEAM_NOT_FOUND"
    );
    assert_eq!(sign(&city, &second, TEAM).await.status(), 201);
    assert_eq!(team_signed(&city).await, 2);

    // Twenty residents at once for the team's last five places: five.
    let signers = city.cards.register_many(20).await;
    let answers: Vec<u16> = futures::stream::iter(&signers)
        .map(|p| async { sign(&city, p, TEAM).await.status().as_u16() })
        .buffer_unordered(20)
        .collect()
        .await;
    assert_eq!(answers.iter().filter(|s| **s == 201).count(), 5, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == 409).count(), 15, "{answers:?}");
    assert_eq!(team_signed(&city).await, 7);
    let late = city.cards.register().await;
    let res = sign(&city, &late, TEAM).await;
    let full = problem(res).await;
    assert_eq!(
        (full["code"].as_str(), full["capacity"].as_i64()),
        (Some("TEAM_FULL"), Some(7))
    );

    // Ending early frees the place and lets the resident sign elsewhere.
    let id = signing["signing_id"].as_str().unwrap();
    let path = format!("/v1/patients/{}/family-doctor-signings/{id}/end", first.person_id);
    let res = at_kiosk(&city, &first, Method::POST, &path, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ended");
    assert_eq!(team_signed(&city).await, 6);
    assert_eq!(sign(&city, &late, TEAM).await.status(), 201);
    let res = sign(&city, &first, "team-peds").await;
    assert_eq!(res.status(), 201);
    let peds: Value = res.json().await.unwrap();

    // A year on, the term is over: signing again is allowed.
    cards_sql(
        &city,
        "UPDATE family_doctor_signings SET signed_at = now() - interval '367 days',
                expires_at = now() - interval '2 days' WHERE id = $1",
        peds["signing_id"].as_str().unwrap(),
    )
    .await;
    let path = format!("/v1/patients/{}/family-doctor-signings", first.person_id);
    let res = at_kiosk(&city, &first, Method::GET, &path, None).await;
    let listed: Value = res.json().await.unwrap();
    assert_eq!(listed["active"], Value::Null);
    let statuses: Vec<&str> = listed["signings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ended", "expired"], "newest signing first");
    assert_eq!(sign(&city, &first, "team-peds").await.status(), 201);
}

#[tokio::test]
async fn signing_routes_refuse_outsiders_other_apps_other_patients_and_hospital_keys() {
    let city = city().await;
    register_team(&city, 10).await;
    let patient = city.cards.register().await;
    let other = city.cards.register().await;
    let path = format!("/v1/patients/{}/family-doctor-signings", patient.person_id);
    let body = json!({ "hospital": CENTRE, "team": TEAM, "signature_trace": "strokes:0123456789abcdef" });

    // Unsigned; a hospital's key on a channel route: not an app's request.
    let res = city
        .http
        .post(format!("{}{path}", city.gateway_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = signed(
        &city.http,
        &city.gateway_url,
        "hzchck1",
        Method::POST,
        &path,
        Some(&body),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(problem(res).await["code"], "UNKNOWN_APP");
    // Another channel's app without the patient's proof; with another
    // patient's e-card token.
    let res = city
        .signed("app", Method::POST, &path, Some(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "NOT_YOUR_PATIENT");
    let token = city.cards.ecard_token(&other).await;
    let res = city
        .signed("wechat", Method::POST, &path, Some(&body))
        .header("X-Patient-Ecard-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "NOT_YOUR_PATIENT");
    let res = city
        .signed("wechat", Method::GET, &path, None)
        .header("X-Patient-Ecard-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "NOT_YOUR_PATIENT");
    assert_eq!(team_signed(&city).await, 0, "nothing signed");
    // The patient's own token signs from any app.
    let token = city.cards.ecard_token(&patient).await;
    let res = city
        .signed("wechat", Method::POST, &path, Some(&body))
        .header("X-Patient-Ecard-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let signing: Value = res.json().await.unwrap();
    let end = format!("{path}/{}/end", signing["signing_id"].as_str().unwrap());
    let res = city.signed("app", Method::POST, &end, None).send().await.unwrap();
    assert_eq!(problem(res).await["code"], "NOT_YOUR_PATIENT");
    assert_eq!(team_signed(&city).await, 1, "still signed");

    // Another hospital's key on the centre's teams.
    let teams = format!("/federation/v1/hospitals/{CENTRE}/family-doctor-teams");
    let res = fed(&city, "hztopk1", Method::GET, &teams, None).await;
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    let change = json!({ "teams": [{ "team_id": TEAM, "name": "x", "doctor_ids": ["x"], "capacity": 0 }] });
    let res = fed(&city, "hztopk1", Method::PUT, &teams, Some(&change)).await;
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    let res = fed(&city, "wechat", Method::PUT, &teams, Some(&change)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(team_signed(&city).await, 1);
}

/// Book through the gateway as `app` with the patient's card.
async fn book(
    city: &TestCity,
    app: &str,
    slot: &str,
    patient: &TestPatient,
    referral: Option<&str>,
) -> Response {
    let mut body = json!({ "slot_id": slot, "card_number": patient.card_number });
    if let Some(r) = referral {
        body["referral_id"] = json!(r);
    }
    city.book_with(app, &Uuid::new_v4().to_string(), &body).await
}

/// The first segment of the demo day's schedule of `doctor` at `h`.
async fn slot_of(city: &TestCity, h: usize, doctor: &str, session: &str) -> String {
    let hospital = city.hospital(h);
    let client = hospital.state.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT seg.id FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id
               JOIN doctors doc ON doc.id = sch.doctor_id
              WHERE doc.external_id = $1 AND sch.session = $2 ORDER BY seg.starts_at LIMIT 1",
            &[&doctor, &session],
        )
        .await
        .unwrap();
    format!("{}-{}", hospital.id, row.get::<_, Uuid>(0))
}

#[tokio::test]
async fn signed_residents_get_their_teams_reserved_share_and_others_never_before_the_merge() {
    let city = city().await;
    register_team(&city, 10).await;
    city.hospital(0).seed_visit_day(10).await;
    let slot = slot_of(&city, 0, TEAM_DOCTOR, "morning").await;
    // 10 seats: 4 signed, 2 referral, 4 common.
    let strangers = city.cards.register_many(5).await;
    let mut answers = Vec::new();
    for p in &strangers {
        answers.push(book(&city, "wechat", &slot, p, None).await.status().as_u16());
    }
    assert_eq!(answers, [201, 201, 201, 201, 409], "only the common seats");
    // A resident signed with another team of the centre: no share here.
    let other_team = city.cards.register().await;
    assert_eq!(sign(&city, &other_team, "team-peds").await.status(), 201);
    assert_eq!(
        book(&city, "wechat", &slot, &other_team, None).await.status(),
        409
    );
    // The team's residents take the reserved seats, then nothing.
    let residents = city.cards.register_many(5).await;
    let mut pools = Vec::new();
    for p in &residents {
        assert_eq!(sign(&city, p, TEAM).await.status(), 201);
        let res = book(&city, "wechat", &slot, p, None).await;
        pools.push(if res.status() == 201 {
            res.json::<Value>().await.unwrap()["pool"]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            problem(res).await["code"].as_str().unwrap().to_owned()
        });
    }
    assert_eq!(pools, ["signed", "signed", "signed", "signed", "SLOT_SOLD_OUT"]);
    let (live, seats) = city.hospital(0).live_bookings(&slot.parse().unwrap()).await;
    assert_eq!((live, seats), (8, 8), "the two referral seats are left");
    assert!(city.hospital(0).oversold_segments().await.is_empty());
}

async fn issue_referral(city: &TestCity, key: &str, centre: &str, body: &Value) -> Response {
    fed(
        city,
        key,
        Method::POST,
        &format!("/federation/v1/hospitals/{centre}/referrals"),
        Some(body),
    )
    .await
}

fn referral_body(patient: &TestPatient, doctor: &str, department: &str) -> Value {
    json!({
        "card_number": patient.card_number,
        "doctor_id": doctor,
        "target_hospital": TOP,
        "department": department,
        "diagnosis_code": "I20.9",
        "reason": "不稳定型心绞痛, 转上级医院心内科",
    })
}

async fn count(city: &TestCity, h: usize, sql: &str) -> i64 {
    let client = city.hospital(h).state.pool.get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one referral's life, step by step")]
async fn a_signed_residents_referral_books_the_tertiary_hospitals_referral_pool_once() {
    let city = city().await;
    register_team(&city, 10).await;
    city.hospital(1).seed_visit_day(10).await;
    let cardio_am = slot_of(&city, 1, "d-cardio-1", "morning").await;
    let cardio_pm = slot_of(&city, 1, "d-cardio-1", "afternoon").await;
    let peds = slot_of(&city, 1, "d-peds-1", "morning").await;
    let resident = city.cards.register().await;
    let other = city.cards.register().await;
    assert_eq!(sign(&city, &resident, TEAM).await.status(), 201);

    // Only the resident's own team's doctor, at its centre, may refer: not
    // another hospital, even for its own referrals.
    let mut to_centre = referral_body(&resident, TEAM_DOCTOR, "cardio");
    to_centre["target_hospital"] = json!(CENTRE);
    let cases = [
        (
            "hztopk1",
            CENTRE,
            referral_body(&resident, TEAM_DOCTOR, "cardio"),
            "HOSPITAL_FORBIDDEN",
        ),
        (
            "hztopk1",
            TOP,
            referral_body(&resident, TEAM_DOCTOR, "cardio"),
            "INVALID_FIELD",
        ),
        ("hztopk1", TOP, to_centre.clone(), "REFERRAL_NOT_ALLOWED"),
        (
            "hzchck1",
            CENTRE,
            referral_body(&resident, "d-peds-2", "cardio"),
            "REFERRAL_NOT_ALLOWED",
        ),
        (
            "hzchck1",
            CENTRE,
            referral_body(&other, TEAM_DOCTOR, "cardio"),
            "REFERRAL_NOT_ALLOWED",
        ),
    ];
    for (key, centre, body, code) in cases {
        let res = issue_referral(&city, key, centre, &body).await;
        assert_eq!(problem(res).await["code"], code, "{key} for {centre}");
    }
    let res = issue_referral(
        &city,
        "wechat",
        CENTRE,
        &referral_body(&resident, TEAM_DOCTOR, "cardio"),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(count(&city, 1, "SELECT count(*) FROM referrals").await, 0);

    let res = issue_referral(
        &city,
        "hzchck1",
        CENTRE,
        &referral_body(&resident, TEAM_DOCTOR, "cardio"),
    )
    .await;
    assert_eq!(res.status(), 201);
    let referral: Value = res.json().await.unwrap();
    assert_eq!(
        (referral["status"].as_str(), referral["issuing_team"].as_str()),
        (Some("issued"), Some(TEAM))
    );
    let id = referral["referral_id"].as_str().unwrap().to_owned();

    // Refused by the hospital's booking script, nothing written.
    let refusals = [
        (
            "referral",
            &cardio_am,
            &other,
            Some(id.as_str()),
            "REFERRAL_OF_ANOTHER_PATIENT",
        ),
        (
            "referral",
            &peds,
            &resident,
            Some(id.as_str()),
            "REFERRAL_NOT_FOR_DEPARTMENT",
        ),
        (
            "referral",
            &cardio_am,
            &resident,
            Some("CH-2026-0001"),
            "INVALID_FIELD",
        ),
        ("referral", &cardio_am, &resident, None, "INVALID_FIELD"),
        (
            "wechat",
            &cardio_am,
            &resident,
            Some(id.as_str()),
            "INVALID_FIELD",
        ),
    ];
    for (app, slot, patient, referral, code) in refusals {
        let res = book(&city, app, slot, patient, referral).await;
        assert_eq!(problem(res).await["code"], code, "{app} {referral:?}");
    }
    let unknown = Uuid::now_v7().to_string();
    let res = book(&city, "referral", &cardio_am, &resident, Some(&unknown)).await;
    assert_eq!(problem(res).await["code"], "REFERRAL_UNKNOWN");
    assert_eq!(
        count(&city, 1, "SELECT count(*) FROM bookings").await,
        0,
        "nothing written"
    );

    // Booked from the referral pool, once.
    let res = book(&city, "referral", &cardio_am, &resident, Some(&id)).await;
    assert_eq!(res.status(), 201);
    let booking: Value = res.json().await.unwrap();
    assert_eq!(
        (booking["pool"].as_str(), booking["referral_id"].as_str()),
        (Some("referral"), Some(id.as_str()))
    );
    let res = book(&city, "referral", &cardio_pm, &resident, Some(&id)).await;
    assert_eq!(problem(res).await["code"], "REFERRAL_USED");
    assert_eq!(count(&city, 1, "SELECT count(*) FROM bookings").await, 1);

    // Cancelled, the referral is free again.
    let cancel = format!("/v1/bookings/{}/cancel", booking["booking_id"].as_str().unwrap());
    let res = city
        .signed(
            "referral",
            Method::POST,
            &cancel,
            Some(&json!({ "card_number": resident.card_number })),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = book(&city, "referral", &cardio_pm, &resident, Some(&id)).await;
    assert_eq!(res.status(), 201);

    // An expired referral books nothing.
    let res = issue_referral(
        &city,
        "hzchck1",
        CENTRE,
        &referral_body(&resident, "gp-1", "peds"),
    )
    .await;
    let expiring: Value = res.json().await.unwrap();
    let expiring_id: Uuid = expiring["referral_id"].as_str().unwrap().parse().unwrap();
    let top = city.hospital(1);
    top.sql(&format!(
        "UPDATE referrals SET issued_at = now() - interval '31 days', expires_at = now() - interval '1 day'
          WHERE id = '{expiring_id}'"
    ))
    .await;
    let stored = slot_inventory::booking::referral::get(&top.state, expiring_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, "expired");
    slot_inventory::booking::referral::load(&top.state, &stored)
        .await
        .unwrap();
    let res = book(
        &city,
        "referral",
        &peds,
        &resident,
        Some(&expiring_id.to_string()),
    )
    .await;
    assert_eq!(problem(res).await["code"], "REFERRAL_EXPIRED");
    assert_eq!(
        count(
            &city,
            1,
            "SELECT count(*) FROM bookings WHERE status NOT IN ('cancelled')"
        )
        .await,
        1
    );
    let events = count(
        &city,
        1,
        "SELECT count(*) FROM outbox WHERE event_type IN ('referral.issued', 'referral.used')",
    )
    .await;
    assert_eq!(events, 4, "two issued, used twice");
}

#[tokio::test]
async fn the_console_shows_each_centres_signings_per_team_and_its_referrals_by_target() {
    let city = city().await;
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &[CENTRE, TOP]).await;
    register_team(&city, 4).await;
    city.hospital(1).seed_visit_day(10).await;
    let cardio = slot_of(&city, 1, "d-cardio-1", "morning").await;
    let residents = city.cards.register_many(3).await;
    for p in &residents {
        assert_eq!(sign(&city, p, TEAM).await.status(), 201);
    }
    let res = issue_referral(
        &city,
        "hzchck1",
        CENTRE,
        &referral_body(&residents[0], TEAM_DOCTOR, "cardio"),
    )
    .await;
    let used: Value = res.json().await.unwrap();
    let res = book(
        &city,
        "referral",
        &cardio,
        &residents[0],
        used["referral_id"].as_str(),
    )
    .await;
    assert_eq!(res.status(), 201);
    let mut soon = referral_body(&residents[1], TEAM_DOCTOR, "cardio");
    soon["expires_at"] = json!((chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339());
    assert_eq!(
        issue_referral(&city, "hzchck1", CENTRE, &soon).await.status(),
        201
    );
    let open = referral_body(&residents[2], "gp-1", "peds");
    assert_eq!(
        issue_referral(&city, "hzchck1", CENTRE, &open).await.status(),
        201
    );

    let centre_ops = console.login("hzchc_ops").await;
    let path = format!("/v1/console/family-doctor?hospital={CENTRE}");
    let view: Value = eventually(
        Duration::from_secs(30),
        "the events applied, one expired",
        || async {
            let res = console.call(Some(&centre_ops), Method::GET, &path, None).await;
            let view: Value = res.json().await.ok()?;
            (view["referrals"][0]["expired"] == 1 && view["referrals"][0]["used"] == 1).then_some(view)
        },
    )
    .await;
    assert_eq!(view["signings_active"], 3);
    let team = &view["teams"][0];
    assert_eq!(
        (team["team_id"].as_str(), team["active"].as_i64()),
        (Some(TEAM), Some(3))
    );
    assert_eq!(
        (team["capacity"].as_i64(), team["capacity_used_percent"].as_f64()),
        (Some(4), Some(75.0))
    );
    let line = &view["referrals"][0];
    assert_eq!(line["target_hospital"], TOP);
    assert_eq!(
        (line["issued"].as_i64(), line["open"].as_i64()),
        (Some(3), Some(1))
    );
    // The target hospital's operator sees the referrals it received, not
    // the centre's own view.
    let top_ops = console.login("hztop_ops").await;
    let res = console.call(Some(&top_ops), Method::GET, &path, None).await;
    assert_eq!(res.status(), 403);
    let res = console
        .call(Some(&top_ops), Method::GET, "/v1/console/family-doctor", None)
        .await;
    let received: Value = res.json().await.unwrap();
    assert_eq!(received["referrals"][0]["issued"], 3);
    assert_eq!(received["teams"], json!([]));
    let res = console.call(None, Method::GET, &path, None).await;
    assert_eq!(res.status(), 401);
}
