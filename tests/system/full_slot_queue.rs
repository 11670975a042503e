//! 满号排队 with hospital-added sessions (issue 23, part 2), end to end
//! through the gateway, the federation API and the console: a sold-out
//! clinic's line passes the hospital's threshold; the request for more
//! capacity reaches the hospital's feed and the console; the hospital
//! publishes an extra session for the waitlist; the whole line is served
//! from it in join order (each waiter promoted once, told once, nobody
//! else taking those seats), and the request shows as answered by the
//! hospital's key. A line longer than the new session keeps its order: the
//! rest wait, and the next seat to free goes to the head of what is left.

#![expect(clippy::unwrap_used, reason = "test: a failure is a failed test")]

use std::time::Duration;

use jyt_system_tests::{
    ALL_SEATS_COMMON, Callback, Session, TestCity, TestConsole, TestPatient, eventually, fed, federated_city,
    problem, visit_day,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The city, its lines asking for 加号 past 3 waiting.
async fn city(callback: &Callback) -> (TestCity, TestConsole) {
    let mut hospital = ALL_SEATS_COMMON.to_vec();
    hospital.push(("POLICY__WAITLIST_CAPACITY_REQUEST_THRESHOLD", "3"));
    federated_city(callback, &hospital).await
}

/// Publish through the federation API as `pumchk1`; the answer.
async fn publish(city: &TestCity, session: &Session<'_>) -> Value {
    let res = fed(
        city,
        "pumchk1",
        Method::PUT,
        "/federation/v1/hospitals/pumch/schedules",
        Some(&session.body()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The morning clinic of `doc-derm-1`, sold out (2 seats booked), and
/// `waiting` patients in its line, in join order: (patient, entry id).
async fn sold_out_line(city: &TestCity, waiting: usize) -> (String, Vec<(TestPatient, String)>) {
    let morning = publish(
        city,
        &Session {
            id: "his-derm-am",
            doctor: "doc-derm-1",
            date: visit_day(),
            session: "morning",
            starts: "09:00",
            capacity: 2,
            fee_fen: 0,
            for_waitlist: false,
        },
    )
    .await;
    let schedule = morning["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let slot: jyt_domain::SlotRef = format!(
        "pumch-{}",
        morning["schedules"][0]["segment_ids"][0].as_str().unwrap()
    )
    .parse()
    .unwrap();
    for i in 0..2 {
        let patient = city.patient().await;
        assert_eq!(
            city.book(&slot, patient, "wechat", &format!("am-{i}"))
                .await
                .status(),
            201
        );
    }
    let mut line = Vec::new();
    for _ in 0..waiting {
        let patient = city.cards.register().await;
        let res = city
            .join_waitlist("wechat", "pumch", &schedule, &patient.card_number)
            .await;
        assert_eq!(res.status(), 201);
        let entry: Value = res.json().await.unwrap();
        line.push((patient, entry["entry_id"].as_str().unwrap().to_owned()));
    }
    (schedule, line)
}

async fn entry(city: &TestCity, id: &str) -> Value {
    let res = city
        .signed("wechat", Method::GET, &format!("/v1/waitlist/{id}"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn promoted(city: &TestCity, id: &str) -> Value {
    eventually(Duration::from_secs(10), "the waiter's promotion", || {
        let req = city.signed("wechat", Method::GET, &format!("/v1/waitlist/{id}"), None);
        async move {
            let e: Value = req.send().await.ok()?.json().await.ok()?;
            (e["status"] == "promoted").then_some(e)
        }
    })
    .await
}

/// The capacity requests the console lists for `token`'s operator.
async fn requests(console: &TestConsole, token: &str, status: &str) -> Vec<Value> {
    let body = console
        .json(token, &format!("/v1/console/capacity-requests?status={status}"))
        .await
        .unwrap();
    body["requests"].as_array().unwrap().clone()
}

/// (patient, schedule, visit number) of every live booking of `schedule`,
/// in visit order, read from the hospital's PostgreSQL.
async fn bookings_of(city: &TestCity, schedule: &str) -> Vec<(String, i32)> {
    let client = city.hospital(0).state.pool.get().await.unwrap();
    let schedule = uuid::Uuid::parse_str(schedule).unwrap();
    client
        .query(
            "SELECT patient_id::text, visit_no FROM bookings
              WHERE schedule_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped') ORDER BY visit_no",
            &[&schedule],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn extra_session(capacity: i32) -> Session<'static> {
    Session {
        id: "his-derm-extra",
        doctor: "doc-derm-1",
        date: visit_day(),
        session: "evening",
        starts: "18:00",
        capacity,
        fee_fen: 0,
        for_waitlist: true,
    }
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn the_whole_line_is_served_in_join_order_from_a_session_the_hospital_adds_for_it() {
    let callback = Callback::start().await;
    let (city, console) = city(&callback).await;
    let (schedule, line) = sold_out_line(&city, 4).await;
    let city_ops = console.login("city_ops").await;
    let bjh_ops = console.login("bjh_ops").await;

    // The 4th joiner passed the threshold of 3: one request, in the feed...
    let res = fed(
        &city,
        "pumchk1",
        Method::GET,
        "/federation/v1/hospitals/pumch/feed?since=0",
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    let asked: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "waitlist.capacity_requested")
        .collect();
    assert_eq!(asked.len(), 1, "{page}");
    assert_eq!(asked[0]["capacity_request"]["waiting"], 4);
    assert_eq!(
        asked[0]["capacity_request"]["schedule"]["doctor_external_id"],
        "doc-derm-1"
    );
    // ...and open on the console, for the city, not for another hospital.
    let open = eventually(Duration::from_secs(10), "the request on the console", || {
        let console = &console;
        let token = city_ops.clone();
        async move {
            let open = requests(console, &token, "open").await;
            (!open.is_empty()).then_some(open)
        }
    })
    .await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["schedule_id"], schedule.as_str());
    assert!(requests(&console, &bjh_ops, "all").await.is_empty());
    let res = console
        .call(
            Some(&bjh_ops),
            Method::GET,
            "/v1/console/capacity-requests?hospital=pumch",
            None,
        )
        .await;
    assert_eq!(res.status(), 403);

    // Refused, with nothing published: an outsider, a channel app, another
    // hospital's key.
    let body = extra_session(5).body();
    let path = "/federation/v1/hospitals/pumch/schedules";
    let res = city
        .http
        .put(format!("{}{path}", city.gateway_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = city
        .signed("wechat", Method::PUT, path, Some(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = fed(&city, "bjhk1", Method::PUT, path, Some(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await["code"], "HOSPITAL_FORBIDDEN");
    for (_, id) in &line {
        assert_eq!(entry(&city, id).await["status"], "waiting");
    }

    // The hospital adds an evening session of 5 seats for the line.
    let outcome = publish(&city, &extra_session(5)).await;
    let extra = outcome["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bookings = Vec::new();
    for (patient, id) in &line {
        let place = promoted(&city, id).await;
        let booking = place["booking_id"].as_str().unwrap().to_owned();
        let res = city.get_booking(&booking).await;
        assert_eq!(res.status(), 200);
        let b: Value = res.json().await.unwrap();
        assert_eq!(b["schedule_id"], extra.as_str(), "served from the new session");
        assert_eq!(b["patient_id"], patient.person_id.to_string());
        bookings.push(booking);
    }
    // In join order, and nobody else holds a seat of the new session.
    let served = bookings_of(&city, &extra).await;
    let expected: Vec<(String, i32)> = line
        .iter()
        .zip(1..)
        .map(|((p, _), n)| (p.person_id.to_string(), n))
        .collect();
    assert_eq!(served, expected);
    // Each told once, by its own app.
    for booking in &bookings {
        callback
            .wait_for("the promotion notice", Duration::from_secs(10), |d| {
                d.iter()
                    .any(|r| r.notice_type() == "booking.promoted" && r.booking_id() == booking)
                    .then_some(())
            })
            .await;
    }
    for booking in &bookings {
        let told = callback.of("booking.promoted", booking);
        assert_eq!(told.len(), 1, "{booking}");
        assert!(told[0].signed_by("wechat"));
    }
    // The fifth seat, nobody waiting for it, went on sale.
    let extra_slot: jyt_domain::SlotRef = format!(
        "pumch-{}",
        outcome["schedules"][0]["segment_ids"][0].as_str().unwrap()
    )
    .parse()
    .unwrap();
    let walk_in = city.patient().await;
    assert_eq!(
        city.book(&extra_slot, walk_in, "kiosk", "walk-in").await.status(),
        201
    );
    let late = city.patient().await;
    assert_eq!(
        problem(city.book(&extra_slot, late, "kiosk", "late").await).await["code"],
        "SLOT_SOLD_OUT"
    );

    // The request is answered, by the hospital's key, with the session's seats.
    let answered = eventually(Duration::from_secs(10), "the request answered", || {
        let console = &console;
        let token = city_ops.clone();
        async move {
            let answered = requests(console, &token, "answered").await;
            (!answered.is_empty()).then_some(answered)
        }
    })
    .await;
    assert_eq!(answered[0]["schedule_id"], schedule.as_str());
    assert_eq!(answered[0]["added_seats"], 5);
    assert!(
        answered[0]["answered_by"]
            .as_str()
            .unwrap()
            .contains("hospital-key:pumchk1"),
        "{}",
        answered[0]
    );
    assert!(requests(&console, &city_ops, "open").await.is_empty());
    let h = city.hospital(0);
    assert!(h.oversold_segments().await.is_empty());
    assert_eq!(
        h.redis_segment(&extra_slot).await.1,
        h.pg_holders(&extra_slot).await
    );
}

#[tokio::test]
async fn a_line_longer_than_the_added_session_keeps_its_order_and_the_rest_wait_for_the_next_seat() {
    let callback = Callback::start().await;
    let (city, _console) = city(&callback).await;
    let (_, line) = sold_out_line(&city, 5).await;

    // Two seats for five waiting: the first two are served...
    let outcome = publish(&city, &extra_session(2)).await;
    let extra = outcome["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut first = Vec::new();
    for (_, id) in &line[..2] {
        first.push(
            promoted(&city, id).await["booking_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let served = bookings_of(&city, &extra).await;
    let expected: Vec<(String, i32)> = line[..2]
        .iter()
        .zip(1..)
        .map(|((p, _), n)| (p.person_id.to_string(), n))
        .collect();
    assert_eq!(served, expected);
    // ...the other three keep their places, in order, and nobody else
    // can book the new session.
    for (i, (_, id)) in line[2..].iter().enumerate() {
        let place = entry(&city, id).await;
        assert_eq!(place["status"], "waiting");
        assert_eq!(place["position"], i + 1);
    }
    let extra_slot: jyt_domain::SlotRef = format!(
        "pumch-{}",
        outcome["schedules"][0]["segment_ids"][0].as_str().unwrap()
    )
    .parse()
    .unwrap();
    let walk_in = city.patient().await;
    assert_eq!(
        problem(city.book(&extra_slot, walk_in, "kiosk", "walk-in").await).await["code"],
        "SLOT_SOLD_OUT"
    );

    // A served patient cancels: the freed seat goes to the head of the rest.
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!("/v1/bookings/{}/cancel", first[0]),
            Some(&json!({ "card_number": line[0].0.card_number })),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    promoted(&city, &line[2].1).await;
    assert_eq!(entry(&city, &line[3].1).await["position"], 1);
    assert_eq!(entry(&city, &line[4].1).await["position"], 2);
    let h = city.hospital(0);
    assert!(h.oversold_segments().await.is_empty());
    assert_eq!(
        h.redis_segment(&extra_slot).await.1,
        h.pg_holders(&extra_slot).await
    );
}
