//! Thin binary: load settings, install telemetry, run.

use anyhow::Context;
use gateway::{Application, Settings};

/// mimalloc instead of glibc's malloc: allocation and free were about a
/// sixth of the CPU in the surge profile (many small, short-lived buffers
/// per request, freed on another thread than they were made on).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One thread for the main runtime: requests run on the actix workers
/// (sized for the cores, `http.workers`); this runtime keeps only the
/// background work (outbox relay, stream readers, sweepers) and the
/// drivers of connections opened there. A multi-threaded runtime here
/// added a thread per core that woke its siblings on every task it
/// received: a fifth of its samples in the peak-day profile were those
/// wake-ups (loadtest/README.md, 2026-12-05).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading gateway settings")?;
    let _telemetry = jyt_telemetry::init(gateway::settings::SERVICE, &settings.telemetry)?;
    Application::build(settings).await?.run_until_stopped().await?;
    Ok(())
}
