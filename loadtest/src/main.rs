//! # Layout
//! The surge load test and benchmark (see `loadtest/README.md`):
//! - [`city`]: a city of hospitals behind the real gateway, in this process;
//! - [`patients`]: the patients and their platform e-cards;
//! - [`load`]: the closed- and open-loop generator and signed requests;
//! - [`check`]: correctness read straight from PostgreSQL and Redis;
//! - [`ceilings`]: H, L and I, measured in the same run;
//! - [`report`]: percentiles, timelines, the JSON summary and the PNG chart;
//! - [`procs`]: the services as child processes, and their memory;
//! - [`costs`]: where a phase's time goes (CPU per part, PostgreSQL's commits);
//! - [`scalpers`], [`search`], [`peak_day`]: the scenarios beyond the surge.

mod ceilings;
mod check;
mod city;
mod costs;
mod fairness;
mod load;
mod notices;
mod patients;
mod peak_day;
mod procs;
mod realtime;
mod report;
mod scalpers;
mod search;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::city::{City, CityConfig, Lock, Segment};
use crate::load::{Sample, book, closed_loop, http_client, open_loop};
use crate::report::{PhaseStats, Target, stats, target};

#[derive(Parser)]
#[command(about = "Load test and benchmark of the booking surge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The release-second surge, once with the Redis lock and once with
    /// the PostgreSQL-lock baseline, with the ceilings H, L and I.
    Surge(SurgeArgs),
    /// The CI smoke: a small surge on both lock kinds; fails on any
    /// oversell, lost booking or 5xx.
    Smoke,
    /// Honest patients against scalpers at the release instant, with and
    /// without the anti-scalping rules.
    Scalpers(scalpers::Args),
    /// City-wide availability searches in an open loop while a surge runs.
    Search(search::Args),
    /// Beijing's peak day compressed, each service its own process, with
    /// resident memory per service.
    PeakDay(peak_day::Args),
    /// Run one service of a `peak-day` city (started by the load test itself).
    #[command(hide = true)]
    Serve {
        #[arg(value_enum)]
        role: procs::Role,
    },
}

#[derive(clap::Args, Clone)]
struct SurgeArgs {
    #[arg(long, default_value_t = 50_000)]
    attempts: usize,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    #[arg(long, default_value_t = 29)]
    hospitals: usize,
    /// Seats per segment (78 segments per hospital).
    #[arg(long, default_value_t = 1)]
    capacity: i32,
    /// Hospitals whose expert clinics are the hot schedules.
    #[arg(long, default_value_t = 8)]
    hot_hospitals: usize,
    /// Share of attempts aimed at the hot schedules.
    #[arg(long, default_value_t = 0.8)]
    hot_share: f64,
    /// Requests of the sold-out phases and of H.
    #[arg(long, default_value_t = 20_000)]
    sold_out_requests: usize,
    /// Connections of the sold-out closed loop and of H.
    #[arg(long, default_value_t = 32)]
    sold_out_connections: usize,
    /// Skip the ceilings and sold-out phases (the smoke).
    #[arg(long)]
    no_ceilings: bool,
    /// Skip the patients' visit before the release instant, so the surge
    /// meets cold identity caches (the smoke, for speed).
    #[arg(long)]
    no_warm_up: bool,
    /// Each in-process hospital on a server of its own (an accept thread
    /// and a worker each, as before issue 20) instead of one server for
    /// all of them sized for the cores: for comparison.
    #[arg(long)]
    server_per_hospital: bool,
    /// A slot-inventory setting for every in-process hospital (W's and
    /// the surge's), `KEY=VALUE` after `JYT_SLOT_INVENTORY__`, e.g.
    /// `BOOKING__CONCURRENT_WRITES=1`: for comparisons. Repeatable.
    #[arg(long = "hospital-setting", value_parser = key_value)]
    hospital_settings: Vec<(String, String)>,
    /// Where the JSON summary and the PNG chart go.
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
}

