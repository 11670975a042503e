//! The federation API through the gateway: member hospitals sign with
//! their own keys (two during a rotation) and touch only their own data.

use jyt_system_tests::{TEST_APP_SECRET, TestCity, problem, signed, visit_day};
use reqwest::Method;

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
