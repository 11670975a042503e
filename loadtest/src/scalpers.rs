//! `scalpers`: honest patients and scalpers at the same release instant,
//! once with the gateway's anti-scalping rules and limits as shipped and
//! once with them off (`anti_scalping.enabled = false`, the `limits.*`
//! buckets opened), same seed, same plan.
//!
//! - Honest patients press "book" once at the release (within its first
//!   2 s), and once more 1 to 3 s later on another expert-clinic segment if
//!   the first did not book: the README's "once or twice".
//! - Scalpers loop as fast as answers come back until `--scalper-seconds`
//!   are over, each on random expert-clinic segments: a few bot identities
//!   with several requests in flight each (own device address each); a farm
//!   of identities behind one client address; a farm of identities
//!   registered under one phone number, each behind its own address (a
//!   proxy pool).
//!
//! Then, in the same run, fair release ([`crate::fairness`]): first come
//! and lottery side by side at one release instant, bots pressing 100
//! times from +0.001 s and honest patients once at +5 s, with the rules on.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jyt_domain::SlotRef;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::city::{self, CityConfig, Lock};
use crate::load::{Sample, book, http_client};
use crate::report::{self, PhaseStats, Target, stats, target};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 4)]
    hospitals: usize,
    /// Hospitals whose expert clinics everyone is after.
    #[arg(long, default_value_t = 3)]
    hot_hospitals: usize,
    /// Seats per segment.
    #[arg(long, default_value_t = 4)]
    capacity: i32,
    #[arg(long, default_value_t = 800)]
    honest: usize,
    /// Bot identities, each with `--bot-parallel` requests in flight.
    #[arg(long, default_value_t = 4)]
    bots: usize,
    #[arg(long, default_value_t = 8)]
    bot_parallel: usize,
    /// Identities behind one client address (WeChat).
    #[arg(long, default_value_t = 40)]
    address_farm: usize,
    /// Identities registered under one phone number, one address each.
    #[arg(long, default_value_t = 20)]
    phone_farm: usize,
    /// How long the scalpers loop after the release instant.
    #[arg(long, default_value_t = 20.0)]
    scalper_seconds: f64,
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
    /// Fairness comparison: honest patients per release mode.
    #[arg(long, default_value_t = 200)]
    fair_honest: usize,
    /// Fairness comparison: bot identities per release mode.
    #[arg(long, default_value_t = 50)]
    fair_bots: usize,
    /// Fairness comparison: seats per segment of the hot schedule (5 segments).
    #[arg(long, default_value_t = 20)]
    fair_capacity: i32,
    #[arg(long, default_value_t = 10)]
    lottery_window_seconds: u32,
    /// When honest patients press in the fairness comparison.
    #[arg(long, default_value_t = 5.0)]
    fair_honest_delay_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Who {
    Honest,
    Bot,
    AddressFarm,
    PhoneFarm,
}

impl Who {
    fn as_str(self) -> &'static str {
        match self {
            Who::Honest => "honest",
            Who::Bot => "bot",
            Who::AddressFarm => "address_farm",
            Who::PhoneFarm => "phone_farm",
        }
    }
}

/// One honest patient's plan: indices into the hot segments.
#[derive(Clone)]
struct Honest {
    patient: usize,
    channel: &'static str,
    first: usize,
    second: usize,
    delay: Duration,
    think: Duration,
}

/// One scalper loop.
#[derive(Clone)]
struct Loop {
    who: Who,
    card: Arc<str>,
    channel: &'static str,
    address: String,
    seed: u64,
}

#[derive(Serialize)]
struct ScalperRun {
    rules: bool,
    gateway_settings: Vec<(String, String)>,
    honest_patients: usize,
    honest_booked: usize,
    honest_success_rate: f64,
    /// Honest requests refused by a rule (429).
    honest_rate_limited: usize,
    scalper_requests: usize,
    scalper_bookings: usize,
    /// Scalpers' share of every booking of the hot segments.
    scalper_share: f64,
    hot_seats: i64,
    /// Per group: answers by code (429s named by rule, `RATE_LIMITED:<rule>`).
    codes_by_group: BTreeMap<String, BTreeMap<String, usize>>,
    bookings_by_group: BTreeMap<String, usize>,
    honest: PhaseStats,
    scalpers: PhaseStats,
    check: crate::check::CheckReport,
}

#[derive(Serialize)]
struct Summary {
    command: String,
    machine: String,
    settings: serde_json::Value,
    runs: Vec<ScalperRun>,
    /// First come vs lottery at one release instant.
    fairness: crate::fairness::Fairness,
    targets: Vec<Target>,
}

