//! Typed settings; see `config/defaults.toml` for every key and its default.

use std::collections::BTreeMap;

use chrono::NaiveTime;
use jyt_domain::{Channel, HospitalId};
use jyt_settings::{
    HttpSettings, Invalid, RedisSettings, SettingsError, Sources, TelemetrySettings, Validate,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub const SERVICE: &str = "gateway";
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub redis: RedisSettings,
    pub upstream: UpstreamSettings,
    pub signing: SigningSettings,
    pub internal_auth: InternalAuthSettings,
    pub card_issuing: CardIssuingSettings,
    pub channel_accounting: ChannelAccountingSettings,
    pub limits: LimitSettings,
    pub anti_scalping: AntiScalpingSettings,
    pub search: SearchSettings,
    pub notifications: NotificationSettings,
    pub fhir: FhirSettings,
    /// Keyed by app id; a map (not a list) so one app, or one app's secret
    /// during a rotation, can be set by environment variable.
    #[serde(default)]
    pub channel_apps: BTreeMap<String, ChannelApp>,
    /// Keyed by hospital id; a map (not a list) so one hospital can be
    /// overridden by environment variable. Required: validation refuses an
    /// empty registry.
    #[serde(default)]
    pub hospitals: BTreeMap<String, HospitalRoute>,
    /// The federation API's credentials, keyed by key id: each belongs to
    /// one member hospital, which may hold two during a rotation.
    #[serde(default)]
    pub hospital_keys: BTreeMap<String, HospitalKey>,
}

