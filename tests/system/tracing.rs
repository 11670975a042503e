//! W3C trace context flows from the channel, through the gateway, to the
//! hospital's service.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use jyt_system_tests::spawn_gateway;

/// A hospital endpoint that only records the `traceparent` it was sent.
async fn record(req: HttpRequest, seen: web::Data<Mutex<Vec<String>>>) -> HttpResponse {
    let header = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(header);
    HttpResponse::Ok().json(serde_json::json!({ "schedules": [] }))
}

#[tokio::test]
async fn the_gateway_passes_the_callers_trace_on_to_the_hospital() {
    // Telemetry must be installed for spans to carry OpenTelemetry contexts.
    let settings = jyt_settings::TelemetrySettings {
        log_format: jyt_settings::LogFormat::Pretty,
        log_filter: "warn".into(),
        otlp_endpoint: None,
    };
    let _guard = jyt_telemetry::init("system-tests", &settings).unwrap();

    let seen = web::Data::new(Mutex::new(Vec::<String>::new()));
    let recorder = {
        let seen = seen.clone();
        HttpServer::new(move || App::new().app_data(seen.clone()).default_service(web::to(record)))
            .workers(1)
            .bind(("127.0.0.1", 0))
            .unwrap()
    };
    let port = recorder.addrs()[0].port();
    tokio::spawn(recorder.run());
    let hospital_url = format!("http://127.0.0.1:{port}");
    let gateway = spawn_gateway(&[("tracehosp", hospital_url.as_str())], 2000).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let res = jyt_system_tests::signed(
        &reqwest::Client::new(),
        &gateway,
        "kiosk",
        reqwest::Method::GET,
        "/v1/hospitals/tracehosp/schedules?date=2026-12-01",
        None,
    )
    .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);

    let seen = Arc::new(seen.lock().unwrap().clone());
    assert_eq!(seen.len(), 1);
    let parts: Vec<&str> = seen[0].split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {}", seen[0]);
    assert_eq!(parts[1], trace_id, "same trace as the caller");
    assert_ne!(parts[2], caller_span, "the gateway's own span is the parent");
}
