//! Typed settings; see `config/defaults.toml` for every key and its default.

use std::collections::BTreeMap;

use jyt_domain::Channel;
use jyt_settings::{
    HttpSettings, Invalid, PostgresSettings, RedisSettings, SettingsError, Sources, TelemetrySettings,
    Validate,
};
use serde::Deserialize;

pub const SERVICE: &str = "channel-accounting";
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub consumer: ConsumerSettings,
    pub fees: FeeSettings,
    pub operators: OperatorSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerSettings {
    pub streams: Vec<String>,
    pub group: String,
    pub name: String,
    /// Entries left unacknowledged this long (by a replica that died, or
    /// after a failed apply) are taken over and read again.
    pub claim_idle_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FeeSettings {
    /// Channel name -> service fee in basis points; settlement deducts it.
    pub rates_bp: BTreeMap<String, u32>,
}

impl FeeSettings {
    pub fn rate_bp(&self, channel: &str) -> i64 {
        self.rates_bp.get(channel).copied().map_or(0, i64::from)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OperatorSettings {
    pub session_ttl_minutes: u32,
    /// Seeds the demo `city` login so `jyt up` has a usable console.
    pub demo_account: bool,
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountSettings>,
}

#[derive(Clone, Deserialize)]
pub struct AccountSettings {
    /// Argon2 PHC string; the password itself never appears in settings.
    pub password_hash: String,
    pub role: String,
    #[serde(default)]
    pub hospital_id: String,
}

impl std::fmt::Debug for AccountSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSettings")
            .field("password_hash", &"[redacted]")
            .field("role", &self.role)
            .field("hospital_id", &self.hospital_id)
            .finish()
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.http.validate("http")?;
        self.postgres.validate("postgres")?;
        self.redis.validate("redis")?;
        if self.consumer.streams.is_empty() || self.consumer.streams.iter().any(|s| s.trim().is_empty()) {
            return Err(Invalid::new(
                "consumer.streams",
                "needs at least one non-empty stream name",
            ));
        }
        if self.consumer.group.trim().is_empty() {
            return Err(Invalid::new("consumer.group", "must not be empty"));
        }
        if !(100..=3_600_000).contains(&self.consumer.claim_idle_ms) {
            return Err(Invalid::new(
                "consumer.claim_idle_ms",
                "must be between 100 and 3600000",
            ));
        }
        for (channel, bp) in &self.fees.rates_bp {
            let key = format!("fees.rates_bp.{channel}");
            if channel.parse::<Channel>().is_err() {
                return Err(Invalid::new(
                    key,
                    "is not a channel (wechat, kiosk, phone114, window, app, referral, clinic)",
                ));
            }
            if *bp > 10_000 {
                return Err(Invalid::new(key, "must be at most 10000 basis points (100 %)"));
            }
        }
        if self.operators.session_ttl_minutes == 0 {
            return Err(Invalid::new(
                "operators.session_ttl_minutes",
                "must be at least 1",
            ));
        }
        for (login, account) in &self.operators.accounts {
            let key = |k: &str| format!("operators.accounts.{login}.{k}");
            if login.is_empty()
                || login.len() > 64
                || !login
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Invalid::new(
                    format!("operators.accounts.{login}"),
                    "login must be 1 to 64 of a-z, 0-9, '-', '_'",
                ));
            }
            if argon2::PasswordHash::new(&account.password_hash).is_err() {
                return Err(Invalid::new(
                    key("password_hash"),
                    "must be an Argon2 PHC string ($argon2id$...)",
                ));
            }
            match (account.role.as_str(), account.hospital_id.trim().is_empty()) {
                ("city", true) | ("hospital", false) => {}
                ("city", false) => {
                    return Err(Invalid::new(
                        key("hospital_id"),
                        "must be empty for a city operator",
                    ));
                }
                ("hospital", true) => {
                    return Err(Invalid::new(
                        key("hospital_id"),
                        "is required for a hospital operator",
                    ));
                }
                _ => return Err(Invalid::new(key("role"), "must be \"city\" or \"hospital\"")),
            }
        }
        Ok(())
    }
}

impl Settings {
    pub fn load() -> Result<Self, SettingsError> {
        jyt_settings::load(SERVICE, DEFAULTS)
    }

    pub fn load_from(sources: &Sources) -> Result<Self, SettingsError> {
        jyt_settings::load_from(SERVICE, DEFAULTS, sources)
    }

    /// This replica's consumer name in the group.
    pub fn consumer_name(&self) -> String {
        if self.consumer.name.is_empty() {
            std::env::var("HOSTNAME").unwrap_or_else(|_| format!("accounting-{}", std::process::id()))
        } else {
            self.consumer.name.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, String> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Settings::load_from(&Sources::from_map(env.collect())).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_stream_list_is_refused_naming_the_key() {
        let err = load(&[("JYT_CHANNEL_ACCOUNTING__CONSUMER__GROUP", " ")]).unwrap_err();
        assert!(err.contains("`consumer.group`"), "{err}");
    }

    #[test]
    fn defaults_load_with_fee_rates() {
        let s = load(&[]).unwrap();
        assert_eq!(s.fees.rate_bp("wechat"), 60);
        assert_eq!(s.fees.rate_bp("window"), 0);
        assert!(s.consumer.streams.contains(&"events:card-issuing".to_owned()));
    }

    #[test]
    fn bad_fee_rates_and_accounts_are_refused_naming_the_key() {
        let err = load(&[("JYT_CHANNEL_ACCOUNTING__FEES__RATES_BP__WEIXIN", "5")]).unwrap_err();
        assert!(err.contains("`fees.rates_bp.weixin`"), "{err}");
        let err = load(&[("JYT_CHANNEL_ACCOUNTING__FEES__RATES_BP__WECHAT", "10001")]).unwrap_err();
        assert!(err.contains("`fees.rates_bp.wechat`"), "{err}");
        let err = load(&[
            (
                "JYT_CHANNEL_ACCOUNTING__OPERATORS__ACCOUNTS__ANN__PASSWORD_HASH",
                "plain",
            ),
            ("JYT_CHANNEL_ACCOUNTING__OPERATORS__ACCOUNTS__ANN__ROLE", "city"),
        ])
        .unwrap_err();
        assert!(err.contains("`operators.accounts.ann.password_hash`"), "{err}");
    }
}