/// `KEY=VALUE`, as `--hospital-setting` takes it.
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// One planned attempt: who, where, through which channel.
#[derive(Clone)]
struct Attempt {
    patient: usize,
    segment: Segment,
    channel: &'static str,
    hot: bool,
}

/// Beijing's channel split: WeChat 40 %, kiosk 47 %, the rest 13 %.
const CHANNEL_WEIGHTS: [(&str, u32); 5] = [
    ("wechat", 40),
    ("kiosk", 47),
    ("phone114", 5),
    ("window", 4),
    ("app", 4),
];

fn channel(rng: &mut impl Rng) -> &'static str {
    channel_at(rng.random_range(0..100))
}

/// The channel at `x` (0..100) of Beijing's split laid end to end.
fn channel_at(mut x: u32) -> &'static str {
    for (c, w) in CHANNEL_WEIGHTS {
        if x < w {
            return c;
        }
        x -= w;
    }
    "wechat"
}

/// `attempts` attempts, `hot_share` of them at the expert clinics of the
/// first `hot_hospitals` hospitals, the rest over every other segment;
/// patient `i` makes attempt `i` (modulo the patients there are).
fn plan(city: &City, attempts: usize, hot_hospitals: usize, hot_share: f64) -> anyhow::Result<Vec<Attempt>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let all = city.segments();
    let hot: Vec<Segment> = city
        .hospitals
        .iter()
        .take(hot_hospitals)
        .flat_map(|h| h.segments.iter().filter(|s| s.expert).cloned())
        .collect();
    let cold: Vec<Segment> = all
        .into_iter()
        .filter(|s| !hot.iter().any(|h| h.slot == s.slot))
        .collect();
    anyhow::ensure!(!hot.is_empty() && !cold.is_empty(), "no hot or no cold segments");
    Ok((0..attempts)
        .map(|patient| {
            let is_hot = rng.random_bool(hot_share.clamp(0.0, 1.0));
            let pool = if is_hot { &hot } else { &cold };
            let segment = pool[rng.random_range(0..pool.len())].clone();
            Attempt {
                patient,
                segment,
                channel: channel(&mut rng),
                hot: is_hot,
            }
        })
        .collect())
}

/// Everything a run found, as written to `summary.json`.
#[derive(Serialize)]
struct Summary {
    command: String,
    machine: String,
    settings: serde_json::Value,
    ceilings: serde_json::Value,
    runs: Vec<LockRun>,
    targets: Vec<Target>,
}

#[derive(Serialize)]
struct LockRun {
    lock: Lock,
    warm_up: PhaseStats,
    surge: PhaseStats,
    surge_hot: PhaseStats,
    surge_cold: PhaseStats,
    /// Successful bookings per second from the release to the last one.
    bookings_per_second: f64,
    bookings: usize,
    sold_out_closed: Option<PhaseStats>,
    sold_out_open: Vec<PhaseStats>,
    /// The highest booking rate in any 500 ms of the surge (a peak of an
    /// unsaturated path, not a ceiling).
    peak_bookings_per_second: f64,
    /// Attempts the hospitals answered in each window of the surge: the
    /// gateway's hops to them (the rest were answered from its sold-out
    /// marks).
    hospital_answers: Vec<HopWindow>,
    check: check::CheckReport,
}

struct RunContext {
    epoch: Instant,
    http: reqwest::Client,
    cards: Arc<Vec<Arc<str>>>,
}

/// The machine, for the summaries: cores, and where the services ran.
fn machine(placement: &str) -> String {
    format!(
        "{} cores (shared with other work), {placement}; load average at the end {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        costs::load_average()
    )
}

fn address(patient: usize) -> String {
    format!(
        "10.{}.{}.{}",
        (patient >> 16) & 255,
        (patient >> 8) & 255,
        patient & 255
    )
}

