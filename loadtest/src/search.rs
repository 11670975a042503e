//! `search`: city-wide availability searches (`GET /v1/availability`,
//! answered from the hospitals' Redis summaries) in an open loop at a
//! fixed rate, latency from each search's intended send time: first on an
//! idle city (the baseline), then while the release surge runs. As
//! deployed (the chart's ingress), searches go to a search replica of the
//! gateway (same code and settings, its own worker) and bookings to the
//! booking replica; the same searches are also sent to the booking replica,
//! to show what the split buys. Only searches due between the surge's first
//! and last attempt count as "during the surge".

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::city::{self, CityConfig, DISTRICTS, Lock};
use crate::load::{Sample, http_client, open_loop, signed};
use crate::report::{self, PhaseStats, Target, stats, target};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Booking attempts of the surge.
    #[arg(long, default_value_t = 50_000)]
    attempts: usize,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    #[arg(long, default_value_t = 29)]
    hospitals: usize,
    #[arg(long, default_value_t = 1)]
    capacity: i32,
    /// Searches per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long the searches run from the release instant (longer than
    /// the surge: the ones due after it are reported apart).
    #[arg(long, default_value_t = 40.0)]
    seconds: f64,
    /// The idle baseline before the release.
    #[arg(long, default_value_t = 10.0)]
    idle_seconds: f64,
    /// Workers of the search replica (the chart's `gateway-search`, which
    /// runs 2).
    #[arg(long, default_value_t = 2)]
    search_workers: usize,
    /// Real-time (SCHED_FIFO) priority for the search replica, the
    /// searching patients' threads and the Redis server (put back in the
    /// normal class at the end), emulating the CPU they each have on a
    /// cluster (see `realtime.rs`); 0 leaves everything in the normal
    /// class. Needs root or CAP_SYS_NICE, and Redis on this machine.
    #[arg(long, default_value_t = 0)]
    realtime_priority: u8,
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
}

/// What patients search for: department (id or part of a name), clinic
/// level, district, page; `None` leaves the filter out.
const DEPARTMENTS: [Option<&str>; 6] = [
    Some("cardio"),
    Some("peds"),
    Some("心血管"),
    Some("endo"),
    Some("radiology"),
    None,
];
const LEVELS: [Option<&str>; 4] = [Some("expert"), Some("general"), Some("ct"), None];

fn query(rng: &mut impl Rng, date: chrono::NaiveDate) -> String {
    let mut q = format!("/v1/availability?date={date}");
    if let Some(d) = DEPARTMENTS[rng.random_range(0..DEPARTMENTS.len())] {
        q.push_str("&department=");
        q.push_str(&encode(d));
    }
    if let Some(l) = LEVELS[rng.random_range(0..LEVELS.len())] {
        q.push_str("&level=");
        q.push_str(l);
    }
    if rng.random_bool(0.5) {
        q.push_str("&district=");
        q.push_str(DISTRICTS[rng.random_range(0..DISTRICTS.len())]);
    }
    q.push_str(&format!("&page={}", 1 + u32::from(rng.random_bool(0.2))));
    q
}

/// Percent-encoding of a query value (the department's Chinese name).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Serialize)]
struct Summary {
    command: String,
    machine: String,
    settings: serde_json::Value,
    idle: PhaseStats,
    /// On the search replica: the design.
    during_surge: PhaseStats,
    /// The same searches sent to the replica that takes the bookings, as
    /// if there were no search replica.
    during_surge_shared: PhaseStats,
    after_surge: Option<PhaseStats>,
    surge: PhaseStats,
    check: crate::check::CheckReport,
    targets: Vec<Target>,
}

/// `count` searches at `rate` from now, as patients of random channels.
async fn searches(
    epoch: Instant,
    http: &reqwest::Client,
    gateway: &Arc<str>,
    date: chrono::NaiveDate,
    rate: f64,
    count: usize,
    seed: u64,
) -> Vec<Sample> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let plan: Arc<Vec<(String, &'static str, String)>> = Arc::new(
        (0..count)
            .map(|i| (query(&mut rng, date), crate::channel(&mut rng), crate::address(i)))
            .collect(),
    );
    let (http, gateway) = (http.clone(), gateway.clone());
    open_loop(epoch, count, rate, move |i| {
        let (http, gateway, plan) = (http.clone(), gateway.clone(), plan.clone());
        async move {
            let (path, channel, address) = &plan[i];
            let channel = *channel;
            signed(
                &http,
                &gateway,
                channel,
                reqwest::Method::GET,
                path,
                None,
                Some(address.as_str()),
            )
            .await
        }
    })
    .await
}

