use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Resp, TestApp, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_debits_never_overspend_and_the_ledger_balances() {
    let app = spawn_app().await;
    let id = app.card_with_balance(10_000).await;

    // 200 debits of 1 yuan against 100 yuan: exactly 100 can succeed.
    let debits = (0..200).map(|i| {
        let app = &app;
        let id = &id;
        async move {
            app.post(
                &format!("/v1/cards/{id}/payments"),
                &json!({ "amount_fen": 100, "channel": "wechat", "reference": format!("booking-{i}") }),
            )
            .await
        }
    });
    let results = futures::future::join_all(debits).await;
    let paid = results.iter().filter(|r| r.status == 201).count();
    let refused: Vec<_> = results.iter().filter(|r| r.status != 201).collect();
    assert_eq!(paid, 100, "{:?}", refused.first().map(|r| &r.body));
    assert!(
        refused
            .iter()
            .all(|r| r.status == 409 && r.body["code"] == "INSUFFICIENT_BALANCE")
    );

    let client = app.pool_client().await;
    let balance: i64 = client
        .query_one(
            "SELECT balance FROM accounts WHERE card_id = $1",
            &[&id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, 0);
    let total: i64 = client
        .query_one("SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 0, "all entries sum to zero");
    let unbalanced: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM (SELECT transaction_id FROM ledger_entries
               GROUP BY transaction_id HAVING SUM(amount) <> 0) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unbalanced, 0, "every transaction balances");
    let running_matches_entries: bool = client
        .query_one(
            "SELECT bool_and(a.balance = COALESCE((SELECT SUM(e.amount) FROM ledger_entries e WHERE e.account_id = a.id), 0))
               FROM accounts a WHERE a.kind = 'card'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(running_matches_entries);
    let fees: i64 = client
        .query_one("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'fee'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fees, 100);
}

#[tokio::test]
async fn top_ups_fees_and_refunds_are_idempotent_under_their_references() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "ecard").await;
    let id = card["card_id"].as_str().unwrap();
    let top_up = json!({ "amount_fen": 2_000, "channel": "wechat", "channel_ref": "wx-4200001" });
    let path = format!("/v1/cards/{id}/top-ups");

    let first = app.post(&path, &top_up).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["balance_fen"], 2_000);
    let replay = app.post(&path, &top_up).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.headers["idempotency-replayed"], "true");
    assert_eq!(replay.body["transaction_id"], first.body["transaction_id"]);
    assert_eq!(replay.body["balance_fen"], 2_000);
    let changed = app
        .post(
            &path,
            &json!({ "amount_fen": 1, "channel": "wechat", "channel_ref": "wx-4200001" }),
        )
        .await;
    assert_eq!(changed.status, 409);
    assert_eq!(changed.body["code"], "REFERENCE_REUSED");
    // The same reference from another channel is another payment.
    let kiosk = app
        .post(
            &path,
            &json!({ "amount_fen": 500, "channel": "kiosk", "channel_ref": "wx-4200001" }),
        )
        .await;
    assert_eq!(kiosk.status, 201);
    assert_eq!(kiosk.body["balance_fen"], 2_500);

    let pay = json!({ "amount_fen": 800, "channel": "app", "reference": "bk-1" });
    let paid = app.post(&format!("/v1/cards/{id}/payments"), &pay).await;
    assert_eq!(paid.status, 201);
    assert_eq!(
        app.post(&format!("/v1/cards/{id}/payments"), &pay).await.status,
        200
    );

    let refunds = format!("/v1/cards/{id}/refunds");
    let too_much = app
        .post(
            &refunds,
            &json!({ "amount_fen": 900, "reference": "rf-1", "refund_of": "bk-1" }),
        )
        .await;
    assert_eq!(too_much.status, 409);
    assert_eq!(too_much.body["code"], "REFUND_EXCEEDS_PAYMENT");
    let part = json!({ "amount_fen": 500, "reference": "rf-1", "refund_of": "bk-1" });
    assert_eq!(app.post(&refunds, &part).await.status, 201);
    assert_eq!(app.post(&refunds, &part).await.status, 200);
    let rest = app
        .post(
            &refunds,
            &json!({ "amount_fen": 301, "reference": "rf-2", "refund_of": "bk-1" }),
        )
        .await;
    assert_eq!(rest.body["code"], "REFUND_EXCEEDS_PAYMENT");
    let unknown = app
        .post(
            &refunds,
            &json!({ "amount_fen": 1, "reference": "rf-3", "refund_of": "nope" }),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["code"], "PAYMENT_NOT_FOUND");

    let history = app.get(&format!("/v1/cards/{id}/ledger")).await;
    assert_eq!(history.body["balance_fen"], 2_500 - 800 + 500);
    assert_eq!(history.body["entries"].as_array().unwrap().len(), 4);

    let today = jyt_domain::time::today();
    let report = app.get(&format!("/v1/reports/daily-balances?date={today}")).await;
    assert_eq!(report.status, 200);
    let channel = |name: &str| {
        report.body["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(channel("wechat")["top_ups_fen"], 2_000);
    assert_eq!(channel("wechat")["top_up_count"], 1);
    assert_eq!(channel("wechat")["clearing_balance_fen"], 2_000);
    assert_eq!(channel("kiosk")["top_ups_fen"], 500);
    assert_eq!(channel("app")["fees_fen"], 800);
    assert_eq!(channel("app")["refunds_fen"], 500);
    assert_eq!(channel("app")["fee_income_balance_fen"], 300);
    assert_eq!(report.body["ledger_sum_fen"], 0);

    let bad_date = app.get("/v1/reports/daily-balances?date=2026-13-01").await;
    assert_eq!(bad_date.status, 400);
    assert_eq!(bad_date.body["field"], "date");
}

#[tokio::test]
async fn bad_ledger_input_names_the_field() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "ecard").await;
    let id = card["card_id"].as_str().unwrap();
    let path = format!("/v1/cards/{id}/top-ups");
    for (body, field) in [
        (
            json!({ "amount_fen": 0, "channel": "wechat", "channel_ref": "a" }),
            "amount_fen",
        ),
        (
            json!({ "amount_fen": -5, "channel": "wechat", "channel_ref": "a" }),
            "amount_fen",
        ),
        (
            json!({ "amount_fen": 5, "channel": "alipay", "channel_ref": "a" }),
            "channel",
        ),
        (
            json!({ "amount_fen": 5, "channel": "wechat", "channel_ref": "" }),
            "channel_ref",
        ),
        (json!({ "amount_fen": 5, "channel": "wechat" }), "channel_ref"),
    ] {
        let r = app.post(&path, &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.body["field"], field, "{body}: {:?}", r.body);
    }
    let unknown = app.top_up(&Uuid::now_v7().to_string(), 100).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["code"], "CARD_NOT_FOUND");
    let not_uuid = app.top_up("xyz", 100).await;
    assert_eq!(not_uuid.status, 400);
    assert_eq!(not_uuid.body["field"], "card_id");
}

