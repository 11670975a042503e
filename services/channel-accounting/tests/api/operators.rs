//! Operator logins, roles, CSV reports and bad input; brute force slowed.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers below: a failed unwrap is a failed test, with its location"
)]

use serde_json::{Value, json};

use crate::helpers::{BOOKINGS, CITY, PUMCH, TestApp, assert_problem, booking, spawn_app};

#[tokio::test]
async fn a_hospital_operator_sees_only_their_hospital() {
    let app = spawn_app().await;
    let ids = vec![
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking("pumch-1", "pumch", "wechat", 100, json!({})),
        )
        .await,
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking("tongren-1", "tongren", "kiosk", 100, json!({})),
        )
        .await,
    ];
    app.applied(&ids).await;
    let pumch = app.login(PUMCH).await;

    let me = app.get_json(&pumch, "/v1/operators/me").await;
    assert_eq!(
        me,
        json!({ "login": "pumch_ops", "role": "hospital", "hospital_id": "pumch" })
    );
    let own = app.get_json(&pumch, "/v1/reports/channels").await;
    let hospitals: Vec<&Value> = own["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["hospital_id"])
        .collect();
    assert_eq!(hospitals, vec!["pumch"]);
    for path in [
        "/v1/reports/channels?hospital=tongren",
        "/v1/reports/money?hospital=tongren",
        "/v1/reports/settlement?hospital=tongren",
        "/v1/console/overview?hospital=tongren",
    ] {
        let body = assert_problem(app.get(&pumch, path).await, 403, "FORBIDDEN", Some("hospital")).await;
        assert!(body["detail"].as_str().unwrap().contains("pumch"), "{body}");
    }
    let overview = app.get_json(&pumch, "/v1/console/overview").await;
    assert_eq!(
        overview["reconciliation"],
        Value::Null,
        "statements are the city's"
    );
    assert_problem(
        app.get(&pumch, "/v1/reconciliation/statements").await,
        403,
        "FORBIDDEN",
        Some("role"),
    )
    .await;

    let city = app.login(CITY).await;
    let all = app.get_json(&city, "/v1/reports/channels").await;
    assert_eq!(all["rows"].as_array().unwrap().len(), 2);
    let one = app
        .get_json(&city, "/v1/reports/channels?hospital=tongren&channel=kiosk")
        .await;
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn logins_sessions_and_bad_input_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let url = format!("{}/v1/operators/login", app.address);
    let post = |body: Value| app.client.post(&url).json(&body).send();
    assert_problem(
        post(json!({ "login": "ops", "password": "wrong" }))
            .await
            .unwrap(),
        401,
        "INVALID_CREDENTIALS",
        None,
    )
    .await;
    assert_problem(
        post(json!({ "login": "nobody", "password": "x" })).await.unwrap(),
        401,
        "INVALID_CREDENTIALS",
        None,
    )
    .await;
    assert_problem(
        post(json!({ "login": "ops" })).await.unwrap(),
        400,
        "INVALID_FIELD",
        Some("password"),
    )
    .await;
    assert_problem(
        post(json!({ "login": "", "password": "x" })).await.unwrap(),
        400,
        "INVALID_FIELD",
        Some("login"),
    )
    .await;

    let res = app
        .client
        .get(format!("{}/v1/reports/channels", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_problem(res, 401, "UNAUTHENTICATED", Some("Authorization")).await;
    assert_problem(
        app.get("not-a-token", "/v1/reports/channels").await,
        401,
        "UNAUTHENTICATED",
        None,
    )
    .await;

    let token = app.login(CITY).await;
    for (query, field) in [
        ("channel=weixin", "channel"),
        ("date=2026-02-30", "date"),
        ("from=2026-11-30&to=2026-11-01", "to"),
        ("from=2025-01-01&to=2026-11-30", "to"),
        ("to=2026-11-30", "from"),
        ("date=2026-11-30&from=2026-11-30", "date"),
        ("format=xml", "format"),
        ("colour=red", "colour"),
    ] {
        let res = app.get(&token, &format!("/v1/reports/channels?{query}")).await;
        assert_problem(res, 400, "INVALID_FIELD", Some(field)).await;
    }

    // Logging out ends the session.
    let res = app
        .client
        .delete(format!("{}/v1/operators/session", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(
        app.get(&token, "/v1/operators/me").await,
        401,
        "UNAUTHENTICATED",
        None,
    )
    .await;
}

#[tokio::test]
async fn reports_come_as_csv_too() {
    let app = spawn_app().await;
    let ids = vec![
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking(
                "pumch-1",
                "pumch",
                "wechat",
                10_000,
                json!({ "payment_reference": "wx-1" }),
            ),
        )
        .await,
    ];
    app.applied(&ids).await;
    let token = app.login(CITY).await;
    let today = jyt_domain::time::today();
    let res = app
        .client
        .get(format!("{}/v1/reports/channels?date={today}", app.address))
        .bearer_auth(&token)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let text = res.text().await.unwrap();
    let mut lines = text.split("\r\n");
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("day,hospital_id,channel,attempts,bookings,")
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("{today},pumch,wechat,0,1,")),
        "{text}"
    );

    for (path, header) in [
        (
            "/v1/reports/money?format=csv",
            "day,hospital_id,channel,payment_method,fees_fen,",
        ),
        (
            "/v1/reports/settlement?format=csv",
            "day,hospital_id,fees_fen,refunds_fen,service_fee_fen,payable_fen",
        ),
    ] {
        let text = app.get(&token, path).await.text().await.unwrap();
        assert!(text.starts_with(header), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }
    let settlement = app
        .get(&token, "/v1/reports/settlement?format=csv")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        settlement.contains(&format!("{today},pumch,10000,0,60,9940")),
        "{settlement}"
    );
}

#[tokio::test]
async fn the_console_page_and_its_assets_are_served() {
    let app = spawn_app().await;
    for (path, kind, needle) in [
        ("/console", "text/html", "login-form"),
        ("/console/console.js", "text/javascript", "/v1/console/overview"),
        ("/console/console.css", "text/css", ".tiles"),
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(kind));
        assert!(res.text().await.unwrap().contains(needle), "{path}");
    }
}

