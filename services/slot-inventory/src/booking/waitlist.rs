//! 候补: a schedule's waitlist, for patients whose channel can book no seat
//! of it. Patients join in order (one place per person); whenever a seat
//! they may take frees (cancellation, expiry, 加号, a session published for
//! the waitlist) it is kept back in Redis for the line (counted per pool in
//! the segment's `kept:<pool>`: ordinary bookings cannot take it) and the
//! first patient in line who may take it is handed it as a hold through
//! the same Lua script every booking uses, so no pool and no person rule
//! is bypassed. The rules in full are on [`promote`].

use jyt_db::Prepared;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset, Utc};
use jyt_cache::redis;
use jyt_domain::{BookingRef, Channel, IdempotencyKey, SlotRef};
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BookRequest;
use super::cache::segment_info;
use super::hold::{may_take, pools_left};
use super::service;
use crate::error::SlotError;
use crate::state::AppState;

/// `POST /v1/schedules/{schedule_id}/waitlist`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub patient_id: Uuid,
    pub channel: Channel,
    /// The channel app joining for the patient (the gateway's `Jyt-App`,
    /// never the body): the booking a promotion makes belongs to it.
    #[serde(skip)]
    pub owner_app: Option<String>,
}

/// A place in a waitlist, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitlistEntry {
    pub entry_id: Uuid,
    pub schedule_id: Uuid,
    pub patient_id: Uuid,
    pub channel: Channel,
    /// The channel app that made the entry, `null` for none.
    #[serde(default)]
    pub owner_app: Option<String>,
    /// `waiting`, `promoted` or `left`.
    pub status: String,
    /// 1 for the head of the line; `null` once no longer waiting.
    pub position: Option<i64>,
    /// The hold the patient was handed, once promoted.
    pub booking_id: Option<BookingRef>,
    pub created_at: DateTime<FixedOffset>,
}

pub use super::waitlist_queries as queries;

fn to_entry(state: &AppState, row: &jyt_db::tokio_postgres::Row) -> WaitlistEntry {
    let channel: String = row.get(3);
    let created_at: DateTime<Utc> = row.get(6);
    WaitlistEntry {
        entry_id: row.get(0),
        schedule_id: row.get(1),
        patient_id: row.get(2),
        // The CHECK constraint keeps the column to known channels.
        channel: channel.parse().unwrap_or(Channel::Window),
        owner_app: row.get(8),
        status: row.get(4),
        booking_id: row
            .get::<_, Option<Uuid>>(5)
            .map(|id| BookingRef::new(state.hospital.clone(), id)),
        created_at: jyt_domain::time::local(created_at),
        position: row.get(7),
    }
}

/// Seats of the schedule a patient booking through `channel` could take
/// now (seats kept back for the line count too: they are for those ahead).
pub(crate) fn seats_for(
    state: &AppState,
    fill: &queries::ScheduleFill,
    channel: Channel,
    now: DateTime<Utc>,
) -> i32 {
    let policy = state.policy.get();
    let merged = now >= policy.pool_merge_at(fill.visit_date);
    fill.segments
        .iter()
        .map(|(capacity, live)| {
            let taken = live.iter().filter(|(seat, _)| *seat <= *capacity).count();
            let free = usize::try_from(*capacity).unwrap_or(0).saturating_sub(taken);
            pools_left(&policy, *capacity, free, live.iter().map(|(_, p)| p.as_str()))
                .iter()
                .filter(|(pool, _)| may_take(pool, channel, merged))
                .map(|(_, n)| *n)
                .sum::<i32>()
        })
        .sum()
}