/// One member hospital's signing key for the federation API.
#[derive(Debug, Clone, Deserialize)]
pub struct HospitalKey {
    pub hospital: HospitalId,
    pub secret: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamSettings {
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub pool_max_idle_per_host: usize,
    /// An idle pooled connection is closed after this long; it must be
    /// shorter than the services' keep-alive (actix-web's 5 s), or a
    /// request can be sent on a connection the other side is closing.
    pub pool_idle_timeout_ms: u64,
    pub max_concurrent: usize,
    /// How long a call waits for one of the `max_concurrent` places.
    pub queue_timeout_ms: u64,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

/// The gateway's side of the internal tokens (`jyt_signing::internal`).
#[derive(Debug, Clone, Deserialize)]
pub struct InternalAuthSettings {
    /// The platform master secret; each service's key is derived from it.
    pub master_secret: SecretString,
    pub token_lifetime_seconds: i64,
}

impl InternalAuthSettings {
    /// Tokens from the gateway for `audience`.
    pub fn minter(&self, audience: &str) -> jyt_signing::internal::Minter {
        jyt_signing::internal::Minter::from_master(
            self.master_secret.expose_secret().as_bytes(),
            "gateway",
            audience,
            self.token_lifetime_seconds,
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SigningSettings {
    pub max_skew_seconds: i64,
    pub nonce_ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CardIssuingSettings {
    pub base_url: String,
    pub timeout_ms: u64,
    /// card-issuing's `ecard.secret` (base64), to verify e-card tokens offline.
    pub ecard_secret: SecretString,
    /// Calls in flight to card-issuing; more wait (up to `timeout_ms`).
    pub max_concurrent: usize,
    /// Of those, calls resolving card numbers (`/v1/cards/resolve-many`):
    /// the first visits that arrive while these are out go together in
    /// the next. 1 to `max_concurrent`.
    pub resolve_calls_in_flight: usize,
    pub identity_cache_seconds: u64,
    pub standing_cache_seconds: u64,
    pub family_cache_seconds: u64,
}

/// channel-accounting's survey door (`/internal/v1/surveys`), through
/// which a patient's app reads and answers its post-visit survey.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelAccountingSettings {
    pub base_url: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub app_per_minute: u32,
    pub app_burst: u32,
    pub address_per_minute: u32,
    pub address_burst: u32,
    pub person_per_minute: u32,
    pub person_burst: u32,
    pub daily_bookings_per_person: u32,
    /// The header carrying the end user's device address (see
    /// `auth::connection_address`: believed only from `trusted_proxies`); empty turns the address rules off.
    #[serde(default)]
    pub client_address_header: String,
    /// CIDR ranges, comma-separated, whose `client_address_header` is
    /// believed (validated at start).
    #[serde(default)]
    pub trusted_proxies: String,
}

impl LimitSettings {
    /// Parsed `trusted_proxies` (validated at start, so nothing is dropped).
    pub fn trusted_proxies(&self) -> Vec<ipnet::IpNet> {
        split_list(&self.trusted_proxies)
            .filter_map(|net| parse_net(net).ok())
            .collect()
    }
}

/// A CIDR range, or one address as its own /32 or /128.
fn parse_net(raw: &str) -> Result<ipnet::IpNet, String> {
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{raw}` is not a CIDR range or an IP address"))
}

#[derive(Debug, Clone, Deserialize)]
pub struct AntiScalpingSettings {
    /// Off: no release-window person bucket, no one-booking-in-flight rule
    /// and no persons-per-address cap (the `limits.*` buckets still
    /// apply). For the load test's with/without comparison.
    pub enabled: bool,
    /// `HH:MM` times, Asia/Shanghai, comma-separated (one string, so one
    /// environment variable sets them all).
    pub release_times: String,
    pub release_window_seconds: u32,
    pub release_person_per_minute: u32,
    pub release_person_burst: u32,
    pub max_persons_per_address: u32,
    pub persons_window_seconds: u64,
    /// Channel kinds, comma-separated.
    pub address_rule_channels: String,
}

impl AntiScalpingSettings {
    /// Parsed release times (validated at start, so nothing is dropped later).
    pub fn release_times(&self) -> Vec<NaiveTime> {
        split_list(&self.release_times)
            .filter_map(|t| NaiveTime::parse_from_str(t, "%H:%M").ok())
            .collect()
    }

    /// Parsed channels (validated at start).
    pub fn address_rule_channels(&self) -> Vec<Channel> {
        split_list(&self.address_rule_channels)
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty())
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotificationSettings {
    /// slot-inventory's event stream, under the Redis key prefix.
    pub source_stream: String,
    /// card-issuing's event stream: its `card.refunded` for a booking is
    /// the patient's `refund.issued` notice. Empty: not read.
    pub card_stream: String,
    pub consumer_group: String,
    /// Unique per replica; empty means the host name (a pod's name).
    pub consumer_name: String,
    /// Entries another replica (one that died) or this one (a failed
    /// queueing) left unacknowledged this long are taken over and read again.
    pub claim_idle_ms: u64,
    /// Must stay below redis.response_timeout_ms: the read blocks.
    pub block_ms: usize,
    pub batch_size: usize,
    /// Bookings whose notices are sent at once (each booking's in order,
    /// one after another). At most `batch_size` notices are taken and
    /// not yet finished.
    pub deliveries_in_flight: usize,
    /// How often due deliveries are looked for.
    pub poll_ms: u64,
    /// Per callback call.
    pub timeout_ms: u64,
    /// How long a replica that took a due notice has to record its
    /// outcome before another replica (or itself, restarted) sends it
    /// again: the notice stays scheduled meanwhile, so a crash between
    /// taking and sending loses nothing. At least `timeout_ms` + 1 s; what
    /// is left after the send's timeout bounds the check with the hospital.
    pub lease_ms: u64,
    pub max_attempts: u32,
    /// Retry n waits base * 2^(n-1), at most `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Event types that make notices, comma-separated (which notices:
    /// `crate::notices`).
    pub event_types: String,
    /// A held booking's app is warned this long before the hold's
    /// deadline (`booking.hold_expiring`), if still unpaid; 0: never.
    pub hold_warning_seconds: u64,
    /// The visit reminder (`booking.visit_reminder`) is sent this many
    /// days before the visit, at `visit_reminder_time` (Asia/Shanghai,
    /// `HH:MM` or `HH:MM:SS`; empty: no reminders).
    pub visit_reminder_days_before: u64,
    pub visit_reminder_time: String,
    /// SHA-256 (hex) of the operators' bearer token for the dead-letter
    /// endpoints; none configured means they are closed.
    #[serde(default)]
    pub operator_token_sha256: Option<String>,
}

impl NotificationSettings {
    /// This replica's name in the consumer group.
    pub fn consumer_name(&self) -> String {
        if self.consumer_name.trim().is_empty() {
            std::env::var("HOSTNAME").unwrap_or_else(|_| format!("gateway-{}", std::process::id()))
        } else {
            self.consumer_name.clone()
        }
    }

    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        split_list(&self.event_types)
    }
}

/// The city's FHIR R4 surface (see `crate::fhir`).
#[derive(Debug, Clone, Deserialize)]
pub struct FhirSettings {
    /// Where aggregators reach the gateway, without a trailing slash: the
    /// SMART Scheduling Links manifest must list its files by absolute URL,
    /// and behind a load balancer only configuration knows that address.
    pub public_base_url: String,
    /// How long one built city manifest is served before the hospitals are
    /// asked again (each with `If-None-Match`).
    pub manifest_cache_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SearchSettings {
    pub page_size: usize,
    /// How stale a search may be: each replica renews a date's summaries
    /// from Redis once this many milliseconds have passed, and never
    /// serves them older than twice this (0: read on every search).
    pub max_age_ms: u64,
}

/// A channel's backend (the WeChat mini-program server, the kiosk fleet
/// controller, the 114 call centre, ...), which signs every request.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelApp {
    /// Recorded on every booking the app makes; a channel cannot book as another.
    pub channel: Channel,
    pub secret: SecretString,
    /// The secret being rotated out, still accepted until it is removed.
    #[serde(default)]
    pub previous_secret: Option<SecretString>,
    /// Where booking notices for this app's patients are POSTed (signed
    /// with `secret`); none means the app polls instead.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The app's backend relays its patients' requests (a mini-program or
    /// app server) and names each patient's device in `X-Device-Address`;
    /// its signature vouches for that header, which is ignored for others.
    #[serde(default)]
    pub relays_device_address: bool,
}

impl ChannelApp {
    /// Every secret a signature may be made with, current first.
    pub fn secrets(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.secret)
            .chain(self.previous_secret.iter())
            .map(|s| s.expose_secret().as_bytes())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HospitalRoute {
    pub name: String,
    /// Base URL of the hospital's slot-inventory, e.g. `http://slot-pumch:8101`.
    pub base_url: String,
    pub district: String,
    /// `tertiary` (三级), `secondary` (二级) or `community` (社区).
    pub level: String,
    /// Overrides `upstream.timeout_ms` for a hospital known to be slower.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Overrides `upstream.max_concurrent`.
    #[serde(default)]
    pub max_concurrent: Option<usize>,
}

impl Settings {
    pub fn load() -> Result<Self, SettingsError> {
        jyt_settings::load(SERVICE, DEFAULTS)
    }

    pub fn load_from(sources: &Sources) -> Result<Self, SettingsError> {
        jyt_settings::load_from(SERVICE, DEFAULTS, sources)
    }

    /// The registry with parsed ids (validated at start, so this cannot fail later).
    pub fn hospital_routes(&self) -> Vec<(HospitalId, HospitalRoute)> {
        self.hospitals
            .iter()
            .filter_map(|(id, route)| id.parse().ok().map(|id| (id, route.clone())))
            .collect()
    }
}

fn is_app_id(id: &str) -> bool {
    (2..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn http_url_ok(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && !url.ends_with('/')
}

/// Validation by section, so each rule sits next to its neighbours.
impl Settings {
    /// Checks http, Redis, upstreams, card-issuing, internal tokens and signing.
    fn validate_transport(&self) -> Result<(), Invalid> {
        self.http.validate("http")?;
        self.redis.validate("redis")?;
        for (key, v) in [
            ("upstream.timeout_ms", self.upstream.timeout_ms),
            ("upstream.connect_timeout_ms", self.upstream.connect_timeout_ms),
            (
                "upstream.pool_idle_timeout_ms",
                self.upstream.pool_idle_timeout_ms,
            ),
            ("upstream.queue_timeout_ms", self.upstream.queue_timeout_ms),
            ("upstream.breaker_open_ms", self.upstream.breaker_open_ms),
            ("card_issuing.timeout_ms", self.card_issuing.timeout_ms),
            (
                "channel_accounting.timeout_ms",
                self.channel_accounting.timeout_ms,
            ),
        ] {
            if !(1..=60_000).contains(&v) {
                return Err(Invalid::new(key, "must be between 1 and 60000 ms"));
            }
        }
        if self.upstream.pool_idle_timeout_ms >= 5_000 {
            return Err(Invalid::new(
                "upstream.pool_idle_timeout_ms",
                "must be below 5000: the services close idle connections after 5 s",
            ));
        }
        if self.card_issuing.max_concurrent == 0 {
            return Err(Invalid::new("card_issuing.max_concurrent", "must be at least 1"));
        }
        if !(1..=self.card_issuing.max_concurrent).contains(&self.card_issuing.resolve_calls_in_flight) {
            return Err(Invalid::new(
                "card_issuing.resolve_calls_in_flight",
                "must be from 1 to card_issuing.max_concurrent",
            ));
        }
        if self.upstream.max_concurrent == 0 {
            return Err(Invalid::new("upstream.max_concurrent", "must be at least 1"));
        }
        if self.upstream.breaker_failures == 0 {
            return Err(Invalid::new("upstream.breaker_failures", "must be at least 1"));
        }
        if self.internal_auth.master_secret.expose_secret().len() < 32 {
            return Err(Invalid::new(
                "internal_auth.master_secret",
                "must be at least 32 characters",
            ));
        }
        if !(10..=300).contains(&self.internal_auth.token_lifetime_seconds) {
            return Err(Invalid::new(
                "internal_auth.token_lifetime_seconds",
                "must be between 10 and 300 (and within the services' max_lifetime_seconds)",
            ));
        }
        if !(1..=3600).contains(&self.signing.max_skew_seconds) {
            return Err(Invalid::new(
                "signing.max_skew_seconds",
                "must be between 1 and 3600",
            ));
        }
        if self.signing.nonce_ttl_seconds < 2 * self.signing.max_skew_seconds.unsigned_abs() {
            return Err(Invalid::new(
                "signing.nonce_ttl_seconds",
                "must be at least twice signing.max_skew_seconds, or a replay could pass",
            ));
        }
        if !http_url_ok(&self.card_issuing.base_url) {
            return Err(Invalid::new(
                "card_issuing.base_url",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        if !http_url_ok(&self.channel_accounting.base_url) {
            return Err(Invalid::new(
                "channel_accounting.base_url",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        if self.card_issuing.ecard_secret.expose_secret().len() < 32 {
            return Err(Invalid::new(
                "card_issuing.ecard_secret",
                "must be card-issuing's ecard.secret",
            ));
        }
        Ok(())
    }

    /// Checks rate limits, anti-scalping and trusted proxies.
    fn validate_limits(&self) -> Result<(), Invalid> {
        for (key, v) in [
            ("limits.app_per_minute", self.limits.app_per_minute),
            ("limits.app_burst", self.limits.app_burst),
            ("limits.address_per_minute", self.limits.address_per_minute),
            ("limits.address_burst", self.limits.address_burst),
            ("limits.person_per_minute", self.limits.person_per_minute),
            ("limits.person_burst", self.limits.person_burst),
            (
                "limits.daily_bookings_per_person",
                self.limits.daily_bookings_per_person,
            ),
            (
                "anti_scalping.release_person_per_minute",
                self.anti_scalping.release_person_per_minute,
            ),
            (
                "anti_scalping.release_person_burst",
                self.anti_scalping.release_person_burst,
            ),
            (
                "anti_scalping.max_persons_per_address",
                self.anti_scalping.max_persons_per_address,
            ),
        ] {
            if v == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        for t in split_list(&self.anti_scalping.release_times) {
            if NaiveTime::parse_from_str(t, "%H:%M").is_err() {
                return Err(Invalid::new(
                    "anti_scalping.release_times",
                    format!("`{t}` is not HH:MM"),
                ));
            }
        }
        for c in split_list(&self.anti_scalping.address_rule_channels) {
            if c.parse::<Channel>().is_err() {
                return Err(Invalid::new(
                    "anti_scalping.address_rule_channels",
                    format!("`{c}` is not a channel"),
                ));
            }
        }
        for net in split_list(&self.limits.trusted_proxies) {
            parse_net(net).map_err(|reason| Invalid::new("limits.trusted_proxies", reason))?;
        }
        if self.anti_scalping.persons_window_seconds == 0 {
            return Err(Invalid::new(
                "anti_scalping.persons_window_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Checks the notifier.
    fn validate_notifications(&self) -> Result<(), Invalid> {
        let n = &self.notifications;
        if n.block_ms == 0 || u64::try_from(n.block_ms).unwrap_or(u64::MAX) >= self.redis.response_timeout_ms
        {
            return Err(Invalid::new(
                "notifications.block_ms",
                "must be at least 1 and below redis.response_timeout_ms",
            ));
        }
        for (key, v) in [
            ("notifications.poll_ms", n.poll_ms),
            ("notifications.timeout_ms", n.timeout_ms),
            ("notifications.backoff_base_ms", n.backoff_base_ms),
            ("notifications.backoff_max_ms", n.backoff_max_ms),
            ("notifications.max_attempts", u64::from(n.max_attempts)),
            ("notifications.claim_idle_ms", n.claim_idle_ms),
            (
                "notifications.batch_size",
                u64::try_from(n.batch_size).unwrap_or(0),
            ),
            (
                "notifications.deliveries_in_flight",
                u64::try_from(n.deliveries_in_flight).unwrap_or(0),
            ),
        ] {
            if v == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        if n.lease_ms < n.timeout_ms.saturating_add(1_000) {
            return Err(Invalid::new(
                "notifications.lease_ms",
                "must be at least notifications.timeout_ms + 1000 (a send, and time to ask the hospital first)",
            ));
        }
        if n.hold_warning_seconds > 86_400 {
            return Err(Invalid::new(
                "notifications.hold_warning_seconds",
                "must be at most 86400 (0: no hold warnings)",
            ));
        }
        if n.visit_reminder_days_before > 30 {
            return Err(Invalid::new(
                "notifications.visit_reminder_days_before",
                "must be between 0 and 30",
            ));
        }
        let reminder = n.visit_reminder_time.trim();
        if !reminder.is_empty() && crate::notices::parse_time_of_day(reminder).is_none() {
            return Err(Invalid::new(
                "notifications.visit_reminder_time",
                "must be HH:MM or HH:MM:SS (Asia/Shanghai), or empty for no reminders",
            ));
        }
        for (key, stream) in [
            ("notifications.source_stream", n.source_stream.as_str()),
            ("notifications.card_stream", n.card_stream.as_str()),
        ] {
            if stream.contains(['{', '}']) || (key.ends_with("source_stream") && stream.trim().is_empty()) {
                return Err(Invalid::new(key, "must be a stream name without braces"));
            }
        }
        if n.operator_token_sha256
            .as_deref()
            .is_some_and(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(Invalid::new(
                "notifications.operator_token_sha256",
                "must be 64 hex digits (SHA-256 of the token)",
            ));
        }
        Ok(())
    }

    /// Checks the FHIR surface and search.
    fn validate_fhir_and_search(&self) -> Result<(), Invalid> {
        if !http_url_ok(&self.fhir.public_base_url) {
            return Err(Invalid::new(
                "fhir.public_base_url",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        if !(1..=3600).contains(&self.fhir.manifest_cache_seconds) {
            return Err(Invalid::new(
                "fhir.manifest_cache_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=200).contains(&self.search.page_size) {
            return Err(Invalid::new("search.page_size", "must be between 1 and 200"));
        }
        if self.search.max_age_ms > 10_000 {
            return Err(Invalid::new(
                "search.max_age_ms",
                "must be at most 10000: patients would search seats long gone",
            ));
        }
        Ok(())
    }

    /// Checks hospital keys, channel apps and the hospital registry.
    fn validate_registry(&self) -> Result<(), Invalid> {
        for (id, key) in &self.hospital_keys {
            if !is_app_id(id) {
                return Err(Invalid::new(
                    format!("hospital_keys.{id}"),
                    "key id must be 2 to 32 characters of a-z and 0-9",
                ));
            }
            if key.secret.expose_secret().len() < 32 {
                return Err(Invalid::new(
                    format!("hospital_keys.{id}.secret"),
                    "must be at least 32 characters",
                ));
            }
            if !self.hospitals.contains_key(key.hospital.as_str()) {
                return Err(Invalid::new(
                    format!("hospital_keys.{id}.hospital"),
                    "is not in the hospital registry",
                ));
            }
        }
        for (id, app) in &self.channel_apps {
            if !is_app_id(id) {
                return Err(Invalid::new(
                    format!("channel_apps.{id}"),
                    "app id must be 2 to 32 characters of a-z and 0-9",
                ));
            }
            if app.secret.expose_secret().len() < 32 {
                return Err(Invalid::new(
                    format!("channel_apps.{id}.secret"),
                    "must be at least 32 characters",
                ));
            }
            if app.callback_url.as_deref().is_some_and(|u| !http_url_ok(u)) {
                return Err(Invalid::new(
                    format!("channel_apps.{id}.callback_url"),
                    "must be an http(s) URL without a trailing slash",
                ));
            }
            if app
                .previous_secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().len() < 32)
            {
                return Err(Invalid::new(
                    format!("channel_apps.{id}.previous_secret"),
                    "must be at least 32 characters",
                ));
            }
        }
        if self.hospitals.is_empty() {
            return Err(Invalid::new("hospitals", "needs at least one hospital"));
        }
        for (id, route) in &self.hospitals {
            if id.parse::<HospitalId>().is_err() {
                return Err(Invalid::new(
                    format!("hospitals.{id}"),
                    "hospital id must be 2 to 20 characters of a-z and 0-9",
                ));
            }
            if !http_url_ok(&route.base_url) {
                return Err(Invalid::new(
                    format!("hospitals.{id}.base_url"),
                    "must be an http(s) URL without a trailing slash",
                ));
            }
            if !["tertiary", "secondary", "community"].contains(&route.level.as_str()) {
                return Err(Invalid::new(
                    format!("hospitals.{id}.level"),
                    "must be tertiary, secondary or community",
                ));
            }
            if route.timeout_ms.is_some_and(|t| !(1..=60_000).contains(&t)) {
                return Err(Invalid::new(
                    format!("hospitals.{id}.timeout_ms"),
                    "must be between 1 and 60000 ms",
                ));
            }
            if route.max_concurrent == Some(0) {
                return Err(Invalid::new(
                    format!("hospitals.{id}.max_concurrent"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.validate_transport()?;
        self.validate_limits()?;
        self.validate_notifications()?;
        self.validate_fhir_and_search()?;
        self.validate_registry()?;
        Ok(())
    }

    /// Outside `JYT_ENV` local, test and demo none of these may be a value
    /// committed to the repository (`jyt_settings::committed`).
    fn secrets(&self) -> Vec<(String, &str)> {
        let mut secrets = vec![(
            "card_issuing.ecard_secret".to_owned(),
            self.card_issuing.ecard_secret.expose_secret(),
        )];
        if let Some(hash) = &self.notifications.operator_token_sha256 {
            secrets.push(("notifications.operator_token_sha256".to_owned(), hash.as_str()));
        }
        for (id, app) in &self.channel_apps {
            secrets.push((format!("channel_apps.{id}.secret"), app.secret.expose_secret()));
            if let Some(previous) = &app.previous_secret {
                secrets.push((
                    format!("channel_apps.{id}.previous_secret"),
                    previous.expose_secret(),
                ));
            }
        }
        for (id, key) in &self.hospital_keys {
            secrets.push((format!("hospital_keys.{id}.secret"), key.secret.expose_secret()));
        }
        secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load_from(&Sources::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    const PUMCH: [(&str, &str); 4] = [
        ("JYT_GATEWAY__HOSPITALS__PUMCH__NAME", "北京协和医院"),
        (
            "JYT_GATEWAY__HOSPITALS__PUMCH__BASE_URL",
            "http://slot-pumch:8101",
        ),
        ("JYT_GATEWAY__HOSPITALS__PUMCH__DISTRICT", "dongcheng"),
        ("JYT_GATEWAY__HOSPITALS__PUMCH__LEVEL", "tertiary"),
    ];

    #[test]
    fn a_gateway_without_hospitals_refuses_to_start_naming_the_key() {
        let err = load(&[]).unwrap_err().to_string();
        assert!(err.contains("`hospitals`"), "{err}");
    }

    #[test]
    fn hospitals_come_from_environment_variables() {
        let s = load(&PUMCH).unwrap();
        let routes = s.hospital_routes();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].0.as_str(), "pumch");
        assert_eq!(routes[0].1.base_url, "http://slot-pumch:8101");
    }

    #[test]
    fn channel_apps_and_their_secrets_come_from_environment_variables() {
        let mut env = PUMCH.to_vec();
        env.extend([
            ("JYT_GATEWAY__CHANNEL_APPS__WXMINI__CHANNEL", "wechat"),
            (
                "JYT_GATEWAY__CHANNEL_APPS__WXMINI__SECRET",
                "s3cret-s3cret-s3cret-s3cret-s3cret",
            ),
            (
                "JYT_GATEWAY__CHANNEL_APPS__WXMINI__PREVIOUS_SECRET",
                "old-old-old-old-old-old-old-old-old",
            ),
        ]);
        let s = load(&env).unwrap();
        let app = &s.channel_apps["wxmini"];
        assert_eq!(app.channel, Channel::Wechat);
        assert_eq!(app.secrets().count(), 2);
        assert!(!format!("{s:?}").contains("s3cret"), "secrets never print");
    }

    #[test]
    fn a_short_app_secret_is_refused_naming_the_key() {
        let mut env = PUMCH.to_vec();
        env.extend([
            ("JYT_GATEWAY__CHANNEL_APPS__KIOSK1__CHANNEL", "kiosk"),
            ("JYT_GATEWAY__CHANNEL_APPS__KIOSK1__SECRET", "short"),
        ]);
        let err = load(&env).unwrap_err().to_string();
        assert!(err.contains("`channel_apps.kiosk1.secret`"), "{err}");
    }

    #[test]
    fn bad_notice_schedules_are_refused_naming_the_key() {
        for (key, value, named) in [
            ("VISIT_REMINDER_TIME", "6pm", "notifications.visit_reminder_time"),
            (
                "VISIT_REMINDER_DAYS_BEFORE",
                "31",
                "notifications.visit_reminder_days_before",
            ),
            (
                "HOLD_WARNING_SECONDS",
                "90000",
                "notifications.hold_warning_seconds",
            ),
            ("LEASE_MS", "100", "notifications.lease_ms"),
            ("CARD_STREAM", "events:{card}", "notifications.card_stream"),
        ] {
            let mut env = PUMCH.to_vec();
            let var = format!("JYT_GATEWAY__NOTIFICATIONS__{key}");
            env.push((var.as_str(), value));
            let err = load(&env).unwrap_err().to_string();
            assert!(err.contains(&format!("`{named}`")), "{err}");
        }
        let s = load(&PUMCH).unwrap();
        assert_eq!(s.notifications.visit_reminder_time, "18:00");
        assert!(s.notifications.event_types().any(|t| t == "card.refunded"));
    }

    #[test]
    fn a_bad_hospital_url_is_refused_naming_the_key() {
        let err = load(&[
            ("JYT_GATEWAY__HOSPITALS__PUMCH__NAME", "x"),
            ("JYT_GATEWAY__HOSPITALS__PUMCH__BASE_URL", "slot-pumch:8101/"),
            ("JYT_GATEWAY__HOSPITALS__PUMCH__DISTRICT", "dongcheng"),
            ("JYT_GATEWAY__HOSPITALS__PUMCH__LEVEL", "tertiary"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`hospitals.pumch.base_url`"), "{err}");
    }

    #[test]
    fn a_bad_fhir_public_base_url_is_refused_naming_the_key() {
        let mut env = PUMCH.to_vec();
        env.push(("JYT_GATEWAY__FHIR__PUBLIC_BASE_URL", "fhir.example.org/"));
        let err = load(&env).unwrap_err().to_string();
        assert!(err.contains("`fhir.public_base_url`"), "{err}");
    }

    #[test]
    fn a_bad_survey_door_is_refused_naming_the_key() {
        for (var, value, key) in [
            (
                "CHANNEL_ACCOUNTING__BASE_URL",
                "channel-accounting:8103",
                "channel_accounting.base_url",
            ),
            (
                "CHANNEL_ACCOUNTING__BASE_URL",
                "http://accounting/",
                "channel_accounting.base_url",
            ),
            (
                "CHANNEL_ACCOUNTING__TIMEOUT_MS",
                "0",
                "channel_accounting.timeout_ms",
            ),
        ] {
            let mut env = PUMCH.to_vec();
            let var = format!("JYT_GATEWAY__{var}");
            env.push((&var, value));
            let err = load(&env).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn resolve_calls_in_flight_outside_one_to_max_concurrent_is_refused_naming_the_key() {
        for (calls, max) in [("0", "16"), ("5", "4")] {
            let mut env = PUMCH.to_vec();
            env.push(("JYT_GATEWAY__CARD_ISSUING__RESOLVE_CALLS_IN_FLIGHT", calls));
            env.push(("JYT_GATEWAY__CARD_ISSUING__MAX_CONCURRENT", max));
            let err = load(&env).unwrap_err().to_string();
            assert!(err.contains("`card_issuing.resolve_calls_in_flight`"), "{err}");
        }
        let mut env = PUMCH.to_vec();
        env.push(("JYT_GATEWAY__CARD_ISSUING__RESOLVE_CALLS_IN_FLIGHT", "4"));
        env.push(("JYT_GATEWAY__CARD_ISSUING__MAX_CONCURRENT", "4"));
        assert_eq!(load(&env).unwrap().card_issuing.resolve_calls_in_flight, 4);
    }

    #[test]
    fn a_non_numeric_timeout_is_refused_naming_the_key() {
        let err = load(&[("JYT_GATEWAY__UPSTREAM__TIMEOUT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.timeout_ms"), "{err}");
    }

    fn load_in(environment: &str, pairs: &[(&str, String)]) -> Result<Settings, SettingsError> {
        Settings::load_from(&Sources {
            environment_name: Some(environment.to_owned()),
            ..Sources::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
        })
    }

    /// A hospital, and every secret of the gateway set to a value of our
    /// own (made here, never committed): an app, a hospital key, the
    /// operators' token hash, the e-card secret and the internal master.
    fn own_secrets() -> Vec<(&'static str, String)> {
        let own = |what: &str| format!("{what}-of-our-own-{}", "7".repeat(24));
        let mut env: Vec<(&'static str, String)> = PUMCH.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.extend([
            ("JYT_GATEWAY__CARD_ISSUING__ECARD_SECRET", own("ecard")),
            ("JYT_GATEWAY__INTERNAL_AUTH__MASTER_SECRET", own("master")),
            (
                "JYT_GATEWAY__NOTIFICATIONS__OPERATOR_TOKEN_SHA256",
                "ab".repeat(32),
            ),
            ("JYT_GATEWAY__CHANNEL_APPS__WECHAT__CHANNEL", "wechat".to_owned()),
            ("JYT_GATEWAY__CHANNEL_APPS__WECHAT__SECRET", own("app")),
            (
                "JYT_GATEWAY__CHANNEL_APPS__WECHAT__PREVIOUS_SECRET",
                own("old-app"),
            ),
            ("JYT_GATEWAY__HOSPITAL_KEYS__PUMCH1__HOSPITAL", "pumch".to_owned()),
            ("JYT_GATEWAY__HOSPITAL_KEYS__PUMCH1__SECRET", own("hospital")),
        ]);
        env
    }

    #[test]
    fn in_production_the_committed_demo_secrets_are_refused_naming_the_key() {
        let env: Vec<(&str, String)> = PUMCH.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let err = load_in("prod", &env).unwrap_err().to_string();
        assert!(
            err.contains(
                "`card_issuing.ecard_secret` equals a value committed in the repository; \
                 set a secret of your own (JYT_ENV=prod)"
            ),
            "{err}"
        );

        // jyt up's demo app secret and operator token hash, among our own.
        for (var, committed, key) in [
            (
                "JYT_GATEWAY__CHANNEL_APPS__WECHAT__SECRET",
                "demo-wechat-secret-change-me-0123456789abcdef",
                "channel_apps.wechat.secret",
            ),
            (
                "JYT_GATEWAY__NOTIFICATIONS__OPERATOR_TOKEN_SHA256",
                "61112491d046c3f6f8ab801f170d9b2d0c734a17ceff60dee92123fb507cfc3f",
                "notifications.operator_token_sha256",
            ),
            (
                "JYT_GATEWAY__HOSPITAL_KEYS__PUMCH1__SECRET",
                "demo-kiosk-secret-change-me-0123456789abcdef",
                "hospital_keys.pumch1.secret",
            ),
        ] {
            let mut env = own_secrets();
            env.push((var, committed.to_owned()));
            match load_in("prod", &env).unwrap_err() {
                SettingsError::Invalid {
                    service, key: named, ..
                } => {
                    assert_eq!((service.as_str(), named.as_str()), ("gateway", key));
                }
                other => panic!("{key}: {other}"),
            }
        }
    }

    #[test]
    fn in_production_secrets_of_ones_own_are_accepted() {
        let s = load_in("prod", &own_secrets()).unwrap();
        assert_eq!(s.channel_apps["wechat"].secrets().count(), 2);
        assert!(s.hospital_keys.contains_key("pumch1"));
        let env: Vec<(&str, String)> = PUMCH.iter().map(|(k, v)| (*k, v.to_string())).collect();
        for environment in ["local", "test", "demo"] {
            load_in(environment, &env).unwrap();
        }
    }
}
