use serde_json::json;
use uuid::Uuid;

use crate::helpers::{
    OPERATOR_ID, OPERATOR_TOKEN, captured_logs, random_id_number, random_phone, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn registering_twice_returns_the_same_masked_person() {
    let app = spawn_app().await;
    let id = random_id_number();
    let phone = random_phone();

    let first = app.register("张三", &id, &phone).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let person = first.body["person_id"].as_str().unwrap().to_owned();
    assert_eq!(
        first.body["id_number_masked"],
        format!("{}********{}", &id[..6], &id[14..])
    );
    assert_eq!(
        first.body["phone_masked"],
        format!("{}****{}", &phone[..3], &phone[7..])
    );
    assert_eq!(
        first.headers["location"].to_str().unwrap(),
        format!("/v1/persons/{person}")
    );

    // Same ID, lower-case x or not, same person: 200, never a second row.
    let again = app.register("张三", &id, &random_phone()).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["person_id"], person.as_str());

    let other_name = app.register("李四", &id, &phone).await;
    assert_eq!(other_name.status, 409);
    assert_eq!(other_name.body["code"], "IDENTITY_CONFLICT");
    assert_eq!(other_name.body["field"], "id_number");

    let rows: i64 = app
        .pool_client()
        .await
        .query_one("SELECT COUNT(*) FROM persons", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);

    let got = app.get(&format!("/v1/persons/{person}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["id_number_masked"], first.body["id_number_masked"]);
    assert!(!got.body.to_string().contains(&id));

    let found = app.post("/v1/persons/search", &json!({ "id_number": id })).await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["person_id"], person.as_str());
    let missing = app
        .post("/v1/persons/search", &json!({ "id_number": random_id_number() }))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["code"], "PERSON_NOT_FOUND");
}

