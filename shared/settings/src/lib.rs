//! # Layout
//! One loader for every service's typed settings, and the sections that
//! every service shares ([`HttpSettings`], [`PostgresSettings`],
//! [`RedisSettings`], [`TelemetrySettings`]).
//!
//! Precedence, lowest first:
//! 1. the service's built-in defaults (a TOML string compiled into it);
//! 2. `config/<env>.toml` under `JYT_CONFIG_DIR` (default `config`), where
//!    `<env>` is `JYT_ENV` (default `local`); the file is optional;
//! 3. environment variables `JYT_<SERVICE>__<SECTION>__<KEY>`, e.g.
//!    `JYT_SLOT_INVENTORY__HTTP__PORT=8101`.
//!
//! After deserialising, [`Validate::validate`] checks what types cannot
//! (ranges, URLs, cross-field rules). Either failure stops the service with a
//! message naming the key, so a typo is found at start, not at the first
//! request.
//!
//! Outside `JYT_ENV` `local`, `test` and `demo`, a key, secret or token
//! whose value is committed to the repository (a demo key from the
//! defaults, `jyt up`'s credentials: see [`committed`]) stops the service
//! too, naming the key: a real deployment sets secrets of its own.

pub mod committed;

use std::collections::HashMap;
use std::path::PathBuf;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The sources could not be read or a value has the wrong type; the
    /// `config` crate's message names the key.
    #[error("settings for {service}: {source}")]
    Load {
        service: String,
        // Boxed: the config error is large, and every `load` returns it.
        #[source]
        source: Box<config::ConfigError>,
    },
    #[error("settings for {service}: `{key}` {reason}")]
    Invalid {
        service: String,
        key: String,
        reason: String,
    },
}

/// A rule on a single key, reported by [`Validate::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a loaded settings value can run; the first broken rule is reported.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;

    /// Every key, secret and token of these settings, as (key, value):
    /// outside `local`, `test` and `demo` none may be a value committed to
    /// the repository ([`committed`]). Keys whose name says they are a
    /// secret are checked anyway ([`committed::secret_named`]); list every
    /// secret here all the same, whatever its name.
    fn secrets(&self) -> Vec<(String, &str)> {
        Vec::new()
    }
}

/// Where settings come from. `env` is `None` to read the process environment;
/// tests pass a map so they never mutate the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_dir: Option<PathBuf>,
    pub environment_name: Option<String>,
    pub env: Option<HashMap<String, String>>,
}

impl Sources {
    /// Only defaults and the given variables: what tests use.
    pub fn from_map(env: HashMap<String, String>) -> Self {
        Self {
            config_dir: None,
            environment_name: None,
            env: Some(env),
        }
    }
}

/// `slot-inventory` → `JYT_SLOT_INVENTORY`.
pub fn env_prefix(service: &str) -> String {
    format!("JYT_{}", service.to_ascii_uppercase().replace('-', "_"))
}

/// Load and validate a service's settings from the process's own sources.
pub fn load<T: DeserializeOwned + Validate>(service: &str, defaults: &str) -> Result<T, SettingsError> {
    load_from(service, defaults, &Sources::default())
}

pub fn load_from<T: DeserializeOwned + Validate>(
    service: &str,
    defaults: &str,
    sources: &Sources,
) -> Result<T, SettingsError> {
    let load_err = |source| SettingsError::Load {
        service: service.to_owned(),
        source: Box::new(source),
    };
    let env_var = |name: &str| match &sources.env {
        Some(map) => map.get(name).cloned(),
        None => std::env::var(name).ok(),
    };
    let config_dir = sources
        .config_dir
        .clone()
        .or_else(|| env_var("JYT_CONFIG_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config"));
    let environment_name = sources
        .environment_name
        .clone()
        .or_else(|| env_var("JYT_ENV"))
        .unwrap_or_else(|| "local".to_owned());

    let mut environment = Environment::with_prefix(&env_prefix(service))
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("redis.urls");
    if let Some(map) = &sources.env {
        environment = environment.source(Some(map.clone().into_iter().collect()));
    }

    let merged = Config::builder()
        .add_source(File::from_str(defaults, FileFormat::Toml))
        .add_source(File::from(config_dir.join(format!("{environment_name}.toml"))).required(false))
        .add_source(environment)
        .build()
        .map_err(load_err)?;
    let tree: Option<config::Value> = if committed::allowed_in(&environment_name) {
        None
    } else {
        Some(merged.clone().try_deserialize().map_err(load_err)?)
    };
    let settings: T = merged.try_deserialize().map_err(load_err)?;
    settings.validate().map_err(|i| SettingsError::Invalid {
        service: service.to_owned(),
        key: i.key,
        reason: i.reason,
    })?;
    if let Some(tree) = tree {
        let mut keys: Vec<String> = settings
            .secrets()
            .into_iter()
            .filter(|(_, value)| committed::is_committed(value))
            .map(|(key, _)| key)
            .collect();
        for key in committed::committed_secret_keys(&tree) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if let Some((key, others)) = keys.split_first() {
            let mut reason = format!(
                "equals a value committed in the repository; set a secret of your own (JYT_ENV={environment_name})"
            );
            if !others.is_empty() {
                reason.push_str(&format!("; so do {}", others.join(", ")));
            }
            return Err(SettingsError::Invalid {
                service: service.to_owned(),
                key: key.clone(),
                reason,
            });
        }
    }
    Ok(settings)
}

