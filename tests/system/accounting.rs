//! Booking events reach channel-accounting through the outbox and a Redis
//! Stream, and each counts once, however often it is delivered.

use std::time::Duration;

use jyt_cache::redis;
use jyt_system_tests::{TestCity, eventually, spawn_accounting};

#[tokio::test]
async fn bookings_are_counted_once_per_channel_even_when_events_are_delivered_twice() {
    let city = TestCity::spawn(&["tongren"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(10).await;
    let (accounting, _db, token) = spawn_accounting(&city.redis_prefix).await;

    for (i, channel) in ["wechat", "wechat", "kiosk"].iter().enumerate() {
        let res = city
            .book(&slots[0], city.patient().await, channel, &format!("acct-{i}"))
            .await;
        assert_eq!(res.status(), 201);
        // Accounting counts paid bookings: pay the expert clinic's fee.
        let booking: serde_json::Value = res.json().await.unwrap();
        assert_eq!(city.pay(channel, &booking).await.status(), 200);
    }

    let today = jyt_domain::time::today();
    let report_url = format!("{accounting}/v1/reports/channels?date={today}");
    let http = city.http.clone();
    let auth = format!("Bearer {token}");
    let wanted = |report: &serde_json::Value| {
        let rows = report["rows"].as_array().cloned().unwrap_or_default();
        let count = |c: &str| {
            rows.iter()
                .find(|r| r["channel"] == c && r["hospital_id"] == "tongren")
                .map(|r| r["bookings"].as_i64().unwrap())
        };
        count("wechat") == Some(2) && count("kiosk") == Some(1)
    };
    let report: serde_json::Value = eventually(Duration::from_secs(10), "3 bookings counted", || {
        let http = http.clone();
        let url = report_url.clone();
        let auth = auth.clone();
        async move {
            let report: serde_json::Value = http
                .get(&url)
                .header("Authorization", auth)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            wanted(&report).then_some(report)
        }
    })
    .await;
    let wechat = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "wechat")
        .unwrap();
    assert_eq!(
        wechat["fees_fen"],
        2 * 10_000,
        "two expert-clinic fees of ¥100.00"
    );
    assert_eq!(report["split"][0]["channel"], "wechat");
    assert_eq!(report["split"][0]["share_percent"], 66.67);

    // Deliver every event again, as a relay crash after XADD would.
    let stream = format!("{}:events:slot-inventory", city.redis_prefix);
    let mut conn = h.state.redis.clone();
    let entries: Vec<(String, Vec<(String, String)>)> = {
        let reply: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(&mut conn, &stream)
            .await
            .unwrap();
        reply
            .ids
            .iter()
            .map(|e| {
                let fields = e
                    .map
                    .iter()
                    .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap()))
                    .collect();
                (e.id.clone(), fields)
            })
            .collect()
    };
    // (Attempt tallies may be there too, if a minute ended meanwhile.)
    let booking_events = entries
        .iter()
        .filter(|(_, fields)| {
            fields
                .iter()
                .any(|(k, v)| k == "event_type" && v.starts_with("booking."))
        })
        .count();
    assert_eq!(booking_events, 6, "three held and three confirmed");
    for (_, fields) in &entries {
        redis::AsyncCommands::xadd::<_, _, _, _, ()>(&mut conn, &stream, "*", fields)
            .await
            .unwrap();
    }
    // A marker booking after the duplicates: once it is counted, the
    // duplicates before it have been consumed too.
    let marker = city
        .book(&slots[0], city.patient().await, "phone114", "marker")
        .await;
    assert_eq!(marker.status(), 201);
    let marker: serde_json::Value = marker.json().await.unwrap();
    let paid = city.pay("phone114", &marker).await;
    assert_eq!(paid.status(), 200, "{}", paid.text().await.unwrap());
    let report: serde_json::Value = eventually(Duration::from_secs(10), "marker counted", || {
        let http = http.clone();
        let url = report_url.clone();
        let auth = auth.clone();
        async move {
            let report: serde_json::Value = http
                .get(&url)
                .header("Authorization", auth)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let rows = report["rows"].as_array()?.clone();
            rows.iter().any(|r| r["channel"] == "phone114").then_some(report)
        }
    })
    .await;
    assert!(wanted(&report), "duplicates changed nothing: {report}");
}
