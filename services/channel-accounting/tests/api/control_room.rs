//! The control room's read side: the audit trail (JSON, per-slot
//! provenance, CSV), the waitlists' 加号 requests and the surge view, each
//! refused to an outsider, a channel app and another hospital's operator,
//! and refusing bad input by naming the field.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers below: a failed unwrap is a failed test, with its location"
)]

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{BOOKINGS, CARDS, CITY, PUMCH, TestApp, assert_problem, booking, spawn_app};

const PAGES: [&str; 4] = [
    "/v1/console/audit",
    "/v1/console/capacity-requests",
    "/v1/console/surge",
    "/v1/console/precise",
];

fn slot(hospital: &str, segment: Uuid) -> String {
    format!("{hospital}-{}", segment.hyphenated())
}

/// A capacity change as slot-inventory writes it.
fn capacity(hospital: &str, schedule: Uuid, segment: Uuid, before: i64, after: i64, actor: &str) -> Value {
    json!({
        "schema": 1, "hospital_id": hospital, "schedule_id": schedule, "segment_id": segment,
        "slot_id": slot(hospital, segment), "visit_date": "2026-12-05", "starts_at": "2026-12-05T00:30:00Z",
        "capacity_before": before, "capacity": after, "actor": actor,
    })
}

async fn seed_trail(app: &TestApp) -> (Uuid, Uuid, Uuid) {
    let (schedule, segment, other_segment) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let tongren_schedule = Uuid::new_v4();
    let ids = vec![
        app.publish(
            BOOKINGS,
            "waitlist.capacity_requested",
            json!({
                "schema": 1, "hospital_id": "pumch", "schedule_id": schedule,
                "schedule": {"external_id": "s-7-am", "doctor_external_id": "d-7", "visit_date": "2026-12-05", "session": "am"},
                "segment_ids": [segment, other_segment], "waiting": 12,
            }),
        )
        .await,
        app.publish(
            BOOKINGS,
            "waitlist.capacity_requested",
            json!({
                "schema": 1, "hospital_id": "tongren", "schedule_id": tongren_schedule,
                "schedule": {}, "segment_ids": [], "waiting": 30,
            }),
        )
        .await,
        app.publish(
            BOOKINGS,
            "segment.capacity_changed",
            capacity(
                "pumch",
                schedule,
                segment,
                10,
                14,
                "gateway/hospital-key:pumch-his",
            ),
        )
        .await,
        app.publish(
            BOOKINGS,
            "segment.capacity_changed",
            capacity(
                "pumch",
                schedule,
                other_segment,
                10,
                8,
                "=cmd|' /C calc'!A0",
            ),
        )
        .await,
        app.publish(
            BOOKINGS,
            "schedule.stopped",
            json!({
                "schema": 1, "hospital_id": "pumch", "schedule_id": schedule, "reason": "医生出诊任务",
                "stopped_bookings": 3, "slot_ids": [slot("pumch", segment), slot("pumch", other_segment)],
                "actor": "gateway/hospital-key:pumch-his",
            }),
        )
        .await,
        app.publish(
            BOOKINGS,
            "segment.capacity_changed",
            capacity(
                "tongren",
                tongren_schedule,
                Uuid::new_v4(),
                5,
                9,
                "gateway/hospital-key:tongren-his",
            ),
        )
        .await,
        app.publish(
            CARDS,
            "standing.waived",
            json!({
                "person_id": Uuid::new_v4(), "hospital_id": "pumch", "no_show_event_id": Uuid::new_v4(),
                "reason": "clinic stopped", "actor": "operator:ops",
            }),
        )
        .await,
        app.publish(
            CARDS,
            "appeal.decided",
            json!({
                "appeal_id": Uuid::new_v4(), "person_id": Uuid::new_v4(), "hospital_id": "tongren",
                "status": "refused", "automatic": false, "decision_reason": "no proof", "actor": "operator:ops",
            }),
        )
        .await,
    ];
    app.applied(&ids).await;
    (schedule, segment, other_segment)
}

