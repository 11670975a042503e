//! Typed settings; see `config/defaults.toml` for every key and its default,
//! and `jyt-settings` for the precedence of sources.

use jyt_domain::HospitalId;
use jyt_settings::{
    HttpSettings, InternalAuthSettings, Invalid, PostgresSettings, RedisSettings, SettingsError, Sources,
    TelemetrySettings, Validate,
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
    /// Who may call: the gateway and jyt's tools, with internal tokens.
    pub internal_auth: InternalAuthSettings,
    pub booking: BookingSettings,
    pub events: EventSettings,
    pub policy: Policy,
    pub fhir: FhirSettings,
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
    /// How many statements of won holds may be in flight at once
    /// (`booking::writer`): each takes a pooled connection, and a surge's
    /// winners queue behind them, many to the next statement. A pool
    /// smaller than this bounds it instead: more would only wait there.
    pub concurrent_writes: usize,
    /// How many statements of payments' confirmations, and how many of
    /// check-ins, may be in flight at once (`booking::writer::Payments`,
    /// `CheckIns`), as `concurrent_writes` for won holds. One, by default:
    /// a hospital sees few of either at a time, and only a single writer
    /// lets them gather into one statement and one commit
    /// (loadtest/README.md, 2026-12-06 12:04).
    pub concurrent_status_writes: usize,
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

/// The hospital's FHIR R4 read model and SMART Scheduling Links feed.
#[derive(Debug, Clone, Deserialize)]
pub struct FhirSettings {
    /// Absolute base of this hospital's FHIR API as the public reaches it
    /// (through the gateway), without a trailing slash; empty: taken from
    /// each request's scheme and Host, which is right only when clients
    /// reach the service directly.
    pub public_base_url: String,
    /// Where a patient books a given slot; `{slot}` becomes the Slot id.
    /// Aggregators link to it (SMART `booking-deep-link`).
    pub booking_link_template: String,
    /// The phone booking line (SMART `booking-phone`): the 114 centre.
    pub booking_phone: String,
    /// The hospital's Location: aggregators show where to go.
    pub address_line: String,
    pub district: String,
    pub city: String,
    pub postal_code: String,
    /// The hospital's own switchboard (Location.telecom).
    pub phone: String,
}

impl FhirSettings {
    fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        let key = |k: &str| format!("{prefix}.{k}");
        let http_url = |v: &str| {
            (v.starts_with("https://") || v.starts_with("http://"))
                && !v.ends_with('/')
                && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if !self.public_base_url.is_empty() && !http_url(&self.public_base_url) {
            return Err(Invalid::new(
                key("public_base_url"),
                "must be empty or an http(s) URL without a trailing slash",
            ));
        }
        if !http_url(&self.booking_link_template) || !self.booking_link_template.contains("{slot}") {
            return Err(Invalid::new(
                key("booking_link_template"),
                "must be an http(s) URL containing `{slot}`",
            ));
        }
        for (k, v) in [
            ("booking_phone", &self.booking_phone),
            ("address_line", &self.address_line),
            ("district", &self.district),
            ("city", &self.city),
            ("postal_code", &self.postal_code),
            ("phone", &self.phone),
        ] {
            let n = v.trim().chars().count();
            if n == 0 || n > 200 || v.chars().any(char::is_control) {
                return Err(Invalid::new(key(k), "must be 1 to 200 printable characters"));
            }
        }
        Ok(())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.http.validate("http")?;
        self.postgres.validate("postgres")?;
        self.redis.validate("redis")?;
        self.internal_auth.validate("internal_auth")?;
        self.internal_auth.refuse_demo_derived(
            "internal_auth",
            &jyt_signing::internal::hospital_audience(self.hospital.id.as_str()),
        )?;
        if self.hospital.name.trim().is_empty() {
            return Err(Invalid::new("hospital.name", "must not be empty"));
        }
        if !(1..=64).contains(&self.booking.concurrent_writes) {
            return Err(Invalid::new(
                "booking.concurrent_writes",
                "must be between 1 and 64",
            ));
        }
        if !(1..=64).contains(&self.booking.concurrent_status_writes) {
            return Err(Invalid::new(
                "booking.concurrent_status_writes",
                "must be between 1 and 64",
            ));
        }
        if !(60..=30 * 86400).contains(&self.booking.idempotency_ttl_seconds) {
            return Err(Invalid::new(
                "booking.idempotency_ttl_seconds",
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        self.policy.validate("policy")?;
        self.fhir.validate("fhir")?;
        if self.events.stream.is_empty() || self.events.stream.contains(['{', '}']) {
            return Err(Invalid::new(
                "events.stream",
                "must be non-empty and without braces",
            ));
        }
        Ok(())
    }

    /// Outside `JYT_ENV` local, test and demo none of these may be a value
    /// committed to the repository (`jyt_settings::committed`). Keys named
    /// like a secret are checked by their name as well.
    fn secrets(&self) -> Vec<(String, &str)> {
        Vec::new()
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

    fn load_in(environment: &str, pairs: &[(&str, String)]) -> Result<Settings, SettingsError> {
        Settings::load_from(&Sources {
            environment_name: Some(environment.to_owned()),
            ..Sources::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
        })
    }

    #[test]
    fn in_production_the_committed_demo_secrets_are_refused_naming_the_key() {
        let err = load_in("prod", &[]).unwrap_err().to_string();
        assert!(
            err.contains(
                "`internal_auth.master_secret` equals a value committed in the repository; \
                 set a secret of your own (JYT_ENV=prod)"
            ),
            "{err}"
        );
        for environment in ["local", "test", "demo"] {
            load_in(environment, &[]).unwrap();
        }
    }

    #[test]
    fn in_production_secrets_of_ones_own_are_accepted() {
        let s = load_in(
            "prod",
            &[
                ("JYT_SLOT_INVENTORY__INTERNAL_AUTH__SECRET", "ab".repeat(32)),
                ("JYT_SLOT_INVENTORY__INTERNAL_AUTH__MASTER_SECRET", String::new()),
            ],
        )
        .unwrap();
        assert_eq!(s.internal_auth.key("h"), "ab".repeat(32));
    }

    #[test]
    fn the_hospital_comes_from_the_environment() {
        let s = load(&[("JYT_SLOT_INVENTORY__HOSPITAL__ID", "pumch")]).unwrap();
        assert_eq!(s.hospital.id.as_str(), "pumch");
    }

    #[test]
    fn writers_outside_1_to_64_are_refused_naming_the_key() {
        for key in ["concurrent_writes", "concurrent_status_writes"] {
            let var = format!("JYT_SLOT_INVENTORY__BOOKING__{}", key.to_uppercase());
            for bad in ["0", "65"] {
                let err = load(&[(var.as_str(), bad)]).unwrap_err().to_string();
                assert!(err.contains(&format!("booking.{key}")), "{key}={bad}: {err}");
            }
            load(&[(var.as_str(), "64")]).unwrap();
        }
        assert_eq!(
            load(&[]).unwrap().booking.concurrent_status_writes,
            1,
            "the default"
        );
    }

    #[test]
    fn an_invalid_hospital_id_is_refused_naming_the_key() {
        let err = load(&[("JYT_SLOT_INVENTORY__HOSPITAL__ID", "Peking Union")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hospital.id"), "{err}");
    }

    #[test]
    fn fhir_urls_are_checked_naming_the_key() {
        let err = load(&[(
            "JYT_SLOT_INVENTORY__FHIR__PUBLIC_BASE_URL",
            "https://fhir.example/",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("fhir.public_base_url"), "{err}");
        let err = load(&[(
            "JYT_SLOT_INVENTORY__FHIR__BOOKING_LINK_TEMPLATE",
            "https://book.example/",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("fhir.booking_link_template"), "{err}");
    }

    #[test]
    fn a_database_url_of_another_kind_is_refused_naming_the_key() {
        let err = load(&[("JYT_SLOT_INVENTORY__POSTGRES__URL", "mysql://db/slots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`postgres.url`"), "{err}");
    }
}
