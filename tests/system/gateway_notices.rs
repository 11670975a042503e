//! The notices a channel app gets about its patients' bookings, each
//! signed with the app's secret and sent to the app the booking belongs
//! to: booking confirmed, hold about to expire (only while still unpaid),
//! visit reminder (only while still booked), 停诊 with the offer that
//! replaces the booking and the refund, waitlist promotion. The
//! time-based ones are scheduled with small offsets and polled for with a
//! deadline, never slept for.

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use jyt_cache::{Keyspace, redis};
use jyt_system_tests::callback::Received;
use jyt_system_tests::{
    ALL_SEATS_COMMON, Callback, Route, TEST_APP_SECRET, TestCity, TestPatient, eventually, signed,
    start_gateway, visit_day,
};
use reqwest::Method;
use serde_json::{Value, json};

async fn city_with(callback: &Callback, extra: &[(&str, &str)]) -> TestCity {
    let mut settings = vec![
        ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
        ("NOTIFICATIONS__POLL_MS", "20"),
        ("NOTIFICATIONS__BACKOFF_BASE_MS", "50"),
    ];
    settings.extend_from_slice(extra);
    TestCity::spawn_configured(&["chaoyang"], &settings, ALL_SEATS_COMMON).await
}

async fn book(city: &TestCity, slot: &jyt_domain::SlotRef, key: &str) -> (TestPatient, Value) {
    let patient = city.cards.register().await;
    let res = city.book(slot, patient.person_id, "wechat", key).await;
    assert_eq!(res.status(), 201, "{key}");
    (patient, res.json().await.unwrap())
}

