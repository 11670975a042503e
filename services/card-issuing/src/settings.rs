//! Typed settings; see `config/defaults.toml` for every key and its default,
//! and `jyt-settings` for the precedence of sources
//! (defaults → `config/<env>.toml` → `JYT_CARD_ISSUING__SECTION__KEY`).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jyt_settings::{
    HttpSettings, InternalAuthSettings, Invalid, PostgresSettings, RedisSettings, SettingsError, Sources,
    TelemetrySettings, Validate,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub const SERVICE: &str = "card-issuing";
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    /// Who may call: the gateway and jyt's tools, with internal tokens.
    pub internal_auth: InternalAuthSettings,
    pub crypto: CryptoSettings,
    pub ecard: EcardSettings,
    pub cards: CardSettings,
    pub family: FamilySettings,
    pub standing: StandingSettings,
    pub events: EventSettings,
    /// Operator id → their bearer token's SHA-256; only hashes live in
    /// configuration, so a leaked config file does not leak a token.
    #[serde(default)]
    pub operators: HashMap<String, OperatorSettings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CryptoSettings {
    /// The key new ciphertexts are sealed with.
    pub active_key_id: String,
    /// Every key that may have sealed a stored row, by id (base64, 32 bytes).
    /// Old keys stay here during rotation so old rows still open. An id
    /// set to "" is left out: tables merge across sources, so that is how
    /// a deployment drops the built-in demo key
    /// (`JYT_CARD_ISSUING__CRYPTO__KEYS__DEMO1=`).
    #[serde(deserialize_with = "keyring")]
    pub keys: HashMap<String, SecretString>,
    /// HMAC key of the blind indexes (base64, ≥ 32 bytes).
    pub blind_index_key: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EcardSettings {
    /// Shared with the gateway so it can verify tokens offline (base64, ≥ 32 bytes).
    pub secret: SecretString,
    /// A token's life: short, because a screenshot of a QR code is a copy.
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CardSettings {
    pub number_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FamilySettings {
    pub max_new_bindings_per_holder_per_month: i64,
    pub max_bindings_per_member_per_month: i64,
    pub guardian_age: u32,
    /// How long a member aged `guardian_age` or over has to enter the
    /// one-time code sent to their own channel app.
    pub verification_minutes: i64,
    /// Wrong codes before a verification is locked.
    pub verification_attempts: i32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StandingSettings {
    pub no_show_threshold: i64,
    pub window_days: i64,
    pub bar_days: i64,
    pub cache_seconds: u64,
    pub source_stream: String,
    pub consumer_group: String,
    pub consumer_name: String,
    pub block_ms: u64,
    pub batch_size: usize,
    /// Entries another consumer of the group left unacknowledged this long
    /// are taken over (that replica is presumed dead).
    pub claim_idle_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    /// Stream key (under the Redis key prefix) the outbox is relayed to.
    pub stream: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OperatorSettings {
    /// Hex SHA-256 of the operator's bearer token.
    pub token_sha256: String,
}

/// The keyring without the ids set to "" (see [`CryptoSettings::keys`]).
fn keyring<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, SecretString>, D::Error> {
    let mut keys = HashMap::<String, SecretString>::deserialize(d)?;
    keys.retain(|_, key| !key.expose_secret().trim().is_empty());
    Ok(keys)
}

/// Decode a base64 secret and check its length; the key name goes into the error.
pub fn decode_key(key: &str, value: &SecretString, min_len: usize) -> Result<Vec<u8>, Invalid> {
    let bytes = STANDARD
        .decode(value.expose_secret().trim())
        .map_err(|_| Invalid::new(key, "must be base64"))?;
    if bytes.len() < min_len {
        return Err(Invalid::new(
            key,
            format!("must decode to at least {min_len} bytes"),
        ));
    }
    Ok(bytes)
}

fn stream_name_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains(['{', '}'])
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.http.validate("http")?;
        self.postgres.validate("postgres")?;
        self.redis.validate("redis")?;
        self.internal_auth.validate("internal_auth")?;
        self.internal_auth
            .refuse_demo_derived("internal_auth", jyt_signing::internal::CARD_ISSUING)?;

        if !self.crypto.keys.contains_key(&self.crypto.active_key_id) {
            return Err(Invalid::new(
                "crypto.active_key_id",
                "must name a key in crypto.keys (key ids are lower case)",
            ));
        }
        for (id, key) in &self.crypto.keys {
            let name = format!("crypto.keys.{id}");
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(Invalid::new(name, "key ids are 1 to 32 letters, digits or _"));
            }
            if decode_key(&name, key, 32)?.len() != 32 {
                return Err(Invalid::new(name, "must decode to exactly 32 bytes (AES-256)"));
            }
        }
        decode_key("crypto.blind_index_key", &self.crypto.blind_index_key, 32)?;
        decode_key("ecard.secret", &self.ecard.secret, 32)?;
        if !(30..=3600).contains(&self.ecard.ttl_seconds) {
            return Err(Invalid::new("ecard.ttl_seconds", "must be between 30 and 3600"));
        }
        let prefix = &self.cards.number_prefix;
        if !(1..=8).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Invalid::new("cards.number_prefix", "must be 1 to 8 digits"));
        }
        let f = &self.family;
        if !(1..=100).contains(&f.max_new_bindings_per_holder_per_month) {
            return Err(Invalid::new(
                "family.max_new_bindings_per_holder_per_month",
                "must be between 1 and 100",
            ));
        }
        if !(1..=100).contains(&f.max_bindings_per_member_per_month) {
            return Err(Invalid::new(
                "family.max_bindings_per_member_per_month",
                "must be between 1 and 100",
            ));
        }
        if !(1..=30).contains(&f.guardian_age) {
            return Err(Invalid::new("family.guardian_age", "must be between 1 and 30"));
        }
        if !(1..=30).contains(&f.verification_minutes) {
            return Err(Invalid::new(
                "family.verification_minutes",
                "must be between 1 and 30",
            ));
        }
        if !(1..=10).contains(&f.verification_attempts) {
            return Err(Invalid::new(
                "family.verification_attempts",
                "must be between 1 and 10",
            ));
        }
        let s = &self.standing;
        if !(1..=100).contains(&s.no_show_threshold) {
            return Err(Invalid::new(
                "standing.no_show_threshold",
                "must be between 1 and 100",
            ));
        }
        if !(1..=3650).contains(&s.window_days) {
            return Err(Invalid::new("standing.window_days", "must be between 1 and 3650"));
        }
        if !(1..=3650).contains(&s.bar_days) {
            return Err(Invalid::new("standing.bar_days", "must be between 1 and 3650"));
        }
        if s.cache_seconds > 3600 {
            return Err(Invalid::new("standing.cache_seconds", "must be at most 3600"));
        }
        if !stream_name_ok(&s.source_stream) {
            return Err(Invalid::new(
                "standing.source_stream",
                "must be non-empty and without braces",
            ));
        }
        if s.consumer_group.is_empty() || s.consumer_name.is_empty() {
            return Err(Invalid::new(
                "standing.consumer_group",
                "group and consumer names must be set",
            ));
        }
        if s.block_ms == 0 || s.block_ms >= self.redis.response_timeout_ms {
            return Err(Invalid::new(
                "standing.block_ms",
                "must be positive and below redis.response_timeout_ms",
            ));
        }
        if !(100..=3_600_000).contains(&s.claim_idle_ms) {
            return Err(Invalid::new(
                "standing.claim_idle_ms",
                "must be between 100 and 3600000",
            ));
        }
        if !(1..=10_000).contains(&s.batch_size) {
            return Err(Invalid::new("standing.batch_size", "must be between 1 and 10000"));
        }
        if !stream_name_ok(&self.events.stream) {
            return Err(Invalid::new(
                "events.stream",
                "must be non-empty and without braces",
            ));
        }
        for (id, op) in &self.operators {
            let ok = op.token_sha256.len() == 64 && op.token_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(Invalid::new(
                    format!("operators.{id}.token_sha256"),
                    "must be 64 hex digits (SHA-256 of the token)",
                ));
            }
        }
        Ok(())
    }

    /// Outside `JYT_ENV` local, test and demo none of these may be a value
    /// committed to the repository (`jyt_settings::committed`).
    fn secrets(&self) -> Vec<(String, &str)> {
        let mut keys: Vec<(&String, &SecretString)> = self.crypto.keys.iter().collect();
        keys.sort_by_key(|(id, _)| *id);
        let mut secrets: Vec<(String, &str)> = keys
            .into_iter()
            .map(|(id, key)| (format!("crypto.keys.{id}"), key.expose_secret()))
            .collect();
        secrets.push((
            "crypto.blind_index_key".to_owned(),
            self.crypto.blind_index_key.expose_secret(),
        ));
        secrets.push(("ecard.secret".to_owned(), self.ecard.secret.expose_secret()));
        let mut operators: Vec<(&String, &OperatorSettings)> = self.operators.iter().collect();
        operators.sort_by_key(|(id, _)| *id);
        for (id, op) in operators {
            secrets.push((format!("operators.{id}.token_sha256"), op.token_sha256.as_str()));
        }
        secrets
    }
}