/// A refund reads what was already refunded of its own fee through an
/// index on the fee (V4), not a walk over every refund the ledger holds
/// (peak-day: 300-400 index entries per refund, growing with history).
/// And the sums stay right: ten fees, each refunded in two parts, each
/// refused a third that would exceed it.
#[tokio::test]
async fn a_refund_reads_only_its_own_fee_s_refunds() {
    let app = spawn_app().await;
    let id = app.card_with_balance(10_000).await;
    let refunds = format!("/v1/cards/{id}/refunds");
    for fee in 0..10 {
        let pay = json!({ "amount_fen": 600, "channel": "app", "reference": format!("bk-{fee}") });
        assert_eq!(
            app.post(&format!("/v1/cards/{id}/payments"), &pay).await.status,
            201
        );
        for (part, amount) in [(0, 400), (1, 200)] {
            let refund = json!({ "amount_fen": amount, "reference": format!("rf-{fee}-{part}"), "refund_of": format!("bk-{fee}") });
            assert_eq!(app.post(&refunds, &refund).await.status, 201);
        }
        let over =
            json!({ "amount_fen": 1, "reference": format!("rf-{fee}-2"), "refund_of": format!("bk-{fee}") });
        let over = app.post(&refunds, &over).await;
        assert_eq!(over.body["code"], "REFUND_EXCEEDS_PAYMENT", "{:?}", over.body);
    }
    let history = app.get(&format!("/v1/cards/{id}/ledger")).await;
    assert_eq!(history.body["balance_fen"], 10_000);

    let client = app.pool_client().await;
    let fee: Uuid = client
        .query_one(
            "SELECT id FROM ledger_transactions WHERE kind = 'fee' AND reference = 'bk-3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let plan = jyt_testkit::explain(
        &client,
        &card_issuing::ledger::REFUNDED_OF_FEE.replace("$1", &format!("'{fee}'")),
    )
    .await;
    assert!(
        plan.iter().any(|l| l.contains("ledger_transactions_refunds_of")),
        "refunds of a fee not read by the fee:\n{}",
        plan.join("\n")
    );
}

