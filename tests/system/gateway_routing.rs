//! A slow or dead hospital answers HOSPITAL_UNAVAILABLE for its own
//! requests, fast once its circuit is open, while bookings at the other
//! hospitals keep their latency.

use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::future::join_all;
use jyt_system_tests::{Route, TestCards, TestHospital, problem, spawn_cards, spawn_gateway_with};
use reqwest::Method;

/// A real HTTP peer that takes 3 s to answer anything.
#[expect(clippy::unwrap_used, reason = "test helper: a failure is a failed test")]
async fn spawn_slow_hospital() -> String {
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            HttpResponse::Ok().json(serde_json::json!({ "schedules": [] }))
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    format!("http://127.0.0.1:{port}")
}

struct Setup {
    gateway: String,
    http: reqwest::Client,
    fast: TestHospital,
    cards: TestCards,
}

async fn setup() -> Setup {
    let prefix = jyt_testkit::fresh_redis_prefix();
    let fast = TestHospital::spawn("fasth", &prefix).await;
    let slow_url = spawn_slow_hospital().await;
    let cards = spawn_cards(&prefix).await;
    // Nothing listens on port 9 (discard): a hospital that is down.
    let routes = [
        Route {
            id: "fasth",
            base_url: &fast.base_url,
            district: "dongcheng",
            level: "tertiary",
        },
        Route {
            id: "slowh",
            base_url: &slow_url,
            district: "dongcheng",
            level: "tertiary",
        },
        Route {
            id: "deadh",
            base_url: "http://127.0.0.1:9",
            district: "dongcheng",
            level: "tertiary",
        },
    ];
    let gateway = spawn_gateway_with(
        &routes,
        &prefix,
        &cards.base_url,
        3000,
        &[
            ("HOSPITALS__SLOWH__TIMEOUT_MS", "300"),
            ("HOSPITALS__SLOWH__MAX_CONCURRENT", "4"),
            ("UPSTREAM__BREAKER_FAILURES", "3"),
            ("UPSTREAM__BREAKER_OPEN_MS", "60000"),
        ],
    )
    .await;
    Setup {
        gateway,
        http: reqwest::Client::new(),
        fast,
        cards,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_hospital_does_not_slow_bookings_at_the_others() {
    let s = setup().await;
    let slots = s.fast.seed_visit_day(50).await;
    let patients = s.cards.register_many(20).await;
    let date = jyt_system_tests::visit_day();

    // Warm up: one booking at the fast hospital, to measure from a warm pool.
    let book = |i: usize| {
        let body = serde_json::json!({
            "slot_id": slots[i % slots.len()].to_string(),
            "card_number": patients[i].card_number,
        });
        let req = jyt_system_tests::signed(
            &s.http,
            &s.gateway,
            "kiosk",
            Method::POST,
            "/v1/bookings",
            Some(&body),
        )
        .header("Idempotency-Key", format!("fast-{i}"));
        async move {
            let started = Instant::now();
            let res = req.send().await.unwrap();
            (res.status().as_u16(), started.elapsed())
        }
    };
    assert_eq!(book(0).await.0, 201);

    // Flood the slow hospital while booking at the fast one.
    let slow_calls: Vec<_> = (0..30)
        .map(|_| {
            jyt_system_tests::signed(
                &s.http,
                &s.gateway,
                "window",
                Method::GET,
                &format!("/v1/hospitals/slowh/schedules?date={date}"),
                None,
            )
            .send()
        })
        .collect();
    let fast_calls: Vec<_> = (1..20).map(book).collect();
    let (slow, fast) = tokio::join!(join_all(slow_calls), join_all(fast_calls));

    for (status, took) in &fast {
        assert_eq!(*status, 201);
        // Generous: the real figure comes from the load test.
        assert!(
            *took < Duration::from_millis(1500),
            "a fast-hospital booking took {took:?}"
        );
    }
    for res in slow {
        let res = res.unwrap();
        assert_eq!(res.status(), 503);
        assert!(res.headers().contains_key("retry-after"));
        let body = problem(res).await;
        assert_eq!(body["code"], "HOSPITAL_UNAVAILABLE");
    }

    // The circuit is open now: the slow hospital is refused at once.
    let started = Instant::now();
    let res = jyt_system_tests::signed(
        &s.http,
        &s.gateway,
        "window",
        Method::GET,
        &format!("/v1/hospitals/slowh/schedules?date={date}"),
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(s.fast.oversold_segments().await.is_empty());
}

#[tokio::test]
async fn a_dead_hospital_answers_hospital_unavailable_for_its_own_requests_only() {
    let s = setup().await;
    let date = jyt_system_tests::visit_day();
    for _ in 0..4 {
        let res = jyt_system_tests::signed(
            &s.http,
            &s.gateway,
            "app",
            Method::GET,
            &format!("/v1/hospitals/deadh/schedules?date={date}"),
            None,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(problem(res).await["code"], "HOSPITAL_UNAVAILABLE");
    }
    let res = jyt_system_tests::signed(
        &s.http,
        &s.gateway,
        "app",
        Method::GET,
        &format!("/v1/hospitals/fasth/schedules?date={date}"),
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
}
