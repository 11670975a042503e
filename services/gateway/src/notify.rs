//! Notifications to channels: booking events that concern a patient
//! (confirmed, 停诊 and the offer after it, cancellation, hold about to
//! expire, visit reminder, waitlist promotion, refunds, ...) are read from
//! slot-inventory's event stream (and card-issuing's, for refunds credited
//! to a card) and POSTed, signed like a request (see [`jyt_signing::channel`],
//! with the app's own secret), to the callback URL of the channel app the
//! booking belongs to (the event's `owner_app`, else the app that made it
//! through this gateway). Which notices, and when: [`crate::notices`].
//!
//! Nothing is lost to a crash, at any step:
//! - a stream entry is acknowledged only once its notices are scheduled
//!   (one script, with the event's id remembered, so a redelivered event
//!   schedules nothing twice);
//! - notices live in Redis, so retries survive a restart and any replica
//!   may send them: a sorted set of notice ids by due time and a key per
//!   notice. A replica takes a due notice by pushing its due time
//!   `lease_ms` ahead, not by removing it: if it dies before recording
//!   the outcome, the notice falls due again and is sent again (at least
//!   once; `notice_id` lets the channel drop the copy). It is removed only
//!   with its outcome: delivered, dead-lettered, or dropped because the
//!   hospital says it no longer applies.
//!
//! A failed delivery is retried with exponential backoff; after
//! `max_attempts` it moves to a dead-letter list, which an operator reads
//! and replays through `/ops/notifications/dead-letters`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use jyt_cache::redis::{self, AsyncCommands};
use jyt_cache::{Keyspace, RedisConn};
use jyt_domain::time::Clock;
use jyt_domain::{BookingRef, HospitalId};
use jyt_events::StreamConsumer;
use jyt_gather::Gather;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::GatewayError;
use crate::notices::{self, OnlyIf, Plan, Planned};
use crate::settings::{ChannelApp, NotificationSettings};
use crate::state::GatewayState;
use crate::upstream::Upstreams;

/// How long the gateway remembers which app made a booking.
const BOOKING_APP_TTL_SECONDS: u64 = 200 * 86_400;
/// How long an event id is remembered, so a redelivered event (the stream
/// is at least once) is not sent twice.
const SEEN_TTL_SECONDS: u64 = 7 * 86_400;

/// Schedule an event's notices and drop the ones it makes pointless,
/// unless the event was handled before, atomically, so a crash cannot
/// leave an event marked seen but its notices unscheduled.
/// KEYS: seen, due, the n new notices' keys, then the dropped ones' keys.
/// ARGV: seen TTL, n, (id, notice, due ms) × n, then the dropped ids.
const ENQUEUE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return 0
end
local n = tonumber(ARGV[2])
for i = 1, n do
  local at = 3 * i
  if redis.call('SET', KEYS[2 + i], ARGV[at + 1], 'NX') then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[at + 2]), ARGV[at])
  end
end
for j = 1, #KEYS - 2 - n do
  redis.call('ZREM', KEYS[2], ARGV[3 * n + 2 + j])
  redis.call('DEL', KEYS[2 + n + j])
end
return 1
";

/// Take the due notices of a batch, in one round trip: each one still due
/// has its due time moved to the lease's end (it stays scheduled) and its
/// body answered; nil where another replica took it first or it is gone.
/// KEYS: due, then each notice. ARGV: now ms, lease end ms, then each id.
const TAKE_MANY: &str = r"
local now, lease_end = tonumber(ARGV[1]), tonumber(ARGV[2])
local taken = {}
for i = 2, #KEYS do
  local id = ARGV[i + 1]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if not due or tonumber(due) > now then
    taken[i - 1] = false
  else
    local job = redis.call('GET', KEYS[i])
    if job then
      redis.call('ZADD', KEYS[1], lease_end, id)
      taken[i - 1] = job
    else
      redis.call('ZREM', KEYS[1], id)
      taken[i - 1] = false
    end
  end
end
return taken
";

/// Delivered (or no longer wanted): remove it, and schedule its follow-up
/// once. KEYS: due, notice[, follow-up seen, follow-up notice].
/// ARGV: id[, follow-up id, follow-up notice, its due ms, seen TTL].
const DONE: &str = r"
local existed = redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
if existed == 1 and ARGV[2] then
  if redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[5])) then
    redis.call('SET', KEYS[4], ARGV[3])
    redis.call('ZADD', KEYS[1], tonumber(ARGV[4]), ARGV[2])
  end
end
return existed
";

/// Schedule it again (a retry, or a hold warning not yet due), unless its
/// outcome was recorded meanwhile. KEYS: due, notice. ARGV: id, notice, due ms.
const AGAIN: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
return 1
";

/// Out of attempts: onto the dead-letter list, off the schedule, in one
/// step. KEYS: due, notice, dead. ARGV: id, the dead letter.
const DEAD: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
";

