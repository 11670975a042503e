//! The `scalpers` scenario's fairness comparison (issue 23 part 5): at one
//! release instant, in one city, the same kind of hot schedule is released
//! first come at hospital `h01` and by lottery at `h02` (window
//! `--lottery-window-seconds`). At each, bots press "book" 100 times from
//! +0.001 s and honest patients once at +5 s; every identity is used at
//! one hospital only. Outcomes are read from PostgreSQL: a live booking of
//! the hot schedule (first come) or an entry's `won` (lottery).
//!
//! An honest patient's app resends the one press while the platform
//! answers 5xx (`Retry-After: 1`), up to 10 times; every answer is counted
//! in `honest_codes`.
//!
//! Both groups book through the `wechat` channel (its pool and common: 45 %
//! of each segment under the default shares): channel pools are each
//! channel's quota by design, so holding the channel fixed is what
//! isolates "pressed early and often" from "pressed once, late".
//!
//! Under the lottery the two groups' per-identity rates must not differ:
//! a two-proportion z-test at 99 % (|z| < 2.576), with each group's Wilson
//! 99 % interval reported. Also checked: no segment above capacity, and
//! every entrant's app told exactly once (`draw.won` / `draw.lost`,
//! counted at a notice endpoint this run serves to the gateway).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use jyt_domain::SlotRef;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::city::{self, City, CityConfig, Lock};
use crate::load::{book, http_client};

/// z for a two-sided 99 % test.
const Z_99: f64 = 2.576;
/// Both groups' channel (see the module doc).
const CHANNEL: &str = "wechat";
/// Bots press this often, from +0.001 s.
const BOT_PRESSES: usize = 100;
/// An honest patient's app sends their one press again at most this often
/// while the platform answers 5xx (a loaded debug build does).
const HONEST_RETRIES: usize = 10;

#[derive(Clone, Copy)]
pub struct FairnessArgs {
    pub honest: usize,
    pub bots: usize,
    /// Seats per segment of the hot schedule (5 segments).
    pub capacity: i32,
    pub window_seconds: u32,
    pub honest_delay: Duration,
}

#[derive(Debug, Serialize)]
pub struct ModeFigures {
    pub mode: String,
    pub seats: i64,
    pub honest: usize,
    pub honest_won: usize,
    pub honest_rate: f64,
    /// Wilson 99 % interval of the honest rate.
    pub honest_interval: (f64, f64),
    pub bots: usize,
    pub bots_won: usize,
    pub bot_rate: f64,
    pub bot_interval: (f64, f64),
    /// Two-proportion z of honest vs bot rates.
    pub z: f64,
    /// Lottery only: identities with an entry (the rest never got through).
    pub honest_entered: Option<usize>,
    pub bots_entered: Option<usize>,
    /// Lottery only: z of the win rates among those who entered.
    pub z_among_entrants: Option<f64>,
    pub bot_requests: usize,
    /// Bot answers by code (429s by rule).
    pub bot_codes: BTreeMap<String, usize>,
    pub honest_codes: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize)]
pub struct Fairness {
    pub first_come: ModeFigures,
    pub lottery: ModeFigures,
    pub oversold_segments: i64,
    pub entrants: i64,
    /// Entrants whose app got anything but exactly one `draw.won`/`draw.lost`.
    pub notices_not_once: usize,
    pub draw_reproduced: bool,
    pub draw_seconds_after_window: f64,
}

impl Fairness {
    pub fn lottery_is_fair(&self) -> bool {
        self.lottery.z.abs() < Z_99
    }

    pub fn correct(&self) -> bool {
        self.oversold_segments == 0 && self.notices_not_once == 0 && self.draw_reproduced
    }
}

