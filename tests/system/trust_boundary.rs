//! The trust boundary, tried as an attacker would (issue "Trust boundary"):
//! - no spelling of a signed route (percent-encoded letters or digits, any
//!   hex case, doubled slashes, trailing slashes, dot segments, encoded
//!   slashes, backslashes) is answered without a signature;
//! - slot-inventory and card-issuing answer only internal tokens for
//!   themselves, whatever the network admits;
//! - money moves only on the channel's signed notification, relayed by the
//!   gateway; every forged movement leaves the ledger as it was;
//! - `X-Client-Address` is believed only from a trusted proxy.
//!
//! Requests go over a raw TCP socket so that the path reaches the server
//! exactly as written: an HTTP client library would normalise it first.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure is a failed test"
)]

use std::time::Duration;

use chrono::Utc;
use jyt_signing::internal;
use jyt_system_tests::{ALL_SEATS_COMMON, TEST_APP_SECRET, TestCity, TestHospital, TestPatient, problem};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// What the server answered a raw request: status and body.
struct Raw {
    status: u16,
    body: String,
}

/// Send `method target` exactly as given, with `headers`, over a new connection.
async fn raw(base: &str, method: &str, target: &str, headers: &[(String, String)], body: &[u8]) -> Raw {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Raw { status, body }
}