async fn attempts(ctx: &RunContext, city: &City, plan: Arc<Vec<Attempt>>, connections: usize) -> Vec<Sample> {
    let gateway: Arc<str> = city.gateway_url.clone().into();
    let (http, cards) = (ctx.http.clone(), ctx.cards.clone());
    let n = plan.len();
    closed_loop(ctx.epoch, n, connections, move |i| {
        let a = &plan[i];
        book(
            http.clone(),
            gateway.clone(),
            a.channel,
            a.segment.slot.clone(),
            cards[a.patient % cards.len()].clone(),
            address(a.patient),
        )
    })
    .await
}

#[expect(
    clippy::too_many_lines,
    reason = "one load-test scenario, its phases in order"
)]
async fn run_lock(
    ctx: &RunContext,
    args: &SurgeArgs,
    lock: Lock,
    cards_service: &city::Cards,
    h_rate: Option<f64>,
) -> anyhow::Result<(LockRun, Option<ceilings::Rate>)> {
    // The apps with a callback are told of their patients' holds, as in
    // the city (each winner's hold warning is scheduled during the surge).
    let notice_sink = notices::Sink::start(1)?;
    let city = city::start(
        &CityConfig {
            server_per_hospital: args.server_per_hospital,
            hospital_extra: args.hospital_settings.clone(),
            gateway_extra: notices::callbacks_to(&notice_sink.url),
            ..CityConfig::in_process(args.hospitals, args.capacity, lock)
        },
        cards_service,
    )
    .await?;
    let plan = Arc::new(plan(&city, args.attempts, args.hot_hospitals, args.hot_share)?);
    tracing::warn!(
        lock = lock.as_str(),
        attempts = plan.len(),
        "patients open the app before the release instant"
    );
    let warm = if args.no_warm_up {
        Vec::new()
    } else {
        attempts(ctx, &city, plan.clone(), args.connections).await
    };
    let warm_up = stats(
        &format!("{} warm-up (before release)", lock.as_str()),
        "closed",
        &warm,
    )?;
    city.release().await?;
    tracing::warn!(lock = lock.as_str(), "release instant: surge");
    let hops = HopSampler::start(&city);
    let surge_samples = attempts(ctx, &city, plan.clone(), args.connections).await;
    let hospital_answers = hops.stop().await;
    tracing::warn!(
        lock = lock.as_str(),
        per_window = ?hospital_answers.iter().map(|w| w.answered).collect::<Vec<_>>(),
        "attempts the hospitals answered, per {HOP_WINDOW_MS} ms of the surge"
    );
    let name = format!("surge, {} lock", lock.as_str());
    let surge = stats(&name, "closed", &surge_samples)?;
    let surge_hot = stats(
        &format!("{name}, hot schedules"),
        "closed",
        surge_samples.iter().filter(|s| plan[s.index].hot),
    )?;
    let surge_cold = stats(
        &format!("{name}, cold schedules"),
        "closed",
        surge_samples.iter().filter(|s| !plan[s.index].hot),
    )?;
    let first = surge_samples.iter().map(|s| s.due).min().unwrap_or_default();
    let booked: Vec<&Sample> = surge_samples.iter().filter(|s| s.outcome.status == 201).collect();
    let last_booking = booked.iter().map(|s| s.due + s.latency).max().unwrap_or_default();
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let bookings_per_second =
        booked.len() as f64 / last_booking.saturating_sub(first).as_secs_f64().max(1e-6);

    let peak_bookings_per_second = stats("bookings", "closed", booked.iter().copied())?
        .timeline
        .iter()
        .map(|p| p.per_second)
        .fold(0.0, f64::max);
    let mut all: Vec<&Sample> = surge_samples.iter().collect();
    let mut sold_out_closed = None;
    let mut sold_out_open = Vec::new();
    let mut script_rate = None;
    let later: Vec<Sample>;
    if let (false, Some(h)) = (args.no_ceilings, h_rate) {
        // Patients who lost try again for the segment they lost: every
        // answer is SLOT_SOLD_OUT through the full gateway path.
        let losers: Vec<Attempt> = surge_samples
            .iter()
            .filter(|s| s.outcome.code == "SLOT_SOLD_OUT")
            .map(|s| plan[s.index].clone())
            .collect();
        anyhow::ensure!(!losers.is_empty(), "no sold-out answers in the surge");
        // The mark `profile-phase.sh` can wait for to sample the sold-out path alone.
        tracing::warn!(lock = lock.as_str(), "sold out: closed loop");
        let n = args.sold_out_requests.min(losers.len());
        let take = |from: usize, count: usize| -> Arc<Vec<Attempt>> {
            Arc::new(
                (from..from + count)
                    .map(|i| losers[i % losers.len()].clone())
                    .collect(),
            )
        };
        later = attempts(ctx, &city, take(0, n), args.sold_out_connections).await;
        let closed = stats(
            &format!(
                "sold out, {} lock, {} connections",
                lock.as_str(),
                args.sold_out_connections
            ),
            "closed",
            &later,
        )?;
        // Two open loops of 5 s each: at the target's 0.12 × H, and at half
        // the closed loop's measured rate (a load the path can carry).
        let mut offset = n;
        for (label, rate) in [
            ("0.12 × H", 0.12 * h),
            ("0.5 × closed-loop rate", 0.5 * closed.per_second),
        ] {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a positive request count"
            )]
            let count = ((rate * 5.0) as usize).max(1);
            let open_plan = take(offset, count);
            offset += count;
            let gateway: Arc<str> = city.gateway_url.clone().into();
            let (http, cards) = (ctx.http.clone(), ctx.cards.clone());
            let p = open_plan.clone();
            let samples = open_loop(ctx.epoch, open_plan.len(), rate, move |i| {
                let a = &p[i];
                book(
                    http.clone(),
                    gateway.clone(),
                    a.channel,
                    a.segment.slot.clone(),
                    cards[a.patient % cards.len()].clone(),
                    address(a.patient),
                )
            })
            .await;
            sold_out_open.push(stats(
                &format!(
                    "sold out, {} lock, open loop {rate:.0}/s ({label})",
                    lock.as_str()
                ),
                "open",
                &samples,
            )?);
        }
        sold_out_closed = Some(closed);
        // The open loops probe overload: their 503s (load shed) are
        // reported with them, not counted as correctness failures.
        all.extend(later.iter());
        if lock == Lock::Redis {
            let lost = &losers[0].segment;
            let hospital = city.hospital(&lost.slot.hospital).context("the hospital")?;
            script_rate = Some(
                ceilings::script(
                    &hospital.state,
                    lost.slot.id,
                    args.sold_out_requests,
                    args.sold_out_connections,
                )
                .await?,
            );
        }
    }
    let check = check::check(&city, all, &std::collections::HashMap::new()).await?;
    tracing::warn!(lock = lock.as_str(), ok = check.ok(), problems = ?check.problems, "checked");
    city.stop().await?;
    notice_sink.stop().await;
    Ok((
        LockRun {
            lock,
            warm_up,
            surge,
            surge_hot,
            surge_cold,
            bookings_per_second,
            bookings: booked.len(),
            peak_bookings_per_second,
            hospital_answers,
            sold_out_closed,
            sold_out_open,
            check,
        },
        script_rate,
    ))
}

