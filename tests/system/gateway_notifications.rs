//! Booking events that concern a patient reach the channel app that made
//! the booking: signed, retried with backoff, dead-lettered after the last
//! attempt, and replayable by an operator.

use std::sync::Mutex;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jyt_cache::redis;
use jyt_signing::channel as signing;
use jyt_system_tests::{TEST_APP_SECRET, TestCity, eventually};
use uuid::Uuid;

/// One call to the callback: (path, headers, body, answered status).
type Call = (String, Vec<(String, String)>, String, u16);

/// What a channel's callback endpoint saw, and how it should answer.
#[derive(Default)]
struct Callback {
    seen: Vec<Call>,
    /// Fail this many more calls to /notices with 500.
    fail_next: usize,
    /// Fail every call to /broken while true.
    broken: bool,
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Mutex<Callback>>) -> HttpResponse {
    let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let failing = match req.path() {
        "/broken" => s.broken,
        _ if s.fail_next > 0 => {
            s.fail_next -= 1;
            true
        }
        _ => false,
    };
    let status = if failing { 500 } else { 200 };
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    s.seen.push((
        req.path().to_owned(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
        status,
    ));
    if failing {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::Ok().finish()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.as_str())
}

/// Put an event on slot-inventory's stream, as its outbox relay does.
#[expect(clippy::unwrap_used, reason = "test helper: a failure is a failed test")]
async fn publish(city: &TestCity, event_type: &str, booking_id: &str) -> Uuid {
    let event_id = Uuid::now_v7();
    let envelope = serde_json::json!({
        "event_id": event_id,
        "event_type": event_type,
        "aggregate_id": booking_id,
        "occurred_at": chrono::Utc::now(),
        "payload": { "schema": 1, "booking_id": booking_id, "detail": { "reason": "医生停诊" } },
    });
    let mut conn = city.hospital(0).state.redis.clone();
    redis::cmd("XADD")
        .arg(format!("{}:events:slot-inventory", city.redis_prefix))
        .arg("*")
        .arg("event_id")
        .arg(event_id.to_string())
        .arg("event_type")
        .arg(event_type)
        .arg("envelope")
        .arg(envelope.to_string())
        .query_async::<String>(&mut conn)
        .await
        .unwrap();
    event_id
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn a_notice_is_delivered_signed_on_the_third_try_and_a_dead_letter_is_replayed_by_an_operator() {
    let callback = web::Data::new(Mutex::new(Callback {
        fail_next: 2,
        broken: true,
        ..Callback::default()
    }));
    let server = {
        let callback = callback.clone();
        HttpServer::new(move || {
            App::new()
                .app_data(callback.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap()
    };
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    let wechat_cb = format!("http://127.0.0.1:{port}/notices");
    let app_cb = format!("http://127.0.0.1:{port}/broken");
    let ops_token = "ops-secret-token";
    let ops_hash = gateway::notify::operator_token_hash(ops_token);
    let city = TestCity::spawn_with(
        &["notifh"],
        &[
            ("CHANNEL_APPS__WECHAT__CALLBACK_URL", &wechat_cb),
            ("CHANNEL_APPS__APP__CALLBACK_URL", &app_cb),
            ("NOTIFICATIONS__POLL_MS", "20"),
            ("NOTIFICATIONS__BACKOFF_BASE_MS", "50"),
            ("NOTIFICATIONS__MAX_ATTEMPTS", "3"),
            ("NOTIFICATIONS__OPERATOR_TOKEN_SHA256", &ops_hash),
        ],
    )
    .await;
    let slots = city.hospital(0).seed_visit_day(5).await;

    // A booking made through the WeChat app is stopped (停诊).
    let res = city.book(&slots[0], city.patient().await, "wechat", "n-1").await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    let booking_id = booking["booking_id"].as_str().unwrap().to_owned();
    let event_id = publish(&city, "booking.stopped", &booking_id).await;

    // Two failures, then delivered on the third try.
    let seen = eventually(Duration::from_secs(10), "the third delivery", || {
        let callback = callback.clone();
        async move {
            let s = callback.lock().unwrap();
            let calls: Vec<_> = s.seen.iter().filter(|c| c.0 == "/notices").cloned().collect();
            (calls.iter().any(|c| c.3 == 200)).then_some(calls)
        }
    })
    .await;
    let statuses: Vec<u16> = seen.iter().map(|c| c.3).collect();
    assert_eq!(statuses, vec![500, 500, 200]);
    let (_, headers, body, _) = &seen[2];
    let notice: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(notice["event_id"], event_id.to_string());
    assert_eq!(notice["event_type"], "booking.stopped");
    assert_eq!(notice["booking"]["booking_id"], booking_id);
    // Signed like a request, with the app's own secret.
    assert_eq!(header(headers, "x-app-id"), "wechat");
    let canonical = signing::canonical_string(
        "POST",
        "/notices",
        "",
        header(headers, "x-timestamp").parse().unwrap(),
        header(headers, "x-nonce"),
        body.as_bytes(),
    );
    assert!(signing::verify_signature(
        [TEST_APP_SECRET.as_bytes()],
        &canonical,
        header(headers, "x-signature")
    ));

    // The same event delivered twice on the stream is sent once; the
    // booking's own `booking.held` is not echoed to the app that made it.
    let mut conn = city.hospital(0).state.redis.clone();
    let stream = format!("{}:events:slot-inventory", city.redis_prefix);
    let entries: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(&mut conn, &stream)
        .await
        .unwrap();
    let stopped = entries
        .ids
        .iter()
        .find(|e| {
            e.map
                .get("event_id")
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .is_some_and(|id| id == event_id.to_string())
        })
        .unwrap();
    let fields: Vec<(String, String)> = stopped
        .map
        .iter()
        .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap()))
        .collect();
    redis::AsyncCommands::xadd::<_, _, _, _, ()>(&mut conn, &stream, "*", &fields)
        .await
        .unwrap();

    // A booking through the `app` channel, whose callback is broken.
    let res = city.book(&slots[1], city.patient().await, "app", "n-2").await;
    let broken_booking: serde_json::Value = res.json().await.unwrap();
    let broken_id = publish(
        &city,
        "booking.cancelled",
        broken_booking["booking_id"].as_str().unwrap(),
    )
    .await;
    let ops = format!("{}/ops/notifications/dead-letters", city.gateway_url);
    let dead = eventually(Duration::from_secs(10), "a dead letter", || {
        let (http, ops) = (city.http.clone(), ops.clone());
        async move {
            let res = http.get(&ops).bearer_auth(ops_token).send().await.ok()?;
            let body: serde_json::Value = res.json().await.ok()?;
            let list = body["dead_letters"].as_array()?.clone();
            (!list.is_empty()).then_some(list)
        }
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], broken_id.to_string());
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(dead[0]["app_id"], "app");
    assert!(dead[0]["last_error"].as_str().unwrap().contains("500"));
    let broken_calls = callback
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|c| c.0 == "/broken")
        .count();
    assert_eq!(broken_calls, 3);

    // Operators only.
    let res = city.http.get(&ops).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        jyt_system_tests::problem(res).await["code"],
        "OPERATOR_UNAUTHORIZED"
    );
    let res = city.http.get(&ops).bearer_auth("guess").send().await.unwrap();
    assert_eq!(res.status(), 401);

    // The channel fixes its endpoint; the operator replays.
    callback.lock().unwrap().broken = false;
    let res = city
        .http
        .post(format!("{ops}/{broken_id}/replay"))
        .bearer_auth(ops_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    eventually(Duration::from_secs(10), "the replayed delivery", || {
        let callback = callback.clone();
        async move {
            let s = callback.lock().unwrap();
            s.seen
                .iter()
                .any(|c| c.0 == "/broken" && c.3 == 200)
                .then_some(())
        }
    })
    .await;
    let res = city.http.get(&ops).bearer_auth(ops_token).send().await.unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["dead_letters"].as_array().unwrap().len(), 0);
    let res = city
        .http
        .post(format!("{ops}/{broken_id}/replay"))
        .bearer_auth(ops_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Nothing more reached /notices: the duplicate was not sent again.
    let notices = callback
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|c| c.0 == "/notices")
        .count();
    assert_eq!(notices, 3);
}