impl Settings {
    /// From defaults, `config/<env>.toml` and the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        jyt_settings::load(SERVICE, DEFAULTS)
    }

    pub fn load_from(sources: &Sources) -> Result<Self, SettingsError> {
        jyt_settings::load_from(SERVICE, DEFAULTS, sources)
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

    #[test]
    fn defaults_are_valid() {
        let s = load(&[]).unwrap();
        assert_eq!(s.http.port, 8102);
        assert!(
            s.operators.is_empty(),
            "only jyt up and tests configure operators"
        );
    }

    fn load_in(environment: &str, pairs: &[(&str, String)]) -> Result<Settings, SettingsError> {
        Settings::load_from(&Sources {
            environment_name: Some(environment.to_owned()),
            ..Sources::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
        })
    }

    /// Every secret of card-issuing set to a value of our own (made here,
    /// never committed), the demo key dropped from the keyring.
    fn own_secrets() -> Vec<(&'static str, String)> {
        let key = |b: u8| STANDARD.encode([b; 32]);
        vec![
            ("JYT_CARD_ISSUING__CRYPTO__ACTIVE_KEY_ID", "k2025".to_owned()),
            ("JYT_CARD_ISSUING__CRYPTO__KEYS__K2025", key(1)),
            ("JYT_CARD_ISSUING__CRYPTO__KEYS__DEMO1", String::new()),
            ("JYT_CARD_ISSUING__CRYPTO__BLIND_INDEX_KEY", key(2)),
            ("JYT_CARD_ISSUING__ECARD__SECRET", key(3)),
            ("JYT_CARD_ISSUING__INTERNAL_AUTH__SECRET", "ab".repeat(32)),
            ("JYT_CARD_ISSUING__INTERNAL_AUTH__MASTER_SECRET", String::new()),
            ("JYT_CARD_ISSUING__OPERATORS__ANN__TOKEN_SHA256", "cd".repeat(32)),
        ]
    }

    #[test]
    fn in_production_the_committed_demo_secrets_are_refused_naming_the_key() {
        let err = load_in("prod", &[]).unwrap_err().to_string();
        assert!(
            err.contains(
                "`crypto.keys.demo1` equals a value committed in the repository; \
                 set a secret of your own (JYT_ENV=prod)"
            ),
            "{err}"
        );
        for other in ["crypto.blind_index_key", "ecard.secret"] {
            assert!(err.contains(other), "{other}: {err}");
        }

        // One committed value among our own is enough: jyt up's operator.
        let mut env = own_secrets();
        env.push((
            "JYT_CARD_ISSUING__OPERATORS__DEMO-OPERATOR__TOKEN_SHA256",
            "61112491d046c3f6f8ab801f170d9b2d0c734a17ceff60dee92123fb507cfc3f".to_owned(),
        ));
        let err = load_in("prod", &env).unwrap_err();
        match err {
            SettingsError::Invalid { service, key, reason } => {
                assert_eq!(service, "card-issuing");
                assert_eq!(key, "operators.demo-operator.token_sha256", "{reason}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn in_production_secrets_of_ones_own_are_accepted_and_the_demo_key_is_dropped() {
        let s = load_in("prod", &own_secrets()).unwrap();
        assert_eq!(s.crypto.keys.len(), 1, "demo1 set to \"\" leaves the keyring");
        assert!(s.crypto.keys.contains_key("k2025"));
        assert!(s.operators.contains_key("ann"));
        // The same committed defaults are fine where they belong.
        for environment in ["local", "test", "demo"] {
            load_in(environment, &[]).unwrap();
        }
    }

    #[test]
    fn an_active_key_missing_from_the_keyring_is_refused() {
        let err = load(&[("JYT_CARD_ISSUING__CRYPTO__ACTIVE_KEY_ID", "nope")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`crypto.active_key_id`"), "{err}");
    }

    #[test]
    fn a_short_key_is_refused_naming_it() {
        let err = load(&[("JYT_CARD_ISSUING__ECARD__SECRET", "c2hvcnQ=")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ecard.secret`"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = load(&[]).unwrap();
        let shown = format!("{:?}", s.crypto);
        assert!(!shown.contains("cEIfJwfQ"), "{shown}");
    }
}