/// The width of [`LockRun::hospital_answers`]' windows.
const HOP_WINDOW_MS: u64 = 250;

/// One window of [`LockRun::hospital_answers`].
#[derive(Serialize)]
struct HopWindow {
    /// Seconds from the release instant to the window's start.
    at: f64,
    answered: u64,
}

/// Counts the attempts the city's hospitals answer, window by window.
struct HopSampler(crate::procs::Periodic<HopCounts>);

/// [`HopSampler`]'s count at the last tick (none before the first), and
/// its windows.
#[derive(Default)]
struct HopCounts {
    last: Option<u64>,
    windows: Vec<HopWindow>,
}

impl HopSampler {
    fn start(city: &City) -> Self {
        let metrics: Vec<_> = city.hospitals.iter().map(|h| h.state.metrics.clone()).collect();
        let answered = move || metrics.iter().map(|m| m.attempts_answered()).sum::<u64>();
        let period = std::time::Duration::from_millis(HOP_WINDOW_MS);
        Self(crate::procs::Periodic::start(
            period,
            HopCounts::default(),
            move |counts, _| {
                let now = answered();
                // The first tick, at once, only sets the count the first window starts from.
                if let Some(last) = counts.last {
                    #[expect(clippy::cast_precision_loss, reason = "window counts are far below 2^52")]
                    counts.windows.push(HopWindow {
                        at: (counts.windows.len() as u64 * HOP_WINDOW_MS) as f64 / 1000.0,
                        answered: now - last,
                    });
                }
                counts.last = Some(now);
            },
        ))
    }

