//! The post-visit satisfaction survey (广东省中医患者满意度调查, issue 23
//! part 4), end to end on real services: a hospital reports visits
//! completed through the federation API; the booking's app receives one
//! `survey.invited` notice per visit (even when the event is delivered
//! twice); the patient answers through the gateway, idempotently; a survey
//! closes seven days after the visit; every outsider is refused and
//! changes nothing; and the operators' 满意度 figures and CSV equal what
//! was answered, with no patient in them.

#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "test: a failure is a failed test; one scenario read top to bottom"
)]

use std::time::Duration;

use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use jyt_cache::redis;
use jyt_domain::time::Clock;
use jyt_system_tests::callback::Received;
use jyt_system_tests::{
    ALL_SEATS_COMMON, Callback, TEST_APP_SECRET, TestCity, TestPatient, problem, signed, spawn_console_on,
    stream_entries,
};
use reqwest::Method;
use serde_json::{Value, json};

const HOSPITAL: &str = "chaoyang";
const HOSPITAL_KEY: &str = "chaoyangk1";

/// A visit: its patient, booking and survey ids.
struct Visit {
    patient: TestPatient,
    booking: String,
    survey: String,
}

async fn book(city: &TestCity, slot: &jyt_domain::SlotRef, key: &str) -> Visit {
    let patient = city.cards.register().await;
    let res = city.book(slot, patient.person_id, "wechat", key).await;
    assert_eq!(res.status(), 201, "{key}");
    let booking: Value = res.json().await.unwrap();
    if booking["status"] == "held" {
        let paid = city.pay("wechat", &booking).await;
        assert_eq!(paid.status(), 200, "{}", paid.text().await.unwrap());
    }
    let booking = booking["booking_id"].as_str().unwrap().to_owned();
    let survey = jyt_domain::survey::survey_id(&booking).to_string();
    Visit {
        patient,
        booking,
        survey,
    }
}

/// The hospital's HIS reports the patient arrived, then the visit over.
async fn see(city: &TestCity, visit: &Visit) {
    for step in ["arrive", "complete"] {
        let path = format!(
            "/federation/v1/hospitals/{HOSPITAL}/bookings/{}/{step}",
            visit.booking
        );
        let res = signed(
            &city.http,
            &city.gateway_url,
            HOSPITAL_KEY,
            Method::POST,
            &path,
            None,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{step}: {}", res.text().await.unwrap());
    }
}

/// A survey request signed as `app`, naming the patient by `card`.
async fn call(
    city: &TestCity,
    app: &str,
    method: Method,
    path: &str,
    card: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = city.signed(app, method, path, body);
    if let Some(card) = card {
        req = req.header("X-Patient-Card", card);
    }
    req.send().await.unwrap()
}

async fn read(city: &TestCity, app: &str, visit: &Visit, card: Option<&str>) -> reqwest::Response {
    let path = format!("/v1/surveys/{}", visit.survey);
    call(city, app, Method::GET, &path, card, None).await
}

async fn answer(
    city: &TestCity,
    app: &str,
    visit: &Visit,
    card: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let path = format!("/v1/surveys/{}/answers", visit.survey);
    call(city, app, Method::PUT, &path, card, Some(body)).await
}

fn answers(overall: i64, wait: i64, explanation: i64, recommend: bool, comment: Option<&str>) -> Value {
    json!({ "overall": overall, "wait_time": wait, "explanation": explanation,
            "would_recommend": recommend, "comment": comment })
}

/// The one delivered invitation to the survey of `visit`, waited for.
async fn invitation(callback: &Callback, visit: &Visit) -> Received {
    let booking = visit.booking.clone();
    callback
        .wait_for(
            &format!("survey.invited for {booking}"),
            Duration::from_secs(20),
            move |seen| {
                seen.iter()
                    .find(|r| {
                        r.notice_type() == "survey.invited" && r.body["survey"]["booking_id"] == booking
                    })
                    .cloned()
            },
        )
        .await
}

fn invitations(callback: &Callback, visit: &Visit) -> usize {
    callback
        .delivered()
        .iter()
        .filter(|r| r.notice_type() == "survey.invited" && r.body["survey"]["booking_id"] == visit.booking)
        .count()
}

/// Re-add every `booking.completed` entry of the stream, as a relay that
/// crashed after XADD would: same event ids, delivered twice.
async fn deliver_completions_again(city: &TestCity) -> usize {
    let stream = format!("{}:events:slot-inventory", city.redis_prefix);
    let mut conn = city.hospital(0).state.redis.clone();
    let mut again = 0;
    for fields in stream_entries(&mut conn, &stream).await {
        if fields
            .iter()
            .any(|(k, v)| k == "event_type" && v == "booking.completed")
        {
            redis::AsyncCommands::xadd::<_, _, _, _, ()>(&mut conn, &stream, "*", &fields)
                .await
                .unwrap();
            again += 1;
        }
    }
    again
}

fn monday_of(day: NaiveDate) -> NaiveDate {
    day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday()))
}