/// Deserialise a committed TOML data file (such as `jyt up`'s demo
/// credentials); `name` goes into the error.
pub fn from_toml<T: DeserializeOwned>(name: &str, text: &str) -> Result<T, SettingsError> {
    committed::parse(text)
        .and_then(config::Value::try_deserialize)
        .map_err(|source| SettingsError::Load {
            service: name.to_owned(),
            source: Box::new(source),
        })
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests); the bound port is read back after binding.
    pub port: u16,
    /// actix worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Larger request bodies are refused with 413 before they are parsed.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Serve `/metrics` (with `/healthz`, `/readyz`) on this port of its own
    /// and not on `port`; unset serves them all on `port` (jyt up, tests).
    /// 0 picks a free port.
    #[serde(default)]
    pub ops_port: Option<u16>,
    /// How many connections the kernel queues for accepting (`listen(2)`'s
    /// backlog; it is capped at `net.core.somaxconn`). At a release instant
    /// thousands of patients connect at once: a full queue drops their SYNs,
    /// and each waits a second for its retransmission (with the standard
    /// library's own 128, 73 and 90 times in two whole-day load tests).
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_listen_backlog() -> u32 {
    4096
}

impl HttpSettings {
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        if self.host.trim().is_empty() {
            return Err(Invalid::new(format!("{prefix}.host"), "must not be empty"));
        }
        if let Some(ops) = self.ops_port
            && ops != 0
            && ops == self.port
        {
            return Err(Invalid::new(
                format!("{prefix}.ops_port"),
                "must differ from the API port",
            ));
        }
        if !(1..=65_535).contains(&self.listen_backlog) {
            return Err(Invalid::new(
                format!("{prefix}.listen_backlog"),
                "must be between 1 and 65535",
            ));
        }
        if !(256..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(Invalid::new(
                format!("{prefix}.max_body_bytes"),
                "must be between 256 and 16777216",
            ));
        }
        Ok(())
    }
}

/// A PostgreSQL pool. Sizes and timeouts are explicit so that an overloaded
/// database makes requests fail fast instead of queueing without bound.
#[derive(Debug, Clone, Deserialize)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database`; secret because it may
    /// hold a password.
    pub url: SecretString,
    pub pool_max_size: usize,
    /// How long a request waits for a free connection.
    pub wait_timeout_ms: u64,
    pub create_timeout_ms: u64,
    pub recycle_timeout_ms: u64,
    /// Server-side statement timeout, so one stuck query cannot hold a
    /// connection forever.
    pub statement_timeout_ms: u64,
}

impl PostgresSettings {
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        let url = self.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Invalid::new(
                format!("{prefix}.url"),
                "must start with postgres:// or postgresql://",
            ));
        }
        if self.pool_max_size == 0 || self.pool_max_size > 512 {
            return Err(Invalid::new(
                format!("{prefix}.pool_max_size"),
                "must be between 1 and 512",
            ));
        }
        for (key, v) in [
            ("wait_timeout_ms", self.wait_timeout_ms),
            ("create_timeout_ms", self.create_timeout_ms),
            ("recycle_timeout_ms", self.recycle_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
        ] {
            if v == 0 || v > 600_000 {
                return Err(Invalid::new(
                    format!("{prefix}.{key}"),
                    "must be between 1 and 600000 ms",
                ));
            }
        }
        Ok(())
    }
}