/// A payment that passes the check for its reference while another
/// card's payment of that reference is not yet committed meets it in the
/// posting statement itself (`ON CONFLICT DO NOTHING`, waiting on the
/// other's unique entry). It must write no entry and move no balance, and
/// be told the reference is used. The other payment is held open here, in
/// a transaction of the test's own, until the payment waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_meeting_an_uncommitted_one_of_its_reference_posts_nothing() {
    let app = spawn_app().await;
    let cards = [
        app.card_with_balance(10_000).await,
        app.card_with_balance(10_000).await,
    ];
    let (payer, other) = (&cards[0], &cards[1]);
    let mut holder = app.pool_client().await;
    let open = holder.transaction().await.unwrap();
    open.execute(
        "INSERT INTO ledger_transactions (id, kind, reference, card_id, channel, amount)
         VALUES ($1, 'fee', 'booking-raced', $2, 'wechat', 1250)",
        &[&Uuid::now_v7(), &other.parse::<Uuid>().unwrap()],
    )
    .await
    .unwrap();

    let (path, body) = (
        format!("/v1/cards/{payer}/payments"),
        json!({ "amount_fen": 1_250, "channel": "wechat", "reference": "booking-raced" }),
    );
    let payment = app.post(&path, &body);
    let wait_then_commit = async {
        app.until_waiting_on_lock("%INSERT INTO ledger_transactions%", 1)
            .await;
        open.commit().await.unwrap();
    };
    let (answer, ()) = futures::future::join(payment, wait_then_commit).await;
    assert_eq!(
        (answer.status, answer.body["code"].as_str()),
        (409, Some("REFERENCE_REUSED")),
        "{:?}",
        answer.body
    );

    let client = app.pool_client().await;
    let payer_id = payer.parse::<Uuid>().unwrap();
    let row = client
        .query_one(
            "SELECT a.balance,
                    (SELECT COUNT(*) FROM ledger_entries e WHERE e.account_id = a.id),
                    (SELECT COALESCE(SUM(e.amount), 0)::bigint FROM ledger_entries e WHERE e.account_id = a.id),
                    (SELECT COUNT(*) FROM ledger_transactions WHERE card_id = $1 AND kind = 'fee'),
                    (SELECT COUNT(*) FROM ledger_entries e JOIN accounts f ON f.id = e.account_id WHERE f.kind = 'fee_income')
               FROM accounts a WHERE a.card_id = $1",
            &[&payer_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10_000, "the payer's balance did not move");
    assert_eq!(row.get::<_, i64>(1), 1, "the payer has its top-up's entry only");
    assert_eq!(
        row.get::<_, i64>(2),
        10_000,
        "its running balance is the sum of its entries, to the fen"
    );
    assert_eq!(row.get::<_, i64>(3), 0, "no fee transaction of the payer's");
    assert_eq!(row.get::<_, i64>(4), 0, "no fee income was credited");

    // The payer still pays a reference of its own.
    let own = app
        .post(
            &format!("/v1/cards/{payer}/payments"),
            &json!({ "amount_fen": 1_250, "channel": "wechat", "reference": "booking-own" }),
        )
        .await;
    assert_eq!(own.status, 201, "{:?}", own.body);
    assert_eq!(own.body["balance_fen"], 8_750);
}

