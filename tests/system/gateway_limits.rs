//! Rate limits answer 429 with Retry-After; the anti-scalping rules slow
//! scalpers down at release time while every honest patient still books.

use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::join_all;
use jyt_system_tests::{TestCity, problem};
use reqwest::Method;

#[tokio::test]
async fn an_app_over_its_rate_gets_429_with_retry_after() {
    let city = TestCity::spawn_with(
        &["rateh"],
        &[("LIMITS__APP_PER_MINUTE", "1"), ("LIMITS__APP_BURST", "3")],
    )
    .await;
    for _ in 0..3 {
        let res = city
            .signed("phone114", Method::GET, "/v1/hospitals", None)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = city
        .signed("phone114", Method::GET, "/v1/hospitals", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body = problem(res).await;
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["limit"], "app");
    // Another app's bucket is its own.
    let res = city
        .signed("window", Method::GET, "/v1/hospitals", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_person_over_their_rate_gets_429_with_retry_after() {
    let city = TestCity::spawn_with(
        &["perh"],
        &[
            ("LIMITS__PERSON_PER_MINUTE", "1"),
            ("LIMITS__PERSON_BURST", "2"),
            ("ANTI_SCALPING__RELEASE_PERSON_PER_MINUTE", "1"),
            ("ANTI_SCALPING__RELEASE_PERSON_BURST", "2"),
        ],
    )
    .await;
    let slots = city.hospital(0).seed_visit_day(20).await;
    let patient = city.patient().await;
    // Two attempts pass the bucket, whatever the hospital then answers.
    assert_eq!(city.book(&slots[0], patient, "wechat", "p-1").await.status(), 201);
    let second = city.book(&slots[0], patient, "wechat", "p-2").await;
    assert_eq!(problem(second).await["code"], "ALREADY_BOOKED");
    let res = city.book(&slots[1], patient, "wechat", "p-3").await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let body = problem(res).await;
    assert_eq!(body["code"], "RATE_LIMITED");
    // Which bucket depends on whether a release window is open right now.
    assert!(
        body["limit"] == "person" || body["limit"] == "person_release_window",
        "{body}"
    );
    // Someone else is not slowed down by it.
    assert_eq!(
        city.book(&slots[1], city.patient().await, "wechat", "p-4")
            .await
            .status(),
        201
    );
}

/// The scalper scenario at release time, all at once, through the WeChat
/// backend (which passes each device's address in X-Client-Address): 30
/// honest patients (one device each, one press of "book"), a scalper with
/// 20 identities behind one address, and a scalper hammering with 2
/// identities from their own devices. Every honest patient must book;
/// the scalpers get no more than the rules let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_release_time_scalpers_are_slowed_and_every_honest_patient_books() {
    // Open a release window now (Asia/Shanghai), so the strict rules apply.
    let release = jyt_domain::time::local(Utc::now() - Duration::minutes(1))
        .format("%H:%M")
        .to_string();
    let city = Arc::new(
        TestCity::spawn_with(
            &["scalp"],
            &[
                ("ANTI_SCALPING__RELEASE_TIMES", &release),
                ("ANTI_SCALPING__RELEASE_WINDOW_SECONDS", "900"),
                ("ANTI_SCALPING__RELEASE_PERSON_PER_MINUTE", "2"),
                ("ANTI_SCALPING__RELEASE_PERSON_BURST", "2"),
                ("ANTI_SCALPING__MAX_PERSONS_PER_ADDRESS", "4"),
            ],
        )
        .await,
    );
    let h = city.hospital(0);
    // Plenty of seats in the WeChat pool; the point is who gets them.
    let slots = h.seed_visit_day(200).await;
    let contested = slots[0].clone();
    let honest = city.cards.register_many(30).await;
    let farm = city.cards.register_many(20).await;
    let hammerers = city.cards.register_many(2).await;

    let book = |card: String, address: String, key: String, slot: jyt_domain::SlotRef| {
        let city = city.clone();
        async move {
            let body = serde_json::json!({ "slot_id": slot.to_string(), "card_number": card });
            let res = city
                .signed("wechat", Method::POST, "/v1/bookings", Some(&body))
                .header("Idempotency-Key", key)
                .header("X-Client-Address", address)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let retry = res.headers().contains_key("retry-after");
            let body: serde_json::Value = res.json().await.unwrap();
            (status, retry, body)
        }
    };

    let mut honest_calls = Vec::new();
    for (i, p) in honest.iter().enumerate() {
        honest_calls.push(book(
            p.card_number.clone(),
            format!("10.1.0.{i}"),
            format!("h-{i}"),
            contested.clone(),
        ));
    }
    let mut farm_calls = Vec::new();
    for (i, p) in farm.iter().enumerate() {
        farm_calls.push(book(
            p.card_number.clone(),
            "10.66.0.1".into(),
            format!("f-{i}"),
            contested.clone(),
        ));
    }
    // Each hammerer fires 15 requests, each for a different segment (a
    // bot trying every slot at once), from their own device.
    let mut hammer_calls = Vec::new();
    for (j, p) in hammerers.iter().enumerate() {
        for (i, slot) in slots.iter().cycle().take(15).enumerate() {
            hammer_calls.push(book(
                p.card_number.clone(),
                format!("10.77.0.{j}"),
                format!("x-{j}-{i}"),
                slot.clone(),
            ));
        }
    }
    let (honest_res, farm_res, hammer_res) = tokio::join!(
        join_all(honest_calls),
        join_all(farm_calls),
        join_all(hammer_calls)
    );

    // Every honest patient booked.
    let honest_ok = honest_res.iter().filter(|r| r.0 == 201).count();
    assert_eq!(
        honest_ok,
        honest.len(),
        "{:?}",
        honest_res.iter().filter(|r| r.0 != 201).collect::<Vec<_>>()
    );

    // The identity farm behind one address got at most 4 identities in.
    let farm_ok = farm_res.iter().filter(|r| r.0 == 201).count();
    assert!(farm_ok <= 4, "{farm_ok}");
    for (status, retry, body) in farm_res.iter().filter(|r| r.0 != 201) {
        assert_eq!(*status, 429, "{body}");
        assert!(retry);
        assert_eq!(body["code"], "RATE_LIMITED");
        assert_eq!(body["limit"], "persons_per_address");
    }

    // Each hammerer got at most the release-window burst through.
    let hammer_ok = hammer_res.iter().filter(|r| r.0 == 201).count();
    assert!(hammer_ok <= 2 * hammerers.len(), "{hammer_ok}");
    let throttled = hammer_res.iter().filter(|r| r.0 == 429 && r.1).count();
    assert!(throttled >= hammer_res.len() - 2 * hammerers.len(), "{throttled}");

    assert!(h.oversold_segments().await.is_empty());
}
