//! `peak-day`: Beijing's peak day compressed into one run, every service
//! in a process of its own ([`crate::procs`]) with its resident memory
//! sampled throughout.
//!
//! The day, in order, on the hospitals' manual clock:
//! 1. **Release** (08:30): `--attempts` booking attempts by `--patients`
//!    patients (each makes attempt `i`, `i + patients`, ...: five each by
//!    default), `--hot-share` of them at the expert clinics of the first
//!    `--hot-hospitals` hospitals, Beijing's channel split.
//! 2. **Payments** of the held bookings (every clinic but CT has a fee):
//!    [`PAY_SHARE`] pay, the rest let the hold lapse. Patients `i % 100 <
//!    15` pay from the card's prepaid balance (topped up beforehand);
//!    others through the channel's signed payment notification, [`INSURANCE_SHARE`]
//!    of them from the insurance account, the rest self-pay.
//! 3. **Waitlist**: [`WAITLIST_SHARE`] of the patients who booked nothing
//!    join the line of the schedule they last found sold out.
//! 4. **Cancellations**: [`CANCEL_SHARE`] of the confirmed bookings; the
//!    seats go to the waitlist (promoted holds) where someone waiting may
//!    take their pool (before the pools merge, WeChat's line takes WeChat
//!    and common seats, and so on).
//! 5. The clock moves 9 minutes on: the apps with a callback
//!    warn the patients of unpaid holds (`booking.hold_expiring`); then 11
//!    minutes on: unpaid holds expire.
//! 6. **The evening before** (18:00): every booking still confirmed is
//!    reminded (`booking.visit_reminder`).
//! 7. **Visit day**: the clock walks through the day; [`CHECK_IN_SHARE`] of
//!    the confirmed bookings check in (取号, pick-up code, at a kiosk) within
//!    their window; the rest become no-shows when the clock passes their
//!    segment's end + 30 minutes.
//! 8. Every other notice owed arrives (confirmations, cancellations,
//!    refunds, lapses, no-shows): the day waits for each step's notices
//!    at that step ([`crate::notices`]), and counts the waits.
//! 9. Memory sampling stops; the checks read PostgreSQL and Redis, each
//!    booking expected in the state its last answer said, moved on where
//!    the day moves it (held → expired, confirmed → no_show).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::city::{self, CityConfig, Lock, Placement, booking_uuid};
use crate::costs::{self, PhaseCost};
use crate::load::{Call, Sample, closed_calls, http_client};
use crate::notices::{self, CALLBACK_CHANNELS, NoticeKey};
use crate::procs::{Memory, Sampler};
use crate::report::{self, PhaseStats, Target, stats, target};

/// Held bookings that are paid (the rest let the hold lapse).
pub const PAY_SHARE: f64 = 0.90;
/// Patients (by index, `i % 100 < 15`) who pay from the prepaid card.
pub const PREPAID_PERCENT: usize = 15;
/// Of the other payers, those paying from the insurance account.
pub const INSURANCE_SHARE: f64 = 0.18;
/// Patients without a booking who join a waitlist.
pub const WAITLIST_SHARE: f64 = 0.10;
/// Confirmed bookings cancelled.
pub const CANCEL_SHARE: f64 = 0.08;
/// Confirmed, not cancelled bookings that check in; the rest are no-shows.
pub const CHECK_IN_SHARE: f64 = 0.88;
/// How long a step waits for the notices it owes.
const NOTICE_DEADLINE: Duration = Duration::from_secs(60);
/// Resident memory per service process.
const MEMORY_TARGET_MB: f64 = 150.0;

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 340_000)]
    attempts: usize,
    #[arg(long, default_value_t = 68_000)]
    patients: usize,
    #[arg(long, default_value_t = 68_000)]
    target_bookings: usize,
    /// 20 hospitals and card-issuing fit the PostgreSQL server's 100
    /// connections with the checks' own.
    #[arg(long, default_value_t = 20)]
    hospitals: usize,
    /// Seats per segment (78 segments per hospital).
    #[arg(long, default_value_t = 50)]
    capacity: i32,
    #[arg(long, default_value_t = 7)]
    hot_hospitals: usize,
    #[arg(long, default_value_t = 0.3)]
    hot_share: f64,
    /// Connections of the booking phase.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Connections of the later phases.
    #[arg(long, default_value_t = 200)]
    action_connections: usize,
    /// Connections of the cancellations. Once 1: concurrent cancellations
    /// deadlocked a hospital's small pool (see *Findings* in the README),
    /// fixed in `booking/lifecycle.rs` since; they now go out like the
    /// other phases.
    #[arg(long, default_value_t = 200)]
    cancel_connections: usize,
    /// Each hospital in a process of its own, with its own server and
    /// runtime (as before 2026-12-05), instead of every hospital in one
    /// process on one server sized for the cores, as `jyt up` runs them.
    #[arg(long)]
    process_per_hospital: bool,
    /// The replay target, seconds.
    #[arg(long, default_value_t = 60.0)]
    target_seconds: f64,
    /// A slot-inventory setting for every hospital, `KEY=VALUE` after
    /// `JYT_SLOT_INVENTORY__`, e.g. `BOOKING__CONCURRENT_WRITES=1`: for
    /// comparisons within one build. Repeatable.
    #[arg(long = "hospital-setting", value_parser = crate::key_value)]
    hospital_settings: Vec<(String, String)>,
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
}