/// A prepaid payment delivered twice at once: both deliveries wait for the
/// card's lock (held here by a transaction of the test's own), and the
/// second reads the card after the first has taken its whole balance. The
/// lock's statement reads the earlier posting too, in a snapshot taken
/// before the wait, so it cannot see the first delivery's: the second must
/// look again before refusing, and answer as the first was answered, not
/// `INSUFFICIENT_BALANCE`. One debit, and the ledger agrees to the fen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_delivered_twice_while_its_card_is_locked_debits_once_and_answers_both_alike() {
    let app = spawn_app().await;
    let id = app.card_with_balance(1_250).await;
    let card_id = id.parse::<Uuid>().unwrap();

    let mut holder = app.pool_client().await;
    let lock = holder.transaction().await.unwrap();
    lock.execute(
        "SELECT 1 FROM accounts WHERE card_id = $1 FOR UPDATE",
        &[&card_id],
    )
    .await
    .unwrap();
    let (path, body) = (
        format!("/v1/cards/{id}/payments"),
        json!({ "amount_fen": 1_250, "channel": "kiosk", "reference": "booking-twice" }),
    );
    let both = futures::future::join(app.post(&path, &body), app.post(&path, &body));
    let wait_then_release = async {
        app.until_waiting_on_lock("%FOR UPDATE OF a, c%", 2).await;
        lock.commit().await.unwrap();
    };
    let ((first, second), ()) = futures::future::join(both, wait_then_release).await;
    for answer in [&first, &second] {
        assert!(answer.status == 201 || answer.status == 200, "{:?}", answer.body);
    }
    assert_eq!(
        first.body["transaction_id"], second.body["transaction_id"],
        "both deliveries answer the one debit"
    );

    let client = app.pool_client().await;
    let row = client
        .query_one(
            "SELECT a.balance,
                    (SELECT COUNT(*) FROM ledger_transactions WHERE card_id = $1 AND kind = 'fee'),
                    (SELECT COALESCE(SUM(e.amount), 0)::bigint FROM ledger_entries e WHERE e.account_id = a.id),
                    (SELECT COALESCE(SUM(e.amount), 0)::bigint FROM ledger_entries e
                       JOIN accounts f ON f.id = e.account_id WHERE f.kind = 'fee_income'),
                    (SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries)
               FROM accounts a WHERE a.card_id = $1",
            &[&card_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "the balance paid the fee once");
    assert_eq!(row.get::<_, i64>(1), 1, "one fee transaction");
    assert_eq!(
        row.get::<_, i64>(2),
        0,
        "the running balance is the sum of the card's entries"
    );
    assert_eq!(
        row.get::<_, i64>(3),
        1_250,
        "the fee income holds the fee, to the fen"
    );
    assert_eq!(row.get::<_, i64>(4), 0, "all entries sum to zero");
}

/// card-issuing remembers the channels' fee accounts once it has seen
/// them committed. A channel's first fee that is refused after its
/// account was made rolls that account back: here the fee meets, in its
/// posting statement, another card's uncommitted fee of the same
/// reference (held open by a transaction of the test's own), and is told
/// the reference is used. The channel's next fee must make the account
/// again, not post against an id that names nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_account_made_by_a_refused_payment_is_not_remembered() {
    let app = spawn_app().await;
    let cards = [
        app.card_with_balance(10_000).await,
        app.card_with_balance(10_000).await,
    ];
    let app = &app;
    let pay = |card: &str, reference: &str| {
        let (path, body) = (
            format!("/v1/cards/{card}/payments"),
            json!({ "amount_fen": 500, "channel": "phone114", "reference": reference }),
        );
        async move { app.post(&path, &body).await }
    };
    let mut holder = app.pool_client().await;
    let open = holder.transaction().await.unwrap();
    open.execute(
        "INSERT INTO ledger_transactions (id, kind, reference, card_id, channel, amount)
         VALUES ($1, 'fee', 'booking-raced', $2, 'phone114', 500)",
        &[&Uuid::now_v7(), &cards[0].parse::<Uuid>().unwrap()],
    )
    .await
    .unwrap();
    let wait_then_commit = async {
        app.until_waiting_on_lock("%INSERT INTO ledger_transactions%", 1)
            .await;
        open.commit().await.unwrap();
    };
    let (refused, ()) = futures::future::join(pay(&cards[1], "booking-raced"), wait_then_commit).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (409, Some("REFERENCE_REUSED")),
        "{:?}",
        refused.body
    );
    for reference in ["booking-b", "booking-c"] {
        let paid = pay(&cards[1], reference).await;
        assert_eq!(paid.status, 201, "{:?}", paid.body);
    }

    let client = app.pool_client().await;
    let row = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM accounts WHERE kind = 'fee_income' AND channel = 'phone114'),
                    (SELECT COALESCE(SUM(e.amount), 0)::bigint FROM ledger_entries e
                       JOIN accounts f ON f.id = e.account_id WHERE f.kind = 'fee_income' AND f.channel = 'phone114'),
                    (SELECT balance FROM accounts WHERE card_id = $1),
                    (SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries)",
            &[&cards[1].parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "one fee account for the channel");
    assert_eq!(row.get::<_, i64>(1), 1_000, "it holds the two fees, to the fen");
    assert_eq!(row.get::<_, i64>(2), 9_000, "the card paid two fees");
    assert_eq!(row.get::<_, i64>(3), 0, "all entries sum to zero");
}

