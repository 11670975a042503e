//! The load generator: a closed loop (N connections, each sends its next
//! request when the previous answer is in) and an open loop (a fixed
//! arrival rate; latency counts from the *intended* send time, so a server
//! that falls behind shows it in its tail instead of slowing the client).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use jyt_domain::SlotRef;
use tokio::time::Instant;

use crate::city::APP_SECRET;

/// What one request got back.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// HTTP status; 0 when there was no answer (connection error).
    pub status: u16,
    /// The problem+json `code` of a refusal, or the transport error.
    pub code: String,
    /// For an answer that is a booking (a 201, or a payment, cancellation
    /// or check-in answered with the booking): what the client was told.
    pub booked: Option<Booked>,
}

/// A booking as a client was told it.
#[derive(Debug, Clone, Default)]
pub struct Booked {
    /// As answered: `<hospital>-<uuid>`.
    pub id: String,
    pub status: String,
    pub fee_fen: i64,
    pub pickup_code: String,
    /// RFC 3339, as answered.
    pub starts_at: String,
}

/// One request as the generator saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which request of the phase (index into the phase's plan).
    pub index: usize,
    /// When it was due, since the run's epoch.
    pub due: Duration,
    /// From `due` to the last byte of the answer.
    pub latency: Duration,
    pub outcome: Outcome,
}

/// Run `n` requests over `connections` connections, each waiting for its
/// answer before sending the next.
pub async fn closed_loop<F, Fut>(epoch: Instant, n: usize, connections: usize, send: F) -> Vec<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (send, next) = (send.clone(), next.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= n {
                    return out;
                }
                let started = Instant::now();
                let outcome = send(index).await;
                out.push(Sample {
                    index,
                    due: started - epoch,
                    latency: started.elapsed(),
                    outcome,
                });
            }
        });
    }
    collect(tasks, n).await
}

/// At most this many open-loop requests in flight (so connections): an
/// offered rate above what the server carries would otherwise open a
/// connection per waiting request until the process runs out of file
/// descriptors (seen: `Too many open files` at 0.12 × H). Requests beyond
/// it wait for a connection, and that wait is in their latency.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 2_000;

/// Send `n` requests at `rate` per second, whatever the answers do.
pub async fn open_loop<F, Fut>(epoch: Instant, n: usize, rate: f64, send: F) -> Vec<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let send = Arc::new(send);
    let start = Instant::now();
    let interval = 1.0 / rate.max(1.0);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..n {
        #[expect(clippy::cast_precision_loss, reason = "request counts are far below 2^52")]
        let due = start + Duration::from_secs_f64(interval * index as f64);
        tokio::time::sleep_until(due).await;
        let (send, in_flight) = (send.clone(), in_flight.clone());
        tasks.spawn(async move {
            // Waiting for a connection counts: latency runs from `due`.
            let Ok(_permit) = in_flight.acquire_owned().await else {
                unreachable!("the semaphore is never closed")
            };
            let outcome = send(index).await;
            vec![Sample {
                index,
                due: due - epoch,
                latency: due.elapsed(),
                outcome,
            }]
        });
    }
    collect(tasks, n).await
}

async fn collect(mut tasks: tokio::task::JoinSet<Vec<Sample>>, n: usize) -> Vec<Sample> {
    let mut all = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(samples) => all.extend(samples),
            Err(e) => tracing::error!(error = %e, "a load task failed"),
        }
    }
    all.sort_by_key(|s| s.index);
    all
}

/// The HTTP client of the generator: one connection per closed-loop task.
pub fn http_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections.max(16))
        // Below actix-web's 5 s keep-alive: a connection the server is
        // closing just as the generator reuses it fails the request.
        .pool_idle_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// One booking attempt, signed as `channel`'s app, from a patient's device
/// at `address`.
pub async fn book(
    http: reqwest::Client,
    gateway: Arc<str>,
    channel: &'static str,
    slot: SlotRef,
    card: Arc<str>,
    address: String,
) -> Outcome {
    let body = format!(r#"{{"slot_id":"{slot}","card_number":"{card}"}}"#);
    signed(
        &http,
        &gateway,
        channel,
        reqwest::Method::POST,
        "/v1/bookings",
        Some(body),
        Some(address.as_str()),
    )
    .await
}

/// Any request to the gateway, signed as `channel`'s app (`path` with its
/// query string); a body is sent as JSON with a fresh Idempotency-Key.
pub async fn signed(
    http: &reqwest::Client,
    gateway: &str,
    channel: &'static str,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
    address: Option<&str>,
) -> Outcome {
    let bytes = body.as_deref().unwrap_or_default().as_bytes();
    let signed = jyt_signing::channel::sign_request(
        channel,
        APP_SECRET.as_bytes(),
        method.as_str(),
        path,
        bytes,
        Utc::now().timestamp(),
        &jyt_signing::channel::new_nonce(),
    );
    let mut req = http.request(method, format!("{gateway}{path}"));
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .header("Idempotency-Key", uuid::Uuid::new_v4().simple().to_string())
            .body(body);
    }
    if let Some(address) = address {
        req = req.header("X-Client-Address", address);
    }
    for (k, v) in signed.pairs() {
        req = req.header(k, v);
    }
    answer(req.send().await).await
}

async fn answer(res: reqwest::Result<reqwest::Response>) -> Outcome {
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                status: 0,
                code: format!("transport: {e}"),
                booked: None,
            };
        }
    };
    let status = res.status().as_u16();
    let body: serde_json::Value = match res.bytes().await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(e) => {
            return Outcome {
                status,
                code: format!("transport: {e}"),
                booked: None,
            };
        }
    };
    let text = |k: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let is_booking = body
        .get("booking_id")
        .and_then(serde_json::Value::as_str)
        .is_some();
    let booked = (status < 300 && is_booking).then(|| Booked {
        id: text("booking_id"),
        status: text("status"),
        fee_fen: body
            .get("fee_fen")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0),
        pickup_code: text("pickup_code"),
        starts_at: text("segment_starts_at"),
    });
    let code = match status {
        201 if is_booking => "BOOKED".to_owned(),
        0..300 => "OK".to_owned(),
        // Which rule refused: the problem's `limit` extension.
        429 => format!(
            "{}:{}",
            text("code"),
            body.get("limit")
                .map(ToString::to_string)
                .unwrap_or_default()
                .trim_matches('"')
        ),
        _ => text("code"),
    };
    Outcome { status, code, booked }
}

/// One signed request of a scripted phase (payments, cancellations, ...).
#[derive(Debug, Clone)]
pub struct Call {
    pub channel: &'static str,
    pub method: reqwest::Method,
    pub path: String,
    pub body: Option<String>,
    pub address: Option<String>,
}

/// `calls` in a closed loop over `connections` connections.
pub async fn closed_calls(
    epoch: Instant,
    http: &reqwest::Client,
    gateway: &Arc<str>,
    calls: Vec<Call>,
    connections: usize,
) -> Vec<Sample> {
    let calls = Arc::new(calls);
    let (http, gateway) = (http.clone(), gateway.clone());
    closed_loop(epoch, calls.len(), connections, move |i| {
        let (http, gateway, calls) = (http.clone(), gateway.clone(), calls.clone());
        async move {
            let c = &calls[i];
            signed(
                &http,
                &gateway,
                c.channel,
                c.method.clone(),
                &c.path,
                c.body.clone(),
                c.address.as_deref(),
            )
            .await
        }
    })
    .await
}