    async fn stop(self) -> Vec<HopWindow> {
        self.0.stop().await.windows
    }
}

/// The W phase: one hospital with seats for every attempt.
const DURABLE_SEATS_PER_SEGMENT: i32 = 130;
const DURABLE_BOOKINGS: usize = 6_000;

#[expect(
    clippy::too_many_lines,
    reason = "one load-test scenario, its phases in order"
)]
async fn surge(args: SurgeArgs, command: String) -> anyhow::Result<bool> {
    let epoch = Instant::now();
    let cards_prefix = city::fresh_redis_prefix();
    let cards_service = city::start_cards(&cards_prefix).await?;
    let cards: Vec<Arc<str>> = patients::ensure(&cards_service, args.attempts)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let ctx = RunContext {
        epoch,
        http: http_client(args.connections)?,
        cards: Arc::new(cards),
    };

    let mut ceiling_json = serde_json::Map::new();
    let mut h_rate = None;
    let mut h_stats = None;
    let mut inserts = Vec::new();
    let mut durable = None;
    if !args.no_ceilings {
        tracing::warn!("ceilings: H and I");
        let h = ceilings::handler(epoch, args.sold_out_requests, args.sold_out_connections).await?;
        h_rate = Some(h.per_second);
        h_stats = Some(h);
        for c in [city::HOSPITAL_POOL_SIZE, 16] {
            inserts.push(ceilings::inserts(5000, c).await?);
        }
        tracing::warn!("ceiling W: durable bookings through one hospital's booking function");
        let one = city::start(
            &CityConfig {
                hospital_extra: args.hospital_settings.clone(),
                ..CityConfig::in_process(1, DURABLE_SEATS_PER_SEGMENT, Lock::Redis)
            },
            &cards_service,
        )
        .await?;
        one.release().await?;
        // The mark `profile-phase.sh` waits for to sample W alone.
        tracing::warn!("ceiling W: booking");
        let w = ceilings::durable_bookings(&one.hospitals[0], DURABLE_BOOKINGS, 16).await;
        one.stop().await?;
        durable = Some(w?);
    }

    let (redis_run, script_rate) = run_lock(&ctx, &args, Lock::Redis, &cards_service, h_rate).await?;
    let (pg_run, _) = run_lock(&ctx, &args, Lock::Postgres, &cards_service, h_rate).await?;
    city::delete_prefix(&cards_prefix).await?;

    let mut targets = Vec::new();
    if let (Some(h), Some(closed), Some(open)) = (
        &h_stats,
        &redis_run.sold_out_closed,
        redis_run.sold_out_open.first(),
    ) {
        let ratio = closed.per_second / h.per_second;
        targets.push(target(
            "sold-out answers through the gateway, closed loop",
            "≥ 0.30 × H, p99 ≤ 10 ms".into(),
            format!(
                "{ratio:.3} × H ({:.0}/s vs H {:.0}/s), p99 {:.1} ms",
                closed.per_second, h.per_second, closed.p99_ms
            ),
            ratio >= 0.30 && closed.p99_ms <= 10.0,
        ));
        targets.push(target(
            "sold-out answers, open loop at 0.12 × H",
            "p99 ≤ 20 ms (latency from the intended send time)".into(),
            format!(
                "{:.0}/s offered, {:.0}/s answered, p99 {:.1} ms, {} of {} answers 5xx (load shed)",
                0.12 * h.per_second,
                open.per_second,
                open.p99_ms,
                open.statuses
                    .iter()
                    .filter(|(k, _)| k.starts_with('5'))
                    .map(|(_, v)| v)
                    .sum::<usize>(),
                open.requests
            ),
            open.p99_ms <= 20.0,
        ));
        // I at the pool size a hospital uses: the write path's own budget.
        let pool_i = inserts
            .iter()
            .find(|r| r.concurrency == city::HOSPITAL_POOL_SIZE)
            .map_or(0.0, |r| r.per_second);
        if let Some(w) = &durable {
            let ratio = w.per_second / pool_i;
            targets.push(target(
                "successful durable bookings per second",
                format!(
                    "≥ 0.5 × I (I at the hospital's pool of {})",
                    city::HOSPITAL_POOL_SIZE
                ),
                format!(
                    "{ratio:.2} × I: W {:.0} bookings/s through one hospital's booking function \
                     ({} rows counted in PostgreSQL) vs I {pool_i:.0}/s; in the surge itself the \
                     bookings are bounded by the seats: {:.0}/s from the release to the last \
                     booking, peak {:.0}/s",
                    w.per_second,
                    w.operations,
                    redis_run.bookings_per_second,
                    redis_run.peak_bookings_per_second
                ),
                ratio >= 0.5,
            ));
        }
    }
    let hot_ratio = redis_run.surge_hot.per_second / pg_run.surge_hot.per_second;
    targets.push(target(
        "hot schedules: attempts/s vs the PostgreSQL-lock baseline",
        "≥ 5 × baseline, lower p99".into(),
        format!(
            "{hot_ratio:.2} × ({:.0}/s vs {:.0}/s), p99 {:.0} ms vs {:.0} ms",
            redis_run.surge_hot.per_second,
            pg_run.surge_hot.per_second,
            redis_run.surge_hot.p99_ms,
            pg_run.surge_hot.p99_ms
        ),
        hot_ratio >= 5.0 && redis_run.surge_hot.p99_ms < pg_run.surge_hot.p99_ms,
    ));
    targets.push(target(
        &format!(
            "surge: {} attempts, {} connections",
            args.attempts, args.connections
        ),
        "≤ 4 s, p99 ≤ 250 ms".into(),
        format!(
            "{:.2} s, p99 {:.0} ms",
            redis_run.surge.seconds, redis_run.surge.p99_ms
        ),
        redis_run.surge.seconds <= 4.0 && redis_run.surge.p99_ms <= 250.0,
    ));
    for run in [&redis_run, &pg_run] {
        targets.push(report::correctness(
            &format!("correctness, {} lock", run.lock.as_str()),
            report::CHECKS,
            &run.check,
        ));
    }
    let correct = redis_run.check.ok() && pg_run.check.ok();

    if let Some(h) = &h_stats {
        ceiling_json.insert("H".into(), serde_json::to_value(h)?);
    }
    if let Some(l) = &script_rate {
        ceiling_json.insert("L".into(), serde_json::to_value(l)?);
    }
    ceiling_json.insert("I".into(), serde_json::to_value(&inserts)?);
    if let Some(w) = &durable {
        ceiling_json.insert("W".into(), serde_json::to_value(w)?);
    }
    let summary = Summary {
        command,
        machine: machine("generator and every service in one process"),
        settings: serde_json::json!({
            "attempts": args.attempts, "connections": args.connections, "hospitals": args.hospitals,
            "seats_per_segment": args.capacity, "hot_hospitals": args.hot_hospitals,
            "hot_share": args.hot_share, "hospital_pg_pool": city::HOSPITAL_POOL_SIZE,
            "hospital_settings": args.hospital_settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "hospital_servers": if args.server_per_hospital { "one per hospital, 1 worker each" } else { "one for every hospital, a worker per core" },
            "channels": CHANNEL_WEIGHTS,
        }),
        ceilings: serde_json::Value::Object(ceiling_json),
        runs: vec![redis_run, pg_run],
        targets,
    };
    report::write_json(&args.out.join("surge-summary.json"), &summary)?;
    let mut phases: Vec<&PhaseStats> = Vec::new();
    for run in &summary.runs {
        phases.push(&run.surge);
    }
    if let Some(r) = summary.runs.first() {
        phases.extend(r.sold_out_closed.iter());
        phases.extend(r.sold_out_open.iter());
    }
    report::chart(&args.out.join("surge.png"), "surge", &phases)?;
    print_summary(&summary);
    Ok(correct)
}

