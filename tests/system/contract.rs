//! The API contract, from the published document: schemathesis (a
//! property-based API fuzzer, pinned in `tests/contract/setup.sh`) reads
//! the gateway's `/openapi.json` and sends generated requests to every
//! operation. It runs behind a small signing proxy started here, which
//! signs each request exactly as sent (channel routes as the test wechat
//! app, `/federation/v1` with a hospital's key), so the fuzzer reaches the
//! handlers rather than stopping at `401`. Passing means: no 5xx, every
//! status and content type answered is documented for its operation, an
//! unsupported method answers `405` with `Allow`.

#![expect(clippy::expect_used, reason = "test helpers: a failure is a failed test")]

use std::path::PathBuf;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use jyt_domain::time::Clock;
use jyt_system_tests::{TEST_APP_SECRET, TestCity, spawn_console_on};

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contract")
}

/// The fuzzer's binary, installed by `tests/contract/setup.sh` when missing.
async fn fuzzer() -> PathBuf {
    let bin = contract_dir().join(".venv/bin/schemathesis");
    let status = tokio::process::Command::new("bash")
        .arg("setup.sh")
        .current_dir(contract_dir())
        .status()
        .await
        .expect("running tests/contract/setup.sh");
    assert!(status.success(), "tests/contract/setup.sh failed");
    bin
}

struct Upstream {
    gateway: String,
    http: reqwest::Client,
}

/// Sign and pass on one request; the gateway's answer comes back as it was.
async fn relay(req: HttpRequest, body: web::Bytes, up: web::Data<Upstream>) -> HttpResponse {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // Sign what goes on the wire: the URL as the client library sends it.
    let Ok(url) = reqwest::Url::parse(&format!("{}{target}", up.gateway)) else {
        return HttpResponse::BadRequest().finish();
    };
    let sent = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let app = if url.path().starts_with("/federation/") {
        "pumchk1"
    } else {
        "wechat"
    };
    let signed = jyt_signing::channel::sign_request(
        app,
        TEST_APP_SECRET.as_bytes(),
        req.method().as_str(),
        &sent,
        &body,
        Utc::now().timestamp(),
        &jyt_signing::channel::new_nonce(),
    );
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut out = up.http.request(method, url).body(body.to_vec());
    for (name, value) in req.headers() {
        let n = name.as_str();
        // The fuzzer's own try at the signed headers is replaced by ours.
        if [
            "host",
            "content-length",
            "connection",
            "x-app-id",
            "x-timestamp",
            "x-nonce",
            "x-signature",
        ]
        .contains(&n)
        {
            continue;
        }
        out = out.header(n, value.as_bytes());
    }
    for (k, v) in signed.pairs() {
        out = out.header(k, v);
    }
    match out.send().await {
        Ok(res) => {
            let mut answer = HttpResponse::build(
                actix_web::http::StatusCode::from_u16(res.status().as_u16())
                    .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
            );
            for (name, value) in res.headers() {
                if ["content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
                    continue;
                }
                answer.insert_header((name.as_str(), value.as_bytes()));
            }
            answer.body(res.bytes().await.unwrap_or_default())
        }
        Err(e) => HttpResponse::BadGateway().body(format!("proxy: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_schema_holds_under_a_property_based_fuzzer() {
    let fuzzer = fuzzer().await;
    // channel-accounting's survey door answers the survey and satisfaction
    // routes; without it they could only answer 503.
    let prefix = jyt_testkit::fresh_redis_prefix();
    let console = spawn_console_on(&prefix, None, &["pumch", "bjh"]).await;
    let extra = [
        ("HOSPITAL_KEYS__PUMCHK1__HOSPITAL", "pumch"),
        ("HOSPITAL_KEYS__PUMCHK1__SECRET", TEST_APP_SECRET),
        ("CHANNEL_ACCOUNTING__BASE_URL", console.url.as_str()),
    ];
    let city = TestCity::spawn_in(&prefix, &["pumch", "bjh"], &extra, &[], &Clock::System).await;
    city.hospital(0).seed_visit_day(5).await;
    city.hospital(1).seed_visit_day(5).await;

    let upstream = web::Data::new(Upstream {
        gateway: city.gateway_url.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client"),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a proxy port");
    let proxy = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("bound").port()
    );
    let server = HttpServer::new(move || {
        App::new()
            .app_data(upstream.clone())
            .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
            .default_service(web::to(relay))
    })
    .workers(2)
    .listen(listener)
    .expect("the proxy listens")
    .run();
    tokio::spawn(server);

    // Its reports and example database go to a directory of the run's own,
    // not into the source tree.
    let report = std::env::temp_dir().join(format!("jyt-contract-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&report).expect("a report directory");
    let output = tokio::process::Command::new(&fuzzer)
        .args([
            "run",
            &format!("{proxy}/openapi.json"),
            "--url",
            &proxy,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,unsupported_method,allow_header_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",
            "20261204",
            // One worker: CPython 3.11's ast.parse is not thread-safe
            // ("AST constructor recursion depth mismatch" in hypothesis).
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "all",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report)
        .current_dir(&report)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .await
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found contract violations:\n{stdout}\n{stderr}"
    );
    // It tested something: operations and requests, not an empty schema.
    assert!(stdout.contains("passed"), "{stdout}");
    println!("{stdout}");
}