/// The signed headers for `target` as sent (the signature covers the raw path).
fn signed_headers(channel: &str, method: &str, target: &str, body: &[u8]) -> Vec<(String, String)> {
    let h = jyt_signing::channel::sign_request(
        channel,
        TEST_APP_SECRET.as_bytes(),
        method,
        target,
        body,
        Utc::now().timestamp(),
        &jyt_signing::channel::new_nonce(),
    );
    h.pairs()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Spellings of `path` (no query) that are not canonical, each with a name.
fn spellings(path: &str) -> Vec<(&'static str, String)> {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let rest = |from: usize| segments[from..].join("/");
    let first = segments[0];
    let mut out = Vec::new();
    // Encode the first character of the first segment, in both hex cases.
    let c = first.as_bytes()[0];
    out.push(("encoded letter", format!("/%{c:02X}{}/{}", &first[1..], rest(1))));
    out.push((
        "encoded letter, lower-case hex",
        format!("/%{c:02x}{}/{}", &first[1..], rest(1)),
    ));
    // Encode a digit where there is one (`v1`), else the last letter of the last segment.
    if let Some(i) = path.find(|ch: char| ch.is_ascii_digit()) {
        let d = path.as_bytes()[i];
        out.push((
            "encoded digit",
            format!("{}%{d:02X}{}", &path[..i], &path[i + 1..]),
        ));
    }
    let last = path.len() - 1;
    let l = path.as_bytes()[last];
    if l.is_ascii_alphanumeric() {
        out.push(("encoded last character", format!("{}%{l:02x}", &path[..last])));
    }
    out.push(("leading double slash", format!("/{path}")));
    out.push(("inner double slash", format!("/{first}//{}", rest(1))));
    out.push(("trailing slash", format!("{path}/")));
    out.push(("dot segment", format!("/{first}/./{}", rest(1))));
    out.push(("dot-dot segment", format!("/{first}/x/../{}", rest(1))));
    out.push(("encoded dot segment", format!("/{first}/%2e/{}", rest(1))));
    out.push(("encoded slash", format!("/{first}%2F{}", rest(1))));
    out.push(("encoded slash, lower case", format!("/{first}%2f{}", rest(1))));
    out.push(("backslash", format!("/{first}\\{}", rest(1))));
    out.push(("encoded percent", format!("/{first}/%25{}", rest(1))));
    out
}

/// The routes of the seed documents' systems (issue 23): surveys, 精准预约,
/// lottery entries and draws, satisfaction, family doctor teams and
/// referrals; `true` where the body is the patient's card.
fn seed_system_routes(segment: Uuid, survey: Uuid) -> Vec<(&'static str, String, bool)> {
    vec![
        // Post-visit surveys (issue 23): the survey of the booking above.
        ("GET", format!("/v1/surveys/{survey}"), false),
        ("PUT", format!("/v1/surveys/{survey}/answers"), false),
        // 精准预约 (issue 23).
        (
            "GET",
            "/v1/hospitals/tbh/doctors/doc-1/precise-profile".into(),
            false,
        ),
        (
            "POST",
            "/v1/hospitals/tbh/doctors/doc-1/precise-submissions".into(),
            true,
        ),
        ("GET", format!("/v1/precise-submissions/tbh-{segment}"), false),
        (
            "PUT",
            "/federation/v1/hospitals/tbh/doctors/doc-1/precise-profile".into(),
            false,
        ),
        (
            "GET",
            "/federation/v1/hospitals/tbh/precise-submissions".into(),
            false,
        ),
        (
            "POST",
            format!("/federation/v1/hospitals/tbh/precise-submissions/{segment}/decision"),
            false,
        ),
        ("GET", format!("/v1/draw-entries/tbh-{segment}"), false),
        ("GET", "/federation/v1/hospitals/tbh/satisfaction".into(), false),
        (
            "GET",
            "/federation/v1/hospitals/tbh/family-doctor-teams".into(),
            false,
        ),
        (
            "PUT",
            "/federation/v1/hospitals/tbh/family-doctor-teams".into(),
            false,
        ),
        ("POST", "/federation/v1/hospitals/tbh/referrals".into(), false),
        (
            "GET",
            format!("/federation/v1/hospitals/tbh/schedules/{segment}/draw"),
            false,
        ),
    ]
}

#[tokio::test]
async fn no_spelling_of_a_signed_route_is_answered_without_a_signature() {
    let city = TestCity::spawn_configured(&["tbh"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    // A paid booking: the prize of the attack this test was written for.
    let patient = city.cards.register().await;
    let res = city.book(&slots[1], patient.person_id, "wechat", "tb-1").await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    let pickup = booking["pickup_code"].as_str().unwrap().to_owned();
    if booking["status"] == "held" {
        assert_eq!(city.pay("wechat", &booking).await.status(), 200);
    }
    let id = booking["booking_id"].as_str().unwrap().to_owned();
    let segment = Uuid::now_v7();
    let survey = jyt_domain::survey::survey_id(&id);
    let card = serde_json::json!({ "card_number": patient.card_number }).to_string();
    let empty = String::new();
    let routes: Vec<(&str, String, &String)> = vec![
        ("GET", "/v1/hospitals".into(), &empty),
        ("GET", "/v1/hospitals/tbh/schedules".into(), &empty),
        ("GET", "/v1/availability".into(), &empty),
        ("POST", "/v1/bookings".into(), &card),
        ("GET", format!("/v1/bookings/{id}"), &empty),
        ("POST", format!("/v1/bookings/{id}/cancel"), &card),
        ("POST", format!("/v1/bookings/{id}/payments"), &card),
        ("POST", format!("/v1/bookings/{id}/check-in"), &card),
        // A hospital's lookup of many bookings (the notifier's): no route
        // of the gateway, under any spelling.
        ("POST", "/v1/bookings/lookup".into(), &card),
        (
            "POST",
            format!("/v1/hospitals/tbh/schedules/tbh-{segment}/waitlist"),
            &card,
        ),
        ("POST", "/v1/cards/top-ups".into(), &card),
        ("POST", "/v1/cards/ecard-token".into(), &card),
        ("POST", "/v1/cards/cancel".into(), &card),
        ("GET", format!("/v1/waitlist/tbh-{segment}"), &empty),
        ("GET", "/fhir/Slot".into(), &empty),
        ("GET", "/fhir/Schedule".into(), &empty),
        ("GET", format!("/fhir/Slot/tbh-{segment}"), &empty),
        ("GET", format!("/fhir/Appointment/{id}"), &empty),
        ("POST", "/fhir/Appointment/$find".into(), &empty),
        ("POST", "/fhir/Appointment/$hold".into(), &empty),
        ("POST", "/fhir/Appointment/$book".into(), &empty),
        ("PUT", "/federation/v1/hospitals/tbh/schedules".into(), &empty),
        ("GET", "/federation/v1/hospitals/tbh/feed".into(), &empty),
        (
            "POST",
            format!("/federation/v1/hospitals/tbh/schedules/tbh-{segment}/stop"),
            &empty,
        ),
        ("GET", "/federation/v1/fhir/Schedule".into(), &empty),
        // The operators' relay wants a gateway-ops token, never a signature.
        ("GET", "/ops/v1/notifications/dead-letters".into(), &empty),
        ("GET", "/ops/v1/appeals".into(), &empty),
        (
            "PUT",
            format!("/ops/v1/hospitals/tbh/segments/{segment}/capacity"),
            &empty,
        ),
        ("GET", "/ops/v1/hospitals/tbh/policy".into(), &empty),
        ("PUT", "/ops/v1/hospitals/tbh/policy".into(), &empty),
        (
            "GET",
            format!("/ops/v1/hospitals/tbh/schedules/{segment}/draw"),
            &empty,
        ),
    ];
    let mut routes = routes;
    routes.extend(
        seed_system_routes(segment, survey)
            .into_iter()
            .map(|(m, p, with_card)| (m, p, if with_card { &card } else { &empty })),
    );
    routes.extend(
        patient_routes(patient.person_id, patient.card_id)
            .into_iter()
            .map(|(m, p)| (m, p, &empty)),
    );
    let mut tried = 0;
    for (method, canonical, body) in &routes {
        // The canonical path itself, unsigned: refused.
        let answer = raw(&city.gateway_url, method, canonical, &[], body.as_bytes()).await;
        assert_eq!(
            answer.status, 401,
            "{method} {canonical} unsigned: {}",
            answer.body
        );
        for (how, target) in spellings(canonical) {
            tried += 1;
            let unsigned = raw(&city.gateway_url, method, &target, &[], body.as_bytes()).await;
            assert!(
                matches!(unsigned.status, 400 | 401 | 404 | 405),
                "{how}: unsigned {method} {target} answered {}: {}",
                unsigned.status,
                unsigned.body
            );
            if unsigned.status == 400 {
                assert!(
                    unsigned.body.contains("NON_CANONICAL_PATH"),
                    "{how}: {}",
                    unsigned.body
                );
            }
            assert!(!unsigned.body.contains(&pickup), "{how}: the pick-up code leaked");
            // Signed over the very spelling sent (as a channel app; the
            // federation scope wants a hospital key, so refuses it): still
            // no second door. A trailing slash is canonical but no route.
            let headers = signed_headers("wechat", method, &target, body.as_bytes());
            let signed = raw(&city.gateway_url, method, &target, &headers, body.as_bytes()).await;
            assert!(
                (signed.status == 400 && signed.body.contains("NON_CANONICAL_PATH"))
                    || (how == "trailing slash" && matches!(signed.status, 401 | 404)),
                "{how}: signed {method} {target} answered {}: {}",
                signed.status,
                signed.body
            );
        }
    }
    assert!(tried > 320, "{tried} spellings tried");
    // The paid booking is still paid and the patient's; nothing was cancelled.
    let res = city.get_booking(&id).await;
    assert_eq!(res.status(), 200);
    let now: serde_json::Value = res.json().await.unwrap();
    assert_eq!(now["status"], "confirmed", "{now}");
    // The public FHIR reads stay public, and only in their canonical form.
    assert_eq!(
        raw(&city.gateway_url, "GET", "/fhir/metadata", &[], b"")
            .await
            .status,
        200
    );
    let encoded = raw(&city.gateway_url, "GET", "/fhir/%6Detadata", &[], b"").await;
    assert_eq!(encoded.status, 400, "{}", encoded.body);
    assert!(encoded.body.contains("NON_CANONICAL_PATH"));
}

/// The patient services' signed routes (issue 22), as (method, path).
fn patient_routes(person: Uuid, card: Uuid) -> Vec<(&'static str, String)> {
    let p = format!("/v1/patients/{person}");
    vec![
        ("POST", "/v1/patients".into()),
        ("GET", p.clone()),
        ("GET", format!("{p}/cards")),
        ("POST", format!("{p}/ecard")),
        ("POST", format!("{p}/cards/{card}/report-loss")),
        ("POST", format!("{p}/cards/{card}/replace")),
        ("GET", format!("{p}/cards/{card}/ledger")),
        ("GET", format!("{p}/family")),
        ("POST", format!("{p}/family")),
        (
            "POST",
            format!("/v1/family-verifications/{}/confirm", Uuid::now_v7()),
        ),
        ("GET", format!("{p}/family-doctor-signings")),
        ("POST", format!("{p}/family-doctor-signings")),
        (
            "POST",
            format!("{p}/family-doctor-signings/{}/end", Uuid::now_v7()),
        ),
        ("GET", format!("{p}/standing")),
        ("POST", format!("{p}/appeals")),
        ("GET", format!("{p}/bookings")),
    ]
}

/// Every route of a service behind the gateway, as (method, path, body).
fn hospital_routes(h: &str) -> Vec<(Method, String, serde_json::Value)> {
    let b = format!("{h}-{}", Uuid::now_v7());
    let s = Uuid::now_v7();
    let empty = serde_json::json!({});
    vec![
        (
            Method::POST,
            "/v1/bookings".into(),
            serde_json::json!({ "slot_id": b, "patient_id": Uuid::new_v4(), "channel": "window" }),
        ),
        (Method::GET, format!("/v1/bookings/{b}"), empty.clone()),
        (
            Method::POST,
            "/v1/bookings/lookup".into(),
            serde_json::json!({ "booking_ids": [b] }),
        ),
        (
            Method::POST,
            format!("/v1/bookings/{b}/confirm"),
            serde_json::json!({ "payment_reference": "x", "payment_method": "self_pay" }),
        ),
        (
            Method::POST,
            format!("/v1/bookings/{b}/cancel"),
            serde_json::json!({ "patient_id": Uuid::new_v4() }),
        ),
        (
            Method::POST,
            format!("/v1/bookings/{b}/check-in"),
            serde_json::json!({ "pickup_code": "000000" }),
        ),
        (Method::GET, "/v1/schedules?date=2026-12-01".into(), empty.clone()),
        (
            Method::POST,
            format!("/v1/schedules/{s}/waitlist"),
            serde_json::json!({ "patient_id": Uuid::new_v4(), "channel": "wechat" }),
        ),
        (Method::GET, format!("/v1/waitlist/{s}"), empty.clone()),
        (Method::GET, format!("/v1/draw-entries/{b}"), empty.clone()),
        (Method::GET, format!("/v1/schedules/{s}/draw"), empty.clone()),
        (
            Method::PUT,
            format!("/v1/segments/{s}/capacity"),
            serde_json::json!({ "capacity": 99 }),
        ),
        (
            Method::PUT,
            "/v1/schedules".into(),
            serde_json::json!({ "schedules": [] }),
        ),
        (Method::POST, format!("/v1/schedules/{s}/stop"), empty.clone()),
        (Method::POST, format!("/v1/bookings/{b}/arrive"), empty.clone()),
        (Method::POST, format!("/v1/bookings/{b}/complete"), empty.clone()),
        (Method::GET, "/v1/feed".into(), empty.clone()),
        (
            Method::POST,
            "/v1/referrals".into(),
            serde_json::json!({ "patient_id": Uuid::new_v4(), "issuing_hospital": "x", "issuing_team": "t",
                "issuing_doctor": "d", "department": "cardio", "diagnosis_code": "I20", "reason": "r" }),
        ),
        (Method::GET, format!("/v1/referrals/{s}"), empty.clone()),
        (Method::GET, format!("/v1/patients/{s}/bookings"), empty.clone()),
        (
            Method::GET,
            format!("/v1/bookings/{b}/no-show-cause"),
            empty.clone(),
        ),
        // 精准预约: a doctor's profile and submissions, a submission's decision.
        (
            Method::PUT,
            format!("/v1/doctors/{s}/precise-profile"),
            serde_json::json!({ "rule": {} }),
        ),
        (
            Method::GET,
            format!("/v1/doctors/{s}/precise-profile"),
            empty.clone(),
        ),
        (
            Method::POST,
            format!("/v1/doctors/{s}/precise-submissions"),
            serde_json::json!({ "patient_id": Uuid::new_v4() }),
        ),
        (Method::GET, "/v1/precise-submissions".into(), empty.clone()),
        (Method::GET, format!("/v1/precise-submissions/{s}"), empty.clone()),
        (
            Method::POST,
            format!("/v1/precise-submissions/{s}/decision"),
            serde_json::json!({ "decision": "accept" }),
        ),
        (Method::GET, "/fhir/metadata".into(), empty.clone()),
        (Method::GET, "/fhir/Schedule".into(), empty.clone()),
        (Method::GET, "/fhir/Slot".into(), empty.clone()),
        (Method::POST, "/fhir/Appointment/$hold".into(), empty.clone()),
        (Method::GET, "/fhir/$bulk-publish".into(), empty.clone()),
        (Method::GET, "/nowhere".into(), empty),
    ]
}

fn card_routes(card: Uuid, person: Uuid) -> Vec<(Method, String, serde_json::Value)> {
    let empty = serde_json::json!({});
    vec![
        (
            Method::POST,
            "/v1/persons".into(),
            serde_json::json!({ "name": "攻击者", "id_number": "110105199001011234", "phone": "13900000000" }),
        ),
        (
            Method::POST,
            "/v1/persons/search".into(),
            serde_json::json!({ "id_number": "110105199001011234" }),
        ),
        (Method::GET, format!("/v1/persons/{person}"), empty.clone()),
        (
            Method::POST,
            format!("/v1/persons/{person}/reveal"),
            empty.clone(),
        ),
        (
            Method::POST,
            format!("/v1/persons/{person}/cards"),
            serde_json::json!({ "kind": "ecard", "channel": "wechat" }),
        ),
        (Method::GET, format!("/v1/cards/{card}"), empty.clone()),
        (
            Method::POST,
            format!("/v1/cards/{card}/report-loss"),
            empty.clone(),
        ),
        (
            Method::POST,
            format!("/v1/cards/{card}/replace"),
            serde_json::json!({ "channel": "kiosk" }),
        ),
        (
            Method::POST,
            format!("/v1/cards/{card}/cancel"),
            serde_json::json!({ "channel": "kiosk" }),
        ),
        (
            Method::POST,
            format!("/v1/cards/{card}/ecard-token"),
            empty.clone(),
        ),
        (
            Method::POST,
            "/v1/cards/resolve".into(),
            serde_json::json!({ "card_number": "9110000000000000" }),
        ),
        (
            Method::POST,
            "/v1/cards/resolve-many".into(),
            serde_json::json!({ "card_numbers": ["9110000000000000"] }),
        ),
        (
            Method::POST,
            format!("/v1/persons/{person}/family"),
            empty.clone(),
        ),
        (Method::GET, format!("/v1/persons/{person}/family"), empty.clone()),
        (
            Method::POST,
            format!("/v1/persons/{person}/family-doctor-signings"),
            serde_json::json!({ "hospital": "tbh", "team": "t", "signature_trace": "0123456789abcdef0" }),
        ),
        (
            Method::GET,
            format!("/v1/persons/{person}/family-doctor-signings"),
            empty.clone(),
        ),
        (
            Method::PUT,
            "/v1/hospitals/tbh/family-doctor-teams".into(),
            serde_json::json!({ "teams": [] }),
        ),
        (
            Method::POST,
            format!("/v1/family-bindings/{}/unbind", Uuid::new_v4()),
            empty.clone(),
        ),
        (
            Method::POST,
            format!("/v1/cards/{card}/top-ups"),
            serde_json::json!({ "amount_fen": 100_000, "channel": "wechat", "channel_ref": "forged-1" }),
        ),
        (
            Method::POST,
            format!("/v1/cards/{card}/payments"),
            serde_json::json!({ "amount_fen": 100, "channel": "wechat", "reference": "forged-pay" }),
        ),
        (
            Method::POST,
            format!("/v1/cards/{card}/refunds"),
            serde_json::json!({ "amount_fen": 100, "reference": "forged-refund", "refund_of": "x" }),
        ),
        (Method::GET, format!("/v1/cards/{card}/ledger"), empty.clone()),
        (
            Method::GET,
            "/v1/reports/daily-balances?date=2026-12-01".into(),
            empty.clone(),
        ),
        (
            Method::GET,
            format!("/v1/persons/{person}/standing"),
            empty.clone(),
        ),
        (
            Method::POST,
            format!("/v1/persons/{person}/no-shows/{}/waiver", Uuid::new_v4()),
            empty.clone(),
        ),
        (Method::GET, format!("/v1/persons/{person}/cards"), empty.clone()),
        (
            Method::POST,
            format!("/v1/persons/{person}/appeals"),
            serde_json::json!({ "no_show_event_id": Uuid::new_v4(), "reason": "forged" }),
        ),
        (
            Method::GET,
            format!("/v1/persons/{person}/appeals"),
            empty.clone(),
        ),
        (Method::GET, "/v1/appeals?status=all".into(), empty.clone()),
        (
            Method::POST,
            format!("/v1/appeals/{}/decision", Uuid::new_v4()),
            serde_json::json!({ "decision": "waive", "reason": "forged", "operator": "city" }),
        ),
        (
            Method::POST,
            format!("/v1/persons/{person}/family/verifications"),
            serde_json::json!({ "member_id": Uuid::new_v4(), "relationship": "spouse" }),
        ),
        (
            Method::GET,
            format!("/v1/family-verifications/{}", Uuid::new_v4()),
            empty.clone(),
        ),
        (
            Method::POST,
            format!("/v1/family-verifications/{}/confirm", Uuid::new_v4()),
            serde_json::json!({ "code": "123456" }),
        ),
    ]
}

/// A signed POST to the gateway as `app`; its answer.
async fn post(city: &TestCity, app: &str, path: &str, body: &serde_json::Value) -> reqwest::Response {
    city.signed(app, Method::POST, path, Some(body))
        .send()
        .await
        .unwrap()
}

async fn balance(city: &TestCity, card: Uuid) -> (i64, usize) {
    let card_view = city.cards.card(card).await;
    let ledger = city.cards.ledger(card).await;
    let entries = ledger["entries"].as_array().map_or(0, Vec::len);
    (card_view["balance_fen"].as_i64().unwrap(), entries)
}

/// Each of `routes` at `base` is refused with 401 INTERNAL_AUTH_REQUIRED
/// when sent with `token` (none, forged, expired, for another service).
async fn all_refused(
    base: &str,
    routes: &[(Method, String, serde_json::Value)],
    token: Option<&str>,
    what: &str,
) {
    let http = reqwest::Client::new();
    for (method, path, body) in routes {
        let mut req = http.request(method.clone(), format!("{base}{path}")).json(body);
        if let Some(t) = token {
            req = req.header(internal::HEADER, t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}: {method} {path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(
            problem(res).await["code"],
            "INTERNAL_AUTH_REQUIRED",
            "{what}: {method} {path}"
        );
    }
}

#[tokio::test]
async fn slot_inventory_and_card_issuing_answer_only_their_own_internal_tokens() {
    let city = TestCity::spawn_configured(&["tbi", "tbj"], &[], ALL_SEATS_COMMON).await;
    let (h, other) = (city.hospital(0), city.hospital(1));
    let slots = h.seed_visit_day(5).await;
    let patient = city.cards.register().await;
    let before = balance(&city, patient.card_id).await;
    let bookings_before = count_bookings(h).await;

    let settings = &h.state.settings.internal_auth;
    let audience = internal::hospital_audience("tbi");
    let now = Utc::now().timestamp();
    let key = settings.key(&audience);
    let other_key = other
        .state
        .settings
        .internal_auth
        .key(&internal::hospital_audience("tbj"));
    let cards_key = settings.key(internal::CARD_ISSUING);
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("Bearer let-me-in".into())),
        (
            "forged with a guessed key",
            Some(internal::mint(
                b"guess-guess-guess-guess-guess-guess",
                "gateway",
                &audience,
                now + 30,
            )),
        ),
        (
            "expired",
            Some(internal::mint(key.as_bytes(), "gateway", &audience, now - 5)),
        ),
        (
            "valid for a year",
            Some(internal::mint(
                key.as_bytes(),
                "gateway",
                &audience,
                now + 365 * 86_400,
            )),
        ),
        (
            "another hospital's token",
            Some(internal::mint(
                other_key.as_bytes(),
                "gateway",
                &internal::hospital_audience("tbj"),
                now + 30,
            )),
        ),
        (
            "card-issuing's token",
            Some(internal::mint(
                cards_key.as_bytes(),
                "gateway",
                internal::CARD_ISSUING,
                now + 30,
            )),
        ),
        // A hospital holds only its own key: it cannot mint for another.
        (
            "minted by tbj for tbi",
            Some(internal::mint(
                other_key.as_bytes(),
                "gateway",
                &audience,
                now + 30,
            )),
        ),
    ];
    for (what, token) in &tokens {
        all_refused(&h.base_url, &hospital_routes("tbi"), token.as_deref(), what).await;
    }
    // A booking attempted straight at the hospital with a real slot: refused, nothing written.
    let res = reqwest::Client::new()
        .post(format!("{}/v1/bookings", h.base_url))
        .header("Idempotency-Key", "direct-1")
        .json(&serde_json::json!({ "slot_id": slots[0].to_string(), "patient_id": patient.person_id, "channel": "window" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(count_bookings(h).await, bookings_before);

    let cards_audience_tokens: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        (
            "a hospital's token",
            Some(internal::mint(key.as_bytes(), "gateway", &audience, now + 30)),
        ),
        (
            "forged",
            Some(internal::mint(
                b"guess-guess-guess-guess-guess-guess",
                "gateway",
                internal::CARD_ISSUING,
                now + 30,
            )),
        ),
        (
            "expired",
            Some(internal::mint(
                cards_key.as_bytes(),
                "gateway",
                internal::CARD_ISSUING,
                now - 5,
            )),
        ),
    ];
    for (what, token) in &cards_audience_tokens {
        all_refused(
            &city.cards.base_url,
            &card_routes(patient.card_id, patient.person_id),
            token.as_deref(),
            what,
        )
        .await;
    }
    scoped_routes_refuse_every_spelling(h, &other_key).await;
    assert_eq!(count_bookings(h).await, bookings_before);
    lookup_refuses_every_spelling(&city, &slots[2], &other_key).await;
    let hospital_token = internal::mint(key.as_bytes(), "gateway", &audience, now + 30);
    identity_doors_refuse_every_spelling(&city, &patient, &hospital_token).await;
    assert_eq!(
        balance(&city, patient.card_id).await,
        before,
        "the ledger did not move"
    );

    // Probes and scrapes stay open, by their exact path only.
    let http = reqwest::Client::new();
    for base in [&h.base_url, &city.cards.base_url] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let res = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status(), 200, "{base}{path}");
        }
        let encoded = raw(base, "GET", "/%68ealthz", &[], b"").await;
        assert_eq!(encoded.status, 401, "{base}/%68ealthz: {}", encoded.body);
    }
    // The gateway, holding the right keys, still books.
    let res = city.book(&slots[0], patient.person_id, "wechat", "tb-gw").await;
    assert_eq!(res.status(), 201);
}

/// The hospital's lookup of many bookings (the notifier's), however its
/// path is spelled, without the hospital's own token (none, or one minted
/// with another hospital's key): 401, and no booking told.
async fn lookup_refuses_every_spelling(city: &TestCity, slot: &jyt_domain::SlotRef, other_key: &str) {
    let h = city.hospital(0);
    let patient = city.cards.register().await;
    let booked = city.book(slot, patient.person_id, "wechat", "tbi-look").await;
    assert_eq!(booked.status(), 201);
    let booked: serde_json::Value = booked.json().await.unwrap();
    let booked_id = booked["booking_id"].as_str().unwrap().to_owned();
    let lookup = serde_json::json!({ "booking_ids": [&booked_id] }).to_string();
    let audience = internal::hospital_audience(h.id.as_str());
    let other_token = internal::mint(
        other_key.as_bytes(),
        "gateway",
        &audience,
        Utc::now().timestamp() + 30,
    );
    for (how, target) in std::iter::once(("canonical", "/v1/bookings/lookup".to_owned()))
        .chain(spellings("/v1/bookings/lookup"))
    {
        for (what, headers) in [
            ("no token", Vec::new()),
            (
                "another hospital's key",
                vec![(internal::HEADER.to_owned(), other_token.clone())],
            ),
        ] {
            let answer = raw(&h.base_url, "POST", &target, &headers, lookup.as_bytes()).await;
            assert_eq!(answer.status, 401, "{how}, {what}: {target}: {}", answer.body);
            assert!(
                !answer.body.contains(&booked_id),
                "{how}, {what}: {}",
                answer.body
            );
        }
    }
}

/// The hospital's routes under one id (a booking's, a schedule's, a
/// doctor's, a submission's: each a scope of the hospital's app), however
/// the path is spelled, without the hospital's own token (none, or one
/// minted with another hospital's key): 401 before any of them is reached.
async fn scoped_routes_refuse_every_spelling(h: &TestHospital, other_key: &str) {
    let other_token = internal::mint(
        other_key.as_bytes(),
        "gateway",
        &internal::hospital_audience(h.id.as_str()),
        Utc::now().timestamp() + 30,
    );
    let scopes = [
        "/v1/bookings/",
        "/v1/schedules/",
        "/v1/doctors/",
        "/v1/precise-submissions/",
    ];
    let scoped = hospital_routes(h.id.as_str())
        .into_iter()
        .filter(|(_, path, _)| path != "/v1/bookings/lookup" && scopes.iter().any(|s| path.starts_with(s)));
    for (method, path, body) in scoped {
        let body = body.to_string();
        for (how, target) in spellings(&path) {
            for (what, headers) in [
                ("no token", Vec::new()),
                (
                    "another hospital's key",
                    vec![(internal::HEADER.to_owned(), other_token.clone())],
                ),
            ] {
                let answer = raw(&h.base_url, method.as_str(), &target, &headers, body.as_bytes()).await;
                assert_eq!(
                    answer.status, 401,
                    "{how}, {what}: {method} {target}: {}",
                    answer.body
                );
            }
        }
    }
}

/// The gateway's identity doors, however the path is spelled: no token,
/// a hospital's token or a channel app's signature gets 401, and no
/// holder is told.
async fn identity_doors_refuse_every_spelling(city: &TestCity, patient: &TestPatient, hospital_token: &str) {
    for canonical in ["/v1/cards/resolve-many", "/v1/cards/resolve"] {
        let body = if canonical.ends_with("many") {
            serde_json::json!({ "card_numbers": [patient.card_number] })
        } else {
            serde_json::json!({ "card_number": patient.card_number })
        }
        .to_string();
        let mut targets = vec![("canonical", canonical.to_owned())];
        targets.extend(spellings(canonical));
        for (how, target) in targets {
            let callers = [
                ("no token", Vec::new()),
                (
                    "a hospital's token",
                    vec![(internal::HEADER.to_owned(), hospital_token.to_owned())],
                ),
                (
                    "a channel app's signature",
                    signed_headers("wechat", "POST", &target, body.as_bytes()),
                ),
            ];
            for (who, headers) in callers {
                let answer = raw(&city.cards.base_url, "POST", &target, &headers, body.as_bytes()).await;
                assert_eq!(answer.status, 401, "{who}, {how}: {target}: {}", answer.body);
                assert!(
                    !answer.body.contains(&patient.person_id.to_string()),
                    "{who}, {how}: the holder leaked"
                );
            }
        }
    }
}

async fn count_bookings(h: &TestHospital) -> i64 {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM bookings", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn money_moves_only_on_the_channels_signed_notification_relayed_by_the_gateway() {
    let city = TestCity::spawn(&["tbm"]).await;
    let patient = city.cards.register().await;
    let start = balance(&city, patient.card_id).await;
    let notice = |reference: &str, amount: i64| serde_json::json!({ "card_number": patient.card_number, "amount_fen": amount, "payment_reference": reference });

    // Unsigned, or signed with a guessed secret, at the gateway: refused.
    let res = city
        .http
        .post(format!("{}/v1/cards/top-ups", city.gateway_url))
        .json(&notice("wx-forged", 50_000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body = notice("wx-forged-2", 50_000).to_string();
    let mut forged = jyt_signing::channel::sign_request(
        "wechat",
        b"a-guessed-secret-a-guessed-secret",
        "POST",
        "/v1/cards/top-ups",
        body.as_bytes(),
        Utc::now().timestamp(),
        &jyt_signing::channel::new_nonce(),
    )
    .pairs()
    .into_iter()
    .fold(
        city.http.post(format!("{}/v1/cards/top-ups", city.gateway_url)),
        |r, (k, v)| r.header(k, v),
    );
    forged = forged.header("content-type", "application/json").body(body);
    let res = forged.send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(problem(res).await["code"], "BAD_SIGNATURE");
    // Straight at card-issuing, every money movement and e-card mint: refused.
    for (method, path, body) in card_routes(patient.card_id, patient.person_id) {
        if !(path.contains("top-ups")
            || path.contains("payments")
            || path.contains("refunds")
            || path.ends_with("/cancel")
            || path.ends_with("/ecard-token"))
        {
            continue;
        }
        let res = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", city.cards.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
    }
    assert_eq!(balance(&city, patient.card_id).await, start, "nothing moved");

    // The channel's signed notification credits once, to the fen.
    let res = post(&city, "wechat", "/v1/cards/top-ups", &notice("wx-0001", 12_345)).await;
    assert_eq!(res.status(), 201);
    let again = post(&city, "wechat", "/v1/cards/top-ups", &notice("wx-0001", 12_345)).await;
    assert_eq!(
        again.status(),
        200,
        "a retried notification credits nothing twice"
    );
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    let other_amount = post(&city, "wechat", "/v1/cards/top-ups", &notice("wx-0001", 99_999)).await;
    assert_eq!(other_amount.status(), 409);
    assert_eq!(
        balance(&city, patient.card_id).await,
        (start.0 + 12_345, start.1 + 1)
    );
    // Bad input names the field and moves nothing.
    for (bad, field) in [
        (notice("wx-0002", 0), "amount_fen"),
        (notice("wx 0002", 10), "payment_reference"),
    ] {
        let res = post(&city, "wechat", "/v1/cards/top-ups", &bad).await;
        assert_eq!(res.status(), 400);
        assert_eq!(problem(res).await["field"], field);
    }
    assert_eq!(
        balance(&city, patient.card_id).await,
        (start.0 + 12_345, start.1 + 1)
    );

    // E-card tokens (a proof of presence: they pay a card out) are minted
    // for the card's own channel (the test cards are issued at a kiosk) or
    // at a desk; another channel's app that knows the number is refused.
    let mint = serde_json::json!({ "card_number": patient.card_number });
    for other in ["wechat", "app", "phone114"] {
        let res = post(&city, other, "/v1/cards/ecard-token", &mint).await;
        assert_eq!(res.status(), 403, "{other}");
        assert_eq!(problem(res).await["code"], "CARD_OF_ANOTHER_CHANNEL");
    }
    let res = post(&city, "kiosk", "/v1/cards/ecard-token", &mint).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let minted: serde_json::Value = res.json().await.unwrap();
    assert!(minted["token"].as_str().is_some_and(|t| t.len() > 20), "{minted}");

    // Another app that knows the card number cannot pay the balance out
    // to itself: outside a kiosk or window the patient's e-card token is needed.
    let cancel = serde_json::json!({ "card_number": patient.card_number });
    let res = post(&city, "app", "/v1/cards/cancel", &cancel).await;
    assert_eq!(res.status(), 403);
    let body = problem(res).await;
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("PATIENT_PROOF_REQUIRED"), Some("ecard_token"))
    );
    assert_eq!(
        balance(&city, patient.card_id).await,
        (start.0 + 12_345, start.1 + 1)
    );
    // Cancel with pay-out at a kiosk (card read, person seen): the balance leaves once.
    let res = post(&city, "kiosk", "/v1/cards/cancel", &cancel).await;
    assert_eq!(res.status(), 200);
    let after = balance(&city, patient.card_id).await;
    assert_eq!(after.0, 0, "paid out");
    // A top-up to a cancelled card is refused and moves nothing.
    let res = post(&city, "wechat", "/v1/cards/top-ups", &notice("wx-0003", 100)).await;
    assert!(matches!(res.status().as_u16(), 403 | 409), "{}", res.status());
    assert_eq!(balance(&city, patient.card_id).await, after);
}

#[tokio::test]
async fn a_client_rotating_x_client_address_is_still_limited_by_its_own_address() {
    // The gateway trusts no proxy: every request is known by its TCP peer.
    let untrusted = TestCity::spawn_with(
        &["tbx"],
        &[
            ("LIMITS__TRUSTED_PROXIES", ""),
            ("LIMITS__CLIENT_ADDRESS_HEADER", "X-Client-Address"),
            ("LIMITS__ADDRESS_PER_MINUTE", "1"),
            ("LIMITS__ADDRESS_BURST", "3"),
            ("ANTI_SCALPING__ADDRESS_RULE_CHANNELS", "wechat,app"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let res = untrusted
            .signed("wechat", Method::GET, "/v1/hospitals", None)
            .header("X-Client-Address", format!("203.0.113.{}", i + 1))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(
        statuses[3..].iter().all(|s| *s == 429),
        "rotating the header did not help: {statuses:?}"
    );

    // Behind a trusted proxy (loopback stands in for the Ingress), the
    // header it sets is each client's own address: each has its own bucket.
    let trusted = TestCity::spawn_with(
        &["tby"],
        &[
            ("LIMITS__TRUSTED_PROXIES", "127.0.0.0/8"),
            ("LIMITS__ADDRESS_PER_MINUTE", "1"),
            ("LIMITS__ADDRESS_BURST", "3"),
        ],
    )
    .await;
    for i in 0..8 {
        let res = trusted
            .signed("wechat", Method::GET, "/v1/hospitals", None)
            .header("X-Client-Address", format!("203.0.113.{}", i + 1))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "client {i}");
    }
    // One client behind the proxy is limited by its own address.
    let mut own = Vec::new();
    for _ in 0..5 {
        let res = trusted
            .signed("wechat", Method::GET, "/v1/hospitals", None)
            .header("X-Client-Address", "198.51.100.7")
            .send()
            .await
            .unwrap();
        own.push(res.status().as_u16());
    }
    assert_eq!(own, vec![200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn check_in_through_the_gateway_needs_the_bookings_own_patient_or_app_and_locks_after_five_wrong_codes()
{
    let city = TestCity::spawn_configured(&["tbc"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(5).await;
    let patient = city.cards.register().await;
    let stranger = city.cards.register().await;
    let res = city.book(&slots[1], patient.person_id, "wechat", "tbc-1").await;
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    if booking["status"] == "held" {
        assert_eq!(city.pay("wechat", &booking).await.status(), 200);
    }
    let id = booking["booking_id"].as_str().unwrap();
    let path = format!("/v1/bookings/{id}/check-in");
    let wrong = serde_json::json!({ "pickup_code": "000000" });
    // An outsider: unsigned.
    let res = city
        .http
        .post(format!("{}{path}", city.gateway_url))
        .json(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Another channel app, without the patient's card: not its booking,
    // and the guess never reaches the hospital's counter.
    for _ in 0..6 {
        let res = post(&city, "app", &path, &wrong).await;
        assert_eq!(res.status(), 403);
        assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    }
    // Another patient's card: answered as an unknown booking, not counted.
    let as_stranger = serde_json::json!({ "pickup_code": "000000", "card_number": stranger.card_number });
    let res = post(&city, "kiosk", &path, &as_stranger).await;
    assert_eq!(res.status(), 404);
    assert_eq!(problem(res).await["code"], "BOOKING_NOT_FOUND");
    // The owning app guessing: counted, then locked, right code included.
    for left in (1..=4).rev() {
        let res = post(&city, "wechat", &path, &wrong).await;
        assert_eq!(res.status(), 403);
        let body = problem(res).await;
        assert_eq!(body["code"], "WRONG_PICKUP_CODE");
        assert_eq!(body["attempts_left"], left, "{body}");
    }
    let res = post(&city, "wechat", &path, &wrong).await;
    assert_eq!(res.status(), 423);
    let right =
        serde_json::json!({ "pickup_code": booking["pickup_code"], "card_number": patient.card_number });
    let res = post(&city, "kiosk", &path, &right).await;
    assert_eq!(res.status(), 423);
    assert_eq!(problem(res).await["code"], "PICKUP_LOCKED");
}
