//! One booking through every layer, and the answers around it.

use jyt_system_tests::{TestCity, problem, visit_day};
use uuid::Uuid;

#[tokio::test]
async fn a_booking_goes_through_the_gateway_into_postgres_and_can_be_read_back() {
    let city = TestCity::spawn(&["pumch"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    let patient = city.patient().await;

    let res = city.book(&slots[0], patient, "wechat", "k-1").await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let booking: serde_json::Value = res.json().await.unwrap();
    let booking_id = booking["booking_id"].as_str().unwrap();
    assert!(booking_id.starts_with("pumch-"));
    assert_eq!(location, format!("/v1/bookings/{booking_id}"));
    // An expert clinic has a fee: the seat is held until paid.
    assert_eq!(booking["status"], "held");
    assert!(booking["hold_deadline"].is_string(), "{booking}");
    assert_eq!(booking["seat_number"], 1);
    assert_eq!(booking["visit_number"], 1);
    assert_eq!(booking["pool"], "wechat");
    assert_eq!(booking["pickup_code"].as_str().unwrap().len(), 6);
    assert_eq!(booking["channel"], "wechat");
    assert_eq!(booking["slot_id"], slots[0].to_string());
    assert!(
        booking["segment_starts_at"].as_str().unwrap().ends_with("+08:00"),
        "times are shown in Asia/Shanghai"
    );

    // It is in PostgreSQL, with its outbox event.
    assert_eq!(h.live_bookings(&slots[0]).await, (1, 1));
    let read = city.get_booking(booking_id).await;
    assert_eq!(read.status(), 200);
    let read: serde_json::Value = read.json().await.unwrap();
    assert_eq!(read, booking);

    // Paying confirms it.
    let paid = city.pay("wechat", &booking).await;
    assert_eq!(paid.status(), 200);
    let paid: serde_json::Value = paid.json().await.unwrap();
    assert_eq!(paid["status"], "confirmed");
    assert_eq!(paid["payment_method"], "self_pay");
    assert!(paid["hold_deadline"].is_null());
    let client = h.state.pool.get().await.unwrap();
    let events: Vec<String> = client
        .query("SELECT event_type FROM outbox ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["booking.held", "booking.confirmed"]);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_answers_the_first_booking_and_books_nothing_more() {
    let city = TestCity::spawn(&["bjh"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    let patient = city.patient().await;

    let first = city.book(&slots[0], patient, "kiosk", "same-key").await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = city.book(&slots[0], patient, "kiosk", "same-key").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(h.live_bookings(&slots[0]).await, (1, 1));

    // The same key for a different request is refused, not silently replayed.
    let other = city.book(&slots[1], patient, "kiosk", "same-key").await;
    assert_eq!(other.status(), 409);
    assert_eq!(problem(other).await["code"], "IDEMPOTENCY_KEY_REUSED");

    // A second booking of the same segment by the same patient is refused.
    let twice = city.book(&slots[0], patient, "kiosk", "another-key").await;
    assert_eq!(twice.status(), 409);
    let body = problem(twice).await;
    assert_eq!(body["code"], "ALREADY_BOOKED");
    assert_eq!(body["booking_id"], first["booking_id"]);
    assert_eq!(h.live_bookings(&slots[0]).await, (1, 1));
}

#[tokio::test]
async fn a_full_segment_answers_409_slot_sold_out_as_problem_json() {
    let city = TestCity::spawn(&["chaoyang"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(1).await;

    assert_eq!(
        city.book(&slots[0], city.patient().await, "wechat", "a")
            .await
            .status(),
        201
    );
    let res = city.book(&slots[0], city.patient().await, "wechat", "b").await;
    assert_eq!(res.status(), 409);
    let body = problem(res).await;
    assert_eq!(body["code"], "SLOT_SOLD_OUT");
    assert_eq!(body["status"], 409);
    assert_eq!(body["type"], "urn:jyt:problem:slot-sold-out");
    assert_eq!(h.live_bookings(&slots[0]).await, (1, 1));
}

#[tokio::test]
async fn schedules_list_every_slot_with_its_remaining_count() {
    let city = TestCity::spawn(&["tiantan"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(3).await;
    assert_eq!(
        city.book(&slots[0], city.patient().await, "app", "x")
            .await
            .status(),
        201
    );

    let day = city.schedules(&h.id, visit_day()).await;
    assert_eq!(day.date, visit_day());
    assert_eq!(day.schedules.len(), slots.len(), "one entry per seeded schedule");
    let all: Vec<_> = day.schedules.iter().flat_map(|s| &s.slots).collect();
    assert!(all.len() > slots.len(), "schedules have several time segments");
    for slot in &all {
        let expected = if slot.slot_id == slots[0] { 2 } else { 3 };
        assert_eq!(slot.remaining, expected, "{}", slot.slot_id);
        assert_eq!(slot.capacity, 3);
    }

    let empty = city.schedules(&h.id, visit_day() + chrono::Days::new(30)).await;
    assert!(empty.schedules.is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_with_4xx_problem_json_naming_the_field_and_nothing_is_written() {
    let city = TestCity::spawn(&["anzhen"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(2).await;
    let patient = city.patient().await;
    let card = city.cards.card_of(patient);
    let good = serde_json::json!({
        "slot_id": slots[0].to_string(), "card_number": card, "channel": "wechat"
    });
    // A signed POST /v1/bookings with any body bytes and content type.
    let post = |key: Option<&str>, content_type: &str, body: Vec<u8>| {
        let mut req = city
            .http
            .post(format!("{}/v1/bookings", city.gateway_url))
            .header("content-type", content_type.to_owned())
            .body(body.clone());
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key.to_owned());
        }
        jyt_system_tests::sign(req, "wechat", &reqwest::Method::POST, "/v1/bookings", &body)
    };
    let json = |v: &serde_json::Value| v.to_string().into_bytes();

    // No Idempotency-Key.
    let res = post(None, "application/json", json(&good)).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body = problem(res).await;
    assert_eq!(body["code"], "MISSING_HEADER");
    assert_eq!(body["field"], "Idempotency-Key");

    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"card_number": card, "channel": "wechat"}),
            "slot_id",
        ),
        (
            serde_json::json!({"slot_id": "anzhen-123", "card_number": card, "channel": "wechat"}),
            "slot_id",
        ),
        (
            serde_json::json!({"slot_id": slots[0].to_string(), "card_number": card, "patient_id": "nobody", "channel": "wechat"}),
            "patient_id",
        ),
        (
            serde_json::json!({"slot_id": slots[0].to_string(), "card_number": card, "channel": "fax"}),
            "channel",
        ),
        (
            serde_json::json!({"slot_id": slots[0].to_string(), "card_number": card,
                               "channel": "wechat", "price": 0}),
            "price",
        ),
        // The channel is the signing app's, not the body's to choose.
        (
            serde_json::json!({"slot_id": slots[0].to_string(), "card_number": card, "channel": "kiosk"}),
            "channel",
        ),
        // The patient is named by a card, never by a bare id.
        (
            serde_json::json!({"slot_id": slots[0].to_string(), "patient_id": Uuid::new_v4()}),
            "card_number",
        ),
        (
            serde_json::json!({"slot_id": slots[0].to_string(), "card_number": "1234"}),
            "card_number",
        ),
    ];
    for (body, field) in cases {
        let res = post(Some("k"), "application/json", json(&body))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let p = problem(res).await;
        assert_eq!(p["code"], "INVALID_FIELD", "{body}");
        assert_eq!(p["field"], field, "{body}");
    }

    let res = post(Some("k"), "text/plain", json(&good)).send().await.unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(problem(res).await["code"], "UNSUPPORTED_MEDIA_TYPE");

    let res = post(Some("k"), "application/json", vec![b'{', 0xff, b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["code"], "MALFORMED_JSON");

    let res = post(Some("k"), "application/json", vec![b' '; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(problem(res).await["code"], "BODY_TOO_LARGE");

    // A hospital that is not a member.
    let stranger = format!("nowhere-{}", Uuid::new_v4());
    let res = post(
        Some("k"),
        "application/json",
        json(&serde_json::json!({"slot_id": stranger, "card_number": card})),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "HOSPITAL_NOT_FOUND");

    // A slot id of this hospital that does not exist.
    let ghost = format!("anzhen-{}", Uuid::new_v4());
    let res = post(
        Some("k"),
        "application/json",
        json(&serde_json::json!({"slot_id": ghost, "card_number": card})),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "SLOT_NOT_FOUND");

    let res = city.get_booking("not-a-booking").await;
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["field"], "booking_id");

    let res = city
        .signed(
            "wechat",
            reqwest::Method::GET,
            "/v1/hospitals/anzhen/schedules?date=tomorrow",
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["field"], "date");

    let res = city
        .signed("wechat", reqwest::Method::GET, "/v1/nothing-here", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "NOT_FOUND");

    // None of it wrote anything.
    let client = h.state.pool.get().await.unwrap();
    let written: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM bookings) + (SELECT count(*) FROM outbox)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0);
}

#[tokio::test]
async fn every_service_answers_healthz_readyz_and_metrics() {
    let city = TestCity::spawn(&["xuanwu"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(2).await;
    assert_eq!(
        city.book(&slots[0], city.patient().await, "wechat", "m")
            .await
            .status(),
        201
    );
    for base in [&city.gateway_url, &h.base_url] {
        for path in ["/healthz", "/readyz"] {
            let res = city.http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status(), 200, "{base}{path}");
        }
        let metrics = city.http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("jyt_http_requests_total"), "{text}");
        assert!(text.contains(r#"route="/v1/bookings""#), "{text}");
    }
    // The route label is read after routing (issue 20); a refusal by the
    // signature check, which answers before its resource runs, and a path
    // no route has, keep their labels.
    let unsigned = city
        .http
        .get(format!("{}/v1/bookings/{}", city.gateway_url, Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let nowhere = city
        .http
        .get(format!("{}/no/such/route", city.gateway_url))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    let text = city.metrics_text(&city.gateway_url).await;
    assert!(
        text.contains(
            r#"jyt_http_requests_total{method="GET",route="/v1/bookings/{booking_id}",status="401",service="gateway"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"jyt_http_requests_total{method="GET",route="unmatched",status="404",service="gateway"} 1"#
        ),
        "{text}"
    );
    let text = city.metrics_text(&h.base_url).await;
    assert!(
        text.contains(
            r#"jyt_booking_attempts_total{channel="wechat",hospital="xuanwu",outcome="BOOKED",service="slot-inventory"} 1"#
        ),
        "{text}"
    );
    // The surge dashboard's other figures (see deploy/grafana/).
    assert!(
        text.contains(r#"jyt_redis_script_duration_seconds_count{hospital="xuanwu",script="hold",service="slot-inventory"} 1"#),
        "{text}"
    );
    let outbox_measured =
        jyt_system_tests::eventually(std::time::Duration::from_secs(10), "outbox lag measured", || {
            let (http, url) = (city.http.clone(), format!("{}/metrics", h.base_url));
            async move {
                let text = http.get(url).send().await.ok()?.text().await.ok()?;
                text.contains("jyt_outbox_unpublished_events").then_some(text)
            }
        })
        .await;
    assert!(outbox_measured.contains("jyt_outbox_oldest_unpublished_seconds"));

    // Every series the shipped Grafana dashboard queries exists (the stream
    // consumers' lag is channel-accounting's and card-issuing's).
    let gateway_text = city.metrics_text(&city.gateway_url).await;
    let dashboard = include_str!("../../deploy/grafana/jyt-surge.json");
    let mut names: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("jyt_") && *w != "jyt_consumer_lag_events")
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        assert!(
            outbox_measured.contains(name) || gateway_text.contains(name),
            "the dashboard queries {name}, which no service exports"
        );
    }
}