/// A step's wait for the notices it owes, metered as a phase of its own.
struct NoticeWait<'a> {
    sink: &'a notices::Sink,
    parts: &'a costs::Parts,
    admin: &'a jyt_db::tokio_postgres::Client,
}

impl NoticeWait<'_> {
    async fn wait(&self, owed: &[NoticeKey], phase: &str, costs: &mut Vec<PhaseCost>) -> notices::Owed {
        let meter = self.parts.start(self.admin).await;
        let got = self.sink.wait_for(owed, NOTICE_DEADLINE).await;
        costs.push(meter.finish(phase, self.admin).await);
        tracing::warn!(?got, phase, "notices owed");
        got
    }
}

/// The notices the day owed its patients' apps, step by step.
#[derive(Serialize)]
struct NoticeSteps {
    channels: Vec<&'static str>,
    received: u64,
    bad_signatures: u64,
    /// With the clock 2 minutes before the holds' deadline.
    hold_warnings: notices::Owed,
    /// With the clock at 18:00 the evening before the visit.
    visit_reminders: notices::Owed,
    /// Confirmations, cancellations, refunds, lapses, no-shows: after the
    /// day's last answer.
    at_the_end: notices::Owed,
}

impl NoticeSteps {
    fn all_received(&self) -> bool {
        self.hold_warnings.all_received()
            && self.visit_reminders.all_received()
            && self.at_the_end.all_received()
    }
}

#[derive(Serialize)]
struct Summary {
    command: String,
    machine: String,
    settings: serde_json::Value,
    shares: serde_json::Value,
    phases: Vec<PhaseStats>,
    /// Where each phase's time went (CPU per part of the city, the
    /// machine, PostgreSQL's commits and WAL syncs).
    costs: Vec<PhaseCost>,
    /// The client phases' durations added up, with the waits for the
    /// notices each step owes (the clock moves and the sweeps' waits left
    /// out); the requests' share; and from the release to the last answer.
    replay_seconds: f64,
    request_seconds: f64,
    notices: NoticeSteps,
    wall_seconds: f64,
    /// H, the machine's yardstick, measured before the city started.
    machine_h_per_second: f64,
    counts: BTreeMap<String, i64>,
    memory: Vec<Memory>,
    check: crate::check::CheckReport,
    targets: Vec<Target>,
}

fn body(v: &serde_json::Value) -> Option<String> {
    Some(v.to_string())
}

/// The yardstick: H (a minimal actix-web handler, as `surge` measures it)
/// over this many requests and connections, before the city starts.
const YARDSTICK_REQUESTS: usize = 100_000;
const YARDSTICK_CONNECTIONS: usize = 32;

/// Check-in rounds on the visit day (Asia/Shanghai): each segment's window
/// (60 minutes before its start to its end) holds one of them.
const CHECK_IN_ROUNDS: [(u32, u32); 7] = [(7, 30), (8, 30), (9, 30), (10, 30), (13, 0), (14, 0), (15, 0)];

