//! Post-visit surveys: created once per completed visit from
//! `booking.completed`, read and answered through the survey door only
//! with the gateway's internal token, answers idempotent and closed after
//! seven days, and the 满意度 figures (JSON and CSV) per hospital,
//! department, doctor and week, with no patient in them.

#![expect(clippy::unwrap_used, reason = "test: a failure is a failed test")]

use chrono::{TimeDelta, Utc};
use jyt_signing::internal::{CARD_ISSUING, CHANNEL_ACCOUNTING, GATEWAY_OPS, Minter};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{BOOKINGS, CITY, PUMCH, TestApp, assert_problem, booking, spawn_app, spawn_app_on_with};

const MASTER: &str = "survey-test-master-secret-0123456789abcdef";

async fn spawn_with_door() -> TestApp {
    let db = jyt_testkit::fresh_database("acct").await;
    spawn_app_on_with(
        db,
        jyt_testkit::fresh_redis_prefix(),
        &[("INTERNAL_AUTH__MASTER_SECRET", MASTER.to_owned())],
    )
    .await
}

fn token(audience: &str) -> String {
    Minter::from_master(MASTER.as_bytes(), "gateway", audience, 60).token()
}

/// A call to the survey door with `token` (None: without one).
async fn door(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, format!("{}/internal/v1{path}", app.address));
    if let Some(t) = token {
        req = req.header(jyt_signing::internal::HEADER, t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

/// `booking.completed` of a visit to `doctor` of `department` at `hospital`,
/// completed at `completed_at`, booked by `owner_app` (None: a window).
fn completed(
    id: &str,
    hospital: &str,
    (department, doctor): (&str, &str),
    owner_app: Option<&str>,
    completed_at: chrono::DateTime<Utc>,
) -> Value {
    let mut p = booking(
        id,
        hospital,
        "wechat",
        0,
        json!({ "completed_at": completed_at, "department_id": department, "doctor_id": doctor }),
    );
    p["status"] = json!("completed");
    p["owner_app"] = json!(owner_app);
    p["department"] = json!(format!("{department} dept"));
    p["doctor"] = json!(format!("Dr {doctor}"));
    p
}

fn answers(overall: i64, recommend: bool) -> Value {
    json!({ "overall": overall, "wait_time": 3, "explanation": 4, "would_recommend": recommend })
}

fn survey_path(booking: &str) -> String {
    format!("/surveys/{}", jyt_domain::survey::survey_id(booking))
}

#[tokio::test]
async fn a_completed_visit_has_one_survey_however_often_it_is_told() {
    let app = spawn_with_door().await;
    let now = Utc::now();
    let visit = completed("pumch-v1", "pumch", ("cardio", "d1"), Some("wxmini"), now);
    let window = completed("pumch-v2", "pumch", ("cardio", "d1"), None, now);
    let ids = [
        app.publish(BOOKINGS, "booking.completed", visit.clone()).await,
        app.publish(BOOKINGS, "booking.completed", window).await,
    ];
    app.applied(&ids).await;
    // Every entry again (same event ids), and the completion again under a
    // new event id (a second report of the same visit).
    let entries = app.entries(BOOKINGS).await;
    app.redeliver(BOOKINGS, &entries).await;
    let again = app.publish(BOOKINGS, "booking.completed", visit.clone()).await;
    app.applied(&[again]).await;

    let gateway = token(CHANNEL_ACCOUNTING);
    let res = door(&app, Some(&gateway), Method::GET, &survey_path("pumch-v1"), None).await;
    assert_eq!(res.status(), 200);
    let survey: Value = res.json().await.unwrap();
    assert_eq!(survey["owner_app"], "wxmini");
    assert_eq!(survey["patient_id"], visit["patient_id"]);
    assert_eq!(
        (survey["department"].as_str(), survey["doctor"].as_str()),
        (Some("cardio dept"), Some("Dr d1"))
    );
    assert_eq!(survey["status"], "open");
    assert_eq!(survey["questions_version"], 1);
    let expires: chrono::DateTime<Utc> = survey["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((expires - (now + TimeDelta::days(7))).num_milliseconds().abs() < 1);
    // A window's visit has nobody to ask.
    let res = door(&app, Some(&gateway), Method::GET, &survey_path("pumch-v2"), None).await;
    assert_problem(res, 404, "SURVEY_NOT_FOUND", Some("survey_id")).await;
    let (client, conn) = jyt_db::tokio_postgres::connect(&app.db_url, jyt_db::tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM surveys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_door_answers_only_the_gateways_token_and_is_shut_without_a_key() {
    let app = spawn_with_door().await;
    let id = app
        .publish(
            BOOKINGS,
            "booking.completed",
            completed("pumch-t1", "pumch", ("cardio", "d1"), Some("wxmini"), Utc::now()),
        )
        .await;
    app.applied(&[id]).await;
    let path = survey_path("pumch-t1");
    let forged = Minter::new(
        b"not-the-key-0123456789abcdef-0123",
        "gateway",
        CHANNEL_ACCOUNTING,
        60,
    )
    .token();
    let operator = app.login(CITY).await;
    let (card_issuing, gateway_ops) = (token(CARD_ISSUING), token(GATEWAY_OPS));
    for refused in [
        None,
        Some(forged.as_str()),
        Some(card_issuing.as_str()),
        Some(gateway_ops.as_str()),
        Some(operator.as_str()),
    ] {
        let res = door(
            &app,
            refused,
            Method::PUT,
            &format!("{path}/answers"),
            Some(&answers(5, true)),
        )
        .await;
        assert_problem(res, 401, "INTERNAL_AUTH_REQUIRED", None).await;
        let res = door(&app, refused, Method::GET, &path, None).await;
        assert_eq!(res.status(), 401);
    }
    let res = door(&app, Some(&token(CHANNEL_ACCOUNTING)), Method::GET, &path, None).await;
    let survey: Value = res.json().await.unwrap();
    assert_eq!(
        (survey["status"].as_str(), survey["answer"].is_null()),
        (Some("open"), true)
    );

    // Without a key configured the door answers nobody.
    let shut = spawn_app().await;
    let res = door(&shut, Some(&token(CHANNEL_ACCOUNTING)), Method::GET, &path, None).await;
    assert_problem(res, 401, "INTERNAL_AUTH_REQUIRED", None).await;
}

#[tokio::test]
async fn an_answer_is_recorded_once_and_a_closed_survey_takes_none() {
    let app = spawn_with_door().await;
    let now = Utc::now();
    let ids = [
        app.publish(
            BOOKINGS,
            "booking.completed",
            completed("pumch-a1", "pumch", ("cardio", "d1"), Some("wxmini"), now),
        )
        .await,
        app.publish(
            BOOKINGS,
            "booking.completed",
            completed(
                "pumch-a2",
                "pumch",
                ("cardio", "d1"),
                Some("wxmini"),
                now - TimeDelta::days(8),
            ),
        )
        .await,
    ];
    app.applied(&ids).await;
    let gateway = token(CHANNEL_ACCOUNTING);
    let put = |path: String, body: Value| {
        let (app, gateway) = (&app, gateway.clone());
        async move {
            door(
                app,
                Some(&gateway),
                Method::PUT,
                &format!("{path}/answers"),
                Some(&body),
            )
            .await
        }
    };
    let open = survey_path("pumch-a1");

    for (body, field) in [
        (answers(0, true), "overall"),
        (
            json!({ "overall": 5, "wait_time": 3, "explanation": 6, "would_recommend": true }),
            "explanation",
        ),
        (
            json!({ "overall": 5, "wait_time": 3, "explanation": 4 }),
            "would_recommend",
        ),
        (
            json!({ "overall": 5, "wait_time": 3, "explanation": 4, "would_recommend": true, "comment": "x".repeat(501) }),
            "comment",
        ),
    ] {
        assert_problem(put(open.clone(), body).await, 400, "INVALID_FIELD", Some(field)).await;
    }
    let res = door(&app, Some(&gateway), Method::GET, "/surveys/not-a-uuid", None).await;
    assert_problem(res, 400, "INVALID_FIELD", Some("survey_id")).await;
    let res = put(format!("/surveys/{}", Uuid::now_v7()), answers(5, true)).await;
    assert_problem(res, 404, "SURVEY_NOT_FOUND", Some("survey_id")).await;

    let res = put(open.clone(), answers(4, true)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["idempotency-replayed"], "false");
    let first: Value = res.json().await.unwrap();
    assert_eq!(
        (first["status"].as_str(), &first["answer"]["overall"]),
        (Some("answered"), &json!(4))
    );
    let res = put(open.clone(), answers(4, true)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["idempotency-replayed"], "true");
    assert_eq!(res.json::<Value>().await.unwrap(), first);
    let body = assert_problem(
        put(open.clone(), answers(2, false)).await,
        409,
        "SURVEY_ALREADY_ANSWERED",
        None,
    )
    .await;
    assert_eq!(
        body["answered_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
            .timestamp_micros(),
        first["answer"]["answered_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
            .timestamp_micros()
    );

    let closed = survey_path("pumch-a2");
    let body = assert_problem(
        put(closed.clone(), answers(5, true)).await,
        410,
        "SURVEY_EXPIRED",
        Some("survey_id"),
    )
    .await;
    assert!(body["expires_at"].is_string());
    let res = door(&app, Some(&gateway), Method::GET, &closed, None).await;
    let survey: Value = res.json().await.unwrap();
    assert_eq!(
        (survey["status"].as_str(), survey["answer"].is_null()),
        (Some("expired"), true)
    );
}

#[tokio::test]
async fn operators_see_counts_and_means_per_hospital_department_doctor_and_week_without_patients() {
    let app = spawn_with_door().await;
    let now = Utc::now();
    let visits = [
        ("pumch-f1", "pumch", ("cardio", "d1"), Some(5)),
        ("pumch-f2", "pumch", ("cardio", "d1"), Some(2)),
        ("pumch-f3", "pumch", ("cardio", "d2"), None),
        ("pumch-f4", "pumch", ("peds", "d3"), Some(4)),
        ("bjh-f5", "bjh", ("=cmd", "d9"), Some(1)),
    ];
    let mut ids = Vec::new();
    for (id, hospital, who, _) in visits {
        let p = completed(id, hospital, who, Some("wxmini"), now);
        ids.push(app.publish(BOOKINGS, "booking.completed", p).await);
    }
    app.applied(&ids).await;
    let gateway = token(CHANNEL_ACCOUNTING);
    for (id, _, _, overall) in visits {
        if let Some(overall) = overall {
            let path = format!("{}/answers", survey_path(id));
            let res = door(
                &app,
                Some(&gateway),
                Method::PUT,
                &path,
                Some(&answers(overall, overall >= 4)),
            )
            .await;
            assert_eq!(res.status(), 200);
        }
    }
    let today = jyt_domain::time::local(now).date_naive();
    let city = app.login(CITY).await;
    let q = format!("/v1/console/satisfaction?from={today}&to={today}");
    // No dates: the last 30 days up to today, today's visits included.
    let default = app.get_json(&city, "/v1/console/satisfaction").await;
    assert_eq!(default["to"], today.to_string(), "{default}");
    assert_eq!(
        default["from"],
        (today - chrono::Duration::days(29)).to_string(),
        "{default}"
    );
    assert_eq!(
        default["totals"],
        app.get_json(&city, &q).await["totals"],
        "the default range counts today's surveys: {default}"
    );

    let page = app.get_json(&city, &format!("{q}&group=doctor")).await;
    let rows: Vec<(String, String, i64, i64, Value)> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["hospital_id"].as_str().unwrap().to_owned(),
                r["doctor_id"].as_str().unwrap().to_owned(),
                r["sent"].as_i64().unwrap(),
                r["answered"].as_i64().unwrap(),
                r["mean_overall"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("pumch".into(), "d1".into(), 2, 2, json!(3.5)),
            ("bjh".into(), "d9".into(), 1, 1, json!(1.0)),
            ("pumch".into(), "d2".into(), 1, 0, Value::Null),
            ("pumch".into(), "d3".into(), 1, 1, json!(4.0)),
        ]
    );
    let t = &page["totals"];
    assert_eq!(
        [
            &t["sent"],
            &t["answered"],
            &t["overall_sum"],
            &t["would_recommend"]
        ],
        [5, 4, 12, 2]
    );
    assert_eq!(
        [
            &t["response_rate_percent"],
            &t["mean_overall"],
            &t["recommend_percent"]
        ],
        [80.0, 3.0, 50.0]
    );
    let week = today
        - TimeDelta::days(i64::from(
            chrono::Datelike::weekday(&today).num_days_from_monday(),
        ));
    assert_eq!(
        page["trend"],
        json!([{
            "week": week, "hospital_id": null, "department_id": null, "department": null, "doctor_id": null,
            "doctor": null, "sent": 5, "answered": 4, "expired": 0, "response_rate_percent": 80.0,
            "overall_sum": 12, "wait_time_sum": 12, "explanation_sum": 16, "would_recommend": 2,
            "mean_overall": 3.0, "mean_wait_time": 3.0, "mean_explanation": 4.0, "recommend_percent": 50.0,
        }])
    );
    for secret in ["pumch-f1", "patient_id", "comment"] {
        assert!(!page.to_string().contains(secret), "{secret} on the page");
    }

    // CSV per hospital: the same figures; a formula-like name made inert.
    let res = app.get(&city, &format!("{q}&group=department&format=csv")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = res.text().await.unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "week,hospital_id,department_id,department,doctor_id,doctor,sent,answered,expired,response_rate_percent,mean_overall,mean_wait_time,mean_explanation,recommend_percent,overall_sum,wait_time_sum,explanation_sum",
            ",pumch,cardio,cardio dept,,,3,2,0,66.67,3.50,3.00,4.00,50.00,7,6,8",
            ",bjh,'=cmd,'=cmd dept,,,1,1,0,100.00,1.00,3.00,4.00,0.00,1,3,4",
            ",pumch,peds,peds dept,,,1,1,0,100.00,4.00,3.00,4.00,100.00,4,3,4",
        ]
    );

    // A hospital's operator: their own hospital only.
    let pumch = app.login(PUMCH).await;
    let own = app.get_json(&pumch, &q).await;
    assert_eq!(
        (own["hospital"].as_str(), &own["totals"]["sent"]),
        (Some("pumch"), &json!(4))
    );
    let res = app.get(&pumch, &format!("{q}&hospital=bjh")).await;
    assert_problem(res, 403, "FORBIDDEN", Some("hospital")).await;
    for (param, field) in [
        ("group=ward", "group"),
        ("from=2026-13-01", "from"),
        ("channel=pigeon", "channel"),
    ] {
        let res = app.get(&city, &format!("/v1/console/satisfaction?{param}")).await;
        assert_eq!(res.status(), 400, "{param}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{param}: {body}");
    }
    let res = app
        .client
        .get(format!("{}/v1/console/satisfaction", app.address))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "UNAUTHENTICATED", None).await;
}
