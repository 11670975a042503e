//! A statement with one mismatch of each kind is reported exactly; a
//! malformed statement is refused with its line and changes nothing.

use serde_json::{Value, json};

use crate::helpers::{BOOKINGS, CITY, PUMCH, TestApp, assert_problem, booking, spawn_app};

async fn seed_payments(app: &TestApp) {
    let mut ids = Vec::new();
    for (n, fee) in [(1, 10_000), (2, 10_000), (3, 10_000), (4, 5_000)] {
        let b = booking(
            &format!("pumch-b{n}"),
            "pumch",
            "wechat",
            fee,
            json!({ "payment_reference": format!("wx-{n}") }),
        );
        ids.push(app.publish(BOOKINGS, "booking.confirmed", b).await);
    }
    let refund = booking(
        "pumch-b3",
        "pumch",
        "wechat",
        10_000,
        json!({ "amount_fen": 10_000, "payment_method": "self_pay", "payment_reference": "wx-3" }),
    );
    ids.push(app.publish(BOOKINGS, "booking.refund_requested", refund).await);
    // Another channel's payment is not on WeChat's statement.
    let other = booking(
        "pumch-b5",
        "pumch",
        "app",
        10_000,
        json!({ "payment_reference": "app-5" }),
    );
    ids.push(app.publish(BOOKINGS, "booking.confirmed", other).await);
    app.applied(&ids).await;
}

const HEADER: &str = "trade_time,channel_transaction_id,platform_order_id,amount_fen,status,refund_fen";

#[tokio::test]
async fn one_mismatch_of_each_kind_is_reported_exactly() {
    let app = spawn_app().await;
    seed_payments(&app).await;
    let token = app.login(CITY).await;
    let today = jyt_domain::time::today();
    // A BOM and CRLF line ends, as a spreadsheet saves it.
    let statement = [
        format!("\u{feff}{HEADER}"),
        format!("{today} 08:30:01,wx-1,pumch-b1,10000,paid,0"),
        format!("{today} 08:30:02,wx-2,pumch-b2,9000,paid,0"),
        format!("{today} 08:30:03,wx-3,pumch-b3,10000,paid,0"),
        format!("{today} 08:30:04,wx-9,,10000,paid,0"),
        format!("{today} 08:30:05,wx-1,pumch-b1,10000,paid,0"),
        String::new(),
    ]
    .join("\r\n");
    let res = app.import(&token, "wechat", &today.to_string(), &statement).await;
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(
        (report["lines"].as_i64(), report["matched"].as_i64()),
        (Some(5), Some(1))
    );
    let kinds: Vec<(String, Value, Value)> = report["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_owned(),
                m["line"].clone(),
                m["channel_transaction_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("amount_differs".to_owned(), json!(3), json!("wx-2")),
            ("status_differs".to_owned(), json!(4), json!("wx-3")),
            ("missing_on_platform".to_owned(), json!(5), json!("wx-9")),
            ("duplicate".to_owned(), json!(6), json!("wx-1")),
            ("missing_at_channel".to_owned(), Value::Null, json!("wx-4")),
        ]
    );
    let amount = &report["mismatches"][0];
    assert_eq!(
        (
            amount["channel_amount_fen"].as_i64(),
            amount["platform_amount_fen"].as_i64()
        ),
        (Some(9_000), Some(10_000))
    );
    assert_eq!(report["mismatches"][1]["platform_status"], "refunded");

    // The console shows the day's reconciliation.
    let overview = app.get_json(&token, "/v1/console/overview").await;
    assert_eq!(
        overview["reconciliation"][0]["mismatches"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // A malformed file (line 3) is refused and the earlier import stands.
    let before = app
        .get_json(&token, &format!("/v1/reconciliation/statements?date={today}"))
        .await;
    let bad = format!(
        "{HEADER}\n{today} 08:30:01,wx-1,pumch-b1,10000,paid,0\n{today} 08:30:02,wx-2,pumch-b2,100.00,paid,0\n"
    );
    let problem = assert_problem(
        app.import(&token, "wechat", &today.to_string(), &bad).await,
        422,
        "STATEMENT_MALFORMED",
        Some("body"),
    )
    .await;
    assert_eq!(problem["line"], 3, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("amount_fen"),
        "{problem}"
    );
    assert_eq!(
        app.get_json(&token, &format!("/v1/reconciliation/statements?date={today}"))
            .await,
        before
    );

    // A malformed first import for another channel stores nothing.
    let bad = format!("{HEADER}\n{today} 08:30:01,k-1,pumch-b1,10000,lost,0\n");
    assert_problem(
        app.import(&token, "kiosk", &today.to_string(), &bad).await,
        422,
        "STATEMENT_MALFORMED",
        Some("body"),
    )
    .await;
    let kiosk = app
        .get_json(
            &token,
            &format!("/v1/reconciliation/statements?date={today}&channel=kiosk"),
        )
        .await;
    assert_eq!(kiosk["statements"], json!([]));
}

#[tokio::test]
async fn statement_requests_are_checked() {
    let app = spawn_app().await;
    let city = app.login(CITY).await;
    let pumch = app.login(PUMCH).await;
    let body = format!("{HEADER}\n");
    assert_problem(
        app.import(&pumch, "wechat", "2026-11-30", &body).await,
        403,
        "FORBIDDEN",
        Some("role"),
    )
    .await;
    assert_problem(
        app.import(&city, "weixin", "2026-11-30", &body).await,
        400,
        "INVALID_FIELD",
        Some("channel"),
    )
    .await;
    assert_problem(
        app.import(&city, "wechat", "2026-11-31", &body).await,
        400,
        "INVALID_FIELD",
        Some("date"),
    )
    .await;
    let res = app
        .client
        .post(format!(
            "{}/v1/reconciliation/statements?channel=wechat&date=2026-11-30",
            app.address
        ))
        .bearer_auth(&city)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 415, "UNSUPPORTED_MEDIA_TYPE", None).await;
    let problem = assert_problem(
        app.import(&city, "wechat", "2026-11-30", "").await,
        422,
        "STATEMENT_MALFORMED",
        None,
    )
    .await;
    assert_eq!(problem["line"], 1);
    // An empty statement (header only) is a day without transactions.
    let res = app.import(&city, "wechat", "2026-11-30", &body).await;
    assert_eq!(res.status(), 200);
}