/// Each movement's event (`card.topped_up`, `card.fee_paid`,
/// `card.refunded`) is written by the posting's own statement: once per
/// movement, with the balance it left, and never by a replay or a
/// refusal. "Its own statement": the event row and the transaction row
/// carry the same transaction id and the same command id (`cmin`), which
/// an event appended after the posting does not.
#[tokio::test]
async fn a_movements_event_is_written_by_its_posting_statement_once() {
    let app = spawn_app().await;
    let person = app.new_person().await;
    let card = app.issue_card(person, "physical").await;
    let id = card["card_id"].as_str().unwrap();

    let topped = posted_and_replayed(
        &app,
        &format!("/v1/cards/{id}/top-ups"),
        &json!({ "amount_fen": 2_000, "channel": "wechat", "channel_ref": "wx-1" }),
    )
    .await;
    let paid = posted_and_replayed(
        &app,
        &format!("/v1/cards/{id}/payments"),
        &json!({ "amount_fen": 800, "channel": "app", "reference": "bk-1" }),
    )
    .await;
    let too_much = json!({ "amount_fen": 5_000, "channel": "app", "reference": "bk-2" });
    let refused = app.post(&format!("/v1/cards/{id}/payments"), &too_much).await;
    assert_eq!(refused.body["code"], "INSUFFICIENT_BALANCE");
    let refunded = posted_and_replayed(
        &app,
        &format!("/v1/cards/{id}/refunds"),
        &json!({ "amount_fen": 500, "reference": "rf-1", "refund_of": "bk-1" }),
    )
    .await;

    let client = app.pool_client().await;
    let rows = client
        .query(
            "SELECT o.event_type, o.aggregate_id, o.payload,
                    o.xmin = t.xmin AND o.cmin = t.cmin AS in_its_statement
               FROM outbox o
               LEFT JOIN ledger_transactions t ON t.id = (o.payload->>'transaction_id')::uuid
              WHERE o.event_type IN ('card.topped_up', 'card.fee_paid', 'card.refunded')
                AND o.aggregate_id = $1
              ORDER BY o.seq",
            &[&id],
        )
        .await
        .unwrap();
    let events: Vec<(String, Value, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(2), r.get::<_, Option<bool>>(3).unwrap_or(false)))
        .collect();
    let types: Vec<&str> = events.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["card.topped_up", "card.fee_paid", "card.refunded"]);
    for ((_, payload, in_its_statement), (answer, reference, channel, amount, balance)) in
        events.iter().zip([
            (&topped, "wechat:wx-1", "wechat", 2_000, 2_000),
            (&paid, "bk-1", "app", 800, 1_200),
            (&refunded, "rf-1", "app", 500, 1_700),
        ])
    {
        assert!(in_its_statement, "written after its posting: {payload}");
        assert_eq!(
            payload,
            &json!({
                "transaction_id": answer.body["transaction_id"],
                "card_id": id,
                "person_id": person,
                "channel": channel,
                "amount_fen": amount,
                "reference": reference,
                "balance_fen": balance,
            })
        );
    }
    assert_eq!(refunded.body["balance_fen"], 1_700);
}

/// Post a movement, then the same again: 201, then the replay's 200. The
/// first answer.
async fn posted_and_replayed(app: &TestApp, path: &str, body: &Value) -> Resp {
    let first = app.post(path, body).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(app.post(path, body).await.status, 200, "the replay");
    first
}
