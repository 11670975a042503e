//! Settings of `jyt` itself (service name `city`, so environment variables
//! are `JYT_CITY__...`); see `config/defaults.toml`.

use jyt_domain::HospitalId;
use jyt_settings::{Invalid, SettingsError, TelemetrySettings, Validate};
use serde::Deserialize;

pub const SERVICE: &str = "city";
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

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
