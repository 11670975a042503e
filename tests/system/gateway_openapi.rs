//! The OpenAPI document describes the channel API, and the answers match it.

use jyt_system_tests::{TestCity, problem};
use reqwest::Method;

#[tokio::test]
async fn openapi_lists_every_path_and_code_and_answers_match_it() {
    let city = TestCity::spawn(&["openh"]).await;
    let doc: serde_json::Value = city
        .http
        .get(format!("{}/openapi.json", city.gateway_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let codes: Vec<String> = doc
        .pointer("/components/schemas/ProblemDoc/properties/code/enum")
        .and_then(|v| v.as_array())
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for code in gateway::error::ALL_CODES {
        assert!(codes.iter().any(|c| c == code), "{code}");
    }

    // Answers use documented statuses and codes.
    let slots = city.hospital(0).seed_visit_day(1).await;
    let cases = [
        (
            city.signed("wechat", Method::GET, "/v1/hospitals", None),
            "/v1/hospitals",
            "get",
        ),
        (
            city.signed("wechat", Method::GET, "/v1/availability?date=x", None),
            "/v1/availability",
            "get",
        ),
        (
            city.http.get(format!("{}/v1/hospitals", city.gateway_url)),
            "/v1/hospitals",
            "get",
        ),
    ];
    for (req, path, method) in cases {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16().to_string();
        let documented = &doc["paths"][path][method]["responses"];
        assert!(
            documented.get(&status).is_some(),
            "{method} {path} answered {status}, not documented"
        );
        if res.status().as_u16() >= 400 {
            let code = problem(res).await["code"].as_str().unwrap().to_owned();
            assert!(codes.contains(&code), "{code}");
        }
    }
    let patient = city.patient().await;
    let res = city.book(&slots[0], patient, "wechat", "o-1").await;
    assert!(
        doc["paths"]["/v1/bookings"]["post"]["responses"]
            .get(res.status().as_str())
            .is_some()
    );
    let res = city.book(&slots[0], city.patient().await, "wechat", "o-2").await;
    assert_eq!(res.status(), 409);
    let code = problem(res).await["code"].as_str().unwrap().to_owned();
    assert!(codes.contains(&code), "{code}");
}
