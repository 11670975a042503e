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

    let settings: T = Config::builder()
        .add_source(File::from_str(defaults, FileFormat::Toml))
        .add_source(File::from(config_dir.join(format!("{environment_name}.toml"))).required(false))
        .add_source(environment)
        .build()
        .map_err(load_err)?
        .try_deserialize()
        .map_err(load_err)?;
    settings.validate().map_err(|i| SettingsError::Invalid {
        service: service.to_owned(),
        key: i.key,
        reason: i.reason,
    })?;
    Ok(settings)
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
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

impl HttpSettings {
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        if self.host.trim().is_empty() {
            return Err(Invalid::new(format!("{prefix}.host"), "must not be empty"));
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
    fn a_missing_key_is_refused_naming_the_key() {
        let err = load_from::<Demo>("demo-svc", "[http]\nhost = \"x\"\nport = 1\n", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis"), "{err}");
    }
}
