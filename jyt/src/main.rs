//! `jyt`: the platform's command.
//!
//! - `jyt up`: the whole demo city in one process, on real PostgreSQL and
//!   Redis (the configured ones, or private ones it starts), seeded and
//!   ready to book; Ctrl-C stops everything it started.
//! - `jyt rebuild-cache --hospital <id>`: rebuild one hospital's Redis slot
//!   state from PostgreSQL (after a Redis loss, or to be sure).

mod city;
mod infra;
mod settings;

use jyt_domain::time::Clock;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use jyt_settings::Sources;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::settings::CitySettings;

#[derive(Parser)]
#[command(
    name = "jyt",
    about = "Regional appointment platform: run and operate the city"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start PostgreSQL and Redis if needed, migrate, seed a demo city and
    /// run every service until Ctrl-C.
    Up,
    /// Rebuild one hospital's Redis slot state from PostgreSQL.
    #[command(alias = "rebuild")]
    RebuildCache {
        /// The hospital id, as in the city settings (e.g. `pumch`).
        #[arg(long)]
        hospital: String,
    },
}

/// mimalloc instead of glibc's malloc: allocation and free were about a
/// sixth of the CPU in the surge profile (many small, short-lived buffers
/// per request, freed on another thread than they were made on).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = CitySettings::load().context("loading jyt settings (JYT_CITY__...)")?;
    let _telemetry = jyt_telemetry::init("jyt", &settings.telemetry)?;
    match cli.command {
        Command::Up => up(settings).await,
        Command::RebuildCache { hospital } => rebuild_cache(settings, &hospital).await,
    }
}

async fn up(settings: CitySettings) -> anyhow::Result<()> {
    // Listened for before anything starts: each actix server stops itself
    // on SIGINT and SIGTERM as soon as it runs, so a signal that came while
    // the later services were still starting would otherwise be missed here
    // and leave `jyt up` waiting after its servers had stopped.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let project_dir = std::env::current_dir()?;
    let (endpoints, private) = tokio::select! {
        ensured = infra::ensure(&settings, &project_dir) => ensured?,
        () = stop_asked(&mut interrupt, &mut terminate) => return Ok(()),
    };
    let started = tokio::select! {
        started = city::start(&settings, &endpoints) => started,
        () = stop_asked(&mut interrupt, &mut terminate) => {
            tracing::info!("stopped while starting");
            private.stop().await;
            return Ok(());
        }
    };
    let city::Started {
        running,
        tasks,
        example_slot: example,
    } = match started {
        Ok(r) => r,
        Err(e) => {
            private.stop().await;
            return Err(e);
        }
    };

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nThe demo city is up (PostgreSQL {}, Redis {}):",
        endpoints.postgres_admin_url, endpoints.redis_url
    )?;
    for r in &running {
        writeln!(out, "  {:<28} {}", r.name, r.url)?;
    }
    if let Some(slot) = example {
        writeln!(out, "\nA slot to book (tomorrow, first segment): {slot}")?;
    }
    writeln!(out, "\nCtrl-C (or SIGTERM) stops every service.")?;
    drop(out);

    // Each actix server stops itself gracefully on SIGINT and SIGTERM; wait
    // for either. Waiting for Ctrl-C alone left `jyt up` running forever
    // after a SIGTERM (`kill`, systemd, a container's stop) had stopped
    // every server, and a private PostgreSQL was never stopped.
    stop_asked(&mut interrupt, &mut terminate).await;
    tracing::info!("stopping");
    for r in tasks {
        match tokio::time::timeout(Duration::from_secs(30), r.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(service = %r.name, error = %e, "stopped with an error"),
            Ok(Err(e)) => tracing::warn!(service = %r.name, error = %e, "task failed"),
            Err(_) => tracing::warn!(service = %r.name, "did not stop within 30 s"),
        }
    }
    private.stop().await;
    Ok(())
}

/// Until SIGINT (Ctrl-C) or SIGTERM arrives.
async fn stop_asked(interrupt: &mut Signal, terminate: &mut Signal) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

async fn rebuild_cache(settings: CitySettings, hospital: &str) -> anyhow::Result<()> {
    let known = settings.hospitals.iter().any(|h| h.id.as_str() == hospital);
    if !known {
        anyhow::bail!("hospital `{hospital}` is not in the city settings");
    }
    let database = format!("jyt_slot_{hospital}");
    let url = jyt_db::url_with_database(&settings.postgres.admin_url, &database);
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let p = "JYT_SLOT_INVENTORY__";
    env.extend([
        (format!("{p}HOSPITAL__ID"), hospital.to_owned()),
        (format!("{p}POSTGRES__URL"), url),
        (format!("{p}REDIS__URLS"), settings.redis.url.clone()),
        (format!("{p}REDIS__KEY_PREFIX"), settings.redis.key_prefix.clone()),
    ]);
    let s = slot_inventory::Settings::load_from(&Sources {
        env: Some(env),
        ..Sources::default()
    })?;
    let state = slot_inventory::startup::connect(&s, &prometheus::Registry::new(), Clock::System).await?;
    let n = slot_inventory::booking::cache::rebuild(&state).await?;
    writeln!(
        std::io::stdout(),
        "rebuilt {n} segments of {hospital} from PostgreSQL"
    )?;
    Ok(())
}
