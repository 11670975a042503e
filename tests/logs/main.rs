//! No secret, ID number or phone number in any log line. This binary runs
//! alone in its process, captured as every test process is
//! (`jyt_testkit::logs`: the services' own JSON format, every level of our
//! crates, stricter than production's `info`, with span fields). It drives
//! every service through the paths that carry personal data and secrets
//! (registration, search, cards and e-cards, bookings and payments, family
//! binding, prepaid top-ups, operator login, bad input that puts personal
//! data where it does not belong, failing signatures, a failing database),
//! then scans every line it logged for the exact values it used, including
//! those minted on the way (session, e-card token, database password), and
//! with the rules the whole suite's logs are scanned with afterwards
//! (`jyt_testkit::logscan`, `scripts/scan-test-logs.sh`).

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::path::Path;

use jyt_system_tests::city::random_id_number;
use jyt_system_tests::faults::{FaultCity, spawn_hospital_on};
use jyt_system_tests::{ALL_SEATS_COMMON, TEST_APP_SECRET, problem, spawn_accounting};
use jyt_testkit::logscan::{self, Secret};
use reqwest::Method;
use uuid::Uuid;

/// The workspace, where the scanner reads the configured secrets from.
fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Register a person with a known ID number and phone; (person, card).
async fn register(city: &FaultCity, id_number: &str, phone: &str) -> (Uuid, Uuid, String) {
    let http = &city.cards.http;
    let cards = &city.cards.base_url;
    let res = http
        .post(format!("{cards}/v1/persons"))
        .json(&serde_json::json!({ "name": "日志测试", "id_number": id_number, "phone": phone }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let person: Uuid = res.json::<serde_json::Value>().await.unwrap()["person_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let res = http
        .post(format!("{cards}/v1/persons/{person}/cards"))
        .header("Idempotency-Key", format!("card-{person}"))
        .json(&serde_json::json!({ "kind": "ecard", "channel": "kiosk" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let card: serde_json::Value = res.json().await.unwrap();
    (
        person,
        card["card_id"].as_str().unwrap().parse().unwrap(),
        card["card_number"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn no_secret_id_number_or_phone_number_reaches_any_log_line() {
    let file = jyt_testkit::logs::capture().expect("this process's logs are captured");

    // A database URL with a password (the test server trusts every login,
    // so the password is accepted and must never be printed).
    let db_password = format!("db-pw-{}", Uuid::new_v4().simple());
    let database = jyt_testkit::fresh_database("slotlogs").await;
    let database = database.replacen("postgres@", &format!("postgres:{db_password}@"), 1);
    assert!(database.contains(&db_password));
    let prefix = jyt_testkit::fresh_redis_prefix();
    let h = spawn_hospital_on(
        "logs",
        &prefix,
        database,
        &jyt_testkit::redis_url(),
        ALL_SEATS_COMMON,
    )
    .await;
    let city = FaultCity::spawn(h, &prefix, &[]).await;
    let h = &city.hospital;
    let slots = h.seed_visit_day(3).await;
    let (accounting, _, session) = spawn_accounting(&prefix).await;
    let http = &city.cards.http;
    let cards = city.cards.base_url.clone();

    let mut personal: Vec<String> = Vec::new();
    let mut people = Vec::new();
    for _ in 0..4 {
        let id_number = random_id_number();
        let phone = format!("13{}", 100_000_000 + Uuid::new_v4().as_u128() % 800_000_000);
        let (person, card_id, card_number) = register(&city, &id_number, &phone).await;
        personal.push(id_number.clone());
        personal.push(phone.clone());
        people.push((person, card_id, card_number, id_number, phone));
    }
    let (holder, holder_card, holder_number, holder_id, holder_phone) = people[0].clone();

    // Registering again, searching, and bad input that carries personal data.
    let res = http
        .post(format!("{cards}/v1/persons"))
        .json(&serde_json::json!({ "name": "日志测试", "id_number": holder_id, "phone": holder_phone }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .post(format!("{cards}/v1/persons/search"))
        .json(&serde_json::json!({ "id_number": holder_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut wrong_check = holder_id[..17].to_owned();
    wrong_check.push(if holder_id.ends_with('0') { '1' } else { '0' });
    personal.push(wrong_check.clone());
    for body in [
        serde_json::json!({ "name": "日志测试", "id_number": wrong_check, "phone": holder_phone }),
        serde_json::json!({ "name": "日志测试", "id_number": holder_id, "phone": format!("{holder_phone}9") }),
        serde_json::json!({ "name": holder_id, "id_number": "1", "phone": holder_phone }),
        serde_json::json!({ "id_number": holder_id, "unexpected": holder_phone }),
    ] {
        let res = http
            .post(format!("{cards}/v1/persons"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16() / 100, 4, "{body}");
    }
    let res = http
        .post(format!("{cards}/v1/persons/search"))
        .json(&serde_json::json!({ "id_number": wrong_check }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16() / 100, 4);
    let res = http
        .get(format!("{cards}/v1/persons/{holder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // E-cards and family.
    let token_res = http
        .post(format!("{cards}/v1/cards/{holder_card}/ecard-token"))
        .send()
        .await
        .unwrap();
    let token = token_res.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = people[1].0;
    city.cards.bind_family(holder, member).await;

    // Bookings through the gateway: by card, by e-card for a family
    // member, with an ID number where a card number belongs, and paid.
    let slot = &slots[0];
    let book = |body: serde_json::Value, app: &'static str| {
        let key = format!("k-{}", Uuid::new_v4());
        jyt_system_tests::signed(
            http,
            &city.gateway_url,
            app,
            Method::POST,
            "/v1/bookings",
            Some(&body),
        )
        .header("Idempotency-Key", key)
        .send()
    };
    let res = book(
        serde_json::json!({ "slot_id": slot.to_string(), "card_number": holder_number }),
        "wechat",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let booking: serde_json::Value = res.json().await.unwrap();
    let res = book(
        serde_json::json!({ "slot_id": slot.to_string(), "ecard_token": token, "patient_id": member }),
        "wechat",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let res = book(
        serde_json::json!({ "slot_id": slot.to_string(), "card_number": people[2].3 }),
        "kiosk",
    )
    .await
    .unwrap();
    assert_eq!(res.status().as_u16() / 100, 4);
    let res = book(
        serde_json::json!({ "slot_id": slot.to_string(), "ecard_token": people[2].4 }),
        "kiosk",
    )
    .await
    .unwrap();
    assert_eq!(res.status().as_u16() / 100, 4);
    let id = booking["booking_id"].as_str().unwrap();
    let res = jyt_system_tests::signed(
        http,
        &city.gateway_url,
        "wechat",
        Method::POST,
        &format!("/v1/bookings/{id}/payments"),
        Some(&serde_json::json!({ "payment_method": "self_pay", "payment_reference": "tx-logs-1", "amount_fen": booking["fee_fen"] })),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);

    // Prepaid: top up, pay a fee from the card.
    let res = http
        .post(format!("{cards}/v1/cards/{holder_card}/top-ups"))
        .header("Idempotency-Key", "top-up-logs")
        .json(&serde_json::json!({ "amount_fen": 50_000, "payment_method": "wechat_pay", "payment_reference": "wx-logs-1" }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success() || res.status().is_client_error());

    // Signing failures: a wrong secret, an unknown app.
    let wrong_secret = format!("wrong-secret-{}", Uuid::new_v4().simple());
    let headers = jyt_signing::channel::sign_request(
        "wechat",
        wrong_secret.as_bytes(),
        "GET",
        "/v1/hospitals",
        b"",
        chrono::Utc::now().timestamp(),
        &jyt_signing::channel::new_nonce(),
    );
    let req = headers.pairs().into_iter().fold(
        http.get(format!("{}/v1/hospitals", city.gateway_url)),
        |r, (k, v)| r.header(k, v),
    );
    let res = req.send().await.unwrap();
    assert_eq!(problem(res).await["code"], "BAD_SIGNATURE");

    // Operators: a wrong password, and a session in use.
    let res = http
        .post(format!("{accounting}/v1/operators/login"))
        .json(&serde_json::json!({ "login": "city_ops", "password": "wrong-password-Zq9v" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http
        .get(format!("{accounting}/v1/operators/me"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Registration through the gateway (issue 22): /v1 and FHIR, good and
    // bad ID numbers, the same number again and a bad name.
    let signed_post = |path: &'static str, body: serde_json::Value| {
        jyt_system_tests::signed(http, &city.gateway_url, "wechat", Method::POST, path, Some(&body)).send()
    };
    let gw_id = random_id_number();
    let gw_phone = format!("13{}", 100_000_000 + Uuid::new_v4().as_u128() % 800_000_000);
    let mut gw_wrong = gw_id[..17].to_owned();
    gw_wrong.push(if gw_id.ends_with('0') { '1' } else { '0' });
    personal.extend([gw_id.clone(), gw_phone.clone(), gw_wrong.clone()]);
    for (body, status) in [
        (
            serde_json::json!({ "name": "网关登记", "id_number": gw_id, "phone": gw_phone }),
            201,
        ),
        (
            serde_json::json!({ "name": "网关登记", "id_number": gw_id, "phone": gw_phone }),
            200,
        ),
        (
            serde_json::json!({ "name": "网关登记", "id_number": gw_wrong, "phone": gw_phone }),
            400,
        ),
        (
            serde_json::json!({ "name": gw_id, "id_number": gw_id, "phone": gw_phone }),
            409,
        ),
    ] {
        let res = signed_post("/v1/patients", body).await.unwrap();
        assert_eq!(res.status(), status);
    }
    let fhir = serde_json::json!({
        "resourceType": "Patient",
        "name": [{ "text": "网关登记" }],
        "identifier": [{ "system": "urn:jyt:resident-id", "value": gw_wrong }],
        "telecom": [{ "system": "phone", "value": gw_phone }],
    });
    assert_eq!(signed_post("/fhir/Patient", fhir).await.unwrap().status(), 400);

    // A failing database write (the hospital logs the error).
    h.sql(
        "CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_outbox();",
    )
    .await;
    let res = book(
        serde_json::json!({ "slot_id": slots[1].to_string(), "card_number": people[3].2 }),
        "kiosk",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 503);

    // Let background work (outbox relay, notifications) log too.
    jyt_testkit::eventually(
        std::time::Duration::from_secs(30),
        "the booking events to be relayed",
        || async {
            let client = h.state.pool.get().await.ok()?;
            let unsent: i64 = client
                .query_one(jyt_events::UNRELAYED_SQL, &[])
                .await
                .ok()?
                .get(0);
            (unsent == 0).then_some(())
        },
    )
    .await;

    let logs = jyt_testkit::logs::read_own();
    let lines = logs.lines().count();
    assert!(
        lines > 20,
        "the services logged ({lines} lines in {})",
        file.display()
    );
    // What the suite's scan looks for (tests/support's and the settings'
    // secrets among them), and every exact value this test used or was
    // given, minted ones too.
    let mut secrets = logscan::collect_secrets(workspace());
    for value in [TEST_APP_SECRET, "city-ops-test-password"] {
        assert!(
            secrets.iter().any(|s| s.value == value),
            "the suite's scan does not know tests/support's {}",
            logscan::mask(value)
        );
    }
    let exact = [
        wrong_secret,
        db_password,
        "wrong-password-Zq9v".to_owned(),
        session,
        token,
    ]
    .into_iter()
    .chain(personal);
    secrets.extend(exact.map(|value| Secret {
        value,
        source: "this test".to_owned(),
    }));
    let mut leaks = Vec::new();
    for (n, line) in logs.lines().enumerate() {
        for hit in logscan::scan_line(line, &secrets) {
            leaks.push(format!(
                "{}:{}: {} {}",
                file.display(),
                n + 1,
                hit.rule,
                hit.masked
            ));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks in {lines} log lines:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    eprintln!("scanned {lines} log lines: no secret, ID number or phone number");
    if std::env::var_os("JYT_PRINT_LOGS").is_some() {
        eprintln!("{logs}");
    }
}

/// The suite's scan recognises a resident ID number exactly as
/// card-issuing validates one.
#[test]
fn the_scan_checks_id_numbers_as_card_issuing_does() {
    for _ in 0..500 {
        let id = random_id_number();
        let first17 = &id.as_bytes()[..17];
        assert_eq!(
            logscan::id_check_char(first17),
            card_issuing::identity::id_check_char(first17)
        );
        let hits = logscan::scan_line(&format!("{{\"message\":\"id {id}\"}}"), &[]);
        assert_eq!(hits.len(), 1, "{}", logscan::mask(&id));
        let mut wrong = id[..17].to_owned();
        wrong.push(if id.ends_with('0') { '1' } else { '0' });
        assert!(logscan::scan_line(&wrong, &[]).is_empty());
    }
}
