//! The FHIR R4 API over real HTTP, on a manual clock, checked by a real
//! validator (`tests/fhir-validator`: FHIR.js and the HL7 R4 JSON schema),
//! never against hand-written JSON: every resource kind in every status.
//! Also the helpers the other `fhir_*` test files share.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use chrono::{DateTime, Days, Utc};
use jyt_domain::time::Clock;
use jyt_domain::{BookingRef, Channel, SlotRef};
use jyt_settings::Sources;
use serde_json::{Value, json};
use slot_inventory::AppState;
use slot_inventory::booking::lifecycle::{self, CancelRequest};
use slot_inventory::booking::service;
use slot_inventory::booking::waitlist::{self, JoinRequest};
use slot_inventory::federation::stop::{self, StopRequest};
use slot_inventory::federation::visits;
use slot_inventory::schedule::queries::StoredSchedule;
use uuid::Uuid;

use crate::helpers::{beijing, sched, visit_date};

pub const HOSPITAL: &str = "fhirh";

/// A hospital served over HTTP on a random port, seeded with the visit
/// date's clinics (released) and the same clinics a week later (not yet
/// released).
pub struct FhirApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub clock: Clock,
    pub schedules: Vec<StoredSchedule>,
    pub later: Vec<StoredSchedule>,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The machine code of an OperationOutcome.
    pub fn code(&self) -> &str {
        self.body["issue"][0]["details"]["coding"][0]["code"]
            .as_str()
            .unwrap_or("")
    }
}

impl FhirApp {
    pub async fn start(now: DateTime<Utc>, capacity: i32, extra: &[(&str, &str)]) -> Self {
        let database_url = jyt_testkit::fresh_database("slotfhir").await;
        let p = "JYT_SLOT_INVENTORY__";
        let mut env: HashMap<String, String> = [
            ("HOSPITAL__ID", HOSPITAL),
            ("HOSPITAL__NAME", "北京测试医院 FHIR Test Hospital"),
            ("HTTP__PORT", "0"),
            ("HTTP__WORKERS", "1"),
            ("POSTGRES__URL", database_url.as_str()),
            ("REDIS__KEY_PREFIX", jyt_testkit::fresh_redis_prefix().as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v.to_owned()))
        .collect();
        env.insert(format!("{p}REDIS__URLS"), jyt_testkit::redis_url());
        for (k, v) in extra {
            env.insert(format!("{p}{k}"), (*v).to_owned());
        }
        let settings = slot_inventory::Settings::load_from(&Sources::from_map(env)).expect("settings");
        let clock = Clock::manual(now);
        let app = slot_inventory::Application::build_with_clock(settings, clock.clone())
            .await
            .expect("app builds");
        let base = format!("http://127.0.0.1:{}/fhir", app.port());
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        let cache = state.cache.clone();
        jyt_testkit::eventually(std::time::Duration::from_secs(20), "the slot cache", || {
            let ready = cache.is_ready();
            async move { ready.then_some(()) }
        })
        .await;
        let schedules = slot_inventory::seed::seed_demo_day(&state, visit_date(), capacity)
            .await
            .expect("seeded");
        let later = slot_inventory::seed::seed_demo_day(
            &state,
            visit_date().checked_add_days(Days::new(7)).unwrap(),
            capacity,
        )
        .await
        .expect("seeded");
        let audience = jyt_signing::internal::hospital_audience(state.hospital.as_str());
        let http = jyt_testkit::internal_client(&state.settings.internal_auth, &audience);
        Self {
            base,
            http,
            state,
            clock,
            schedules,
            later,
        }
    }

    pub fn slot(&self, schedule: usize, segment: usize) -> SlotRef {
        SlotRef::new(
            self.state.hospital.clone(),
            self.schedules[schedule].segment_ids[segment],
        )
    }

    pub fn schedule_id(&self, schedule: usize) -> String {
        format!("{HOSPITAL}-{}", self.schedules[schedule].schedule_id)
    }