/// The hot schedule both hospitals release: 5 segments of `capacity`.
fn hot_schedule(date: chrono::NaiveDate, capacity: i32, lottery: Option<u32>) -> serde_json::Value {
    let segments: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            let (from, to) = (8 * 60 + 30 * i, 8 * 60 + 30 * (i + 1));
            serde_json::json!({
                "starts_at": format!("{date}T{:02}:{:02}:00+08:00", from / 60, from % 60),
                "ends_at": format!("{date}T{:02}:{:02}:00+08:00", to / 60, to % 60),
                "capacity": capacity,
            })
        })
        .collect();
    let mut s = serde_json::json!({
        "id": "fair-hot",
        "department": { "id": "fair-derm", "name": "皮肤科 famous clinic" },
        "doctor": { "id": "fair-doc", "name": "名医", "title": "主任医师" },
        "date": date,
        "session": "morning",
        "level": "expert",
        "fee_fen": 10000,
        "segments": segments,
    });
    if let Some(window) = lottery {
        s["release_mode"] = "lottery".into();
        s["lottery_window_seconds"] = window.into();
    }
    serde_json::json!({ "schedules": [s] })
}

async fn publish(city: &City, i: usize, body: &serde_json::Value) -> anyhow::Result<(Uuid, Vec<SlotRef>)> {
    let h = &city.hospitals[i];
    let req: slot_inventory::federation::publish::PublishRequest = serde_json::from_value(body.clone())?;
    let out = slot_inventory::federation::publish::publish(&h.state, &req)
        .await
        .map_err(|e| anyhow::anyhow!("publishing the hot schedule at {}: {e}", h.id))?;
    let ids = out.schedules.first().context("no schedule published")?;
    Ok((
        ids.schedule_id,
        ids.segment_ids
            .iter()
            .map(|s| SlotRef::new(h.id.clone(), *s))
            .collect(),
    ))
}

/// Card number → person id, from card-issuing.
async fn persons(cards: &city::Cards, numbers: &[Arc<str>]) -> anyhow::Result<HashMap<Uuid, Arc<str>>> {
    let client = cards.state.pool.get().await?;
    let wanted: Vec<&str> = numbers.iter().map(AsRef::as_ref).collect();
    let rows = client
        .query(
            "SELECT person_id, card_number FROM cards WHERE card_number = ANY($1)",
            &[&wanted],
        )
        .await?;
    let by_number: HashMap<&str, &Arc<str>> = numbers.iter().map(|n| (n.as_ref(), n)).collect();
    Ok(rows
        .iter()
        .filter_map(|r| {
            let number: String = r.get(1);
            by_number.get(number.as_str()).map(|n| (r.get(0), (*n).clone()))
        })
        .collect())
}

/// Persons with a win at hospital `i`: a live booking of the schedule
/// (first come) or an entry drawn `won` (lottery).
async fn winners(city: &City, i: usize, schedule: Uuid, lottery: bool) -> anyhow::Result<HashSet<Uuid>> {
    persons_where(city, i, schedule, lottery, true).await
}

