//! Thin binary: load settings, install telemetry, run.

use anyhow::Context;
use slot_inventory::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading slot-inventory settings")?;
    let _telemetry = jyt_telemetry::init(slot_inventory::settings::SERVICE, &settings.telemetry)?;
    Application::build(settings).await?.run_until_stopped().await?;
    Ok(())
}