#[expect(clippy::print_stdout, reason = "the load test reports on stdout")]
fn print_summary(s: &Summary) {
    for run in &s.runs {
        for p in [
            Some(&run.warm_up),
            Some(&run.surge),
            Some(&run.surge_hot),
            Some(&run.surge_cold),
        ]
        .into_iter()
        .chain([run.sold_out_closed.as_ref()])
        .flatten()
        .chain(run.sold_out_open.iter())
        {
            report::print_phase(p);
        }
        println!(
            "{} lock: {} bookings, {:.0} bookings/s; check: {}",
            run.lock.as_str(),
            run.bookings,
            run.bookings_per_second,
            serde_json::to_string(&run.check).unwrap_or_default()
        );
    }
    println!("ceilings: {}", s.ceilings);
    report::print_targets(&s.targets);
}

/// mimalloc instead of glibc's malloc: allocation and free were about a
/// sixth of the CPU in the surge profile (many small, short-lived buffers
/// per request, freed on another thread than they were made on). The
/// `system-allocator` feature leaves it out for a heap profile
/// (`loadtest/heap-profile.sh`).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // The services' own warnings (and their complaints once a city is
    // stopped under them) stay out of the report, except the gateway's
    // failed calls (why a patient got a 5xx).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("error,loadtest=warn,gateway::error=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cli = Cli::parse();
    // A service in a child process (`serve`) runs as its binary does: its
    // main runtime on one thread, the requests on the actix workers. The
    // generator and the in-process cities get two runtime threads.
    let runtime = match cli.command {
        Command::Serve { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    }
    .enable_all()
    .build()?;
    let ok = runtime.block_on(run(cli, command))?;
    anyhow::ensure!(ok, "correctness checks failed: see above");
    Ok(())
}

async fn run(cli: Cli, command: String) -> anyhow::Result<bool> {
    let ok = match cli.command {
        Command::Surge(args) => surge(args, command).await?,
        Command::Smoke => {
            let args = SurgeArgs {
                attempts: 2000,
                // Few connections: the smoke checks correctness, not
                // throughput, and a burst of new gateway → hospital
                // connections is where the known 503 appears (README).
                connections: 50,
                hospitals: 3,
                capacity: 1,
                hot_hospitals: 2,
                hot_share: 0.8,
                sold_out_requests: 0,
                sold_out_connections: 0,
                no_ceilings: true,
                no_warm_up: true,
                server_per_hospital: false,
                hospital_settings: Vec::new(),
                out: PathBuf::from("target/loadtest-smoke"),
            };
            surge(args, command).await?
        }
        Command::Scalpers(args) => scalpers::run(args, command).await?,
        Command::Search(args) => search::run(args, command).await?,
        Command::PeakDay(args) => peak_day::run(args, command).await?,
        Command::Serve { role } => {
            procs::serve(role).await?;
            true
        }
    };
    Ok(ok)
}