/// [`searches`] on a thread and runtime of their own: the searching
/// patients are other devices than the surge's, so their replies must not
/// wait in the run queue of the generator's 1,000 booking connections
/// (that wait would be counted as the gateway's latency).
async fn searches_on_own_thread(
    epoch: Instant,
    gateway: Arc<str>,
    date: chrono::NaiveDate,
    rate: f64,
    count: usize,
    seed: u64,
    realtime_priority: Option<u8>,
) -> anyhow::Result<Vec<Sample>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("search-generator".into())
        .spawn(move || {
            let run = || -> anyhow::Result<Vec<Sample>> {
                if let Some(priority) = realtime_priority {
                    crate::realtime::make_this_thread_realtime(priority)?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let http = http_client(256)?;
                    Ok(searches(epoch, &http, &gateway, date, rate, count, seed).await)
                })
            };
            // The receiver only goes away if the run was abandoned.
            let _ = tx.send(run());
        })?;
    rx.await?
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a positive request count"
)]
fn count(rate: f64, seconds: f64) -> usize {
    (rate * seconds).max(1.0) as usize
}

#[expect(
    clippy::too_many_lines,
    reason = "one load-test scenario, its phases in order"
)]
pub async fn run(args: Args, command: String) -> anyhow::Result<bool> {
    let epoch = Instant::now();
    let cards_prefix = city::fresh_redis_prefix();
    let cards_service = city::start_cards(&cards_prefix).await?;
    let cards: Vec<Arc<str>> = crate::patients::ensure(&cards_service, args.attempts)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let ctx = crate::RunContext {
        epoch,
        http: http_client(args.connections)?,
        cards: Arc::new(cards),
    };
    let mut city = city::start(
        &CityConfig::in_process(args.hospitals, args.capacity, Lock::Redis),
        &cards_service,
    )
    .await?;
    // Bookings go to the gateway replica the surge uses; searches to the
    // search replica, as the chart's ingress routes them.
    let booking_gateway: Arc<str> = city.gateway_url.clone().into();
    let realtime = (args.realtime_priority > 0).then_some(args.realtime_priority);
    let _realtime_redis = match realtime {
        Some(priority) => Some(crate::realtime::RealtimeRedis::raise(priority).await?),
        None => None,
    };
    // Named in the target's label and the summary, so a run in one mode
    // cannot be read as the other.
    let scheduling = match realtime {
        None => "every process in the normal scheduling class".to_owned(),
        Some(p) => format!(
            "search replica, its patients and Redis at SCHED_FIFO {p}: CPU of their own, as on a cluster"
        ),
    };
    let gateway: Arc<str> = city
        .start_search_replica(args.search_workers, realtime)
        .await?
        .into();
    let search_http = http_client(256)?;
    let date = city.visit_date;

    tracing::warn!(rate = args.rate, "searches on the idle city");
    let idle = searches(
        epoch,
        &search_http,
        &gateway,
        date,
        args.rate,
        count(args.rate, args.idle_seconds),
        1,
    )
    .await;
    let plan = Arc::new(crate::plan(&city, args.attempts, 8, 0.8)?);
    tracing::warn!("patients open the app before the release instant");
    let warm = crate::attempts(&ctx, &city, plan.clone(), args.connections).await;
    city.release().await?;
    tracing::warn!("release instant: surge and searches");
    let n = count(args.rate, args.seconds);
    let (surge, during, during_shared) = tokio::join!(
        crate::attempts(&ctx, &city, plan.clone(), args.connections),
        searches_on_own_thread(epoch, gateway.clone(), date, args.rate, n, 2, realtime),
        searches_on_own_thread(epoch, booking_gateway.clone(), date, args.rate, n, 3, realtime),
    );
    let (during, during_shared) = (during?, during_shared?);
    let first = surge.iter().map(|s| s.due).min().unwrap_or_default();
    let last = surge.iter().map(|s| s.due + s.latency).max().unwrap_or_default();
    let in_surge = |s: &&Sample| s.due >= first && s.due <= last;
    let (inside, outside): (Vec<&Sample>, Vec<&Sample>) = during.iter().partition(in_surge);
    let name = |what: &str| format!("search {:.0}/s, {what}", args.rate);
    let idle_stats = stats(&name("idle city, search replica"), "open", &idle)?;
    let during_stats = stats(&name("during the surge, search replica"), "open", inside)?;
    let during_shared_stats = stats(
        &name("during the surge, on the booking replica"),
        "open",
        during_shared.iter().filter(in_surge),
    )?;
    let after_stats = if outside.is_empty() {
        None
    } else {
        Some(stats(&name("after the surge"), "open", outside)?)
    };
    let surge_stats = stats(
        &format!(
            "surge: {} attempts, {} connections",
            args.attempts, args.connections
        ),
        "closed",
        &surge,
    )?;
    let check = crate::check::check(
        &city,
        surge
            .iter()
            .chain(during.iter())
            .chain(during_shared.iter())
            .chain(idle.iter()),
        &HashMap::new(),
    )
    .await?;
    drop(warm);
    city.stop().await?;
    city::delete_prefix(&cards_prefix).await?;

    let non_200 = |p: &PhaseStats| p.requests - p.statuses.get("200").copied().unwrap_or(0);
    let targets = vec![
        target(
            &format!(
                "search p99 while the surge runs, on the search replica (open loop, from the intended send time; {scheduling})"
            ),
            "p99 < 20 ms".into(),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} searches = {:.1} × the target (idle city: p50 {:.1}, p99 {:.1} ms)",
                during_stats.p50_ms,
                during_stats.p99_ms,
                during_stats.max_ms,
                during_stats.requests,
                during_stats.p99_ms / 20.0,
                idle_stats.p50_ms,
                idle_stats.p99_ms
            ),
            during_stats.p99_ms < 20.0,
        ),
        target(
            "the same searches on the replica taking the bookings (no search replica)",
            "for comparison".into(),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms over {} searches, {} not 200",
                during_shared_stats.p50_ms,
                during_shared_stats.p99_ms,
                during_shared_stats.requests,
                non_200(&during_shared_stats)
            ),
            true,
        ),
        target(
            "searches answered 200",
            "all".into(),
            format!(
                "{} not 200 during the surge, {} idle: {:?}",
                non_200(&during_stats),
                non_200(&idle_stats),
                during_stats.codes
            ),
            non_200(&during_stats) == 0 && non_200(&idle_stats) == 0,
        ),
        report::correctness("correctness of the surge", report::CHECKS, &check),
    ];
    let correct = check.ok();
    let summary = Summary {
        command,
        machine: crate::machine(&format!(
            "generator and services in one process, the search replica in its own; {scheduling}"
        )),
        settings: serde_json::json!({
            "attempts": args.attempts, "connections": args.connections,
            "hospitals": args.hospitals, "seats_per_segment": args.capacity,
            "search_rate": args.rate, "search_seconds": args.seconds,
            "search_replica_workers": args.search_workers, "booking_replica_workers": 2,
            "search_max_age_ms": 500,
            "realtime_priority": realtime,
            "idle_seconds": args.idle_seconds,
            "query_mix": "department: cardio, peds, 心血管, endo, radiology or none; level: expert, general, ct or none; district half the time; page 2 one time in five",
        }),
        idle: idle_stats,
        during_surge: during_stats,
        during_surge_shared: during_shared_stats,
        after_surge: after_stats,
        surge: surge_stats,
        check,
        targets,
    };
    report::write_json(&args.out.join("search-summary.json"), &summary)?;
    let mut phases = vec![
        &summary.idle,
        &summary.during_surge,
        &summary.during_surge_shared,
        &summary.surge,
    ];
    phases.extend(summary.after_surge.iter());
    report::chart(&args.out.join("search.png"), "search during the surge", &phases)?;
    for p in &phases {
        report::print_phase(p);
    }
    report::print_targets(&summary.targets);
    Ok(correct)
}