/// Persons at hospital `i` with a live booking of the schedule (first
/// come), or with an entry (`won_only`: a won one) in its lottery.
async fn persons_where(
    city: &City,
    i: usize,
    schedule: Uuid,
    lottery: bool,
    won_only: bool,
) -> anyhow::Result<HashSet<Uuid>> {
    let client = city.hospitals[i].state.pool.get().await?;
    let sql = if lottery && won_only {
        "SELECT patient_id FROM lottery_entries WHERE schedule_id = $1 AND outcome = 'won'"
    } else if lottery {
        "SELECT patient_id FROM lottery_entries WHERE schedule_id = $1"
    } else {
        "SELECT patient_id FROM bookings WHERE schedule_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped')"
    };
    Ok(client
        .query(sql, &[&schedule])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn rate(won: usize, n: usize) -> f64 {
    if n == 0 { 0.0 } else { won as f64 / n as f64 }
}

/// Wilson score interval at 99 %.
#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn wilson(won: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (p, n) = (rate(won, n), n as f64);
    let z2 = Z_99 * Z_99;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z_99 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Two-proportion z (pooled); 0 when both rates are 0 or 1.
#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn two_proportion_z(a_won: usize, a: usize, b_won: usize, b: usize) -> f64 {
    let pooled = rate(a_won + b_won, a + b);
    let se = (pooled * (1.0 - pooled) * (1.0 / a as f64 + 1.0 / b as f64)).sqrt();
    if se == 0.0 {
        0.0
    } else {
        (rate(a_won, a) - rate(b_won, b)) / se
    }
}

/// Which identities press where: (honest, bots) card numbers per hospital.
pub struct Groups {
    pub first_come: (Vec<Arc<str>>, Vec<Arc<str>>),
    pub lottery: (Vec<Arc<str>>, Vec<Arc<str>>),
}

#[expect(
    clippy::too_many_lines,
    reason = "one comparison, its phases in order: publish, press, draw, read, check"
)]
pub async fn run(
    args: FairnessArgs,
    gateway_rules: Vec<(String, String)>,
    cards_service: &city::Cards,
    groups: &Groups,
) -> anyhow::Result<Fairness> {
    let notices = crate::notices::Sink::start(1)?;
    let notice_url = notices.url.clone();
    let mut cfg = CityConfig::in_process(2, 1, Lock::Redis);
    cfg.gateway_extra = gateway_rules;
    for app in city::CHANNELS {
        cfg.gateway_extra.push((
            format!("CHANNEL_APPS__{}__CALLBACK_URL", app.to_ascii_uppercase()),
            notice_url.clone(),
        ));
    }
    cfg.gateway_extra
        .push(("NOTIFICATIONS__POLL_MS".to_owned(), "50".to_owned()));
    // The comparison is of the release rules, not of one gateway's Redis
    // round trips on a loaded machine (a debug build answered its default
    // 1 s timeout with CACHE_UNAVAILABLE for most honest presses).
    cfg.gateway_extra
        .push(("REDIS__RESPONSE_TIMEOUT_MS".to_owned(), "10000".to_owned()));
    let city = city::start(&cfg, cards_service).await?;
    let (fc_schedule, fc_slots) =
        publish(&city, 0, &hot_schedule(city.visit_date, args.capacity, None)).await?;
    let (lot_schedule, lot_slots) = publish(
        &city,
        1,
        &hot_schedule(city.visit_date, args.capacity, Some(args.window_seconds)),
    )
    .await?;
    let gateway: Arc<str> = city.gateway_url.clone().into();
    let http = http_client(args.honest * 2 + args.bots * 2)?;
    // Everyone opens the app before the release (one attempt, answered
    // NOT_YET_RELEASED): identities are resolved and cached, as on a real
    // morning, so the release measures the release and not card-issuing.
    let everyone: Vec<(Arc<str>, SlotRef)> = [(&groups.first_come, &fc_slots), (&groups.lottery, &lot_slots)]
        .into_iter()
        .flat_map(|((honest, bots), slots)| {
            honest
                .iter()
                .chain(bots.iter())
                .map(|c| (c.clone(), slots[0].clone()))
        })
        .collect();
    let early: Vec<String> = futures::stream::iter(everyone.into_iter().enumerate())
        .map(|(i, (card, slot))| {
            let (http, gateway) = (http.clone(), gateway.clone());
            async move {
                let address = format!("10.252.{}.{}", i / 250, i % 250);
                book(http, gateway, CHANNEL, slot, card, address).await.code
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let not_released = early.iter().filter(|c| c.as_str() == "NOT_YET_RELEASED").count();
    anyhow::ensure!(
        not_released == early.len(),
        "warming identities: {} of {} answered NOT_YET_RELEASED",
        not_released,
        early.len()
    );
    city.release().await?;
    tracing::warn!("fairness: release instant, first come at h01, lottery at h02");
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let plans = [
        (false, &groups.first_come, fc_slots.clone()),
        (true, &groups.lottery, lot_slots.clone()),
    ];
    for (lottery, (honest, bots), slots) in plans {
        let slots = Arc::new(slots);
        for (i, card) in bots.iter().enumerate() {
            let (http, gateway, slots, card) = (http.clone(), gateway.clone(), slots.clone(), card.clone());
            tasks.spawn(async move {
                tokio::time::sleep_until(start + Duration::from_millis(1)).await;
                let mut codes = Vec::with_capacity(BOT_PRESSES);
                for n in 0..BOT_PRESSES {
                    let slot = slots[(i + n) % slots.len()].clone();
                    let address = format!("10.253.{}.{}", i / 250, i % 250);
                    let outcome = book(
                        http.clone(),
                        gateway.clone(),
                        CHANNEL,
                        slot,
                        card.clone(),
                        address,
                    )
                    .await;
                    codes.push(outcome.code);
                }
                (lottery, true, codes)
            });
        }
        for (i, card) in honest.iter().enumerate() {
            let (http, gateway, slots, card) = (http.clone(), gateway.clone(), slots.clone(), card.clone());
            let delay = args.honest_delay;
            tasks.spawn(async move {
                // At +5 s, spread over half a second as real presses are.
                let spread = Duration::from_millis(u64::try_from(i % 500).unwrap_or(0));
                tokio::time::sleep_until(start + delay + spread).await;
                let slot = slots[i % slots.len()].clone();
                let address = format!("10.254.{}.{}", i / 250, i % 250);
                // One press; the app retries what the platform could not
                // answer (a 5xx says `Retry-After: 1`), as apps do.
                let mut answers = Vec::new();
                for _ in 0..HONEST_RETRIES {
                    let outcome = book(
                        http.clone(),
                        gateway.clone(),
                        CHANNEL,
                        slot.clone(),
                        card.clone(),
                        address.clone(),
                    )
                    .await;
                    let unanswered = outcome.status == 0 || outcome.status >= 500;
                    answers.push(outcome.code);
                    if !unanswered {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                (lottery, false, answers)
            });
        }
    }
    let mut codes: HashMap<(bool, bool), BTreeMap<String, usize>> = HashMap::new();
    let mut bot_requests: HashMap<bool, usize> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (lottery, bot, answers) = done.context("a fairness task failed")?;
        if bot {
            *bot_requests.entry(lottery).or_insert(0) += answers.len();
        }
        for code in answers {
            *codes.entry((lottery, bot)).or_default().entry(code).or_insert(0) += 1;
        }
    }
    tracing::warn!(
        seconds = start.elapsed().as_secs_f64(),
        "fairness: every press answered"
    );

    // Close the window; the hospital's sweeper draws.
    let closes = city.release_at + chrono::TimeDelta::seconds(i64::from(args.window_seconds) + 1);
    city.set_clock(closes).await?;
    let closed = Instant::now();
    let lot = &city.hospitals[1].state;
    let record = loop {
        match slot_inventory::lottery::record::draw_record(lot, lot_schedule).await {
            Ok(r) if r.status == "drawn" => break r,
            _ if closed.elapsed() > Duration::from_secs(120) => anyhow::bail!("the draw did not finish"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let draw_seconds_after_window = closed.elapsed().as_secs_f64();
    let entrants = i64::try_from(record.entrants.len())?;
    // Every entrant's app told once: wait for as many notices, then a
    // little longer for any duplicate to show.
    let want = record.entrants.len();
    let waited = Instant::now();
    loop {
        let n = notices.subjects_of("draw.won") + notices.subjects_of("draw.lost");
        if n >= want || waited.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notices_not_once = {
        let outcomes = record
            .outcomes
            .as_ref()
            .and_then(|o| o.as_array())
            .cloned()
            .unwrap_or_default();
        outcomes
            .iter()
            .filter(|o| {
                let (kind, subject) = if o["outcome"] == "won" {
                    ("draw.won", o["booking_id"].as_str().unwrap_or_default())
                } else {
                    ("draw.lost", o["entry_id"].as_str().unwrap_or_default())
                };
                notices.count(kind, subject) != 1
            })
            .count()
    };
    notices.stop().await;

    let mut oversold = 0;
    for h in &city.hospitals {
        let client = h.state.pool.get().await?;
        oversold += client
            .query_one(
                "SELECT count(*) FROM (SELECT seg.id FROM segments seg
                   LEFT JOIN bookings b ON b.segment_id = seg.id AND b.status NOT IN ('cancelled', 'expired', 'stopped')
                  GROUP BY seg.id, seg.capacity
                 HAVING count(b.id) > seg.capacity OR coalesce(max(b.seat_no), 0) > seg.capacity) o",
                &[],
            )
            .await?
            .get::<_, i64>(0);
    }
    let mut figures = Vec::new();
    for (lottery, (honest, bots), schedule, hospital) in [
        (false, &groups.first_come, fc_schedule, 0),
        (true, &groups.lottery, lot_schedule, 1),
    ] {
        let won = winners(&city, hospital, schedule, lottery).await?;
        let who = persons(
            cards_service,
            &honest.iter().chain(bots.iter()).cloned().collect::<Vec<_>>(),
        )
        .await?;
        let honest_cards: HashSet<&Arc<str>> = honest.iter().collect();
        let split = |people: &HashSet<Uuid>| {
            let (mut h, mut b) = (0, 0);
            for person in people {
                match who.get(person) {
                    Some(card) if honest_cards.contains(card) => h += 1,
                    Some(_) => b += 1,
                    None => {}
                }
            }
            (h, b)
        };
        let (honest_won, bots_won) = split(&won);
        let entered = if lottery {
            Some(split(
                &persons_where(&city, hospital, schedule, true, false).await?,
            ))
        } else {
            None
        };
        let seats = i64::from(args.capacity) * 5;
        figures.push(ModeFigures {
            mode: if lottery { "lottery" } else { "first_come" }.to_owned(),
            seats,
            honest: honest.len(),
            honest_won,
            honest_rate: rate(honest_won, honest.len()),
            honest_interval: wilson(honest_won, honest.len()),
            bots: bots.len(),
            bots_won,
            bot_rate: rate(bots_won, bots.len()),
            bot_interval: wilson(bots_won, bots.len()),
            z: two_proportion_z(honest_won, honest.len(), bots_won, bots.len()),
            honest_entered: entered.map(|(h, _)| h),
            bots_entered: entered.map(|(_, b)| b),
            z_among_entrants: entered.map(|(h, b)| two_proportion_z(honest_won, h, bots_won, b)),
            bot_requests: bot_requests.get(&lottery).copied().unwrap_or(0),
            bot_codes: codes.remove(&(lottery, true)).unwrap_or_default(),
            honest_codes: codes.remove(&(lottery, false)).unwrap_or_default(),
        });
    }
    city.stop().await?;
    let lottery = figures.pop().context("the lottery's figures")?;
    let first_come = figures.pop().context("first come's figures")?;
    Ok(Fairness {
        first_come,
        lottery,
        oversold_segments: oversold,
        entrants,
        notices_not_once,
        draw_reproduced: record.reproduction.reproduced,
        draw_seconds_after_window,
    })
}

/// Split `cards` (fresh identities) into the two hospitals' groups.
pub fn groups(cards: &[Arc<str>], honest: usize, bots: usize) -> anyhow::Result<Groups> {
    anyhow::ensure!(
        cards.len() >= 2 * (honest + bots),
        "not enough identities for the fairness comparison"
    );
    let take = |from: usize, n: usize| cards[from..from + n].to_vec();
    Ok(Groups {
        first_come: (take(0, honest), take(honest, bots)),
        lottery: (take(honest + bots, honest), take(2 * honest + bots, bots)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_rates_give_z_zero_and_far_apart_rates_a_large_z() {
        assert!(two_proportion_z(20, 200, 5, 50).abs() < 1e-9);
        assert!(two_proportion_z(0, 200, 25, 50).abs() > Z_99);
        let (lo, hi) = wilson(20, 200);
        assert!(lo < 0.1 && 0.1 < hi);
    }
}
