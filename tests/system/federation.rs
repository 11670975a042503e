//! The federation API through the gateway: member hospitals sign with
//! their own keys (two during a rotation) and touch only their own data.

use jyt_system_tests::{TEST_APP_SECRET, TestCity, problem, signed, visit_day};
use jyt_testkit::eventually;
use reqwest::Method;
use std::time::Duration;

fn keys() -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (key, hospital) in [("pumchk1", "pumch"), ("pumchk2", "pumch"), ("bjhk1", "bjh")] {
        env.push((
            format!("HOSPITAL_KEYS__{}__HOSPITAL", key.to_uppercase()),
            hospital.to_owned(),
        ));
        env.push((
            format!("HOSPITAL_KEYS__{}__SECRET", key.to_uppercase()),
            TEST_APP_SECRET.to_owned(),
        ));
    }
    env
}

fn schedule_body() -> serde_json::Value {
    let date = visit_day();
    serde_json::json!({
        "schedules": [{
            "id": "his-derm-am",
            "department": { "id": "derm", "name": "皮肤科 Dermatology" },
            "doctor": { "id": "doc-derm-1", "name": "孙医生", "title": "主治医师" },
            "date": date,
            "session": "morning",
            "level": "general",
            "fee_fen": 0,
            "segments": [
                { "starts_at": format!("{date}T09:00:00+08:00"), "ends_at": format!("{date}T09:30:00+08:00"), "capacity": 4 }
            ]
        }]
    })
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn a_hospital_publishes_reads_its_feed_stops_a_clinic_and_cannot_touch_another_hospital() {
    let env = keys();
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let city = TestCity::spawn_with(&["pumch", "bjh"], &extra).await;
    let fed = |key: &str, method: Method, path: &str, body: Option<&serde_json::Value>| {
        signed(&city.http, &city.gateway_url, key, method, path, body)
    };

    // Publish, with either of the two keys of a rotation: the same ids.
    let res = fed(
        "pumchk1",
        Method::PUT,
        "/federation/v1/hospitals/pumch/schedules",
        Some(&schedule_body()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let first: serde_json::Value = res.json().await.unwrap();
    let res = fed(
        "pumchk2",
        Method::PUT,
        "/federation/v1/hospitals/pumch/schedules",
        Some(&schedule_body()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let again: serde_json::Value = res.json().await.unwrap();
    assert_eq!(first["schedules"], again["schedules"]);
    let schedule_id = first["schedules"][0]["schedule_id"].as_str().unwrap().to_owned();
    let segment_id = first["schedules"][0]["segment_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();

    // Another hospital's key is refused on pumch's data, whatever the call.
    let date = visit_day();
    for (method, path, body) in [
        (
            Method::PUT,
            "/federation/v1/hospitals/pumch/schedules".to_owned(),
            Some(schedule_body()),
        ),
        (
            Method::GET,
            "/federation/v1/hospitals/pumch/feed?since=0".to_owned(),
            None,
        ),
        (
            Method::POST,
            format!("/federation/v1/hospitals/pumch/schedules/{schedule_id}/stop"),
            Some(serde_json::json!({ "reason": "x" })),
        ),
        (
            Method::PUT,
            format!("/federation/v1/hospitals/pumch/segments/{segment_id}/capacity"),
            Some(serde_json::json!({ "capacity": 9 })),
        ),
        (
            Method::POST,
            format!("/federation/v1/hospitals/bjh/bookings/pumch-{segment_id}/arrive"),
            None,
        ),
    ] {
        let res = fed("bjhk1", method, &path, body.as_ref()).send().await.unwrap();
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN", "{path}");
    }
    // An unknown key, and a channel app's own secret, are no hospital's.
    let res = fed("nobody", Method::GET, "/federation/v1/hospitals/pumch/feed", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = fed("wechat", Method::GET, "/federation/v1/hospitals/pumch/feed", None)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "UNKNOWN_APP");
    // Nothing of bjh's attempts changed pumch's capacity.
    let schedules = city.schedules(&"pumch".parse().unwrap(), date).await;
    let listed = serde_json::to_value(&schedules).unwrap().to_string();
    assert!(listed.contains(&segment_id));

    // A patient books the published slot through a channel...
    let slot = format!("pumch-{segment_id}");
    let patient = city.patient().await;
    let res = city
        .book(&slot.parse().unwrap(), patient, "wechat", "fed-1")
        .await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    // ...the doctor books another patient's follow-up from the clinic pool...
    let follower = city.cards.register().await;
    let res = fed(
        "pumchk1",
        Method::POST,
        "/federation/v1/hospitals/pumch/follow-ups",
        Some(&serde_json::json!({ "slot_id": slot, "card_number": follower.card_number })),
    )
    .header("Idempotency-Key", "follow-up-1")
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let follow_up: serde_json::Value = res.json().await.unwrap();
    assert_eq!(follow_up["channel"], "clinic");
    assert_eq!(follow_up["patient_id"], follower.person_id.to_string());

    // ...and the hospital's feed has both, once.
    let res = fed(
        "pumchk1",
        Method::GET,
        "/federation/v1/hospitals/pumch/feed?since=0&limit=100",
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = res.json().await.unwrap();
    let ids: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["booking"]["booking_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            booking["booking_id"].as_str().unwrap(),
            follow_up["booking_id"].as_str().unwrap()
        ]
    );

    // The patient arrives and is seen.
    let booking_id = booking["booking_id"].as_str().unwrap();
    for (step, status) in [("arrive", "checked_in"), ("complete", "completed")] {
        let res = fed(
            "pumchk1",
            Method::POST,
            &format!("/federation/v1/hospitals/pumch/bookings/{booking_id}/{step}"),
            None,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let b: serde_json::Value = res.json().await.unwrap();
        assert_eq!(b["status"], status);
    }

    // 停诊: the follow-up is stopped; stopping twice is harmless.
    for already in [false, true] {
        let res = fed(
            "pumchk1",
            Method::POST,
            &format!("/federation/v1/hospitals/pumch/schedules/{schedule_id}/stop"),
            Some(&serde_json::json!({ "reason": "doctor ill" })),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let outcome: serde_json::Value = res.json().await.unwrap();
        assert_eq!(outcome["already_stopped"], already);
        if !already {
            assert_eq!(
                outcome["stopped_bookings"], 1,
                "the completed visit stays completed"
            );
        }
    }
    // The follow-up was booked by the hospital, not a channel app: no app
    // reads it by id alone; PostgreSQL has it stopped.
    let read = city.get_booking(follow_up["booking_id"].as_str().unwrap()).await;
    assert_eq!(read.status(), 403);
    let client = city.hospital(0).state.pool.get().await.unwrap();
    let follow_up_id: uuid::Uuid = follow_up["booking_id"].as_str().unwrap()["pumch-".len()..]
        .parse()
        .unwrap();
    let status: String = client
        .query_one("SELECT status FROM bookings WHERE id = $1", &[&follow_up_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "stopped");
}

/// A line past its threshold asks the hospital for capacity through its
/// feed; the hospital answers with 加号 and with a session published for the
/// waitlist, and the line is served from both, in order of joining.
#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn a_capacity_request_reaches_the_feed_and_added_seats_and_a_waitlist_session_serve_the_line_in_order()
{
    let env: Vec<(String, String)> = keys().into_iter().filter(|(k, _)| k.contains("PUMCH")).collect();
    let gateway: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut hospital = jyt_system_tests::ALL_SEATS_COMMON.to_vec();
    hospital.push(("POLICY__WAITLIST_CAPACITY_REQUEST_THRESHOLD", "2"));
    let city = TestCity::spawn_configured(&["pumch"], &gateway, &hospital).await;
    let fed = |method: Method, path: &str, body: Option<&serde_json::Value>| {
        signed(&city.http, &city.gateway_url, "pumchk1", method, path, body)
    };
    // One segment of 2 seats.
    let mut body = schedule_body();
    body["schedules"][0]["segments"][0]["capacity"] = 2.into();
    let res = fed(
        Method::PUT,
        "/federation/v1/hospitals/pumch/schedules",
        Some(&body),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let published: serde_json::Value = res.json().await.unwrap();
    let schedule = published["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let segment = published["schedules"][0]["segment_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let slot: jyt_domain::SlotRef = format!("pumch-{segment}").parse().unwrap();
    for i in 0..2 {
        let patient = city.patient().await;
        assert_eq!(
            city.book(&slot, patient, "wechat", &format!("cap-{i}"))
                .await
                .status(),
            201
        );
    }
    // Three patients wait; the third passes the threshold of 2.
    let mut entries = Vec::new();
    for _ in 0..3 {
        let patient = city.cards.register().await;
        let res = city
            .signed(
                "wechat",
                Method::POST,
                &format!("/v1/hospitals/pumch/schedules/{schedule}/waitlist"),
                Some(&serde_json::json!({ "card_number": patient.card_number })),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let entry: serde_json::Value = res.json().await.unwrap();
        entries.push((patient, entry["entry_id"].as_str().unwrap().to_owned()));
    }

    // The hospital's feed carries the request, with its own ids.
    let res = fed(Method::GET, "/federation/v1/hospitals/pumch/feed?since=0", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = res.json().await.unwrap();
    let requests: Vec<&serde_json::Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "waitlist.capacity_requested")
        .collect();
    assert_eq!(requests.len(), 1, "{page}");
    let request = &requests[0]["capacity_request"];
    assert_eq!(request["schedule_id"], schedule.as_str());
    assert_eq!(request["waiting"], 3);
    assert_eq!(request["schedule"]["external_id"], "his-derm-am");
    assert_eq!(request["schedule"]["doctor_external_id"], "doc-derm-1");
    assert_eq!(request["segment_ids"][0], segment.as_str());
    assert!(requests[0].get("booking").is_none());
    let bookings_in_feed = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "booking.confirmed")
        .count();
    assert_eq!(bookings_in_feed, 2, "booking changes stay in the feed");

    let place = |entry: &str| {
        let entry = entry.to_owned();
        let city = &city;
        async move {
            let res = city
                .signed("wechat", Method::GET, &format!("/v1/waitlist/{entry}"), None)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<serde_json::Value>().await.unwrap()
        }
    };
    // The hospital's promotion sweeper runs every second beside the route,
    // so a pass may promote a waiter between the change's commit and the
    // route's own promotion: the route then counts fewer. The line itself
    // is the truth: wait (with a deadline) for each entry's status.
    let promoted = |entry: &str| {
        let entry = entry.to_owned();
        let city = &city;
        async move {
            eventually(Duration::from_secs(10), "the waiter's promotion", || {
                let req = city.signed("wechat", Method::GET, &format!("/v1/waitlist/{entry}"), None);
                async move {
                    let e: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
                    (e["status"] == "promoted").then_some(e)
                }
            })
            .await
        }
    };
    // 加号: one more seat, to the head of the line.
    let res = fed(
        Method::PUT,
        &format!("/federation/v1/hospitals/pumch/segments/{segment}/capacity"),
        Some(&serde_json::json!({ "capacity": 3 })),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let added: serde_json::Value = res.json().await.unwrap();
    assert!(added["promoted_from_waitlist"].as_u64().unwrap() <= 1, "{added}");
    promoted(&entries[0].1).await;
    assert_eq!(place(&entries[1].1).await["position"], 1);

    // A session for the waitlist: the same doctor that evening, 3 seats.
    // The two still waiting get one each, in order; the third is on sale.
    let date = visit_day();
    let extra = serde_json::json!({
        "schedules": [{
            "id": "his-derm-extra",
            "department": { "id": "derm", "name": "皮肤科 Dermatology" },
            "doctor": { "id": "doc-derm-1", "name": "孙医生", "title": "主治医师" },
            "date": date,
            "session": "evening",
            "level": "general",
            "fee_fen": 0,
            "for_waitlist": true,
            "segments": [
                { "starts_at": format!("{date}T18:00:00+08:00"), "ends_at": format!("{date}T18:30:00+08:00"), "capacity": 3 }
            ]
        }]
    });
    let res = fed(
        Method::PUT,
        "/federation/v1/hospitals/pumch/schedules",
        Some(&extra),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let outcome: serde_json::Value = res.json().await.unwrap();
    assert!(
        outcome["promoted_from_waitlist"].as_u64().unwrap() <= 2,
        "{outcome}"
    );
    let extra_schedule = outcome["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut visit_numbers = Vec::new();
    for (patient, entry) in &entries[1..] {
        let place = promoted(entry).await;
        let res = city.get_booking(place["booking_id"].as_str().unwrap()).await;
        assert_eq!(res.status(), 200);
        let booking: serde_json::Value = res.json().await.unwrap();
        assert_eq!(booking["schedule_id"], extra_schedule.as_str());
        assert_eq!(booking["patient_id"], patient.person_id.to_string());
        visit_numbers.push(booking["visit_number"].as_i64().unwrap());
    }
    assert_eq!(visit_numbers, [1, 2], "served in the order they joined");
    let extra_slot: jyt_domain::SlotRef = format!(
        "pumch-{}",
        outcome["schedules"][0]["segment_ids"][0].as_str().unwrap()
    )
    .parse()
    .unwrap();
    let walk_in = city.patient().await;
    assert_eq!(
        city.book(&extra_slot, walk_in, "kiosk", "cap-walk-in")
            .await
            .status(),
        201
    );
    let late = city.patient().await;
    let res = city.book(&extra_slot, late, "kiosk", "cap-late").await;
    assert_eq!(problem(res).await["code"], "SLOT_SOLD_OUT");
    let h = city.hospital(0);
    assert!(h.oversold_segments().await.is_empty());
    for s in [&slot, &extra_slot] {
        assert_eq!(h.redis_segment(s).await.1, h.pg_holders(s).await);
    }
}
