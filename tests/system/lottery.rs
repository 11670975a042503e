//! Fair release by lottery (issue 23 part 5), through the real gateway,
//! slot-inventory, channel-accounting, PostgreSQL and Redis: a schedule
//! published with `release_mode = "lottery"` answers attempts in its
//! window with one `202` entry per person however often they press; when
//! the window closes (the hospitals' manual clock moves past it, no
//! sleeping) the draw seats no more than exist (channel pools apply),
//! tells each winner's app once (`draw.won`) and each loser's once
//! (`draw.lost`), and its record reproduces from the stored seed.

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jyt_domain::time::Clock;
use jyt_system_tests::city::spawn_console;
use jyt_system_tests::{Callback, TEST_APP_SECRET, TestCity, problem, signed, visit_day};
use jyt_testkit::eventually;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Two hospitals (the second only to be refused), each with its HIS key;
/// both test apps' notices go to `callback`. The gateway's per-person
/// buckets are opened: these tests press repeatedly on purpose.
async fn city(callback: &Callback, clock: &Clock) -> TestCity {
    let gateway: Vec<(String, String)> = [
        ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
        ("CHANNEL_APPS__KIOSK__CALLBACK_URL", callback.url.as_str()),
        ("NOTIFICATIONS__POLL_MS", "20"),
        ("NOTIFICATIONS__BACKOFF_BASE_MS", "50"),
        ("ANTI_SCALPING__ENABLED", "false"),
        ("LIMITS__PERSON_PER_MINUTE", "100000"),
        ("LIMITS__PERSON_BURST", "10000"),
        ("LIMITS__ADDRESS_BURST", "10000"),
        ("LIMITS__ADDRESS_PER_MINUTE", "100000"),
        ("HOSPITAL_KEYS__LOTK1__HOSPITAL", "lot"),
        ("HOSPITAL_KEYS__LOTK1__SECRET", TEST_APP_SECRET),
        ("HOSPITAL_KEYS__OTHK1__HOSPITAL", "oth"),
        ("HOSPITAL_KEYS__OTHK1__SECRET", TEST_APP_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let gateway: Vec<(&str, &str)> = gateway.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestCity::spawn_with_clock(&["lot", "oth"], &gateway, &[], clock.clone()).await
}

/// The seeded day's release instant at hospital `lot`.
fn release_at(city: &TestCity) -> DateTime<Utc> {
    city.hospital(0).state.policy.get().release_at(visit_day())
}

fn schedule(id: &str, mode: &Value, window: &Value, capacity: i32) -> Value {
    let date = visit_day();
    let mut s = json!({
        "id": id,
        "department": { "id": "derm", "name": "皮肤科 Dermatology" },
        "doctor": { "id": "doc-derm-1", "name": "孙医生", "title": "主任医师" },
        "date": date,
        "session": "morning",
        "level": "expert",
        "fee_fen": 5000,
        "segments": [
            { "starts_at": format!("{date}T09:00:00+08:00"), "ends_at": format!("{date}T09:30:00+08:00"), "capacity": capacity },
            { "starts_at": format!("{date}T09:30:00+08:00"), "ends_at": format!("{date}T10:00:00+08:00"), "capacity": capacity }
        ]
    });
    if !mode.is_null() {
        s["release_mode"] = mode.clone();
    }
    if !window.is_null() {
        s["lottery_window_seconds"] = window.clone();
    }
    json!({ "schedules": [s] })
}

async fn publish(city: &TestCity, key: &str, hospital: &str, body: &Value) -> reqwest::Response {
    signed(
        &city.http,
        &city.gateway_url,
        key,
        Method::PUT,
        &format!("/federation/v1/hospitals/{hospital}/schedules"),
        Some(body),
    )
    .send()
    .await
    .unwrap()
}

/// Publish a lottery schedule (two segments of `capacity`, window 30 s);
/// its (schedule id, segment slot ids).
async fn publish_lottery(city: &TestCity, id: &str, capacity: i32) -> (String, Vec<String>) {
    let res = publish(
        city,
        "lotk1",
        "lot",
        &schedule(id, &json!("lottery"), &json!(30), capacity),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let body: Value = res.json().await.unwrap();
    let s = &body["schedules"][0];
    let slots = s["segment_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seg| format!("lot-{}", seg.as_str().unwrap()))
        .collect();
    (s["schedule_id"].as_str().unwrap().to_owned(), slots)
}

async fn press(city: &TestCity, channel: &str, card: &str, slot: &str, key: &str) -> reqwest::Response {
    city.book_with(channel, key, &json!({ "slot_id": slot, "card_number": card }))
        .await
}

async fn draw_record(city: &TestCity, key: &str, hospital: &str, schedule: &str) -> reqwest::Response {
    signed(
        &city.http,
        &city.gateway_url,
        key,
        Method::GET,
        &format!("/federation/v1/hospitals/{hospital}/schedules/{schedule}/draw"),
        None,
    )
    .send()
    .await
    .unwrap()
}

async fn drawn(city: &TestCity, schedule: &str) -> Value {
    eventually(Duration::from_secs(30), "the draw", || async {
        let res = draw_record(city, "lotk1", "lot", schedule).await;
        if res.status() != 200 {
            return None;
        }
        let record: Value = res.json().await.unwrap();
        (record["status"] == "drawn").then_some(record)
    })
    .await
}

async fn count(city: &TestCity, sql: &str, schedule: Uuid) -> i64 {
    let client = city.hospital(0).state.pool.get().await.unwrap();
    client.query_one(sql, &[&schedule]).await.unwrap().get(0)
}

async fn read_entry(city: &TestCity, app: &str, entry: &str, card: Option<&str>) -> reqwest::Response {
    let mut req = city.signed(app, Method::GET, &format!("/v1/draw-entries/{entry}"), None);
    if let Some(card) = card {
        req = req.header("X-Patient-Card", card);
    }
    req.send().await.unwrap()
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one release, step by step: entries, refusals, the draw, its notices and record"
)]
async fn a_lottery_takes_one_entry_per_person_draws_no_more_seats_than_exist_and_tells_each_app_once() {
    let callback = Callback::start().await;
    let clock = Clock::manual(Utc::now());
    let city = city(&callback, &clock).await;
    let release = release_at(&city);
    clock.set(release - TimeDelta::seconds(60));

    // Bad windows are refused naming the field; nothing is published.
    for (mode, window, field) in [
        (json!("lottery"), json!(0), "schedules[0].lottery_window_seconds"),
        (
            json!("lottery"),
            json!(301),
            "schedules[0].lottery_window_seconds",
        ),
        (
            json!("first_come"),
            json!(10),
            "schedules[0].lottery_window_seconds",
        ),
        (json!("raffle"), Value::Null, ""),
    ] {
        let res = publish(&city, "lotk1", "lot", &schedule("his-bad", &mode, &window, 3)).await;
        assert_eq!(res.status(), 400, "{mode} {window}");
        let p = problem(res).await;
        if !field.is_empty() {
            assert_eq!(p["field"], field, "{p}");
        }
    }
    assert_eq!(
        count(
            &city,
            "SELECT count(*) FROM schedules WHERE id <> $1",
            Uuid::nil()
        )
        .await,
        0,
        "a refused publish wrote nothing"
    );
    // Another hospital's key cannot publish here.
    let res = publish(
        &city,
        "othk1",
        "lot",
        &schedule("his-x", &json!("lottery"), &json!(30), 3),
    )
    .await;
    assert_eq!(res.status(), 403);

    // Two segments of 3 seats, split into channel pools by the default
    // policy: more entrants than seats, from two channels.
    let (schedule_id, slots) = publish_lottery(&city, "his-derm-lottery", 3).await;
    let schedule_uuid: Uuid = schedule_id.parse().unwrap();
    let wechat = city.cards.register_many(8).await;
    let kiosk = city.cards.register_many(4).await;

    // Before the release instant: not yet released, as for first come.
    let res = press(&city, "wechat", &wechat[0].card_number, &slots[0], "early").await;
    assert_eq!(res.status(), 409);
    assert_eq!(problem(res).await["code"], "NOT_YET_RELEASED");

    clock.set(release + TimeDelta::seconds(1));
    let mut entries: HashMap<Uuid, (String, String)> = HashMap::new();
    for (i, p) in wechat.iter().chain(kiosk.iter()).enumerate() {
        let channel = if i < wechat.len() { "wechat" } else { "kiosk" };
        let res = press(&city, channel, &p.card_number, &slots[i % 2], &format!("e{i}")).await;
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        let entry: Value = res.json().await.unwrap();
        assert_eq!(entry["status"], "entered");
        assert_eq!(entry["schedule_id"], schedule_id.as_str());
        assert!(entry["draw_at"].as_str().is_some());
        entries.insert(
            p.person_id,
            (entry["entry_id"].as_str().unwrap().to_owned(), channel.to_owned()),
        );
    }
    // Pressing again (new keys, the same key, the other segment) is the same entry.
    let eager = &wechat[0];
    let first = entries[&eager.person_id].0.clone();
    for n in 0..20 {
        // The first request again (same key, same slot), or a new one.
        let (key, slot) = if n % 5 == 0 {
            ("e0".to_owned(), &slots[0])
        } else {
            (format!("again-{n}"), &slots[n % 2])
        };
        let res = press(&city, "wechat", &eager.card_number, slot, &key).await;
        assert_eq!(res.status(), 202, "press {n}: {}", res.text().await.unwrap());
        let again: Value = res.json().await.unwrap();
        assert_eq!(again["entry_id"], first.as_str(), "press {n}");
    }
    assert_eq!(
        count(
            &city,
            "SELECT count(*) FROM lottery_entries WHERE schedule_id = $1",
            schedule_uuid
        )
        .await,
        12,
        "one entry per person"
    );
    assert_eq!(
        count(
            &city,
            "SELECT count(*) FROM bookings WHERE schedule_id = $1",
            schedule_uuid
        )
        .await,
        0,
        "entries are not holds"
    );
    // The gateway's admission still applies at entry: a barred patient is refused.
    let barred = city.cards.register().await;
    city.cards
        .bar(barred.person_id, Utc::now() + TimeDelta::days(30))
        .await;
    let res = press(&city, "wechat", &barred.card_number, &slots[0], "barred").await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "PATIENT_BARRED");

    // Reading an entry: its app; another app only with the patient's own card.
    let res = read_entry(&city, "wechat", &first, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "entered");
    let res = read_entry(&city, "kiosk", &first, None).await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    let res = read_entry(&city, "kiosk", &first, Some(&wechat[1].card_number)).await;
    assert_eq!(res.status(), 403, "another patient's card");
    let res = read_entry(&city, "kiosk", &first, Some(&eager.card_number)).await;
    assert_eq!(res.status(), 200);
    let unsigned = city
        .http
        .get(format!("{}/v1/draw-entries/{first}", city.gateway_url))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    // No draw yet; and never another hospital's.
    assert_eq!(
        draw_record(&city, "lotk1", "lot", &schedule_id).await.status(),
        404
    );
    assert_eq!(
        draw_record(&city, "othk1", "lot", &schedule_id).await.status(),
        403
    );
    assert_eq!(
        draw_record(&city, "wechat", "lot", &schedule_id).await.status(),
        401
    );

    // The window closes: the sweeper draws.
    clock.set(release + TimeDelta::seconds(31));
    let late = city.cards.register().await;
    let res = press(&city, "wechat", &late.card_number, &slots[0], "late").await;
    assert_ne!(res.status(), 202, "after the window no entry is taken");
    let record = drawn(&city, &schedule_id).await;

    // The record reproduces, here as a regulator would recompute it.
    assert_eq!(record["reproduction"]["reproduced"], true, "{record}");
    let seed: [u8; 32] = hex::decode(record["seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let entrants = record["entrants"].as_array().unwrap();
    assert_eq!(entrants.len(), 12);
    let permutation: Vec<usize> = serde_json::from_value(record["permutation"].clone()).unwrap();
    assert_eq!(
        slot_inventory::lottery::permutation::permutation(&seed, entrants.len()),
        permutation
    );
    let mut sorted: Vec<&str> = entrants.iter().map(|e| e.as_str().unwrap()).collect();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        entrants.iter().map(|e| e.as_str().unwrap()).collect::<Vec<_>>()
    );

    // No oversell, pools respected; winners hold bookings of their app.
    assert!(city.hospital(0).oversold_segments().await.is_empty());
    let outcomes = record["outcomes"].as_array().unwrap();
    let winners: Vec<&Value> = outcomes.iter().filter(|o| o["outcome"] == "won").collect();
    let losers: Vec<&Value> = outcomes.iter().filter(|o| o["outcome"] == "lost").collect();
    assert_eq!(record["winners"].as_u64().unwrap(), winners.len() as u64);
    assert!(!winners.is_empty() && winners.len() <= 6, "{record}");
    assert_eq!(winners.len() + losers.len(), 12);
    let live = count(
        &city,
        "SELECT count(*) FROM bookings WHERE schedule_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped')",
        schedule_uuid,
    )
    .await;
    let late_booked = i64::from(res_is_booking(&city, late.person_id, schedule_uuid).await);
    assert_eq!(live, winners.len() as i64 + late_booked);
    for w in &winners {
        let booking = w["booking_id"].as_str().unwrap();
        let res = city
            .signed(
                w["channel"].as_str().unwrap(),
                Method::GET,
                &format!("/v1/bookings/{booking}"),
                None,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "the winner's app owns its booking");
    }
    for l in &losers {
        assert!(l["lost_reason"].as_str().is_some(), "{l}");
    }

    // Each winner's app is told once (draw.won), each loser's once (draw.lost).
    let want = winners.len() + losers.len();
    let delivered = callback
        .wait_for("a notice per entrant", Duration::from_secs(30), |seen| {
            let n = seen
                .iter()
                .filter(|r| matches!(r.notice_type(), "draw.won" | "draw.lost"))
                .count();
            (n >= want).then(|| seen.to_vec())
        })
        .await;
    for w in &winners {
        let booking = w["booking_id"].as_str().unwrap();
        let won: Vec<_> = delivered
            .iter()
            .filter(|r| r.notice_type() == "draw.won" && r.booking_id() == booking)
            .collect();
        assert_eq!(won.len(), 1, "one draw.won for {booking}");
        assert!(
            won[0].signed_by(w["channel"].as_str().unwrap()),
            "sent to the entry's app"
        );
        let held = delivered
            .iter()
            .filter(|r| r.notice_type() == "booking.held" && r.booking_id() == booking)
            .count();
        assert_eq!(held, 0, "no second word of the same hold");
    }
    let mut lost_entries = HashSet::new();
    for r in delivered.iter().filter(|r| r.notice_type() == "draw.lost") {
        assert!(
            lost_entries.insert(r.body["entry"]["entry_id"].as_str().unwrap().to_owned()),
            "one draw.lost each"
        );
        assert!(
            r.body["entry"]["waitlist"]["path"]
                .as_str()
                .unwrap()
                .ends_with("/waitlist")
        );
    }
    assert_eq!(lost_entries.len(), losers.len());

    // The patient's own entry now shows the outcome.
    let mine = outcomes.iter().find(|o| o["entry_id"] == first.as_str()).unwrap();
    let res = read_entry(&city, "wechat", &first, None).await;
    let entry: Value = res.json().await.unwrap();
    assert_eq!(entry["status"], mine["outcome"]);

    // Drawn once: another trigger changes nothing.
    assert!(
        !slot_inventory::lottery::draw::draw(&city.hospital(0).state, schedule_uuid)
            .await
            .unwrap()
    );
    assert_eq!(
        count(&city, "SELECT count(*) FROM outbox WHERE event_type = 'draw.drawn' AND payload->>'schedule_id' = ($1::uuid)::text", schedule_uuid).await,
        1
    );

    // After the draw the seats left are first come: a new attempt books or is sold out.
    let after = city.cards.register().await;
    let res = press(&city, "kiosk", &after.card_number, &slots[1], "after").await;
    assert!(matches!(res.status().as_u16(), 201 | 409), "{}", res.status());
    assert!(city.hospital(0).oversold_segments().await.is_empty());

    console_shows_the_draw(&city, &schedule_id, &record).await;
}

/// Whether `patient` holds a live booking of the schedule (a late
/// first-come attempt may have got one after the draw).
async fn res_is_booking(city: &TestCity, patient: Uuid, schedule: Uuid) -> bool {
    let client = city.hospital(0).state.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM bookings WHERE schedule_id = $1 AND patient_id = $2
                AND status NOT IN ('cancelled', 'expired', 'stopped')",
            &[&schedule, &patient],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

/// The console lists the draw (from `draw.drawn`) and opens its record
/// through the relay; another hospital's operator cannot.
async fn console_shows_the_draw(city: &TestCity, schedule: &str, record: &Value) {
    let console = spawn_console(&city.redis_prefix, &city.gateway_url, &["lot", "oth"]).await;
    let city_ops = console.login("city_ops").await;
    let listed: Value = eventually(Duration::from_secs(30), "the console's draws", || async {
        let res = console
            .call(Some(&city_ops), Method::GET, "/v1/console/draws", None)
            .await;
        let body: Value = res.json().await.ok()?;
        (body["draws"].as_array()?.len() == 1).then_some(body)
    })
    .await;
    let row = &listed["draws"][0];
    assert_eq!(row["schedule_id"], schedule);
    assert_eq!(row["hospital_id"], "lot");
    assert_eq!(row["entrants"], 12);
    assert_eq!(row["seed"], record["seed"]);
    assert_eq!(row["winners"], record["winners"]);
    let path = format!("/v1/console/hospitals/lot/schedules/{schedule}/draw");
    let res = console.call(Some(&city_ops), Method::GET, &path, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["reproduction"]["reproduced"],
        true
    );
    let lot_ops = console.login("lot_ops").await;
    assert_eq!(
        console
            .call(Some(&lot_ops), Method::GET, &path, None)
            .await
            .status(),
        200
    );
    let oth_ops = console.login("oth_ops").await;
    assert_eq!(
        console
            .call(Some(&oth_ops), Method::GET, &path, None)
            .await
            .status(),
        403
    );
    let theirs: Value = console
        .call(Some(&oth_ops), Method::GET, "/v1/console/draws", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        theirs["draws"].as_array().unwrap().len(),
        0,
        "their own hospital's draws only"
    );
    assert_eq!(
        console
            .call(None, Method::GET, "/v1/console/draws", None)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn concurrent_draw_triggers_draw_once_and_entries_outside_a_lottery_are_first_come() {
    let callback = Callback::start().await;
    let clock = Clock::manual(Utc::now());
    let city = city(&callback, &clock).await;
    let release = release_at(&city);
    clock.set(release - TimeDelta::seconds(60));
    let (schedule_id, slots) = publish_lottery(&city, "his-derm-race", 2).await;
    let schedule_uuid: Uuid = schedule_id.parse().unwrap();
    // A first-come schedule beside it: 201 in the same second.
    let res = publish(
        &city,
        "lotk1",
        "lot",
        &schedule("his-derm-fc", &Value::Null, &Value::Null, 2),
    )
    .await;
    assert_eq!(res.status(), 200);
    let fc: Value = res.json().await.unwrap();
    let fc_slot = format!("lot-{}", fc["schedules"][0]["segment_ids"][0].as_str().unwrap());

    clock.set(release + TimeDelta::seconds(5));
    let patients = city.cards.register_many(10).await;
    for (i, p) in patients.iter().enumerate() {
        let res = press(&city, "wechat", &p.card_number, &slots[i % 2], &format!("r{i}")).await;
        assert_eq!(res.status(), 202);
    }
    let other = city.cards.register().await;
    let res = press(&city, "kiosk", &other.card_number, &fc_slot, "fc").await;
    assert_eq!(res.status(), 201, "a first-come schedule is unchanged");

    // Past the window, three triggers at once beside the sweeper's own.
    clock.set(release + TimeDelta::seconds(40));
    let state = &city.hospital(0).state;
    let (a, b, c) = tokio::join!(
        slot_inventory::lottery::draw::draw(state, schedule_uuid),
        slot_inventory::lottery::draw::draw(state, schedule_uuid),
        slot_inventory::lottery::draw::draw_due(state),
    );
    let ours = [a.unwrap(), b.unwrap()].iter().filter(|d| **d).count() + c.unwrap();
    assert!(ours <= 1, "drawn {ours} times by these triggers");
    let record = drawn(&city, &schedule_id).await;
    assert_eq!(record["reproduction"]["reproduced"], true);
    assert_eq!(
        count(
            &city,
            "SELECT count(*) FROM lottery_draws WHERE schedule_id = $1",
            schedule_uuid
        )
        .await,
        1
    );
    // Every winner holds one booking; none twice; no oversell.
    let winners = record["winners"].as_i64().unwrap();
    assert_eq!(
        count(
            &city,
            "SELECT count(*) FROM bookings WHERE schedule_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped')",
            schedule_uuid
        )
        .await,
        winners
    );
    assert_eq!(
        count(
            &city,
            "SELECT count(DISTINCT patient_id) FROM bookings WHERE schedule_id = $1",
            schedule_uuid
        )
        .await,
        winners
    );
    assert!(winners <= 4);
    assert!(city.hospital(0).oversold_segments().await.is_empty());
    assert_eq!(
        count(
            &city,
            "SELECT count(*) FROM outbox WHERE event_type = 'draw.won' AND payload->>'schedule_id' = ($1::uuid)::text",
            schedule_uuid
        )
        .await,
        winners,
        "one draw.won per winner"
    );
}
