//! Thin binary: load settings, install telemetry, run.

use anyhow::Context;
use card_issuing::{Application, Settings};

/// mimalloc instead of glibc's malloc: allocation and free were about a
/// sixth of the CPU in the surge profile (many small, short-lived buffers
/// per request, freed on another thread than they were made on).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading card-issuing settings")?;
    let _telemetry = jyt_telemetry::init(card_issuing::settings::SERVICE, &settings.telemetry)?;
    Application::build(settings).await?.run_until_stopped().await?;
    Ok(())
}
