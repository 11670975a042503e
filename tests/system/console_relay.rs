//! The operators' console reaches hospitals only through the gateway's
//! relay (`/ops/v1`): 加号 by a hospital operator lands in that hospital's
//! PostgreSQL and in the audit trail with the operator as actor; another
//! hospital, an outsider, a channel app and a forged or misdirected token
//! are refused by the console and again by the gateway, and change nothing.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers below: a failed unwrap is a failed test, with its location"
)]

use std::time::Duration;

use jyt_domain::SlotRef;
use jyt_signing::internal::{self, ActingOperator, GATEWAY_OPS};
use jyt_system_tests::{
    ALL_SEATS_COMMON, Callback, GATEWAY_MASTER_SECRET, TestCity, TestHospital, eventually, problem,
    spawn_console, visit_day,
};
use reqwest::Method;
use serde_json::json;

async fn capacity(h: &TestHospital, slot: &SlotRef) -> i32 {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_one("SELECT capacity FROM segments WHERE id = $1", &[&slot.id])
        .await
        .unwrap()
        .get(0)
}

/// A relay token as the console would mint it, for `operator`, with `key`.
fn token(key: &str, operator: &ActingOperator) -> String {
    let expires = chrono::Utc::now().timestamp() + 60;
    internal::mint(key.as_bytes(), &operator.caller().unwrap(), GATEWAY_OPS, expires)
}

