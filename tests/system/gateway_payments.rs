//! Paying a held booking through the gateway: a channel's payment
//! notification (twice: confirms once), a payment after the hold expired
//! (refunded, not booked), and the prepaid card (debit, confirm, refund on
//! refusal) against a real card-issuing ledger.
//!
//! The hospital here is a small real HTTP peer speaking slot-inventory's
//! hold/confirm contract (`GET /v1/bookings/{id}`, `POST .../confirm` with
//! `HOLD_EXPIRED`), so the gateway's side is tested whatever state
//! slot-inventory's holds are in; booking ids whose uuid starts with `e`
//! have an expired hold.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::{App, HttpResponse, HttpServer, web};
use jyt_system_tests::{Route, TestCards, problem, signed, spawn_cards, spawn_gateway_with};
use reqwest::Method;
use uuid::Uuid;

const FEE: i64 = 10_000;

#[derive(Default)]
struct Hospital {
    /// booking id → (patient, status, payment reference)
    bookings: HashMap<String, (String, String, Option<String>)>,
    confirms: usize,
}

fn booking_json(id: &str, b: &(String, String, Option<String>)) -> serde_json::Value {
    serde_json::json!({
        "booking_id": id, "patient_id": b.0, "status": b.1, "payment_reference": b.2, "fee_fen": FEE,
    })
}

fn problem_answer(status: u16, code: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type("application/problem+json")
        .json(serde_json::json!({ "type": "x", "title": code, "status": status, "code": code }))
}

async fn book(state: web::Data<Mutex<Hospital>>, body: web::Json<serde_json::Value>) -> HttpResponse {
    let id = body["slot_id"].as_str().unwrap_or_default().to_owned();
    let b = (
        body["patient_id"].as_str().unwrap_or_default().to_owned(),
        "held".to_owned(),
        None,
    );
    let json = booking_json(&id, &b);
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .bookings
        .insert(id, b);
    HttpResponse::Created().json(json)
}

async fn get(state: web::Data<Mutex<Hospital>>, path: web::Path<String>) -> HttpResponse {
    let s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match s.bookings.get(path.as_str()) {
        Some(b) => HttpResponse::Ok().json(booking_json(&path, b)),
        None => problem_answer(404, "BOOKING_NOT_FOUND"),
    }
}

async fn confirm(
    state: web::Data<Mutex<Hospital>>,
    path: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    s.confirms += 1;
    let reference = body["payment_reference"].as_str().map(str::to_owned);
    let expired = path.split_once('-').is_some_and(|(_, id)| id.starts_with('e'));
    let Some(b) = s.bookings.get_mut(path.as_str()) else {
        return problem_answer(404, "BOOKING_NOT_FOUND");
    };
    // As slot-inventory does: the amount the channel collected, when given,
    // must be the fee (the gateway no longer reads the booking for it).
    if body["amount_fen"].as_i64().is_some_and(|amount| amount != FEE) {
        return HttpResponse::BadRequest()
            .content_type("application/problem+json")
            .json(serde_json::json!({ "type": "x", "title": "invalid", "status": 400, "code": "INVALID_FIELD", "field": "amount_fen" }));
    }
    if expired {
        b.1 = "expired".into();
        return problem_answer(409, "HOLD_EXPIRED");
    }
    match b.1.as_str() {
        "held" => {
            b.1 = "confirmed".into();
            b.2 = reference;
        }
        "confirmed" if b.2 == reference => {}
        _ => return problem_answer(409, "ALREADY_CONFIRMED"),
    }
    HttpResponse::Ok().json(booking_json(&path, b))
}

struct Setup {
    gateway: String,
    cards: TestCards,
    http: reqwest::Client,
    hospital: web::Data<Mutex<Hospital>>,
}

