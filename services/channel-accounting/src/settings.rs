//! Typed settings; see `config/defaults.toml` for every key and its default.

use std::collections::BTreeMap;

use jyt_domain::Channel;
use jyt_settings::{
    HttpSettings, InternalAuthSettings, Invalid, PostgresSettings, RedisSettings, SettingsError, Sources,
    TelemetrySettings, Validate,
};
use secrecy::{ExposeSecret, SecretString};
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
    pub gateway: GatewayRelaySettings,
    /// How the survey door (`/internal/v1/surveys`) checks that the gateway
    /// calls: its internal tokens for audience `channel-accounting`. Both
    /// keys empty: that door is shut (401), the rest works.
    pub internal_auth: InternalAuthSettings,
}

/// The gateway's operators' relay (`/ops/v1`), through which the console
/// reaches what only the gateway may: hospitals' capacity and the
/// notification dead letters. Empty `url`: those pages answer 503
/// `RELAY_UNAVAILABLE`, the rest of the console works.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayRelaySettings {
    pub url: String,
    /// The `gateway-ops` audience key: hex(SHA-256(master ‖ ":gateway-ops")),
    /// derived from the gateway's master secret, which we never hold.
    pub ops_key: SecretString,
    pub token_lifetime_seconds: i64,
    pub timeout_ms: u64,
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
    /// Failed logins a login name may take per window, from any address:
    /// slows a guesser spreading over many addresses.
    pub max_failed_logins_per_name: u32,
    /// Failed logins one client address may take per window, whatever the
    /// names: slows a guesser trying many names.
    pub max_failed_logins_per_address: u32,
    pub failed_login_window_seconds: u64,
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
        for (key, value) in [
            (
                "operators.max_failed_logins_per_name",
                u64::from(self.operators.max_failed_logins_per_name),
            ),
            (
                "operators.max_failed_logins_per_address",
                u64::from(self.operators.max_failed_logins_per_address),
            ),
        ] {
            if !(1..=10_000).contains(&value) {
                return Err(Invalid::new(key, "must be between 1 and 10000"));
            }
        }
        if !(1..=86_400).contains(&self.operators.failed_login_window_seconds) {
            return Err(Invalid::new(
                "operators.failed_login_window_seconds",
                "must be between 1 and 86400 (a day)",
            ));
        }
        self.gateway.validate()?;
        if self.surveys_open() {
            self.internal_auth.validate("internal_auth")?;
            self.internal_auth
                .refuse_demo_derived("internal_auth", jyt_signing::internal::CHANNEL_ACCOUNTING)?;
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

    /// Outside `JYT_ENV` local, test and demo none of these may be a value
    /// committed to the repository (`jyt_settings::committed`): an
    /// account's hash, or the demo login's password, which is committed
    /// (`jyt up`'s demo credentials), so the demo login is refused there.
    fn secrets(&self) -> Vec<(String, &str)> {
        let mut secrets: Vec<(String, &str)> = self
            .operators
            .accounts
            .iter()
            .map(|(login, a)| {
                (
                    format!("operators.accounts.{login}.password_hash"),
                    a.password_hash.as_str(),
                )
            })
            .collect();
        if self.operators.demo_account {
            secrets.push(("operators.demo_account".to_owned(), crate::auth::DEMO_PASSWORD));
        }
        if !self.gateway.ops_key.expose_secret().is_empty() {
            secrets.push(("gateway.ops_key".to_owned(), self.gateway.ops_key.expose_secret()));
        }
        let master = self.internal_auth.master_secret.expose_secret();
        if !master.is_empty() {
            secrets.push(("internal_auth.master_secret".to_owned(), master));
        }
        secrets
    }
}

impl Settings {
    pub fn load() -> Result<Self, SettingsError> {
        jyt_settings::load(SERVICE, DEFAULTS)
    }

    pub fn load_from(sources: &Sources) -> Result<Self, SettingsError> {
        jyt_settings::load_from(SERVICE, DEFAULTS, sources)
    }

