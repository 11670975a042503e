//! Who the patient is: a platform card number or an e-card token resolved
//! to a person through card-issuing, their standing and their family
//! bindings, each cached briefly in Redis so the release-second surge does
//! not become a surge on card-issuing.
//!
//! The body's `patient_id` is never trusted on its own: it must be the card
//! holder or one of the holder's bound family members.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use jyt_cache::redis::AsyncCommands;
use jyt_cache::{Keyspace, RedisConn};
use jyt_gather::Gather;
use jyt_web::RequestError;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::settings::CardIssuingSettings;

/// `{p:<person>}:standing`: the person's cached standing, under their own
/// hash tag so the booking's admission script (`crate::limits`) reads it in
/// the same round trip as the person's other rules.
pub fn standing_key(keys: &Keyspace, person: Uuid) -> String {
    keys.tagged(&format!("p:{person}"), "standing")
}

/// A cached standing: `-` (not barred) or `<unix>|<rfc3339>` (barred until
/// then; the seconds first so the admission script compares them). `None`:
/// not in this shape (an older entry), so ask again.
pub fn parse_standing(v: &str) -> Option<Option<DateTime<Utc>>> {
    if v == "-" {
        return Some(None);
    }
    let (_, at) = v.split_once('|')?;
    DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| Some(t.with_timezone(&Utc)))
}

fn standing_value(until: Option<DateTime<Utc>>) -> String {
    until.map_or_else(
        || "-".to_owned(),
        |t| format!("{}|{}", t.timestamp(), t.to_rfc3339()),
    )
}

/// Card → holder answers kept in this process for as long as their Redis
/// entry lives, so a known card costs no round trip. Bounded: past
/// [`LOCAL_IDENTITIES`] entries the expired ones go, then all.
struct LocalIdentities {
    entries: std::sync::Mutex<std::collections::HashMap<String, (Holder, std::time::Instant)>>,
}

const LOCAL_IDENTITIES: usize = 200_000;

impl LocalIdentities {
    fn get(&self, key: &str) -> Option<Holder> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(_, until)| *until > std::time::Instant::now())
            .map(|(h, _)| *h)
    }

    fn put(&self, key: &str, holder: Holder, until: std::time::Instant) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= LOCAL_IDENTITIES {
            let now = std::time::Instant::now();
            entries.retain(|_, (_, u)| *u > now);
            if entries.len() >= LOCAL_IDENTITIES {
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), (holder, until));
    }
}

/// The caches' answers are small strings; a Redis failure is not fatal to
/// identity (card-issuing is asked instead), so cache errors are logged and
/// ignored.
pub struct PatientIndex {
    /// A client per worker thread ([`jyt_per_thread`]).
    http: jyt_per_thread::PerThread<reqwest::Client>,
    base: crate::upstream::BaseUrl,
    /// card-issuing answers only callers with its internal token.
    internal: Arc<jyt_signing::internal::Minter>,
    ecard_secret: Vec<u8>,
    redis: RedisConn,
    keys: Keyspace,
    identity_ttl: u64,
    standing_ttl: u64,
    family_ttl: u64,
    /// Calls in flight to card-issuing. At the release second thousands of
    /// cold identities arrive at once; queueing them here (for at most
    /// `timeout`) keeps card-issuing inside its own pool instead of failing
    /// them all at its pool's wait timeout.
    gate: Arc<Semaphore>,
    timeout: Duration,
    local: LocalIdentities,
    /// Card numbers to resolve, gathered into calls of many
    /// (`/v1/cards/resolve-many`, see [`jyt_gather`]; issue 20). At a
    /// release second thousands of patients make their first attempt of
    /// the day at once, and each needs its card resolved at card-issuing:
    /// one HTTP call and one PostgreSQL transaction each was the one part
    /// of a winner's cost not spread thin (loadtest/README.md, 2026-12-06
    /// 17:29).
    numbers: Gather<String, NumberAnswer>,
    /// The call they go out in, handed to each task that makes it.
    resolve_many: Arc<ResolveMany>,
}