/// Redis: one node, or a cluster's seed nodes.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// `redis://host:port/db`; several for a cluster.
    pub urls: Vec<SecretString>,
    #[serde(default)]
    pub cluster: bool,
    /// Put before every key, so that several cities, environments or tests
    /// can share one Redis without seeing each other.
    pub key_prefix: String,
    /// A command that takes longer fails, so a sick Redis is noticed.
    pub response_timeout_ms: u64,
    pub connection_timeout_ms: u64,
}

impl RedisSettings {
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        if self.urls.is_empty() {
            return Err(Invalid::new(format!("{prefix}.urls"), "needs at least one URL"));
        }
        if !self.cluster && self.urls.len() != 1 {
            return Err(Invalid::new(
                format!("{prefix}.urls"),
                "a single node takes exactly one URL; set cluster = true for more",
            ));
        }
        for u in &self.urls {
            let u = u.expose_secret();
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(Invalid::new(
                    format!("{prefix}.urls"),
                    "must start with redis:// or rediss://",
                ));
            }
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
        if !prefix_ok {
            return Err(Invalid::new(
                format!("{prefix}.key_prefix"),
                "must be non-empty letters, digits, - _ : . (no braces: they would change the cluster slot)",
            ));
        }
        if self.response_timeout_ms == 0 || self.connection_timeout_ms == 0 {
            return Err(Invalid::new(
                format!("{prefix}.response_timeout_ms"),
                "timeouts must be positive",
            ));
        }
        Ok(())
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `json` for machines, `pretty` for a person at a terminal.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info,slot_inventory=debug`;
    /// `RUST_LOG` overrides it.
    pub log_filter: String,
    /// OTLP/HTTP endpoint of an OpenTelemetry collector; when unset the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT` is used, and when neither is
    /// set traces are kept in-process only (ids still propagate).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// How a service behind the gateway (slot-inventory, card-issuing) checks
/// its callers' internal tokens (`jyt_signing::internal`). Exactly one of
/// `secret` and `master_secret` is set: a deployment sets `secret`, this
/// service's own key, and leaves `master_secret` empty; `jyt up`, tests and
/// the load test run every service from the one demo `master_secret` and
/// derive the key from it, as the gateway does.
#[derive(Debug, Clone, Deserialize)]
pub struct InternalAuthSettings {
    /// This service's key: `derive_key(master, audience)`, hex.
    #[serde(default = "empty_secret")]
    pub secret: SecretString,
    /// The platform's master secret (demo and test set-ups only).
    #[serde(default = "empty_secret")]
    pub master_secret: SecretString,
    /// A token expiring further ahead than this is refused, so a token
    /// minted by mistake with a long life is no good either.
    pub max_lifetime_seconds: i64,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

impl InternalAuthSettings {
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        let own = self.secret.expose_secret();
        let master = self.master_secret.expose_secret();
        match (own.is_empty(), master.is_empty()) {
            (true, true) => {
                return Err(Invalid::new(
                    format!("{prefix}.secret"),
                    "must be set: this service's key, derived from the gateway's internal_auth.master_secret",
                ));
            }
            (false, false) => {
                return Err(Invalid::new(
                    format!("{prefix}.master_secret"),
                    "must be empty when internal_auth.secret is set: a service holds only its own key",
                ));
            }
            (false, true) if own.len() < 32 => {
                return Err(Invalid::new(
                    format!("{prefix}.secret"),
                    "must be at least 32 characters",
                ));
            }
            (true, false) if master.len() < 32 => {
                return Err(Invalid::new(
                    format!("{prefix}.master_secret"),
                    "must be at least 32 characters",
                ));
            }
            _ => {}
        }
        if !(10..=3600).contains(&self.max_lifetime_seconds) {
            return Err(Invalid::new(
                format!("{prefix}.max_lifetime_seconds"),
                "must be between 10 and 3600",
            ));
        }
        Ok(())
    }

