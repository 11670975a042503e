//! Settings of `jyt` itself (service name `city`, so environment variables
//! are `JYT_CITY__...`); see `config/defaults.toml`.

use std::collections::BTreeMap;

use jyt_domain::HospitalId;
use jyt_settings::{Invalid, SettingsError, TelemetrySettings, Validate};
use serde::Deserialize;

pub const SERVICE: &str = "city";
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");
/// The credentials `jyt up` gives the services. Committed, hence no secret:
/// every service refuses them outside `JYT_ENV` local, test and demo
/// (`jyt_settings::committed` reads the same file).
pub const DEMO_CREDENTIALS: &str = include_str!("../config/demo-credentials.toml");

/// `config/demo-credentials.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct DemoCredentials {
    pub operator: DemoOperator,
    pub console: DemoConsole,
    /// App id (also its channel kind) → the secret it signs with.
    pub channel_app_secrets: BTreeMap<String, String>,
}

/// card-issuing's operator, whose token also opens the gateway's
/// dead-letter endpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct DemoOperator {
    pub id: String,
    pub token: String,
    pub token_sha256: String,
}

/// channel-accounting's console login (its `operators.demo_account`).
#[derive(Debug, Clone, Deserialize)]
pub struct DemoConsole {
    pub login: String,
    pub password: String,
}

impl DemoCredentials {
    pub fn load() -> Result<Self, SettingsError> {
        jyt_settings::from_toml("jyt/config/demo-credentials.toml", DEMO_CREDENTIALS)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CitySettings {
    pub postgres: PostgresTarget,
    pub redis: RedisTarget,
    pub private: PrivateServers,
    pub ports: Ports,
    pub demo: Demo,
    pub telemetry: TelemetrySettings,
    pub hospitals: Vec<Hospital>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PostgresTarget {
    pub admin_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisTarget {
    pub url: String,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PrivateServers {
    pub data_dir: String,
    pub postgres_port: u16,
    pub redis_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ports {
    pub gateway: u16,
    pub card_issuing: u16,
    pub channel_accounting: u16,
    pub slot_inventory_first: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Demo {
    pub seats_per_segment: i32,
    pub days: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hospital {
    pub id: HospitalId,
    pub name: String,
    pub district: String,
    pub level: String,
}

impl Validate for CitySettings {
    fn validate(&self) -> Result<(), Invalid> {
        if !self.postgres.admin_url.starts_with("postgres://") {
            return Err(Invalid::new("postgres.admin_url", "must start with postgres://"));
        }
        if !self.redis.url.starts_with("redis://") {
            return Err(Invalid::new("redis.url", "must start with redis://"));
        }
        if self.hospitals.is_empty() {
            return Err(Invalid::new(
                "hospitals",
                "the demo city needs at least one hospital",
            ));
        }
        if !(1..=1000).contains(&self.demo.seats_per_segment) {
            return Err(Invalid::new(
                "demo.seats_per_segment",
                "must be between 1 and 1000",
            ));
        }
        if !(1..=30).contains(&self.demo.days) {
            return Err(Invalid::new("demo.days", "must be between 1 and 30"));
        }
        let last = usize::from(self.ports.slot_inventory_first) + self.hospitals.len();
        if last > usize::from(u16::MAX) {
            return Err(Invalid::new(
                "ports.slot_inventory_first",
                "leaves no room for every hospital",
            ));
        }
        Ok(())
    }
}

impl CitySettings {
    pub fn load() -> Result<Self, SettingsError> {
        jyt_settings::load(SERVICE, DEFAULTS)
    }

    pub fn slot_inventory_port(&self, index: usize) -> u16 {
        // Validated above to fit.
        self.ports
            .slot_inventory_first
            .saturating_add(u16::try_from(index).unwrap_or(u16::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_credentials_hang_together_and_are_all_committed() {
        let c = DemoCredentials::load().unwrap();
        assert_eq!(
            gateway::notify::operator_token_hash(&c.operator.token),
            c.operator.token_sha256,
            "token_sha256 is the SHA-256 of token"
        );
        assert_eq!(
            (c.console.login.as_str(), c.console.password.as_str()),
            (
                channel_accounting::auth::DEMO_LOGIN,
                channel_accounting::auth::DEMO_PASSWORD
            ),
            "the console login is the one channel-accounting seeds"
        );
        assert!(!c.channel_app_secrets.is_empty());
        for (app, secret) in &c.channel_app_secrets {
            assert!(app.parse::<jyt_domain::Channel>().is_ok(), "{app} is a channel");
            assert!(secret.len() >= 32, "{app}");
        }
        let values = [&c.operator.token, &c.operator.token_sha256, &c.console.password];
        for v in values.into_iter().chain(c.channel_app_secrets.values()) {
            assert!(
                jyt_settings::committed::is_committed(v),
                "{v} is refused in production"
            );
        }
    }
}
