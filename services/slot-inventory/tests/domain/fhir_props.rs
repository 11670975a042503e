//! Random and malformed FHIR input: search parameters (huge numbers, bad
//! dates, unknown prefixes, injection strings, bytes that are not UTF-8),
//! `$find` and `$hold` bodies (wrong shapes and types, bad references,
//! wrong content type, oversize) and `$hold` headers. Every answer is a
//! 4xx OperationOutcome naming its machine code, never a 5xx, and nothing
//! is written.

use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fhir::FhirApp;
use crate::helpers::{beijing, sched};

/// One query parameter that is always wrong, already percent-encoded.
fn bad_param() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("_count=99999999999999999999".to_owned()),
        any::<u64>().prop_map(|n| format!("_count={}", n.saturating_add(501))),
        Just("_count=-1".to_owned()),
        Just("_count=1e3".to_owned()),
        Just("_count=".to_owned()),
        Just("_page=0".to_owned()),
        Just("_page=18446744073709551616".to_owned()),
        "[a-z0-9:+%-]{0,16}".prop_map(|s| format!("start=zz{s}")),
        "[a-z0-9:+%-]{0,16}".prop_map(|s| format!("date=9{s}x")),
        Just("start=2026-13-01".to_owned()),
        Just("start=ne2026-12-01".to_owned()),
        Just("start=sa2026-12-01".to_owned()),
        Just("start=2026-12-01T25:00".to_owned()),
        Just("start=99999-01-01".to_owned()),
        Just("start=%FF%FE".to_owned()),
        Just("status=%C3%28".to_owned()),
        Just("%E5%BF=1".to_owned()),
        Just("status=open".to_owned()),
        Just("status=free,,busy".to_owned()),
        Just("status=%27%20OR%201%3D1%20--".to_owned()),
        Just("schedule=%27%3B%20DELETE%20FROM%20segments%3B%20--".to_owned()),
        Just("schedule=Schedule/fhirh-not-a-uuid".to_owned()),
        Just("_id=%00".to_owned()),
        Just("actor=Patient/1".to_owned()),
        Just("specialty=http://other.example|x".to_owned()),
        Just(format!("specialty={}", "x".repeat(80))),
        Just("_format=xml".to_owned()),
        Just("_sort=start".to_owned()),
        Just("start:missing=true".to_owned()),
        Just("%25%25=%25".to_owned()),
        "[a-z]{3,10}".prop_map(|name| format!("zz{name}=1")),
    ]
}

/// A parameter that may well be valid on its own.
fn fine_param() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..=500).prop_map(|n| format!("_count={n}")),
        (1u32..=50).prop_map(|n| format!("_page={n}")),
        Just("start=ge2026-01-01".to_owned()),
        Just("_format=json".to_owned()),
    ]
}

#[derive(Debug, Clone)]
enum Request {
    Search {
        resource: &'static str,
        params: Vec<String>,
    },
    Find(Vec<u8>, &'static str),
    Hold {
        body: Vec<u8>,
        content_type: &'static str,
        key: Option<String>,
        channel: Option<String>,
    },
}

fn params(entries: Vec<Value>) -> Vec<u8> {
    json!({ "resourceType": "Parameters", "parameter": entries })
        .to_string()
        .into_bytes()
}

fn injection() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'; DROP TABLE bookings; --".to_owned()),
        Just("\" OR \"1\"=\"1".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("${jndi:ldap://x}".to_owned()),
        "\\PC{0,40}",
    ]
}