async fn spawn_app_with(extra: &[(&str, String)]) -> TestApp {
    let db_url = jyt_testkit::fresh_database("acct").await;
    crate::helpers::spawn_app_on_with(db_url, jyt_testkit::fresh_redis_prefix(), extra).await
}

impl TestApp {
    async fn try_login(&self, login: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/operators/login", self.address))
            .json(&json!({ "login": login, "password": password }))
            .send()
            .await
            .unwrap()
    }
}

/// A 429 LOGIN_THROTTLED naming `login`, with a Retry-After within the
/// window; answers its body.
async fn assert_throttled(res: reqwest::Response, window_seconds: u64) -> Value {
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=window_seconds).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_problem(res, 429, "LOGIN_THROTTLED", Some("login")).await
}

#[tokio::test]
async fn after_five_wrong_passwords_even_the_right_one_is_refused() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let res = app.try_login(CITY.0, "wrong").await;
        assert_problem(res, 401, "INVALID_CREDENTIALS", Some("password")).await;
    }
    // Not checked at all: the right password gets the same answer.
    let body = assert_throttled(app.try_login(CITY.0, CITY.1).await, 900).await;
    assert!(body["detail"].as_str().unwrap().contains("login name"), "{body}");
    assert_throttled(app.try_login(CITY.0, "wrong").await, 900).await;
    // Another login from the same address is not this name's limit.
    app.login(PUMCH).await;
}

#[tokio::test]
async fn failures_from_one_address_throttle_every_login_name() {
    let app = spawn_app_with(&[("OPERATORS__MAX_FAILED_LOGINS_PER_ADDRESS", "6".to_owned())]).await;
    // Four for one name (under its limit of five), two for names that do
    // not exist: counted the same.
    for _ in 0..4 {
        let res = app.try_login(CITY.0, "wrong").await;
        assert_problem(res, 401, "INVALID_CREDENTIALS", None).await;
    }
    for name in ["nobody", "no_one"] {
        let res = app.try_login(name, "guess").await;
        assert_problem(res, 401, "INVALID_CREDENTIALS", None).await;
    }
    // A name with no failures of its own, right password: the address is
    // over its limit.
    let body = assert_throttled(app.try_login(PUMCH.0, PUMCH.1).await, 900).await;
    assert!(
        body["detail"].as_str().unwrap().contains("client address"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unknown_login_answers_exactly_as_a_wrong_password() {
    let app = spawn_app().await;
    let answer = |res: reqwest::Response| async move {
        let status = res.status();
        let mut headers: Vec<(String, String)> = res
            .headers()
            .iter()
            .filter(|(name, _)| !["date", "content-length", "traceparent"].contains(&name.as_str()))
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        let body: Value = res.json().await.unwrap();
        (status, headers, body)
    };
    let wrong = answer(app.try_login(CITY.0, "not-the-password").await).await;
    let unknown = answer(app.try_login("no-such-operator", "not-the-password").await).await;
    assert_eq!(unknown, wrong);
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.2["code"], "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn password_checks_hold_no_database_connection() {
    // One connection, and a short wait for it. Each login below checks a
    // password at the real accounts' cost (the unknown one against the
    // dummy hash), which takes longer than that wait in a test build: a
    // login holding the connection through its check would leave the
    // others waiting past the timeout, answered 503 DATABASE_UNAVAILABLE.
    let real = channel_accounting::auth::hash_password(CITY.1).unwrap();
    let app = spawn_app_with(&[
        ("POSTGRES__POOL_MAX_SIZE", "1".to_owned()),
        ("POSTGRES__WAIT_TIMEOUT_MS", "250".to_owned()),
        ("OPERATORS__ACCOUNTS__OPS__PASSWORD_HASH", real),
    ])
    .await;
    let logins = [
        (CITY.0, CITY.1),
        (CITY.0, CITY.1),
        (CITY.0, "wrong"),
        ("no-such-operator", CITY.1),
    ];
    let answers = futures::future::join_all(
        logins
            .iter()
            .map(|(login, password)| app.try_login(login, password)),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|res| res.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 401, 401]);
}