/// Join the waitlist of a schedule with no seat for the patient's channel
/// (see the module's rules). Joining again answers the existing place
/// (`false`: nothing new was created).
pub async fn join(
    state: &AppState,
    schedule: Uuid,
    req: &JoinRequest,
) -> Result<(WaitlistEntry, bool), SlotError> {
    if matches!(req.channel, Channel::Referral | Channel::Clinic) {
        return Err(RequestError::invalid(
            "channel",
            "referral and in-clinic bookings have their own pools and no waitlist",
        )
        .into());
    }
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let fill = queries::schedule_fill_for_update(&tx, schedule)
        .await?
        .ok_or_else(|| SlotError::ScheduleNotFound(schedule.to_string()))?;
    if !fill.open {
        return Err(SlotError::ScheduleStopped);
    }
    if now < fill.release_at {
        return Err(SlotError::NotYetReleased(fill.release_at));
    }
    if let Some(existing) = queries::waiting_entry_of(&tx, schedule, req.patient_id).await? {
        let row = queries::entry(&tx, existing)
            .await?
            .ok_or_else(|| SlotError::ScheduleNotFound(schedule.to_string()))?;
        return Ok((to_entry(state, &row), false));
    }
    if seats_for(state, &fill, req.channel, now) > 0 {
        return Err(SlotError::SeatsAvailable);
    }
    if queries::has_live_booking(&tx, schedule, req.patient_id).await? {
        return Err(SlotError::ScheduleAlreadyBooked);
    }
    let id = Uuid::now_v7();
    if queries::insert(
        &tx,
        id,
        schedule,
        req.patient_id,
        req.channel.as_str(),
        req.owner_app.as_deref(),
        now,
    )
    .await?
    .is_none()
    {
        return Err(SlotError::AlreadyWaitlisted);
    }
    let row = queries::entry(&tx, id)
        .await?
        .ok_or_else(|| SlotError::ScheduleNotFound(schedule.to_string()))?;
    let entry = to_entry(state, &row);
    jyt_events::append(
        &tx,
        "waitlist.joined",
        &id.to_string(),
        &serde_json::json!({
            "schema": 1,
            "entry_id": id,
            "hospital_id": state.hospital,
            "schedule_id": schedule,
            "patient_id": req.patient_id,
            "channel": req.channel,
            "owner_app": req.owner_app,
            "position": entry.position,
        }),
    )
    .await?;
    let waiting = queries::waiting_count(&tx, schedule).await?;
    let threshold = i64::from(state.policy.get().waitlist_capacity_request_threshold);
    if waiting == threshold + 1 {
        // Asked once per crossing, not for every later joiner.
        jyt_events::append(
            &tx,
            "waitlist.capacity_requested",
            &schedule.to_string(),
            &serde_json::json!({
                "schema": 1,
                "hospital_id": state.hospital,
                "schedule_id": schedule,
                // The hospital's own ids, to answer with 加号 on a segment or
                // a session published for the waitlist.
                "schedule": queries::schedule_for_hospital(&tx, schedule).await?,
                "segment_ids": queries::segment_ids(&tx, schedule).await?,
                "waiting": waiting,
            }),
        )
        .await?;
    }
    tx.commit().await?;
    state.relay.wake();
    Ok((entry, true))
}

pub async fn get(state: &AppState, entry: Uuid) -> Result<WaitlistEntry, SlotError> {
    let client = state.pool.get().await?;
    let row = queries::entry(&client, entry)
        .await?
        .ok_or_else(|| SlotError::Request(RequestError::invalid("entry_id", "no such waitlist entry")))?;
    Ok(to_entry(state, &row))
}

/// One patient's waitlist places at this hospital, the newest first.
pub async fn of_patient(
    state: &AppState,
    patient: Uuid,
    limit: i64,
) -> Result<Vec<WaitlistEntry>, SlotError> {
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(
            &format!(
                "SELECT {} FROM waitlist_entries w WHERE w.patient_id = $1 ORDER BY w.created_at DESC, w.id LIMIT $2",
                queries::ENTRY_COLUMNS
            ),
            &[&patient, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| to_entry(state, r)).collect())
}

/// Whether a seat freed in `schedule` must be kept back for a waitlist:
/// someone waits in its line (or, for a session published for the
/// waitlist, in the line of one of the doctor's sessions that day). The
/// promotion pass that follows puts it on sale if nobody waiting may take
/// its pool.
pub async fn has_waiting(state: &AppState, schedule: Uuid) -> Result<bool, SlotError> {
    let client = state.pool.get().await?;
    Ok(queries::waiting_for_seats_of(&client, schedule).await?)
}

