//! Notifications to channels: booking events that concern a patient (停诊,
//! cancellation, hold expired, waitlist promotion, ...) are read from
//! slot-inventory's event stream and POSTed, signed like a request (see
//! [`crate::signing`], with the app's own secret), to the callback URL of
//! the channel app that made the booking.
//!
//! Deliveries live in Redis, so retries survive a restart and any replica
//! may send them: a sorted set of delivery ids by due time and a hash per
//! delivery. A failed delivery is retried with exponential backoff; after
//! `max_attempts` it moves to a dead-letter list, which an operator reads
//! and replays through `/ops/notifications/dead-letters`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::Utc;
use jyt_cache::redis::{self, AsyncCommands};
use jyt_cache::{Keyspace, RedisConn};
use jyt_events::StreamConsumer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::GatewayError;
use crate::settings::{ChannelApp, NotificationSettings};
use crate::state::GatewayState;

/// How long the gateway remembers which app made a booking.
const BOOKING_APP_TTL_SECONDS: u64 = 200 * 86_400;
/// How long an event id is remembered, so a redelivered event (the stream
/// is at least once) is not sent twice.
const SEEN_TTL_SECONDS: u64 = 7 * 86_400;

/// Queue a delivery unless its event was queued before, atomically, so a
/// crash cannot leave an event marked seen but never queued.
const ENQUEUE: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]), ARGV[4])
  return 1
end
return 0
";

/// One delivery, as stored and as shown to operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// The event's id: one delivery per event and app.
    pub id: String,
    pub app_id: String,
    pub event_type: String,
    pub body: String,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// What the channel receives.
#[derive(Debug, Serialize)]
struct Notice<'a> {
    event_id: &'a str,
    event_type: &'a str,
    occurred_at: chrono::DateTime<Utc>,
    booking: &'a serde_json::Value,
}

#[derive(Clone)]
pub struct Notifier {
    redis: RedisConn,
    /// The reader blocks on `XREADGROUP`: a connection of its own, so it
    /// never stalls the commands multiplexed on `redis`.
    stream_redis: RedisConn,
    keys: Keyspace,
    http: reqwest::Client,
    apps: Arc<HashMap<String, ChannelApp>>,
    settings: NotificationSettings,
}