#[tokio::test]
async fn a_completed_visit_is_surveyed_once_answered_once_and_counted_exactly() {
    let prefix = jyt_testkit::fresh_redis_prefix();
    let console = spawn_console_on(&prefix, None, &[HOSPITAL, "pumch"]).await;
    let callback = Callback::start().await;
    let other_app = Callback::start().await;
    // Whole seconds: PostgreSQL keeps microseconds, JSON nanoseconds.
    let now = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let clock = Clock::manual(now);
    let gateway = [
        ("CHANNEL_ACCOUNTING__BASE_URL", console.url.as_str()),
        ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
        ("CHANNEL_APPS__APP__CALLBACK_URL", other_app.url.as_str()),
        ("NOTIFICATIONS__POLL_MS", "20"),
        ("HOSPITAL_KEYS__CHAOYANGK1__HOSPITAL", HOSPITAL),
        ("HOSPITAL_KEYS__CHAOYANGK1__SECRET", TEST_APP_SECRET),
    ];
    let city = TestCity::spawn_in(&prefix, &[HOSPITAL], &gateway, ALL_SEATS_COMMON, &clock).await;
    let slots = city.hospital(0).seed_visit_day(5).await;
    // Two visits to 王建国 (cardiology), one to 李敏 (cardiology), one to
    // 张丽华 (paediatrics) that the hospital reports eight days late.
    let first = book(&city, &slots[0], "sv-1").await;
    let second = book(&city, &slots[1], "sv-2").await;
    let unanswered = book(&city, &slots[2], "sv-3").await;
    let late = book(&city, &slots[4], "sv-4").await;

    // The visit is over: the booking's app is invited, once.
    see(&city, &first).await;
    let invited = invitation(&callback, &first).await;
    assert!(invited.signed_by("wechat"), "signed with the app's secret");
    assert_eq!(invited.notice_id(), format!("survey_invited:{}", first.booking));
    assert_eq!(invited.body["survey"]["survey_id"], first.survey.as_str());
    assert_eq!(invited.body["survey"]["questions_version"], 1);
    assert_eq!(invited.body["survey"]["department"], "心血管内科 Cardiology");
    assert!(invited.body["booking"].get("pickup_code").is_none());
    let completed_at: chrono::DateTime<Utc> = invited.body["survey"]["completed_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(completed_at, now, "the hospital's clock");
    assert_eq!(
        invited.body["survey"]["expires_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        now + TimeDelta::days(7)
    );
    see(&city, &second).await;
    invitation(&callback, &second).await;

    // The same completions delivered again; then a later visit, whose
    // invitation comes after the copies were read.
    assert_eq!(deliver_completions_again(&city).await, 2);
    see(&city, &unanswered).await;
    invitation(&callback, &unanswered).await;
    for visit in [&first, &second, &unanswered] {
        assert_eq!(invitations(&callback, visit), 1, "one invitation per visit");
    }
    assert!(
        other_app
            .delivered()
            .iter()
            .all(|r| r.notice_type() != "survey.invited"),
        "no other app hears of the surveys"
    );

    // The patient reads the survey and answers it.
    let card = first.patient.card_number.as_str();
    let res = read(&city, "wechat", &first, Some(card)).await;
    assert_eq!(res.status(), 200);
    let survey: Value = res.json().await.unwrap();
    assert_eq!(
        (survey["status"].as_str(), survey["answer"].is_null()),
        (Some("open"), true)
    );
    let given = answers(5, 4, 5, true, Some(" 医生很耐心 "));
    let res = answer(&city, "wechat", &first, Some(card), &given).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["idempotency-replayed"], "false");
    let recorded: Value = res.json().await.unwrap();
    assert_eq!(recorded["status"], "answered");
    assert_eq!(recorded["answer"]["overall"], 5);
    assert_eq!(recorded["answer"]["comment"], "医生很耐心");
    // The same answers again (a retry after a lost reply): the same record.
    let res = answer(&city, "wechat", &first, Some(card), &given).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["idempotency-replayed"], "true");
    assert_eq!(res.json::<Value>().await.unwrap(), recorded);
    // Other answers: refused, the first stands.
    let res = answer(
        &city,
        "wechat",
        &first,
        Some(card),
        &answers(1, 1, 1, false, None),
    )
    .await;
    assert_eq!(res.status(), 409);
    assert_eq!(problem(res).await["code"], "SURVEY_ALREADY_ANSWERED");
    let res = read(&city, "wechat", &first, Some(card)).await;
    assert_eq!(res.json::<Value>().await.unwrap()["answer"], recorded["answer"]);

    let second_card = second.patient.card_number.as_str();
    let res = answer(
        &city,
        "wechat",
        &second,
        Some(second_card),
        &answers(3, 2, 4, false, None),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // Bad answers name their field, and change nothing.
    let open_card = unanswered.patient.card_number.as_str();
    for (body, field) in [
        (answers(6, 4, 5, true, None), "overall"),
        (answers(5, 0, 5, true, None), "wait_time"),
        (answers(5, 4, 9, true, None), "explanation"),
        (answers(5, 4, 5, true, Some(&"好".repeat(501))), "comment"),
        (
            json!({ "overall": "five", "wait_time": 4, "explanation": 5, "would_recommend": true }),
            "overall",
        ),
        (
            json!({ "overall": 5, "wait_time": 4, "explanation": 5 }),
            "would_recommend",
        ),
        (
            json!({ "overall": 5, "wait_time": 4, "explanation": 5, "would_recommend": true, "name": "x" }),
            "name",
        ),
    ] {
        let res = answer(&city, "wechat", &unanswered, Some(open_card), &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let p = problem(res).await;
        assert_eq!(
            (p["code"].as_str(), p["field"].as_str()),
            (Some("INVALID_FIELD"), Some(field)),
            "{p}"
        );
    }

    // Outsiders: unsigned, another app (even with the patient's own card),
    // another patient's card, no card, a hospital's federation key.
    let good = answers(4, 4, 4, true, None);
    let path = format!("/v1/surveys/{}/answers", unanswered.survey);
    let unsigned = city
        .http
        .put(format!("{}{path}", city.gateway_url))
        .header("X-Patient-Card", open_card)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    for (app, card, status, code) in [
        ("app", Some(open_card), 403, "NOT_YOUR_SURVEY"),
        ("wechat", Some(card), 403, "NOT_YOUR_SURVEY"),
        ("wechat", None, 400, "INVALID_FIELD"),
    ] {
        let res = answer(&city, app, &unanswered, card, &good).await;
        assert_eq!(res.status(), status, "{app} {card:?}");
        assert_eq!(problem(res).await["code"], code, "{app} {card:?}");
        let res = read(&city, app, &unanswered, card).await;
        assert_eq!(res.status(), status, "read: {app} {card:?}");
    }
    let federation = signed(
        &city.http,
        &city.gateway_url,
        HOSPITAL_KEY,
        Method::PUT,
        &path,
        Some(&good),
    )
    .header("X-Patient-Card", open_card)
    .send()
    .await
    .unwrap();
    assert_eq!(federation.status(), 401, "a hospital's key is no channel app's");
    let res = read(&city, "wechat", &unanswered, Some(open_card)).await;
    let still: Value = res.json().await.unwrap();
    assert_eq!(
        (still["status"].as_str(), still["answer"].is_null()),
        (Some("open"), true)
    );
    let unknown = jyt_domain::survey::survey_id("chaoyang-no-such-booking");
    let res = call(
        &city,
        "wechat",
        Method::GET,
        &format!("/v1/surveys/{unknown}"),
        Some(open_card),
        None,
    )
    .await;
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "SURVEY_NOT_FOUND");

    // The hospital reports a visit eight days late: the survey exists but
    // is closed, and its app is not invited to it.
    clock.set(now - TimeDelta::days(8));
    see(&city, &late).await;
    clock.set(now);
    let late_card = late.patient.card_number.as_str();
    let survey: Value =
        jyt_testkit::eventually(Duration::from_secs(20), "the late visit's survey", || async {
            let res = read(&city, "wechat", &late, Some(late_card)).await;
            if res.status() == 200 {
                res.json::<Value>().await.ok()
            } else {
                None
            }
        })
        .await;
    assert_eq!(survey["status"], "expired");
    let res = answer(&city, "wechat", &late, Some(late_card), &good).await;
    assert_eq!(res.status(), 410);
    let p = problem(res).await;
    assert_eq!(p["code"], "SURVEY_EXPIRED");
    assert_eq!(
        p["expires_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        now - TimeDelta::days(1)
    );
    assert_eq!(
        invitations(&callback, &late),
        0,
        "no invitation to a closed survey"
    );

    // The operators' figures: exactly what was answered.
    let from = jyt_domain::time::local(now - TimeDelta::days(8)).date_naive();
    let to = jyt_domain::time::local(now).date_naive();
    let city_ops = console.login("city_ops").await;
    let query = format!("/v1/console/satisfaction?from={from}&to={to}");
    let page: Value = console
        .call(
            Some(&city_ops),
            Method::GET,
            &format!("{query}&group=doctor"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let t = &page["totals"];
    assert_eq!(
        [
            &t["sent"],
            &t["answered"],
            &t["expired"],
            &t["overall_sum"],
            &t["wait_time_sum"],
            &t["explanation_sum"],
            &t["would_recommend"]
        ],
        [4, 2, 1, 8, 6, 9, 1],
        "{page}"
    );
    assert_eq!(
        [
            &t["response_rate_percent"],
            &t["mean_overall"],
            &t["mean_wait_time"],
            &t["mean_explanation"],
            &t["recommend_percent"]
        ],
        [50.0, 4.0, 3.0, 4.5, 50.0]
    );
    let doctors: Vec<(String, i64, i64, Value)> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["doctor_id"].as_str().unwrap().to_owned(),
                r["sent"].as_i64().unwrap(),
                r["answered"].as_i64().unwrap(),
                r["mean_overall"].clone(),
            )
        })
        .collect();
    assert_eq!(
        doctors,
        [
            ("d-cardio-1".to_owned(), 2, 2, json!(4.0)),
            ("d-cardio-2".to_owned(), 1, 0, Value::Null),
            ("d-peds-1".to_owned(), 1, 0, Value::Null),
        ]
    );
    let trend: Vec<(String, i64, i64)> = page["trend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["week"].as_str().unwrap().to_owned(),
                r["sent"].as_i64().unwrap(),
                r["answered"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trend,
        [
            (monday_of(from).to_string(), 1, 0),
            (monday_of(to).to_string(), 3, 2)
        ]
    );
    let body = page.to_string();
    for secret in [
        first.patient.person_id.to_string(),
        first.booking.clone(),
        "医生很耐心".to_owned(),
    ] {
        assert!(
            !body.contains(&secret),
            "no patient, booking or comment on the page"
        );
    }

    // The CSV says the same, per department.
    let res = console
        .call(
            Some(&city_ops),
            Method::GET,
            &format!("{query}&group=department&format=csv"),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[0].starts_with("week,hospital_id,department_id,department,"),
        "{csv}"
    );
    assert_eq!(
        lines[1],
        ",chaoyang,cardio,心血管内科 Cardiology,,,3,2,0,66.67,4.00,3.00,4.50,50.00,8,6,9"
    );
    assert_eq!(lines[2], ",chaoyang,peds,儿科 Pediatrics,,,1,0,1,0.00,,,,,0,0,0");
    assert!(!csv.contains(&first.patient.person_id.to_string()) && !csv.contains("医生很耐心"));

    // A hospital's operator sees their own hospital only.
    let own = console.login("chaoyang_ops").await;
    let res = console.call(Some(&own), Method::GET, &query, None).await;
    let mine: Value = res.json().await.unwrap();
    assert_eq!(mine["hospital"], HOSPITAL);
    assert_eq!(mine["totals"]["sent"], 4);
    let other = console.login("pumch_ops").await;
    let res = console
        .call(
            Some(&other),
            Method::GET,
            &format!("{query}&hospital={HOSPITAL}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = console.call(Some(&other), Method::GET, &query, None).await;
    let theirs: Value = res.json().await.unwrap();
    assert_eq!(
        (theirs["hospital"].as_str(), &theirs["totals"]["sent"]),
        (Some("pumch"), &json!(0))
    );
    let res = console.call(None, Method::GET, &query, None).await;
    assert_eq!(res.status(), 401);
    let res = console
        .call(Some(&city_ops), Method::GET, &format!("{query}&group=ward"), None)
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["field"], "group");

    // The hospital's HIS reads the same figures through the federation API,
    // its own hospital's only; channel apps and outsiders are refused.
    let fed = |path: &str| {
        signed(
            &city.http,
            &city.gateway_url,
            HOSPITAL_KEY,
            Method::GET,
            path,
            None,
        )
    };
    let own = format!("/federation/v1/hospitals/{HOSPITAL}/satisfaction?from={from}&to={to}&group=doctor");
    let res = fed(&own).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let theirs: Value = res.json().await.unwrap();
    assert_eq!(theirs["totals"], page["totals"]);
    assert_eq!(theirs["rows"], page["rows"]);
    let res = fed(&format!(
        "/federation/v1/hospitals/{HOSPITAL}/satisfaction?from={from}&to={to}&group=department&format=csv"
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), csv);
    let res = fed("/federation/v1/hospitals/pumch/satisfaction")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    let res = fed(&format!(
        "/federation/v1/hospitals/{HOSPITAL}/satisfaction?hospital=pumch"
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "the query cannot name another hospital");
    assert_eq!(problem(res).await["field"], "hospital");
    let res = city
        .signed("wechat", Method::GET, &own, None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "a channel app's signature is no hospital's");
    let res = city
        .http
        .get(format!("{}{own}", city.gateway_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