/// Promotion passes started by freed seats, one at a time per schedule.
///
/// Each cancellation of a seat a line waits for used to run a pass of its
/// own, in its request. At the peak day's release of cancellations (200
/// at once) a hot schedule's several cancellations each walked the same
/// line, trying the same waiters on the same segments: in a quarter day
/// a cancellation took 0.48–0.89 s on average inside each of the six
/// hospitals with long lines, and in one whole day seven at one of them
/// passed the gateway's 10 s upstream timeout (loadtest/README.md,
/// 2026-12-07 17:40). Now a seat freed while its schedule's pass runs
/// asks that pass for one more round instead, which serves every seat
/// freed meanwhile at once.
#[derive(Clone, Default)]
pub struct PassesInFlight {
    /// Schedules whose pass is running, and whether another round was
    /// asked for meanwhile.
    running: std::sync::Arc<std::sync::Mutex<HashMap<Uuid, bool>>>,
}

impl PassesInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, bool>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The turn to run `schedule`'s pass, or `None` when one is running:
    /// it is then asked for another round, which serves this caller's seat.
    pub fn start(&self, schedule: Uuid) -> Option<PassTurn> {
        let mut running = self.lock();
        if let Some(again) = running.get_mut(&schedule) {
            *again = true;
            return None;
        }
        running.insert(schedule, false);
        Some(PassTurn {
            passes: self.clone(),
            schedule,
            over: false,
        })
    }

    /// Whether `schedule`'s pass is running.
    pub fn is_running(&self, schedule: Uuid) -> bool {
        self.lock().contains_key(&schedule)
    }

    /// Whether no schedule's pass is running.
    pub fn idle(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The right to run one schedule's promotion passes ([`PassesInFlight`]).
pub struct PassTurn {
    passes: PassesInFlight,
    schedule: Uuid,
    /// The turn ended: no round was asked for after the last pass.
    over: bool,
}

impl PassTurn {
    /// After a pass: `true` when another round was asked for meanwhile
    /// (run it); `false` ends the turn, and the next freed seat starts one.
    pub fn asked_again(&mut self) -> bool {
        let mut running = self.passes.lock();
        if let Some(again) = running.get_mut(&self.schedule)
            && *again
        {
            *again = false;
            return true;
        }
        running.remove(&self.schedule);
        self.over = true;
        false
    }
}

impl Drop for PassTurn {
    /// A turn cut short (a pass failed, or its task was dropped as the
    /// process stopped) ends too; a round asked of it is the sweeper's,
    /// within a second (its seats are kept back for the line meanwhile).
    fn drop(&mut self) {
        if !self.over {
            self.passes.lock().remove(&self.schedule);
        }
    }
}

/// Serve `schedule`'s line after a seat of it was given back: start its
/// pass in a task of its own, or ask the one running for another round
/// ([`PassesInFlight`]). The request that freed the seat does not wait
/// for it: a pass walks the line a waiter at a time (a hold and a write
/// each, and a statement for each waiter who booked elsewhere meanwhile),
/// seconds on a hot schedule's line on a busy machine, and nothing in the
/// cancellation's answer depends on it. Until the pass serves it, the seat
/// stays kept back for the line, so nobody else can take it. Running two
/// rounds in the request, a whole day's cancellation still passed the
/// gateway's 10 s upstream timeout (loadtest/README.md, 2026-12-07 23:06).
pub fn promote_freed(state: &AppState, schedule: Uuid) {
    let Some(mut turn) = state.waitlist_passes.start(schedule) else {
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = promote(&state, schedule).await {
                // The turn ends with the task; the seat stays kept for the
                // line, and the sweeper's next pass (each second) serves it.
                tracing::warn!(error = %e, %schedule, "a waitlist pass failed; the sweeper serves the line");
                return;
            }
            if !turn.asked_again() {
                return;
            }
        }
    });
}

/// Patients a promotion pass reads from the line at most; the rest are
/// served by the next pass (each second).
const LINE_PASS: i64 = 500;

