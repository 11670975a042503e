//! Refunds are executed exactly once, and every view of the money agrees
//! to the fen: paid bookings (prepaid card, self-pay, insurance) are
//! cancelled or stopped (停诊); card-issuing credits the card fees back,
//! the owning channel app gets a signed refund instruction for the others
//! and a `refund.issued` notice for each; card-issuing's ledger,
//! channel-accounting's money report and the channel's statement
//! reconciliation then agree, and still agree after every stream entry is
//! delivered a second time.

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jyt_cache::redis;
use jyt_domain::SlotRef;
use jyt_system_tests::{ALL_SEATS_COMMON, Callback, TestCity, TestPatient, eventually, spawn_accounting};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const TOP_UP_FEN: i64 = 50_000;

/// One paid (or unpaid) booking and what became of it.
#[derive(Debug, Clone)]
struct Paid {
    booking_id: String,
    schedule_id: String,
    /// `self_pay`, `insurance`, `prepaid_card`, or "" (never paid).
    method: &'static str,
    fee: i64,
    /// The channel's own transaction id (self_pay, insurance).
    transaction: Option<String>,
    patient: TestPatient,
    refunded: bool,
}

struct Scene {
    city: TestCity,
    callback: Callback,
    accounting: String,
    token: String,
}

impl Scene {
    /// A city of one hospital (zhongri, every seat common) whose WeChat app
    /// takes notices at `callback`, with channel-accounting; and the
    /// hospital's visit-day slots.
    async fn start(callback: Callback, settings: &[(&str, &str)]) -> (Scene, Vec<SlotRef>) {
        let mut settings = settings.to_vec();
        settings.push(("CHANNEL_APPS__WECHAT__CALLBACK_URL", &callback.url));
        let city = TestCity::spawn_configured(&["zhongri"], &settings, ALL_SEATS_COMMON).await;
        let (accounting, _db, token) = spawn_accounting(&city.redis_prefix).await;
        let slots = city.hospital(0).seed_visit_day(10).await;
        let scene = Scene {
            city,
            callback,
            accounting,
            token,
        };
        (scene, slots)
    }

