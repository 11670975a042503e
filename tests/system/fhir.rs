//! FHIR R4 through the gateway, on real hospitals, card-issuing,
//! PostgreSQL and Redis: channel reads and the booking operations under
//! the same rules as `/v1/bookings`, hospitals' keys on their own FHIR data
//! only, `$find` across hospitals with one down, and the public city-wide
//! SMART Scheduling Links feed. Every FHIR body the gateway answers is
//! checked by `tests/fhir-validator` (FHIR.js and the HL7 R4 JSON schema).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failure is a failed test"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use jyt_domain::SlotRef;
use jyt_system_tests::{TEST_APP_SECRET, TestCity, TestPatient, signed, visit_day};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// The gateway's `fhir.public_base_url` in these tests: manifest URLs and
/// the hospitals' `fullUrl`s must use it, not anyone's internal address.
const PUBLIC_BASE: &str = "https://fhir.city.test";

async fn city() -> TestCity {
    let mut env: Vec<(String, String)> = vec![
        ("FHIR__PUBLIC_BASE_URL".into(), PUBLIC_BASE.into()),
        ("FHIR__MANIFEST_CACHE_SECONDS".into(), "1".into()),
    ];
    for (key, hospital) in [("pumchk1", "pumch"), ("bjhk1", "bjh")] {
        let k = key.to_uppercase();
        env.push((format!("HOSPITAL_KEYS__{k}__HOSPITAL"), hospital.into()));
        env.push((format!("HOSPITAL_KEYS__{k}__SECRET"), TEST_APP_SECRET.into()));
    }
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestCity::spawn_with_dead(&["pumch", "bjh"], &["deadh"], &extra).await
}

fn validator_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fhir-validator")
}

/// Install the validator's packages once per test process when missing.
async fn validator_ready() {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            if !validator_dir().join("node_modules").exists() {
                let status = tokio::process::Command::new("bash")
                    .arg("setup.sh")
                    .current_dir(validator_dir())
                    .status()
                    .await
                    .expect("running tests/fhir-validator/setup.sh");
                assert!(status.success(), "tests/fhir-validator/setup.sh failed");
            }
        })
        .await;
}

