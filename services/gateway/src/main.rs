//! Thin binary: load settings, install telemetry, run.

use anyhow::Context;
use gateway::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading gateway settings")?;
    let _telemetry = jyt_telemetry::init(gateway::settings::SERVICE, &settings.telemetry)?;
    Application::build(settings).await?.run_until_stopped().await?;
    Ok(())
}