#[expect(clippy::unwrap_used, reason = "test helper: a failure is a failed test")]
async fn setup() -> Setup {
    let hospital = web::Data::new(Mutex::new(Hospital::default()));
    let server = {
        let hospital = hospital.clone();
        HttpServer::new(move || {
            App::new()
                .app_data(hospital.clone())
                .route("/v1/bookings", web::post().to(book))
                .route("/v1/bookings/{id}", web::get().to(get))
                .route("/v1/bookings/{id}/confirm", web::post().to(confirm))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap()
    };
    let url = format!("http://127.0.0.1:{}", server.addrs()[0].port());
    tokio::spawn(server.run());
    let prefix = jyt_testkit::fresh_redis_prefix();
    let cards = spawn_cards(&prefix).await;
    let gateway = spawn_gateway_with(
        &[Route {
            id: "payh",
            base_url: &url,
            district: "haidian",
            level: "tertiary",
        }],
        &prefix,
        &cards.base_url,
        2000,
        &[],
    )
    .await;
    Setup {
        gateway,
        cards,
        http: reqwest::Client::new(),
        hospital,
    }
}

#[expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]
impl Setup {
    async fn book(&self, channel: &str, card: &str, expired: bool) -> String {
        let mut id = Uuid::new_v4().to_string();
        id.replace_range(0..1, if expired { "e" } else { "a" });
        let body = serde_json::json!({ "slot_id": format!("payh-{id}"), "card_number": card });
        let res = signed(
            &self.http,
            &self.gateway,
            channel,
            Method::POST,
            "/v1/bookings",
            Some(&body),
        )
        .header("Idempotency-Key", format!("book-{id}"))
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 201);
        format!("payh-{id}")
    }

    async fn pay(&self, channel: &str, booking: &str, body: serde_json::Value) -> reqwest::Response {
        signed(
            &self.http,
            &self.gateway,
            channel,
            Method::POST,
            &format!("/v1/bookings/{booking}/payments"),
            Some(&body),
        )
        .send()
        .await
        .unwrap()
    }

    async fn balance(&self, card_id: Uuid) -> i64 {
        self.cards.card(card_id).await["balance_fen"].as_i64().unwrap()
    }

    async fn top_up(&self, card_id: Uuid, amount: i64) {
        let res = self
            .cards
            .http
            .post(format!("{}/v1/cards/{card_id}/top-ups", self.cards.base_url))
            .json(&serde_json::json!({ "amount_fen": amount, "channel": "kiosk", "channel_ref": Uuid::new_v4().to_string() }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }

    fn confirms(&self) -> usize {
        self.hospital.lock().unwrap().confirms
    }
}

#[tokio::test]
async fn a_payment_notification_delivered_twice_confirms_once_and_a_late_one_is_refunded_not_booked() {
    let s = setup().await;
    let patient = s.cards.register().await;
    let booking = s.book("wechat", &patient.card_number, false).await;
    let notice = serde_json::json!({ "payment_method": "self_pay", "payment_reference": "wx-4200001", "amount_fen": FEE });

    let first = s.pay("wechat", &booking, notice.clone()).await;
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["status"], "confirmed");
    let again = s.pay("wechat", &booking, notice.clone()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(s.confirms(), 1, "the hospital confirmed once");

    // Only the app that made the booking may pay it; only the fee is accepted.
    let res = s.pay("kiosk", &booking, notice.clone()).await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_YOUR_BOOKING");
    let other = s.book("wechat", &patient.card_number, false).await;
    let res = s
        .pay(
            "wechat",
            &other,
            serde_json::json!({ "payment_method": "insurance", "payment_reference": "ins-1", "amount_fen": 1 }),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["field"], "amount_fen");
    // The refusal is not kept as the reference's answer: the channel's
    // corrected notification confirms the booking. Without an amount, 400.
    let res = s
        .pay(
            "wechat",
            &other,
            serde_json::json!({ "payment_method": "insurance", "payment_reference": "ins-1" }),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(problem(res).await["field"], "amount_fen");
    let res = s
        .pay(
            "wechat",
            &other,
            serde_json::json!({ "payment_method": "insurance", "payment_reference": "ins-1", "amount_fen": FEE }),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("idempotency-replayed").is_none());
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "confirmed"
    );

    // Paid after the hold expired: not booked, the channel refunds.
    let late = s.book("wechat", &patient.card_number, true).await;
    let res = s
        .pay(
            "wechat",
            &late,
            serde_json::json!({ "payment_method": "self_pay", "payment_reference": "wx-late", "amount_fen": FEE }),
        )
        .await;
    assert_eq!(res.status(), 409);
    let body = problem(res).await;
    assert_eq!(body["code"], "HOLD_EXPIRED");
    assert!(body["refund"].as_str().unwrap().contains("channel"));
    let res = s
        .pay(
            "wechat",
            &late,
            serde_json::json!({ "payment_method": "self_pay", "payment_reference": "wx-late", "amount_fen": FEE }),
        )
        .await;
    assert_eq!(
        problem(res).await["code"],
        "HOLD_EXPIRED",
        "the duplicate gets the same answer"
    );
}

#[tokio::test]
async fn a_prepaid_card_is_debited_then_confirmed_and_refunded_when_the_hold_had_expired() {
    let s = setup().await;
    let patient = s.cards.register().await;
    s.top_up(patient.card_id, 15_000).await;
    let prepaid = serde_json::json!({ "payment_method": "prepaid_card", "card_number": patient.card_number });

    let booking = s.book("kiosk", &patient.card_number, false).await;
    let res = s.pay("kiosk", &booking, prepaid.clone()).await;
    assert_eq!(res.status(), 200);
    let paid: serde_json::Value = res.json().await.unwrap();
    assert_eq!(paid["status"], "confirmed");
    assert_eq!(
        paid["payment_reference"],
        format!("prepaid:{}", &booking["payh-".len()..])
    );
    assert_eq!(s.balance(patient.card_id).await, 5_000);

    // Not enough left: refused before the hospital is asked.
    let late = s.book("kiosk", &patient.card_number, true).await;
    let confirms = s.confirms();
    let res = s.pay("kiosk", &late, prepaid.clone()).await;
    assert_eq!(res.status(), 409);
    assert_eq!(problem(res).await["code"], "INSUFFICIENT_BALANCE");
    assert_eq!(s.confirms(), confirms);

    // Topped up, but the hold has expired: debited, refused, refunded.
    s.top_up(patient.card_id, 20_000).await;
    let res = s.pay("kiosk", &late, prepaid.clone()).await;
    assert_eq!(res.status(), 409);
    let body = problem(res).await;
    assert_eq!(body["code"], "HOLD_EXPIRED");
    assert!(body["refund"].as_str().unwrap().contains("card"));
    assert_eq!(s.balance(patient.card_id).await, 25_000, "the debit was refunded");
    let ledger: serde_json::Value = s.cards.ledger(patient.card_id).await;
    let text = ledger.to_string();
    assert!(text.contains(&format!("refund:{late}")), "{text}");

    // Someone else's card cannot pay this patient's booking.
    let stranger = s.cards.register().await;
    let mine = s.book("kiosk", &patient.card_number, false).await;
    let res = s
        .pay(
            "kiosk",
            &mine,
            serde_json::json!({ "payment_method": "prepaid_card", "card_number": stranger.card_number }),
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(problem(res).await["code"], "NOT_FAMILY_MEMBER");
}