    pub async fn answer(res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        Self::answer(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/fhir+json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::answer(req.send().await.unwrap()).await
    }

    /// `$hold` as the gateway sends it.
    pub async fn hold(&self, slot: &SlotRef, patient: Uuid, key: &str, channel: &str) -> Answer {
        self.post(
            "/Appointment/$hold",
            &hold_body(slot, patient),
            &[("Idempotency-Key", key), ("Jyt-Channel", channel)],
        )
        .await
    }

    /// `$book` (pay) a held appointment.
    pub async fn pay(&self, appointment: &str, reference: &str) -> Answer {
        self.post(
            "/Appointment/$book",
            &json!({
                "resourceType": "Parameters",
                "parameter": [
                    { "name": "appointment", "valueReference": { "reference": format!("Appointment/{appointment}") } },
                    { "name": "paymentReference", "valueString": reference },
                    { "name": "paymentMethod", "valueCode": "self_pay" },
                ],
            }),
            &[],
        )
        .await
    }

    /// Book through the service itself (to fill schedules quickly).
    pub async fn book_directly(&self, slot: &SlotRef, patient: Uuid) -> BookingRef {
        let req = crate::helpers::book_request(slot, patient, Channel::Kiosk, None);
        service::book(
            self.state.clone(),
            req,
            Uuid::new_v4().to_string().parse().unwrap(),
        )
        .await
        .unwrap()
        .booking
        .booking_id
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.state.pool.get().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }
}

pub fn hold_body(slot: &SlotRef, patient: Uuid) -> Value {
    json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "slot", "valueReference": { "reference": format!("Slot/{slot}") } },
            { "name": "patient", "valueReference": { "reference": format!("Patient/{patient}") } },
        ],
    })
}

fn validator_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fhir-validator")
}