/// The sessions one promotion pass serves together (see
/// [`queries::group`]).
struct Group {
    /// (schedule, published for the waitlist).
    schedules: Vec<(Uuid, bool)>,
    /// (schedule, segment), by start.
    segments: Vec<(Uuid, Uuid)>,
}

impl Group {
    async fn of(state: &AppState, schedule: Uuid) -> Result<Self, SlotError> {
        let client = state.pool.get().await?;
        let schedules = queries::group(&client, schedule).await?;
        let ids: Vec<Uuid> = schedules.iter().map(|(id, _)| *id).collect();
        let segments = queries::segments_of(&client, &ids, state.clock.now()).await?;
        Ok(Self { schedules, segments })
    }

    fn lines(&self) -> Vec<Uuid> {
        self.schedules.iter().map(|(id, _)| *id).collect()
    }

    fn for_waitlist(&self, schedule: Uuid) -> bool {
        self.schedules.iter().any(|(id, f)| *id == schedule && *f)
    }

    /// Where a patient waiting in `line` may be served from: their own
    /// session's segments, then those of sessions published for the
    /// waitlist.
    fn seats_for(&self, line: Uuid) -> impl Iterator<Item = Uuid> + '_ {
        let own = self.segments.iter().filter(move |(s, _)| *s == line);
        let extra = self
            .segments
            .iter()
            .filter(move |(s, _)| *s != line && self.for_waitlist(*s));
        own.chain(extra).map(|(_, seg)| *seg)
    }

    /// Whether a patient waiting in `line` may be served from a seat of
    /// `schedule`.
    fn serves(&self, schedule: Uuid, line: Uuid) -> bool {
        schedule == line || self.for_waitlist(schedule)
    }
}

/// One segment as Redis has it at the start of a pass: which channels a
/// promotion could serve from it, and whether it keeps seats back.
#[derive(Debug)]
struct SeatsNow {
    loaded: bool,
    released: bool,
    merged: bool,
    kept: bool,
    left: Vec<(String, i64)>,
}

impl SeatsNow {
    /// Whether a patient waiting through `channel` might get a seat here
    /// (not loaded: perhaps, the hold script loads it).
    fn may_serve(&self, channel: Channel) -> bool {
        !self.loaded
            || (self.released
                && self
                    .left
                    .iter()
                    .any(|(pool, n)| *n > 0 && may_take(pool, channel, self.merged)))
    }
}

async fn seats_now(state: &AppState, segments: &[Uuid]) -> Result<HashMap<Uuid, SeatsNow>, SlotError> {
    let mut pipe = redis::pipe();
    for segment in segments {
        let keys = state.keys.segment(&segment_info(state, *segment).await?);
        pipe.hgetall(&keys.meta).hgetall(&keys.pools);
    }
    let mut conn = state.redis.clone();
    let read: Vec<(HashMap<String, String>, HashMap<String, i64>)> = if segments.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let now = state.clock.now().timestamp();
    let at = |meta: &HashMap<String, String>, field: &str| {
        meta.get(field)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    };
    Ok(segments
        .iter()
        .zip(read)
        .map(|(segment, (meta, pools))| {
            let seats = SeatsNow {
                loaded: meta.contains_key("schedule"),
                released: now >= at(&meta, "release_at") && meta.get("open").is_some_and(|o| o == "1"),
                merged: now >= at(&meta, "merge_at"),
                kept: meta
                    .iter()
                    .any(|(f, n)| f.starts_with("kept:") && n.parse::<i64>().is_ok_and(|n| n > 0)),
                left: pools.into_iter().collect(),
            };
            (*segment, seats)
        })
        .collect())
}