/// A `$find` body (or content type) that is always wrong.
fn bad_find() -> impl Strategy<Value = (Vec<u8>, &'static str)> {
    let json = "application/fhir+json";
    prop_oneof![
        Just((b"{".to_vec(), json)),
        Just((Vec::new(), json)),
        Just((b"null".to_vec(), json)),
        Just((b"[]".to_vec(), json)),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(move |mut b| {
            // Never valid JSON: starts with a byte that is not UTF-8.
            b.insert(0, 0xff);
            (b, json)
        }),
        Just((json!({ "resourceType": "Patient" }).to_string().into_bytes(), json)),
        Just((params(vec![json!({ "name": "start", "valueDate": "2026-12-08" })]), json)),
        injection().prop_map(move |s| (
            params(vec![
                json!({ "name": "start", "valueDateTime": s }),
                json!({ "name": "end", "valueDate": "2026-12-09" }),
            ]),
            json
        )),
        injection().prop_map(move |s| (
            params(vec![
                json!({ "name": "start", "valueDate": "2026-12-08" }),
                json!({ "name": "end", "valueDate": "2026-12-09" }),
                json!({ "name": "practitioner", "valueReference": { "reference": format!("Practitioner/{s}") } }),
            ]),
            json
        )),
        Just((
            br#"{"resourceType":"Parameters","parameter":[{"name":"start","valueDateTime":1e400}]}"#.to_vec(),
            json
        )),
        any::<i64>().prop_map(move |n| (
            params(vec![
                json!({ "name": "start", "valueInteger": n }),
                json!({ "name": "end", "valueDate": "2026-12-09" }),
            ]),
            json
        )),
        Just((
            params(vec![
                json!({ "name": "start", "valueDate": "2026-01-01" }),
                json!({ "name": "end", "valueDate": "2027-01-01" }),
            ]),
            json
        )),
        Just((
            params(vec![
                json!({ "name": "start", "valueDate": "2026-12-08" }),
                json!({ "name": "start", "valueDate": "2026-12-08" }),
                json!({ "name": "end", "valueDate": "2026-12-09" }),
            ]),
            json
        )),
        Just((
            params(vec![
                json!({ "name": "start", "valueDate": "2026-12-08" }),
                json!({ "name": "end", "valueDate": "2026-12-09" }),
            ]),
            "text/plain"
        )),
        Just((
            params(vec![
                json!({ "name": "start", "valueDate": "2026-12-08" }),
                json!({ "name": "end", "valueDate": "2026-12-09" }),
                json!({ "name": "specialty", "valueString": "x".repeat(70_000) }),
            ]),
            json
        )),
    ]
}

/// A `$hold` that is always wrong in its body, content type or headers.
fn bad_hold(slot: String) -> impl Strategy<Value = Request> {
    let patient = format!("Patient/{}", Uuid::new_v4());
    let good = {
        let (slot, patient) = (slot.clone(), patient.clone());
        move || {
            vec![
                json!({ "name": "slot", "valueReference": { "reference": slot } }),
                json!({ "name": "patient", "valueReference": { "reference": patient } }),
            ]
        }
    };
    let hold = |body: Vec<u8>| Request::Hold {
        body,
        content_type: "application/fhir+json",
        key: Some(Uuid::new_v4().to_string()),
        channel: Some("wechat".to_owned()),
    };
    let (g1, g2, g3, g4, g5) = (
        good.clone(),
        good.clone(),
        good.clone(),
        good.clone(),
        good.clone(),
    );
    let slot2 = slot.clone();
    prop_oneof![
        injection().prop_map(move |s| hold(params(vec![
            json!({ "name": "slot", "valueReference": { "reference": format!("Slot/{s}") } }),
            json!({ "name": "patient", "valueReference": { "reference": patient.clone() } }),
        ]))),
        injection().prop_map(move |s| hold(params(vec![
            json!({ "name": "slot", "valueReference": { "reference": slot2.clone() } }),
            json!({ "name": "patient", "valueReference": { "reference": format!("Patient/{s}") } }),
        ]))),
        Just(()).prop_map(move |()| hold(params(g1()[..1].to_vec()))),
        Just(()).prop_map(move |()| {
            let mut p = g2();
            p.push(json!({ "name": "referral", "valueString": "r".repeat(65) }));
            hold(params(p))
        }),
        any::<i64>().prop_map(move |n| {
            let mut p = g3();
            p.push(json!({ "name": "referral", "valueInteger": n }));
            hold(params(p))
        }),
        Just(()).prop_map(move |()| {
            let mut p = g4();
            p.push(json!({ "name": "seats", "valueInteger": 2 }));
            hold(params(p))
        }),
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            Just(Some("k".repeat(200))),
            Just(Some("has space".to_owned())),
        ]
        .prop_map({
            let g = good.clone();
            move |key| Request::Hold {
                body: params(g()),
                content_type: "application/fhir+json",
                key,
                channel: Some("wechat".to_owned()),
            }
        }),
        prop_oneof![
            Just(None),
            Just(Some("weixin".to_owned())),
            Just(Some(String::new()))
        ]
        .prop_map(move |channel| {
            Request::Hold {
                body: params(g5()),
                content_type: "application/fhir+json",
                key: Some(Uuid::new_v4().to_string()),
                channel,
            }
        }),
        prop_oneof![Just("text/plain"), Just("application/xml"), Just("")].prop_map({
            let g = good.clone();
            move |content_type| Request::Hold {
                body: params(g()),
                content_type,
                key: Some(Uuid::new_v4().to_string()),
                channel: Some("wechat".to_owned()),
            }
        }),
        Just(()).prop_map(move |()| hold(vec![b' '; 70_000])),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(move |mut b| {
            b.insert(0, 0xc3);
            hold(b)
        }),
    ]
}