/// An operator's replay: off the dead-letter list and back on the
/// schedule in one step. KEYS: dead, notice, due. ARGV: the dead letter as
/// listed, id, the notice with fresh attempts, due ms.
const REPLAY: &str = r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[2])
return 1
";

// Each script is built once: `Script::new` hashes its source (SHA-1),
// which every event and every delivery used to pay again.
static ENQUEUE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ENQUEUE));
static TAKE_MANY_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TAKE_MANY));
static DONE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DONE));
static AGAIN_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(AGAIN));
static DEAD_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DEAD));
static REPLAY_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPLAY));

/// One notice, as stored and as shown to operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// The notice's id (`notice_id`): the event's id for the event's own
    /// notice, `<kind>:<booking>` for the others.
    pub id: String,
    pub app_id: String,
    /// The booking it is about: a booking's notices are sent one after
    /// another, in the order they fell due (one retried, or one that waited
    /// past its lease, can be overtaken: each carries `occurred_at`), while
    /// other bookings' go out alongside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<String>,
    /// The notice's type, e.g. `booking.confirmed`, `refund.instruction`.
    pub event_type: String,
    pub body: String,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Checked with the hospital right before sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_if: Option<OnlyIf>,
    /// Scheduled once this one was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Box<Delivery>>,
}

impl Delivery {
    fn planned(p: Planned, app_id: &str, booking_id: Option<&str>) -> Self {
        Self {
            id: p.id,
            app_id: app_id.to_owned(),
            booking_id: booking_id.map(str::to_owned),
            event_type: p.notice_type,
            body: p.body.to_string(),
            attempts: 0,
            last_error: None,
            only_if: p.only_if,
            then: p
                .then
                .map(|next| Box::new(Delivery::planned(*next, app_id, booking_id))),
        }
    }

    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What the hospital's booking says about a notice that depends on it.
enum Check {
    Send(String),
    /// Not yet: a hold warning found before its time.
    Later(DateTime<Utc>),
    Drop(String),
    Failed(String),
}

/// Lookups of one hospital out at once, and bookings in each (its
/// `POST /v1/bookings/lookup` takes up to 200).
const LOOKUPS_IN_FLIGHT: usize = 4;
const LOOKUP_MAX: usize = 100;

/// A booking as its hospital has it now, `None` if it has none; `Err`
/// when the hospital could not be asked.
type LookupAnswer = Result<Option<serde_json::Value>, String>;

/// A hospital's lookups: the questions gathered, and the call they go in.
type HospitalLookups = (Gather<BookingRef, LookupAnswer>, Arc<Lookup>);

/// One hospital's `POST /v1/bookings/lookup`: the bookings of the notices
/// falling due together (the evening's reminders, tens of thousands on a
/// busy day), asked in one call instead of a `GET` each.
struct Lookup {
    upstreams: Upstreams,
    hospital: HospitalId,
}

#[derive(Deserialize)]
struct LookedUp {
    bookings: Vec<serde_json::Value>,
}

impl Lookup {
    async fn ask(&self, bookings: &[BookingRef]) -> Result<HashMap<String, serde_json::Value>, String> {
        let ids: Vec<String> = bookings.iter().map(ToString::to_string).collect();
        let body =
            serde_json::to_vec(&serde_json::json!({ "booking_ids": ids })).map_err(|e| e.to_string())?;
        let answer = self
            .upstreams
            .forward(
                &self.hospital,
                reqwest::Method::POST,
                "/v1/bookings/lookup",
                reqwest::header::HeaderMap::new(),
                Some(body),
            )
            .await
            .map_err(|e| format!("asking the hospital: {e}"))?;
        if !answer.status.is_success() {
            return Err(format!("the hospital answered {}", answer.status));
        }
        let found: LookedUp = serde_json::from_slice(&answer.body)
            .map_err(|_| "the hospital's lookup is not JSON".to_owned())?;
        Ok(found
            .bookings
            .into_iter()
            .filter_map(|b| Some((b["booking_id"].as_str()?.to_owned(), b)))
            .collect())
    }
}

/// Every booking gets its own answer, or, when the call failed, the same
/// failure.
impl jyt_gather::Call<BookingRef, LookupAnswer> for Lookup {
    async fn call(&self, bookings: Vec<BookingRef>) -> Vec<LookupAnswer> {
        match self.ask(&bookings).await {
            Ok(mut found) => bookings
                .iter()
                .map(|b| Ok(found.remove(&b.to_string())))
                .collect(),
            Err(why) => bookings.iter().map(|_| Err(why.clone())).collect(),
        }
    }
}

/// A due notice this replica took, and when (its lease runs from then).
struct Taken {
    delivery: Delivery,
    at: std::time::Instant,
}

/// The notices this replica has taken and not yet finished, a lane per
/// booking (a notice about none has a lane of its own). A lane sends its
/// notices one after another, in the order they fell due, so a
/// cancellation does not overtake its confirmation (unless that one is
/// retried, or waited past its lease here); lanes run side by side,
/// `deliveries_in_flight` at a time, so a slow callback holds up only its
/// own booking's notices while fewer lanes than that wait on it. (An app
/// whose every callback hangs fills the lanes and the `batch_size` taken,
/// and the other apps' notices wait behind its timeouts: a due set per app
/// would isolate it.)
struct Lanes {
    queues: std::sync::Mutex<HashMap<String, VecDeque<Taken>>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Taken and not finished, across lanes: at most `batch_size`.
    taken: AtomicUsize,
    /// Room to take more.
    room: tokio::sync::Notify,
}

impl Lanes {
    fn new(in_flight: usize) -> Self {
        Self {
            queues: std::sync::Mutex::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(in_flight)),
            taken: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
        }
    }
}

