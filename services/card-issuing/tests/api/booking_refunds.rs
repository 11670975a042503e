//! `booking.refund_requested` for a fee paid from a prepaid card credits
//! the fee back exactly once (a redelivered or repeated event credits
//! nothing twice), to the card that replaced a lost one if need be; other
//! payment methods are not card-issuing's to refund. The ledger balances
//! to the fen and `card.refunded` names the booking for the gateway.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::time::Duration;

use chrono::Utc;
use jyt_cache::redis;
use jyt_events::Envelope;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, chip_serial, spawn_app};

async fn publish(app: &TestApp, envelope: &Envelope) {
    let mut conn = app.redis.clone();
    redis::cmd("XADD")
        .arg(format!("{}:events:slot-inventory", app.redis_prefix))
        .arg("*")
        .arg("event_id")
        .arg(envelope.event_id.to_string())
        .arg("event_type")
        .arg(&envelope.event_type)
        .arg("envelope")
        .arg(serde_json::to_string(envelope).unwrap())
        .query_async::<String>(&mut conn)
        .await
        .unwrap();
}

/// What slot-inventory writes when a paid booking is cancelled or stopped.
fn refund_requested(booking: &str, method: &str, amount: i64) -> Envelope {
    Envelope {
        event_id: Uuid::now_v7(),
        event_type: "booking.refund_requested".into(),
        aggregate_id: booking.to_owned(),
        occurred_at: Utc::now(),
        payload: json!({
            "schema": 1,
            "booking_id": booking,
            "hospital_id": "pumch",
            "patient_id": Uuid::now_v7(),
            "channel": "wechat",
            "status": "cancelled",
            "fee_fen": amount,
            "payment_method": method,
            "owner_app": "wxmini",
            "detail": { "payment_reference": format!("prepaid:{booking}"), "amount_fen": amount },
        }),
    }
}