#[expect(clippy::too_many_lines, reason = "the day, phase by phase")]
pub async fn run(args: Args, command: String) -> anyhow::Result<bool> {
    let epoch = Instant::now();
    // The machine's own speed, before anything of ours runs: the same
    // binary's day took 88 s on one morning and 198 s on a night when this
    // figure had halved (loadtest/README.md, 2026-12-05), so a day is
    // compared only with days of a similar H.
    let yardstick = crate::ceilings::handler(epoch, YARDSTICK_REQUESTS, YARDSTICK_CONNECTIONS).await?;
    tracing::warn!(h_per_second = yardstick.per_second.round(), "machine yardstick H");
    let cards_prefix = city::fresh_redis_prefix();
    // Patients and prepaid balances through card-issuing's library calls
    // (its own process runs in the city).
    let cards_service = city::start_cards(&cards_prefix).await?;
    let numbers = crate::patients::ensure(&cards_service, args.patients).await?;
    let prepaid: Vec<String> = numbers
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 100 < PREPAID_PERCENT)
        .map(|(_, n)| n.clone())
        .collect();
    tracing::warn!(
        cards = prepaid.len(),
        "topping up the prepaid payers' cards (once per machine)"
    );
    crate::patients::top_up(&cards_service, &prepaid, 1_000_000).await?;
    let cards: Arc<Vec<Arc<str>>> = Arc::new(numbers.into_iter().map(Into::into).collect());

    // The apps' notice endpoint: a channel app's side of every notice.
    let sink = notices::Sink::start(1)?;
    let cfg = CityConfig {
        placement: Placement::Processes,
        server_per_hospital: args.process_per_hospital,
        hospital_extra: args.hospital_settings.clone(),
        gateway_extra: notices::callbacks_to(&sink.url),
        ..CityConfig::in_process(args.hospitals, args.capacity, Lock::Redis)
    };
    tracing::warn!(
        hospitals = args.hospitals,
        process_per_hospital = args.process_per_hospital,
        "starting the city, a process per service"
    );
    let city = city::start(&cfg, &cards_service).await?;
    // The city's card-issuing is its own process now (see `Cards::stop`).
    cards_service.stop().await?;
    let sampler = Sampler::start(city.processes());
    let parts = costs::Parts::new(city.processes()).with_gateway(&city.gateway_url);
    let admin = costs::admin().await?;
    let mut phase_costs = Vec::new();
    let ctx = crate::RunContext {
        epoch,
        http: http_client(args.connections)?,
        cards: cards.clone(),
    };
    let gateway: Arc<str> = city.gateway_url.clone().into();
    let plan = Arc::new(crate::plan(
        &city,
        args.attempts,
        args.hot_hospitals,
        args.hot_share,
    )?);
    let schedule_of: HashMap<Uuid, Uuid> = city.segments().iter().map(|s| (s.slot.id, s.schedule)).collect();

    city.release().await?;
    let released = Instant::now();
    tracing::warn!(attempts = plan.len(), "release instant: bookings");
    let meter = parts.start(&admin).await;
    let bookings = crate::attempts(&ctx, &city, plan.clone(), args.connections).await;
    phase_costs.push(meter.finish("bookings", &admin).await);
    let mut phases = vec![stats(
        &format!(
            "bookings: {} attempts, {} connections",
            plan.len(),
            args.connections
        ),
        "closed",
        &bookings,
    )?];
    let mut rng = rand::rngs::StdRng::seed_from_u64(68);
    let who = |s: &Sample| {
        let a = &plan[s.index];
        (a.patient % cards.len(), a.channel)
    };
    let card = |patient: usize| cards[patient].to_string();

    // Payments.
    let mut pay_calls = Vec::new();
    for s in &bookings {
        let Some(b) = s.outcome.booked.as_ref().filter(|b| b.status == "held") else {
            continue;
        };
        if !rng.random_bool(PAY_SHARE) {
            continue;
        }
        let (patient, channel) = who(s);
        let payment = if patient % 100 < PREPAID_PERCENT {
            serde_json::json!({"payment_method": "prepaid_card", "card_number": card(patient)})
        } else {
            let method = if rng.random_bool(INSURANCE_SHARE) {
                "insurance"
            } else {
                "self_pay"
            };
            serde_json::json!({
                "payment_method": method,
                "payment_reference": format!("lt-{}", Uuid::new_v4().simple()),
                "amount_fen": b.fee_fen,
            })
        };
        pay_calls.push(Call {
            channel,
            method: reqwest::Method::POST,
            path: format!("/v1/bookings/{}/payments", b.id),
            body: body(&payment),
            address: Some(crate::address(patient)),
        });
    }
    tracing::warn!(payments = pay_calls.len(), "payments");
    let meter = parts.start(&admin).await;
    let payments = closed_calls(epoch, &ctx.http, &gateway, pay_calls, args.action_connections).await;
    phase_costs.push(meter.finish("payments", &admin).await);
    phases.push(stats(
        "payments (signed notifications and prepaid)",
        "closed",
        &payments,
    )?);

    // Waitlist: patients who booked nothing join the line of the schedule
    // they last found sold out.
    let booked_patients: HashSet<usize> = bookings
        .iter()
        .filter(|s| s.outcome.status == 201)
        .map(|s| who(s).0)
        .collect();
    let mut lost: BTreeMap<usize, (Uuid, &'static str, String)> = BTreeMap::new();
    for s in &bookings {
        let (patient, channel) = who(s);
        if s.outcome.code == "SLOT_SOLD_OUT" && !booked_patients.contains(&patient) {
            let slot = &plan[s.index].segment.slot;
            if let Some(schedule) = schedule_of.get(&slot.id) {
                lost.insert(patient, (*schedule, channel, slot.hospital.to_string()));
            }
        }
    }
    let mut wait_calls = Vec::new();
    for (patient, (schedule, channel, hospital)) in &lost {
        if rng.random_bool(WAITLIST_SHARE) {
            wait_calls.push(Call {
                channel,
                method: reqwest::Method::POST,
                path: format!("/v1/hospitals/{hospital}/schedules/{schedule}/waitlist"),
                body: body(&serde_json::json!({"card_number": card(*patient)})),
                address: Some(crate::address(*patient)),
            });
        }
    }
    tracing::warn!(joins = wait_calls.len(), "waitlist joins");
    let meter = parts.start(&admin).await;
    let waitlist = closed_calls(epoch, &ctx.http, &gateway, wait_calls, args.action_connections).await;
    phase_costs.push(meter.finish("waitlist joins", &admin).await);
    phases.push(stats("waitlist joins", "closed", &waitlist)?);

    // Cancellations of confirmed bookings (free ones, and paid ones).
    let mut confirmed: Vec<(&Sample, String)> = Vec::new();
    let paid: HashMap<String, &Sample> = payments
        .iter()
        .filter_map(|s| {
            s.outcome
                .booked
                .as_ref()
                .filter(|b| b.status == "confirmed")
                .map(|b| (b.id.clone(), s))
        })
        .collect();
    for s in &bookings {
        if let Some(b) = &s.outcome.booked
            && (b.status == "confirmed" || paid.contains_key(&b.id))
        {
            confirmed.push((s, b.id.clone()));
        }
    }
    let mut cancel_calls = Vec::new();
    let mut cancelled: HashSet<String> = HashSet::new();
    for (s, id) in &confirmed {
        if rng.random_bool(CANCEL_SHARE) {
            let (patient, channel) = who(s);
            cancelled.insert(id.clone());
            cancel_calls.push(Call {
                channel,
                method: reqwest::Method::POST,
                path: format!("/v1/bookings/{id}/cancel"),
                body: body(&serde_json::json!({"card_number": card(patient)})),
                address: Some(crate::address(patient)),
            });
        }
    }
    tracing::warn!(cancellations = cancel_calls.len(), "cancellations");
    let meter = parts.start(&admin).await;
    let cancels = closed_calls(epoch, &ctx.http, &gateway, cancel_calls, args.cancel_connections).await;
    phase_costs.push(meter.finish("cancellations", &admin).await);
    phases.push(stats("cancellations", "closed", &cancels)?);
    // The sweeper promotes waiters every second.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Who is owed which notice: the bookings of the apps with a callback.
    let told = |s: &Sample| CALLBACK_CHANNELS.contains(&who(s).1);
    let unpaid: Vec<&Sample> = bookings
        .iter()
        .filter(|s| {
            s.outcome
                .booked
                .as_ref()
                .is_some_and(|b| b.status == "held" && !paid.contains_key(&b.id))
        })
        .collect();
    let owed_of = |kind: &str, samples: &mut dyn Iterator<Item = &Sample>| -> Vec<NoticeKey> {
        samples
            .filter(|s| told(s))
            .filter_map(|s| s.outcome.booked.as_ref())
            .map(|b| (kind.to_owned(), b.id.clone()))
            .collect()
    };

    let waits = NoticeWait {
        sink: &sink,
        parts: &parts,
        admin: &admin,
    };
    // Two minutes before the holds' deadline (10 minutes after the
    // release), their apps warn the patients who have not paid.
    city.set_clock(city.release_at + TimeDelta::minutes(9)).await?;
    let owed = owed_of(notices::HOLD_EXPIRING, &mut unpaid.iter().copied());
    let hold_warnings = waits
        .wait(&owed, "hold warnings (the clock at +9 min)", &mut phase_costs)
        .await;

    // Unpaid holds lapse.
    city.set_clock(city.release_at + TimeDelta::minutes(11)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Before the visit day (and the pools' merge the day before): the
    // line was served from cancelled and expired seats of its own pools.
    let promoted_before_merge = waitlist_promoted(&city).await?;

    // The evening before the visit: every booking still confirmed is
    // reminded (each checked with its hospital first).
    let kept: Vec<&Sample> = confirmed
        .iter()
        .filter(|(_, id)| !cancelled.contains(id))
        .map(|(s, _)| *s)
        .collect();
    if let Some(evening) = NaiveTime::from_hms_opt(18, 0, 1)
        .zip(city.visit_date.pred_opt())
        .map(|(t, d)| jyt_domain::time::at(d, t))
    {
        city.set_clock(evening).await?;
    }
    let owed = owed_of(notices::VISIT_REMINDER, &mut kept.iter().copied());
    let reminders = waits
        .wait(&owed, "visit reminders (the evening before)", &mut phase_costs)
        .await;

    // The visit day: check-in rounds.
    let mut rounds: Vec<Vec<Call>> = vec![Vec::new(); CHECK_IN_ROUNDS.len()];
    let at = |(h, m): (u32, u32)| {
        NaiveTime::from_hms_opt(h, m, 0).map(|t| jyt_domain::time::at(city.visit_date, t))
    };
    for (s, id) in &confirmed {
        if cancelled.contains(id) || !rng.random_bool(CHECK_IN_SHARE) {
            continue;
        }
        let Some(b) = &s.outcome.booked else { continue };
        let Ok(starts) = DateTime::parse_from_rfc3339(&b.starts_at) else {
            continue;
        };
        let starts = starts.with_timezone(&chrono::Utc);
        let round = CHECK_IN_ROUNDS.iter().position(|r| {
            at(*r)
                .is_some_and(|t| t >= starts - TimeDelta::minutes(60) && t <= starts + TimeDelta::minutes(30))
        });
        if let Some(r) = round {
            // The kiosk reads the patient's card: a booking made through
            // another app is checked in with it.
            rounds[r].push(Call {
                channel: "kiosk",
                method: reqwest::Method::POST,
                path: format!("/v1/bookings/{id}/check-in"),
                body: body(&serde_json::json!({
                    "pickup_code": b.pickup_code,
                    "card_number": card(who(s).0),
                })),
                address: None,
            });
        }
    }
    let mut check_ins = Vec::new();
    let meter = parts.start(&admin).await;
    for (r, calls) in CHECK_IN_ROUNDS.iter().zip(rounds) {
        if let Some(t) = at(*r) {
            city.set_clock(t).await?;
        }
        tracing::warn!(round = ?r, check_ins = calls.len(), "check-ins");
        check_ins.extend(closed_calls(epoch, &ctx.http, &gateway, calls, args.action_connections).await);
    }
    phase_costs.push(
        meter
            .finish("check-ins (7 rounds, with the clock moves)", &admin)
            .await,
    );
    phases.push(stats("check-ins (取号)", "closed", &check_ins)?);
    let request_seconds: f64 = phases.iter().map(|p| p.seconds).sum();
    let wall_seconds = released.elapsed().as_secs_f64();

    // The day ends: the rest become no-shows.
    if let Some(t) = at((23, 0)) {
        city.set_clock(t).await?;
    }
    let counts = settle(&city).await?;
    // Every other notice owed: each confirmation, cancellation and refund,
    // each lapsed hold, each no-show (the rest checked in).
    let checked_in: HashSet<String> = check_ins
        .iter()
        .filter(|s| s.outcome.status == 200)
        .filter_map(|s| s.outcome.booked.as_ref().map(|b| b.id.clone()))
        .collect();
    let confirmed_samples: Vec<&Sample> = confirmed.iter().map(|(s, _)| *s).collect();
    // As the cancellations' answers said (one refused stays confirmed).
    let cancelled_ok: HashSet<&str> = cancels
        .iter()
        .filter_map(|s| s.outcome.booked.as_ref())
        .filter(|b| b.status == "cancelled")
        .map(|b| b.id.as_str())
        .collect();
    let cancelled_samples: Vec<&Sample> = confirmed
        .iter()
        .filter(|(_, id)| cancelled_ok.contains(id.as_str()))
        .map(|(s, _)| *s)
        .collect();
    let mut owed = owed_of(notices::CONFIRMED, &mut confirmed_samples.iter().copied());
    owed.extend(owed_of(
        notices::CANCELLED,
        &mut cancelled_samples.iter().copied(),
    ));
    owed.extend(owed_of(
        notices::REFUND_ISSUED,
        &mut cancelled_samples
            .iter()
            .copied()
            .filter(|s| s.outcome.booked.as_ref().is_some_and(|b| b.fee_fen > 0)),
    ));
    owed.extend(owed_of(notices::EXPIRED, &mut unpaid.iter().copied()));
    owed.extend(owed_of(
        notices::NO_SHOW,
        &mut kept.iter().copied().filter(|s| {
            s.outcome
                .booked
                .as_ref()
                .is_some_and(|b| !checked_in.contains(&b.id))
        }),
    ));
    let at_the_end = waits.wait(&owed, "the last notices owed", &mut phase_costs).await;
    let (received, bad_signatures) = sink.totals();
    sink.stop().await;
    let notices = NoticeSteps {
        channels: CALLBACK_CHANNELS.to_vec(),
        received,
        bad_signatures,
        hold_warnings,
        visit_reminders: reminders,
        at_the_end,
    };
    // The day ends when its patients have been told, not at its last answer.
    let notice_seconds = notices.hold_warnings.waited_seconds
        + notices.visit_reminders.waited_seconds
        + notices.at_the_end.waited_seconds;
    let replay_seconds = request_seconds + notice_seconds;
    let memory = sampler.finish().await;

    // What each booking should be now: its last answer, moved on by the day.
    let all: Vec<&Sample> = bookings
        .iter()
        .chain(&payments)
        .chain(&waitlist)
        .chain(&cancels)
        .chain(&check_ins)
        .collect();
    let mut last: HashMap<Uuid, String> = HashMap::new();
    for s in &all {
        if let Some(b) = &s.outcome.booked
            && let Some(u) = booking_uuid(&b.id)
        {
            last.insert(u, b.status.clone());
        }
    }
    let expected: HashMap<Uuid, String> = last
        .into_iter()
        .filter_map(|(id, status)| match status.as_str() {
            "held" => Some((id, "expired".to_owned())),
            "confirmed" => Some((id, "no_show".to_owned())),
            _ => None,
        })
        .collect();
    let check = crate::check::check(&city, all.iter().copied(), &expected).await?;
    tracing::warn!(ok = check.ok(), problems = ?check.problems, "checked");
    city.stop().await?;
    city::delete_prefix(&cards_prefix).await?;

    let booked = phases[0].codes.get("BOOKED").copied().unwrap_or(0);
    let mut targets = vec![
        target(
            "bookings among the attempts",
            format!(
                "{} bookings among ~{} attempts",
                args.target_bookings, args.attempts
            ),
            format!(
                "{booked} bookings among {} attempts ({:.2} × the target; {:.1} attempts per booking)",
                phases[0].requests,
                ratio(booked, args.target_bookings),
                ratio(phases[0].requests, booked)
            ),
            booked >= args.target_bookings * 95 / 100,
        ),
        target(
            "the day replayed (bookings, payments, waitlist, cancellations, check-ins, and the notices they owe)",
            format!("≤ {:.0} s", args.target_seconds),
            format!(
                "{replay_seconds:.1} s ({:.2} × the target): {request_seconds:.1} s of requests, {notice_seconds:.1} s waiting for notices owed (hold warnings {:.1}, visit reminders {:.1}, the rest after the last answer {:.1}); {wall_seconds:.1} s from the release to the last check-in with the clock moves",
                replay_seconds / args.target_seconds,
                notices.hold_warnings.waited_seconds,
                notices.visit_reminders.waited_seconds,
                notices.at_the_end.waited_seconds,
            ),
            replay_seconds <= args.target_seconds,
        ),
    ];
    // Joins refused because a seat of the patient's own channel was left
    // are expected; the line must be served.
    let joined = waitlist.iter().filter(|s| s.outcome.status == 201).count();
    let refused = waitlist.len() - joined;
    let promoted = counts.get("waitlist promoted").copied().unwrap_or(0);
    targets.push(target(
        "waitlist: joined when no seat of the patient's channel is left, served from cancelled and expired seats",
        "promotions > 0".to_owned(),
        format!(
            "{joined} joined ({refused} refused), {promoted_before_merge} promoted before the pools merged, {promoted} by the end of the day, {} left the line, {} still waiting at the end",
            counts.get("waitlist left").copied().unwrap_or(0),
            counts.get("waitlist waiting").copied().unwrap_or(0)
        ),
        promoted > 0,
    ));
    for m in &memory {
        targets.push(target(
            &format!("resident memory, {} ({} process(es))", m.service, m.processes),
            format!("< {MEMORY_TARGET_MB:.0} MB each"),
            format!(
                "max RSS sampled {:.1} MB, VmHWM {:.1} MB",
                m.max_rss_mb, m.peak_hwm_mb
            ),
            m.peak_hwm_mb < MEMORY_TARGET_MB,
        ));
    }
    let notices_ok = notices.all_received() && notices.bad_signatures == 0;
    targets.push(target(
        "notices: every one owed reaches its app, signed with the app's secret",
        format!(
            "to {}: each hold warning before the deadline, reminder the evening before, confirmation, cancellation, refund, lapse and no-show",
            CALLBACK_CHANNELS.join(", ")
        ),
        format!(
            "{} received ({} refused for a bad signature); missing: hold warnings {:?}, reminders {:?}, the rest {:?}; copies beyond the first: {:?}",
            notices.received,
            notices.bad_signatures,
            notices.hold_warnings.missing,
            notices.visit_reminders.missing,
            notices.at_the_end.missing,
            notices.at_the_end.duplicates
        ),
        notices_ok,
    ));
    targets.push(report::correctness(
        "correctness after the day",
        "no oversell, every answer in PostgreSQL in the told state (moved on by the day), Redis = PostgreSQL, no 5xx",
        &check,
    ));
    let correct = check.ok() && notices_ok;
    let summary = Summary {
        command,
        machine: crate::machine("generator in one process, each service in its own (loadtest serve)"),
        settings: serde_json::json!({
            "attempts": args.attempts, "patients": args.patients, "hospitals": args.hospitals, "process_per_hospital": args.process_per_hospital,
            "seats_per_segment": args.capacity, "segments_per_hospital": 78,
            "hot_hospitals": args.hot_hospitals, "hot_share": args.hot_share,
            "connections": args.connections, "action_connections": args.action_connections,
            "cancel_connections": args.cancel_connections, "hospital_settings": args.hospital_settings,
            "channels": crate::CHANNEL_WEIGHTS,
        }),
        shares: serde_json::json!({
            "held bookings paid": PAY_SHARE,
            "payers by prepaid card (patients i % 100 < 15)": 0.15,
            "other payers by insurance (the rest self-pay), signed notifications": INSURANCE_SHARE,
            "patients without a booking joining a waitlist": WAITLIST_SHARE,
            "confirmed bookings cancelled": CANCEL_SHARE,
            "confirmed, not cancelled, checking in (the rest no-show)": CHECK_IN_SHARE,
        }),
        phases,
        costs: phase_costs,
        replay_seconds: (replay_seconds * 10.0).round() / 10.0,
        request_seconds: (request_seconds * 10.0).round() / 10.0,
        notices,
        wall_seconds: (wall_seconds * 10.0).round() / 10.0,
        machine_h_per_second: yardstick.per_second.round(),
        counts,
        memory,
        check,
        targets,
    };
    report::write_json(&args.out.join("peak-day-summary.json"), &summary)?;
    let phases: Vec<&PhaseStats> = summary.phases.iter().collect();
    report::chart(&args.out.join("peak-day.png"), "peak day", &phases)?;
    print(&summary);
    Ok(correct)
}

#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Waitlist entries promoted so far, in every hospital.
async fn waitlist_promoted(city: &city::City) -> anyhow::Result<i64> {
    let mut promoted = 0;
    for h in &city.hospitals {
        let client = h.state.pool.get().await?;
        promoted += client
            .query_one(
                "SELECT count(*) FROM waitlist_entries WHERE status = 'promoted'",
                &[],
            )
            .await?
            .get::<_, i64>(0);
    }
    Ok(promoted)
}

/// Wait (up to 60 s) for the sweepers to mark every confirmed booking of
/// the day a no-show, then count the bookings by status and the waitlist.
async fn settle(city: &city::City) -> anyhow::Result<BTreeMap<String, i64>> {
    let started = Instant::now();
    loop {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for h in &city.hospitals {
            let client = h.state.pool.get().await?;
            for row in client
                .query("SELECT status, count(*) FROM bookings GROUP BY status", &[])
                .await?
            {
                *counts
                    .entry(format!("bookings {}", row.get::<_, String>(0)))
                    .or_insert(0) += row.get::<_, i64>(1);
            }
            for row in client
                .query(
                    "SELECT status, count(*) FROM waitlist_entries GROUP BY status",
                    &[],
                )
                .await?
            {
                *counts
                    .entry(format!("waitlist {}", row.get::<_, String>(0)))
                    .or_insert(0) += row.get::<_, i64>(1);
            }
        }
        let open = counts.get("bookings confirmed").copied().unwrap_or(0)
            + counts.get("bookings held").copied().unwrap_or(0);
        if open == 0 || started.elapsed() > Duration::from_secs(60) {
            return Ok(counts);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[expect(clippy::print_stdout, reason = "the load test reports on stdout")]
fn print(s: &Summary) {
    for p in &s.phases {
        report::print_phase(p);
    }
    costs::print(&s.costs);
    println!(
        "replay {:.1} s ({:.1} s of requests, the rest waiting for notices owed), {:.1} s wall; {:?}",
        s.replay_seconds, s.request_seconds, s.wall_seconds, s.counts
    );
    println!(
        "notices: {} received, {} with a bad signature; hold warnings {:.1} s, visit reminders {:.1} s, the rest {:.1} s after the last answer",
        s.notices.received,
        s.notices.bad_signatures,
        s.notices.hold_warnings.waited_seconds,
        s.notices.visit_reminders.waited_seconds,
        s.notices.at_the_end.waited_seconds
    );
    println!(
        "machine yardstick H {:.0}/s before the city started ({YARDSTICK_REQUESTS} requests, {YARDSTICK_CONNECTIONS} connections)",
        s.machine_h_per_second
    );
    report::print_targets(&s.targets);
}