    /// Whether the gateway may call the survey door: a key is configured.
    pub fn surveys_open(&self) -> bool {
        !self.internal_auth.secret.expose_secret().is_empty()
            || !self.internal_auth.master_secret.expose_secret().is_empty()
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

impl GatewayRelaySettings {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    fn validate(&self) -> Result<(), Invalid> {
        if !self.enabled() {
            return Ok(());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Invalid::new("gateway.url", "must be an http:// or https:// URL"));
        }
        if self.ops_key.expose_secret().len() < 32 {
            return Err(Invalid::new(
                "gateway.ops_key",
                "must be the gateway-ops key (at least 32 characters) when gateway.url is set",
            ));
        }
        if !(10..=300).contains(&self.token_lifetime_seconds) {
            return Err(Invalid::new(
                "gateway.token_lifetime_seconds",
                "must be between 10 and 300",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(Invalid::new(
                "gateway.timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, String> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Settings::load_from(&Sources::from_map(env.collect())).map_err(|e| e.to_string())
    }

    fn load_in(environment: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Settings::load_from(&Sources {
            environment_name: Some(environment.to_owned()),
            ..Sources::from_map(env.collect())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn in_production_the_demo_login_is_refused_naming_the_key() {
        // The defaults hold no secret of channel-accounting's own (only
        // jyt up turns the demo login on), so they load anywhere.
        load_in("prod", &[]).unwrap();
        let err = load_in(
            "prod",
            &[("JYT_CHANNEL_ACCOUNTING__OPERATORS__DEMO_ACCOUNT", "true")],
        )
        .unwrap_err();
        assert!(
            err.contains(
                "`operators.demo_account` equals a value committed in the repository; \
                 set a secret of your own (JYT_ENV=prod)"
            ),
            "{err}"
        );
        for environment in ["local", "test", "demo"] {
            load_in(
                environment,
                &[("JYT_CHANNEL_ACCOUNTING__OPERATORS__DEMO_ACCOUNT", "true")],
            )
            .unwrap();
        }
    }

    #[test]
    fn in_production_an_account_of_ones_own_is_accepted() {
        let hash = crate::auth::hash_password_with("a-password-of-our-own", 1024, 1).unwrap();
        let s = load_in(
            "prod",
            &[
                (
                    "JYT_CHANNEL_ACCOUNTING__OPERATORS__ACCOUNTS__ANN__PASSWORD_HASH",
                    &hash,
                ),
                ("JYT_CHANNEL_ACCOUNTING__OPERATORS__ACCOUNTS__ANN__ROLE", "city"),
            ],
        )
        .unwrap();
        assert!(s.operators.accounts.contains_key("ann"));
    }

    #[test]
    fn the_survey_doors_key_is_checked_and_no_committed_one_is_taken_in_production() {
        let demo_master = "demo-internal-master-OACaUc5IYpMnFt8Rmg8IpdpDo8ILNPY";
        assert!(!load(&[]).unwrap().surveys_open(), "shut by default");
        let s = load(&[(
            "JYT_CHANNEL_ACCOUNTING__INTERNAL_AUTH__MASTER_SECRET",
            demo_master,
        )])
        .unwrap();
        assert!(s.surveys_open());
        let err = load_in(
            "prod",
            &[(
                "JYT_CHANNEL_ACCOUNTING__INTERNAL_AUTH__MASTER_SECRET",
                demo_master,
            )],
        )
        .unwrap_err();
        assert!(err.contains("`internal_auth.master_secret`"), "{err}");
        let derived = jyt_signing::internal::derive_key(
            demo_master.as_bytes(),
            jyt_signing::internal::CHANNEL_ACCOUNTING,
        );
        let err = load(&[("JYT_CHANNEL_ACCOUNTING__INTERNAL_AUTH__SECRET", derived.as_str())]).unwrap_err();
        assert!(err.contains("`internal_auth.secret`"), "{err}");
        let err = load(&[("JYT_CHANNEL_ACCOUNTING__INTERNAL_AUTH__SECRET", "short")]).unwrap_err();
        assert!(err.contains("`internal_auth.secret`"), "{err}");
        let own =
            jyt_signing::internal::derive_key(b"a-master-of-our-own-0123456789abcdef", "channel-accounting");
        assert!(
            load_in(
                "prod",
                &[("JYT_CHANNEL_ACCOUNTING__INTERNAL_AUTH__SECRET", own.as_str())]
            )
            .unwrap()
            .surveys_open()
        );
    }

    #[test]
    fn the_demo_login_is_among_the_committed_values() {
        assert!(jyt_settings::committed::is_committed(crate::auth::DEMO_PASSWORD));
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

    #[test]
    fn login_throttle_limits_are_refused_naming_the_key() {
        let s = load(&[]).unwrap();
        assert_eq!(s.operators.max_failed_logins_per_name, 5);
        assert_eq!(s.operators.max_failed_logins_per_address, 20);
        assert_eq!(s.operators.failed_login_window_seconds, 900);
        for (var, key) in [
            (
                "MAX_FAILED_LOGINS_PER_NAME",
                "operators.max_failed_logins_per_name",
            ),
            (
                "MAX_FAILED_LOGINS_PER_ADDRESS",
                "operators.max_failed_logins_per_address",
            ),
            (
                "FAILED_LOGIN_WINDOW_SECONDS",
                "operators.failed_login_window_seconds",
            ),
        ] {
            let err = load(&[(&format!("JYT_CHANNEL_ACCOUNTING__OPERATORS__{var}"), "0")]).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
    }
}