/// Serve the waitlist of `schedule` (and the lines served with it, see
/// [`queries::group`]) from the seats its patients may take, in order of
/// joining, one hold each, until no one waiting can be served; then seats
/// kept back that nobody still waiting may take go on sale. Returns how
/// many patients were promoted.
///
/// The rules, with `merged` = the pool merge time has passed (policy
/// `pool_merge_days_before`/`pool_merge_time`, D-1 15:00 by default):
/// - joining: allowed when no seat of the schedule is one the patient's
///   channel may book (its pool, or common; any pool once merged); seats
///   still unsold in other channels' pools (referral, say) do not keep
///   them out of the line, since they wait for the merge;
/// - a promotion is a booking through the waiter's channel, drawn from the
///   same pools as their own booking would be, seats kept for the line
///   first: an unsold seat of another channel's pool never goes to the
///   line before the merge; from the merge on, any pool's seat does (the
///   sweeper's next pass);
/// - a seat freed while someone waits (cancellation, expiry, a failed
///   promotion's write) is kept back in its pool (`kept:<pool>`, which
///   ordinary bookings cannot take) and goes to the first patient in line
///   who may take that pool; if nobody waiting may (a kiosk seat before the
///   merge, with only WeChat patients waiting) it goes back on sale. Seats
///   added by 加号 or a session published for the waitlist are pooled like
///   any seat and served the same way;
/// - a patient the line cannot serve (no seat of their pools) keeps their
///   place; the patients behind them who can be served are.
pub async fn promote(state: &AppState, schedule: Uuid) -> Result<usize, SlotError> {
    let group = Group::of(state, schedule).await?;
    promote_group(state, &group).await
}