/// How a request names the acting patient: exactly one of the two.
#[derive(Debug, Clone, Copy)]
pub struct CardRef<'a> {
    pub card_number: Option<&'a str>,
    pub ecard_token: Option<&'a str>,
}

#[derive(Deserialize)]
struct Resolved {
    card_id: Uuid,
    person: ResolvedPerson,
    /// The holder's standing, answered with the card (absent from a
    /// card-issuing older than the field: then it is asked for apart).
    #[serde(default)]
    standing: Option<StandingAnswer>,
}

/// The card a request named and the person holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub person_id: Uuid,
    pub card_id: Uuid,
}

impl Holder {
    /// `<person>|<card>|<unix s card-issuing answered>`: the time, so a
    /// replica that keeps the answer in memory keeps it no longer than
    /// the Redis entry lives.
    fn cached(&self, asked: DateTime<Utc>) -> String {
        format!("{}|{}|{}", self.person_id, self.card_id, asked.timestamp())
    }

    fn from_cache(v: &str) -> Option<(Self, Option<i64>)> {
        let mut parts = v.split('|');
        let holder = Self {
            person_id: parts.next()?.parse().ok()?,
            card_id: parts.next()?.parse().ok()?,
        };
        Some((holder, parts.next().and_then(|t| t.parse().ok())))
    }
}

#[derive(Deserialize)]
struct ResolvedPerson {
    person_id: Uuid,
}

#[derive(Deserialize)]
struct StandingAnswer {
    barred: bool,
    barred_until: Option<DateTime<Utc>>,
}

impl StandingAnswer {
    /// The end of the bar in force, if any.
    fn bar(&self) -> Option<DateTime<Utc>> {
        if self.barred { self.barred_until } else { None }
    }
}

/// A person's standing as card-issuing has just answered it: `Some` with
/// the end of the bar in force (`None` inside: in good standing); `None`
/// when it did not answer one.
type FreshStanding = Option<Option<DateTime<Utc>>>;

#[derive(Deserialize)]
struct FamilyAnswer {
    members: Vec<Binding>,
}

#[derive(Deserialize)]
struct Binding {
    member_id: Uuid,
}

#[derive(Deserialize)]
struct CardProblem {
    code: String,
}

/// card-issuing's answer to a patient service, passed back as it came,
/// except that a refused internal token or its failure is ours to report.
async fn passed_back(res: reqwest::Response, path: &str) -> Result<crate::upstream::Forwarded, GatewayError> {
    let answer =
        crate::upstream::Forwarded::read(res, &["content-type", "cache-control", "idempotency-replayed"])
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
    if answer.status == actix_web::http::StatusCode::UNAUTHORIZED {
        return Err(GatewayError::InternalAuthRefused);
    }
    if answer.status.is_server_error() {
        return Err(GatewayError::IdentityUnavailable(format!(
            "{path} answered {}",
            answer.status
        )));
    }
    Ok(answer)
}

/// What card-issuing's `resolve-many` takes at most in one call.
const RESOLVE_MANY_MAX: usize = 64;

/// A place among the calls in flight to card-issuing, waited for at most
/// `timeout`.
async fn gate_permit(
    gate: &Arc<Semaphore>,
    timeout: Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, GatewayError> {
    match tokio::time::timeout(timeout, gate.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(_)) | Err(_) => Err(GatewayError::IdentityUnavailable(
            "too many calls to card-issuing waiting".to_owned(),
        )),
    }
}

/// The code of card-issuing's problem answer (empty if it has none).
async fn problem_code(res: reqwest::Response) -> String {
    res.json::<CardProblem>()
        .await
        .map(|p| p.code)
        .unwrap_or_default()
}