fn request(slot: String) -> impl Strategy<Value = Request> {
    prop_oneof![
        4 => (
            prop_oneof![Just("Slot"), Just("Schedule")],
            proptest::collection::vec(fine_param(), 0..3),
            bad_param(),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(resource, mut params, bad, at)| {
                let i = at.index(params.len() + 1);
                params.insert(i, bad);
                Request::Search { resource, params }
            }),
        2 => bad_find().prop_map(|(body, ct)| Request::Find(body, ct)),
        3 => bad_hold(slot),
    ]
}

#[test]
fn malformed_fhir_input_is_a_4xx_operation_outcome_and_writes_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(FhirApp::start(beijing(3, 9, 0), 2, &[]));
    let slot = format!("Slot/{}", app.slot(sched::CARDIO_EXPERT_AM, 0));
    let config = ProptestConfig {
        cases: 160,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(req in request(slot.clone()))| {
        let answer = runtime.block_on(async {
            let res = match &req {
                Request::Search { resource, params } => {
                    app.http.get(format!("{}/{resource}?{}", app.base, params.join("&"))).send().await
                }
                Request::Find(body, ct) => {
                    app.http
                        .post(format!("{}/Appointment/$find", app.base))
                        .header("Content-Type", *ct)
                        .body(body.clone())
                        .send()
                        .await
                }
                Request::Hold { body, content_type, key, channel } => {
                    let mut r = app
                        .http
                        .post(format!("{}/Appointment/$hold", app.base))
                        .body(body.clone());
                    if !content_type.is_empty() {
                        r = r.header("Content-Type", *content_type);
                    }
                    if let Some(k) = key {
                        r = r.header("Idempotency-Key", k.as_str());
                    }
                    if let Some(c) = channel {
                        r = r.header("Jyt-Channel", c.as_str());
                    }
                    r.send().await
                }
            };
            FhirApp::answer(res.unwrap()).await
        });
        prop_assert!((400..500).contains(&answer.status), "{req:?}: {} {}", answer.status, answer.text);
        prop_assert_eq!(answer.header("content-type"), Some("application/fhir+json"));
        prop_assert_eq!(&answer.body["resourceType"], "OperationOutcome", "{}", answer.text);
        prop_assert_eq!(&answer.body["issue"][0]["severity"], "error");
        prop_assert!(answer.body["issue"][0]["code"].is_string());
        prop_assert_eq!(&answer.body["issue"][0]["details"]["coding"][0]["system"], "urn:jyt:error-code");
        prop_assert!(!answer.code().is_empty());
    });
    runtime.block_on(async {
        for table in ["bookings", "waitlist_entries", "outbox"] {
            assert_eq!(
                app.count(&format!("SELECT count(*) FROM {table}")).await,
                0,
                "{table}"
            );
        }
    });
}

/// Bytes that are not UTF-8, sent raw (not percent-encoded) in the query:
/// refused with a 400 by the HTTP parser itself, before any route runs (so
/// with an empty body, not an OperationOutcome: no handler sees it);
/// percent-encoded ones are the proptest's `%FF%FE` cases.
#[tokio::test]
async fn raw_bytes_that_are_not_utf8_in_the_query_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = FhirApp::start(beijing(3, 9, 0), 1, &[]).await;
    let addr = app
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/fhir")
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut request = b"GET /fhir/Slot?status=".to_vec();
    request.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status: u16 = answer.split(' ').nth(1).unwrap().parse().unwrap();
    assert!((400..500).contains(&status), "{answer}");
    assert_eq!(app.count("SELECT count(*) FROM bookings").await, 0);
}
