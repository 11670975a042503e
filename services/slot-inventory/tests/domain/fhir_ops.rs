//! FHIR searches, `$find`, `$hold`, `$book` and the bulk feed's ETags over
//! real HTTP: each answer compared with what PostgreSQL and Redis hold.

use std::collections::{BTreeSet, HashSet};

use chrono::{Days, NaiveTime, TimeDelta};
use jyt_cache::redis;
use jyt_domain::SlotRef;
use serde_json::{Value, json};
use slot_inventory::booking::cache;
use slot_inventory::booking::lifecycle::{self, CancelRequest};
use slot_inventory::federation::publish::{self, PublishRequest};
use slot_inventory::federation::stop::{self, StopRequest};
use slot_inventory::schedule::capacity::{self, CapacityChange};
use uuid::Uuid;

use crate::fhir::{FhirApp, HOSPITAL, assert_valid};
use crate::helpers::{beijing, sched, visit_date};

/// Every Slot id of a search, following `next` links; checks `total` and
/// that no page repeats an earlier one's slot.
async fn all_pages(app: &FhirApp, first: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = format!("{}{first}", app.base);
    let mut total = None;
    loop {
        let a = FhirApp::answer(app.http.get(&url).send().await.unwrap()).await;
        assert_eq!(a.status, 200, "{url}: {}", a.text);
        assert_eq!(a.body["type"], "searchset");
        let t = a.body["total"].as_i64().unwrap();
        assert_eq!(*total.get_or_insert(t), t, "total changed between pages");
        for e in a.body["entry"].as_array().unwrap() {
            assert_eq!(e["search"]["mode"], "match");
            let id = e["resource"]["id"].as_str().unwrap().to_owned();
            assert_eq!(
                e["fullUrl"],
                format!(
                    "{}/{}/{id}",
                    app.base,
                    e["resource"]["resourceType"].as_str().unwrap()
                )
            );
            ids.push(id);
        }
        let next = a.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a slot repeated across pages");
    assert_eq!(Some(i64::try_from(ids.len()).unwrap()), total, "{first}");
    ids
}

/// Slot ids of segments matching `condition` (SQL over `seg` and `sch`).
async fn expected(app: &FhirApp, condition: &str) -> BTreeSet<String> {
    let client = app.state.pool.get().await.unwrap();
    client
        .query(
            &format!(
                "SELECT seg.id FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id WHERE {condition}"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{HOSPITAL}-{}", r.get::<_, Uuid>(0)))
        .collect()
}

fn set(ids: Vec<String>) -> BTreeSet<String> {
    ids.into_iter().collect()
}

#[tokio::test]
async fn slot_searches_return_exactly_the_matching_slots_and_pages_neither_repeat_nor_miss() {
    let app = FhirApp::start(beijing(3, 9, 0), 2, &[]).await;
    // CT 08:00 full with confirmed scans; the expert's 08:30 full with
    // holds; the pediatric expert stopped; a week later not yet released.
    for _ in 0..2 {
        app.book_directly(&app.slot(sched::CT_AM, 0), Uuid::new_v4())
            .await;
        app.book_directly(&app.slot(sched::CARDIO_EXPERT_AM, 1), Uuid::new_v4())
            .await;
    }
    app.book_directly(&app.slot(sched::CARDIO_EXPERT_AM, 2), Uuid::new_v4())
        .await;
    stop::stop(
        &app.state,
        app.schedules[sched::PEDS_EXPERT_AM].schedule_id,
        &StopRequest {
            reason: "停诊".into(),
        },
    )
    .await
    .unwrap();

    let everything = expected(&app, "true").await;
    assert_eq!(everything.len(), 156);
    assert_eq!(set(all_pages(&app, "/Slot?_count=7").await), everything);
    assert_eq!(set(all_pages(&app, "/Slot?_count=500").await), everything);

    let ct = app.schedule_id(sched::CT_AM);
    let ct_uuid = app.schedules[sched::CT_AM].schedule_id;
    let of_ct = expected(&app, &format!("seg.schedule_id = '{ct_uuid}'")).await;
    assert_eq!(of_ct.len(), 7);
    assert_eq!(
        set(all_pages(&app, &format!("/Slot?schedule=Schedule/{ct}")).await),
        of_ct
    );
    assert_eq!(
        set(all_pages(&app, &format!("/Slot?schedule={ct}&_count=2")).await),
        of_ct
    );
    // Another hospital's schedule matches nothing.
    assert!(
        all_pages(&app, &format!("/Slot?schedule=other-{ct_uuid}"))
            .await
            .is_empty()
    );

    let one = |s: &SlotRef| BTreeSet::from([s.to_string()]);
    assert_eq!(
        set(all_pages(&app, "/Slot?status=busy").await),
        one(&app.slot(sched::CT_AM, 0))
    );
    assert_eq!(
        set(all_pages(&app, "/Slot?status=busy-tentative").await),
        one(&app.slot(sched::CARDIO_EXPERT_AM, 1))
    );
    let peds = app.schedules[sched::PEDS_EXPERT_AM].schedule_id;
    let later = visit_date().checked_add_days(Days::new(7)).unwrap();
    let unavailable = expected(
        &app,
        &format!("seg.schedule_id = '{peds}' OR sch.visit_date = '{later}'"),
    )
    .await;
    assert_eq!(unavailable.len(), 7 + 78);
    assert_eq!(
        set(all_pages(&app, "/Slot?status=busy-unavailable&_count=9").await),
        unavailable
    );
    let free: BTreeSet<String> = everything
        .iter()
        .filter(|id| {
            !unavailable.contains(*id)
                && **id != app.slot(sched::CT_AM, 0).to_string()
                && **id != app.slot(sched::CARDIO_EXPERT_AM, 1).to_string()
        })
        .cloned()
        .collect();
    assert_eq!(set(all_pages(&app, "/Slot?status=free&_count=10").await), free);
    assert!(
        free.contains(&app.slot(sched::CARDIO_EXPERT_AM, 2).to_string()),
        "one seat of two left"
    );
    assert_eq!(
        set(all_pages(&app, "/Slot?status=busy,busy-tentative").await).len(),
        2
    );

    // start: ge/lt instants, a whole day, after a day.
    let d = visit_date();
    let nine_to_ten = expected(
        &app,
        &format!("seg.starts_at >= '{d}T09:00:00+08:00' AND seg.starts_at < '{d}T10:00:00+08:00'"),
    )
    .await;
    assert_eq!(nine_to_ten.len(), 12);
    let q = format!("/Slot?start=ge{d}T09:00:00%2B08:00&start=lt{d}T10:00:00%2B08:00&_count=5");
    assert_eq!(set(all_pages(&app, &q).await), nine_to_ten);
    let q = format!("/Slot?start=ge{d}T09:00&start=lt{d}T10:00");
    assert_eq!(
        set(all_pages(&app, &q).await),
        nine_to_ten,
        "local time without a zone"
    );
    let that_day = expected(&app, &format!("sch.visit_date = '{d}'")).await;
    assert_eq!(set(all_pages(&app, &format!("/Slot?start={d}")).await), that_day);
    assert_eq!(
        set(all_pages(&app, &format!("/Slot?start=gt{d}&_count=13")).await),
        expected(&app, &format!("sch.visit_date > '{d}'")).await
    );
    assert_eq!(
        set(all_pages(&app, &format!("/Slot?start=le{d}&status=free")).await),
        that_day.intersection(&free).cloned().collect()
    );
    // Combined with a schedule and status.
    let q = format!("/Slot?schedule=Schedule/{ct}&status=free&start=ge{d}T08:30:00%2B08:00");
    assert_eq!(
        set(all_pages(&app, &q).await),
        of_ct
            .iter()
            .filter(|id| **id != app.slot(sched::CT_AM, 0).to_string())
            .cloned()
            .collect()
    );

    // Schedules: by actor, department and date, paged.
    let all_schedules = all_pages(&app, &format!("/Schedule?actor=Location/{HOSPITAL}&_count=5")).await;
    assert_eq!(all_schedules.len(), 24);
    let cardio = all_pages(&app, &format!("/Schedule?specialty=cardio&date={d}")).await;
    assert_eq!(cardio.len(), 4);
    let s = app.get(&format!("/Schedule/{ct}")).await;
    let doctor = s.body["actor"][1]["reference"].as_str().unwrap().to_owned();
    let by_doctor = all_pages(&app, &format!("/Schedule?actor={doctor}")).await;
    assert_eq!(by_doctor.len(), 4, "CT mornings and afternoons, both days");
    assert!(by_doctor.contains(&ct));
    let stopped = app.get(&format!("/Schedule/{HOSPITAL}-{peds}")).await;
    assert_eq!(stopped.body["active"], false);

    // A bad parameter is a 400 naming it, never an empty page.
    for (q, param) in [
        ("/Slot?status=open", "status"),
        ("/Slot?start=ne2026-12-08", "start"),
        ("/Slot?_count=501", "_count"),
        ("/Slot?_page=0", "_page"),
        ("/Slot?schedule=nope", "schedule"),
        ("/Slot?status=free&status=busy", "status"),
        ("/Slot?start:missing=true", "start:missing"),
        ("/Slot?_sort=start", "_sort"),
        ("/Schedule?actor=Patient/x", "actor"),
        ("/Schedule?date=2026-02-30", "date"),
    ] {
        let a = app.get(q).await;
        assert_eq!(a.status, 400, "{q}: {}", a.text);
        assert_eq!(a.body["issue"][0]["expression"][0], param, "{q}: {}", a.text);
        assert!(
            a.body["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(param)
        );
    }
}

fn find_body(params: Value) -> Value {
    json!({ "resourceType": "Parameters", "parameter": params })
}

#[tokio::test]
async fn find_proposes_only_free_slots_that_match() {
    let app = FhirApp::start(beijing(3, 9, 0), 1, &[]).await;
    // Cardiology's 08:00 expert slot is taken.
    app.book_directly(&app.slot(sched::CARDIO_EXPERT_AM, 0), Uuid::new_v4())
        .await;
    let d = visit_date();
    let start = format!("{d}T08:00:00+08:00");
    let end = format!("{d}T12:00:00+08:00");
    let found = app
        .post(
            "/Appointment/$find",
            &find_body(json!([
                { "name": "start", "valueDateTime": start },
                { "name": "end", "valueInstant": end },
                { "name": "specialty", "valueCoding": { "system": "urn:jyt:department", "code": "cardio" } },
            ])),
            &[],
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    let slots: BTreeSet<String> = found.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["resource"]["status"], "proposed");
            assert!(e["resource"].get("id").is_none());
            e["resource"]["slot"][0]["reference"]
                .as_str()
                .unwrap()
                .trim_start_matches("Slot/")
                .to_owned()
        })
        .collect();
    let free = set(all_pages(
        &app,
        &format!(
            "/Slot?status=free&specialty=cardio&start=ge{d}T08:00:00%2B08:00&start=lt{d}T12:00:00%2B08:00"
        ),
    )
    .await);
    assert_eq!(slots.len(), 13, "two cardiology mornings of seven, one taken");
    assert_eq!(slots, free);
    assert!(!slots.contains(&app.slot(sched::CARDIO_EXPERT_AM, 0).to_string()));
    assert_eq!(found.body["total"], 13);

    // By practitioner: only that doctor's free slots.
    let schedule = app
        .get(&format!("/Schedule/{}", app.schedule_id(sched::CARDIO_EXPERT_AM)))
        .await;
    let doctor = schedule.body["actor"][1]["reference"].clone();
    let found = app
        .post(
            "/Appointment/$find",
            &find_body(json!([
                { "name": "start", "valueDate": d.to_string() },
                { "name": "end", "valueDate": d.to_string() },
                { "name": "practitioner", "valueReference": { "reference": doctor } },
            ])),
            &[],
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert_eq!(
        found.body["total"], 12,
        "the expert's morning and afternoon, less one"
    );
    for e in found.body["entry"].as_array().unwrap() {
        assert_eq!(e["resource"]["participant"][1]["actor"]["reference"], doctor);
    }
    // Nothing is free before the release: a week later.
    let later = d.checked_add_days(Days::new(7)).unwrap();
    let found = app
        .post(
            "/Appointment/$find",
            &find_body(json!([
                { "name": "start", "valueDate": later.to_string() },
                { "name": "end", "valueDate": later.to_string() },
            ])),
            &[],
        )
        .await;
    assert_eq!(found.body["total"], 0, "{}", found.text);

    for (params, name) in [
        (json!([{ "name": "start", "valueDate": d.to_string() }]), "end"),
        (
            json!([{ "name": "start", "valueDate": d.to_string() }, { "name": "end", "valueDateTime": "2026-02-30T08:00:00+08:00" }]),
            "end",
        ),
        (
            json!([{ "name": "start", "valueDate": d.to_string() }, { "name": "end", "valueDate": d.to_string() }, { "name": "colour", "valueString": "red" }]),
            "colour",
        ),
        (
            json!([{ "name": "start", "valueDate": "2026-12-09" }, { "name": "end", "valueDate": "2026-12-01" }]),
            "end",
        ),
    ] {
        let a = app.post("/Appointment/$find", &find_body(params), &[]).await;
        assert_eq!((a.status, a.code()), (400, "INVALID_FIELD"), "{}", a.text);
        assert_eq!(a.body["issue"][0]["expression"][0], name, "{}", a.text);
    }
}

async fn redis_free(app: &FhirApp, slot: &SlotRef) -> i64 {
    let info = cache::segment_info(&app.state, slot.id).await.unwrap();
    let keys = app.state.keys.segment(&info);
    let mut conn = app.state.redis.clone();
    redis::cmd("LLEN")
        .arg(&keys.free)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn hold_runs_the_booking_path_and_book_confirms_it() {
    let app = FhirApp::start(beijing(3, 9, 0), 1, &[]).await;
    let slot = app.slot(sched::CARDIO_EXPERT_AM, 0);
    let patient = Uuid::new_v4();
    let held = app.hold(&slot, patient, "hold-1", "wechat").await;
    assert_eq!(held.status, 201, "{}", held.text);
    assert_eq!(held.body["status"], "pending");
    let id = held.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        held.header("location"),
        Some(format!("{}/Appointment/{id}", app.base).as_str())
    );
    // The seat is gone from Redis and PostgreSQL has the row.
    assert_eq!(redis_free(&app, &slot).await, 0);
    assert_eq!(app.count("SELECT count(*) FROM bookings").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM bookings WHERE status = 'held' AND channel = 'wechat'")
            .await,
        1
    );
    // The same key again: the same Appointment, nothing more booked.
    let again = app.hold(&slot, patient, "hold-1", "wechat").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(again.body, held.body);
    assert_eq!(app.count("SELECT count(*) FROM bookings").await, 1);
    // The key on another request.
    let reused = app
        .hold(&app.slot(sched::CARDIO_EXPERT_AM, 1), patient, "hold-1", "wechat")
        .await;
    assert_eq!((reused.status, reused.code()), (409, "IDEMPOTENCY_KEY_REUSED"));
    // Sold out, answered from Redis.
    let late = app.hold(&slot, Uuid::new_v4(), "hold-2", "kiosk").await;
    assert_eq!((late.status, late.code()), (409, "SLOT_SOLD_OUT"));
    assert_eq!(late.body["issue"][0]["code"], "conflict");
    // The rules of /v1/bookings: one schedule per patient.
    let second = app
        .hold(&app.slot(sched::CARDIO_EXPERT_AM, 2), patient, "hold-3", "wechat")
        .await;
    assert_eq!((second.status, second.code()), (409, "SCHEDULE_ALREADY_BOOKED"));

    // Headers are checked before anything else.
    let body = crate::fhir::hold_body(&slot, Uuid::new_v4());
    let no_key = app
        .post("/Appointment/$hold", &body, &[("Jyt-Channel", "wechat")])
        .await;
    assert_eq!((no_key.status, no_key.code()), (400, "MISSING_HEADER"));
    assert_eq!(no_key.body["issue"][0]["expression"][0], "Idempotency-Key");
    let no_channel = app
        .post("/Appointment/$hold", &body, &[("Idempotency-Key", "k")])
        .await;
    assert_eq!((no_channel.status, no_channel.code()), (400, "MISSING_HEADER"));
    assert_eq!(no_channel.body["issue"][0]["expression"][0], "Jyt-Channel");
    let bad_channel = app
        .post(
            "/Appointment/$hold",
            &body,
            &[("Idempotency-Key", "k"), ("Jyt-Channel", "weixin")],
        )
        .await;
    assert_eq!(bad_channel.body["issue"][0]["expression"][0], "Jyt-Channel");
    assert_eq!(app.count("SELECT count(*) FROM bookings").await, 1);

    // The referral channel needs its referral, named as the parameter.
    let referred = Uuid::new_v4();
    let general = app.slot(sched::CARDIO_GENERAL_AM, 0);
    let no_referral = app.hold(&general, referred, "hold-r1", "referral").await;
    assert_eq!((no_referral.status, no_referral.code()), (400, "INVALID_FIELD"));
    assert_eq!(no_referral.body["issue"][0]["expression"][0], "referral");
    let mut with_referral = crate::fhir::hold_body(&general, referred);
    with_referral["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "referral", "valueString": "chaoyang-community-0042" }));
    let free_string = app
        .post(
            "/Appointment/$hold",
            &with_referral,
            &[("Idempotency-Key", "hold-r2"), ("Jyt-Channel", "referral")],
        )
        .await;
    assert_eq!(
        (free_string.status, free_string.code()),
        (400, "INVALID_FIELD"),
        "no longer a referral"
    );
    assert_eq!(free_string.body["issue"][0]["expression"][0], "referral");
    let issued = cardiology_referral(&app.state, referred).await;
    let mut with_referral = crate::fhir::hold_body(&general, referred);
    with_referral["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "referral", "valueString": issued.to_string() }));
    let referral = app
        .post(
            "/Appointment/$hold",
            &with_referral,
            &[("Idempotency-Key", "hold-r2"), ("Jyt-Channel", "referral")],
        )
        .await;
    assert_eq!(referral.status, 201, "{}", referral.text);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM bookings WHERE referral_id = '{issued}'"
        ))
        .await,
        1
    );
    let long_reference = app.pay(&id, &"号".repeat(30)).await;
    assert_eq!(
        long_reference.body["issue"][0]["expression"][0],
        "paymentReference"
    );

    // $book: paid once, the same payment again is harmless.
    let booked = app.pay(&id, "tx-77").await;
    assert_eq!(booked.status, 200, "{}", booked.text);
    assert_eq!(booked.body["status"], "booked");
    assert!(booked.body.get("extension").is_none(), "no deadline once paid");
    let twice = app.pay(&id, "tx-77").await;
    assert_eq!(twice.status, 200);
    assert_eq!(twice.body, booked.body);
    let other = app.pay(&id, "tx-78").await;
    assert_eq!((other.status, other.code()), (409, "ALREADY_CONFIRMED"));
    // An expired hold answers HOLD_EXPIRED.
    let late_payer = app
        .hold(
            &app.slot(sched::PEDS_EXPERT_AM, 0),
            Uuid::new_v4(),
            "hold-4",
            "app",
        )
        .await;
    app.clock.advance(TimeDelta::minutes(11));
    let expired = app.pay(late_payer.body["id"].as_str().unwrap(), "tx-79").await;
    assert_eq!((expired.status, expired.code()), (409, "HOLD_EXPIRED"));
    assert_eq!(expired.body["issue"][0]["code"], "expired");
    let unknown = app.pay(&format!("{HOSPITAL}-{}", Uuid::new_v4()), "tx-80").await;
    assert_eq!((unknown.status, unknown.code()), (404, "BOOKING_NOT_FOUND"));
    let bad_method = app
        .post(
            "/Appointment/$book",
            &find_body(json!([
                { "name": "appointment", "valueReference": { "reference": format!("Appointment/{id}") } },
                { "name": "paymentReference", "valueString": "tx-81" },
                { "name": "paymentMethod", "valueCode": "cash" },
            ])),
            &[],
        )
        .await;
    assert_eq!(bad_method.body["issue"][0]["expression"][0], "paymentMethod");
    assert_valid(vec![held.body, booked.body, late.body, no_key.body, expired.body]).await;
}

/// `$book` with the payment that booked one Appointment cannot book
/// another: 409 `PAYMENT_REFERENCE_USED`, an OperationOutcome `conflict`
/// whose expression names `paymentReference`, the other Appointment not
/// named, the second still pending.
#[tokio::test]
async fn book_with_a_payment_reference_that_booked_another_appointment_is_a_conflict_naming_it() {
    let app = FhirApp::start(beijing(3, 9, 0), 2, &[]).await;
    let slot = app.slot(sched::CARDIO_EXPERT_AM, 0);
    let first = app.hold(&slot, Uuid::new_v4(), "hold-first", "wechat").await;
    let second = app.hold(&slot, Uuid::new_v4(), "hold-second", "wechat").await;
    assert_eq!((first.status, second.status), (201, 201), "{}", second.text);
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    let second_id = second.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.pay(&first_id, "tx-once").await.status, 200);

    let reused = app.pay(&second_id, "tx-once").await;
    assert_eq!(
        (reused.status, reused.code()),
        (409, "PAYMENT_REFERENCE_USED"),
        "{}",
        reused.text
    );
    assert_eq!(reused.body["issue"][0]["code"], "conflict");
    assert_eq!(reused.body["issue"][0]["expression"][0], "paymentReference");
    assert!(
        !reused.text.contains(&first_id),
        "the other Appointment is not named"
    );
    let own = app.pay(&second_id, "tx-second").await;
    assert_eq!(own.status, 200, "still pending, then paid by its own reference");
    assert_eq!(own.body["status"], "booked");
}

struct Tags {
    manifest: String,
    slot: String,
}

async fn tags(app: &FhirApp) -> Tags {
    let manifest = app.get("/$bulk-publish").await;
    assert_eq!(manifest.status, 200, "{}", manifest.text);
    let slot = app.get("/bulk/Slot.ndjson").await;
    assert_eq!(slot.status, 200);
    Tags {
        manifest: manifest.header("etag").unwrap().to_owned(),
        slot: slot.header("etag").unwrap().to_owned(),
    }
}

async fn status_in_file(app: &FhirApp, slot: &SlotRef) -> String {
    let file = app.get("/bulk/Slot.ndjson").await;
    file.text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|s| s["id"] == slot.to_string())
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn changed(app: &FhirApp, before: &Tags, what: &str) -> Tags {
    let after = tags(app).await;
    assert_ne!(after.manifest, before.manifest, "manifest after {what}");
    assert_ne!(after.slot, before.slot, "Slot.ndjson after {what}");
    let stale = app
        .http
        .get(format!("{}/bulk/Slot.ndjson", app.base))
        .header("If-None-Match", &before.slot)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200, "an old tag after {what}");
    after
}

