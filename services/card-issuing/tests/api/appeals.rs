//! Appeals against no-shows: the operators' queue and decisions (the
//! console's contract), and the automatic grant when the hospital caused
//! the no-show.
#![expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use jyt_cache::redis;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::standing::{publish_no_show, standing, wait_for_no_shows};

/// Three no-shows in the window: the person is barred. Their event ids.
async fn barred_person(app: &TestApp) -> (Uuid, Vec<Uuid>) {
    let person = app.new_person().await;
    let today = jyt_domain::time::today();
    let mut events = Vec::new();
    // One at a time, each recorded before the next is sent, as days pass.
    for ago in [40, 20, 1] {
        let id = Uuid::now_v7();
        publish_no_show(
            app,
            id,
            person,
            &(today - chrono::Duration::days(ago)).to_string(),
        )
        .await;
        events.push(id);
        wait_for_no_shows(app, person, events.len()).await;
    }
    let s = standing(app, person).await;
    assert_eq!(s["barred"], true, "{s}");
    (person, events)
}

async fn appeal(app: &TestApp, person: Uuid, event: Uuid, cause: Option<&str>) -> crate::helpers::Resp {
    let mut body = json!({ "no_show_event_id": event, "reason": "我去了，但挂号窗口关门了" });
    if let Some(c) = cause {
        body["hospital_cause"] = json!(c);
    }
    app.post(&format!("/v1/persons/{person}/appeals"), &body).await
}

async fn appeal_count(app: &TestApp) -> i64 {
    app.pool_client()
        .await
        .query_one("SELECT count(*) FROM appeals", &[])
        .await
        .unwrap()
        .get(0)
}

/// The event types on card-issuing's stream, in order.
async fn stream_events(app: &TestApp) -> Vec<Value> {
    let mut conn = app.redis.clone();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{}:events:card-issuing", app.redis_prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .filter_map(|e| e.get::<String>("envelope"))
        .map(|e| serde_json::from_str::<Value>(&e).unwrap())
        .collect()
}

async fn wait_for_event(app: &TestApp, event_type: &str, appeal_or_person: &str) -> Value {
    jyt_testkit::eventually(Duration::from_secs(10), event_type, || async {
        stream_events(app).await.into_iter().find(|e| {
            e["event_type"] == event_type
                && (e["payload"]["appeal_id"] == appeal_or_person
                    || e["payload"]["person_id"] == appeal_or_person)
        })
    })
    .await
}