#[tokio::test]
async fn a_hospital_operator_adds_seats_to_their_own_hospital_only_and_the_trail_names_them() {
    let city = TestCity::spawn(&["pumch", "tongren"]).await;
    let (pumch, tongren) = (city.hospital(0), city.hospital(1));
    let pumch_slot = pumch.seed_visit_day(4).await[0].clone();
    let tongren_slot = tongren.seed_visit_day(4).await[0].clone();
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch", "tongren"]).await;
    let pumch_ops = console.login("pumch_ops").await;
    let city_ops = console.login("city_ops").await;

    // The day's schedules, to choose the segment from.
    let day = visit_day();
    let res = console
        .call(
            Some(&pumch_ops),
            Method::GET,
            &format!("/v1/console/hospitals/pumch/schedules?date={day}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let listing: serde_json::Value = res.json().await.unwrap();
    assert!(listing.to_string().contains(&pumch_slot.to_string()), "{listing}");

    // 加号 on their own hospital.
    let path = format!("/v1/console/hospitals/pumch/segments/{}/capacity", pumch_slot.id);
    let res = console
        .call(
            Some(&pumch_ops),
            Method::PUT,
            &path,
            Some(json!({ "capacity": 7 })),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(capacity(pumch, &pumch_slot).await, 7);

    // The audit trail names the operator, through the gateway, for the slot.
    let trail = format!("/v1/console/audit?slot={pumch_slot}");
    let http = console.http.clone();
    let url = format!("{}{trail}", console.url);
    let entry: serde_json::Value = eventually(Duration::from_secs(15), "the capacity change audited", || {
        let (http, url, token) = (http.clone(), url.clone(), city_ops.clone());
        async move {
            let body: serde_json::Value = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["entries"].as_array()?.first().cloned()
        }
    })
    .await;
    assert_eq!(entry["actor"], "gateway/operator:pumch_ops", "{entry}");
    assert_eq!(entry["kind"], "capacity");
    assert_eq!(entry["summary"], "capacity 4 → 7 (加号 added)");

    // Another hospital: refused by the console, nothing changed.
    let other = format!(
        "/v1/console/hospitals/tongren/segments/{}/capacity",
        tongren_slot.id
    );
    let res = console
        .call(
            Some(&pumch_ops),
            Method::PUT,
            &other,
            Some(json!({ "capacity": 9 })),
        )
        .await;
    let body = problem(res).await;
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("FORBIDDEN"), Some("hospital"))
    );
    let res = console
        .call(
            Some(&pumch_ops),
            Method::GET,
            &format!("/v1/console/hospitals/tongren/schedules?date={day}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 403);
    // ...and by the gateway, should a console ever ask.
    let key = internal::derive_key(GATEWAY_MASTER_SECRET.as_bytes(), GATEWAY_OPS);
    let ann = ActingOperator {
        login: "pumch_ops".into(),
        hospital: Some("pumch".into()),
    };
    let relay = format!(
        "{}/ops/v1/hospitals/tongren/segments/{}/capacity",
        city.gateway_url, tongren_slot.id
    );
    let res = city
        .http
        .put(&relay)
        .header(internal::HEADER, token(&key, &ann))
        .json(&json!({ "capacity": 9 }))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    assert_eq!(capacity(tongren, &tongren_slot).await, 4);

    // The city operator may act on any hospital.
    let res = console
        .call(
            Some(&city_ops),
            Method::PUT,
            &other,
            Some(json!({ "capacity": 5 })),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(capacity(tongren, &tongren_slot).await, 5);
}

#[tokio::test]
async fn the_relay_refuses_outsiders_channel_apps_and_tokens_not_made_for_it() {
    let city = TestCity::spawn(&["pumch"]).await;
    let h = city.hospital(0);
    let slot = h.seed_visit_day(4).await[0].clone();
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch"]).await;
    let relay = format!(
        "{}/ops/v1/hospitals/pumch/segments/{}/capacity",
        city.gateway_url, slot.id
    );
    let body = json!({ "capacity": 9 });
    let city_op = ActingOperator {
        login: "city_ops".into(),
        hospital: None,
    };
    // No token; a channel app's signed request; a token under another
    // audience's key; a gateway-ops token whose caller is no operator.
    let ops_key = internal::derive_key(GATEWAY_MASTER_SECRET.as_bytes(), GATEWAY_OPS);
    let card_key = internal::derive_key(GATEWAY_MASTER_SECRET.as_bytes(), internal::CARD_ISSUING);
    let not_an_operator = internal::mint(
        ops_key.as_bytes(),
        "gateway",
        GATEWAY_OPS,
        chrono::Utc::now().timestamp() + 60,
    );
    let attempts: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no token", city.http.put(&relay).json(&body)),
        (
            "channel app",
            city.signed(
                "wechat",
                Method::PUT,
                relay.trim_start_matches(&city.gateway_url),
                Some(&body),
            ),
        ),
        (
            "another audience's key",
            city.http
                .put(&relay)
                .header(internal::HEADER, token(&card_key, &city_op))
                .json(&body),
        ),
        (
            "not an operator",
            city.http
                .put(&relay)
                .header(internal::HEADER, not_an_operator)
                .json(&body),
        ),
    ];
    for (what, req) in attempts {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert_eq!(problem(res).await["code"], "OPERATOR_UNAUTHORIZED", "{what}");
    }
    assert_eq!(capacity(h, &slot).await, 4, "nothing changed");

    // The console: no session, bad input naming its field, nothing written.
    let path = format!("/v1/console/hospitals/pumch/segments/{}/capacity", slot.id);
    let res = console
        .call(None, Method::PUT, &path, Some(json!({ "capacity": 9 })))
        .await;
    assert_eq!(res.status(), 401);
    let pumch_ops = console.login("pumch_ops").await;
    for (path, body, field) in [
        (path.clone(), json!({ "capacity": -1 }), "capacity"),
        (path.clone(), json!({ "capacity": 10_001 }), "capacity"),
        (path.clone(), json!({ "capacity": "ten" }), "capacity"),
        (path.clone(), json!({ "capacity": 5, "colour": "red" }), "colour"),
        (
            "/v1/console/hospitals/pumch/segments/not-a-uuid/capacity".to_owned(),
            json!({ "capacity": 5 }),
            "segment",
        ),
        (
            format!("/v1/console/hospitals/PUMCH!/segments/{}/capacity", slot.id),
            json!({ "capacity": 5 }),
            "hospital",
        ),
    ] {
        let res = console
            .call(Some(&pumch_ops), Method::PUT, &path, Some(body.clone()))
            .await;
        assert_eq!(res.status(), 400, "{path} {body}");
        assert_eq!(problem(res).await["field"], field, "{path} {body}");
    }
    assert_eq!(capacity(h, &slot).await, 4, "nothing changed");
}

#[tokio::test]
async fn dead_letters_are_a_city_operators_business() {
    let city = TestCity::spawn(&["pumch"]).await;
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch"]).await;
    let city_ops = console.login("city_ops").await;
    let pumch_ops = console.login("pumch_ops").await;

    let res = console
        .call(Some(&city_ops), Method::GET, "/v1/console/dead-letters", None)
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, json!({ "dead_letters": [] }));
    let res = console
        .call(
            Some(&city_ops),
            Method::POST,
            "/v1/console/dead-letters/booking.confirmed:nope/replay",
            None,
        )
        .await;
    assert_eq!(problem(res).await["code"], "DEAD_LETTER_NOT_FOUND");

    for (method, path) in [
        (Method::GET, "/v1/console/dead-letters"),
        (Method::POST, "/v1/console/dead-letters/x/replay"),
    ] {
        let res = console.call(Some(&pumch_ops), method.clone(), path, None).await;
        let body = problem(res).await;
        assert_eq!(
            (body["code"].as_str(), body["field"].as_str()),
            (Some("FORBIDDEN"), Some("role")),
            "{path}"
        );
        assert_eq!(
            console.call(None, method, path, None).await.status(),
            401,
            "{path}"
        );
    }
    // The gateway refuses a hospital operator's token too.
    let key = internal::derive_key(GATEWAY_MASTER_SECRET.as_bytes(), GATEWAY_OPS);
    let ann = ActingOperator {
        login: "pumch_ops".into(),
        hospital: Some("pumch".into()),
    };
    let res = city
        .http
        .get(format!("{}/ops/v1/notifications/dead-letters", city.gateway_url))
        .header(internal::HEADER, token(&key, &ann))
        .send()
        .await
        .unwrap();
    let body = problem(res).await;
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("OPERATOR_FORBIDDEN"), Some("role"))
    );
}