/// Pay a booking's fee from the card as the gateway does (reference: the booking id).
async fn pay_fee(app: &TestApp, card: &str, booking: &str, amount: i64) {
    let r = app
        .post(
            &format!("/v1/cards/{card}/payments"),
            &json!({ "amount_fen": amount, "channel": "wechat", "reference": booking }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

async fn ledger(app: &TestApp, card: &str) -> Value {
    let r = app.get(&format!("/v1/cards/{card}/ledger")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

async fn refunds_of(app: &TestApp, booking: &str) -> Vec<(String, i64)> {
    app.pool_client()
        .await
        .query(
            "SELECT card_id::text, amount FROM ledger_transactions WHERE kind = 'refund' AND reference = $1",
            &[&format!("refund:{booking}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `card.refunded` events on card-issuing's own stream.
async fn card_refunded_events(app: &TestApp) -> Vec<Value> {
    let mut conn = app.redis.clone();
    let stream = format!("{}:events:card-issuing", app.redis_prefix);
    let reply: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(&mut conn, &stream)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .filter_map(|e| jyt_events::envelope_from_fields(&e.map))
        .filter(|e| e.event_type == "card.refunded")
        .map(|e| e.payload)
        .collect()
}

#[tokio::test]
async fn a_prepaid_card_fee_is_credited_back_once_however_often_the_refund_is_requested() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "ecard").await;
    let card_id = card["card_id"].as_str().unwrap().to_owned();
    assert_eq!(app.top_up(&card_id, 10_000).await.status, 201);
    let booking = format!("pumch-{}", Uuid::now_v7());
    pay_fee(&app, &card_id, &booking, 5_000).await;
    assert_eq!(ledger(&app, &card_id).await["balance_fen"], 5_000);

    let event = refund_requested(&booking, "prepaid_card", 5_000);
    publish(&app, &event).await;
    jyt_testkit::eventually(Duration::from_secs(10), "the fee credited back", || async {
        (ledger(&app, &card_id).await["balance_fen"] == 10_000).then_some(())
    })
    .await;

    // The same event delivered again, and a second event for the same
    // booking (a stop after a cancellation, say), then a self-pay refund
    // (the channel's to give back) and a marker after them all.
    publish(&app, &event).await;
    publish(&app, &refund_requested(&booking, "prepaid_card", 5_000)).await;
    let self_paid = format!("pumch-{}", Uuid::now_v7());
    publish(&app, &refund_requested(&self_paid, "self_pay", 5_000)).await;
    let marker = format!("pumch-{}", Uuid::now_v7());
    pay_fee(&app, &card_id, &marker, 100).await;
    publish(&app, &refund_requested(&marker, "prepaid_card", 100)).await;
    jyt_testkit::eventually(Duration::from_secs(10), "the marker refunded", || async {
        (!refunds_of(&app, &marker).await.is_empty()).then_some(())
    })
    .await;

    assert_eq!(refunds_of(&app, &booking).await, vec![(card_id.clone(), 5_000)]);
    assert!(refunds_of(&app, &self_paid).await.is_empty());
    let history = ledger(&app, &card_id).await;
    assert_eq!(
        history["balance_fen"], 10_000,
        "top-up 10000 − 5000 + 5000 − 100 + 100"
    );
    let kinds: Vec<(String, i64)> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["amount_fen"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("top_up", 10_000),
            ("fee", -5_000),
            ("refund", 5_000),
            ("fee", -100),
            ("refund", 100)
        ]
        .map(|(k, a)| (k.to_owned(), a))
    );
    let client = app.pool_client().await;
    let sum: i64 = client
        .query_one("SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 0, "every entry balances");

    // The day's report: fees less refunds, to the fen.
    let today = jyt_domain::time::today();
    let report = app.get(&format!("/v1/reports/daily-balances?date={today}")).await;
    let wechat = report.body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "wechat")
        .unwrap()
        .clone();
    assert_eq!(
        (wechat["fees_fen"].as_i64(), wechat["refunds_fen"].as_i64()),
        (Some(5_100), Some(5_100))
    );
    assert_eq!(wechat["fee_income_balance_fen"], 0);

    // `card.refunded` names the booking and the app that owns it.
    let refunded = jyt_testkit::eventually(Duration::from_secs(10), "card.refunded relayed", || async {
        let events = card_refunded_events(&app).await;
        (events.len() == 2).then_some(events)
    })
    .await;
    let first = refunded
        .iter()
        .find(|e| e["booking_id"] == booking.as_str())
        .unwrap();
    assert_eq!(first["amount_fen"], 5_000);
    assert_eq!(first["owner_app"], "wxmini");
    assert_eq!(first["reference"], format!("refund:{booking}"));
    assert_eq!(first["refund_event_id"], event.event_id.to_string());
}

#[tokio::test]
async fn a_fee_paid_from_a_card_since_replaced_is_credited_to_the_replacement() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "physical").await;
    let old = card["card_id"].as_str().unwrap().to_owned();
    assert_eq!(app.top_up(&old, 3_000).await.status, 201);
    let booking = format!("pumch-{}", Uuid::now_v7());
    pay_fee(&app, &old, &booking, 1_000).await;
    assert_eq!(
        app.post(&format!("/v1/cards/{old}/report-loss"), &json!({}))
            .await
            .status,
        200
    );
    let replaced = app
        .post(
            &format!("/v1/cards/{old}/replace"),
            &json!({ "channel": "window", "chip_serial": chip_serial() }),
        )
        .await;
    assert_eq!(replaced.status, 201, "{:?}", replaced.body);
    let new = replaced.body["card_id"].as_str().unwrap().to_owned();
    assert_eq!(replaced.body["balance_fen"], 2_000);

    publish(&app, &refund_requested(&booking, "prepaid_card", 1_000)).await;
    jyt_testkit::eventually(
        Duration::from_secs(10),
        "the fee credited to the new card",
        || async { (ledger(&app, &new).await["balance_fen"] == 3_000).then_some(()) },
    )
    .await;
    assert_eq!(refunds_of(&app, &booking).await, vec![(new, 1_000)]);
}