impl Notifier {
    pub fn new(
        settings: &NotificationSettings,
        apps: HashMap<String, ChannelApp>,
        redis: RedisConn,
        stream_redis: RedisConn,
        keys: Keyspace,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            stream_redis,
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.timeout_ms))
                .build()?,
            redis,
            keys,
            apps: Arc::new(apps),
            settings: settings.clone(),
        })
    }

    fn due_key(&self) -> String {
        self.keys.tagged("notify", "due")
    }
    fn job_key(&self, id: &str) -> String {
        self.keys.tagged("notify", &format!("job:{id}"))
    }
    pub fn dead_key(&self) -> String {
        self.keys.tagged("notify", "dead")
    }
    fn booking_app_key(&self, booking_id: &str) -> String {
        self.keys.plain(&format!("booking-app:{booking_id}"))
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

    /// Queue a delivery for one event, once per event id.
    async fn enqueue(&self, envelope: &jyt_events::Envelope) -> Result<(), redis::RedisError> {
        if !self.settings.event_types().any(|t| t == envelope.event_type) {
            return Ok(());
        }
        let mut conn = self.redis.clone();
        let app_id: Option<String> = conn.get(self.booking_app_key(&envelope.aggregate_id)).await?;
        let Some(app_id) = app_id else {
            // Booked through another door (a hospital's own window system):
            // no channel of ours to tell.
            return Ok(());
        };
        if self
            .apps
            .get(&app_id)
            .and_then(|a| a.callback_url.as_ref())
            .is_none()
        {
            return Ok(());
        }
        let body = serde_json::to_string(&Notice {
            event_id: &envelope.event_id.to_string(),
            event_type: &envelope.event_type,
            occurred_at: envelope.occurred_at,
            booking: &envelope.payload,
        })
        .unwrap_or_default();
        let delivery = Delivery {
            id: envelope.event_id.to_string(),
            app_id,
            event_type: envelope.event_type.clone(),
            body,
            attempts: 0,
            last_error: None,
        };
        // The script's keys share the `{notify}` hash tag: one cluster slot.
        redis::Script::new(ENQUEUE)
            .key(self.keys.tagged("notify", &format!("seen:{}", delivery.id)))
            .key(self.job_key(&delivery.id))
            .key(self.due_key())
            .arg(SEEN_TTL_SECONDS)
            .arg(serde_json::to_string(&delivery).unwrap_or_default())
            .arg(Utc::now().timestamp_millis())
            .arg(&delivery.id)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    async fn schedule(&self, d: &Delivery, delay_ms: u64) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.clone();
        let job = serde_json::to_string(d).unwrap_or_default();
        let due = Utc::now().timestamp_millis() + i64::try_from(delay_ms).unwrap_or(i64::MAX / 2);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.job_key(&d.id)).arg(&job).ignore();
        pipe.cmd("ZADD").arg(self.due_key()).arg(due).arg(&d.id).ignore();
        pipe.query_async::<()>(&mut conn).await
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
        let h = crate::signing::sign_request(
            &d.app_id,
            secret,
            "POST",
            &target,
            d.body.as_bytes(),
            Utc::now().timestamp(),
            &crate::signing::new_nonce(),
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

    /// Deliver what is due; the number of deliveries attempted.
    pub async fn deliver_due(&self) -> Result<usize, redis::RedisError> {
        let mut conn = self.redis.clone();
        let now = Utc::now().timestamp_millis();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.due_key())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(self.settings.batch_size)
            .query_async(&mut conn)
            .await?;
        let mut attempted = 0;
        for id in due {
            // Whoever removes it from the schedule owns this attempt, so
            // replicas never send the same attempt twice.
            let claimed: i64 = conn.zrem(self.due_key(), &id).await?;
            if claimed == 0 {
                continue;
            }
            let job: Option<String> = conn.get(self.job_key(&id)).await?;
            let Some(mut d) = job.and_then(|j| serde_json::from_str::<Delivery>(&j).ok()) else {
                continue;
            };
            attempted += 1;
            d.attempts += 1;
            match self.send(&d).await {
                Ok(()) => {
                    conn.del::<_, ()>(self.job_key(&id)).await?;
                    tracing::info!(delivery = %id, attempts = d.attempts, "notification delivered");
                }
                Err(reason) if d.attempts >= self.settings.max_attempts => {
                    tracing::warn!(delivery = %id, %reason, "notification dead-lettered");
                    d.last_error = Some(reason);
                    let mut pipe = redis::pipe();
                    pipe.cmd("LPUSH")
                        .arg(self.dead_key())
                        .arg(serde_json::to_string(&d).unwrap_or_default())
                        .ignore();
                    pipe.cmd("DEL").arg(self.job_key(&id)).ignore();
                    pipe.query_async::<()>(&mut conn).await?;
                }
                Err(reason) => {
                    tracing::info!(delivery = %id, attempts = d.attempts, %reason, "notification will be retried");
                    d.last_error = Some(reason);
                    self.schedule(&d, self.backoff_ms(d.attempts)).await?;
                }
            }
        }
        Ok(attempted)
    }

    /// Run the stream reader and the delivery loop until the process ends.
    pub fn spawn(self) {
        let reader = self.clone();
        tokio::spawn(async move { reader.read_events().await });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(self.settings.poll_ms));
            loop {
                tick.tick().await;
                if let Err(e) = self.deliver_due().await {
                    tracing::warn!(error = %e, "notification delivery failed");
                }
            }
        });
    }

    async fn read_events(&self) {
        let mut consumer = StreamConsumer::new(
            self.stream_redis.clone(),
            self.keys.plain(&self.settings.source_stream),
            self.settings.consumer_group.clone(),
            self.settings.consumer_name(),
        );
        consumer.block_ms = self.settings.block_ms;
        consumer.claim_idle_ms = self.settings.claim_idle_ms;
        consumer.batch_size = self.settings.batch_size;
        loop {
            if let Err(e) = consumer.ensure_group().await {
                tracing::warn!(error = %e, "cannot create the notifier's consumer group; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            break;
        }
        loop {
            let batch = match consumer.next_batch().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading booking events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut done = Vec::with_capacity(batch.len());
            for entry in batch {
                if let Some(env) = &entry.envelope
                    && let Err(e) = self.enqueue(env).await
                {
                    // Not acknowledged: read again on the next pass
                    // (`claim_idle_ms`) or after a restart.
                    tracing::warn!(error = %e, "could not queue a notification");
                    continue;
                }
                done.push(entry.id);
            }
            if let Err(e) = consumer.ack(&done).await {
                tracing::warn!(error = %e, "could not acknowledge booking events");
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
            let removed: i64 = conn.lrem(self.dead_key(), 1, &r).await?;
            if removed == 0 {
                return Ok(false);
            }
            d.attempts = 0;
            self.schedule(&d, 0).await?;
            return Ok(true);
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