/// The gateway's rules as shipped (`services/gateway/config/defaults.toml`),
/// except the per-app bucket: one generator sends a whole city's channel
/// traffic through five app ids here, which that bucket (per app, per
/// replica) is not sized for. The release window covers the whole run.
fn rules_on(release_time: &str) -> Vec<(String, String)> {
    [
        ("ANTI_SCALPING__ENABLED", "true"),
        ("ANTI_SCALPING__RELEASE_PERSON_PER_MINUTE", "6"),
        ("ANTI_SCALPING__RELEASE_PERSON_BURST", "2"),
        ("ANTI_SCALPING__MAX_PERSONS_PER_ADDRESS", "8"),
        ("LIMITS__ADDRESS_PER_MINUTE", "600"),
        ("LIMITS__ADDRESS_BURST", "60"),
        ("LIMITS__PERSON_PER_MINUTE", "20"),
        ("LIMITS__PERSON_BURST", "5"),
        ("LIMITS__DAILY_BOOKINGS_PER_PERSON", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(window(release_time))
    .collect()
}

/// Off: no anti-scalping rule, the `limits.*` buckets opened (as for the
/// surge) and no city-wide daily cap to speak of.
fn rules_off(release_time: &str) -> Vec<(String, String)> {
    [
        ("ANTI_SCALPING__ENABLED", "false"),
        ("LIMITS__PERSON_PER_MINUTE", "10000000"),
        ("LIMITS__PERSON_BURST", "1000000"),
        ("LIMITS__DAILY_BOOKINGS_PER_PERSON", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(window(release_time))
    .collect()
}

fn window(release_time: &str) -> Vec<(String, String)> {
    vec![
        ("ANTI_SCALPING__RELEASE_TIMES".to_owned(), release_time.to_owned()),
        (
            "ANTI_SCALPING__RELEASE_WINDOW_SECONDS".to_owned(),
            "3600".to_owned(),
        ),
    ]
}

#[expect(
    clippy::too_many_lines,
    reason = "one load-test scenario, its phases in order"
)]
pub async fn run(args: Args, command: String) -> anyhow::Result<bool> {
    let epoch = Instant::now();
    let cards_prefix = city::fresh_redis_prefix();
    let cards_service = city::start_cards(&cards_prefix).await?;
    let regular = args.honest + args.bots + args.address_farm;
    let mut cards: Vec<Arc<str>> = crate::patients::ensure(&cards_service, regular)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    tracing::warn!(n = args.phone_farm, "registering the phone farm's identities");
    let farm_phone = "13912345678";
    cards.extend(
        crate::patients::register_sharing_phone(&cards_service, args.phone_farm, farm_phone)
            .await?
            .into_iter()
            .map(Into::<Arc<str>>::into),
    );

    // The plan, the same for both runs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let hot_count = args.hot_hospitals * 26;
    anyhow::ensure!(hot_count > 1, "no hot segments");
    let honest: Vec<Honest> = (0..args.honest)
        .map(|patient| {
            let first = rng.random_range(0..hot_count);
            Honest {
                patient,
                channel: crate::channel(&mut rng),
                first,
                second: (first + rng.random_range(1..hot_count)) % hot_count,
                delay: Duration::from_millis(rng.random_range(0..2000)),
                think: Duration::from_millis(rng.random_range(1000..3000)),
            }
        })
        .collect();
    let mut loops = Vec::new();
    let mut next = args.honest;
    for b in 0..args.bots {
        for p in 0..args.bot_parallel {
            loops.push(Loop {
                who: Who::Bot,
                card: cards[next + b].clone(),
                channel: "app",
                address: format!("10.251.0.{b}"),
                seed: (100 + b * 100 + p) as u64,
            });
        }
    }
    next += args.bots;
    for i in 0..args.address_farm {
        loops.push(Loop {
            who: Who::AddressFarm,
            card: cards[next + i].clone(),
            channel: "wechat",
            address: "10.250.0.1".to_owned(),
            seed: (10_000 + i) as u64,
        });
    }
    next += args.address_farm;
    for i in 0..args.phone_farm {
        loops.push(Loop {
            who: Who::PhoneFarm,
            card: cards[next + i].clone(),
            channel: "wechat",
            address: format!("10.252.{}.{}", i / 250, i % 250),
            seed: (20_000 + i) as u64,
        });
    }
    let fair_cards = fair_identities(&cards_service, &cards, 2 * (args.fair_honest + args.fair_bots)).await?;
    let loops = Arc::new(loops);
    let honest = Arc::new(honest);
    let cards = Arc::new(cards);

    let release_time = jyt_domain::time::local(chrono::Utc::now())
        .format("%H:%M")
        .to_string();
    let mut runs = Vec::new();
    for rules in [true, false] {
        let extra = if rules {
            rules_on(&release_time)
        } else {
            rules_off(&release_time)
        };
        runs.push(
            run_once(
                &args,
                epoch,
                rules,
                extra,
                &cards_service,
                &cards,
                &honest,
                &loops,
            )
            .await?,
        );
    }
    let fairness = crate::fairness::run(
        crate::fairness::FairnessArgs {
            honest: args.fair_honest,
            bots: args.fair_bots,
            capacity: args.fair_capacity,
            window_seconds: args.lottery_window_seconds,
            honest_delay: Duration::from_secs_f64(args.fair_honest_delay_seconds),
        },
        rules_on(&release_time),
        &cards_service,
        &crate::fairness::groups(&fair_cards, args.fair_honest, args.fair_bots)?,
    )
    .await?;
    city::delete_prefix(&cards_prefix).await?;

    let (on, off) = (&runs[0], &runs[1]);
    let mut targets = vec![
        target(
            "honest patients' success rate, rules on vs off",
            "not lower with the rules".into(),
            format!(
                "{:.1} % with ({} of {}), {:.1} % without ({} of {})",
                100.0 * on.honest_success_rate,
                on.honest_booked,
                on.honest_patients,
                100.0 * off.honest_success_rate,
                off.honest_booked,
                off.honest_patients
            ),
            on.honest_success_rate >= off.honest_success_rate,
        ),
        target(
            "scalpers' share of the hot seats booked",
            "lower with the rules".into(),
            format!(
                "{:.1} % with ({} bookings from {} requests), {:.1} % without ({} from {})",
                100.0 * on.scalper_share,
                on.scalper_bookings,
                on.scalper_requests,
                100.0 * off.scalper_share,
                off.scalper_bookings,
                off.scalper_requests
            ),
            on.scalper_share < off.scalper_share,
        ),
        target(
            "honest requests refused by a rule (429), rules on",
            "0".into(),
            on.honest_rate_limited.to_string(),
            on.honest_rate_limited == 0,
        ),
    ];
    for r in &runs {
        targets.push(report::correctness(
            &format!("correctness, rules {}", if r.rules { "on" } else { "off" }),
            report::CHECKS,
            &r.check,
        ));
    }
    targets.extend(fairness_targets(&fairness));
    let correct = runs.iter().all(|r| r.check.ok()) && fairness.correct() && fairness.lottery_is_fair();
    let summary = Summary {
        command,
        machine: crate::machine("generator and every service in one process"),
        settings: serde_json::json!({
            "hospitals": args.hospitals, "hot_hospitals": args.hot_hospitals,
            "seats_per_segment": args.capacity, "honest_patients": args.honest,
            "honest_attempts": "1, and a 2nd 1-3 s later if the 1st did not book",
            "bots": args.bots, "bot_parallel": args.bot_parallel,
            "address_farm": args.address_farm, "phone_farm": args.phone_farm,
            "phone_farm_phone": farm_phone, "scalper_seconds": args.scalper_seconds,
            "channels_honest": crate::CHANNEL_WEIGHTS,
            "channels_scalpers": "bots: app; farms: wechat",
            "fairness": {
                "honest_per_mode": args.fair_honest, "bots_per_mode": args.fair_bots,
                "hot_seats": 5 * args.fair_capacity, "bot_presses": 100, "bots_from_seconds": 0.001,
                "honest_at_seconds": args.fair_honest_delay_seconds,
                "lottery_window_seconds": args.lottery_window_seconds, "channel": "wechat (both groups)",
            },
        }),
        runs,
        fairness,
        targets,
    };
    report::write_json(&args.out.join("scalpers-summary.json"), &summary)?;
    let phases: Vec<&PhaseStats> = summary
        .runs
        .iter()
        .flat_map(|r| [&r.honest, &r.scalpers])
        .collect();
    report::chart(&args.out.join("scalpers.png"), "scalpers", &phases)?;
    print(&summary);
    Ok(correct)
}

#[expect(clippy::too_many_arguments, reason = "one run's whole context")]
async fn run_once(
    args: &Args,
    epoch: Instant,
    rules: bool,
    extra: Vec<(String, String)>,
    cards_service: &city::Cards,
    cards: &Arc<Vec<Arc<str>>>,
    honest: &Arc<Vec<Honest>>,
    loops: &Arc<Vec<Loop>>,
) -> anyhow::Result<ScalperRun> {
    let mut cfg = CityConfig::in_process(args.hospitals, args.capacity, Lock::Redis);
    cfg.gateway_extra.clone_from(&extra);
    let city = city::start(&cfg, cards_service).await?;
    let hot: Arc<Vec<SlotRef>> = Arc::new(
        city.hospitals
            .iter()
            .take(args.hot_hospitals)
            .flat_map(|h| h.segments.iter().filter(|s| s.expert).map(|s| s.slot.clone()))
            .collect(),
    );
    anyhow::ensure!(
        hot.len() == args.hot_hospitals * 26,
        "expected 26 expert segments per hospital, found {}",
        hot.len()
    );
    let gateway: Arc<str> = city.gateway_url.clone().into();
    let http = http_client(args.honest + loops.len())?;
    city.release().await?;
    tracing::warn!(rules, "release instant: honest patients and scalpers");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.scalper_seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for h in honest.iter().cloned() {
        let (http, gateway, hot, card) = (
            http.clone(),
            gateway.clone(),
            hot.clone(),
            cards[h.patient].clone(),
        );
        tasks.spawn(async move {
            let mut out = Vec::new();
            tokio::time::sleep_until(start + h.delay).await;
            for (n, seg) in [h.first, h.second].into_iter().enumerate() {
                if n == 1 {
                    tokio::time::sleep(h.think).await;
                }
                let began = Instant::now();
                let outcome = book(
                    http.clone(),
                    gateway.clone(),
                    h.channel,
                    hot[seg].clone(),
                    card.clone(),
                    crate::address(h.patient),
                )
                .await;
                let booked = outcome.status == 201;
                out.push((Who::Honest, h.patient, sample(epoch, began, outcome)));
                if booked {
                    break;
                }
            }
            out
        });
    }
    for (i, l) in loops.iter().cloned().enumerate() {
        let (http, gateway, hot) = (http.clone(), gateway.clone(), hot.clone());
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(l.seed);
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let began = Instant::now();
                let seg = hot[rng.random_range(0..hot.len())].clone();
                let outcome = book(
                    http.clone(),
                    gateway.clone(),
                    l.channel,
                    seg,
                    l.card.clone(),
                    l.address.clone(),
                )
                .await;
                out.push((l.who, i, sample(epoch, began, outcome)));
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.context("a load task failed")?);
    }
    let mut codes_by_group: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut bookings_by_group: BTreeMap<String, usize> = BTreeMap::new();
    let mut honest_booked: HashMap<usize, bool> = HashMap::new();
    let mut honest_rate_limited = 0;
    for (who, id, s) in &all {
        *codes_by_group
            .entry(who.as_str().to_owned())
            .or_default()
            .entry(s.outcome.code.clone())
            .or_insert(0) += 1;
        if s.outcome.status == 201 {
            *bookings_by_group.entry(who.as_str().to_owned()).or_insert(0) += 1;
        }
        if *who == Who::Honest {
            let e = honest_booked.entry(*id).or_insert(false);
            *e |= s.outcome.status == 201;
            if s.outcome.status == 429 {
                honest_rate_limited += 1;
            }
        }
    }
    let honest_n = honest_booked.values().filter(|b| **b).count();
    let scalper_bookings: usize = bookings_by_group
        .iter()
        .filter(|(k, _)| k.as_str() != "honest")
        .map(|(_, v)| v)
        .sum();
    let label = if rules { "rules on" } else { "rules off" };
    let honest_stats = stats(
        &format!("honest patients, {label}"),
        "scripted",
        all.iter()
            .filter(|(w, _, _)| *w == Who::Honest)
            .map(|(_, _, s)| s),
    )?;
    let scalper_stats = stats(
        &format!("scalpers, {label}"),
        "closed",
        all.iter()
            .filter(|(w, _, _)| *w != Who::Honest)
            .map(|(_, _, s)| s),
    )?;
    let check = crate::check::check(&city, all.iter().map(|(_, _, s)| s), &HashMap::new()).await?;
    tracing::warn!(rules, ok = check.ok(), problems = ?check.problems, "checked");
    let hot_seats = i64::from(args.capacity) * i64::try_from(hot.len())?;
    city.stop().await?;
    let total = honest_n + scalper_bookings;
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(ScalperRun {
        rules,
        gateway_settings: extra,
        honest_patients: honest.len(),
        honest_booked: honest_n,
        honest_success_rate: ratio(honest_n, honest.len()),
        honest_rate_limited,
        scalper_requests: scalper_stats.requests,
        scalper_bookings,
        scalper_share: ratio(scalper_bookings, total),
        hot_seats,
        codes_by_group,
        bookings_by_group,
        honest: honest_stats,
        scalpers: scalper_stats,
        check,
    })
}

/// Fresh identities for the fairness comparison: registered ones not
/// used by the scalpers' runs (nor the phone farm).
async fn fair_identities(cards: &city::Cards, used: &[Arc<str>], n: usize) -> anyhow::Result<Vec<Arc<str>>> {
    let used: std::collections::HashSet<&str> = used.iter().map(AsRef::as_ref).collect();
    let all = crate::patients::ensure(cards, used.len() + n).await?;
    let fresh: Vec<Arc<str>> = all
        .into_iter()
        .filter(|c| !used.contains(c.as_str()))
        .take(n)
        .map(Into::into)
        .collect();
    anyhow::ensure!(
        fresh.len() == n,
        "only {} fresh identities for the fairness comparison",
        fresh.len()
    );
    Ok(fresh)
}

fn fairness_targets(f: &crate::fairness::Fairness) -> Vec<Target> {
    let (fc, lot) = (&f.first_come, &f.lottery);
    let pct = |r: f64| 100.0 * r;
    vec![
        target(
            "honest per-identity success, first come vs lottery (pressed once at +5 s)",
            "higher under the lottery".into(),
            format!(
                "first come {:.1} % ({} of {}), lottery {:.1} % ({} of {})",
                pct(fc.honest_rate),
                fc.honest_won,
                fc.honest,
                pct(lot.honest_rate),
                lot.honest_won,
                lot.honest
            ),
            lot.honest_rate > fc.honest_rate,
        ),
        target(
            "lottery: honest vs bot (100 presses at +0.001 s) per-identity win rate",
            "equal: |z| < 2.576 (two-proportion, 99 %)".into(),
            format!(
                "honest {:.1} % [{:.1}, {:.1}], bots {:.1} % [{:.1}, {:.1}] (Wilson 99 %), z = {:.2}; first come: honest {:.1} %, bots {:.1} %, z = {:.2}",
                pct(lot.honest_rate),
                pct(lot.honest_interval.0),
                pct(lot.honest_interval.1),
                pct(lot.bot_rate),
                pct(lot.bot_interval.0),
                pct(lot.bot_interval.1),
                lot.z,
                pct(fc.honest_rate),
                pct(fc.bot_rate),
                fc.z
            ),
            f.lottery_is_fair(),
        ),
        target(
            "lottery correctness",
            "no oversell, each entrant's app told once, draw reproduced".into(),
            format!(
                "{} oversold segments, {} of {} entrants not told exactly once, reproduced: {}, drawn {:.1} s after the window",
                f.oversold_segments,
                f.notices_not_once,
                f.entrants,
                f.draw_reproduced,
                f.draw_seconds_after_window
            ),
            f.correct(),
        ),
    ]
}

fn sample(epoch: Instant, began: Instant, outcome: crate::load::Outcome) -> Sample {
    Sample {
        index: 0,
        due: began - epoch,
        latency: began.elapsed(),
        outcome,
    }
}

#[expect(clippy::print_stdout, reason = "the load test reports on stdout")]
fn print(s: &Summary) {
    for r in &s.runs {
        report::print_phase(&r.honest);
        report::print_phase(&r.scalpers);
        println!(
            "rules {}: honest {}/{} booked ({:.1} %), {} honest 429s; scalpers {} bookings of {} requests ({:.1} % of bookings); hot seats {}",
            if r.rules { "on" } else { "off" },
            r.honest_booked,
            r.honest_patients,
            100.0 * r.honest_success_rate,
            r.honest_rate_limited,
            r.scalper_bookings,
            r.scalper_requests,
            100.0 * r.scalper_share,
            r.hot_seats
        );
        for (group, codes) in &r.codes_by_group {
            println!("  {group:<13} {codes:?}");
        }
    }
    for m in [&s.fairness.first_come, &s.fairness.lottery] {
        println!(
            "fairness {}: honest {}/{} ({:.1} %), bots {}/{} ({:.1} %, {} requests), z = {:.2}; seats {}",
            m.mode,
            m.honest_won,
            m.honest,
            100.0 * m.honest_rate,
            m.bots_won,
            m.bots,
            100.0 * m.bot_rate,
            m.bot_requests,
            m.z,
            m.seats
        );
        if let (Some(h), Some(b), Some(z)) = (m.honest_entered, m.bots_entered, m.z_among_entrants) {
            println!("  entered: honest {h}, bots {b}; z among entrants = {z:.2}");
        }
        println!("  bots   {:?}", m.bot_codes);
        println!("  honest {:?}", m.honest_codes);
    }
    report::print_targets(&s.targets);
}