/// A notice the channel's endpoint refused until it was dead-lettered is
/// listed on the console and, replayed from there once the endpoint is back,
/// reaches the channel and leaves the list.
#[tokio::test]
async fn a_real_dead_letter_is_listed_and_replayed_from_the_console() {
    let callback = Callback::start().await;
    let city = TestCity::spawn_configured(
        &["pumch"],
        &[
            ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
            ("NOTIFICATIONS__POLL_MS", "20"),
            ("NOTIFICATIONS__BACKOFF_BASE_MS", "50"),
            ("NOTIFICATIONS__MAX_ATTEMPTS", "2"),
        ],
        ALL_SEATS_COMMON,
    )
    .await;
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch"]).await;
    let city_ops = console.login("city_ops").await;
    callback.set_failing(true);
    let slots = city.hospital(0).seed_visit_day(5).await;
    let patient = city.cards.register().await;
    let res = city.book(&slots[10], patient.person_id, "wechat", "dead-1").await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    assert_eq!(booking["status"], "confirmed", "a free visit");
    let booking_id = booking["booking_id"].as_str().unwrap().to_owned();

    let dead = eventually(Duration::from_secs(20), "the dead letter on the console", || {
        let req = console.call(Some(&city_ops), Method::GET, "/v1/console/dead-letters", None);
        let booking_id = booking_id.clone();
        async move {
            let body: serde_json::Value = req.await.json().await.ok()?;
            body["dead_letters"].as_array()?.iter().find_map(|d| {
                (d["event_type"] == "booking.confirmed" && d["body"].to_string().contains(&booking_id))
                    .then(|| d.clone())
            })
        }
    })
    .await;
    assert_eq!(dead["app_id"], "wechat", "{dead}");
    assert_eq!(dead["attempts"], 2, "{dead}");
    let delivered_before = callback.of("booking.confirmed", &booking_id).len();

    callback.set_failing(false);
    let id = dead["id"].as_str().unwrap();
    let res = console
        .call(
            Some(&city_ops),
            Method::POST,
            &format!("/v1/console/dead-letters/{id}/replay"),
            None,
        )
        .await;
    assert_eq!(res.status(), 202, "rescheduled, not yet sent");
    let replayed: serde_json::Value = res.json().await.unwrap();
    assert_eq!(replayed["replayed"], id);
    eventually(
        Duration::from_secs(20),
        "the replayed notice delivered",
        || async { (callback.of("booking.confirmed", &booking_id).len() > delivered_before).then_some(()) },
    )
    .await;
    let res = console
        .call(Some(&city_ops), Method::GET, "/v1/console/dead-letters", None)
        .await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["dead_letters"], json!([]), "replayed, so no longer dead");
}