    /// `secret` must not be the key derived from a committed master secret
    /// (the demo one): anyone with the repository could mint tokens for it.
    /// Refused in every environment: demo set-ups use `master_secret`.
    pub fn refuse_demo_derived(&self, prefix: &str, audience: &str) -> Result<(), Invalid> {
        let own = self.secret.expose_secret();
        if !own.is_empty()
            && committed::values()
                .iter()
                .any(|master| jyt_signing::internal::derive_key(master.as_bytes(), audience) == own)
        {
            return Err(Invalid::new(
                format!("{prefix}.secret"),
                "is derived from a master secret committed in the repository; derive it from a master of your own",
            ));
        }
        Ok(())
    }

    /// The key this service verifies tokens for `audience` with.
    pub fn key(&self, audience: &str) -> String {
        let own = self.secret.expose_secret();
        if own.is_empty() {
            jyt_signing::internal::derive_key(self.master_secret.expose_secret().as_bytes(), audience)
        } else {
            own.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Demo {
        http: HttpSettings,
        redis: RedisSettings,
    }

    impl Validate for Demo {
        fn validate(&self) -> Result<(), Invalid> {
            self.http.validate("http")?;
            self.redis.validate("redis")
        }
    }

    const DEFAULTS: &str = r#"
        [http]
        host = "127.0.0.1"
        port = 8080
        [redis]
        urls = ["redis://127.0.0.1:6379"]
        key_prefix = "jyt"
        response_timeout_ms = 1000
        connection_timeout_ms = 1000
    "#;

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_load_when_nothing_overrides_them() {
        let s: Demo = load_from("demo-svc", DEFAULTS, &env(&[])).unwrap();
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.http.max_body_bytes, 64 * 1024);
    }

    #[test]
    fn environment_overrides_defaults() {
        let s: Demo = load_from(
            "demo-svc",
            DEFAULTS,
            &env(&[("JYT_DEMO_SVC__HTTP__PORT", "9001")]),
        )
        .unwrap();
        assert_eq!(s.http.port, 9001);
    }

    #[test]
    fn config_file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("jyt-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("staging.toml"),
            "[http]\nport = 7000\nhost = \"0.0.0.0\"\n",
        )
        .unwrap();
        let mut sources = env(&[("JYT_DEMO_SVC__HTTP__PORT", "7001")]);
        sources.config_dir = Some(dir.clone());
        sources.environment_name = Some("staging".into());
        let s: Demo = load_from("demo-svc", DEFAULTS, &sources).unwrap();
        assert_eq!(s.http.host, "0.0.0.0", "file overrides defaults");
        assert_eq!(s.http.port, 7001, "environment overrides file");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_naming_the_key() {
        let err = load_from::<Demo>(
            "demo-svc",
            DEFAULTS,
            &env(&[("JYT_DEMO_SVC__HTTP__PORT", "eighty")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("http.port"), "{err}");
    }

    #[test]
    fn a_value_that_breaks_a_rule_is_refused_naming_the_key() {
        let err = load_from::<Demo>(
            "demo-svc",
            DEFAULTS,
            &env(&[("JYT_DEMO_SVC__REDIS__KEY_PREFIX", "{h:1}")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`redis.key_prefix`"), "{err}");
    }

    #[test]
    fn the_listen_backlog_defaults_to_a_release_instants_burst_and_zero_is_refused() {
        let s: Demo = load_from("demo-svc", DEFAULTS, &env(&[])).unwrap();
        assert_eq!(s.http.listen_backlog, 4096);
        let err = load_from::<Demo>(
            "demo-svc",
            DEFAULTS,
            &env(&[("JYT_DEMO_SVC__HTTP__LISTEN_BACKLOG", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`http.listen_backlog`"), "{err}");
    }

    /// Settings with a secret listed explicitly and one found by its name.
    #[derive(Debug, Deserialize)]
    struct WithSecrets {
        http: HttpSettings,
        vault: Vault,
    }

    #[derive(Debug, Deserialize)]
    struct Vault {
        /// Named like nothing secret: only the explicit list finds it.
        sealing: SecretString,
        api_token: SecretString,
    }

    impl Validate for WithSecrets {
        fn validate(&self) -> Result<(), Invalid> {
            self.http.validate("http")
        }

        fn secrets(&self) -> Vec<(String, &str)> {
            vec![("vault.sealing".to_owned(), self.vault.sealing.expose_secret())]
        }
    }

    /// Committed values: card-issuing's demo AES key and jyt up's operator token.
    const WITH_SECRETS: &str = r#"
        [http]
        host = "127.0.0.1"
        port = 8080
        [vault]
        sealing = "cEIfJwfQSiHB6KeoWdG6pVdmA84oNkASyufu5H0T2CU="
        api_token = "demo-operator-token"
    "#;

    fn in_env(environment: &str, pairs: &[(&str, &str)]) -> Sources {
        let mut sources = env(pairs);
        sources.environment_name = Some(environment.to_owned());
        sources
    }

    #[test]
    fn outside_demo_environments_a_committed_secret_is_refused_naming_the_key() {
        let err = load_from::<WithSecrets>("demo-svc", WITH_SECRETS, &in_env("prod", &[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`vault.sealing` equals a value committed in the repository"),
            "{err}"
        );
        assert!(err.contains("set a secret of your own (JYT_ENV=prod)"), "{err}");
        assert!(err.contains("so do vault.api_token"), "{err}");
        assert!(!err.contains("cEIfJwfQ"), "the value never prints: {err}");

        // With the listed one replaced, the name-based rule still finds the other.
        let err = load_from::<WithSecrets>(
            "demo-svc",
            WITH_SECRETS,
            &in_env(
                "prod",
                &[(
                    "JYT_DEMO_SVC__VAULT__SEALING",
                    "a-sealing-key-of-our-own-0123456789",
                )],
            ),
        )
        .unwrap_err();
        match err {
            SettingsError::Invalid { service, key, .. } => {
                assert_eq!((service.as_str(), key.as_str()), ("demo-svc", "vault.api_token"));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn outside_demo_environments_secrets_of_ones_own_are_accepted() {
        let s: WithSecrets = load_from(
            "demo-svc",
            WITH_SECRETS,
            &in_env(
                "prod",
                &[
                    (
                        "JYT_DEMO_SVC__VAULT__SEALING",
                        "a-sealing-key-of-our-own-0123456789",
                    ),
                    ("JYT_DEMO_SVC__VAULT__API_TOKEN", "a-token-of-our-own-0123456789"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(s.vault.api_token.expose_secret(), "a-token-of-our-own-0123456789");
    }

    #[test]
    fn local_test_and_demo_accept_committed_secrets() {
        for environment in ["local", "test", "demo"] {
            load_from::<WithSecrets>("demo-svc", WITH_SECRETS, &in_env(environment, &[]))
                .unwrap_or_else(|e| panic!("{environment}: {e}"));
        }
        // JYT_ENV unset means local.
        load_from::<WithSecrets>("demo-svc", WITH_SECRETS, &env(&[])).unwrap();
        // JYT_ENV from the variables is what counts when no name is given.
        let err = load_from::<WithSecrets>("demo-svc", WITH_SECRETS, &env(&[("JYT_ENV", "staging")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("(JYT_ENV=staging)"), "{err}");
    }

    #[test]
    fn committed_toml_deserialises() {
        #[derive(Deserialize)]
        struct Creds {
            operator: Operator,
        }
        #[derive(Deserialize)]
        struct Operator {
            token: String,
        }
        let c: Creds = from_toml("x", "[operator]\ntoken = \"t\"\n").unwrap();
        assert_eq!(c.operator.token, "t");
        assert!(from_toml::<Creds>("x", "[operator]\n").is_err());
    }

    #[test]
    fn a_missing_key_is_refused_naming_the_key() {
        let err = load_from::<Demo>("demo-svc", "[http]\nhost = \"x\"\nport = 1\n", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis"), "{err}");
    }

    #[test]
    fn an_internal_key_derived_from_the_committed_demo_master_is_refused() {
        let master = committed::values()
            .iter()
            .find(|v| v.starts_with("demo-internal-master-"))
            .expect("the demo master is committed");
        let audience = "slot-inventory:pumch";
        let derived = InternalAuthSettings {
            secret: SecretString::from(jyt_signing::internal::derive_key(master.as_bytes(), audience)),
            master_secret: SecretString::from(String::new()),
            max_lifetime_seconds: 300,
        };
        assert!(derived.validate("internal_auth").is_ok());
        let err = derived
            .refuse_demo_derived("internal_auth", audience)
            .unwrap_err();
        assert_eq!(err.key, "internal_auth.secret");
        let own = InternalAuthSettings {
            secret: SecretString::from("0123456789abcdef".repeat(4)),
            ..derived
        };
        assert!(own.refuse_demo_derived("internal_auth", audience).is_ok());
    }
}
