//! No secret, ID number or phone number in any log line. This binary runs
//! alone in its process so that it owns the process's log subscriber: the
//! services' own JSON format, every level of our crates (stricter than
//! production's `info`), with span fields. It drives every service through
//! the paths that carry personal data and secrets (registration, search,
//! cards and e-cards, bookings and payments, family binding, prepaid
//! top-ups, operator login, bad input that puts personal data where it does
//! not belong, failing signatures, a failing database), then scans every
//! captured line for the exact values it used and for anything shaped like
//! a resident ID number (with a valid check digit) or a mobile number.

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use jyt_system_tests::city::random_id_number;
use jyt_system_tests::faults::{FaultCity, spawn_hospital_on};
use jyt_system_tests::{ALL_SEATS_COMMON, TEST_APP_SECRET, problem, spawn_accounting};
use reqwest::Method;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

/// Every log line of the process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs of characters that are not letters, digits or `-` bound a token:
/// UUIDs and hex never make a phone or ID-number-shaped token.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|t| !t.is_empty())
}

fn looks_like_id_number(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 18
        && b[..17].iter().all(u8::is_ascii_digit)
        && (b[17].is_ascii_digit() || b[17] == b'X' || b[17] == b'x')
        && card_issuing::identity::id_check_char(&b[..17]).is_some_and(|c| c == b[17].to_ascii_uppercase())
}

fn looks_like_phone(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) && b.iter().all(u8::is_ascii_digit)
}

/// Register a person with a known ID number and phone; (person, card).
async fn register(city: &FaultCity, id_number: &str, phone: &str) -> (Uuid, Uuid, String) {
    let http = &city.http;
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
async fn no_secret_id_number_or_phone_number_reaches_any_log_line() {
    let captured = Captured::default();
    let filter = EnvFilter::new(
        "info,gateway=trace,slot_inventory=trace,card_issuing=trace,channel_accounting=trace,\
         jyt_web=trace,jyt_db=trace,jyt_cache=trace,jyt_events=trace,jyt_settings=trace",
    );
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter(filter)
        .with_writer(captured.clone())
        .init();

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
    let slots = h.seed_tomorrow(3).await;
    let (accounting, _, session) = spawn_accounting(&prefix).await;
    let http = &city.http;
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
    let headers = gateway::signing::sign_request(
        "wechat",
        wrong_secret.as_bytes(),
        "GET",
        "/v1/hospitals",
        b"",
        chrono::Utc::now().timestamp(),
        &gateway::signing::new_nonce(),
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
                .query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[])
                .await
                .ok()?
                .get(0);
            (unsent == 0).then_some(())
        },
    )
    .await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let lines = logs.lines().count();
    assert!(lines > 20, "the services logged ({lines} lines)");
    let secrets = [
        TEST_APP_SECRET.to_owned(),
        wrong_secret,
        db_password,
        "wrong-password-Zq9v".to_owned(),
        "city-ops-test-password".to_owned(),
        session,
        token,
        // card-issuing's built-in keys (the tests run on its defaults).
        "cEIfJwfQSiHB6KeoWdG6pVdmA84oNkASyufu5H0T2CU=".to_owned(),
        "wigY88kYCH+SNwpIDX/K36eRxWI+FreZBqkpAWRu5Jk=".to_owned(),
        "XxjJ9b/JvRvfa1W68mShcSOquMVhjdhSfK+ij8OIU0U=".to_owned(),
    ];
    let mut leaks = Vec::new();
    for line in logs.lines() {
        for s in secrets.iter().chain(&personal) {
            if line.contains(s.as_str()) {
                leaks.push(format!("{s}: {line}"));
            }
        }
        for t in tokens(line) {
            if looks_like_id_number(t) || looks_like_phone(t) {
                leaks.push(format!("{t}: {line}"));
            }
        }
    }
    leaks.dedup();
    assert!(
        leaks.is_empty(),
        "{} leaking log lines of {lines}:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    eprintln!("scanned {lines} log lines: no secret, ID number or phone number");
    if std::env::var_os("JYT_PRINT_LOGS").is_some() {
        eprintln!("{logs}");
    }
}