#[tokio::test]
async fn the_bulk_feed_is_cached_by_etag_until_a_slot_would_change() {
    let public = "https://fhir.jyt.example/hospitals/fhirh/fhir";
    let app = FhirApp::start(beijing(3, 9, 0), 1, &[("FHIR__PUBLIC_BASE_URL", public)]).await;

    let manifest = app.get("/$bulk-publish").await;
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.header("cache-control"), Some("max-age=60"));
    assert_eq!(manifest.body["request"], format!("{public}/$bulk-publish"));
    assert_eq!(manifest.body["error"], json!([]));
    let outputs: Vec<(String, String)> = manifest.body["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().to_owned(),
                o["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outputs,
        ["Location", "Schedule", "Slot"].map(|t| (t.to_owned(), format!("{public}/bulk/{t}.ndjson")))
    );
    assert!(
        manifest.body["transactionTime"]
            .as_str()
            .unwrap()
            .ends_with("+08:00")
    );

    // Nothing changed: the same tags (strong: the same bytes), and 304
    // without a body for each.
    let first = tags(&app).await;
    let again = tags(&app).await;
    assert_eq!((&first.manifest, &first.slot), (&again.manifest, &again.slot));
    for path in ["/$bulk-publish", "/bulk/Slot.ndjson", "/bulk/Schedule.ndjson"] {
        assert_eq!(app.get(path).await.text, app.get(path).await.text, "{path}");
    }
    for (path, tag) in [
        ("/$bulk-publish", first.manifest.clone()),
        ("/bulk/Slot.ndjson", first.slot.clone()),
        ("/bulk/Location.ndjson", String::new()),
        ("/bulk/Schedule.ndjson", String::new()),
    ] {
        let tag = if tag.is_empty() {
            app.get(path).await.header("etag").unwrap().to_owned()
        } else {
            tag
        };
        assert!(tag.starts_with('"') && !tag.starts_with("W/"), "strong: {tag}");
        let res = app
            .http
            .get(format!("{}{path}", app.base))
            .header("If-None-Match", format!("\"other\", {tag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 304, "{path}");
        assert_eq!(res.headers()["etag"].to_str().unwrap(), tag);
        assert_eq!(res.headers()["cache-control"], "max-age=60");
        assert!(res.bytes().await.unwrap().is_empty());
    }
    let file = app.get("/bulk/Slot.ndjson").await;
    assert_eq!(file.text.lines().count(), 156);
    assert!(file.text.contains("booking-deep-link"));

    // A hold.
    let slot = app.slot(sched::CARDIO_EXPERT_AM, 0);
    assert_eq!(status_in_file(&app, &slot).await, "free");
    let patient = Uuid::new_v4();
    let held = app.hold(&slot, patient, "etag-1", "wechat").await;
    assert_eq!(held.status, 201);
    let after_hold = changed(&app, &first, "a hold").await;
    assert_eq!(status_in_file(&app, &slot).await, "busy");
    // Its cancellation.
    let booking = held.body["id"].as_str().unwrap().parse().unwrap();
    lifecycle::cancel(&app.state, &booking, &CancelRequest { patient_id: patient })
        .await
        .unwrap();
    let after_cancel = changed(&app, &after_hold, "a cancellation").await;
    assert_eq!(status_in_file(&app, &slot).await, "free");
    // An expiry.
    let held = app.hold(&slot, Uuid::new_v4(), "etag-2", "wechat").await;
    assert_eq!(held.status, 201);
    let before_expiry = changed(&app, &after_cancel, "a second hold").await;
    app.clock.advance(TimeDelta::minutes(11));
    jyt_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the hold to expire",
        || async {
            lifecycle::expire_holds(&app.state).await.unwrap();
            (app.count("SELECT count(*) FROM bookings WHERE status = 'expired'")
                .await
                == 1)
                .then_some(())
        },
    )
    .await;
    let after_expiry = changed(&app, &before_expiry, "an expiry").await;
    assert_eq!(status_in_file(&app, &slot).await, "free");
    // 加号 and a publish by the hospital.
    capacity::set_segment_capacity(
        &app.state,
        app.schedules[sched::CT_AM].segment_ids[0],
        &CapacityChange { capacity: 3 },
    )
    .await
    .unwrap();
    let after_capacity = changed(&app, &after_expiry, "added capacity").await;
    let date = visit_date();
    let request: PublishRequest = serde_json::from_value(json!({
        "schedules": [{
            "id": "his-ent-0930", "department": { "id": "ent", "name": "耳鼻喉科 ENT" },
            "doctor": { "id": "doc-ent-7", "name": "赵医生", "title": "主治医师" },
            "date": date, "session": "morning", "level": "general", "fee_fen": 500,
            "segments": [{ "starts_at": format!("{date}T09:30:00+08:00"), "ends_at": format!("{date}T10:00:00+08:00"), "capacity": 4 }]
        }]
    }))
    .unwrap();
    publish::publish(&app.state, &request).await.unwrap();
    let after_publish = changed(&app, &after_capacity, "a publish").await;
    assert_eq!(app.get("/bulk/Slot.ndjson").await.text.lines().count(), 157);
    // The release of the next week's clinics, without any write.
    let later = SlotRef::new(app.state.hospital.clone(), app.later[sched::CT_AM].segment_ids[0]);
    assert_eq!(status_in_file(&app, &later).await, "busy");
    app.clock.set(jyt_domain::time::at(
        visit_date(),
        NaiveTime::from_hms_opt(8, 30, 0).unwrap(),
    ));
    changed(&app, &after_publish, "a release").await;
    assert_eq!(status_in_file(&app, &later).await, "free");
}

/// A community centre's referral of `patient` to this hospital's cardiology.
async fn cardiology_referral(state: &slot_inventory::AppState, patient: Uuid) -> Uuid {
    let req = slot_inventory::booking::referral::IssueRequest {
        patient_id: patient,
        issuing_hospital: "chaoyang-community".to_owned(),
        issuing_team: "team-1".to_owned(),
        issuing_doctor: "gp-1".to_owned(),
        department: "cardio".to_owned(),
        diagnosis_code: "I20.9".to_owned(),
        reason: "angina".to_owned(),
        expires_at: None,
    };
    let (issued, _) = slot_inventory::booking::referral::issue(state, &req, "referral-1")
        .await
        .unwrap();
    issued.referral_id
}
