use card_issuing::verify_ecard_token;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{chip_serial, spawn_app};

#[tokio::test]
async fn issuing_is_idempotent_under_its_key_and_one_live_card_per_kind() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let path = format!("/v1/persons/{person}/cards");
    let body = json!({ "kind": "physical", "channel": "kiosk", "chip_serial": chip_serial() });

    let missing_key = app.post(&path, &body).await;
    assert_eq!(missing_key.status, 400);
    assert_eq!(missing_key.body["code"], "MISSING_HEADER");
    assert_eq!(missing_key.body["field"], "Idempotency-Key");

    let first = app.post_with_key(&path, "issue-1", &body).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let number = first.body["card_number"].as_str().unwrap();
    assert!(card_issuing::cards::card_number_valid(number), "{number}");
    assert!(number.starts_with("9110"));
    assert_eq!(first.body["status"], "active");
    assert_eq!(first.body["balance_fen"], 0);

    let replay = app.post_with_key(&path, "issue-1", &body).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body["card_id"], first.body["card_id"]);

    let reused = app
        .post_with_key(&path, "issue-1", &json!({ "kind": "ecard", "channel": "wechat" }))
        .await;
    assert_eq!(reused.status, 409);
    assert_eq!(reused.body["code"], "IDEMPOTENCY_KEY_REUSED");

    let second = app
        .post_with_key(
            &path,
            "issue-2",
            &json!({ "kind": "physical", "channel": "kiosk", "chip_serial": chip_serial() }),
        )
        .await;
    assert_eq!(second.status, 409);
    assert_eq!(second.body["code"], "CARD_ALREADY_ISSUED");

    let no_chip = app
        .post_with_key(
            &path,
            "issue-3",
            &json!({ "kind": "physical", "channel": "kiosk" }),
        )
        .await;
    assert_eq!(no_chip.status, 400);
    assert_eq!(no_chip.body["field"], "chip_serial");

    let nobody = app
        .post_with_key(&format!("/v1/persons/{}/cards", Uuid::now_v7()), "k", &body)
        .await;
    assert_eq!(nobody.status, 404);
    assert_eq!(nobody.body["code"], "PERSON_NOT_FOUND");
}

#[tokio::test]
async fn loss_then_replacement_keeps_balance_and_history_and_refuses_the_old_card() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "physical").await;
    let old_id = card["card_id"].as_str().unwrap().to_owned();
    let old_number = card["card_number"].as_str().unwrap().to_owned();

    assert_eq!(app.top_up(&old_id, 5_000).await.status, 201);
    let paid = app
        .post(
            &format!("/v1/cards/{old_id}/payments"),
            &json!({ "amount_fen": 1_200, "channel": "kiosk", "reference": "pumch-booking-1" }),
        )
        .await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    assert_eq!(paid.body["balance_fen"], 3_800);

    let resolved = app
        .post("/v1/cards/resolve", &json!({ "card_number": old_number }))
        .await;
    assert_eq!(resolved.status, 200);
    assert_eq!(resolved.body["person"]["person_id"], person.to_string());

    let lost = app
        .post(&format!("/v1/cards/{old_id}/report-loss"), &json!({}))
        .await;
    assert_eq!(lost.status, 200, "{:?}", lost.body);
    assert_eq!(lost.body["status"], "lost");
    // Refused at once.
    let refused = app
        .post("/v1/cards/resolve", &json!({ "card_number": old_number }))
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["code"], "CARD_LOST");
    let no_pay = app
        .post(
            &format!("/v1/cards/{old_id}/payments"),
            &json!({ "amount_fen": 100, "channel": "kiosk", "reference": "pumch-booking-2" }),
        )
        .await;
    assert_eq!(no_pay.status, 403);
    assert_eq!(no_pay.body["code"], "CARD_LOST");

    let replace_body = json!({ "channel": "window", "chip_serial": chip_serial() });
    let replaced = app
        .post(&format!("/v1/cards/{old_id}/replace"), &replace_body)
        .await;
    assert_eq!(replaced.status, 201, "{:?}", replaced.body);
    let new_id = replaced.body["card_id"].as_str().unwrap().to_owned();
    let new_number = replaced.body["card_number"].as_str().unwrap().to_owned();
    assert_ne!(new_number, old_number);
    assert_eq!(replaced.body["balance_fen"], 3_800);
    assert_eq!(replaced.body["replaces_card_id"], old_id.as_str());

    let again = app
        .post(&format!("/v1/cards/{old_id}/replace"), &replace_body)
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["card_id"], new_id.as_str());

    let old_now = app
        .post("/v1/cards/resolve", &json!({ "card_number": old_number }))
        .await;
    assert_eq!(old_now.status, 403);
    assert_eq!(old_now.body["code"], "CARD_REPLACED");
    let new_ok = app
        .post("/v1/cards/resolve", &json!({ "card_number": new_number }))
        .await;
    assert_eq!(new_ok.status, 200);
    assert_eq!(new_ok.body["person"]["person_id"], person.to_string());

    // History follows the person's card chain.
    let history = app.get(&format!("/v1/cards/{new_id}/ledger")).await;
    assert_eq!(history.status, 200);
    assert_eq!(history.body["balance_fen"], 3_800);
    let kinds: Vec<&str> = history.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["top_up", "fee", "transfer", "transfer"]);

    // A fee paid from the old card is refunded to the new one.
    let refund = app
        .post(
            &format!("/v1/cards/{new_id}/refunds"),
            &json!({ "amount_fen": 1_200, "reference": "cancel-1", "refund_of": "pumch-booking-1" }),
        )
        .await;
    assert_eq!(refund.status, 201, "{:?}", refund.body);
    assert_eq!(refund.body["balance_fen"], 5_000);

    let bad_number = app
        .post("/v1/cards/resolve", &json!({ "card_number": "9110000000000001" }))
        .await;
    assert_eq!(bad_number.status, 400);
    assert_eq!(bad_number.body["field"], "card_number");
}