/// A refusal of card-issuing's resolve, one card or many, by its code.
fn resolve_refusal(code: &str, status: reqwest::StatusCode) -> GatewayError {
    match code {
        "CARD_NOT_FOUND" | "PERSON_NOT_FOUND" => GatewayError::CardNotFound,
        "CARD_LOST" => GatewayError::CardUnusable("the card was reported lost"),
        "CARD_REPLACED" => GatewayError::CardUnusable("the card was replaced"),
        "CARD_CANCELLED" => GatewayError::CardUnusable("the card was cancelled"),
        "ECARD_TOKEN_EXPIRED" => GatewayError::EcardExpired,
        "ECARD_TOKEN_INVALID" | "NOT_AN_ECARD" => GatewayError::EcardInvalid,
        "INVALID_FIELD" => RequestError::invalid("card_number", "not a platform card number").into(),
        other => GatewayError::IdentityUnavailable(format!("resolve answered {status} {other}")),
    }
}

/// The call [`PatientIndex`]'s gathered card numbers go out in, with what
/// it needs owned: the call runs in a task of its own.
struct ResolveMany {
    http: jyt_per_thread::PerThread<reqwest::Client>,
    url: reqwest::Url,
    internal: Arc<jyt_signing::internal::Minter>,
    gate: Arc<Semaphore>,
    timeout: Duration,
}

/// One number's answer from `resolve-many`: its holder and bar, or the
/// code the one-card resolve refuses it with.
#[derive(Deserialize)]
struct ResolvedNumber {
    card_id: Option<Uuid>,
    person_id: Option<Uuid>,
    standing: Option<StandingAnswer>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct ResolvedMany {
    cards: Vec<ResolvedNumber>,
}

type NumberAnswer = Result<(Holder, FreshStanding), GatewayError>;

/// Every number gets its own answer, or, when the call itself fails, the
/// same failure.
impl jyt_gather::Call<String, NumberAnswer> for ResolveMany {
    async fn call(&self, numbers: Vec<String>) -> Vec<NumberAnswer> {
        let n = numbers.len();
        match ask_resolve_many(self, numbers).await {
            Ok(answers) if answers.len() == n => answers,
            Ok(answers) => {
                let why = format!("resolve-many answered {} cards for {n}", answers.len());
                (0..n)
                    .map(|_| Err(GatewayError::IdentityUnavailable(why.clone())))
                    .collect()
            }
            Err(failed) => (0..n).map(|_| Err(failed.again())).collect(),
        }
    }
}

/// Why a whole `resolve-many` call failed, to be told to each of its askers.
enum CallFailed {
    Refused(String, reqwest::StatusCode),
    Unavailable(String),
}

impl CallFailed {
    fn again(&self) -> GatewayError {
        match self {
            CallFailed::Refused(code, status) => resolve_refusal(code, *status),
            CallFailed::Unavailable(why) => GatewayError::IdentityUnavailable(why.clone()),
        }
    }
}

async fn ask_resolve_many(ctx: &ResolveMany, numbers: Vec<String>) -> Result<Vec<NumberAnswer>, CallFailed> {
    let unavailable = |e: &dyn std::fmt::Display| CallFailed::Unavailable(e.to_string());
    let _permit = gate_permit(&ctx.gate, ctx.timeout)
        .await
        .map_err(|e| unavailable(&e))?;
    let res = ctx
        .http
        .local()
        .post(ctx.url.clone())
        .header(jyt_signing::internal::HEADER, ctx.internal.token())
        .json(&serde_json::json!({ "card_numbers": numbers }))
        .send()
        .await
        .map_err(|e| unavailable(&e))?;
    let status = res.status();
    if status.is_client_error() {
        return Err(CallFailed::Refused(problem_code(res).await, status));
    }
    if !status.is_success() {
        return Err(CallFailed::Unavailable(format!("resolve-many answered {status}")));
    }
    let answer: ResolvedMany = res.json().await.map_err(|e| unavailable(&e))?;
    Ok(answer
        .cards
        .into_iter()
        .map(|card| match (card.card_id, card.person_id, card.code) {
            (Some(card_id), Some(person_id), None) => Ok((
                Holder { person_id, card_id },
                card.standing.as_ref().map(StandingAnswer::bar),
            )),
            (_, _, Some(code)) => Err(resolve_refusal(&code, status)),
            _ => Err(GatewayError::IdentityUnavailable(
                "resolve-many answered a card without its holder".to_owned(),
            )),
        })
        .collect())
}

impl PatientIndex {
    /// `pool_idle_timeout`: `upstream.pool_idle_timeout_ms`, below
    /// card-issuing's keep-alive like the hospitals'.
    pub fn new(
        settings: &CardIssuingSettings,
        internal: jyt_signing::internal::Minter,
        pool_idle_timeout: Duration,
        redis: RedisConn,
        keys: Keyspace,
    ) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let http = jyt_per_thread::PerThread::new(move || {
            reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .pool_idle_timeout(pool_idle_timeout)
                .tcp_nodelay(true)
                .build()
        })?;
        let ecard_secret = STANDARD
            .decode(settings.ecard_secret.expose_secret())
            .map_err(|e| anyhow::anyhow!("card_issuing.ecard_secret is not base64: {e}"))?;
        let base = crate::upstream::BaseUrl::parse("card_issuing.base_url", &settings.base_url)?;
        let internal = Arc::new(internal);
        let gate = Arc::new(Semaphore::new(settings.max_concurrent));
        let numbers = Gather::new(settings.resolve_calls_in_flight, RESOLVE_MANY_MAX);
        let resolve_many = Arc::new(ResolveMany {
            http: http.clone(),
            url: base.join("/v1/cards/resolve-many"),
            internal: internal.clone(),
            gate: gate.clone(),
            timeout,
        });
        Ok(Self {
            http,
            base,
            internal,
            ecard_secret,
            redis,
            keys,
            identity_ttl: settings.identity_cache_seconds,
            standing_ttl: settings.standing_cache_seconds,
            family_ttl: settings.family_cache_seconds,
            gate,
            timeout,
            local: LocalIdentities {
                entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            },
            numbers,
            resolve_many,
        })
    }

    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, GatewayError> {
        gate_permit(&self.gate, self.timeout).await
    }

