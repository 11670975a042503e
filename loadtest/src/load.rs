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
    /// For a 201: (booking id as answered, booking status).
    pub booked: Option<(String, String)>,
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

/// Send `n` requests at `rate` per second, whatever the answers do.
pub async fn open_loop<F, Fut>(epoch: Instant, n: usize, rate: f64, send: F) -> Vec<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let send = Arc::new(send);
    let start = Instant::now();
    let interval = 1.0 / rate.max(1.0);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..n {
        #[expect(clippy::cast_precision_loss, reason = "request counts are far below 2^52")]
        let due = start + Duration::from_secs_f64(interval * index as f64);
        tokio::time::sleep_until(due).await;
        let send = send.clone();
        tasks.spawn(async move {
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
    let path = "/v1/bookings";
    let signed = gateway::signing::sign_request(
        channel,
        APP_SECRET.as_bytes(),
        "POST",
        path,
        body.as_bytes(),
        Utc::now().timestamp(),
        &gateway::signing::new_nonce(),
    );
    let mut req = http
        .post(format!("{gateway}{path}"))
        .header("content-type", "application/json")
        .header("Idempotency-Key", uuid::Uuid::new_v4().simple().to_string())
        .header("X-Client-Address", address)
        .body(body);
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
    if status == 201 {
        Outcome {
            status,
            code: "BOOKED".to_owned(),
            booked: Some((text("booking_id"), text("status"))),
        }
    } else if status < 300 {
        Outcome {
            status,
            code: "OK".to_owned(),
            booked: None,
        }
    } else {
        Outcome {
            status,
            code: text("code"),
            booked: None,
        }
    }
}
