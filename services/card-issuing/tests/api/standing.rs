#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::time::Duration;

use chrono::Utc;
use jyt_cache::redis;
use jyt_domain::card_number::luhn_check_digit;
use jyt_events::Envelope;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{OPERATOR_ID, OPERATOR_TOKEN, TestApp, spawn_app, spawn_app_with};

/// What slot-inventory's outbox relay writes for a no-show.
pub async fn publish_no_show(app: &TestApp, event_id: Uuid, person: Uuid, visit_date: &str) {
    publish(
        app,
        Envelope {
            event_id,
            event_type: "booking.no_show".into(),
            aggregate_id: format!("pumch-{}", Uuid::now_v7()),
            occurred_at: Utc::now(),
            payload: json!({
                "booking_id": format!("pumch-{}", Uuid::now_v7()),
                "patient_id": person,
                "hospital_id": "pumch",
                "visit_date": visit_date,
                "channel": "wechat",
            }),
        },
    )
    .await;
}

async fn publish(app: &TestApp, envelope: Envelope) {
    let mut conn = app.redis.clone();
    redis::cmd("XADD")
        .arg(format!("{}:events:slot-inventory", app.redis_prefix))
        .arg("*")
        .arg("event_id")
        .arg(envelope.event_id.to_string())
        .arg("event_type")
        .arg(&envelope.event_type)
        .arg("envelope")
        .arg(serde_json::to_string(&envelope).unwrap())
        .query_async::<String>(&mut conn)
        .await
        .unwrap();
}

pub async fn standing(app: &TestApp, person: Uuid) -> Value {
    let r = app.get(&format!("/v1/persons/{person}/standing")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["cache-control"], "private, max-age=30");
    r.body
}

pub async fn wait_for_no_shows(app: &TestApp, person: Uuid, n: usize) -> Value {
    jyt_testkit::eventually(
        Duration::from_secs(10),
        "no-shows to be recorded",
        || async move {
            let s = standing(app, person).await;
            (s["no_shows"].as_array().unwrap().len() == n).then_some(s)
        },
    )
    .await
}

#[tokio::test]
async fn three_no_shows_in_ninety_days_bar_and_a_waiver_lifts_the_bar() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let today = jyt_domain::time::today();
    let day = |ago: i64| (today - chrono::Duration::days(ago)).to_string();

    let first = Uuid::now_v7();
    publish_no_show(&app, first, person, &day(80)).await;
    publish_no_show(&app, Uuid::now_v7(), person, &day(30)).await;
    // A redelivery of the first event, and an event of another kind.
    publish_no_show(&app, first, person, &day(80)).await;
    publish(
        &app,
        Envelope {
            event_id: Uuid::now_v7(),
            event_type: "booking.confirmed".into(),
            aggregate_id: "x".into(),
            occurred_at: Utc::now(),
            payload: json!({ "patient_id": person }),
        },
    )
    .await;
    let s = wait_for_no_shows(&app, person, 2).await;
    assert_eq!(
        s["barred"], false,
        "two no-shows (one delivered twice) do not bar"
    );
    assert_eq!(s["no_shows_in_window"], 2);

    let third = Uuid::now_v7();
    publish_no_show(&app, third, person, &day(1)).await;
    let s = wait_for_no_shows(&app, person, 3).await;
    assert_eq!(s["barred"], true, "{s}");
    assert_eq!(s["no_shows_in_window"], 3);
    let until: chrono::DateTime<Utc> = s["barred_until"].as_str().unwrap().parse().unwrap();
    let days = (until - Utc::now()).num_hours();
    assert!(
        (89 * 24..=90 * 24).contains(&days),
        "barred for 90 days, got {days}h"
    );

    // person.barred went out through our own outbox and stream.
    let stream = format!("{}:events:card-issuing", app.redis_prefix);
    jyt_testkit::eventually(Duration::from_secs(10), "person.barred on the stream", || {
        let mut conn = app.redis.clone();
        let stream = stream.clone();
        async move {
            let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await
                .ok()?;
            entries
                .ids
                .iter()
                .any(|e| e.get::<String>("event_type").as_deref() == Some("person.barred"))
                .then_some(())
        }
    })
    .await;

    let waiver = format!("/v1/persons/{person}/no-shows/{third}/waiver");
    let anonymous = app.post(&waiver, &json!({ "reason": "clinic stopped" })).await;
    assert_eq!(anonymous.status, 401);
    let unknown = app
        .post_as_operator(
            &format!("/v1/persons/{person}/no-shows/{}/waiver", Uuid::now_v7()),
            OPERATOR_TOKEN,
            &json!({ "reason": "clinic stopped" }),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["code"], "NO_SHOW_NOT_FOUND");

    let waived = app
        .post_as_operator(
            &waiver,
            OPERATOR_TOKEN,
            &json!({ "reason": "停诊: clinic stopped that day" }),
        )
        .await;
    assert_eq!(waived.status, 200, "{:?}", waived.body);
    assert_eq!(waived.body["barred"], false);
    assert_eq!(waived.body["no_shows_in_window"], 2);
    let s = standing(&app, person).await;
    assert_eq!(s["barred"], false);

    let client = app.pool_client().await;
    let lifted: (Option<String>, Option<String>) = client
        .query_one(
            "SELECT lifted_by, lift_reason FROM bars WHERE person_id = $1",
            &[&person],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(lifted.0.as_deref(), Some(OPERATOR_ID));

    // Every event was acknowledged: nothing pending for our group.
    let mut conn = app.redis.clone();
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(format!("{}:events:slot-inventory", app.redis_prefix))
        .arg("card-issuing")
        .query_async(&mut conn)
        .await
        .unwrap();
    let count = match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING reply {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    };
    assert_eq!(count, 0);
}

