//! Thin binary: load settings, install telemetry, run.
//! `channel-accounting hash-password` reads a password on stdin and prints
//! its Argon2 PHC string, for `operators.accounts.<login>.password_hash`.

use std::io::{BufRead, Write};

use anyhow::Context;
use channel_accounting::{Application, Settings};

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
    if std::env::args().nth(1).as_deref() == Some("hash-password") {
        let mut password = String::new();
        std::io::stdin().lock().read_line(&mut password)?;
        let hash = channel_accounting::auth::hash_password(password.trim_end_matches(['\r', '\n']))?;
        writeln!(std::io::stdout(), "{hash}")?;
        return Ok(());
    }
    let settings = Settings::load().context("loading channel-accounting settings")?;
    let _telemetry = jyt_telemetry::init(channel_accounting::settings::SERVICE, &settings.telemetry)?;
    Application::build(settings).await?.run_until_stopped().await?;
    Ok(())
}