async fn promote_group(state: &AppState, group: &Group) -> Result<usize, SlotError> {
    let all: Vec<Uuid> = group.segments.iter().map(|(_, seg)| *seg).collect();
    let seats = seats_now(state, &all).await?;
    let mut promoted = 0;
    // Segments a promotion was tried on (a failed one keeps its seat back).
    let mut tried: HashSet<Uuid> = HashSet::new();
    let anything = seats
        .values()
        .any(|s| !s.loaded || s.kept || s.left.iter().any(|(_, n)| *n > 0));
    if anything {
        let client = state.pool.get().await?;
        let line = queries::line(&client, &group.lines(), LINE_PASS).await?;
        drop(client);
        // (line, channel) pairs with no seat left to serve them this pass.
        let mut exhausted: HashSet<(Uuid, Channel)> = HashSet::new();
        for waiter in &line {
            if exhausted.contains(&(waiter.schedule, waiter.channel)) {
                continue;
            }
            let candidates: Vec<Uuid> = group
                .seats_for(waiter.schedule)
                .filter(|seg| seats.get(seg).is_none_or(|s| s.may_serve(waiter.channel)))
                .collect();
            tried.extend(&candidates);
            match serve(state, waiter, &candidates).await {
                Ok(true) => promoted += 1,
                // A concurrent pass promoted them.
                Ok(false) => {}
                Err(SlotError::SlotSoldOut) => {
                    exhausted.insert((waiter.schedule, waiter.channel));
                }
                // Being promoted by a concurrent pass, or gone. A pass
                // running beside this one (a cancellation's and the
                // sweeper's) may have served this waiter from another of the
                // candidates: their key is then spent on that seat.
                Err(
                    SlotError::RequestInProgress
                    | SlotError::WaitlistEntryGone
                    | SlotError::IdempotencyKeyReused,
                ) => {}
                Err(
                    SlotError::ScheduleAlreadyBooked
                    | SlotError::DepartmentDailyLimit
                    | SlotError::DailyLimit
                    | SlotError::AlreadyBooked(_),
                ) => {
                    // The patient booked elsewhere meanwhile and may not
                    // hold this one too: they leave the line, the next one
                    // is asked.
                    let client = state.pool.get().await?;
                    queries::mark_left(&client, waiter.entry).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let keeping: Vec<Uuid> = all
        .iter()
        .filter(|seg| tried.contains(seg) || seats.get(seg).is_some_and(|s| s.kept))
        .copied()
        .collect();
    if !keeping.is_empty() {
        release_unusable(state, group, &keeping).await?;
    }
    Ok(promoted)
}

/// Hand one waiting patient a hold on the first of `segments` with a seat
/// for them (`false`: a concurrent pass already had): `SlotSoldOut` when
/// none has.
async fn serve(state: &AppState, waiter: &queries::Waiter, segments: &[Uuid]) -> Result<bool, SlotError> {
    let key: IdempotencyKey = format!("waitlist-{}", waiter.entry.simple())
        .parse()
        .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("waitlist idempotency key: {e}")))?;
    for segment in segments {
        let req = BookRequest {
            // The booking belongs to the app that made the entry.
            owner_app: waiter.owner_app.clone(),
            waitlist_entry: Some(waiter.entry),
            ..BookRequest::new(
                SlotRef::new(state.hospital.clone(), *segment),
                waiter.patient,
                waiter.channel,
            )
        };
        match service::book(state.clone(), req, key.clone()).await {
            Ok(outcome) => return Ok(!outcome.replayed),
            // No seat for them here (or not bookable): the next segment.
            Err(SlotError::SlotSoldOut | SlotError::NotYetReleased(_) | SlotError::ScheduleStopped) => {}
            Err(e) => return Err(e),
        }
    }
    Err(SlotError::SlotSoldOut)
}

/// Put on sale the seats `segments` keep back that nobody still waiting for
/// them may take (all of them once their lines are empty).
async fn release_unusable(state: &AppState, group: &Group, segments: &[Uuid]) -> Result<(), SlotError> {
    let client = state.pool.get().await?;
    let waiting = queries::waiting_channels_in(&client, &group.lines()).await?;
    drop(client);
    let now = state.clock.now().timestamp();
    for (schedule, segment) in group.segments.iter().filter(|(_, seg)| segments.contains(seg)) {
        let mut channels: Vec<Channel> = waiting
            .iter()
            .filter(|(line, _)| group.serves(*schedule, *line))
            .map(|(_, c)| *c)
            .collect();
        channels.sort_by_key(|c| c.as_str());
        channels.dedup();
        let info = segment_info(state, *segment).await?;
        let keys = state.keys.segment(&info);
        state
            .scripts
            .unreserve(&state.redis, &keys, now, &channels)
            .await?;
    }
    Ok(())
}

/// The sweeper's pass: promote wherever someone waits (seats freed while
/// this process was down, the pools' merge, a session published for the
/// waitlist).
pub async fn promote_all(state: &AppState) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let schedules = queries::schedules_with_waiting(&client, state.clock.today()).await?;
    drop(client);
    let mut promoted = 0;
    let mut done: HashSet<Uuid> = HashSet::new();
    for schedule in schedules {
        if done.contains(&schedule) {
            continue;
        }
        let group = Group::of(state, schedule).await?;
        done.extend(group.lines());
        promoted += promote_group(state, &group).await?;
    }
    Ok(promoted)
}

#[cfg(test)]
mod tests {
    use super::PassesInFlight;
    use uuid::Uuid;

    #[test]
    fn a_seat_freed_during_a_pass_asks_that_pass_for_one_more_round() {
        let passes = PassesInFlight::default();
        let (schedule, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut turn = passes.start(schedule).expect("nothing runs yet");
        assert!(passes.start(schedule).is_none(), "one pass at a time");
        assert!(
            passes.start(schedule).is_none(),
            "asked twice: still one more round"
        );
        assert!(
            passes.start(other).is_some(),
            "another schedule's line is its own"
        );
        assert!(turn.asked_again(), "the seats freed meanwhile get a round");
        assert!(passes.is_running(schedule));
        assert!(!turn.asked_again(), "one round serves them all");
        assert!(!passes.is_running(schedule));
        assert!(
            passes.start(schedule).is_some(),
            "the next freed seat starts a pass"
        );
    }

    #[test]
    fn a_turn_cut_short_leaves_the_next_freed_seat_free_to_start_a_pass() {
        let passes = PassesInFlight::default();
        let schedule = Uuid::new_v4();
        let turn = passes.start(schedule).expect("nothing runs yet");
        assert!(passes.start(schedule).is_none());
        drop(turn);
        assert!(!passes.is_running(schedule));
        let mut next = passes.start(schedule).expect("the cut-short turn is over");
        assert!(!next.asked_again());
        drop(next);
        assert!(
            passes.start(schedule).is_some(),
            "an ended turn's drop removes nothing of a later one"
        );
    }
}
