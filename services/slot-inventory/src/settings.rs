//! Typed settings; see `config/defaults.toml` for every key and its default,
//! and `jyt-settings` for the precedence of sources.

use jyt_domain::HospitalId;
use jyt_settings::{
    HttpSettings, Invalid, PostgresSettings, RedisSettings, SettingsError, Sources, TelemetrySettings,
    Validate,
};
use serde::Deserialize;

use crate::policy::Policy;

pub const SERVICE: &str = "slot-inventory";
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub hospital: HospitalSettings,
    pub http: HttpSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub booking: BookingSettings,
    pub events: EventSettings,
    pub policy: Policy,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HospitalSettings {
    /// The hospital this instance serves; every slot and booking id it hands
    /// out starts with it.
    pub id: HospitalId,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BookingSettings {
    pub idempotency_ttl_seconds: u64,
    /// What decides who gets a seat: `redis` (the Lua hold, the platform's
    /// design) or `postgres` (row locks only: the baseline the load test
    /// compares against, as a team without Redis would build it).
    pub lock: LockKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Redis,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    /// Stream key (under the Redis key prefix) the outbox is relayed to.
    pub stream: String,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.http.validate("http")?;
        self.postgres.validate("postgres")?;
        self.redis.validate("redis")?;
        if self.hospital.name.trim().is_empty() {
            return Err(Invalid::new("hospital.name", "must not be empty"));
        }
        if !(60..=30 * 86400).contains(&self.booking.idempotency_ttl_seconds) {
            return Err(Invalid::new(
                "booking.idempotency_ttl_seconds",
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        self.policy.validate("policy")?;
        if self.events.stream.is_empty() || self.events.stream.contains(['{', '}']) {
            return Err(Invalid::new(
                "events.stream",
                "must be non-empty and without braces",
            ));
        }
        Ok(())
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
    fn the_hospital_comes_from_the_environment() {
        let s = load(&[("JYT_SLOT_INVENTORY__HOSPITAL__ID", "pumch")]).unwrap();
        assert_eq!(s.hospital.id.as_str(), "pumch");
    }

    #[test]
    fn an_invalid_hospital_id_is_refused_naming_the_key() {
        let err = load(&[("JYT_SLOT_INVENTORY__HOSPITAL__ID", "Peking Union")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hospital.id"), "{err}");
    }

    #[test]
    fn a_database_url_of_another_kind_is_refused_naming_the_key() {
        let err = load(&[("JYT_SLOT_INVENTORY__POSTGRES__URL", "mysql://db/slots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`postgres.url`"), "{err}");
    }
}