    async fn book(&self, slot: &SlotRef, method: &'static str, key: &str) -> Paid {
        let patient = self.city.cards.register().await;
        if method == "prepaid_card" {
            let res = self
                .city
                .cards
                .http
                .post(format!(
                    "{}/v1/cards/{}/top-ups",
                    self.city.cards.base_url, patient.card_id
                ))
                .json(&json!({ "amount_fen": TOP_UP_FEN, "channel": "wechat", "channel_ref": format!("wx{}", Uuid::new_v4().simple()) }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
        }
        let res = self.city.book(slot, patient.person_id, "wechat", key).await;
        assert_eq!(res.status(), 201, "{key}");
        let booking: Value = res.json().await.unwrap();
        let booking_id = booking["booking_id"].as_str().unwrap().to_owned();
        let fee = booking["fee_fen"].as_i64().unwrap();
        let transaction = matches!(method, "self_pay" | "insurance")
            .then(|| format!("4200{}", &Uuid::new_v4().simple().to_string()[..16]));
        let body = match method {
            "prepaid_card" => json!({ "payment_method": method, "card_number": patient.card_number }),
            "" => Value::Null,
            _ => json!({ "payment_method": method, "payment_reference": transaction, "amount_fen": fee }),
        };
        if !body.is_null() {
            let res = self
                .city
                .signed(
                    "wechat",
                    Method::POST,
                    &format!("/v1/bookings/{booking_id}/payments"),
                    Some(&body),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{key}: {}", res.text().await.unwrap());
        }
        Paid {
            booking_id,
            schedule_id: booking["schedule_id"].as_str().unwrap().to_owned(),
            method,
            fee,
            transaction,
            patient,
            refunded: false,
        }
    }

    async fn cancel(&self, p: &mut Paid) {
        let res = self
            .city
            .signed(
                "wechat",
                Method::POST,
                &format!("/v1/bookings/{}/cancel", p.booking_id),
                Some(&json!({ "card_number": p.patient.card_number })),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        p.refunded = !p.method.is_empty();
    }

    async fn report(&self, path: &str) -> Value {
        let today = jyt_domain::time::today();
        self.city
            .http
            .get(format!("{}{path}?date={today}", self.accounting))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn card_report(&self) -> Value {
        let today = jyt_domain::time::today();
        self.city
            .cards
            .http
            .get(format!(
                "{}/v1/reports/daily-balances?date={today}",
                self.city.cards.base_url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn card_balance(&self, p: &TestPatient) -> i64 {
        self.city.cards.ledger(p.card_id).await["balance_fen"]
            .as_i64()
            .unwrap()
    }
}

/// (fees, fee count, refunds, refund count) per payment method.
type Totals = BTreeMap<String, (i64, i64, i64, i64)>;

fn expected(all: &[Paid]) -> Totals {
    let mut t = Totals::new();
    for p in all.iter().filter(|p| !p.method.is_empty()) {
        let row = t.entry(p.method.to_owned()).or_default();
        row.0 += p.fee;
        row.1 += 1;
        if p.refunded {
            row.2 += p.fee;
            row.3 += 1;
        }
    }
    t
}

/// channel-accounting's money report for the test hospital, by method.
fn money_rows(report: &Value, hospital: &str) -> Totals {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["hospital_id"] == hospital && r["channel"] == "wechat")
        .map(|r| {
            (
                r["payment_method"].as_str().unwrap().to_owned(),
                (
                    r["fees_fen"].as_i64().unwrap(),
                    r["fee_count"].as_i64().unwrap(),
                    r["refunds_fen"].as_i64().unwrap(),
                    r["refund_count"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// card-issuing's day for the wechat channel: (fees, fee count, refunds,
/// refund count, top-ups, fee income balance).
fn card_day(report: &Value) -> (i64, i64, i64, i64, i64, i64) {
    let w = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "wechat")
        .cloned()
        .unwrap_or_default();
    let n = |f: &str| w[f].as_i64().unwrap_or(0);
    (
        n("fees_fen"),
        n("fee_count"),
        n("refunds_fen"),
        n("refund_count"),
        n("top_ups_fen"),
        n("fee_income_balance_fen"),
    )
}

/// The channel's statement of the day, as WeChat Pay would write it: its
/// own transaction ids, every payment it took and what it refunded.
fn statement(all: &[Paid]) -> String {
    let today = jyt_domain::time::today();
    let mut lines =
        vec!["trade_time,channel_transaction_id,platform_order_id,amount_fen,status,refund_fen".to_owned()];
    for p in all.iter().filter(|p| p.transaction.is_some()) {
        let (status, refund) = if p.refunded {
            ("refunded", p.fee)
        } else {
            ("paid", 0)
        };
        lines.push(format!(
            "{today} 09:00:00,{},{},{},{status},{refund}",
            p.transaction.as_deref().unwrap_or(""),
            p.booking_id,
            p.fee
        ));
    }
    lines.join("\n") + "\n"
}

/// Every figure agrees: the card ledger, the money report, the notices.
async fn agree(scene: &Scene, all: &[Paid], hospital: &str) {
    let want = expected(all);
    let card_want = want.get("prepaid_card").copied().unwrap_or_default();
    let top_ups =
        TOP_UP_FEN * i64::try_from(all.iter().filter(|p| p.method == "prepaid_card").count()).unwrap();
    // channel-accounting, per payment method, to the fen. The top-ups come
    // from card-issuing's stream and the fees from the hospital's, so one
    // may be counted before the other: wait for both.
    let money = eventually(Duration::from_secs(20), "the money report", || async {
        let report = scene.report("/v1/reports/money").await;
        (money_rows(&report, hospital) == want && report["total_topups_fen"] == top_ups).then_some(report)
    })
    .await;
    assert_eq!(money["total_topups_fen"], top_ups);
    // card-issuing's ledger: the card fees and refunds channel-accounting
    // counted from the booking events, and the top-ups.
    let day = eventually(Duration::from_secs(20), "card-issuing's day", || async {
        let day = card_day(&scene.card_report().await);
        (day.2 == card_want.2).then_some(day)
    })
    .await;
    assert_eq!(
        day,
        (
            card_want.0,
            card_want.1,
            card_want.2,
            card_want.3,
            top_ups,
            card_want.0 - card_want.2
        ),
        "card-issuing (fees, count, refunds, count, top-ups, fee income) against channel-accounting's prepaid_card row"
    );
    for p in all.iter().filter(|p| p.method == "prepaid_card") {
        let spent = if p.refunded { 0 } else { p.fee };
        assert_eq!(
            scene.card_balance(&p.patient).await,
            TOP_UP_FEN - spent,
            "{}",
            p.booking_id
        );
    }
    // Every refund told to the app: an instruction for what the channel
    // took, `refund.issued` for every refund, the amounts summing to the
    // refunds of the money report.
    let refunded: Vec<&Paid> = all.iter().filter(|p| p.refunded).collect();
    let issued = scene
        .callback
        .wait_for("every refund.issued", Duration::from_secs(20), |seen| {
            let issued: BTreeMap<String, i64> = seen
                .iter()
                .filter(|r| r.notice_type() == "refund.issued")
                .map(|r| {
                    (
                        r.booking_id().to_owned(),
                        r.body["refund"]["amount_fen"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            (issued.len() == refunded.len()).then_some(issued)
        })
        .await;
    let want_issued: BTreeMap<String, i64> = refunded.iter().map(|p| (p.booking_id.clone(), p.fee)).collect();
    assert_eq!(issued, want_issued);
    assert_eq!(
        issued.values().sum::<i64>(),
        want.values().map(|r| r.2).sum::<i64>(),
        "refunds told = refunds counted"
    );
    let instructions: BTreeMap<String, (i64, String)> = scene
        .callback
        .delivered()
        .iter()
        .filter(|r| r.notice_type() == "refund.instruction")
        .map(|r| {
            assert!(r.signed_by("wechat"), "signed with the app's secret");
            let refund = &r.body["refund"];
            (
                r.booking_id().to_owned(),
                (
                    refund["amount_fen"].as_i64().unwrap(),
                    refund["channel_transaction_id"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let want_instructions: BTreeMap<String, (i64, String)> = refunded
        .iter()
        .filter(|p| p.method != "prepaid_card")
        .map(|p| (p.booking_id.clone(), (p.fee, p.transaction.clone().unwrap())))
        .collect();
    assert_eq!(
        instructions, want_instructions,
        "an instruction for each refund the channel owes, none for cards"
    );
}

async fn statement_matches(scene: &Scene, all: &[Paid]) {
    let today = jyt_domain::time::today();
    let res = scene
        .city
        .http
        .post(format!(
            "{}/v1/reconciliation/statements?channel=wechat&date={today}",
            scene.accounting
        ))
        .bearer_auth(&scene.token)
        .header("content-type", "text/csv")
        .body(statement(all))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    let lines = all.iter().filter(|p| p.transaction.is_some()).count();
    assert_eq!(report["mismatches"], json!([]), "{report}");
    assert_eq!(
        (report["lines"].as_u64(), report["matched"].as_u64()),
        (Some(lines as u64), Some(lines as u64))
    );
}

/// Deliver every entry of both streams again, as a relay crash after
/// `XADD` would.
async fn redeliver_everything(city: &TestCity) -> usize {
    let mut conn = city.hospital(0).state.redis.clone();
    let mut n = 0;
    for stream in ["events:slot-inventory", "events:card-issuing"] {
        let stream = format!("{}:{stream}", city.redis_prefix);
        let reply: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(&mut conn, &stream)
            .await
            .unwrap();
        for entry in &reply.ids {
            let fields: Vec<(String, String)> = entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap()))
                .collect();
            redis::AsyncCommands::xadd::<_, _, _, _, ()>(&mut conn, &stream, "*", &fields)
                .await
                .unwrap();
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn refunds_of_cancelled_and_stopped_bookings_agree_to_the_fen_across_ledger_report_and_statement() {
    let (scene, slots) = Scene::start(
        Callback::start().await,
        &[
            ("NOTIFICATIONS__POLL_MS", "20"),
            ("NOTIFICATIONS__BACKOFF_BASE_MS", "50"),
        ],
    )
    .await;

    // The cardiology expert clinic (¥100.00): four paid, two cancelled.
    let mut all = Vec::new();
    for (i, method) in ["self_pay", "prepaid_card", "self_pay", "prepaid_card"]
        .into_iter()
        .enumerate()
    {
        all.push(scene.book(&slots[0], method, &format!("rf-a{i}")).await);
    }
    for i in [0, 1] {
        let mut p = all[i].clone();
        scene.cancel(&mut p).await;
        all[i] = p;
    }
    // The paediatrics expert clinic (¥80.00) is stopped (停诊): each paid
    // booking is refunded, the unpaid hold is not.
    let first_stopped = all.len();
    for (i, method) in ["self_pay", "prepaid_card", "", "insurance"]
        .into_iter()
        .enumerate()
    {
        all.push(scene.book(&slots[4], method, &format!("rf-s{i}")).await);
    }
    let h = scene.city.hospital(0);
    let res = h
        .http()
        .post(format!(
            "{}/v1/schedules/{}/stop",
            h.base_url, all[first_stopped].schedule_id
        ))
        .json(&json!({ "reason": "医生停诊" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let outcome: Value = res.json().await.unwrap();
    assert_eq!(outcome["refunds_requested"], 3);
    for p in &mut all[first_stopped..] {
        p.refunded = !p.method.is_empty();
    }

    agree(&scene, &all, "zhongri").await;
    statement_matches(&scene, &all).await;

    // Every entry of both streams delivered again: nothing moves twice.
    // Markers after the copies (one refund of each kind) show when every
    // consumer has read past them.
    assert!(redeliver_everything(&scene.city).await > 0);
    for (i, method) in ["self_pay", "prepaid_card"].into_iter().enumerate() {
        let mut p = scene.book(&slots[2], method, &format!("rf-m{i}")).await;
        scene.cancel(&mut p).await;
        all.push(p);
    }
    agree(&scene, &all, "zhongri").await;
    statement_matches(&scene, &all).await;
    let client =
        jyt_db::tokio_postgres::connect(&scene.city.cards.database_url, jyt_db::tokio_postgres::NoTls)
            .await
            .map(|(client, connection)| {
                tokio::spawn(connection);
                client
            })
            .unwrap();
    let refunds: i64 = client
        .query_one(
            "SELECT count(*) FROM ledger_transactions WHERE kind = 'refund' AND reference LIKE 'refund:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        refunds, 3,
        "one credit per refunded card fee, however often it was asked"
    );
    let unbalanced: i64 = client
        .query_one("SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unbalanced, 0, "card-issuing's entries sum to zero");
    // Each notice once: copies of events schedule nothing twice.
    let ids: Vec<String> = scene.callback.delivered().iter().map(|r| r.notice_id()).collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "no notice sent twice: {ids:?}");
}

/// A channel's transaction id pays one booking. The same id sent again for
/// another booking (a replayed or forged notification) is refused with 409
/// `PAYMENT_REFERENCE_USED` naming `payment_reference`, again the same way
/// when delivered twice; the second booking stays unpaid, and
/// channel-accounting's money report, card-issuing's day and the channel's
/// statement agree to the fen on the one payment. (Before, the hospital's
/// unique index refused it as a 503, which the channel would retry for good.)
#[tokio::test]
async fn a_transaction_id_that_paid_one_booking_is_refused_for_another_and_counted_once() {
    let (scene, slots) = Scene::start(Callback::start().await, &[]).await;
    let paid = scene.book(&slots[0], "self_pay", "rf-once").await;
    let unpaid = scene.book(&slots[0], "", "rf-other").await;
    let body = json!({
        "payment_method": "self_pay",
        "payment_reference": paid.transaction,
        "amount_fen": unpaid.fee,
    });
    for delivery in ["first", "again"] {
        let res = scene
            .city
            .signed(
                "wechat",
                Method::POST,
                &format!("/v1/bookings/{}/payments", unpaid.booking_id),
                Some(&body),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 409, "{delivery}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "PAYMENT_REFERENCE_USED", "{delivery}: {problem}");
        assert_eq!(problem["field"], "payment_reference", "{delivery}: {problem}");
        assert!(
            !problem.to_string().contains(&paid.booking_id),
            "the other booking is not named: {problem}"
        );
    }
    let res = scene.city.get_booking(&unpaid.booking_id).await;
    assert_eq!(res.status(), 200);
    let booking: Value = res.json().await.unwrap();
    assert_eq!(booking["status"], "held", "{booking}");
    agree(&scene, &[paid.clone(), unpaid], "zhongri").await;
    statement_matches(&scene, &[paid]).await;
}