#[derive(Clone)]
pub struct Notifier {
    redis: RedisConn,
    /// The readers block on `XREADGROUP`: connections of their own
    /// (slot-inventory's stream, card-issuing's), so they never stall the
    /// commands multiplexed on `redis`.
    stream_redis: RedisConn,
    card_stream_redis: RedisConn,
    keys: Keyspace,
    http: reqwest::Client,
    apps: Arc<HashMap<String, ChannelApp>>,
    /// Each hospital's bookings, asked before a notice that depends on a
    /// booking's status (hold warning, reminder) is sent: the notices
    /// falling due together are checked in one lookup per hospital.
    lookups: Arc<HashMap<HospitalId, HospitalLookups>>,
    settings: NotificationSettings,
    /// When notices fall due, and when a hold's deadline has passed: the
    /// hospitals' clock (a manual one in tests and the load test, where
    /// retries and leases then wait for it too). A notice's signature is
    /// always stamped with the real time the app checks it against.
    clock: Clock,
}

impl Notifier {
    pub fn new(
        settings: &NotificationSettings,
        apps: HashMap<String, ChannelApp>,
        redis: RedisConn,
        stream_redis: RedisConn,
        card_stream_redis: RedisConn,
        keys: Keyspace,
        upstreams: Upstreams,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            clock: Clock::System,
            stream_redis,
            card_stream_redis,
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.timeout_ms))
                .build()?,
            redis,
            keys,
            apps: Arc::new(apps),
            lookups: Arc::new(
                upstreams
                    .hospitals()
                    .map(|(id, _)| {
                        let lookup = Lookup {
                            upstreams: upstreams.clone(),
                            hospital: id.clone(),
                        };
                        (
                            id.clone(),
                            (Gather::new(LOOKUPS_IN_FLIGHT, LOOKUP_MAX), Arc::new(lookup)),
                        )
                    })
                    .collect(),
            ),
            settings: settings.clone(),
        })
    }

    /// Notices fall due by `clock` (the hospitals'), not the system's.
    #[must_use]
    pub fn on_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn due_key(&self) -> String {
        self.keys.tagged("notify", "due")
    }
    fn job_key(&self, id: &str) -> String {
        self.keys.tagged("notify", &format!("job:{id}"))
    }
    fn seen_key(&self, id: &str) -> String {
        self.keys.tagged("notify", &format!("seen:{id}"))
    }
    pub fn dead_key(&self) -> String {
        self.keys.tagged("notify", "dead")
    }
    /// `{h:<hospital>}:booking-app:<id>`: under the booking's hospital's
    /// tag, the tag of the payment's own keys, so a payment's one script
    /// reads the owner with them (one Redis Cluster slot; `payment.rs`).
    fn booking_app_key(&self, booking_id: &str) -> String {
        match booking_id.parse::<jyt_domain::BookingRef>() {
            Ok(booking) => self.booking_app_key_of(&booking),
            // Every id the gateway hands out parses; nothing else reaches here.
            Err(_) => self.keys.plain(&format!("booking-app:{booking_id}")),
        }
    }

    /// [`Self::booking_app_key`] of a parsed booking id.
    pub(crate) fn booking_app_key_of(&self, booking: &jyt_domain::BookingRef) -> String {
        self.keys.tagged(
            &format!("h:{}", booking.hospital),
            &format!("booking-app:{booking}"),
        )
    }

    /// Remember which app made a booking, so its events go back to it.
    pub async fn remember_booking(&self, booking_id: &str, app_id: &str) {
        let mut conn = self.redis.clone();
        let key = self.booking_app_key(booking_id);
        if let Err(e) = conn
            .set_ex::<_, _, ()>(&key, app_id, BOOKING_APP_TTL_SECONDS)
            .await
        {
            tracing::warn!(error = %e, "could not remember the booking's app; its notices will not be sent");
        }
    }

    /// The app that made a booking, if it was made through this gateway.
    pub async fn booking_app(&self, booking_id: &str) -> Result<Option<String>, redis::RedisError> {
        let mut conn = self.redis.clone();
        conn.get(self.booking_app_key(booking_id)).await
    }

    /// The app each event's notices go to: the one it names, else the one
    /// that made the booking (or the booking it replaces) here; `None`
    /// when it has no callback (it polls) or is unknown. The lookups of a
    /// batch go out side by side, a round per booking named (the owner's
    /// keys sit under their hospitals' hash tags, so in Redis Cluster they
    /// cannot share one pipeline; concurrent commands share the thread's
    /// multiplexed connection's writes instead). An empty plan needs no
    /// owner and is not looked up.
    async fn owners(&self, plans: &[Plan]) -> Vec<Result<Option<String>, redis::RedisError>> {
        let mut owners: Vec<Result<Option<String>, redis::RedisError>> =
            plans.iter().map(|p| Ok(p.owner_app.clone())).collect();
        for round in 0.. {
            let asks: Vec<(usize, &str)> = plans
                .iter()
                .enumerate()
                .filter(|(i, p)| !p.is_empty() && matches!(owners[*i], Ok(None)))
                .filter_map(|(i, p)| Some((i, p.owner_bookings.get(round)?.as_str())))
                .collect();
            if asks.is_empty() {
                break;
            }
            let answers = futures::future::join_all(asks.iter().map(|(_, b)| self.booking_app(b))).await;
            for ((i, _), answer) in asks.into_iter().zip(answers) {
                owners[i] = answer;
            }
        }
        owners
            .into_iter()
            .map(|owner| {
                owner.map(|o| {
                    o.filter(|app| self.apps.get(app).and_then(|a| a.callback_url.as_ref()).is_some())
                })
            })
            .collect()
    }

    /// Schedule a batch of events' notices, once per event id. Every
    /// event's script goes in one pipeline, in the stream's order: a
    /// booking's later event drops what its earlier one scheduled (a
    /// confirmation, the hold warning), so they must run in turn. The
    /// pipeline's keys share the `{notify}` hash tag: one cluster slot, and
    /// the `SCRIPT LOAD` in front of it (keyless) goes with it, so no
    /// event meets an unloaded script. Each event's own outcome, in order:
    /// one that failed is left unacknowledged, read again later (its
    /// `seen` key makes a second scheduling a no-op).
    async fn enqueue_all(&self, envelopes: &[&jyt_events::Envelope]) -> Vec<Result<(), redis::RedisError>> {
        let now = self.clock.now();
        let channel_of = |app: &str| self.apps.get(app).map(|a| a.channel.as_str().to_owned());
        let plans: Vec<Plan> = envelopes
            .iter()
            .map(|envelope| notices::plan(envelope, &self.settings, &channel_of, now))
            .collect();
        let owners = self.owners(&plans).await;
        let mut outcomes: Vec<Result<(), redis::RedisError>> = Vec::with_capacity(plans.len());
        let mut pipe = redis::pipe();
        pipe.load_script(&ENQUEUE_SCRIPT).ignore();
        let mut scheduled = Vec::new();
        for (i, ((envelope, mut plan), owner)) in envelopes.iter().zip(plans).zip(owners).enumerate() {
            if plan.is_empty() {
                outcomes.push(Ok(()));
                continue;
            }
            let app_id = match owner {
                Ok(owner) => owner,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            let deliveries = match app_id {
                Some(app_id) => {
                    let booking = plan.owner_bookings.first().map(String::as_str);
                    std::mem::take(&mut plan.notices)
                        .into_iter()
                        .map(|p| {
                            let due = p.due.timestamp_millis();
                            (Delivery::planned(p, &app_id, booking), due)
                        })
                        .collect()
                }
                // Booked through another door (a hospital's own window
                // system) or by an app that polls: only drop what is pointless.
                None if plan.cancels.is_empty() => {
                    outcomes.push(Ok(()));
                    continue;
                }
                None => Vec::new(),
            };
            pipe.invoke_script(&self.schedule_event(envelope, &deliveries, &plan.cancels));
            scheduled.push(i);
            outcomes.push(Ok(()));
        }
        if scheduled.is_empty() {
            return outcomes;
        }
        let mut conn = self.redis.clone();
        match pipe
            .ignore_errors()
            .query_async::<Vec<redis::RedisResult<i64>>>(&mut conn)
            .await
        {
            Ok(replies) => {
                for (i, reply) in scheduled.into_iter().zip(replies) {
                    if let Err(e) = reply {
                        outcomes[i] = Err(e);
                    }
                }
            }
            Err(e) => {
                for i in scheduled {
                    outcomes[i] = Err(e.clone());
                }
            }
        }
        outcomes
    }

    /// One event's `ENQUEUE` script: its notices scheduled and the ones it
    /// drops removed, unless its id was seen before.
    fn schedule_event(
        &self,
        envelope: &jyt_events::Envelope,
        deliveries: &[(Delivery, i64)],
        cancels: &[String],
    ) -> redis::ScriptInvocation<'static> {
        // The script's keys share the `{notify}` hash tag: one cluster slot.
        let mut invocation = ENQUEUE_SCRIPT.key(self.seen_key(&envelope.event_id.to_string()));
        invocation.key(self.due_key());
        for (d, _) in deliveries {
            invocation.key(self.job_key(&d.id));
        }
        for id in cancels {
            invocation.key(self.job_key(id));
        }
        invocation.arg(SEEN_TTL_SECONDS).arg(deliveries.len());
        for (d, due) in deliveries {
            invocation.arg(&d.id).arg(d.json()).arg(*due);
        }
        for id in cancels {
            invocation.arg(id);
        }
        invocation
    }

    fn backoff_ms(&self, attempts: u32) -> u64 {
        let exp = attempts.saturating_sub(1).min(16);
        self.settings
            .backoff_base_ms
            .saturating_mul(1 << exp)
            .min(self.settings.backoff_max_ms)
    }

    /// Send one delivery, signed with the app's current secret.
    async fn send(&self, d: &Delivery) -> Result<(), String> {
        let app = self
            .apps
            .get(&d.app_id)
            .ok_or("the app is no longer configured")?;
        let url = app.callback_url.as_deref().ok_or("the app has no callback URL")?;
        let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        let target = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let secret = app.secrets().next().unwrap_or_default();
        let h = jyt_signing::channel::sign_request(
            &d.app_id,
            secret,
            "POST",
            &target,
            d.body.as_bytes(),
            Utc::now().timestamp(),
            &jyt_signing::channel::new_nonce(),
        );
        let mut req = self
            .http
            .post(parsed)
            .header("content-type", "application/json")
            .header("X-Event-Id", &d.id)
            .body(d.body.clone());
        for (k, v) in h.pairs() {
            req = req.header(k, v);
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("callback answered {}", res.status()))
        }
    }

    /// Send one notice to an app now, not through the retried queue: for a
    /// secret that must not wait in Redis or a dead-letter list (a family
    /// member's one-time code). The caller learns whether it arrived.
    pub async fn send_now(
        &self,
        app_id: &str,
        notice_type: &str,
        notice_id: &str,
        body: &serde_json::Value,
    ) -> Result<(), String> {
        self.send(&Delivery {
            id: notice_id.to_owned(),
            app_id: app_id.to_owned(),
            booking_id: None,
            event_type: notice_type.to_owned(),
            body: body.to_string(),
            attempts: 0,
            last_error: None,
            only_if: None,
            then: None,
        })
        .await
    }

    /// Whether the app takes notices (has a callback URL).
    pub fn has_callback(&self, app_id: &str) -> bool {
        self.apps.get(app_id).is_some_and(|a| a.callback_url.is_some())
    }

    /// Ask the booking's hospital whether a notice still applies, and
    /// build its body from the booking as it is now.
    async fn check(&self, d: &Delivery, cond: &OnlyIf) -> Check {
        let Ok(booking) = cond.booking_id.parse::<BookingRef>() else {
            return Check::Drop(format!("`{}` is not a booking id", cond.booking_id));
        };
        let Some((gather, lookup)) = self.lookups.get(&booking.hospital) else {
            return Check::Failed(format!("no route to hospital {}", booking.hospital));
        };
        let mut current = match gather.ask(booking, || lookup.clone()).await {
            Some(Ok(Some(current))) => current,
            Some(Ok(None)) => return Check::Drop("the hospital has no such booking".to_owned()),
            Some(Err(why)) => return Check::Failed(why),
            None => return Check::Failed("the hospital's lookup was cut off".to_owned()),
        };
        if current["status"].as_str() != Some(cond.status.as_str()) {
            return Check::Drop(format!("the booking is {} now", current["status"]));
        }
        if let Some(before) = cond.before_deadline_seconds {
            let Some(deadline) = current["hold_deadline"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
            else {
                return Check::Drop("the hold has no deadline".to_owned());
            };
            let now = self.clock.now();
            if deadline <= now {
                return Check::Drop("the hold's deadline has passed".to_owned());
            }
            let warn_at = deadline - chrono::TimeDelta::seconds(i64::try_from(before).unwrap_or(0));
            if warn_at > now + chrono::TimeDelta::milliseconds(500) {
                return Check::Later(warn_at);
            }
        }
        // The pick-up code is between the patient and the hospital; no
        // notice carries it (the events do not either).
        if let Some(b) = current.as_object_mut() {
            b.remove("pickup_code");
        }
        let mut body: serde_json::Value = serde_json::from_str(&d.body).unwrap_or_default();
        body["booking"] = current;
        Check::Send(body.to_string())
    }

    async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, redis::RedisError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a);
        }
        let mut conn = self.redis.clone();
        invocation.invoke_async(&mut conn).await
    }

    /// Record a delivery's end: removed, its follow-up scheduled once.
    async fn done(&self, d: &Delivery) -> Result<(), redis::RedisError> {
        let mut keys = vec![self.due_key(), self.job_key(&d.id)];
        let mut args = vec![d.id.clone()];
        if let Some(next) = &d.then {
            keys.push(self.seen_key(&next.id));
            keys.push(self.job_key(&next.id));
            args.extend([
                next.id.clone(),
                next.json(),
                self.clock.now().timestamp_millis().to_string(),
                SEEN_TTL_SECONDS.to_string(),
            ]);
        }
        self.run_script::<i64>(&DONE_SCRIPT, &keys, &args).await?;
        Ok(())
    }

    async fn again(&self, d: &Delivery, due: DateTime<Utc>) -> Result<(), redis::RedisError> {
        self.run_script::<i64>(
            &AGAIN_SCRIPT,
            &[self.due_key(), self.job_key(&d.id)],
            &[d.id.clone(), d.json(), due.timestamp_millis().to_string()],
        )
        .await?;
        Ok(())
    }

    /// One attempt at a taken delivery, with `check_budget` to ask the
    /// hospital first; its outcome is recorded before it leaves the
    /// schedule.
    async fn attempt(&self, mut d: Delivery, check_budget: Duration) -> Result<(), redis::RedisError> {
        let checked = match d.only_if.clone() {
            None => Ok(()),
            Some(cond) => match tokio::time::timeout(check_budget, self.check(&d, &cond))
                .await
                .unwrap_or_else(|_| Check::Failed("the hospital did not answer in time".to_owned()))
            {
                Check::Send(body) => {
                    d.body = body;
                    Ok(())
                }
                Check::Later(at) => return self.again(&d, at).await,
                Check::Drop(reason) => {
                    tracing::info!(delivery = %d.id, %reason, "notification no longer applies; dropped");
                    return self.done(&Delivery { then: None, ..d }).await;
                }
                Check::Failed(reason) => Err(reason),
            },
        };
        d.attempts += 1;
        let sent = match checked {
            Ok(()) => self.send(&d).await,
            Err(reason) => Err(reason),
        };
        match sent {
            Ok(()) => {
                self.done(&d).await?;
                tracing::info!(delivery = %d.id, kind = %d.event_type, attempts = d.attempts, "notification delivered");
            }
            Err(reason) if d.attempts >= self.settings.max_attempts => {
                tracing::warn!(delivery = %d.id, %reason, "notification dead-lettered");
                d.last_error = Some(reason);
                self.run_script::<i64>(
                    &DEAD_SCRIPT,
                    &[self.due_key(), self.job_key(&d.id), self.dead_key()],
                    &[d.id.clone(), d.json()],
                )
                .await?;
            }
            Err(reason) => {
                tracing::info!(delivery = %d.id, attempts = d.attempts, %reason, "notification will be retried");
                d.last_error = Some(reason);
                let wait = i64::try_from(self.backoff_ms(d.attempts)).unwrap_or(i64::MAX / 2);
                self.again(&d, self.clock.now() + chrono::TimeDelta::milliseconds(wait))
                    .await?;
            }
        }
        Ok(())
    }

    /// Take up to `room` due notices, in the order they fell due: each is
    /// leased to this replica (see [`TAKE_MANY`]) until its outcome is
    /// recorded, so replicas never send the same attempt twice.
    async fn take_due(&self, room: usize) -> Result<Vec<Taken>, redis::RedisError> {
        let mut conn = self.redis.clone();
        let now = self.clock.now().timestamp_millis();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.due_key())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(room)
            .query_async(&mut conn)
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let lease = i64::try_from(self.settings.lease_ms).unwrap_or(i64::MAX / 2);
        let at = std::time::Instant::now();
        let mut take = TAKE_MANY_SCRIPT.key(self.due_key());
        for id in &due {
            take.key(self.job_key(id));
        }
        take.arg(now).arg(now.saturating_add(lease));
        for id in &due {
            take.arg(id);
        }
        let jobs: Vec<Option<String>> = take.invoke_async(&mut conn).await?;
        let mut taken = Vec::with_capacity(jobs.len());
        for (id, job) in due.into_iter().zip(jobs) {
            let Some(job) = job else { continue };
            match serde_json::from_str::<Delivery>(&job) {
                Ok(delivery) => taken.push(Taken { delivery, at }),
                Err(_) => {
                    tracing::error!(delivery = %id, "unreadable notification dropped");
                    self.run_script::<i64>(&DONE_SCRIPT, &[self.due_key(), self.job_key(&id)], &[id])
                        .await?;
                }
            }
        }
        Ok(taken)
    }

    /// Take what is due while there is room, each notice onto its
    /// booking's lane; a lane opened is a task in `running`, so it ends
    /// with the delivery loop (a stopped gateway sends nothing more).
    async fn take_into_lanes(self: &Arc<Self>, lanes: &Arc<Lanes>, running: &mut JoinSet<()>) {
        loop {
            let room = self
                .settings
                .batch_size
                .saturating_sub(lanes.taken.load(Ordering::Acquire));
            if room == 0 {
                return;
            }
            let taken = match self.take_due(room).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "taking due notifications failed");
                    return;
                }
            };
            let n = taken.len();
            lanes.taken.fetch_add(n, Ordering::AcqRel);
            for t in taken {
                if let Some(lane) = self.dispatch(lanes, t) {
                    running.spawn(lane);
                }
            }
            if n < room {
                return;
            }
        }
    }

    /// Queue a taken notice behind its booking's earlier ones, or open a
    /// lane for it: the task to run, which sends the lane's notices one
    /// after another while it holds one of the `deliveries_in_flight`
    /// permits.
    fn dispatch(
        self: &Arc<Self>,
        lanes: &Arc<Lanes>,
        t: Taken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let key = t
            .delivery
            .booking_id
            .clone()
            .unwrap_or_else(|| t.delivery.id.clone());
        {
            let mut queues = lanes
                .queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(lane) = queues.get_mut(&key) {
                lane.push_back(t);
                return None;
            }
            queues.insert(key.clone(), VecDeque::from([t]));
        }
        let (this, lanes) = (self.clone(), lanes.clone());
        Some(async move {
            let Ok(_permit) = lanes.permits.clone().acquire_owned().await else {
                return;
            };
            loop {
                let next = {
                    let mut queues = lanes
                        .queues
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                        Some(t) => t,
                        None => {
                            queues.remove(&key);
                            break;
                        }
                    }
                };
                let mut finished = 1;
                let sent = this.attempt_taken(next).await;
                if !sent {
                    // Left leased: the booking's later notices stay leased
                    // too, so they fall due again after it, not before.
                    let mut queues = lanes
                        .queues
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    finished += queues.remove(&key).map_or(0, |rest| rest.len());
                }
                // Half the room free again: take more without waiting
                // for the next tick.
                let before = lanes.taken.fetch_sub(finished, Ordering::AcqRel);
                let half = this.settings.batch_size / 2;
                if before > half && before - finished <= half {
                    lanes.room.notify_one();
                }
                if !sent {
                    // The lane is gone: a notice of the booking taken from
                    // now on opens a new one.
                    break;
                }
            }
        })
    }

    /// One attempt, if it still fits in its lease: the check and the send
    /// must, so no other replica takes the notice meanwhile. One that no
    /// longer fits stays leased and falls due again when the lease ends:
    /// `false` then.
    async fn attempt_taken(&self, t: Taken) -> bool {
        let elapsed = u64::try_from(t.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let left = self.settings.lease_ms.saturating_sub(elapsed);
        let needed = self.settings.timeout_ms.saturating_add(600);
        if left < needed {
            tracing::info!(delivery = %t.delivery.id, "notification waited past its lease here; sent when it falls due again");
            return false;
        }
        let check_budget = Duration::from_millis(left - self.settings.timeout_ms - 500);
        let id = t.delivery.id.clone();
        if let Err(e) = self.attempt(t.delivery, check_budget).await {
            tracing::warn!(error = %e, delivery = %id, "recording a notification's outcome failed; sent again when its lease ends");
        }
        true
    }

    /// Run the stream readers and the delivery loop; the tasks end with
    /// the process, or when the caller aborts them (the gateway does when
    /// its server stops).
    pub fn spawn(self) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let reader = self.clone();
        tasks.push(tokio::spawn(async move {
            let stream = reader.keys.plain(&reader.settings.source_stream);
            reader.read_events(reader.stream_redis.clone(), stream).await;
        }));
        if !self.settings.card_stream.trim().is_empty() {
            let reader = self.clone();
            tasks.push(tokio::spawn(async move {
                let stream = reader.keys.plain(&reader.settings.card_stream);
                reader.read_events(reader.card_stream_redis.clone(), stream).await;
            }));
        }
        tasks.push(tokio::spawn(async move {
            let lanes = Arc::new(Lanes::new(self.settings.deliveries_in_flight));
            let this = Arc::new(self);
            let mut running = JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(this.settings.poll_ms));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = lanes.room.notified() => {}
                    Some(_) = running.join_next(), if !running.is_empty() => continue,
                }
                this.take_into_lanes(&lanes, &mut running).await;
            }
        }));
        tasks
    }

    async fn read_events(&self, redis: RedisConn, stream: String) {
        // Events no notice is planned for (a check-in, a waitlist entry)
        // are acknowledged with their batch without being parsed.
        let wanted: Vec<&str> = self.settings.event_types().collect();
        let mut consumer = StreamConsumer::new(
            redis,
            stream,
            self.settings.consumer_group.clone(),
            self.settings.consumer_name(),
        )
        .wanting(&wanted);
        consumer.block_ms = self.settings.block_ms;
        consumer.claim_idle_ms = self.settings.claim_idle_ms;
        consumer.batch_size = self.settings.batch_size;
        loop {
            if let Err(e) = consumer.ensure_group().await {
                tracing::warn!(error = %e, stream = %consumer.stream, "cannot create the notifier's consumer group; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            break;
        }
        loop {
            let batch = match consumer.next_batch().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, stream = %consumer.stream, "reading events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    // A Redis that restarted empty has lost the group too.
                    if let Err(e) = consumer.ensure_group().await {
                        tracing::debug!(error = %e, "the notifier's consumer group is not back yet");
                    }
                    continue;
                }
            };
            let envelopes: Vec<&jyt_events::Envelope> =
                batch.iter().filter_map(|e| e.envelope.as_ref()).collect();
            let mut outcomes = self.enqueue_all(&envelopes).await.into_iter();
            let mut done = Vec::with_capacity(batch.len());
            for entry in &batch {
                if entry.envelope.is_some()
                    && let Some(Err(e)) = outcomes.next()
                {
                    // Not acknowledged: read again on the next pass
                    // (`claim_idle_ms`) or after a restart.
                    tracing::warn!(error = %e, "could not schedule a notification");
                    continue;
                }
                done.push(entry.id.clone());
            }
            if let Err(e) = consumer.ack(&done).await {
                tracing::warn!(error = %e, "could not acknowledge events");
            }
        }
    }

    pub async fn dead_letters(&self) -> Result<Vec<Delivery>, redis::RedisError> {
        let mut conn = self.redis.clone();
        let raw: Vec<String> = conn.lrange(self.dead_key(), 0, 999).await?;
        Ok(raw.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
    }

    /// Put a dead letter back on the schedule, due now, with fresh attempts.
    pub async fn replay(&self, id: &str) -> Result<bool, redis::RedisError> {
        let mut conn = self.redis.clone();
        let raw: Vec<String> = conn.lrange(self.dead_key(), 0, -1).await?;
        for r in raw {
            let Ok(mut d) = serde_json::from_str::<Delivery>(&r) else {
                continue;
            };
            if d.id != id {
                continue;
            }
            d.attempts = 0;
            let replayed: i64 = self
                .run_script(
                    &REPLAY_SCRIPT,
                    &[self.dead_key(), self.job_key(&d.id), self.due_key()],
                    &[
                        r,
                        d.id.clone(),
                        d.json(),
                        self.clock.now().timestamp_millis().to_string(),
                    ],
                )
                .await?;
            return Ok(replayed == 1);
        }
        Ok(false)
    }
}