#[tokio::test]
async fn old_no_shows_fall_out_of_the_rolling_window() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let today = jyt_domain::time::today();
    for ago in [200, 120, 10] {
        publish_no_show(
            &app,
            Uuid::now_v7(),
            person,
            &(today - chrono::Duration::days(ago)).to_string(),
        )
        .await;
    }
    // Only the one from 10 days ago is inside 90 days.
    jyt_testkit::eventually(Duration::from_secs(10), "no-shows recorded", || async {
        let count: i64 = app
            .pool_client()
            .await
            .query_one("SELECT COUNT(*) FROM no_shows WHERE person_id = $1", &[&person])
            .await
            .unwrap()
            .get(0);
        (count == 3).then_some(())
    })
    .await;
    let st = standing(&app, person).await;
    assert_eq!(st["barred"], false);
    assert_eq!(st["no_shows_in_window"], 1);
}

#[tokio::test]
async fn entries_left_unacknowledged_by_a_dead_replica_are_taken_over() {
    let prefix = jyt_testkit::fresh_redis_prefix();
    let stream = format!("{prefix}:events:slot-inventory");
    let mut conn = redis::Client::open(jyt_testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("card-issuing")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Before our service starts, another replica receives a no-show and
    // dies without acknowledging it.
    let (event, person) = (Uuid::now_v7(), Uuid::now_v7());
    let envelope = Envelope {
        event_id: event,
        event_type: "booking.no_show".into(),
        aggregate_id: "pumch-x".into(),
        occurred_at: Utc::now(),
        payload: json!({
            "booking_id": "pumch-x", "patient_id": person,
            "hospital_id": "pumch", "visit_date": jyt_domain::time::today(),
        }),
    };
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("envelope")
        .arg(serde_json::to_string(&envelope).unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
    let delivered: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("card-issuing")
        .arg("replica-that-died")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(delivered.keys[0].ids.len(), 1);

    // Our replica only sees it by claiming it once it has been idle.
    let db = jyt_testkit::fresh_database("card").await;
    let app = spawn_app_with(
        db,
        &[
            ("JYT_CARD_ISSUING__REDIS__KEY_PREFIX", prefix.as_str()),
            ("JYT_CARD_ISSUING__STANDING__CLAIM_IDLE_MS", "300"),
        ],
    )
    .await;
    let s = wait_for_no_shows(&app, person, 1).await;
    assert_eq!(s["no_shows"][0]["event_id"], event.to_string());
}

/// The gateway resolves a card on a patient's first booking of the day and
/// needs the standing next: the resolve answers the holder's bar, the same
/// as the standing route, by card number and by e-card.
#[tokio::test]
async fn a_resolved_card_carries_its_holder_s_bar_as_the_standing_route_tells_it() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "physical").await;
    let number = card["card_number"].as_str().unwrap().to_owned();
    let ecard = app.issue_card(person, "ecard").await;
    let token = app
        .post(
            &format!("/v1/cards/{}/ecard-token", ecard["card_id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    let token = token.body["token"].as_str().unwrap().to_owned();
    let resolved = async |body: Value| {
        let r = app.post("/v1/cards/resolve", &body).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["standing"].clone()
    };
    let both_ways = async || {
        let by_number = resolved(json!({ "card_number": number })).await;
        let by_ecard = resolved(json!({ "ecard_token": token })).await;
        assert_eq!(by_number, by_ecard);
        let s = standing(&app, person).await;
        assert_eq!(by_number["barred"], s["barred"], "{by_number} vs {s}");
        assert_eq!(by_number["barred_until"], s["barred_until"], "{by_number} vs {s}");
        by_number
    };

    let clear = both_ways().await;
    assert_eq!(clear, json!({ "barred": false, "barred_until": null }));

    // A lifted bar and one that is over do not bar; the latest one in force does.
    let client = app.pool_client().await;
    let now = Utc::now();
    let until = now + chrono::Duration::days(40);
    for (ends, lifted) in [
        (now + chrono::Duration::days(90), Some(now)),
        (now - chrono::Duration::days(1), None),
        (now + chrono::Duration::days(20), None),
        (until, None),
    ] {
        client
            .execute(
                "INSERT INTO bars (id, person_id, barred_at, barred_until, window_end, lifted_at)
                 VALUES ($1, $2, now(), $3, current_date, $4)",
                &[&Uuid::now_v7(), &person, &ends, &lifted],
            )
            .await
            .unwrap();
    }
    let barred = both_ways().await;
    assert_eq!(barred["barred"], true);
    let shown: chrono::DateTime<Utc> = barred["barred_until"].as_str().unwrap().parse().unwrap();
    assert_eq!(shown.timestamp_micros(), until.timestamp_micros());

    client
        .execute(
            "UPDATE bars SET lifted_at = now() WHERE person_id = $1",
            &[&person],
        )
        .await
        .unwrap();
    assert_eq!(both_ways().await["barred"], false);
}

/// The gateway gathers the first visits of a release second into one
/// call: each number is answered in its place, with its holder and bar
/// as the one-card resolve answers them, or with the code the one-card
/// resolve refuses it with; one bad card holds up none of the others.
#[tokio::test]
async fn many_card_numbers_resolve_in_one_call_each_as_it_would_alone() {
    let app = spawn_app().await;
    let (clear, barred, loser) = (
        app.new_person().await,
        app.new_person().await,
        app.new_person().await,
    );
    let number = |card: &Value| card["card_number"].as_str().unwrap().to_owned();
    let clear_card = app.issue_card(clear, "physical").await;
    let barred_card = app.issue_card(barred, "physical").await;
    let lost_card = app.issue_card(loser, "physical").await;
    let lost = app
        .post(
            &format!("/v1/cards/{}/report-loss", lost_card["card_id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(lost.status, 200, "{:?}", lost.body);
    let until = Utc::now() + chrono::Duration::days(30);
    app.pool_client()
        .await
        .execute(
            "INSERT INTO bars (id, person_id, barred_at, barred_until, window_end)
             VALUES ($1, $2, now(), $3, current_date)",
            &[&Uuid::now_v7(), &barred, &until],
        )
        .await
        .unwrap();
    // A valid number no card carries: the platform prefix and its check digit.
    let with_check = |body: String| format!("{body}{}", luhn_check_digit(&body).unwrap());
    let issued = [number(&clear_card), number(&barred_card), number(&lost_card)];
    let unknown = (0..100)
        .map(|i| with_check(format!("91109999999{i:04}")))
        .find(|n| !issued.contains(n))
        .unwrap();

    let asked = [
        number(&barred_card),
        unknown.clone(),
        number(&clear_card),
        number(&lost_card),
        number(&clear_card),
    ];
    let many = app
        .post("/v1/cards/resolve-many", &json!({ "card_numbers": asked }))
        .await;
    assert_eq!(many.status, 200, "{:?}", many.body);
    let cards = many.body["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 5, "one answer per number, in order");
    for (answer, asked) in cards.iter().zip(&asked) {
        assert_eq!(answer["card_number"], asked.as_str());
    }
    // Each as the one-card resolve answers it.
    for (i, card) in [(0, &barred_card), (2, &clear_card), (4, &clear_card)] {
        let alone = app
            .post("/v1/cards/resolve", &json!({ "card_number": number(card) }))
            .await;
        assert_eq!(alone.status, 200);
        assert_eq!(cards[i]["card_id"], alone.body["card_id"], "{i}");
        assert_eq!(cards[i]["person_id"], alone.body["person"]["person_id"], "{i}");
        assert_eq!(cards[i]["standing"], alone.body["standing"], "{i}");
        assert!(cards[i].get("code").is_none(), "{i}: {}", cards[i]);
        assert!(
            cards[i].get("person").is_none(),
            "no personal details: {}",
            cards[i]
        );
    }
    assert_eq!(cards[0]["standing"]["barred"], true);
    assert_eq!(
        cards[2]["standing"],
        json!({ "barred": false, "barred_until": null })
    );
    for (i, code, status) in [(1, "CARD_NOT_FOUND", 404), (3, "CARD_LOST", 403)] {
        let alone = app
            .post("/v1/cards/resolve", &json!({ "card_number": asked[i] }))
            .await;
        assert_eq!((alone.status, alone.body["code"].as_str()), (status, Some(code)));
        assert_eq!(cards[i]["code"], code, "{i}");
        assert!(cards[i].get("person_id").is_none(), "{i}: {}", cards[i]);
    }

    // Bad input names the field, and the entry.
    let bad = |body: Value| {
        let app = &app;
        async move { app.post("/v1/cards/resolve-many", &body).await }
    };
    let empty = bad(json!({ "card_numbers": [] })).await;
    assert_eq!(
        (empty.status, empty.body["field"].as_str()),
        (400, Some("card_numbers"))
    );
    let too_many = bad(json!({ "card_numbers": vec![number(&clear_card); 65] })).await;
    assert_eq!(
        (too_many.status, too_many.body["field"].as_str()),
        (400, Some("card_numbers"))
    );
    let body = "911000000000000";
    let wrong_digit = format!("{body}{}", (luhn_check_digit(body).unwrap() + 1) % 10);
    let not_a_card = bad(json!({ "card_numbers": [number(&clear_card), wrong_digit] })).await;
    assert_eq!(
        (not_a_card.status, not_a_card.body["field"].as_str()),
        (400, Some("card_numbers[1]"))
    );
    let missing = bad(json!({})).await;
    assert_eq!(missing.status, 400, "{:?}", missing.body);
}
