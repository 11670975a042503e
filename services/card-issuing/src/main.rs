//! Thin binary: load settings, install telemetry, run.

use anyhow::Context;
use card_issuing::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading card-issuing settings")?;
    let _telemetry = jyt_telemetry::init(card_issuing::settings::SERVICE, &settings.telemetry)?;
    Application::build(settings).await?.run_until_stopped().await?;
    Ok(())
}
