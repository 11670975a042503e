//! Typed settings; see `config/defaults.toml` for every key and its default.

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
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerSettings {
    pub streams: Vec<String>,
    pub group: String,
    pub name: String,
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

    #[test]
    fn an_empty_stream_list_is_refused_naming_the_key() {
        let env = [(
            "JYT_CHANNEL_ACCOUNTING__CONSUMER__GROUP".to_owned(),
            " ".to_owned(),
        )];
        let err = Settings::load_from(&Sources::from_map(env.into_iter().collect()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`consumer.group`"), "{err}");
    }
}
