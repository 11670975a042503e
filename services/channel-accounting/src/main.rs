//! Thin binary: load settings, install telemetry, run.

use anyhow::Context;
use channel_accounting::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading channel-accounting settings")?;
    let _telemetry = jyt_telemetry::init(channel_accounting::settings::SERVICE, &settings.telemetry)?;
    Application::build(settings).await?.run_until_stopped().await?;
    Ok(())
}