#[tokio::test]
async fn concurrent_registrations_of_one_id_make_one_person() {
    let app = spawn_app().await;
    let id = random_id_number();
    let phone = random_phone();
    let attempts = (0..10).map(|_| app.register("王五", &id, &phone));
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let existing = results.iter().filter(|r| r.status == 200).count();
    assert_eq!((created, existing), (1, 9));
    let ids: std::collections::HashSet<_> = results.iter().map(|r| r.body["person_id"].clone()).collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn invalid_id_numbers_are_refused_naming_the_field_and_reason() {
    let app = spawn_app().await;
    let valid = random_id_number();
    let mut wrong_check = valid.clone();
    let last = wrong_check.pop().unwrap();
    wrong_check.push(if last == '0' { '1' } else { '0' });
    for (id, code) in [
        (wrong_check.as_str(), "ID_NUMBER_BAD_CHECK_DIGIT"),
        ("12345", "ID_NUMBER_MALFORMED"),
        ("11010519491231002Z", "ID_NUMBER_MALFORMED"),
        // 30 February, with a correct check digit.
        ("110105194902300020", "ID_NUMBER_BAD_BIRTH_DATE"),
        // A legacy number with an impossible date.
        ("110105490230002", "ID_NUMBER_BAD_BIRTH_DATE"),
    ] {
        let r = app.register("赵六", id, &random_phone()).await;
        assert_eq!(r.status, 400, "{id}: {:?}", r.body);
        assert_eq!(r.body["code"], code, "{id}");
        assert_eq!(r.body["field"], "id_number", "{id}");
        assert!(!r.body.to_string().contains(id), "the answer echoes no ID number");
    }

    let bad_phone = app.register("赵六", &random_id_number(), "12345").await;
    assert_eq!(bad_phone.status, 400);
    assert_eq!(bad_phone.body["code"], "INVALID_FIELD");
    assert_eq!(bad_phone.body["field"], "phone");

    let missing = app
        .post(
            "/v1/persons",
            &json!({ "id_number": random_id_number(), "phone": random_phone() }),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["field"], "name");
    assert_eq!(missing.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn legacy_15_digit_numbers_are_converted_to_the_same_person() {
    let app = spawn_app().await;
    // 110105 491231 002 → 110105 19491231 002 X
    let r15 = app.register("钱七", "110105491231002", &random_phone()).await;
    assert_eq!(r15.status, 201, "{:?}", r15.body);
    assert_eq!(r15.body["id_number_masked"], "110105********002X");
    assert_eq!(r15.body["birth_date"], "1949-12-31");
    let r18 = app.register("钱七", "11010519491231002x", &random_phone()).await;
    assert_eq!(r18.status, 200);
    assert_eq!(r18.body["person_id"], r15.body["person_id"]);
}

#[tokio::test]
async fn the_database_holds_no_plaintext_id_number_or_phone() {
    let app = spawn_app().await;
    let id = random_id_number();
    let phone = random_phone();
    let insurance = "BJ1234567890";
    let r = app
        .post(
            "/v1/persons",
            &json!({ "name": "孙八", "id_number": id, "phone": phone, "insurance_number": insurance }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["insurance_number_masked"], "********7890");

    let client = app.pool_client().await;
    // Every column of every row, as PostgreSQL prints it (bytea as hex).
    let dump: Vec<String> = client
        .query("SELECT p::text FROM persons p", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(dump.len(), 1);
    let row = &dump[0];
    for secret in [id.as_str(), phone.as_str(), insurance, &id[6..14], &phone[3..]] {
        assert!(!row.contains(secret), "plaintext {secret} in {row}");
        assert!(!row.contains(&hex::encode(secret)), "hex of {secret} in {row}");
    }
    let key_id: String = client
        .query_one("SELECT key_id FROM persons", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key_id, "demo1");
    // The outbox carries no personal data either.
    let events: Vec<String> = client
        .query("SELECT payload::text FROM outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| !e.contains(&id) && !e.contains(&phone)));
}

#[tokio::test]
async fn a_registration_writes_no_id_number_to_the_logs() {
    let app = spawn_app().await;
    let id = random_id_number();
    let phone = random_phone();
    let r = app.register("周九", &id, &phone).await;
    assert_eq!(r.status, 201);
    let person = r.body["person_id"].as_str().unwrap().to_owned();
    // Bad input too: the refusal must not echo the number into a log.
    let mut bad = id.clone();
    bad.pop();
    bad.push(if id.ends_with('0') { '1' } else { '0' });
    assert_eq!(app.register("周九", &bad, &phone).await.status, 400);

    let logs = captured_logs();
    // The capture works: the registration's own log line is there.
    assert!(logs.contains(&person), "registration was not logged at all");
    for secret in [&id, &bad, &phone] {
        assert!(!logs.contains(secret.as_str()), "{secret} leaked into the logs");
    }
}

#[tokio::test]
async fn operators_read_unmasked_data_only_with_a_token_and_every_read_is_audited() {
    let app = spawn_app().await;
    let id = random_id_number();
    let phone = random_phone();
    let person = app.register("吴十", &id, &phone).await.body["person_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/persons/{person}/reveal");

    let anonymous = app.post(&path, &json!({ "reason": "curious" })).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.body["code"], "OPERATOR_UNAUTHORIZED");
    let wrong = app
        .post_as_operator(&path, "guess", &json!({ "reason": "curious" }))
        .await;
    assert_eq!(wrong.status, 401);

    let no_reason = app
        .post_as_operator(&path, OPERATOR_TOKEN, &json!({ "reason": " " }))
        .await;
    assert_eq!(no_reason.status, 400);
    assert_eq!(no_reason.body["field"], "reason");

    let read = app
        .post_as_operator(
            &path,
            OPERATOR_TOKEN,
            &json!({ "reason": "patient complaint #42" }),
        )
        .await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["id_number"], id.as_str());
    assert_eq!(read.body["phone"], phone.as_str());

    let audit = app
        .pool_client()
        .await
        .query(
            "SELECT operator_id, person_id, reason, read_at FROM personal_data_audit",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        audit.len(),
        1,
        "the refused reads left no audit row; the good one did"
    );
    assert_eq!(audit[0].get::<_, String>(0), OPERATOR_ID);
    assert_eq!(audit[0].get::<_, Uuid>(1).to_string(), person);
    assert_eq!(audit[0].get::<_, String>(2), "patient complaint #42");
}

#[tokio::test]
async fn rotated_keys_still_open_old_rows_and_resealing_retires_the_old_key() {
    let old = spawn_app().await;
    let id = random_id_number();
    let first = old.register("郑一", &id, &random_phone()).await;
    assert_eq!(first.status, 201);
    let person = first.body["person_id"].as_str().unwrap().to_owned();

    // Deploy with a second key, now active; the old one stays for reading.
    let new_key = "9a/RFTumOf/HIOKzqg5r+sOvu+6NV/k1ONeEvBGboyI=";
    let rotated = spawn_app_with(
        old.db_url.clone(),
        &[
            ("JYT_CARD_ISSUING__CRYPTO__KEYS__K2", new_key),
            ("JYT_CARD_ISSUING__CRYPTO__ACTIVE_KEY_ID", "k2"),
        ],
    )
    .await;
    let read = rotated.get(&format!("/v1/persons/{person}")).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["id_number_masked"], first.body["id_number_masked"]);
    let second = rotated
        .register("郑二", &random_id_number(), &random_phone())
        .await;
    assert_eq!(second.status, 201);
    let key_ids = |app: &crate::helpers::TestApp| {
        let pool = app.state.pool.clone();
        async move {
            pool.get()
                .await
                .unwrap()
                .query("SELECT key_id FROM persons ORDER BY created_at", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(key_ids(&rotated).await, ["demo1", "k2"]);

    assert_eq!(
        card_issuing::persons::reseal_batch(&rotated.state, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        card_issuing::persons::reseal_batch(&rotated.state, 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(key_ids(&rotated).await, ["k2", "k2"]);

    // The old key id now maps to different key material, so a row still
    // sealed with the old key would fail to open: every row opens.
    let retired = spawn_app_with(
        old.db_url.clone(),
        &[
            ("JYT_CARD_ISSUING__CRYPTO__KEYS__DEMO1", new_key),
            ("JYT_CARD_ISSUING__CRYPTO__KEYS__K2", new_key),
            ("JYT_CARD_ISSUING__CRYPTO__ACTIVE_KEY_ID", "k2"),
        ],
    )
    .await;
    let again = retired.get(&format!("/v1/persons/{person}")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["id_number_masked"], first.body["id_number_masked"]);
    // Same ID, same blind index: still one identity.
    assert_eq!(retired.register("郑一", &id, &random_phone()).await.status, 200);
}