/// Every resource must pass `node tests/fhir-validator/validate.js`.
pub(crate) async fn validate(resources: &[Value]) {
    assert!(!resources.is_empty(), "nothing to validate");
    validator_ready().await;
    let mut ndjson = String::new();
    for r in resources {
        ndjson.push_str(&r.to_string());
        ndjson.push('\n');
    }
    let mut child = tokio::process::Command::new("node")
        .arg("validate.js")
        .current_dir(validator_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(ndjson.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "FHIR validation failed:\n{}\n{}\ninput:\n{ndjson}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

thread_local! {
    /// Every FHIR body this test's gateway answered, validated together at
    /// the end (one validator run: it takes seconds to load). A
    /// `#[tokio::test]` runs on its own thread, so this is per test.
    static SEEN: std::cell::RefCell<Vec<Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Validate every FHIR body the test saw, plus `more`.
async fn validate_seen(more: Vec<Value>) {
    let mut all = SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()));
    all.extend(more);
    validate(&all).await;
}

/// A FHIR answer: its status and body, checked for its content type and
/// kept for validation.
async fn fhir(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = res.json().await.unwrap();
    assert!(ct.starts_with("application/fhir+json"), "{status} {ct}: {body}");
    SEEN.with(|s| s.borrow_mut().push(body.clone()));
    (status, body)
}

/// An error answer: an OperationOutcome with our machine code.
async fn outcome(res: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, body) = fhir(res).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let coding = &body["issue"][0]["details"]["coding"][0];
    assert_eq!(coding["system"], "urn:jyt:error-code", "{body}");
    assert_eq!(coding["code"], code, "{body}");
    body
}

async fn get(city: &TestCity, app: &str, path: &str) -> reqwest::Response {
    city.signed(app, Method::GET, path, None).send().await.unwrap()
}

async fn post(city: &TestCity, app: &str, path: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut req = city.signed(app, Method::POST, path, Some(body));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

fn by_card(p: &TestPatient) -> Value {
    json!({ "name": "patient", "valueIdentifier": { "system": "urn:jyt:card-number", "value": p.card_number } })
}

fn hold_params(slot: &SlotRef, patient: Value) -> Value {
    json!({ "resourceType": "Parameters", "parameter": [
        { "name": "slot", "valueReference": { "reference": format!("Slot/{slot}") } },
        patient,
    ]})
}

fn book_params(appointment: &str, method: &str, patient: Value) -> Value {
    json!({ "resourceType": "Parameters", "parameter": [
        { "name": "appointment", "valueReference": { "reference": format!("Appointment/{appointment}") } },
        { "name": "payment-method", "valueCode": method },
        patient,
    ]})
}

async fn top_up(city: &TestCity, p: &TestPatient, amount: i64) {
    let res = city
        .cards
        .http
        .post(format!("{}/v1/cards/{}/top-ups", city.cards.base_url, p.card_id))
        .json(&json!({ "amount_fen": amount, "channel": "kiosk", "channel_ref": uuid::Uuid::new_v4().to_string() }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "top-up: {}", res.status());
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn channels_read_hold_and_book_through_the_gateway_under_the_booking_rules() {
    let city = city().await;
    let pumch = city.hospital(0).seed_visit_day(4).await;
    let bjh = city.hospital(1).seed_visit_day(4).await;

    // Schedules of a hospital: `actor` routes the search and is required.
    let (status, schedules) = fhir(get(&city, "wechat", "/fhir/Schedule?actor=Location/pumch").await).await;
    assert_eq!(status, 200, "{schedules}");
    assert_eq!(schedules["type"], "searchset");
    let first = &schedules["entry"][0];
    let schedule_id = first["resource"]["id"].as_str().unwrap().to_owned();
    assert!(schedule_id.starts_with("pumch-"), "{schedule_id}");
    // The hospital's links point at the city's public address.
    assert_eq!(
        first["fullUrl"],
        format!("{PUBLIC_BASE}/fhir/Schedule/{schedule_id}"),
        "{first}"
    );
    let body = outcome(
        get(&city, "wechat", "/fhir/Schedule?date=2026-12-01").await,
        400,
        "INVALID_FIELD",
    )
    .await;
    assert_eq!(body["issue"][0]["expression"][0], "actor", "{body}");

    // Slots of a schedule: `schedule` routes the search and is required.
    let (status, slots) = fhir(
        get(
            &city,
            "wechat",
            &format!("/fhir/Slot?schedule=Schedule/{schedule_id}&status=free"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{slots}");
    assert!(slots["total"].as_i64().unwrap() > 0, "{slots}");
    let body = outcome(
        get(&city, "wechat", "/fhir/Slot?status=free").await,
        400,
        "INVALID_FIELD",
    )
    .await;
    assert_eq!(body["issue"][0]["expression"][0], "schedule", "{body}");

    // Reads by id go to the id's hospital.
    let (status, slot) = fhir(get(&city, "kiosk", &format!("/fhir/Slot/{}", bjh[0])).await).await;
    assert_eq!(
        (status, slot["resourceType"].as_str()),
        (200, Some("Slot")),
        "{slot}"
    );
    let (status, schedule) = fhir(get(&city, "kiosk", &format!("/fhir/Schedule/{schedule_id}")).await).await;
    assert_eq!(status, 200, "{schedule}");
    outcome(
        get(
            &city,
            "kiosk",
            &format!("/fhir/Slot/zzzh-{}", uuid::Uuid::new_v4()),
        )
        .await,
        404,
        "HOSPITAL_NOT_FOUND",
    )
    .await;

    // The gateway's own refusals on FHIR paths are OperationOutcomes too.
    let unsigned = city
        .http
        .get(format!("{}/fhir/Slot/{}", city.gateway_url, pumch[0]))
        .send()
        .await
        .unwrap();
    outcome(unsigned, 401, "UNKNOWN_APP").await;

    // $hold: Idempotency-Key required, then one booking however often it is sent.
    let patient = city.cards.register().await;
    let slot = &pumch[0];
    let params = hold_params(slot, by_card(&patient));
    let body = outcome(
        post(&city, "wechat", "/fhir/Appointment/$hold", &params, None).await,
        400,
        "MISSING_HEADER",
    )
    .await;
    assert_eq!(body["issue"][0]["expression"][0], "Idempotency-Key", "{body}");
    let first = post(
        &city,
        "wechat",
        "/fhir/Appointment/$hold",
        &params,
        Some("fhir-hold-1"),
    )
    .await;
    let (status, held) = fhir(first).await;
    assert_eq!(status, 201, "{held}");
    assert_eq!(held["resourceType"], "Appointment");
    assert_eq!(
        held["status"], "pending",
        "a fee-bearing clinic is held until paid: {held}"
    );
    let appointment = held["id"].as_str().unwrap().to_owned();
    let again = post(
        &city,
        "wechat",
        "/fhir/Appointment/$hold",
        &params,
        Some("fhir-hold-1"),
    )
    .await;
    assert_eq!(again.headers().get("idempotency-replayed").unwrap(), "true");
    let (status, replayed) = fhir(again).await;
    assert_eq!(
        (status, replayed["id"].as_str()),
        (201, Some(appointment.as_str()))
    );
    // Exactly once in PostgreSQL and in Redis.
    let h = city.hospital(0);
    assert_eq!(h.live_bookings(slot).await, (1, 1));
    let (_, holders) = h.redis_segment(slot).await;
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert!(
        holders.contains_key(&patient.person_id.to_string()),
        "{holders:?}"
    );
    assert_eq!(h.pg_holders(slot).await.len(), 1);

    // Only the app that made the booking reads it.
    outcome(
        get(&city, "kiosk", &format!("/fhir/Appointment/{appointment}")).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    let (status, read) = fhir(get(&city, "wechat", &format!("/fhir/Appointment/{appointment}")).await).await;
    assert_eq!(
        (status, read["status"].as_str()),
        (200, Some("pending")),
        "{read}"
    );

    // A barred patient is refused before the hospital is asked.
    let barred = city.cards.register().await;
    city.cards
        .bar(barred.person_id, Utc::now() + chrono::Duration::days(30))
        .await;
    let body = outcome(
        post(
            &city,
            "wechat",
            "/fhir/Appointment/$hold",
            &hold_params(&pumch[1], by_card(&barred)),
            Some("fhir-barred"),
        )
        .await,
        403,
        "PATIENT_BARRED",
    )
    .await;
    assert_eq!(body["issue"][0]["code"], "forbidden");
    assert_eq!(h.live_bookings(&pumch[1]).await, (0, 0));

    // An e-card token names the patient too; a family member is booked as
    // `subject`, a stranger is not.
    let holder = city.cards.register().await;
    let member = city.cards.register().await;
    let stranger = city.cards.register().await;
    city.cards.bind_family(holder.person_id, member.person_id).await;
    let token = city.cards.ecard_token(&holder).await;
    let by_token =
        json!({ "name": "patient", "valueIdentifier": { "system": "urn:jyt:ecard-token", "value": token } });
    let mut family = hold_params(&bjh[0], by_token.clone());
    family["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "subject", "valueReference": { "reference": format!("Patient/{}", member.person_id) } }));
    let (status, for_member) = fhir(
        post(
            &city,
            "kiosk",
            "/fhir/Appointment/$hold",
            &family,
            Some("fhir-family"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{for_member}");
    assert!(
        for_member.to_string().contains(&member.person_id.to_string()),
        "{for_member}"
    );
    let mut not_family = hold_params(&bjh[1], by_token);
    not_family["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "subject", "valueReference": { "reference": format!("Patient/{}", stranger.person_id) } }));
    outcome(
        post(
            &city,
            "kiosk",
            "/fhir/Appointment/$hold",
            &not_family,
            Some("fhir-stranger"),
        )
        .await,
        403,
        "NOT_FAMILY_MEMBER",
    )
    .await;
    let body = outcome(
        post(
            &city,
            "kiosk",
            "/fhir/Appointment/$hold",
            &hold_params(
                &bjh[1],
                json!({ "name": "patient", "valueIdentifier": { "system": "urn:other", "value": "1" } }),
            ),
            Some("fhir-bad-patient"),
        )
        .await,
        400,
        "INVALID_FIELD",
    )
    .await;
    assert_eq!(body["issue"][0]["expression"][0], "patient", "{body}");

    // $book: channel-paid methods go through the payment notification;
    // the prepaid card is debited, confirmed, and answered as `booked`.
    outcome(
        post(
            &city,
            "wechat",
            "/fhir/Appointment/$book",
            &book_params(&appointment, "self-pay", by_card(&patient)),
            None,
        )
        .await,
        422,
        "PAYMENT_CALLBACK_REQUIRED",
    )
    .await;
    let prepaid = book_params(&appointment, "prepaid-card", by_card(&patient));
    // Another app: only with the patient's own card (their consent), not
    // with someone else's.
    let not_theirs = book_params(&appointment, "prepaid-card", by_card(&stranger));
    outcome(
        post(&city, "kiosk", "/fhir/Appointment/$book", &not_theirs, None).await,
        403,
        "NOT_YOUR_BOOKING",
    )
    .await;
    outcome(
        post(&city, "kiosk", "/fhir/Appointment/$book", &prepaid, None).await,
        409,
        "INSUFFICIENT_BALANCE",
    )
    .await;
    outcome(
        post(&city, "wechat", "/fhir/Appointment/$book", &prepaid, None).await,
        409,
        "INSUFFICIENT_BALANCE",
    )
    .await;
    top_up(&city, &patient, 100_000).await;
    let (status, booked) = fhir(post(&city, "wechat", "/fhir/Appointment/$book", &prepaid, None).await).await;
    assert_eq!(status, 200, "{booked}");
    assert_eq!(
        (booked["id"].as_str(), booked["status"].as_str()),
        (Some(appointment.as_str()), Some("booked"))
    );
    // Delivered twice: paid once, the same answer.
    let (status, twice) = fhir(post(&city, "wechat", "/fhir/Appointment/$book", &prepaid, None).await).await;
    assert_eq!(
        (status, twice["status"].as_str()),
        (200, Some("booked")),
        "{twice}"
    );

    // Hospitals' keys read their own FHIR data, and nobody else's.
    let fed = |path: &str| signed(&city.http, &city.gateway_url, "pumchk1", Method::GET, path, None).send();
    let (status, own) = fhir(
        fed(&format!("/federation/v1/fhir/Slot/{}", pumch[0]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{own}");
    let (status, own_appointment) = fhir(
        fed(&format!("/federation/v1/fhir/Appointment/{appointment}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{own_appointment}");
    let bjh_appointment = for_member["id"].as_str().unwrap();
    for path in [
        format!("/federation/v1/fhir/Slot/{}", bjh[0]),
        format!("/federation/v1/fhir/Appointment/{bjh_appointment}"),
        "/federation/v1/fhir/Location/bjh".to_owned(),
        "/federation/v1/fhir/Schedule?actor=Location/bjh".to_owned(),
        format!("/federation/v1/fhir/Slot?schedule=bjh-{}", uuid::Uuid::new_v4()),
    ] {
        outcome(fed(&path).await.unwrap(), 403, "HOSPITAL_FORBIDDEN").await;
    }
    let own_feed = fed("/federation/v1/fhir/bulk/Slot.ndjson").await.unwrap();
    assert_eq!(own_feed.status(), 200);
    let lines = own_feed.text().await.unwrap();
    assert!(
        lines.lines().all(|l| l.contains("\"pumch-")),
        "only pumch's slots"
    );
    // A channel app's key is no hospital key.
    let res = signed(
        &city.http,
        &city.gateway_url,
        "wechat",
        Method::GET,
        &format!("/federation/v1/fhir/Slot/{}", pumch[0]),
        None,
    )
    .send()
    .await
    .unwrap();
    outcome(res, 401, "UNKNOWN_APP").await;
    validate_seen(Vec::new()).await;
}

#[tokio::test]
async fn find_asks_every_hospital_at_once_returns_only_free_slots_and_reports_a_dead_one() {
    let city = city().await;
    let pumch = city.hospital(0).seed_visit_day(1).await;
    let bjh = city.hospital(1).seed_visit_day(1).await;
    // Fill one segment at each hospital: neither may be proposed.
    for (i, slot) in [&pumch[0], &bjh[0]].into_iter().enumerate() {
        let p = city.cards.register().await;
        let res = post(
            &city,
            "app",
            "/fhir/Appointment/$hold",
            &hold_params(slot, by_card(&p)),
            Some(&format!("fill-{i}")),
        )
        .await;
        assert_eq!(res.status(), 201);
    }
    let date = visit_day();
    let find = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "start", "valueDateTime": format!("{date}T00:00:00+08:00") },
        { "name": "end", "valueDateTime": format!("{date}T23:59:59+08:00") },
    ]});
    let (status, bundle) = fhir(post(&city, "wechat", "/fhir/Appointment/$find", &find, None).await).await;
    assert_eq!(status, 200, "{bundle}");
    let entries = bundle["entry"].as_array().unwrap();
    let (outcomes, proposals): (Vec<&Value>, Vec<&Value>) =
        entries.iter().partition(|e| e["search"]["mode"] == "outcome");
    assert_eq!(bundle["total"].as_u64(), Some(proposals.len() as u64));
    let slots: Vec<&str> = proposals
        .iter()
        .map(|e| {
            assert_eq!(e["resource"]["status"], "proposed", "{e}");
            e["resource"]["slot"][0]["reference"].as_str().unwrap()
        })
        .collect();
    assert!(slots.iter().any(|s| s.starts_with("Slot/pumch-")));
    assert!(slots.iter().any(|s| s.starts_with("Slot/bjh-")));
    for full in [&pumch[0], &bjh[0]] {
        assert!(
            !slots.contains(&format!("Slot/{full}").as_str()),
            "a full slot was proposed"
        );
    }
    // Every proposal is free at its hospital right now.
    for s in slots.iter().step_by(17) {
        let (_, slot) = fhir(get(&city, "wechat", &format!("/fhir/{s}")).await).await;
        assert_eq!(slot["status"], "free", "{slot}");
    }
    // The dead hospital is reported, not fatal.
    assert_eq!(outcomes.len(), 1, "{bundle}");
    let issue = &outcomes[0]["resource"]["issue"][0];
    assert_eq!(issue["details"]["coding"][0]["code"], "HOSPITAL_UNAVAILABLE");
    assert!(
        issue["details"]["text"].as_str().unwrap().contains("deadh"),
        "{issue}"
    );

    // `location` asks only those hospitals.
    let mut only_bjh = find.clone();
    only_bjh["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "location", "valueReference": { "reference": "Location/bjh" } }));
    let (status, bundle) =
        fhir(post(&city, "wechat", "/fhir/Appointment/$find", &only_bjh, None).await).await;
    assert_eq!(status, 200, "{bundle}");
    let entries = bundle["entry"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["resource"]["slot"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Slot/bjh-")),
        "{bundle}"
    );

    // Bad parameters are the request's fault, named.
    let body = outcome(
        post(
            &city,
            "wechat",
            "/fhir/Appointment/$find",
            &json!({ "resourceType": "Parameters", "parameter": [] }),
            None,
        )
        .await,
        400,
        "INVALID_FIELD",
    )
    .await;
    assert_eq!(body["issue"][0]["expression"][0], "start", "{body}");
    let mut unknown = find.clone();
    unknown["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "location", "valueReference": { "reference": "Location/zzzh" } }));
    outcome(
        post(&city, "wechat", "/fhir/Appointment/$find", &unknown, None).await,
        404,
        "HOSPITAL_NOT_FOUND",
    )
    .await;
    validate_seen(Vec::new()).await;
}

/// The public manifest (no signature) and its ETag.
async fn manifest(city: &TestCity, if_none_match: Option<&str>) -> reqwest::Response {
    let mut req = city.http.get(format!("{}/fhir/$bulk-publish", city.gateway_url));
    if let Some(tag) = if_none_match {
        req = req.header("If-None-Match", tag);
    }
    req.send().await.unwrap()
}

fn etag(res: &reqwest::Response) -> String {
    res.headers()
        .get("etag")
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_city_bulk_feed_lists_every_hospital_is_valid_fhir_and_cheap_to_poll() {
    let city = city().await;
    let pumch = city.hospital(0).seed_visit_day(1).await;
    city.hospital(1).seed_visit_day(1).await;

    let res = manifest(&city, None).await;
    assert_eq!(res.status(), 200);
    let tag = etag(&res);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["request"], format!("{PUBLIC_BASE}/fhir/$bulk-publish"));
    let mut urls: Vec<String> = doc["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let url = o["url"].as_str().unwrap().to_owned();
            assert_eq!(
                url,
                format!("{PUBLIC_BASE}/fhir/bulk/{}", url.rsplit_once("/bulk/").unwrap().1)
            );
            assert!(
                url.ends_with(&format!("/{}.ndjson", o["type"].as_str().unwrap())),
                "{o}"
            );
            url
        })
        .collect();
    urls.sort();
    let expected: Vec<String> = ["bjh", "pumch"]
        .iter()
        .flat_map(|h| {
            ["Location", "Schedule", "Slot"].map(|t| format!("{PUBLIC_BASE}/fhir/bulk/{h}/{t}.ndjson"))
        })
        .collect();
    assert_eq!(urls, expected, "{doc}");
    // The hospital that is down is listed in `error`, with why.
    assert_eq!(
        doc["error"],
        json!([{ "type": "OperationOutcome", "url": format!("{PUBLIC_BASE}/fhir/bulk/deadh/OperationOutcome.ndjson") }])
    );

    // Every line of every file is valid FHIR, and each file answers 304
    // to its own ETag.
    let mut lines = Vec::new();
    for url in urls
        .iter()
        .chain([&format!("{PUBLIC_BASE}/fhir/bulk/deadh/OperationOutcome.ndjson")])
    {
        let at = url.replace(PUBLIC_BASE, &city.gateway_url);
        let res = city.http.get(&at).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/fhir+ndjson"
        );
        let file_tag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        let text = res.text().await.unwrap();
        assert!(!text.is_empty(), "{url} is empty");
        for line in text.lines() {
            lines.push(serde_json::from_str::<Value>(line).unwrap());
        }
        if let Some(file_tag) = file_tag {
            let res = city
                .http
                .get(&at)
                .header("If-None-Match", &file_tag)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 304, "{url}");
        }
    }
    assert!(lines.iter().any(|l| l["resourceType"] == "Slot"));
    assert!(lines.iter().any(|l| l["resourceType"] == "OperationOutcome"));

    // Polling with the current ETag is a 304.
    let res = manifest(&city, Some(&tag)).await;
    assert_eq!(res.status(), 304);
    assert_eq!(etag(&res), tag);

    // A booking changes the feed, so the ETag.
    let p = city.cards.register().await;
    let res = post(
        &city,
        "wechat",
        "/fhir/Appointment/$hold",
        &hold_params(&pumch[0], by_card(&p)),
        Some("feed-hold"),
    )
    .await;
    assert_eq!(res.status(), 201);
    let changed = jyt_system_tests::eventually(
        Duration::from_secs(20),
        "a new manifest ETag after a booking",
        || async {
            let res = manifest(&city, Some(&tag)).await;
            match res.status().as_u16() {
                200 => Some(etag(&res)),
                304 => None,
                other => panic!("manifest answered {other}"),
            }
        },
    )
    .await;
    assert_ne!(changed, tag);

    // FHIR clients read the city's CapabilityStatement without credentials.
    let res = city
        .http
        .get(format!("{}/fhir/metadata", city.gateway_url))
        .send()
        .await
        .unwrap();
    let (status, capabilities) = fhir(res).await;
    assert_eq!(status, 200);
    assert_eq!(capabilities["resourceType"], "CapabilityStatement");
    assert_eq!(
        capabilities["implementation"]["url"],
        format!("{PUBLIC_BASE}/fhir")
    );

    // Unknown files are refused as OperationOutcomes.
    let res = city
        .http
        .get(format!("{}/fhir/bulk/pumch/Patient.ndjson", city.gateway_url))
        .send()
        .await
        .unwrap();
    outcome(res, 400, "INVALID_FIELD").await;

    // The OpenAPI document lists the FHIR routes.
    let doc: Value = city
        .http
        .get(format!("{}/openapi.json", city.gateway_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/fhir/Appointment/$hold",
        "/fhir/Appointment/$find",
        "/fhir/$bulk-publish",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    validate_seen(lines).await;
}

#[tokio::test]
async fn the_public_feed_keeps_the_per_address_rate_limit() {
    // No hospital answers here: the manifest lists it in `error` alone.
    let gateway = jyt_system_tests::spawn_gateway_with(
        &[jyt_system_tests::Route {
            id: "deadh",
            base_url: "http://127.0.0.1:9",
            district: "dongcheng",
            level: "tertiary",
        }],
        &jyt_testkit::fresh_redis_prefix(),
        "http://127.0.0.1:9",
        1000,
        &[
            ("LIMITS__ADDRESS_PER_MINUTE", "1"),
            ("LIMITS__ADDRESS_BURST", "2"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let poll = |address: &'static str| {
        http.get(format!("{gateway}/fhir/$bulk-publish"))
            .header("X-Client-Address", address)
            .send()
    };
    for _ in 0..2 {
        let res = poll("203.0.113.7").await.unwrap();
        assert_eq!(res.status(), 200);
        let doc: Value = res.json().await.unwrap();
        assert_eq!(doc["output"], json!([]));
        assert_eq!(doc["error"].as_array().unwrap().len(), 1, "{doc}");
    }
    let res = poll("203.0.113.7").await.unwrap();
    assert!(res.headers().get("retry-after").is_some());
    let body = outcome(res, 429, "RATE_LIMITED").await;
    assert_eq!(body["issue"][0]["code"], "throttled");
    // Another address has its own bucket.
    assert_eq!(poll("203.0.113.8").await.unwrap().status(), 200);
    validate_seen(Vec::new()).await;
}
