//! Every event type counts where it should, once; replaying both streams
//! leaves every figure unchanged.

use serde_json::{Value, json};

use crate::helpers::{BOOKINGS, CARDS, CITY, TestApp, booking, spawn_app, spawn_app_on};

/// A day of traffic at two hospitals; returns the ids of every event.
async fn seed(app: &TestApp) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    let paid = |r: &str| json!({ "payment_reference": r });
    // b1: held, then confirmed (paid) -- one booking; its confirmation is
    // published twice under different event ids, as a retried write might.
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.held",
            booking("pumch-b1", "pumch", "wechat", 10_000, json!({})),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking("pumch-b1", "pumch", "wechat", 10_000, paid("wx-1")),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking("pumch-b1", "pumch", "wechat", 10_000, paid("wx-1")),
        )
        .await,
    );
    // b2: a free visit, confirmed at once, then checked in.
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking("pumch-b2", "pumch", "kiosk", 0, json!({})),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.checked_in",
            booking("pumch-b2", "pumch", "kiosk", 0, json!({})),
        )
        .await,
    );
    // b3: paid, cancelled and refunded.
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking("tongren-b3", "tongren", "wechat", 5_000, paid("wx-3")),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.cancelled",
            booking("tongren-b3", "tongren", "wechat", 5_000, json!({})),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.refund_requested",
            booking(
                "tongren-b3",
                "tongren",
                "wechat",
                5_000,
                json!({ "amount_fen": 5_000, "payment_method": "self_pay", "payment_reference": "wx-3" }),
            ),
        )
        .await,
    );
    // b4: held, never paid; b5: a no-show; b6: stopped (停诊).
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.expired",
            booking("tongren-b4", "tongren", "app", 5_000, json!({})),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.confirmed",
            booking("tongren-b5", "tongren", "phone114", 0, json!({})),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.no_show",
            booking("tongren-b5", "tongren", "phone114", 0, json!({})),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.stopped",
            booking("pumch-b6", "pumch", "window", 0, json!({})),
        )
        .await,
    );
    // The waitlist: three join, the hospital reports five waiting, one is promoted.
    for position in 1..=3 {
        let joined = json!({ "hospital_id": "pumch", "schedule_id": "pumch-sched-1", "patient_id": uuid::Uuid::new_v4(), "channel": "wechat", "position": position });
        ids.push(app.publish(BOOKINGS, "waitlist.joined", joined).await);
    }
    ids.push(
        app.publish(
            BOOKINGS,
            "waitlist.capacity_requested",
            json!({ "hospital_id": "pumch", "schedule_id": "pumch-sched-1", "waiting": 5 }),
        )
        .await,
    );
    ids.push(
        app.publish(
            BOOKINGS,
            "booking.promoted",
            booking("pumch-b7", "pumch", "wechat", 10_000, json!({})),
        )
        .await,
    );
    // Losers, tallied by the hospital.
    let minute = jyt_domain::time::local(chrono::Utc::now())
        .format("%Y-%m-%dT%H:%M:00%:z")
        .to_string();
    ids.push(app.publish(BOOKINGS, "attempts.tallied", json!({ "hospital_id": "pumch", "channel": "wechat", "minute": minute, "attempts": 120, "sold_out": 117 })).await);
    // Unknown types are seen and ignored.
    ids.push(
        app.publish(BOOKINGS, "booking.teleported", json!({ "hospital_id": "pumch" }))
            .await,
    );
    // Card-issuing: a top-up counts; the card side of a fee does not.
    let card = |amount: i64| json!({ "transaction_id": uuid::Uuid::new_v4(), "card_id": uuid::Uuid::new_v4(), "person_id": uuid::Uuid::new_v4(), "channel": "kiosk", "amount_fen": amount, "reference": "kiosk-topup-1", "balance_fen": amount });
    ids.push(app.publish(CARDS, "card.topped_up", card(20_000)).await);
    ids.push(app.publish(CARDS, "card.fee_paid", card(10_000)).await);
    ids
}

/// The report's row for a hospital and channel (`null` when there is none).
fn row<'a>(report: &'a Value, hospital: &str, channel: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["hospital_id"] == hospital && r["channel"] == channel)
        })
        .unwrap_or(&Value::Null)
}

async fn snapshot(app: &TestApp, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/v1/reports/channels",
        "/v1/reports/money",
        "/v1/reports/settlement",
        "/v1/console/overview",
    ] {
        out.push(app.get_json(token, path).await);
    }
    out
}

