//! With an OTLP endpoint configured, one booking is one trace: the
//! gateway's server span, its call to the hospital, slot-inventory's server
//! span, the Redis script and the PostgreSQL insert, parent to child. The
//! export is received by a minimal OTLP/HTTP receiver here that decodes the
//! protobuf with the OpenTelemetry proto types. Alone in its process: it
//! owns the process's tracer provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use jyt_system_tests::{TestCity, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

type Received = Arc<Mutex<Vec<Span>>>;

async fn receive(body: web::Bytes, received: web::Data<Received>) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return HttpResponse::BadRequest().finish();
    };
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(spans);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

const SERVER: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_booking_is_one_trace_from_the_gateway_to_redis_and_postgresql() {
    let received: Received = Arc::default();
    let server = {
        let received = web::Data::new(received.clone());
        HttpServer::new(move || {
            App::new()
                .app_data(received.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/v1/traces", web::post().to(receive))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap()
    };
    let endpoint = format!("http://127.0.0.1:{}", server.addrs()[0].port());
    tokio::spawn(server.run());

    let settings = jyt_settings::TelemetrySettings {
        log_format: jyt_settings::LogFormat::Pretty,
        log_filter: "warn".into(),
        otlp_endpoint: Some(endpoint),
    };
    let guard = jyt_telemetry::init("jyt-otlp-test", &settings).unwrap();

    let city = TestCity::spawn(&["pumch"]).await;
    let slots = city.hospital(0).seed_visit_day(3).await;
    let patient = city.patient().await;
    let res = city.book(&slots[10], patient, "kiosk", "otlp-1").await;
    assert_eq!(res.status(), 201);

    // Shutting the provider down flushes the batch exporter (blocking).
    tokio::task::spawn_blocking(move || drop(guard)).await.unwrap();
    let spans: Vec<Span> = eventually(Duration::from_secs(20), "the booking's spans exported", || {
        let received = received.clone();
        async move {
            let spans = received
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let done = spans.iter().any(|s| s.name == "INSERT bookings");
            done.then_some(spans)
        }
    })
    .await;

    let redis = spans
        .iter()
        .find(|s| s.name == "EVALSHA hold.lua")
        .expect("the Redis script span");
    let trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == redis.trace_id).collect();
    let by_id: HashMap<&[u8], &Span> = trace.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
    let postgres = trace
        .iter()
        .find(|s| s.name == "INSERT bookings")
        .expect("the PostgreSQL insert is in the same trace");
    let attribute = |s: &Span, key: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
    };
    assert!(attribute(redis, "db.system").contains("redis"));
    assert!(attribute(postgres, "db.system").contains("postgresql"));

    // Walk up from the Redis span: the slot-inventory's server span, the
    // gateway's call to it, the gateway's server span at the root.
    let mut chain = Vec::new();
    let mut at = redis;
    while let Some(parent) = by_id.get(at.parent_span_id.as_slice()) {
        chain.push(*parent);
        at = parent;
    }
    let servers = chain.iter().filter(|s| s.kind == SERVER).count();
    assert!(
        servers >= 2,
        "the Redis span descends from both services' server spans: {:?}",
        chain.iter().map(|s| (&s.name, s.kind)).collect::<Vec<_>>()
    );
    assert!(at.parent_span_id.is_empty(), "the chain ends at the trace's root");
    assert_eq!(at.kind, SERVER, "the root is the gateway's server span");
}