#[tokio::test]
async fn cancelling_pays_the_balance_out() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "physical").await;
    let id = card["card_id"].as_str().unwrap();
    assert_eq!(app.top_up(id, 3_000).await.status, 201);

    let cancelled = app
        .post(&format!("/v1/cards/{id}/cancel"), &json!({ "channel": "window" }))
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["refunded_fen"], 3_000);
    assert_eq!(cancelled.body["card"]["status"], "cancelled");
    assert_eq!(cancelled.body["card"]["balance_fen"], 0);

    let twice = app
        .post(&format!("/v1/cards/{id}/cancel"), &json!({ "channel": "window" }))
        .await;
    assert_eq!(twice.status, 200);
    assert_eq!(twice.body["refunded_fen"], 3_000);
    let top_up = app.top_up(id, 100).await;
    assert_eq!(top_up.body["code"], "CARD_CANCELLED");

    let today = jyt_domain::time::today();
    let report = app.get(&format!("/v1/reports/daily-balances?date={today}")).await;
    assert_eq!(report.status, 200, "{:?}", report.body);
    let window = report.body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "window")
        .unwrap();
    assert_eq!(window["cash_outs_fen"], 3_000);
    assert_eq!(report.body["ledger_sum_fen"], 0);
    // A new physical card may be issued after cancelling.
    app.issue_card(person, "physical").await;
}

#[tokio::test]
async fn ecard_tokens_verify_offline_and_resolve_while_the_card_is_active() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "ecard").await;
    let id = card["card_id"].as_str().unwrap();
    assert!(card["chip_serial"].is_null());

    let token = app.post(&format!("/v1/cards/{id}/ecard-token"), &json!({})).await;
    assert_eq!(token.status, 200, "{:?}", token.body);
    let t = token.body["token"].as_str().unwrap();

    // What the gateway does, with the shared secret and no database.
    let claims = verify_ecard_token(&app.state.ecard_secret.0, t, Utc::now()).unwrap();
    assert_eq!(claims.person_id, person);
    assert_eq!(claims.card_id.to_string(), id);
    assert!(claims.expires_at <= Utc::now() + chrono::Duration::seconds(300));
    assert!(verify_ecard_token(b"not the secret, but 32 bytes....", t, Utc::now()).is_err());

    let resolved = app.post("/v1/cards/resolve", &json!({ "ecard_token": t })).await;
    assert_eq!(resolved.status, 200);
    assert_eq!(resolved.body["person"]["person_id"], person.to_string());
    assert_eq!(resolved.body["kind"], "ecard");

    let mut forged = t.to_owned();
    forged.replace_range(10..11, if &t[10..11] == "A" { "B" } else { "A" });
    let bad = app
        .post("/v1/cards/resolve", &json!({ "ecard_token": forged }))
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body["code"], "ECARD_TOKEN_INVALID");

    let both = app
        .post(
            "/v1/cards/resolve",
            &json!({ "ecard_token": t, "card_number": "4111111111111111" }),
        )
        .await;
    assert_eq!(both.status, 400);

    assert_eq!(
        app.post(&format!("/v1/cards/{id}/report-loss"), &json!({}))
            .await
            .status,
        200
    );
    let lost = app.post("/v1/cards/resolve", &json!({ "ecard_token": t })).await;
    assert_eq!(lost.status, 403);
    assert_eq!(lost.body["code"], "CARD_LOST");
    let no_token = app.post(&format!("/v1/cards/{id}/ecard-token"), &json!({})).await;
    assert_eq!(no_token.body["code"], "CARD_LOST");
}