async fn pay(city: &TestCity, booking: &Value) {
    let res = city.pay("wechat", booking).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn cancel(city: &TestCity, patient: &TestPatient, booking: &Value) {
    let id = booking["booking_id"].as_str().unwrap();
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!("/v1/bookings/{id}/cancel"),
            Some(&json!({ "card_number": patient.card_number })),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

fn id(booking: &Value) -> &str {
    booking["booking_id"].as_str().unwrap()
}

/// The one delivered notice of `kind` about `booking`, waited for.
async fn notice(callback: &Callback, kind: &str, booking: &str) -> Received {
    let what = format!("{kind} for {booking}");
    let (kind, booking) = (kind.to_owned(), booking.to_owned());
    callback
        .wait_for(&what, Duration::from_secs(20), move |seen| {
            seen.iter()
                .find(|r| r.notice_type() == kind && r.booking_id() == booking)
                .cloned()
        })
        .await
}

/// Whether a notice is still scheduled in the gateway's Redis.
async fn scheduled(city: &TestCity, notice_id: &str) -> bool {
    let keys = Keyspace::new(city.redis_prefix.clone());
    let mut conn = city.hospital(0).state.redis.clone();
    redis::cmd("EXISTS")
        .arg(keys.tagged("notify", &format!("job:{notice_id}")))
        .query_async::<i64>(&mut conn)
        .await
        .unwrap()
        == 1
}

fn well_formed(r: &Received, kind: &str) {
    assert!(r.signed_by("wechat"), "{kind}: signed with the app's secret");
    assert_eq!(r.header("x-event-id"), r.notice_id(), "{kind}");
    assert!(
        r.body["booking"].get("pickup_code").is_none(),
        "{kind}: no pick-up code in a notice"
    );
}

#[tokio::test]
async fn a_confirmed_booking_is_told_at_once_and_reminded_before_the_visit_unless_cancelled() {
    let callback = Callback::start().await;
    // The reminder two days before the visit, a few seconds from now: late
    // enough that the CT booking below is cancelled before it falls due,
    // even on a busy machine (checked below, not assumed).
    let due = Utc::now() + TimeDelta::seconds(10);
    let at = jyt_domain::time::local(due).format("%H:%M:%S").to_string();
    let city = city_with(
        &callback,
        &[
            ("NOTIFICATIONS__VISIT_REMINDER_DAYS_BEFORE", "2"),
            ("NOTIFICATIONS__VISIT_REMINDER_TIME", &at),
        ],
    )
    .await;
    let slots = city.hospital(0).seed_visit_day(5).await;
    let reminder_at = jyt_domain::time::at(
        visit_day() - chrono::Days::new(2),
        chrono::NaiveTime::parse_from_str(&at, "%H:%M:%S").unwrap(),
    );

    // Paid, then confirmed; and a free CT, confirmed at once, then cancelled.
    let (_, paid) = book(&city, &slots[0], "rem-1").await;
    pay(&city, &paid).await;
    let (ct_patient, ct) = book(&city, &slots[10], "rem-2").await;
    assert_eq!(ct["status"], "confirmed");
    for b in [&paid, &ct] {
        let r = notice(&callback, "booking.confirmed", id(b)).await;
        well_formed(&r, "booking.confirmed");
        assert_eq!(r.body["booking"]["status"], "confirmed");
        assert_eq!(r.body["booking"]["owner_app"], "wechat");
    }
    cancel(&city, &ct_patient, &ct).await;
    assert!(
        Utc::now() < reminder_at,
        "the machine took over 10 s to book and cancel: the CT reminder fell due while it was confirmed"
    );
    notice(&callback, "booking.cancelled", id(&ct)).await;

    let reminder = notice(&callback, "booking.visit_reminder", id(&paid)).await;
    well_formed(&reminder, "booking.visit_reminder");
    assert!(reminder.at >= reminder_at, "not before its time");
    assert_eq!(reminder.notice_id(), format!("visit_reminder:{}", id(&paid)));
    assert_eq!(reminder.body["booking"]["status"], "confirmed");
    assert_eq!(reminder.body["booking"]["visit_date"], visit_day().to_string());
    // The cancelled booking's reminder is gone, never sent.
    let ct_reminder = format!("visit_reminder:{}", id(&ct));
    eventually(
        Duration::from_secs(10),
        "the cancelled reminder dropped",
        || async { (!scheduled(&city, &ct_reminder).await).then_some(()) },
    )
    .await;
    assert!(callback.of("booking.visit_reminder", id(&ct)).is_empty());
    // A booking the app made itself is not echoed back as `booking.held`.
    assert!(callback.of("booking.held", id(&paid)).is_empty());
}

#[tokio::test]
async fn an_unpaid_hold_is_warned_before_its_deadline_and_a_paid_one_is_not() {
    let callback = Callback::start().await;
    // Holds last ten minutes: warned three seconds after the hold.
    let city = city_with(&callback, &[("NOTIFICATIONS__HOLD_WARNING_SECONDS", "597")]).await;
    let slots = city.hospital(0).seed_visit_day(5).await;
    let (_, unpaid) = book(&city, &slots[0], "hw-1").await;
    let (_, paid) = book(&city, &slots[2], "hw-2").await;
    pay(&city, &paid).await;
    let deadline = chrono::DateTime::parse_from_rfc3339(unpaid["hold_deadline"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);

    let warning = notice(&callback, "booking.hold_expiring", id(&unpaid)).await;
    well_formed(&warning, "booking.hold_expiring");
    assert!(
        warning.at >= deadline - TimeDelta::seconds(597),
        "not before its time"
    );
    assert!(warning.at < deadline);
    assert_eq!(warning.body["booking"]["status"], "held");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(warning.body["booking"]["hold_deadline"].as_str().unwrap())
            .unwrap(),
        deadline
    );
    // Paid before its warning: dropped, never sent.
    let paid_warning = format!("hold_expiring:{}", id(&paid));
    eventually(
        Duration::from_secs(10),
        "the paid hold's warning dropped",
        || async { (!scheduled(&city, &paid_warning).await).then_some(()) },
    )
    .await;
    assert!(callback.of("booking.hold_expiring", id(&paid)).is_empty());
    notice(&callback, "booking.confirmed", id(&paid)).await;
}

#[tokio::test]
async fn a_stopped_clinic_tells_each_patient_with_the_offer_and_the_refund_and_dead_letters_replay() {
    let callback = Callback::start().await;
    let ops_token = "ops-token-for-notices";
    let ops_hash = gateway::notify::operator_token_hash(ops_token);
    let city = city_with(
        &callback,
        &[
            ("NOTIFICATIONS__MAX_ATTEMPTS", "2"),
            ("NOTIFICATIONS__OPERATOR_TOKEN_SHA256", &ops_hash),
        ],
    )
    .await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    // Two patients of the paediatrics expert's morning: one paid, one not.
    let (_, paid) = book(&city, &slots[4], "st-1").await;
    pay(&city, &paid).await;
    let (_, held) = book(&city, &slots[4], "st-2").await;
    notice(&callback, "booking.confirmed", id(&paid)).await;

    // The channel's endpoint is down while the clinic is stopped: every
    // notice is retried, then dead-lettered.
    callback.set_failing(true);
    let res = h
        .http()
        .post(format!(
            "{}/v1/schedules/{}/stop",
            h.base_url,
            paid["schedule_id"].as_str().unwrap()
        ))
        .json(&json!({ "reason": "专家临时停诊" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let outcome: Value = res.json().await.unwrap();
    let offers: Vec<String> = outcome["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["offered"]
                .as_str()
                .expect("an equivalent afternoon seat")
                .to_owned()
        })
        .collect();
    assert_eq!(offers.len(), 2);

    let ops = format!("{}/ops/notifications/dead-letters", city.gateway_url);
    // Two stops, two offers, the refund instruction.
    let dead = eventually(Duration::from_secs(20), "five dead letters", || async {
        let body: Value = city
            .http
            .get(&ops)
            .bearer_auth(ops_token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let list = body["dead_letters"].as_array()?.clone();
        (list.len() == 5).then_some(list)
    })
    .await;
    let mut kinds: Vec<&str> = dead.iter().map(|d| d["event_type"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "booking.offered",
            "booking.offered",
            "booking.stopped",
            "booking.stopped",
            "refund.instruction"
        ]
    );
    assert!(dead.iter().all(|d| d["attempts"] == 2 && d["app_id"] == "wechat"));
    assert!(
        callback
            .delivered()
            .iter()
            .all(|r| r.notice_type() == "booking.confirmed")
    );

    // The channel is back; the operator replays each.
    callback.set_failing(false);
    for d in &dead {
        let res = city
            .http
            .post(format!("{ops}/{}/replay", d["id"].as_str().unwrap()))
            .bearer_auth(ops_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    for b in [id(&paid), id(&held)] {
        let stopped = notice(&callback, "booking.stopped", b).await;
        well_formed(&stopped, "booking.stopped");
        assert_eq!(stopped.body["booking"]["detail"]["reason"], "专家临时停诊");
    }
    // Each offer names the booking it replaces, and reaches its app.
    for (offered, replaced) in offers.iter().zip([id(&paid), id(&held)]) {
        let offer = notice(&callback, "booking.offered", offered).await;
        well_formed(&offer, "booking.offered");
        assert_eq!(offer.body["booking"]["status"], "held");
        let replaced_uuid = replaced.split_once('-').unwrap().1;
        assert_eq!(offer.body["booking"]["detail"]["replaces"], replaced_uuid);
    }
    // The paid booking's refund: the instruction, then (only once it was
    // delivered) the refund-issued notice.
    let instruction = notice(&callback, "refund.instruction", id(&paid)).await;
    well_formed(&instruction, "refund.instruction");
    assert_eq!(instruction.body["refund"]["amount_fen"], paid["fee_fen"]);
    assert_eq!(instruction.body["refund"]["payment_method"], "self_pay");
    assert!(
        instruction.body["refund"]["payment_reference"]
            .as_str()
            .unwrap()
            .starts_with("wechat:tx")
    );
    assert!(
        instruction.body["refund"]["channel_transaction_id"]
            .as_str()
            .unwrap()
            .starts_with("tx")
    );
    let issued = notice(&callback, "refund.issued", id(&paid)).await;
    assert!(issued.at >= instruction.at);
    assert_eq!(issued.body["refund"]["amount_fen"], paid["fee_fen"]);
    assert!(
        callback.of("refund.instruction", id(&held)).is_empty(),
        "nothing was paid"
    );
    let body: Value = city
        .http
        .get(&ops)
        .bearer_auth(ops_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["dead_letters"], json!([]));
}

#[tokio::test]
async fn a_waitlisted_patient_is_told_of_the_promotion() {
    let callback = Callback::start().await;
    let city = city_with(&callback, &[]).await;
    let h = city.hospital(0);
    // One seat per segment: the CT morning is full after seven bookings.
    let slots = h.seed_visit_day(1).await;
    let segments: Vec<uuid::Uuid> = h
        .state
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT id FROM segments WHERE schedule_id = (SELECT schedule_id FROM segments WHERE id = $1)
              ORDER BY starts_at",
            &[&slots[10].id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut booked = Vec::new();
    for (i, segment) in segments.into_iter().enumerate() {
        let slot = jyt_domain::SlotRef::new(h.id.clone(), segment);
        booked.push(book(&city, &slot, &format!("wl-{i}")).await);
    }
    assert_eq!(booked.len(), 7, "the CT morning's seven segments");
    let waiting = city.cards.register().await;
    let schedule = booked[0].1["schedule_id"].as_str().unwrap();
    let res = city
        .signed(
            "wechat",
            Method::POST,
            &format!("/v1/hospitals/{}/schedules/{schedule}/waitlist", h.id),
            Some(&json!({ "card_number": waiting.card_number })),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    // A seat is freed: the head of the line is handed it, and told.
    cancel(&city, &booked[0].0, &booked[0].1).await;
    let promoted = callback
        .wait_for("booking.promoted", Duration::from_secs(30), |seen| {
            seen.iter()
                .find(|r| r.notice_type() == "booking.promoted")
                .cloned()
        })
        .await;
    well_formed(&promoted, "booking.promoted");
    assert_eq!(
        promoted.body["booking"]["patient_id"],
        waiting.person_id.to_string()
    );
    assert_eq!(promoted.body["booking"]["owner_app"], "wechat");
}

#[tokio::test]
async fn an_in_clinic_follow_up_is_told_to_the_app_of_the_booking_it_follows() {
    let callback = Callback::start().await;
    let city = city_with(
        &callback,
        &[
            ("HOSPITAL_KEYS__CHAOYANGK1__HOSPITAL", "chaoyang"),
            ("HOSPITAL_KEYS__CHAOYANGK1__SECRET", TEST_APP_SECRET),
        ],
    )
    .await;
    let slots = city.hospital(0).seed_visit_day(5).await;
    let (patient, first) = book(&city, &slots[0], "fu-1").await;
    // The cardiologist books the patient into endocrinology (¥50.00, held
    // until paid) from the clinic.
    let res = signed(
        &city.http,
        &city.gateway_url,
        "chaoyangk1",
        Method::POST,
        "/federation/v1/hospitals/chaoyang/follow-ups",
        Some(&json!({
            "slot_id": slots[8].to_string(),
            "card_number": patient.card_number,
            "follows_booking_id": id(&first),
        })),
    )
    .header("Idempotency-Key", "fu-2")
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let follow_up: Value = res.json().await.unwrap();
    assert_eq!(follow_up["channel"], "clinic");
    assert_eq!(follow_up["owner_app"], "wechat");

    let held = notice(&callback, "booking.held", id(&follow_up)).await;
    well_formed(&held, "booking.held");
    assert_eq!(held.body["booking"]["status"], "held");
    assert_eq!(held.body["booking"]["channel"], "clinic");
    // The app's own booking is not echoed back.
    assert!(callback.of("booking.held", id(&first)).is_empty());
}

/// A slow callback holds up only its own booking's notices: another
/// booking's go out meanwhile, side by side. And a booking's
/// notices keep their order: its cancellation waits for the answer to
/// its confirmation.
#[tokio::test]
async fn a_slow_callback_holds_up_only_its_own_bookings_notices_and_each_bookings_keep_their_order() {
    const SLOW: Duration = Duration::from_secs(4);
    let slow = Callback::start().await;
    let fast = Callback::start().await;
    slow.set_delay(SLOW);
    let city = TestCity::spawn_configured(
        &["chaoyang"],
        &[
            ("CHANNEL_APPS__WECHAT__CALLBACK_URL", slow.url.as_str()),
            ("CHANNEL_APPS__APP__CALLBACK_URL", fast.url.as_str()),
            ("NOTIFICATIONS__POLL_MS", "20"),
            ("NOTIFICATIONS__TIMEOUT_MS", "8000"),
        ],
        ALL_SEATS_COMMON,
    )
    .await;
    let slots = city.hospital(0).seed_visit_day(5).await;

    // A free CT through WeChat, confirmed at once: its notice reaches the
    // slow callback, which answers only after SLOW. Then it is cancelled.
    let (patient, first) = book(&city, &slots[10], "slow-1").await;
    assert_eq!(first["status"], "confirmed");
    let confirmed = notice(&slow, "booking.confirmed", id(&first)).await;
    cancel(&city, &patient, &first).await;
    // Another patient books through the other app meanwhile.
    let other_patient = city.cards.register().await;
    let res = city
        .book(&slots[10], other_patient.person_id, "app", "slow-2")
        .await;
    assert_eq!(res.status(), 201);
    let second: Value = res.json().await.unwrap();
    let other = notice(&fast, "booking.confirmed", id(&second)).await;
    assert!(
        other.at < confirmed.at + SLOW,
        "another booking's notice waited for the slow callback: sent {} after the first",
        other.at - confirmed.at
    );
    let cancelled = notice(&slow, "booking.cancelled", id(&first)).await;
    assert!(
        cancelled.at >= confirmed.at + SLOW,
        "the cancellation overtook the confirmation it follows"
    );
}

/// A notice falls due by the hospitals' clock, not the system's: a visit
/// reminder is not sent before the hospitals' time reaches it, and is sent
/// once it does, though the system's clock is a day short of it.
#[tokio::test]
async fn notices_fall_due_by_the_hospitals_clock() {
    let callback = Callback::start().await;
    // Two days before the visit at noon (Asia/Shanghai); the reminder is
    // due the day before at 18:00, tomorrow by the system's clock (the
    // visit is two days from today).
    let noon = chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap();
    let clock =
        jyt_domain::time::Clock::manual(jyt_domain::time::at(visit_day() - chrono::Days::new(2), noon));
    let city = TestCity::spawn_with_clock(
        &["chaoyang"],
        &[
            ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
            ("NOTIFICATIONS__POLL_MS", "20"),
            ("NOTIFICATIONS__VISIT_REMINDER_DAYS_BEFORE", "1"),
            ("NOTIFICATIONS__VISIT_REMINDER_TIME", "18:00"),
        ],
        ALL_SEATS_COMMON,
        clock.clone(),
    )
    .await;
    let slots = city.hospital(0).seed_visit_day(5).await;
    let (_, first) = book(&city, &slots[10], "clock-1").await;
    notice(&callback, "booking.confirmed", id(&first)).await;
    let reminder_id = format!("visit_reminder:{}", id(&first));
    assert!(scheduled(&city, &reminder_id).await);
    // A later booking's notice is taken after the reminder was scheduled:
    // had the reminder been due, it (the earlier due time) went first.
    let (_, second) = book(&city, &slots[10], "clock-2").await;
    notice(&callback, "booking.confirmed", id(&second)).await;
    assert!(
        callback.of("booking.visit_reminder", id(&first)).is_empty(),
        "sent by the system's clock"
    );
    assert!(scheduled(&city, &reminder_id).await);

    // The hospitals' time reaches the day before the visit, 18:00.
    clock.set(jyt_domain::time::at(
        visit_day() - chrono::Days::new(1),
        chrono::NaiveTime::from_hms_opt(18, 0, 1).unwrap(),
    ));
    let reminder = notice(&callback, "booking.visit_reminder", id(&first)).await;
    well_formed(&reminder, "booking.visit_reminder");
    assert_eq!(reminder.body["booking"]["status"], "confirmed");
}

/// The bookings of the notices falling due together are checked with each
/// hospital in one lookup: it answers those it has, as `GET` shows each,
/// and leaves out the ones it has not (another hospital's id, an unknown
/// one). A channel app cannot ask for it through the gateway.
#[tokio::test]
async fn a_hospital_answers_many_bookings_in_one_lookup_that_no_channel_reaches() {
    let callback = Callback::start().await;
    let city = city_with(&callback, &[]).await;
    let slots = city.hospital(0).seed_visit_day(5).await;
    let (_, held) = book(&city, &slots[0], "look-1").await;
    let (_, free) = book(&city, &slots[10], "look-2").await;
    let h = city.hospital(0);
    let unknown = format!("{}-{}", h.id, uuid::Uuid::now_v7());
    let elsewhere = format!("other-{}", uuid::Uuid::now_v7());
    let res = h
        .http()
        .post(format!("{}/v1/bookings/lookup", h.base_url))
        .json(&json!({ "booking_ids": [id(&held), unknown, id(&free), elsewhere] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let mut found: Vec<Value> = body["bookings"].as_array().unwrap().clone();
    found.sort_by_key(|b| b["booking_id"].as_str().unwrap().to_owned());
    let mut want = Vec::new();
    for b in [&held, &free] {
        let one: Value = h
            .http()
            .get(format!("{}/v1/bookings/{}", h.base_url, id(b)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        want.push(one);
    }
    want.sort_by_key(|b| b["booking_id"].as_str().unwrap().to_owned());
    assert_eq!(found, want);

    // The lookup is the hospitals' own, for the gateway's notifier: a
    // channel app asking the gateway for it, signed, reaches no hospital
    // and learns no booking, its own or another patient's.
    for app in ["wechat", "kiosk"] {
        let res = city
            .signed(
                app,
                Method::POST,
                "/v1/bookings/lookup",
                Some(&json!({ "booking_ids": [id(&free)] })),
            )
            .send()
            .await
            .unwrap();
        // The gateway's router answers: the path is no route of its own
        // (only `GET /v1/bookings/{id}` has that shape).
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, 405, "{app}: {text}");
        assert!(text.contains("METHOD_NOT_ALLOWED"), "{app}: {text}");
        assert!(!text.contains(id(&free)), "{app}: {text}");
    }
}

/// The events a notifier reads together are scheduled in the stream's
/// order, as when read one by one: the hold warning a booking's
/// `booking.held` plans is dropped by its `booking.confirmed` read in the
/// same batch, and kept for the holds still unpaid; each confirmation is
/// told. The city's gateway, which takes the bookings and payments, reads
/// no hospital's stream, so every event waits for a second gateway, whose
/// consumer group starts at the stream's beginning: one batch.
#[tokio::test]
async fn events_read_in_one_batch_are_scheduled_in_the_streams_order() {
    const BOOKINGS: usize = 8;
    const PAID: usize = 5;
    let callback = Callback::start().await;
    // Warned a minute before the ten-minute hold ends: a warning scheduled
    // here is still waiting when the test looks for it.
    let notices = [
        ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
        ("NOTIFICATIONS__POLL_MS", "20"),
        ("NOTIFICATIONS__HOLD_WARNING_SECONDS", "60"),
    ];
    let mut elsewhere = notices.to_vec();
    elsewhere.push(("NOTIFICATIONS__SOURCE_STREAM", "events:read-by-nobody"));
    let city = TestCity::spawn_configured(&["haidian"], &elsewhere, ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let prefix = city.redis_prefix.clone();
    let slots = h.seed_visit_day(BOOKINGS as i32).await;
    let mut bookings = Vec::new();
    for i in 0..BOOKINGS {
        let (_, booking) = book(&city, &slots[0], &format!("batch-{i}")).await;
        assert_eq!(booking["status"], "held");
        if i < PAID {
            pay(&city, &booking).await;
        }
        bookings.push(booking);
    }

    // Every hold and confirmation in the hospital's stream, held first.
    let stream = Keyspace::new(prefix.clone()).plain("events:slot-inventory");
    let mut conn = h.state.redis.clone();
    eventually(
        Duration::from_secs(20),
        "the hospital's events in its stream",
        || {
            let (stream, mut conn) = (stream.clone(), conn.clone());
            async move {
                let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let of = |kind: &str| {
                    entries
                        .iter()
                        .filter(|(_, fields)| fields.iter().any(|(k, v)| k == "event_type" && v == kind))
                        .count()
                };
                (of("booking.held") == BOOKINGS && of("booking.confirmed") == PAID).then_some(())
            }
        },
    )
    .await;
    let in_stream: usize = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        in_stream <= 100,
        "{in_stream} events: more than one batch (batch_size 100)"
    );

    let routes = [Route {
        id: h.id.as_str(),
        base_url: &h.base_url,
        district: "haidian",
        level: "tertiary",
    }];
    let second = start_gateway(&routes, &prefix, &city.cards.base_url, 1000, &notices).await;
    for booking in &bookings[..PAID] {
        notice(&callback, "booking.confirmed", id(booking)).await;
    }
    // The batch is scheduled in one go: once its confirmations are told,
    // every warning it keeps is waiting, and none it dropped.
    for booking in &bookings[PAID..] {
        let warning = format!("hold_expiring:{}", id(booking));
        assert!(
            scheduled(&city, &warning).await,
            "an unpaid hold's warning was not scheduled"
        );
    }
    for booking in &bookings[..PAID] {
        let warning = format!("hold_expiring:{}", id(booking));
        assert!(
            !scheduled(&city, &warning).await,
            "a paid hold's warning outlived the confirmation read with it"
        );
        assert!(callback.of("booking.hold_expiring", id(booking)).is_empty());
    }
    second.kill().await;
}