#[tokio::test]
async fn an_appeal_waits_in_the_queue_until_an_operator_waives_it() {
    let app = spawn_app().await;
    let (person, events) = barred_person(&app).await;

    let first = appeal(&app, person, events[2], None).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["status"], "pending");
    assert_eq!(first.body["automatic"], false);
    assert_eq!(first.body["decided_by"], Value::Null);
    assert_eq!(first.body["hospital_id"], "pumch");
    let id = first.body["appeal_id"].as_str().unwrap().to_owned();
    // Appealing the same no-show again answers the one appeal.
    let again = appeal(&app, person, events[2], None).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["appeal_id"], id.as_str());
    // Another person cannot appeal this person's no-show.
    let stranger = app.new_person().await;
    let theirs = appeal(&app, stranger, events[2], None).await;
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs.body["code"], "NO_SHOW_NOT_FOUND");

    let queue = app
        .get("/v1/appeals?status=pending&hospital_id=pumch&limit=10")
        .await;
    assert_eq!(queue.status, 200, "{:?}", queue.body);
    let appeals = queue.body["appeals"].as_array().unwrap();
    assert_eq!(appeals.len(), 1);
    let keys: Vec<&str> = appeals[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "appeal_id",
            "automatic",
            "booking_id",
            "created_at",
            "decided_at",
            "decided_by",
            "decision_reason",
            "hospital_id",
            "no_show_event_id",
            "person_id",
            "reason",
            "status",
        ],
        "ids only: no name, no ID number"
    );
    let elsewhere = app.get("/v1/appeals?status=pending&hospital_id=bjh").await;
    assert_eq!(elsewhere.body["appeals"], json!([]));
    wait_for_event(&app, "appeal.submitted", &id).await;

    let decision = format!("/v1/appeals/{id}/decision");
    for (body, field) in [
        (
            json!({ "decision": "maybe", "reason": "x", "operator": "city" }),
            "decision",
        ),
        (
            json!({ "decision": "waive", "reason": "  ", "operator": "city" }),
            "reason",
        ),
        (
            json!({ "decision": "waive", "reason": "ok", "operator": "" }),
            "operator",
        ),
        (json!({ "decision": "waive", "reason": "ok" }), "operator"),
    ] {
        let r = app.post(&decision, &body).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.body["field"], field, "{body}");
    }
    let bad_query = app.get("/v1/appeals?status=open").await;
    assert_eq!(bad_query.status, 400);
    assert_eq!(bad_query.body["field"], "status");
    let bad_limit = app.get("/v1/appeals?limit=0").await;
    assert_eq!(bad_limit.body["field"], "limit");
    assert_eq!(standing(&app, person).await["barred"], true, "nothing written");

    let unknown = app
        .post(
            &format!("/v1/appeals/{}/decision", Uuid::now_v7()),
            &json!({ "decision": "waive", "reason": "ok", "operator": "city" }),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["code"], "APPEAL_NOT_FOUND");

    let waived = app
        .post(
            &decision,
            &json!({ "decision": "waive", "reason": "窗口当天停开", "operator": "city" }),
        )
        .await;
    assert_eq!(waived.status, 200, "{:?}", waived.body);
    assert_eq!(waived.body["status"], "granted");
    assert_eq!(waived.body["decided_by"], "city");
    assert_eq!(waived.body["decision_reason"], "窗口当天停开");
    assert!(waived.body["decided_at"].is_string());
    let s = standing(&app, person).await;
    assert_eq!(s["barred"], false, "the waive lifts the bar like a waiver: {s}");
    assert_eq!(s["no_shows_in_window"], 2);

    let twice = app
        .post(
            &decision,
            &json!({ "decision": "refuse", "reason": "no", "operator": "city" }),
        )
        .await;
    assert_eq!(twice.status, 409);
    assert_eq!(twice.body["code"], "APPEAL_ALREADY_DECIDED");

    let decided = wait_for_event(&app, "appeal.decided", &id).await;
    assert_eq!(decided["payload"]["decision"], "waive");
    assert_eq!(decided["payload"]["actor"], "city");
    assert_eq!(decided["payload"]["automatic"], false);
    assert_eq!(decided["payload"]["no_show_event_id"], events[2].to_string());
    let waiver = wait_for_event(&app, "standing.waived", &person.to_string()).await;
    assert_eq!(waiver["payload"]["actor"], "city");
    assert_eq!(waiver["payload"]["hospital_id"], "pumch");

    let all = app.get("/v1/appeals?status=all").await;
    assert_eq!(all.body["appeals"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/v1/appeals").await.body["appeals"],
        json!([]),
        "the pending queue is empty"
    );
}

#[tokio::test]
async fn a_refused_appeal_leaves_the_no_show_counted() {
    let app = spawn_app().await;
    let (person, events) = barred_person(&app).await;
    let first = appeal(&app, person, events[0], None).await;
    let id = first.body["appeal_id"].as_str().unwrap();
    let refused = app
        .post(
            &format!("/v1/appeals/{id}/decision"),
            &json!({ "decision": "refuse", "reason": "no record of the visit", "operator": "ops-2" }),
        )
        .await;
    assert_eq!(refused.status, 200, "{:?}", refused.body);
    assert_eq!(refused.body["status"], "refused");
    assert_eq!(standing(&app, person).await["barred"], true);
    let refused_list = app.get("/v1/appeals?status=refused").await;
    assert_eq!(refused_list.body["appeals"][0]["appeal_id"], id);
    let d = wait_for_event(&app, "appeal.decided", id).await;
    assert_eq!(d["payload"]["decision"], "refuse");
}

#[tokio::test]
async fn an_appeal_is_granted_at_once_when_the_hospital_caused_the_no_show() {
    let app = spawn_app().await;
    let (person, events) = barred_person(&app).await;
    for (event, cause) in [(events[2], "clinic_stopped"), (events[1], "late_check_in")] {
        let r = appeal(&app, person, event, Some(cause)).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["status"], "granted");
        assert_eq!(r.body["automatic"], true);
        assert_eq!(r.body["decided_by"], "auto");
        let id = r.body["appeal_id"].as_str().unwrap();
        let d = wait_for_event(&app, "appeal.decided", id).await;
        assert_eq!(d["payload"]["actor"], "auto");
        assert_eq!(d["payload"]["automatic"], true);
        assert_eq!(d["payload"]["decision"], "waive");
    }
    let s = standing(&app, person).await;
    assert_eq!(s["barred"], false);
    assert_eq!(s["no_shows_in_window"], 1);
    assert!(
        app.get("/v1/appeals").await.body["appeals"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let bad = app
        .post(
            &format!("/v1/persons/{person}/appeals"),
            &json!({ "no_show_event_id": events[0], "reason": "x", "hospital_cause": "weather" }),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["field"], "hospital_cause");
    let waived_already = appeal(&app, person, events[2], None).await;
    assert_eq!(waived_already.status, 200, "the existing appeal");
    assert_eq!(appeal_count(&app).await, 2);
}
