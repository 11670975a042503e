//! Bad input over HTTP: a 4xx problem+json naming the field, nothing written.

use std::collections::HashMap;

use jyt_settings::Sources;
use uuid::Uuid;

fn env(pairs: &[(&str, &str)]) -> Sources {
    let p = "JYT_SLOT_INVENTORY__";
    let mut map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (format!("{p}{k}"), (*v).to_owned()))
        .collect();
    map.insert(format!("{p}REDIS__URLS"), jyt_testkit::redis_url());
    Sources::from_map(map)
}

async fn problem(res: reqwest::Response) -> serde_json::Value {
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    res.json().await.unwrap()
}

/// Each of `tables` holds no row: nothing was written.
async fn assert_empty(state: &slot_inventory::AppState, tables: &[&str]) {
    let client = state.pool.get().await.unwrap();
    for table in tables {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
}

/// Hospital `hospital` served alone on port 0 (one worker) against a fresh
/// database and Redis namespace: its address, its state, and a client
/// carrying the gateway's internal token for it.
async fn serve_alone(database: &str, hospital: &str) -> (String, slot_inventory::AppState, reqwest::Client) {
    let database_url = jyt_testkit::fresh_database(database).await;
    let prefix = jyt_testkit::fresh_redis_prefix();
    let settings = slot_inventory::Settings::load_from(&env(&[
        ("HOSPITAL__ID", hospital),
        ("HTTP__PORT", "0"),
        ("HTTP__WORKERS", "1"),
        ("POSTGRES__URL", &database_url),
        ("REDIS__KEY_PREFIX", &prefix),
    ]))
    .unwrap();
    let app = slot_inventory::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    let audience = jyt_signing::internal::hospital_audience(hospital);
    let http = jyt_testkit::internal_client(&state.settings.internal_auth, &audience);
    (base, state, http)
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let (base, state, http) = serve_alone("slothttp", "httph").await;

    let segment = Uuid::new_v4();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.put(format!("{base}/v1/segments/{segment}/capacity"))
                .json(&serde_json::json!({ "capacity": -1 })),
            400,
            "capacity",
        ),
        (
            http.put(format!("{base}/v1/segments/not-a-uuid/capacity"))
                .json(&serde_json::json!({ "capacity": 3 })),
            400,
            "segment_id",
        ),
        (
            http.post(format!("{base}/v1/schedules/nope/waitlist"))
                .json(&serde_json::json!({ "patient_id": Uuid::new_v4(), "channel": "wechat" })),
            400,
            "schedule_id",
        ),
        (
            http.post(format!("{base}/v1/schedules/{segment}/waitlist"))
                .json(&serde_json::json!({ "patient_id": "x", "channel": "wechat" })),
            400,
            "patient_id",
        ),
        (
            http.post(format!("{base}/v1/schedules/{segment}/waitlist"))
                .json(&serde_json::json!({ "patient_id": Uuid::new_v4(), "channel": "referral" })),
            400,
            "channel",
        ),
        (
            http.post(format!("{base}/v1/bookings/httph-{segment}/confirm"))
                .json(&serde_json::json!({ "payment_reference": "", "payment_method": "self_pay" })),
            400,
            "payment_reference",
        ),
        (
            http.post(format!("{base}/v1/bookings/httph-{segment}/confirm"))
                .json(&serde_json::json!({ "payment_reference": "t", "payment_method": "cash" })),
            400,
            "payment_method",
        ),
        (
            http.post(format!("{base}/v1/bookings/lookup"))
                .json(&serde_json::json!({ "booking_ids": [] })),
            400,
            "booking_ids",
        ),
        (
            http.post(format!("{base}/v1/bookings/lookup"))
                .json(&serde_json::json!({ "booking_ids": [format!("httph-{segment}"), "garbage"] })),
            400,
            "booking_ids",
        ),
        (
            http.post(format!("{base}/v1/bookings/lookup")).json(&serde_json::json!({
                "booking_ids": vec![format!("httph-{segment}"); slot_inventory::routes::bookings::LOOKUP_MAX + 1]
            })),
            400,
            "booking_ids",
        ),
        (
            http.post(format!("{base}/v1/bookings/garbage/cancel"))
                .json(&serde_json::json!({ "patient_id": Uuid::new_v4() })),
            400,
            "booking_id",
        ),
    ];
    for (req, status, field) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{field}");
        let body = problem(res).await;
        assert_eq!(body["field"], field, "{body}");
    }

    // Well-formed ids of nothing: 404 with their own codes.
    let res = http
        .post(format!("{base}/v1/schedules/{segment}/waitlist"))
        .json(&serde_json::json!({ "patient_id": Uuid::new_v4(), "channel": "wechat" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "SCHEDULE_NOT_FOUND");
    let res = http
        .put(format!("{base}/v1/segments/{segment}/capacity"))
        .json(&serde_json::json!({ "capacity": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "SLOT_NOT_FOUND");

    // Nothing was written.
    assert_empty(&state, &["bookings", "waitlist_entries", "outbox"]).await;
}

/// The routes under one id are scopes (`routes::configure`): a path under
/// a booking's, a schedule's, a doctor's or a submission's id that names
/// no route, or names one with another method, is the app's own 404
/// problem, as any unknown path is; the plain routes beside a scope's
/// prefix are still reached; and nothing is written.
#[tokio::test]
async fn paths_under_an_id_that_name_no_route_are_a_404_problem() {
    let (base, state, http) = serve_alone("slotscope", "scopeh").await;

    let id = Uuid::new_v4();
    let booking = format!("scopeh-{id}");
    let body = serde_json::json!({});
    let no_route: Vec<reqwest::RequestBuilder> = vec![
        http.post(format!("{base}/v1/bookings/{booking}/refund"))
            .json(&body),
        http.delete(format!("{base}/v1/bookings/{booking}")),
        http.get(format!("{base}/v1/bookings/{booking}/confirm")),
        http.post(format!("{base}/v1/bookings/{booking}/cancel/again"))
            .json(&body),
        http.get(format!("{base}/v1/schedules/{id}/waitlist")),
        http.post(format!("{base}/v1/schedules/{id}/start")).json(&body),
        http.delete(format!("{base}/v1/doctors/{id}/precise-profile")),
        http.get(format!("{base}/v1/doctors/{id}")),
        http.put(format!("{base}/v1/precise-submissions/{id}/decision"))
            .json(&body),
        http.post(format!("{base}/v1/precise-submissions")).json(&body),
        http.get(format!("{base}/v1/nowhere/{id}")),
    ];
    for req in no_route {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url().path());
        let res = http.execute(req).await.unwrap();
        assert_eq!(res.status(), 404, "{what}");
        let problem = problem(res).await;
        assert_eq!(problem["code"], "NOT_FOUND", "{what}: {problem}");
    }

    // Beside the scopes: the plain routes that share their prefixes, and
    // a scoped route reached by its full path.
    let res = http
        .post(format!("{base}/v1/bookings/lookup"))
        .json(&serde_json::json!({ "booking_ids": [booking] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .get(format!("{base}/v1/precise-submissions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .get(format!("{base}/v1/bookings/{booking}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "BOOKING_NOT_FOUND");

    assert_empty(
        &state,
        &["bookings", "waitlist_entries", "precise_submissions", "outbox"],
    )
    .await;
}

#[test]
fn a_release_window_of_zero_or_overfull_pools_stop_the_service_naming_the_key() {
    let err = slot_inventory::Settings::load_from(&env(&[("POLICY__WINDOW_DAYS", "0")])).unwrap_err();
    assert!(err.to_string().contains("policy.window_days"), "{err}");
    let err = slot_inventory::Settings::load_from(&env(&[("POLICY__WINDOW_DAYS", "91")])).unwrap_err();
    assert!(err.to_string().contains("policy.window_days"), "{err}");
    let err =
        slot_inventory::Settings::load_from(&env(&[("POLICY__POOL_SHARES__WECHAT", "90")])).unwrap_err();
    assert!(err.to_string().contains("policy.pool_shares"), "{err}");
    let err = slot_inventory::Settings::load_from(&env(&[("POLICY__RELEASE_TIME", "8h30")])).unwrap_err();
    assert!(err.to_string().contains("release_time"), "{err}");
}

/// With `http.ops_port` set, `/metrics` leaves the API port and the ops
/// port answers nothing but the operations paths: Prometheus scrapes one
/// port, callers (and an Ingress) reach the other.
#[tokio::test]
async fn metrics_are_served_on_the_ops_port_only() {
    let database_url = jyt_testkit::fresh_database("slotops").await;
    let prefix = jyt_testkit::fresh_redis_prefix();
    let settings = slot_inventory::Settings::load_from(&env(&[
        ("HOSPITAL__ID", "opsh"),
        ("HTTP__PORT", "0"),
        ("HTTP__OPS_PORT", "0"),
        ("HTTP__WORKERS", "1"),
        ("POSTGRES__URL", &database_url),
        ("REDIS__KEY_PREFIX", &prefix),
    ]))
    .unwrap();
    let app = slot_inventory::Application::build(settings).await.unwrap();
    let api = format!("http://127.0.0.1:{}", app.port());
    let ops = format!("http://127.0.0.1:{}", app.ops_port().unwrap());
    assert_ne!(api, ops);
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    let audience = jyt_signing::internal::hospital_audience("opsh");
    let http = jyt_testkit::internal_client(&state.settings.internal_auth, &audience);
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("{ops}/metrics")).await, 200);
    assert_eq!(status(format!("{ops}/healthz")).await, 200);
    assert_eq!(
        status(format!("{api}/metrics")).await,
        404,
        "no metrics on the API port"
    );
    assert_eq!(status(format!("{api}/metrics/")).await, 404);
    assert_eq!(
        status(format!("{api}/healthz")).await,
        200,
        "probes still reach the API port"
    );
    // The ops port is no second door to the API, even with a valid token.
    assert_eq!(status(format!("{ops}/v1/schedules?date=2026-12-01")).await, 404);
    assert_eq!(status(format!("{api}/v1/schedules?date=2026-12-01")).await, 200);
}

/// Hospitals of one process on one shared server (`jyt up`, the load
/// test's city): each port is answered by its own hospital's app, with its
/// own data, internal-token audience and ops port, though one set of
/// workers serves them all.
#[tokio::test]
async fn hospitals_served_together_each_answer_on_their_own_ports() {
    let prefix = jyt_testkit::fresh_redis_prefix();
    let date = jyt_domain::time::today() + chrono::Days::new(3);
    let mut hospitals = Vec::new();
    let mut seen = Vec::new();
    for id in ["togethera", "togetherb"] {
        let database_url = jyt_testkit::fresh_database("slottogether").await;
        let settings = slot_inventory::Settings::load_from(&env(&[
            ("HOSPITAL__ID", id),
            ("HTTP__PORT", "0"),
            ("HTTP__OPS_PORT", "0"),
            ("POSTGRES__URL", &database_url),
            ("REDIS__KEY_PREFIX", &prefix),
        ]))
        .unwrap();
        let hospital = slot_inventory::Hospital::build(settings).await.unwrap();
        // Only the first hospital has a day of schedules.
        let seeded = if id == "togethera" {
            slot_inventory::seed::seed_demo_day(hospital.state(), date, 2)
                .await
                .unwrap()
        } else {
            Vec::new()
        };
        let state = hospital.state().clone();
        let http = jyt_testkit::internal_client(
            &state.settings.internal_auth,
            &jyt_signing::internal::hospital_audience(id),
        );
        seen.push((format!("http://127.0.0.1:{}", hospital.port()), http, seeded));
        hospitals.push(hospital);
    }
    let ops_a = hospitals[0].ops_port().unwrap();
    let served = slot_inventory::serve_together(1, hospitals).unwrap();
    tokio::spawn(served.run_until_stopped());

    let schedules =
        |http: &reqwest::Client, base: &str| http.get(format!("{base}/v1/schedules?date={date}")).send();
    let (a, http_a, seeded_a) = &seen[0];
    let (b, http_b, _) = &seen[1];
    let answer_a = schedules(http_a, a).await.unwrap();
    assert_eq!(answer_a.status(), 200);
    let text_a = answer_a.text().await.unwrap();
    assert!(
        seeded_a
            .iter()
            .all(|s| text_a.contains(&s.schedule_id.to_string())),
        "hospital A's port answers A's schedules: {text_a}"
    );
    let answer_b = schedules(http_b, b).await.unwrap();
    assert_eq!(answer_b.status(), 200);
    let text_b = answer_b.text().await.unwrap();
    assert!(
        seeded_a
            .iter()
            .all(|s| !text_b.contains(&s.schedule_id.to_string())),
        "hospital B's port answers B's (none): {text_b}"
    );
    // Each listener checks its own hospital's audience: A's token is no
    // key to B.
    assert_eq!(schedules(http_a, b).await.unwrap().status(), 401);
    assert_eq!(schedules(http_b, a).await.unwrap().status(), 401);
    // The ops port stays apart, per hospital.
    let metrics = http_a
        .get(format!("http://127.0.0.1:{ops_a}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        http_a.get(format!("{a}/metrics")).send().await.unwrap().status(),
        404
    );
}