#[tokio::test]
async fn appeals_are_queued_per_hospital_and_decided_by_city_operators_with_a_reason() {
    let city =
        TestCity::spawn_configured(&["pumch", "tongren"], &[], jyt_system_tests::ALL_SEATS_COMMON).await;
    let (pumch, tongren) = (city.hospital(0), city.hospital(1));
    let pumch_slot = pumch.seed_visit_day(4).await[0].clone();
    let tongren_slot = tongren.seed_visit_day(4).await[0].clone();
    let pumch_appeal = city.pending_appeal(pumch, &pumch_slot, "ap-1").await;
    let tongren_appeal = city.pending_appeal(tongren, &tongren_slot, "ap-2").await;
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch"]).await;
    let city_ops = console.login("city_ops").await;
    let pumch_ops = console.login("pumch_ops").await;

    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["appeals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["appeal_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let queue = console
        .call(Some(&city_ops), Method::GET, "/v1/console/appeals", None)
        .await;
    assert_eq!(queue.status(), 200);
    let queue: serde_json::Value = queue.json().await.unwrap();
    let mut all = ids(&queue);
    all.sort();
    let mut want = vec![pumch_appeal.clone(), tongren_appeal.clone()];
    want.sort();
    assert_eq!(all, want);
    // A hospital operator's queue holds their own hospital's appeals only,
    // and they decide none (a bar stops booking city-wide).
    let own: serde_json::Value = console
        .call(Some(&pumch_ops), Method::GET, "/v1/console/appeals", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&own), vec![pumch_appeal.clone()]);
    let res = console
        .call(
            Some(&pumch_ops),
            Method::GET,
            "/v1/console/appeals?hospital=tongren",
            None,
        )
        .await;
    assert_eq!(problem(res).await["field"], "hospital");
    let decide = |id: &str| format!("/v1/console/appeals/{id}/decision");
    let res = console
        .call(
            Some(&pumch_ops),
            Method::POST,
            &decide(&pumch_appeal),
            Some(json!({ "decision": "waive", "reason": "ok" })),
        )
        .await;
    assert_eq!(problem(res).await["field"], "role");
    // Bad input names its field and decides nothing.
    for (body, field) in [
        (json!({ "decision": "maybe", "reason": "x" }), "decision"),
        (json!({ "decision": "waive", "reason": "  " }), "reason"),
        (json!({ "decision": "waive" }), "reason"),
    ] {
        let res = console
            .call(Some(&city_ops), Method::POST, &decide(&pumch_appeal), Some(body))
            .await;
        assert_eq!(problem(res).await["field"], field);
    }
    assert_eq!(
        console
            .call(None, Method::GET, "/v1/console/appeals", None)
            .await
            .status(),
        401
    );

    // The city operator waives one with a reason, refuses the other.
    let res = console
        .call(
            Some(&city_ops),
            Method::POST,
            &decide(&pumch_appeal),
            Some(json!({ "decision": "waive", "reason": "交通管制，有证明" })),
        )
        .await;
    assert_eq!(res.status(), 200);
    let decided: serde_json::Value = res.json().await.unwrap();
    assert_eq!(decided["status"], "granted");
    assert_eq!(decided["decided_by"], "gateway/operator:city_ops");
    let res = console
        .call(
            Some(&city_ops),
            Method::POST,
            &decide(&tongren_appeal),
            Some(json!({ "decision": "refuse", "reason": "无证明" })),
        )
        .await;
    assert_eq!(res.status(), 200);
    // Twice: refused, the decision stands.
    let res = console
        .call(
            Some(&city_ops),
            Method::POST,
            &decide(&tongren_appeal),
            Some(json!({ "decision": "waive", "reason": "改主意" })),
        )
        .await;
    assert_eq!(problem(res).await["code"], "APPEAL_ALREADY_DECIDED");
    let pending: serde_json::Value = console
        .call(Some(&city_ops), Method::GET, "/v1/console/appeals", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&pending), Vec::<String>::new());

    // The audit trail: the waiver and both decisions, by the operator.
    let http = console.http.clone();
    let url = format!("{}/v1/console/audit?actor=gateway/operator:city_ops", console.url);
    let trail = eventually(Duration::from_secs(15), "the decisions audited", || {
        let (http, url, token) = (http.clone(), url.clone(), city_ops.clone());
        async move {
            let body: serde_json::Value = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let entries = body["entries"].as_array()?.clone();
            (entries.len() == 3).then_some(entries)
        }
    })
    .await;
    let mut kinds: Vec<String> = trail
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["hospital_id"].as_str().unwrap(),
                e["summary"].as_str().unwrap()
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "pumch appeal waived: 交通管制，有证明",
            "pumch no-show waived: 交通管制，有证明",
            "tongren appeal refused: 无证明",
        ]
    );
}