/// What `notifications.operator_token_sha256` holds for a token.
pub fn operator_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `Authorization: Bearer <token>` whose SHA-256 is the configured one.
fn operator_ok(req: &HttpRequest, settings: &NotificationSettings) -> bool {
    let Some(expected) = settings.operator_token_sha256.as_deref() else {
        return false;
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let hash = operator_token_hash(given);
    bool::from(hash.as_bytes().ct_eq(expected.to_ascii_lowercase().as_bytes()))
}

/// Operators read the dead letters.
#[utoipa::path(
    get, path = "/ops/notifications/dead-letters", tag = "operations",
    responses(
        (status = 200, description = "Notices that exhausted their retries", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
    ),
    security(("operator_token" = []))
)]
#[get("/ops/notifications/dead-letters")]
pub async fn list_dead(
    req: HttpRequest,
    state: web::Data<GatewayState>,
) -> Result<HttpResponse, GatewayError> {
    if !operator_ok(&req, &state.settings.notifications) {
        return Err(GatewayError::OperatorUnauthorized);
    }
    let dead = state.notifier.dead_letters().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dead_letters": dead })))
}

/// Operators replay one dead letter (after the channel fixed its callback).
#[utoipa::path(
    post, path = "/ops/notifications/dead-letters/{id}/replay", tag = "operations",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses(
        (status = 202, description = "Queued for delivery again", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 404, description = "DEAD_LETTER_NOT_FOUND", body = crate::openapi::ProblemDoc),
    ),
    security(("operator_token" = []))
)]
#[post("/ops/notifications/dead-letters/{id}/replay")]
pub async fn replay_dead(
    req: HttpRequest,
    state: web::Data<GatewayState>,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    if !operator_ok(&req, &state.settings.notifications) {
        return Err(GatewayError::OperatorUnauthorized);
    }
    if state.notifier.replay(&path).await? {
        Ok(HttpResponse::Accepted().json(serde_json::json!({ "replayed": path.as_str() })))
    } else {
        Err(GatewayError::DeadLetterNotFound(path.into_inner()))
    }
}