fn summaries(body: &Value) -> Vec<String> {
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["hospital_id"].as_str().unwrap(),
                e["kind"].as_str().unwrap(),
                e["actor"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_audit_trail_names_who_changed_what_and_when() {
    let app = spawn_app().await;
    let (_, segment, other) = seed_trail(&app).await;
    let city = app.login(CITY).await;

    let all = app.get_json(&city, "/v1/console/audit").await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 6, "{all}");
    assert_eq!(all["truncated"], false);
    let first = &all["entries"][0];
    assert_eq!(first["kind"], "capacity");
    assert_eq!(first["summary"], "capacity 10 → 14 (加号 added)");
    assert_eq!(first["slot_id"], slot("pumch", segment));

    // One slot's provenance: its own capacity change and its schedule's
    // stop, not its sibling's capacity change.
    let path = format!("/v1/console/audit?slot={}", slot("pumch", segment));
    let provenance = app.get_json(&city, &path).await;
    assert_eq!(
        summaries(&provenance),
        vec![
            "pumch capacity gateway/hospital-key:pumch-his",
            "pumch stop gateway/hospital-key:pumch-his",
        ]
    );
    let path = format!("/v1/console/audit?slot={}", slot("pumch", other));
    let sibling = app.get_json(&city, &path).await;
    assert_eq!(sibling["entries"][0]["summary"], "capacity 10 → 8 (reduced)");

    let waivers = app.get_json(&city, "/v1/console/audit?kind=waiver").await;
    assert_eq!(summaries(&waivers), vec!["pumch waiver operator:ops"]);
    let appeals = app
        .get_json(&city, "/v1/console/audit?kind=appeal&hospital=tongren")
        .await;
    assert_eq!(appeals["entries"][0]["summary"], "appeal refused: no proof");
    let by_actor = app.get_json(&city, "/v1/console/audit?actor=operator:ops").await;
    assert_eq!(by_actor["entries"].as_array().unwrap().len(), 2);

    // The hospital operator sees their own hospital's trail only.
    let pumch = app.login(PUMCH).await;
    let own = app.get_json(&pumch, "/v1/console/audit").await;
    assert!(
        own["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["hospital_id"] == "pumch"),
        "{own}"
    );
    assert_eq!(own["entries"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn the_audit_trail_exports_as_csv_a_spreadsheet_cannot_run() {
    let app = spawn_app().await;
    let (_, segment, _) = seed_trail(&app).await;
    let city = app.login(CITY).await;
    let res = app
        .get(&city, "/v1/console/audit?hospital=pumch&format=csv")
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"audit-")
    );
    let text = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        vec![
            "occurred_at_utc",
            "occurred_at_beijing",
            "hospital_id",
            "kind",
            "actor",
            "slot_id",
            "schedule_id",
            "person_id",
            "summary",
            "event_id"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert_eq!(&rows[0][2], "pumch");
    assert_eq!(&rows[0][3], "capacity");
    assert_eq!(&rows[0][4], "gateway/hospital-key:pumch-his");
    assert_eq!(&rows[0][5], slot("pumch", segment));
    assert_eq!(&rows[0][8], "capacity 10 → 14 (加号 added)");
    // A typed actor that looks like a formula is exported as text.
    assert_eq!(&rows[1][4], "'=cmd|' /C calc'!A0");
    assert_eq!(&rows[2][3], "stop");
    assert_eq!(&rows[2][8], "停诊 stopped: 医生出诊任务 (3 bookings stopped)");
    assert_eq!(&rows[3][3], "waiver");
    // Accept: text/csv asks for the same.
    let res = app
        .client
        .get(format!("{}/v1/console/audit?hospital=pumch", app.address))
        .bearer_auth(&city)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), text);
}

#[tokio::test]
async fn capacity_requests_are_listed_per_hospital_and_answered_by_jiahao() {
    let app = spawn_app().await;
    seed_trail(&app).await;
    let city = app.login(CITY).await;
    let open = app.get_json(&city, "/v1/console/capacity-requests").await;
    assert_eq!(
        open["requests"].as_array().unwrap().len(),
        0,
        "both answered: {open}"
    );
    let all = app
        .get_json(&city, "/v1/console/capacity-requests?status=all")
        .await;
    let requests = all["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    let pumch = requests.iter().find(|r| r["hospital_id"] == "pumch").unwrap();
    assert_eq!(pumch["waiting"], 12);
    assert_eq!(pumch["answered_by"], "gateway/hospital-key:pumch-his");
    assert_eq!(pumch["added_seats"], 4);
    assert_eq!(pumch["schedule"]["doctor_external_id"], "d-7");

    // A new request stays open until a capacity change adds seats.
    let schedule = Uuid::new_v4();
    let ids = vec![
        app.publish(
            BOOKINGS,
            "waitlist.capacity_requested",
            json!({ "schema": 1, "hospital_id": "pumch", "schedule_id": schedule,
                    "schedule": {}, "segment_ids": [], "waiting": 7 }),
        )
        .await,
        app.publish(
            BOOKINGS,
            "segment.capacity_changed",
            capacity("pumch", schedule, Uuid::new_v4(), 10, 9, "x"),
        )
        .await,
    ];
    app.applied(&ids).await;
    let pumch_ops = app.login(PUMCH).await;
    let open = app.get_json(&pumch_ops, "/v1/console/capacity-requests").await;
    let open = open["requests"].as_array().unwrap();
    assert_eq!(open.len(), 1, "a cut answers nothing");
    assert_eq!(open[0]["waiting"], 7);
    assert_eq!(open[0]["waiting_now"], 7);
    let answered = app
        .get_json(&pumch_ops, "/v1/console/capacity-requests?status=answered")
        .await;
    assert!(
        answered["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["hospital_id"] == "pumch")
    );
}

#[tokio::test]
async fn the_surge_view_counts_each_second_per_hospital_and_channel() {
    let app = spawn_app().await;
    let minute = (Utc::now() - TimeDelta::minutes(1))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap();
    let release = minute + TimeDelta::seconds(5);
    let mut ids = vec![
        app.publish(
            BOOKINGS,
            "attempts.tallied",
            json!({ "schema": 1, "hospital_id": "pumch", "channel": "wechat", "minute": minute.to_rfc3339(),
                    "attempts": 900, "sold_out": 700, "seconds": [[5, 800, 600], [6, 100, 100]] }),
        )
        .await,
        app.publish(
            BOOKINGS,
            "attempts.tallied",
            json!({ "schema": 1, "hospital_id": "tongren", "channel": "kiosk", "minute": minute.to_rfc3339(),
                    "attempts": 50, "sold_out": 0, "seconds": [[5, 50, 0], [99, 1, 1], "junk"] }),
        )
        .await,
    ];
    for n in 0..3 {
        ids.push(
            app.publish_at(
                BOOKINGS,
                "booking.held",
                booking(&format!("pumch-h{n}"), "pumch", "wechat", 500, json!({})),
                release,
            )
            .await,
        );
    }
    // A free visit is confirmed at once: a seat taken; a paid one confirmed
    // later was counted when held.
    ids.push(
        app.publish_at(
            BOOKINGS,
            "booking.confirmed",
            booking("pumch-free", "pumch", "kiosk", 0, json!({})),
            release,
        )
        .await,
    );
    ids.push(
        app.publish_at(
            BOOKINGS,
            "booking.confirmed",
            booking("pumch-h0", "pumch", "wechat", 500, json!({})),
            release + TimeDelta::seconds(1),
        )
        .await,
    );
    app.applied(&ids).await;
    let city = app.login(CITY).await;
    let until = (minute + TimeDelta::seconds(60)).to_rfc3339();
    let path = format!("/v1/console/surge?seconds=60&until={}", urlencoding(&until));
    let surge = app.get_json(&city, &path).await;
    assert_eq!(
        surge["totals"],
        json!({"attempts": 950, "sold_out": 700, "bookings": 4})
    );
    assert_eq!(surge["seconds"].as_array().unwrap().len(), 60);
    assert_eq!(
        surge["seconds"][5],
        json!({"second": surge["seconds"][5]["second"], "attempts": 850, "sold_out": 600, "bookings": 4})
    );
    assert_eq!(surge["seconds"][6]["attempts"], 100);
    let first = &surge["hospitals"][0];
    assert_eq!(first["hospital_id"], "pumch");
    assert_eq!(first["peak_bookings_per_second"], 4);
    assert_eq!(
        first["channels"][0],
        json!({"channel": "wechat", "attempts": 900, "sold_out": 700, "bookings": 3})
    );
    assert_eq!(surge["hospitals"][1]["hospital_id"], "tongren");

    let pumch = app.login(PUMCH).await;
    let own = app.get_json(&pumch, &path).await;
    assert_eq!(own["hospitals"].as_array().unwrap().len(), 1);
    assert_eq!(own["totals"]["attempts"], 900);
}

fn urlencoding(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn outsiders_channel_apps_and_other_hospitals_are_refused() {
    let app = spawn_app().await;
    let pumch = app.login(PUMCH).await;
    for page in PAGES {
        // No session at all.
        let res = app
            .client
            .get(format!("{}{page}", app.address))
            .send()
            .await
            .unwrap();
        assert_problem(res, 401, "UNAUTHENTICATED", Some("Authorization")).await;
        // A channel app's signed request is not an operator session.
        let res = app
            .client
            .get(format!("{}{page}", app.address))
            .header("X-App-Id", "wechat")
            .header("X-Timestamp", Utc::now().timestamp().to_string())
            .header("X-Nonce", Uuid::new_v4().simple().to_string())
            .header("X-Signature", "00".repeat(32))
            .send()
            .await
            .unwrap();
        assert_problem(res, 401, "UNAUTHENTICATED", Some("Authorization")).await;
        // Another hospital.
        let res = app.get(&pumch, &format!("{page}?hospital=tongren")).await;
        assert_problem(res, 403, "FORBIDDEN", Some("hospital")).await;
    }
    let other_slot = slot("tongren", Uuid::new_v4());
    let res = app
        .get(&pumch, &format!("/v1/console/audit?slot={other_slot}"))
        .await;
    assert_problem(res, 403, "FORBIDDEN", Some("hospital")).await;
}

#[tokio::test]
async fn bad_queries_name_their_field() {
    let app = spawn_app().await;
    let city = app.login(CITY).await;
    for (path, field) in [
        ("/v1/console/audit?kind=everything", "kind"),
        ("/v1/console/audit?from=2026-12-05&to=2026-12-01", "to"),
        ("/v1/console/audit?from=2024-01-01&to=2026-12-01", "to"),
        ("/v1/console/audit?slot=not-a-slot", "slot"),
        ("/v1/console/audit?limit=0", "limit"),
        ("/v1/console/audit?format=xml", "format"),
        ("/v1/console/audit?from=yesterday", "from"),
        ("/v1/console/audit?colour=red", "colour"),
        ("/v1/console/capacity-requests?status=maybe", "status"),
        ("/v1/console/surge?seconds=5", "seconds"),
        ("/v1/console/surge?seconds=601", "seconds"),
        ("/v1/console/surge?until=noon", "until"),
    ] {
        let res = app.get(&city, path).await;
        assert_eq!(res.status(), 400, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{path}: {body}");
    }
}