/// Install the validator's pinned packages once per process (and, under a
/// file lock, once among test processes running at the same time).
fn ensure_validator() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = validator_dir();
        let lock = std::fs::File::create(dir.join(".setup.lock")).expect("validator lock file");
        lock.lock().expect("validator lock");
        let out = Command::new("bash")
            .arg(dir.join("setup.sh"))
            .output()
            .expect("runs tests/fhir-validator/setup.sh");
        assert!(
            out.status.success(),
            "tests/fhir-validator/setup.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Every resource (and every Bundle entry) passes FHIR.js, the R4 JSON
/// schema and the literal-reference check.
pub async fn assert_valid(resources: Vec<Value>) {
    let n = resources.len();
    let report = tokio::task::spawn_blocking(move || {
        ensure_validator();
        let mut child = Command::new("node")
            .arg(validator_dir().join("validate.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        {
            let mut stdin = child.stdin.take().unwrap();
            for r in &resources {
                writeln!(stdin, "{r}").unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| {
                format!(
                    "validator printed no report ({e}): {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .unwrap();
        assert!(
            out.status.success() && report["valid"] == true,
            "FHIR validation failed:\n{report:#}"
        );
        report
    })
    .await
    .unwrap();
    assert_eq!(report["lines"], n, "{report:#}");
}

#[tokio::test]
async fn the_validator_refuses_what_is_not_fhir() {
    // The check is real: a wrong status, an instant without its zone, an
    // id out of pattern and a reference to no resource type all fail.
    let bad = json!({
        "resourceType": "Slot", "id": "not an id!", "schedule": { "reference": "Nothing/x" },
        "status": "open", "start": "2026-12-08T09:00:00", "end": "2026-12-08T09:30:00+08:00",
    });
    let out = tokio::task::spawn_blocking(move || {
        ensure_validator();
        let mut child = Command::new("node")
            .arg(validator_dir().join("validate.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{bad}").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report.to_string();
    for expected in ["fhir.js", "json-schema", "reference", "Slot.status"] {
        assert!(text.contains(expected), "{expected}: {report:#}");
    }
}

fn bulk_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn every_resource_in_every_status_passes_the_validator() {
    let app = FhirApp::start(beijing(3, 9, 0), 1, &[]).await;
    let h = &app.state.hospital;
    let mut checked: Vec<Value> = Vec::new();
    let patient = || Uuid::new_v4();

    // Expired (→ cancelled): a hold left unpaid past its deadline.
    let expired = app
        .hold(
            &app.slot(sched::PEDS_EXPERT_AM, 0),
            patient(),
            "k-expired",
            "wechat",
        )
        .await;
    assert_eq!(expired.status, 201, "{}", expired.text);
    assert_eq!(expired.body["status"], "pending");
    app.clock.advance(chrono::TimeDelta::minutes(11));
    lifecycle::expire_holds(&app.state).await.unwrap();

    // Pending: a fee-bearing hold, with its deadline.
    let pending = app
        .hold(
            &app.slot(sched::CARDIO_EXPERT_AM, 0),
            patient(),
            "k-pending",
            "wechat",
        )
        .await;
    assert_eq!(pending.status, 201, "{}", pending.text);
    assert_eq!(pending.body["status"], "pending");
    assert_eq!(
        pending.body["extension"][0]["url"],
        "https://jyt.example/fhir/StructureDefinition/hold-expires"
    );
    // Booked by paying ($book).
    let paid = app
        .hold(
            &app.slot(sched::CARDIO_EXPERT_AM, 1),
            patient(),
            "k-paid",
            "kiosk",
        )
        .await;
    let paid_id = paid.body["id"].as_str().unwrap().to_owned();
    let booked = app.pay(&paid_id, "tx-1").await;
    assert_eq!(booked.status, 200, "{}", booked.text);
    assert_eq!(booked.body["status"], "booked");
    // Booked at once: a free CT scan.
    let ct = |i| app.slot(sched::CT_AM, i);
    let free_booked = app.hold(&ct(0), patient(), "k-ct0", "phone114").await;
    assert_eq!(free_booked.status, 201, "{}", free_booked.text);
    assert_eq!(free_booked.body["status"], "booked");
    // Arrived and fulfilled, through the hospital's visit progress.
    let arrived = app.book_directly(&ct(1), patient()).await;
    visits::arrive(&app.state, &arrived).await.unwrap();
    let fulfilled = app.book_directly(&ct(2), patient()).await;
    visits::arrive(&app.state, &fulfilled).await.unwrap();
    visits::complete(&app.state, &fulfilled).await.unwrap();
    // Cancelled by the patient.
    let canceller = patient();
    let cancelled = app.book_directly(&ct(3), canceller).await;
    lifecycle::cancel(
        &app.state,
        &cancelled,
        &CancelRequest {
            patient_id: canceller,
        },
    )
    .await
    .unwrap();
    // Stopped (停诊, → cancelled with the reason) and its slots unavailable.
    let stopped = app
        .book_directly(&app.slot(sched::CARDIO_GENERAL_AM, 0), patient())
        .await;
    stop::stop(
        &app.state,
        app.schedules[sched::CARDIO_GENERAL_AM].schedule_id,
        &StopRequest {
            reason: "医生外出会诊 doctor called away".into(),
        },
    )
    .await
    .unwrap();
    // Waitlist: a full schedule's line.
    for i in 0..7 {
        app.book_directly(&app.slot(sched::ENDO_AM, i), patient()).await;
    }
    let (entry, _) = waitlist::join(
        &app.state,
        app.schedules[sched::ENDO_AM].schedule_id,
        &JoinRequest {
            patient_id: patient(),
            channel: Channel::Wechat,
            owner_app: None,
        },
    )
    .await
    .unwrap();

    let appointments = [
        (expired.body["id"].as_str().unwrap().to_owned(), "cancelled"),
        (pending.body["id"].as_str().unwrap().to_owned(), "pending"),
        (paid_id, "booked"),
        (free_booked.body["id"].as_str().unwrap().to_owned(), "booked"),
        (arrived.to_string(), "arrived"),
        (fulfilled.to_string(), "fulfilled"),
        (cancelled.to_string(), "cancelled"),
        (stopped.to_string(), "cancelled"),
        (format!("{h}-{}", entry.entry_id), "waitlist"),
    ];
    for (id, status) in &appointments {
        let a = app.get(&format!("/Appointment/{id}")).await;
        assert_eq!(a.status, 200, "{id}: {}", a.text);
        assert_eq!(a.header("content-type"), Some("application/fhir+json"));
        assert_eq!(a.body["status"], *status, "{id}: {}", a.text);
        assert_eq!(a.body["id"], id.as_str());
        checked.push(a.body);
    }
    let reason = app.get(&format!("/Appointment/{stopped}")).await.body["cancelationReason"]["text"].clone();
    assert!(
        reason.as_str().unwrap().contains("doctor called away"),
        "{reason}"
    );

    let slots = [
        (ct(4), "free"),
        (ct(0), "busy"),
        (app.slot(sched::CARDIO_EXPERT_AM, 0), "busy-tentative"),
        (app.slot(sched::CARDIO_GENERAL_AM, 1), "busy-unavailable"),
        (
            SlotRef::new(h.clone(), app.later[sched::CT_AM].segment_ids[0]),
            "busy-unavailable",
        ),
    ];
    for (slot, status) in &slots {
        let s = app.get(&format!("/Slot/{slot}")).await;
        assert_eq!(s.status, 200, "{}", s.text);
        assert_eq!(s.body["status"], *status, "{slot}: {}", s.text);
        checked.push(s.body);
    }
    let free = app.get(&format!("/Slot/{}", ct(4))).await;
    assert_eq!(free.body["extension"][0]["valueInteger"], 1);
    assert_eq!(
        free.body["extension"][1]["valueUrl"],
        format!("https://www.jyt.example/book?slot={}", ct(4))
    );

    // Searchsets, $find, the capability statement, the location.
    for path in [
        format!(
            "/Slot?schedule=Schedule/{}&_count=3",
            app.schedule_id(sched::CT_AM)
        ),
        "/Slot?status=busy-tentative,busy".to_owned(),
        format!("/Schedule?actor=Location/{h}&_count=5&_page=2"),
        format!("/Schedule/{}", app.schedule_id(sched::CARDIO_GENERAL_AM)),
        "/metadata".to_owned(),
        format!("/Location/{h}"),
    ] {
        let a = app.get(&path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        checked.push(a.body);
    }
    let found = app
        .post(
            "/Appointment/$find",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "start", "valueDate": visit_date().to_string() },
                { "name": "end", "valueDate": visit_date().to_string() },
            ]}),
            &[],
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert!(found.body["total"].as_i64().unwrap() > 0);
    checked.push(found.body);

    // OperationOutcomes: 404, 400 naming the parameter, 409 sold out.
    let missing = app.get(&format!("/Slot/{h}-{}", Uuid::new_v4())).await;
    assert_eq!((missing.status, missing.code()), (404, "SLOT_NOT_FOUND"));
    let bad = app.get("/Slot?start=xx2026").await;
    assert_eq!((bad.status, bad.code()), (400, "INVALID_FIELD"));
    assert_eq!(bad.body["issue"][0]["expression"][0], "start");
    let sold_out = app.hold(&ct(0), patient(), "k-late", "wechat").await;
    assert_eq!((sold_out.status, sold_out.code()), (409, "SLOT_SOLD_OUT"));
    let unknown = app.get("/Nothing").await;
    assert_eq!((unknown.status, unknown.code()), (404, "NOT_FOUND"));
    for o in [&missing, &bad, &sold_out, &unknown] {
        assert_eq!(o.body["resourceType"], "OperationOutcome");
        assert_eq!(o.header("content-type"), Some("application/fhir+json"));
        checked.push(o.body.clone());
    }

    // The bulk files, every line.
    for file in ["Location", "Schedule", "Slot"] {
        let a = app.get(&format!("/bulk/{file}.ndjson")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("application/fhir+ndjson"));
        let lines = bulk_lines(&a.text);
        assert!(!lines.is_empty());
        checked.extend(lines);
    }

    // No-show: the morning is over and nobody came for the first CT scan.
    app.clock.set(jyt_domain::time::at(
        visit_date(),
        chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap(),
    ));
    lifecycle::mark_no_shows(&app.state).await.unwrap();
    let noshow = app
        .get(&format!(
            "/Appointment/{}",
            free_booked.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(noshow.body["status"], "noshow", "{}", noshow.text);
    checked.push(noshow.body);

    assert_valid(checked).await;
}
