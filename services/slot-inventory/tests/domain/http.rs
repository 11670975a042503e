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

#[tokio::test]
async fn bad_input_names_the_field() {
    let database_url = jyt_testkit::fresh_database("slothttp").await;
    let prefix = jyt_testkit::fresh_redis_prefix();
    let settings = slot_inventory::Settings::load_from(&env(&[
        ("HOSPITAL__ID", "httph"),
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
    let audience = jyt_signing::internal::hospital_audience("httph");
    let http = jyt_testkit::internal_client(&state.settings.internal_auth, &audience);

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
    let client = state.pool.get().await.unwrap();
    for table in ["bookings", "waitlist_entries", "outbox"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
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