async fn release_at(h: &TestHospital, segment: uuid::Uuid) -> chrono::DateTime<chrono::Utc> {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT sch.release_at FROM schedules sch JOIN segments seg ON seg.schedule_id = sch.id
              WHERE seg.id = $1",
            &[&segment],
        )
        .await
        .unwrap()
        .get(0)
}

/// A segment's Redis copy: its meta (release instant) and pool counts,
/// loaded first if missing.
async fn redis_copy(
    h: &TestHospital,
    segment: uuid::Uuid,
) -> (
    std::collections::HashMap<String, String>,
    std::collections::HashMap<String, String>,
) {
    slot_inventory::booking::cache::load_segment(&h.state, segment)
        .await
        .unwrap();
    let info = slot_inventory::booking::cache::segment_info(&h.state, segment)
        .await
        .unwrap();
    let keys = h.state.keys.segment(&info);
    let mut conn = h.state.redis.clone();
    let meta = jyt_cache::redis::cmd("HGETALL")
        .arg(&keys.meta)
        .query_async(&mut conn)
        .await
        .unwrap();
    let pools = jyt_cache::redis::cmd("HGETALL")
        .arg(&keys.pools)
        .query_async(&mut conn)
        .await
        .unwrap();
    (meta, pools)
}

async fn policy_version(h: &TestHospital) -> (i64, i64) {
    let client = h.state.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT version, (SELECT count(*) FROM booking_policy_history) FROM booking_policy",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_city_operator_changes_a_hospitals_booking_policy_for_unreleased_schedules_only() {
    let city = TestCity::spawn(&["pumch", "tongren"]).await;
    let pumch = city.hospital(0);
    let released = pumch.seed_visit_day(4).await[0].clone();
    let later = visit_day().checked_add_days(chrono::Days::new(20)).unwrap();
    let unreleased = slot_inventory::seed::seed_demo_day(&pumch.state, later, 4)
        .await
        .unwrap()[0]
        .segment_ids[0];
    let (released_before, unreleased_before) = (
        release_at(pumch, released.id).await,
        release_at(pumch, unreleased).await,
    );
    assert!(unreleased_before > chrono::Utc::now());
    let (_, released_pools_before) = redis_copy(pumch, released.id).await;
    let (_, unreleased_pools_before) = redis_copy(pumch, unreleased).await;
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["pumch", "tongren"]).await;
    let city_ops = console.login("city_ops").await;
    let tongren_ops = console.login("tongren_ops").await;
    let path = "/v1/console/hospitals/pumch/policy";

    let res = console.call(Some(&city_ops), Method::GET, path, None).await;
    assert_eq!(res.status(), 200);
    let current: serde_json::Value = res.json().await.unwrap();
    assert_eq!(current["version"], 1, "{current}");
    assert_eq!(current["updated_by"], "settings");
    let mut policy = current["policy"].clone();
    let window = policy["window_days"].as_u64().unwrap();
    policy["window_days"] = json!(window + 3);
    policy["release_time"] = json!("07:30");
    policy["pool_shares"] = json!({ "wechat": 50 });

    // Refused, and nothing written: another hospital's operator (console
    // and gateway), no session, a channel app's signed request, bad input.
    let res = console
        .call(Some(&tongren_ops), Method::PUT, path, Some(policy.clone()))
        .await;
    assert_eq!(problem(res).await["field"], "hospital");
    let res = console.call(Some(&tongren_ops), Method::GET, path, None).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        console
            .call(None, Method::PUT, path, Some(policy.clone()))
            .await
            .status(),
        401
    );
    let relay = format!("{}/ops/v1/hospitals/pumch/policy", city.gateway_url);
    let key = internal::derive_key(GATEWAY_MASTER_SECRET.as_bytes(), GATEWAY_OPS);
    let tongren_op = ActingOperator {
        login: "tongren_ops".into(),
        hospital: Some("tongren".into()),
    };
    let res = city
        .http
        .put(&relay)
        .header(internal::HEADER, token(&key, &tongren_op))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    let res = city
        .signed(
            "wechat",
            Method::PUT,
            "/ops/v1/hospitals/pumch/policy",
            Some(&policy),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "OPERATOR_UNAUTHORIZED");
    for (field, value, named) in [
        ("window_days", json!(0), "window_days"),
        ("hold_minutes", json!(0), "hold_minutes"),
        ("pool_shares", json!({ "wechat": 90, "kiosk": 30 }), "pool_shares"),
        ("pool_shares", json!({ "taxi": 5 }), "pool_shares.taxi"),
        ("max_per_person_per_day", json!(0), "max_per_person_per_day"),
    ] {
        let mut bad = policy.clone();
        bad[field] = value;
        let res = console
            .call(Some(&city_ops), Method::PUT, path, Some(bad.clone()))
            .await;
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(problem(res).await["field"], named, "{bad}");
    }
    let mut bad = policy.clone();
    bad["release_time"] = json!("25:00");
    let res = console.call(Some(&city_ops), Method::PUT, path, Some(bad)).await;
    assert_eq!(res.status(), 400);
    assert_eq!(policy_version(pumch).await, (1, 0), "nothing written");
    assert_eq!(release_at(pumch, unreleased).await, unreleased_before);

    // The city operator's change: the unreleased schedule's release moves,
    // the released one keeps its instant.
    let res = console
        .call(Some(&city_ops), Method::PUT, path, Some(policy.clone()))
        .await;
    assert_eq!(res.status(), 200);
    let changed: serde_json::Value = res.json().await.unwrap();
    assert_eq!(changed["version"], 2, "{changed}");
    assert_eq!(changed["updated_by"], "gateway/operator:city_ops");
    assert!(changed["schedules_affected"].as_u64().unwrap() >= 1, "{changed}");
    let new: slot_inventory::policy::Policy = serde_json::from_value(policy.clone()).unwrap();
    assert_eq!(release_at(pumch, unreleased).await, new.release_at(later));
    assert_ne!(release_at(pumch, unreleased).await, unreleased_before);
    assert_eq!(release_at(pumch, released.id).await, released_before);
    assert_eq!(policy_version(pumch).await, (2, 1));
    // Redis: the unreleased segment was reloaded with the new release
    // instant and pool split; the released one keeps its pools.
    let (meta, pools) = redis_copy(pumch, unreleased).await;
    assert_eq!(meta["release_at"], new.release_at(later).timestamp().to_string());
    assert_eq!(pools.get("wechat").map(String::as_str), Some("2"), "{pools:?}");
    assert_ne!(pools, unreleased_pools_before);
    assert_eq!(redis_copy(pumch, released.id).await.1, released_pools_before);
    assert_eq!(pumch.state.policy.get().window_days, new.window_days);
    let read: serde_json::Value = console
        .call(Some(&city_ops), Method::GET, path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["policy"], policy);

    // The audit trail keeps it as a `policy` row naming the operator.
    let http = console.http.clone();
    let url = format!("{}/v1/console/audit?kind=policy", console.url);
    let entry: serde_json::Value = eventually(Duration::from_secs(15), "the policy change audited", || {
        let (http, url, token) = (http.clone(), url.clone(), city_ops.clone());
        async move {
            let body: serde_json::Value = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["entries"].as_array()?.first().cloned()
        }
    })
    .await;
    assert_eq!(entry["actor"], "gateway/operator:city_ops", "{entry}");
    assert_eq!(entry["hospital_id"], "pumch");
    let summary = entry["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("window_days {window} → {}", window + 3)),
        "{summary}"
    );
    assert!(summary.contains("release_time"), "{summary}");
}
