//! Signed requests: a channel app's request is accepted only with a valid
//! signature, a fresh timestamp and a nonce never seen before; each refusal
//! has its own code. Unsigned operations endpoints stay open.

use chrono::Utc;
use jyt_signing::channel::{self as signing, sign_request};
use jyt_system_tests::{Route, TEST_APP_SECRET, TestCity, problem, spawn_cards, spawn_gateway_with};
use proptest::prelude::*;
use reqwest::Method;

const PATH: &str = "/v1/hospitals";

fn headers(req: reqwest::RequestBuilder, h: &signing::SignedHeaders) -> reqwest::RequestBuilder {
    h.pairs().into_iter().fold(req, |r, (k, v)| r.header(k, v))
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_replayed_nonces_and_unknown_apps_are_refused_each_with_its_code() {
    let city = TestCity::spawn(&["authh"]).await;
    let url = format!("{}{PATH}", city.gateway_url);
    let now = Utc::now().timestamp();
    let secret = TEST_APP_SECRET.as_bytes();

    // A good request passes, once.
    let good = sign_request("wechat", secret, "GET", PATH, b"", now, &signing::new_nonce());
    let res = headers(city.http.get(&url), &good).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let listed: serde_json::Value = res.json().await.unwrap();
    assert_eq!(listed["hospitals"][0]["hospital_id"], "authh");

    // The very same request again: its nonce is spent.
    let res = headers(city.http.get(&url), &good).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(problem(res).await["code"], "REPLAYED_NONCE");

    // Signed with another secret.
    let forged = sign_request(
        "wechat",
        b"not-the-secret-not-the-secret-not-the",
        "GET",
        PATH,
        b"",
        now,
        &signing::new_nonce(),
    );
    let res = headers(city.http.get(&url), &forged).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(problem(res).await["code"], "BAD_SIGNATURE");

    // Signed for another path, or a body changed after signing.
    let other = sign_request(
        "wechat",
        secret,
        "GET",
        "/v1/availability",
        b"",
        now,
        &signing::new_nonce(),
    );
    let res = headers(city.http.get(&url), &other).send().await.unwrap();
    assert_eq!(problem(res).await["code"], "BAD_SIGNATURE");
    let body = br#"{"slot_id":"authh-x"}"#;
    let signed_body = sign_request(
        "wechat",
        secret,
        "POST",
        "/v1/bookings",
        body,
        now,
        &signing::new_nonce(),
    );
    let res = headers(
        city.http.post(format!("{}/v1/bookings", city.gateway_url)),
        &signed_body,
    )
    .header("content-type", "application/json")
    .header("Idempotency-Key", "k")
    .body(r#"{"slot_id":"authh-y"}"#)
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(problem(res).await["code"], "BAD_SIGNATURE");

    // No signature at all.
    let res = city
        .http
        .get(&url)
        .header(signing::APP_ID, "wechat")
        .header(signing::TIMESTAMP, now.to_string())
        .header(signing::NONCE, signing::new_nonce())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(problem(res).await["code"], "BAD_SIGNATURE");

    // Six minutes old, and six minutes ahead, correctly signed.
    for skew in [-360, 360] {
        let stale = sign_request(
            "wechat",
            secret,
            "GET",
            PATH,
            b"",
            now + skew,
            &signing::new_nonce(),
        );
        let res = headers(city.http.get(&url), &stale).send().await.unwrap();
        assert_eq!(res.status(), 401, "skew {skew}");
        assert_eq!(problem(res).await["code"], "STALE_TIMESTAMP");
    }
    // Four minutes is within the window.
    let late = sign_request(
        "wechat",
        secret,
        "GET",
        PATH,
        b"",
        now - 240,
        &signing::new_nonce(),
    );
    assert_eq!(
        headers(city.http.get(&url), &late).send().await.unwrap().status(),
        200
    );

    // No app, or an app we do not know.
    let res = city.http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(problem(res).await["code"], "UNKNOWN_APP");
    let stranger = sign_request("scalperapp", secret, "GET", PATH, b"", now, &signing::new_nonce());
    let res = headers(city.http.get(&url), &stranger).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(problem(res).await["code"], "UNKNOWN_APP");

    // Query parameters may come in any order: they are sorted before signing.
    let q = format!(
        "/v1/hospitals/authh/schedules?date={}",
        jyt_system_tests::visit_day()
    );
    let h = sign_request("kiosk", secret, "GET", &q, b"", now, &signing::new_nonce());
    let res = headers(city.http.get(format!("{}{q}", city.gateway_url)), &h)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Operations endpoints are not signed.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let res = city
            .http
            .get(format!("{}{path}", city.gateway_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn during_a_rotation_both_secrets_are_accepted() {
    let prefix = jyt_testkit::fresh_redis_prefix();
    let cards = spawn_cards(&prefix).await;
    let new = "the-new-secret-the-new-secret-0123456";
    let gateway = spawn_gateway_with(
        &[Route {
            id: "rotate",
            base_url: "http://127.0.0.1:9",
            district: "xicheng",
            level: "secondary",
        }],
        &prefix,
        &cards.base_url,
        1000,
        &[
            ("CHANNEL_APPS__WECHAT__SECRET", new),
            ("CHANNEL_APPS__WECHAT__PREVIOUS_SECRET", TEST_APP_SECRET),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let now = Utc::now().timestamp();
    for secret in [new, TEST_APP_SECRET] {
        let h = sign_request(
            "wechat",
            secret.as_bytes(),
            "GET",
            PATH,
            b"",
            now,
            &signing::new_nonce(),
        );
        let res = headers(http.get(format!("{gateway}{PATH}")), &h)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

/// Arbitrary requests, signed or not: never a 5xx or a dropped connection,
/// and a 4xx whenever a signed header is broken.
#[test]
fn malformed_requests_are_answered_4xx_never_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (gateway, http) = rt.block_on(async {
        let prefix = jyt_testkit::fresh_redis_prefix();
        let cards = spawn_cards(&prefix).await;
        let gateway = spawn_gateway_with(
            &[Route {
                id: "fuzz",
                base_url: "http://127.0.0.1:9",
                district: "xicheng",
                level: "secondary",
            }],
            &prefix,
            &cards.base_url,
            500,
            &[],
        )
        .await;
        (gateway, reqwest::Client::new())
    });

    let path = prop_oneof![
        Just("/v1/bookings".to_owned()),
        Just("/v1/availability".to_owned()),
        Just("/v1/hospitals".to_owned()),
        "/v1/hospitals/[a-z0-9%-]{0,12}/schedules",
        "/v1/bookings/[a-z0-9-]{0,40}",
    ];
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "\\{\"slot_id\": \"fuzz-[a-f0-9-]{0,36}\", \"card_number\": \"[0-9]{0,18}\"( , \"patient_id\": \"[a-z0-9-]{0,36}\")?\\}"
            .prop_map(String::into_bytes),
        "\\{\"ecard_token\": \"[A-Za-z0-9_-]{0,120}\", \"slot_id\": \"fuzz-1\"\\}".prop_map(String::into_bytes),
    ];
    let strategy = (
        prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::PUT)],
        path,
        "[a-z0-9=&%._-]{0,40}",
        body,
        // 0 signs correctly; others break one header.
        0u8..5,
        "[ -~]{0,30}",
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(method, path, query, body, breakage, junk)| {
            let status = rt.block_on(async {
                let target = if query.is_empty() {
                    path.clone()
                } else {
                    format!("{path}?{query}")
                };
                let mut h = sign_request(
                    "app",
                    TEST_APP_SECRET.as_bytes(),
                    method.as_str(),
                    &target,
                    &body,
                    Utc::now().timestamp(),
                    &signing::new_nonce(),
                );
                match breakage {
                    1 => h.signature = junk.clone(),
                    2 => h.nonce = junk.clone(),
                    3 => h.app_id = junk.clone(),
                    _ => {}
                }
                let mut req = http
                    .request(method.clone(), format!("{gateway}{target}"))
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", "fuzz")
                    .body(body.clone());
                for (k, v) in h.pairs() {
                    let v = if breakage == 4 && k == signing::TIMESTAMP {
                        junk.clone()
                    } else {
                        v
                    };
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(res) => res.status().as_u16(),
                    // A header value reqwest itself refuses to send.
                    Err(e) if e.is_builder() => 400,
                    Err(e) => panic!("no answer: {e}"),
                }
            });
            prop_assert!(status < 500, "answered {status}");
            if breakage != 0 {
                prop_assert!(
                    (400..500).contains(&status),
                    "a broken signature answered {status}"
                );
            }
            Ok(())
        })
        .unwrap();
}