    pub(crate) async fn cached(&self, key: &str) -> Option<String> {
        let mut conn = self.redis.clone();
        match conn.get::<_, Option<String>>(key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "identity cache read failed");
                None
            }
        }
    }

    pub(crate) async fn remember(&self, key: &str, value: &str, ttl: u64) {
        if ttl == 0 {
            return;
        }
        let mut conn = self.redis.clone();
        if let Err(e) = conn.set_ex::<_, _, ()>(key, value, ttl).await {
            tracing::warn!(error = %e, "identity cache write failed");
        }
    }

    /// A card's holder from Redis; kept in memory until its entry expires.
    async fn cached_holder(&self, key: &str, now: DateTime<Utc>) -> Option<Holder> {
        let (holder, asked) = self.cached(key).await.as_deref().and_then(Holder::from_cache)?;
        if let Some(asked) = asked {
            self.keep_locally(key, holder, asked, now);
        }
        Some(holder)
    }

    /// Cache a resolved card's holder and, when card-issuing answered it
    /// too, the holder's standing: both writes in one wait. The booking's
    /// admission reads the standing from the cache (`crate::limits`), so
    /// a patient's first booking of the day asks card-issuing once, not
    /// once for the card and again for the standing.
    async fn remember_holder(&self, key: &str, holder: Holder, standing: FreshStanding, now: DateTime<Utc>) {
        let standing = async {
            if let Some(bar) = standing {
                let key = standing_key(&self.keys, holder.person_id);
                self.remember(&key, &standing_value(bar), self.standing_ttl).await;
            }
        };
        let value = holder.cached(now);
        futures::join!(self.remember(key, &value, self.identity_ttl), standing);
        self.keep_locally(key, holder, now.timestamp(), now);
    }

    /// In memory until `asked` + the identity TTL: a card reported lost
    /// stops working here when it would have through Redis.
    fn keep_locally(&self, key: &str, holder: Holder, asked: i64, now: DateTime<Utc>) {
        let ttl = i64::try_from(self.identity_ttl).unwrap_or(i64::MAX);
        let left = asked.saturating_add(ttl).saturating_sub(now.timestamp());
        if let Ok(left @ 1..) = u64::try_from(left) {
            self.local
                .put(key, holder, std::time::Instant::now() + Duration::from_secs(left));
        }
    }

    /// The person holding the card (or e-card) named by the request.
    pub async fn resolve(&self, card: CardRef<'_>, now: DateTime<Utc>) -> Result<Uuid, GatewayError> {
        self.resolve_card(card, now).await.map(|h| h.person_id)
    }

    /// Who acts and for whom: the card holder, and the patient the request
    /// is for (the holder, or a family member bound to them).
    pub async fn acting(
        &self,
        card: CardRef<'_>,
        patient: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<(Uuid, Uuid), GatewayError> {
        let holder = self.resolve(card, now).await?;
        let patient = patient.unwrap_or(holder);
        if patient != holder && !self.is_family_member(holder, patient).await? {
            return Err(GatewayError::NotFamilyMember);
        }
        Ok((holder, patient))
    }

    /// The card named by the request, and its holder.
    #[tracing::instrument(skip_all)]
    pub async fn resolve_card(&self, card: CardRef<'_>, now: DateTime<Utc>) -> Result<Holder, GatewayError> {
        match (card.card_number, card.ecard_token) {
            (Some(number), None) => {
                let number = number.trim();
                if !jyt_domain::card_number::card_number_valid(number) {
                    return Err(RequestError::invalid(
                        "card_number",
                        "must be 16 digits with a valid check digit",
                    )
                    .into());
                }
                // The number is hashed so Redis never holds card numbers in clear.
                let key = self
                    .keys
                    .plain(&format!("ident:card:{}", hex::encode(Sha256::digest(number))));
                if let Some(h) = self.local.get(&key) {
                    return Ok(h);
                }
                if let Some(h) = self.cached_holder(&key, now).await {
                    return Ok(h);
                }
                let (holder, standing) = self.resolve_number(number).await?;
                self.remember_holder(&key, holder, standing, now).await;
                Ok(holder)
            }
            (None, Some(token)) => {
                // Offline first: a forged or expired token costs no call.
                let claims =
                    jyt_signing::ecard::verify_ecard_token(&self.ecard_secret, token, now).map_err(|e| {
                        match e {
                            jyt_signing::ecard::EcardTokenError::Invalid => GatewayError::EcardInvalid,
                            jyt_signing::ecard::EcardTokenError::Expired => GatewayError::EcardExpired,
                        }
                    })?;
                // Keyed by card, not token: every fresh QR code of a card
                // shares the entry. card-issuing is still asked once per
                // card and TTL, so a card reported lost stops working.
                let key = self.keys.plain(&format!("ident:ecard:{}", claims.card_id));
                let claimed = Holder {
                    person_id: claims.person_id,
                    card_id: claims.card_id,
                };
                if self.local.get(&key) == Some(claimed) {
                    return Ok(claimed);
                }
                if self.cached_holder(&key, now).await == Some(claimed) {
                    return Ok(claimed);
                }
                let (holder, standing) = self
                    .ask_resolve(serde_json::json!({ "ecard_token": token }))
                    .await?;
                self.remember_holder(&key, holder, standing, now).await;
                Ok(holder)
            }
            _ => Err(
                RequestError::invalid("card_number", "give exactly one of card_number and ecard_token")
                    .into(),
            ),
        }
    }

    /// A card number's holder and standing, asked with the other first
    /// visits of the moment in one call (see [`jyt_gather`]).
    async fn resolve_number(&self, number: &str) -> Result<(Holder, FreshStanding), GatewayError> {
        // The wait for a place, then the call itself, each within the timeout.
        let within = self.timeout.saturating_mul(2);
        let answer = self.numbers.ask(number.to_owned(), || self.resolve_many.clone());
        match tokio::time::timeout(within, answer).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(GatewayError::IdentityUnavailable(
                "resolve-many gave no answer for the card".to_owned(),
            )),
            Err(_) => Err(GatewayError::IdentityUnavailable(
                "card-issuing did not answer in time".to_owned(),
            )),
        }
    }

    async fn ask_resolve(&self, body: serde_json::Value) -> Result<(Holder, FreshStanding), GatewayError> {
        let _permit = self.permit().await?;
        let res = self
            .http
            .local()
            .post(self.base.join("/v1/cards/resolve"))
            .header(jyt_signing::internal::HEADER, self.internal.token())
            .json(&body)
            .send()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        let status = res.status();
        if status.is_success() {
            let r: Resolved = res
                .json()
                .await
                .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
            let holder = Holder {
                person_id: r.person.person_id,
                card_id: r.card_id,
            };
            return Ok((holder, r.standing.as_ref().map(StandingAnswer::bar)));
        }
        if status.is_client_error() {
            return Err(resolve_refusal(&problem_code(res).await, status));
        }
        Err(GatewayError::IdentityUnavailable(format!(
            "resolve answered {status}"
        )))
    }

    /// Pay `amount_fen` from the card's prepaid balance; idempotent under
    /// `reference` (card-issuing answers a replay with the first posting).
    #[tracing::instrument(skip_all)]
    pub async fn debit(
        &self,
        card_id: Uuid,
        amount_fen: i64,
        channel: jyt_domain::Channel,
        reference: &str,
    ) -> Result<(), GatewayError> {
        let body =
            serde_json::json!({ "amount_fen": amount_fen, "channel": channel, "reference": reference });
        self.post_ledger(&format!("/v1/cards/{card_id}/payments"), &body)
            .await
    }

    /// Give a debit back; idempotent under `reference`.
    #[tracing::instrument(skip_all)]
    pub async fn refund(
        &self,
        card_id: Uuid,
        amount_fen: i64,
        reference: &str,
        refund_of: &str,
    ) -> Result<(), GatewayError> {
        let body =
            serde_json::json!({ "amount_fen": amount_fen, "reference": reference, "refund_of": refund_of });
        self.post_ledger(&format!("/v1/cards/{card_id}/refunds"), &body)
            .await
    }

    async fn post_ledger(&self, path: &str, body: &serde_json::Value) -> Result<(), GatewayError> {
        let _permit = self.permit().await?;
        let res = self
            .http
            .local()
            .post(self.base.join(path))
            .header(jyt_signing::internal::HEADER, self.internal.token())
            .json(body)
            .send()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let code = problem_code(res).await;
        Err(match code.as_str() {
            "INSUFFICIENT_BALANCE" => GatewayError::InsufficientBalance,
            "CARD_LOST" => GatewayError::CardUnusable("the card was reported lost"),
            "CARD_REPLACED" => GatewayError::CardUnusable("the card was replaced"),
            "CARD_CANCELLED" => GatewayError::CardUnusable("the card was cancelled"),
            other => GatewayError::IdentityUnavailable(format!("{path} answered {status} {other}")),
        })
    }

    /// The channel a card was issued through (card-issuing's card view).
    pub async fn card_channel(&self, card_id: Uuid) -> Result<jyt_domain::Channel, GatewayError> {
        #[derive(Deserialize)]
        struct IssuedThrough {
            channel: jyt_domain::Channel,
        }
        let _permit = self.permit().await?;
        let res = self
            .http
            .local()
            .get(self.base.join(&format!("/v1/cards/{card_id}")))
            .header(jyt_signing::internal::HEADER, self.internal.token())
            .send()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        if !res.status().is_success() {
            return Err(GatewayError::IdentityUnavailable(format!(
                "card view answered {}",
                res.status()
            )));
        }
        let card: IssuedThrough = res
            .json()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        Ok(card.channel)
    }

    /// A patient service at card-issuing (top-up, e-card token, cancel with
    /// pay-out), called for a channel's authenticated patient; its answer
    /// is passed back as it came, except that a refused internal token or
    /// a failure of card-issuing is ours to report.
    #[tracing::instrument(skip_all, fields(%path))]
    pub async fn relay(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<crate::upstream::Forwarded, GatewayError> {
        let _permit = self.permit().await?;
        let res = self
            .http
            .local()
            .post(self.base.join(path))
            .header(jyt_signing::internal::HEADER, self.internal.token())
            .json(body)
            .send()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        passed_back(res, path).await
    }

    /// Any call to card-issuing for a patient service (`GET` without a
    /// body), answered as it came like [`Self::relay`]; `idempotency_key`
    /// is passed on for writes that need one.
    #[tracing::instrument(skip_all, fields(%path))]
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Result<crate::upstream::Forwarded, GatewayError> {
        let _permit = self.permit().await?;
        let mut req = self
            .http
            .local()
            .request(method, self.base.join(path))
            .header(jyt_signing::internal::HEADER, self.internal.token());
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req
            .send()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        passed_back(res, path).await
    }

    /// A person's cached answer of card-issuing (`standing`, `family`,
    /// `signing`), under the person's own hash tag.
    pub(crate) fn person_key(&self, person: Uuid, what: &str) -> String {
        self.keys.tagged(&format!("p:{person}"), what)
    }

    /// How long a person's family (and family doctor signing) is cached.
    pub(crate) fn family_ttl(&self) -> u64 {
        self.family_ttl
    }

    /// Drop the cached standing, family and family doctor signing of a
    /// person whose standing, bindings or signing just changed through us,
    /// so the next booking sees it.
    pub async fn forget(&self, person: Uuid) {
        let mut conn = self.redis.clone();
        let keys = [
            self.person_key(person, "standing"),
            self.person_key(person, "family"),
            self.person_key(person, "signing"),
        ];
        if let Err(e) = conn.del::<_, ()>(&keys[..]).await {
            tracing::warn!(error = %e, "could not drop a cached standing or family");
        }
    }

    /// When the person's bar ends, if they are barred now.
    #[tracing::instrument(skip_all)]
    pub async fn barred_until(
        &self,
        person: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, GatewayError> {
        let key = standing_key(&self.keys, person);
        if let Some(until) = self.cached(&key).await.as_deref().and_then(parse_standing) {
            return Ok(until.filter(|t| *t > now));
        }
        self.ask_standing(person, now).await
    }

    /// Ask card-issuing for the person's standing and cache it (the
    /// booking's admission script reads the cache; see `crate::limits`).
    #[tracing::instrument(skip_all)]
    pub async fn ask_standing(
        &self,
        person: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, GatewayError> {
        let key = standing_key(&self.keys, person);
        let permit = self.permit().await?;
        let res = self
            .http
            .local()
            .get(self.base.join(&format!("/v1/persons/{person}/standing")))
            .header(jyt_signing::internal::HEADER, self.internal.token())
            .send()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        if !res.status().is_success() {
            return Err(GatewayError::IdentityUnavailable(format!(
                "standing answered {}",
                res.status()
            )));
        }
        let s: StandingAnswer = res
            .json()
            .await
            .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
        drop(permit);
        let until = s.bar();
        self.remember(&key, &standing_value(until), self.standing_ttl)
            .await;
        Ok(until.filter(|t| *t > now))
    }

    /// Whether `member` is bound to `holder` as a family member.
    #[tracing::instrument(skip_all)]
    pub async fn is_family_member(&self, holder: Uuid, member: Uuid) -> Result<bool, GatewayError> {
        let key = self.keys.tagged(&format!("p:{holder}"), "family");
        let listed = match self.cached(&key).await {
            Some(v) => v,
            None => {
                let _permit = self.permit().await?;
                let res = self
                    .http
                    .local()
                    .get(self.base.join(&format!("/v1/persons/{holder}/family")))
                    .header(jyt_signing::internal::HEADER, self.internal.token())
                    .send()
                    .await
                    .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
                if !res.status().is_success() {
                    return Err(GatewayError::IdentityUnavailable(format!(
                        "family answered {}",
                        res.status()
                    )));
                }
                let f: FamilyAnswer = res
                    .json()
                    .await
                    .map_err(|e| GatewayError::IdentityUnavailable(e.to_string()))?;
                let v = f
                    .members
                    .iter()
                    .map(|b| b.member_id.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                self.remember(&key, &v, self.family_ttl).await;
                v
            }
        };
        let member = member.to_string();
        Ok(listed.split(',').any(|m| m == member))
    }
}