#[tokio::test]
async fn every_event_type_counts_once_and_a_replay_changes_nothing() {
    let app = spawn_app().await;
    let ids = seed(&app).await;
    app.applied(&ids).await;
    let token = app.login(CITY).await;

    let report = app.get_json(&token, "/v1/reports/channels").await;
    let wechat = row(&report, "pumch", "wechat");
    assert_eq!(
        wechat["bookings"], 1,
        "held then confirmed (twice) is one booking"
    );
    assert_eq!(wechat["fees_fen"], 10_000);
    assert_eq!(wechat["attempts"], 120);
    assert_eq!(wechat["sold_out"], 117);
    assert_eq!(wechat["promotions"], 1);
    assert_eq!(wechat["waitlist_joins"], 3);
    assert_eq!(
        row(&report, "pumch", "kiosk")["bookings"],
        1,
        "a free visit counts"
    );
    assert_eq!(row(&report, "pumch", "kiosk")["check_ins"], 1);
    assert_eq!(row(&report, "pumch", "window")["stops"], 1);
    let t_wechat = row(&report, "tongren", "wechat");
    assert_eq!(
        (
            t_wechat["cancellations"].as_i64(),
            t_wechat["refunds_fen"].as_i64()
        ),
        (Some(1), Some(5_000))
    );
    assert_eq!(row(&report, "tongren", "app")["expiries"], 1);
    assert_eq!(row(&report, "tongren", "phone114")["no_shows"], 1);
    // Four bookings: wechat 2 (50 %), kiosk 1, phone114 1.
    assert_eq!(
        report["split"][0],
        json!({ "channel": "wechat", "bookings": 2, "share_percent": 50.0 })
    );
    let kiosk_group = &report["reference_split"][1];
    assert_eq!(kiosk_group["group"], "kiosk");
    assert_eq!(kiosk_group["share_percent"], 50.0, "kiosk + phone114");
    assert_eq!(kiosk_group["reference_percent"], 47.15);

    let money = app.get_json(&token, "/v1/reports/money").await;
    assert_eq!(money["total_fees_fen"], 15_000);
    assert_eq!(money["total_refunds_fen"], 5_000);
    assert_eq!(
        money["total_topups_fen"], 20_000,
        "card.fee_paid is not a second fee"
    );

    let settlement = app.get_json(&token, "/v1/reports/settlement").await;
    let pumch = settlement["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["hospital_id"] == "pumch")
        .unwrap();
    // ¥100 by WeChat at 60 bp: a 60 fen service fee.
    assert_eq!(
        (
            pumch["fees_fen"].as_i64(),
            pumch["service_fee_fen"].as_i64(),
            pumch["payable_fen"].as_i64()
        ),
        (Some(10_000), Some(60), Some(9_940))
    );
    let tongren = settlement["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["hospital_id"] == "tongren")
        .unwrap();
    assert_eq!(
        (
            tongren["service_fee_fen"].as_i64(),
            tongren["payable_fen"].as_i64()
        ),
        (Some(0), Some(0)),
        "refunded in full"
    );

    let overview = app.get_json(&token, "/v1/console/overview").await;
    assert_eq!(overview["totals"]["bookings"], 4);
    assert_eq!(
        overview["totals"]["waitlist_depth"], 4,
        "five reported, one promoted"
    );
    assert_eq!(
        overview["totals"]["no_show_rate_percent"], 50.0,
        "one no-show, one check-in"
    );
    assert_eq!(
        overview["hospitals"][0]["hospital_id"], "pumch",
        "most bookings first"
    );
    let minutes: i64 = overview["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["bookings"].as_i64().unwrap())
        .sum();
    assert_eq!(minutes, 4);

    // Deliver both streams again, then a marker; once the marker is
    // applied, every duplicate before it has been read.
    let before = snapshot(&app, &token).await;
    for stream in [BOOKINGS, CARDS] {
        let entries = app.entries(stream).await;
        app.redeliver(stream, &entries).await;
    }
    let marker = app.publish(BOOKINGS, "test.marker", json!({})).await;
    let card_marker = app.publish(CARDS, "test.marker", json!({})).await;
    app.applied(&[marker, card_marker]).await;
    assert_eq!(snapshot(&app, &token).await, before, "a replay changed a figure");
}

#[tokio::test]
async fn consumer_lag_is_a_metric() {
    let app = spawn_app().await;
    let id = app.publish(BOOKINGS, "test.marker", json!({})).await;
    app.applied(&[id]).await;
    // The consumer sets the lag after it has applied and acknowledged the
    // batch: an event seen applied may be read before the gauge is set.
    let metrics = jyt_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the consumer's lag on /metrics",
        || async {
            let text = app
                .client
                .get(format!("{}/metrics", app.address))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("jyt_consumer_lag_events{").then_some(text)
        },
    )
    .await;
    assert!(metrics.contains("jyt_events_applied_total"), "{metrics}");
}

#[tokio::test]
async fn a_restart_reads_on_where_it_stopped_and_changes_nothing() {
    let app = spawn_app().await;
    let ids = seed(&app).await;
    app.applied(&ids).await;
    let token = app.login(CITY).await;
    let before = snapshot(&app, &token).await;

    // A second replica (same group, same consumer name, as after a crash):
    // it re-reads its pending entries first, then new ones.
    let again = spawn_app_on(app.db_url.clone(), app.redis_prefix.clone()).await;
    let marker = again.publish(BOOKINGS, "test.marker", json!({})).await;
    again.applied(&[marker]).await;
    assert_eq!(snapshot(&again, &token).await, before);
}

/// A hospital that records an arrival after the no-show sweep (slot-inventory
/// then writes `booking.checked_in` with `late: true`) takes the no-show back:
/// the visit counts as a check-in only.
#[tokio::test]
async fn a_late_check_in_takes_its_no_show_back() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (event, detail) in [
        ("booking.confirmed", json!({})),
        ("booking.no_show", json!({})),
        ("booking.checked_in", json!({ "by": "hospital", "late": true })),
    ] {
        let payload = booking("bjh-late", "bjh", "wechat", 0, detail);
        ids.push(app.publish(BOOKINGS, event, payload).await);
    }
    // Another patient's no-show at the same hospital stays counted.
    let other = booking("bjh-absent", "bjh", "wechat", 0, json!({}));
    ids.push(app.publish(BOOKINGS, "booking.no_show", other).await);
    app.applied(&ids).await;
    let token = app.login(CITY).await;
    let report = app.get_json(&token, "/v1/reports/channels").await;
    let line = row(&report, "bjh", "wechat");
    assert_eq!(
        (line["check_ins"].as_i64(), line["no_shows"].as_i64()),
        (Some(1), Some(1)),
        "{line}"
    );
}
