//! The ceilings every result is divided by, measured in the same run on the
//! same machine: H (a minimal actix-web handler through the same
//! generator), L (the booking Lua script called straight on Redis) and I
//! (durable single-row PostgreSQL inserts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use futures::StreamExt;
use serde::Serialize;
use slot_inventory::AppState;
use slot_inventory::booking::hold::{HoldOutcome, HoldRequest};
use uuid::Uuid;

use crate::load::{Outcome, Sample, closed_loop, http_client};
use crate::report::{PhaseStats, stats};

#[derive(Debug, Serialize)]
pub struct Rate {
    pub what: String,
    pub concurrency: usize,
    pub operations: usize,
    pub per_second: f64,
}

/// H: `GET /` answering `ok` from an actix-web server with 2 workers.
pub async fn handler(
    epoch: tokio::time::Instant,
    n: usize,
    connections: usize,
) -> anyhow::Result<PhaseStats> {
    let server = HttpServer::new(|| App::new().route("/", web::get().to(|| async { "ok" })))
        .workers(2)
        .bind(("127.0.0.1", 0))?;
    let port = server
        .addrs()
        .first()
        .map(std::net::SocketAddr::port)
        .unwrap_or(0);
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    let http = http_client(connections)?;
    let url: Arc<str> = format!("http://127.0.0.1:{port}/").into();
    let samples: Vec<Sample> = closed_loop(epoch, n, connections, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            match http.get(&*url).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _body = r.bytes().await;
                    Outcome {
                        status,
                        code: "OK".into(),
                        booked: None,
                    }
                }
                Err(e) => Outcome {
                    status: 0,
                    code: format!("transport: {e}"),
                    booked: None,
                },
            }
        }
    })
    .await;
    handle.stop(false).await;
    task.abort();
    stats(
        &format!("H: minimal handler, {connections} connections"),
        "closed",
        &samples,
    )
}

/// A patient never seen before, and an Idempotency-Key of their own.
fn new_patient() -> anyhow::Result<(Uuid, jyt_domain::IdempotencyKey)> {
    let patient = Uuid::new_v4();
    let key = patient.simple().to_string().parse()?;
    Ok((patient, key))
}

/// L: the hold script, called for a sold-out segment with new patients.
pub async fn script(state: &AppState, segment: Uuid, n: usize, concurrency: usize) -> anyhow::Result<Rate> {
    let info = slot_inventory::booking::cache::segment_info(state, segment)
        .await
        .map_err(|e| anyhow::anyhow!("segment info: {e}"))?;
    let keys = Arc::new(state.keys.segment(&info));
    let info = Arc::new(info);
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<HoldOutcome>> = futures::stream::iter(0..n)
        .map(|_| {
            let (keys, info, state) = (keys.clone(), info.clone(), state.clone());
            async move {
                let (patient, key) = new_patient()?;
                let idem = state.keys.idempotency(patient, &key);
                let day = state.keys.patient_day(patient, info.visit_date);
                let req = HoldRequest {
                    patient,
                    booking_id: Uuid::now_v7(),
                    channel: jyt_domain::Channel::Wechat,
                    now: state.clock.now().timestamp(),
                    idempotency_key: &idem,
                    idempotency_ttl_seconds: 30,
                    patient_day: &day,
                    max_per_day: 2,
                    max_per_department: 1,
                    patient_day_ttl_seconds: 3600,
                    kind: slot_inventory::booking::hold::HoldKind::Book,
                    lottery_entry: "",
                    referral_key: &state.keys.referral(None),
                    signed_pool: false,
                };
                Ok(state.scripts.hold(&state.redis, &keys, &req).await?)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let sold_out = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(HoldOutcome::SoldOut)))
        .count();
    anyhow::ensure!(sold_out == n, "the script answered {} of {n} sold out", sold_out);
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let per_second = n as f64 / seconds;
    Ok(Rate {
        what: "L: hold.lua on a sold-out segment, EVALSHA over one multiplexed connection".into(),
        concurrency,
        operations: n,
        per_second,
    })
}

/// I: durable (synchronous_commit on) single-row inserts over `connections`
/// connections to a fresh database.
pub async fn inserts(n: usize, connections: usize) -> anyhow::Result<Rate> {
    let url = crate::city::fresh_database("inserts").await?;
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, conn) = jyt_db::tokio_postgres::connect(&url, jyt_db::tokio_postgres::NoTls).await?;
        tasks.push(tokio::spawn(conn));
        clients.push(Arc::new(client));
    }
    if let Some(c) = clients.first() {
        c.batch_execute(
            "CREATE TABLE booking_like (id uuid PRIMARY KEY, segment_id uuid NOT NULL, seat_no int NOT NULL,
                                        created_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in &clients {
        let (c, next) = (c.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let stmt = c
                .prepare("INSERT INTO booking_like (id, segment_id, seat_no) VALUES ($1, $2, $3)")
                .await?;
            let segment = Uuid::new_v4();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let seat = i32::try_from(i).unwrap_or(i32::MAX);
                c.execute(&stmt, &[&Uuid::now_v7(), &segment, &seat]).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(clients);
    for t in tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let admin = jyt_testkit::pg_admin_url();
    let (client, conn) = jyt_db::tokio_postgres::connect(&admin, jyt_db::tokio_postgres::NoTls).await?;
    let t = tokio::spawn(conn);
    if let Some(name) = url.rsplit('/').next() {
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
    }
    t.abort();
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let per_second = n as f64 / seconds;
    Ok(Rate {
        what: format!("I: durable single-row INSERT, {connections} connections"),
        concurrency: connections,
        operations: n,
        per_second,
    })
}

/// W: successful durable bookings through one hospital's own booking
/// function (the hold script takes the seat and the visit number in
/// Redis, then the booking row and its outbox event are inserted in one
/// transaction: insert-only, no hot row), called directly with `concurrency`
/// tasks on the hospital's pool, every attempt a new patient with a free
/// seat. The write path's own rate, to set against I at the same pool
/// size; the gateway's HTTP hops are measured by the surge.
pub async fn durable_bookings(
    hospital: &crate::city::Hospital,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Rate> {
    use slot_inventory::booking::BookRequest;
    use slot_inventory::booking::service::book;

    let segments = Arc::new(hospital.segments.clone());
    anyhow::ensure!(!segments.is_empty(), "the hospital has no segments");
    let state = hospital.state.clone();
    let started = Instant::now();
    let results: Vec<Result<(), String>> = futures::stream::iter(0..n)
        .map(|i| {
            let (state, segments) = (state.clone(), segments.clone());
            async move {
                let (patient, key) = new_patient().map_err(|e| e.to_string())?;
                let channel = crate::channel_at(u32::try_from(i % 100).unwrap_or(0))
                    .parse::<jyt_domain::Channel>()
                    .map_err(|e| e.to_string())?;
                let req = BookRequest::new(segments[i % segments.len()].slot.clone(), patient, channel);
                book(state, req, key).await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let booked = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        anyhow::bail!("{} of {n} bookings failed, e.g.: {e}", n - booked);
    }
    // Durable means in PostgreSQL: count the rows, not the answers.
    let client = hospital.state.pool.get().await?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM bookings", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        usize::try_from(rows).unwrap_or(0) == booked,
        "{booked} bookings answered, {rows} rows in PostgreSQL"
    );
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let per_second = booked as f64 / seconds;
    Ok(Rate {
        what: format!(
            "W: successful durable bookings through the hospital's booking function, pool of {}",
            crate::city::HOSPITAL_POOL_SIZE
        ),
        concurrency,
        operations: booked,
        per_second,
    })
}
