//! PostgreSQL and Redis for `jyt up`: the ones named in settings when they
//! answer; otherwise private servers started from the binaries on this
//! machine, with their data under the project folder, installing the Debian
//! packages first when they are missing and we are root.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::settings::CitySettings;

/// What `jyt up` started and must stop on the way out.
#[derive(Default)]
pub struct PrivateServers {
    postgres: Option<PrivatePostgres>,
    /// Killed when dropped.
    redis: Option<Child>,
}

struct PrivatePostgres {
    pg_ctl: PathBuf,
    data: PathBuf,
    as_postgres_user: bool,
}

impl PrivateServers {
    pub async fn stop(mut self) {
        if let Some(pg) = self.postgres.take() {
            let mut cmd = pg_command(&pg.pg_ctl, pg.as_postgres_user);
            cmd.arg("-D").arg(&pg.data).args(["-m", "fast", "stop"]);
            match cmd.status().await {
                Ok(s) if s.success() => tracing::info!("private PostgreSQL stopped"),
                Ok(s) => tracing::warn!(status = %s, "pg_ctl stop failed"),
                Err(e) => tracing::warn!(error = %e, "could not run pg_ctl stop"),
            }
        }
        if let Some(mut redis) = self.redis.take() {
            if let Err(e) = redis.kill().await {
                tracing::warn!(error = %e, "could not stop private Redis");
            } else {
                tracing::info!("private Redis stopped");
            }
        }
    }
}

/// Where PostgreSQL and Redis are, after making sure they answer.
pub struct Endpoints {
    pub postgres_admin_url: String,
    pub redis_url: String,
}

pub async fn ensure(
    settings: &CitySettings,
    project_dir: &Path,
) -> anyhow::Result<(Endpoints, PrivateServers)> {
    let mut private = PrivateServers::default();
    let data_dir = project_dir.join(&settings.private.data_dir);

    let postgres_admin_url = if postgres_answers(&settings.postgres.admin_url).await {
        tracing::info!(url = %settings.postgres.admin_url, "using PostgreSQL from settings");
        settings.postgres.admin_url.clone()
    } else {
        tracing::info!(url = %settings.postgres.admin_url, "PostgreSQL not reachable; starting a private one");
        let port = settings.private.postgres_port;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        if !postgres_answers(&url).await {
            private.postgres = Some(start_postgres(&data_dir.join("postgres"), port).await?);
            wait_until(Duration::from_secs(30), "private PostgreSQL", || {
                postgres_answers(&url)
            })
            .await?;
        }
        url
    };

    let redis_url = if redis_answers(&settings.redis.url).await {
        tracing::info!(url = %settings.redis.url, "using Redis from settings");
        settings.redis.url.clone()
    } else {
        tracing::info!(url = %settings.redis.url, "Redis not reachable; starting a private one");
        let port = settings.private.redis_port;
        let url = format!("redis://127.0.0.1:{port}");
        if !redis_answers(&url).await {
            private.redis = Some(start_redis(&data_dir.join("redis"), port).await?);
            wait_until(Duration::from_secs(15), "private Redis", || redis_answers(&url)).await?;
        }
        url
    };
    Ok((
        Endpoints {
            postgres_admin_url,
            redis_url,
        },
        private,
    ))
}

async fn postgres_answers(url: &str) -> bool {
    let attempt = async {
        let (client, conn) = jyt_db::tokio_postgres::connect(url, jyt_db::tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(conn);
        let ok = client.simple_query("SELECT 1").await.is_ok();
        drop(client);
        driver.abort();
        Ok::<bool, jyt_db::tokio_postgres::Error>(ok)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

async fn redis_answers(url: &str) -> bool {
    let attempt = async {
        let client = jyt_cache::redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        jyt_cache::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(_))
    )
}

async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > deadline {
            bail!("{what} did not answer within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn is_root() -> bool {
    match Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

/// A binary from PATH, or from Debian's PostgreSQL folders (not on PATH).
fn find_binary(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(found) = on_path.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    // /usr/lib/postgresql/<version>/bin, newest version first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().next().map(|(_, p)| p)
}

/// Find a binary, installing its Debian package when missing and root.
async fn require_binary(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = find_binary(name) {
        return Ok(p);
    }
    if !is_root().await || find_binary("apt-get").is_none() {
        bail!(
            "`{name}` is not installed; install the Debian package `{package}` (apt-get install -y {package}) and run again"
        );
    }
    tracing::info!(package, "installing with apt-get");
    for args in [vec!["update", "-q"], vec!["install", "-y", "-q", package]] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .await
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    find_binary(name).with_context(|| format!("`{name}` still missing after installing {package}"))
}

/// PostgreSQL refuses to run as root: as root, run its tools as `postgres`.
fn pg_command(binary: &Path, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(binary);
        cmd
    } else {
        Command::new(binary)
    }
}

async fn start_postgres(data: &Path, port: u16) -> anyhow::Result<PrivatePostgres> {
    let initdb = require_binary("initdb", "postgresql").await?;
    let pg_ctl = require_binary("pg_ctl", "postgresql").await?;
    let as_postgres_user = is_root().await;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    if as_postgres_user {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(data)
            .status()
            .await?;
        if !status.success() {
            bail!("could not give {} to the postgres user", data.display());
        }
    }
    if !data.join("PG_VERSION").exists() {
        tracing::info!(dir = %data.display(), "initialising a private PostgreSQL cluster");
        let status = pg_command(&initdb, as_postgres_user)
            .arg("-D")
            .arg(data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .await
            .context("running initdb")?;
        if !status.success() {
            bail!("initdb failed ({status})");
        }
    }
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=300",
        data.display()
    );
    let status = pg_command(&pg_ctl, as_postgres_user)
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(data.join("server.log"))
        .args(["-w", "-o", &options, "start"])
        .stdout(Stdio::null())
        .status()
        .await
        .context("running pg_ctl start")?;
    if !status.success() {
        bail!(
            "pg_ctl start failed ({status}); see {}",
            data.join("server.log").display()
        );
    }
    tracing::info!(port, "private PostgreSQL started");
    Ok(PrivatePostgres {
        pg_ctl,
        data: data.to_owned(),
        as_postgres_user,
    })
}

async fn start_redis(data: &Path, port: u16) -> anyhow::Result<Child> {
    let redis_server = require_binary("redis-server", "redis-server").await?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let child = Command::new(redis_server)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(data)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server")?;
    tracing::info!(port, "private Redis started");
    Ok(child)
}
