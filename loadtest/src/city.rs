//! A city for one run: card-issuing, N hospitals' slot-inventory on one
//! manual clock, and a gateway in front of them, all on port 0, wired the
//! way `jyt up` does it. Either in this process (card-issuing shared by
//! every city of the run), or each service in a process of its own
//! ([`Placement::Processes`], see [`crate::procs`]) so that each one's
//! resident memory can be read.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Days, Utc};
use jyt_domain::time::Clock;
use jyt_domain::{HospitalId, SlotRef};
use jyt_settings::Sources;
use slot_inventory::AppState;

use crate::procs;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Every channel app of the load test shares this secret.
pub const APP_SECRET: &str = "loadtest-app-secret-0123456789abcdef-0123";
/// The channel apps the gateway knows; the app id is the channel's name.
pub const CHANNELS: [&str; 5] = ["wechat", "kiosk", "phone114", "window", "app"];

/// How slot-inventory decides a booking (`booking.lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lock {
    Redis,
    Postgres,
}

impl Lock {
    pub fn as_str(self) -> &'static str {
        match self {
            Lock::Redis => "redis",
            Lock::Postgres => "postgres",
        }
    }
}

pub fn sources(pairs: Vec<(String, String)>) -> Sources {
    Sources::from_map(pairs.into_iter().collect::<HashMap<_, _>>())
}

/// A running card-issuing.
pub struct Cards {
    pub base_url: String,
    pub state: card_issuing::state::AppState,
    server: actix_web::dev::ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl Cards {
    /// Stop it, its outbox relay and its consumer with it. A city whose
    /// card-issuing runs in a child process must not keep this one
    /// running: both relay the one database's outbox, this one to another
    /// Redis prefix's stream, where the gateway never reads the
    /// `card.refunded` it took (a prepaid refund's notice was lost so).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop(true).await;
        self.task.await??;
        Ok(())
    }
}

/// The patient index lives in one database kept between runs
/// (`jyt_loadtest_cards`): registering 50,000 people is the slow part of a
/// run, and who they are does not change what is measured.
pub const CARDS_DATABASE: &str = "jyt_loadtest_cards";

/// card-issuing's settings for the load test, as environment variables.
pub async fn cards_env(redis_prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
    let admin = jyt_testkit::pg_admin_url();
    jyt_db::ensure_database(&admin, CARDS_DATABASE).await?;
    let url = jyt_db::url_with_database(&admin, CARDS_DATABASE);
    let p = "JYT_CARD_ISSUING__";
    Ok(vec![
        (format!("{p}HTTP__PORT"), "0".to_owned()),
        (format!("{p}HTTP__WORKERS"), "2".to_owned()),
        (format!("{p}POSTGRES__URL"), url),
        (format!("{p}POSTGRES__POOL_MAX_SIZE"), "4".to_owned()),
        (format!("{p}REDIS__URLS"), jyt_testkit::redis_url()),
        (format!("{p}REDIS__KEY_PREFIX"), redis_prefix.to_owned()),
    ])
}

pub async fn start_cards(redis_prefix: &str) -> anyhow::Result<Cards> {
    let settings = card_issuing::Settings::load_from(&sources(cards_env(redis_prefix).await?))?;
    let app = card_issuing::Application::build(settings)
        .await
        .context("starting card-issuing")?;
    let base_url = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    Ok(Cards {
        base_url,
        state,
        server: app.server_handle(),
        task: tokio::spawn(app.run_until_stopped()),
    })
}

/// One hospital's running slot-inventory.
pub struct Hospital {
    pub id: HospitalId,
    pub base_url: String,
    pub database: String,
    pub state: AppState,
    /// Every segment of the seeded day, with its schedule's doctor code.
    pub segments: Vec<Segment>,
    /// Where the city's districts and hospital levels are, for search.
    pub district: &'static str,
    pub level: &'static str,
    runner: Runner,
}

/// How a service of the city runs.
enum Runner {
    Task(JoinHandle<std::io::Result<()>>),
    Process(Box<procs::Service>),
    /// On the city's one hospitals' server ([`City::stop`] stops it).
    Shared,
}

impl Runner {
    fn stop(&self) {
        match self {
            Runner::Task(t) => t.abort(),
            Runner::Process(p) => p.kill(),
            Runner::Shared => {}
        }
    }
}

/// Where the city's services run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In this process (the surge: no process boundary to measure).
    InProcess,
    /// Each service a child process (`loadtest serve ...`), memory per service.
    Processes,
}

/// Districts and hospital levels the city's hospitals cycle through.
pub const DISTRICTS: [&str; 4] = ["dongcheng", "xicheng", "haidian", "chaoyang"];
pub const LEVELS: [&str; 3] = ["tertiary", "tertiary", "secondary"];

#[derive(Debug, Clone)]
pub struct Segment {
    pub slot: SlotRef,
    /// Expert clinics are the hot ones in a surge.
    pub expert: bool,
    pub schedule: Uuid,
}

pub struct CityConfig {
    pub hospitals: usize,
    pub capacity: i32,
    pub lock: Lock,
    /// `(key, value)` after `JYT_GATEWAY__`, over the honest-traffic defaults.
    pub gateway_extra: Vec<(String, String)>,
    /// `(key, value)` after `JYT_SLOT_INVENTORY__`, for every hospital.
    pub hospital_extra: Vec<(String, String)>,
    pub placement: Placement,
    /// In process: every hospital on one server sized for the cores (as
    /// `jyt up` runs them), or, for comparison, a server each (an accept
    /// thread and one worker per hospital, as before issue 20).
    pub server_per_hospital: bool,
}

impl CityConfig {
    pub fn in_process(hospitals: usize, capacity: i32, lock: Lock) -> Self {
        Self {
            hospitals,
            capacity,
            lock,
            gateway_extra: Vec::new(),
            hospital_extra: Vec::new(),
            placement: Placement::InProcess,
            server_per_hospital: false,
        }
    }
}

pub struct City {
    pub lock: Lock,
    pub gateway_url: String,
    pub hospitals: Vec<Hospital>,
    pub redis_prefix: String,
    pub clock: Clock,
    pub release_at: DateTime<Utc>,
    /// The seeded visit date.
    pub visit_date: chrono::NaiveDate,
    gateway: Runner,
    /// In process: the one server of every hospital.
    hospitals_server: Option<Runner>,
    /// The gateway's settings, for a second replica ([`City::start_search_replica`]).
    gateway_env: Vec<(String, String)>,
    search_gateway: Option<Runner>,
    /// card-issuing of this city (processes only; in process the run's one
    /// is shared).
    cards: Option<Runner>,
}

/// Workers of the in-process hospitals' one server: 0, one per core.
pub const HOSPITAL_WORKERS: usize = 0;

/// PostgreSQL connections per hospital: 29 hospitals and card-issuing must
/// fit the server's 100 connections with room for other clients.
pub const HOSPITAL_POOL_SIZE: usize = 2;

pub async fn start(cfg: &CityConfig, cards: &Cards) -> anyhow::Result<City> {
    let redis_prefix = fresh_redis_prefix();
    let visit_date = jyt_domain::time::today()
        .checked_add_days(Days::new(7))
        .context("date out of range")?;
    // The hospitals' clock stops one minute before the release instant, so
    // patients can open the app early (their identity is resolved and
    // cached, as on a real morning), then jumps to the instant itself.
    let mut clock = Clock::System;
    let mut release_at = Utc::now();
    let mut hospitals = Vec::with_capacity(cfg.hospitals);
    // In process, the hospitals share one server sized for the cores, as
    // in `jyt up` (issue 20), served once all are seeded.
    let mut unserved = Vec::new();
    // As processes, the hospitals share one child process and its one
    // server (the same reason), unless `server_per_hospital` asks for the
    // old way: a process each. Started once every database exists.
    let one_process = cfg.placement == Placement::Processes && !cfg.server_per_hospital;
    let mut in_one_process = Vec::new();
    let mut started = Vec::with_capacity(cfg.hospitals);
    for i in 0..cfg.hospitals {
        let id = format!("h{:02}", i + 1);
        let database = fresh_database(&id).await?;
        let p = "JYT_SLOT_INVENTORY__";
        let env = |pool: usize| {
            let mut env = vec![
                (format!("{p}HOSPITAL__ID"), id.clone()),
                (format!("{p}HOSPITAL__NAME"), format!("Load-test hospital {id}")),
                (format!("{p}HTTP__PORT"), "0".to_owned()),
                (format!("{p}HTTP__WORKERS"), "1".to_owned()),
                (format!("{p}POSTGRES__URL"), database.clone()),
                (format!("{p}POSTGRES__POOL_MAX_SIZE"), pool.to_string()),
                (format!("{p}POSTGRES__WAIT_TIMEOUT_MS"), "10000".to_owned()),
                (format!("{p}REDIS__URLS"), jyt_testkit::redis_url()),
                (format!("{p}REDIS__KEY_PREFIX"), redis_prefix.clone()),
                (format!("{p}BOOKING__LOCK"), cfg.lock.as_str().to_owned()),
                (format!("{p}TELEMETRY__LOG_FILTER"), "error".to_owned()),
            ];
            env.extend(
                cfg.hospital_extra
                    .iter()
                    .map(|(k, v)| (format!("{p}{k}"), v.clone())),
            );
            env
        };
        let settings = slot_inventory::Settings::load_from(&sources(env(HOSPITAL_POOL_SIZE)))?;
        if i == 0 {
            release_at = settings.policy.release_at(visit_date);
            clock = Clock::manual(release_at - chrono::TimeDelta::seconds(60));
        }
        // The checks read a child's hospital through a state of our own:
        // one connection, no server, no sweepers.
        let (service_env, checks_env) = (env(HOSPITAL_POOL_SIZE), env(1));
        match cfg.placement {
            Placement::InProcess => {
                let app = seeded_hospital(settings, clock.clone(), visit_date, cfg.capacity).await?;
                let state = app.state().clone();
                let port = app.port();
                let runner = if cfg.server_per_hospital {
                    Runner::Task(tokio::spawn(app.serve()?.run_until_stopped()))
                } else {
                    unserved.push(app);
                    Runner::Shared
                };
                started.push((i, id.clone(), database, state, port, runner));
            }
            Placement::Processes if one_process => {
                // Migrated and seeded by the child: our state connects after.
                in_one_process.push((i, id, database, service_env, checks_env));
            }
            Placement::Processes => {
                let mut child_env = service_env;
                child_env.extend(procs::hospital_env(clock.now(), visit_date, cfg.capacity));
                let service = procs::Service::spawn(procs::Role::Hospital, &id, child_env).await?;
                let state = checks_state(&id, checks_env, &clock).await?;
                started.push((
                    i,
                    id,
                    database,
                    state,
                    service.port,
                    Runner::Process(Box::new(service)),
                ));
            }
        }
    }

    let hospitals_server = if !in_one_process.is_empty() {
        let settings: Vec<_> = in_one_process
            .iter()
            .map(|(_, _, _, env, _)| env.clone())
            .collect();
        let env = procs::hospitals_env(&settings, clock.now(), visit_date, cfg.capacity)?;
        let service = procs::Service::spawn(procs::Role::Hospitals, "slot-inventory", env).await?;
        anyhow::ensure!(
            service.ports.len() == in_one_process.len(),
            "the hospitals' process named {} ports for {} hospitals",
            service.ports.len(),
            in_one_process.len()
        );
        for ((i, id, database, _, checks_env), port) in in_one_process.into_iter().zip(service.ports.clone())
        {
            let state = checks_state(&id, checks_env, &clock).await?;
            started.push((i, id, database, state, port, Runner::Shared));
        }
        Some(Runner::Process(Box::new(service)))
    } else if !unserved.is_empty() {
        let served = slot_inventory::serve_together(HOSPITAL_WORKERS, unserved)?;
        Some(Runner::Task(tokio::spawn(served.run_until_stopped())))
    } else {
        None
    };
    for (i, id, database, state, port, runner) in started {
        hospitals.push(running_hospital(i, &id, database, state, port, runner, visit_date).await?);
    }

    let (cards_url, cards_runner) = match cfg.placement {
        Placement::InProcess => (cards.base_url.clone(), None),
        Placement::Processes => {
            let service =
                procs::Service::spawn(procs::Role::Cards, "cards", cards_env(&redis_prefix).await?).await?;
            (
                format!("http://127.0.0.1:{}", service.port),
                Some(Runner::Process(Box::new(service))),
            )
        }
    };
    let env = gateway_env(cfg, &redis_prefix, &cards_url, &hospitals);
    let (gateway_url, gateway) = start_gateway(cfg.placement, &env, &clock).await?;
    Ok(City {
        lock: cfg.lock,
        gateway_url,
        hospitals,
        redis_prefix,
        clock,
        release_at,
        visit_date,
        gateway,
        hospitals_server,
        gateway_env: env,
        search_gateway: None,
        cards: cards_runner,
    })
}

/// The gateway, on the hospitals' clock: its notices fall due by it.
async fn start_gateway(
    placement: Placement,
    env: &[(String, String)],
    clock: &Clock,
) -> anyhow::Result<(String, Runner)> {
    Ok(match placement {
        Placement::InProcess => {
            let gateway = gateway::Application::build_with_clock(
                gateway::Settings::load_from(&sources(env.to_vec()))?,
                clock.clone(),
            )
            .await
            .context("starting the gateway")?;
            (
                format!("http://127.0.0.1:{}", gateway.port()),
                Runner::Task(tokio::spawn(gateway.run_until_stopped())),
            )
        }
        Placement::Processes => {
            let mut child_env = env.to_vec();
            child_env.push((procs::CLOCK.to_owned(), clock.now().to_rfc3339()));
            let service = procs::Service::spawn(procs::Role::Gateway, "gateway", child_env).await?;
            (
                format!("http://127.0.0.1:{}", service.port),
                Runner::Process(Box::new(service)),
            )
        }
    })
}

/// A started hospital, with the seeded day's segments read from its database.
async fn running_hospital(
    i: usize,
    id: &str,
    database: String,
    state: AppState,
    port: u16,
    runner: Runner,
    visit_date: chrono::NaiveDate,
) -> anyhow::Result<Hospital> {
    let hospital: HospitalId = id.parse().map_err(|_| anyhow::anyhow!("bad hospital id {id}"))?;
    let client = state.pool.get().await?;
    let segments = client
        .query(
            "SELECT seg.id, sch.clinic_level = 'expert', sch.id
                   FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id
                  WHERE sch.visit_date = $1 ORDER BY sch.external_id, seg.starts_at",
            &[&visit_date],
        )
        .await?
        .iter()
        .map(|r| Segment {
            slot: SlotRef::new(hospital.clone(), r.get(0)),
            expert: r.get(1),
            schedule: r.get(2),
        })
        .collect();
    drop(client);
    Ok(Hospital {
        id: hospital,
        base_url: format!("http://127.0.0.1:{port}"),
        database,
        state,
        segments,
        district: DISTRICTS[i % DISTRICTS.len()],
        level: LEVELS[i % LEVELS.len()],
        runner,
    })
}

/// A hospital on `clock` with its day seeded and its slot cache warm, not
/// yet served: in this process, or in a `loadtest serve` child.
pub async fn seeded_hospital(
    settings: slot_inventory::Settings,
    clock: Clock,
    visit_date: chrono::NaiveDate,
    capacity: i32,
) -> anyhow::Result<slot_inventory::Hospital> {
    let id = settings.hospital.id.clone();
    let hospital = slot_inventory::Hospital::build_with_clock(settings, clock)
        .await
        .with_context(|| format!("starting slot-inventory {id}"))?;
    slot_inventory::seed::seed_demo_day(hospital.state(), visit_date, capacity).await?;
    slot_inventory::booking::cache::warm_cache(hospital.state()).await?;
    Ok(hospital)
}

/// The checks' own state of a hospital in a child process: one
/// connection, no server, no sweepers.
async fn checks_state(id: &str, env: Vec<(String, String)>, clock: &Clock) -> anyhow::Result<AppState> {
    let ours = slot_inventory::Settings::load_from(&sources(env))?;
    slot_inventory::startup::connect(&ours, &prometheus::Registry::new(), clock.clone())
        .await
        .with_context(|| format!("connecting to hospital {id}'s stores"))
}

fn gateway_env(
    cfg: &CityConfig,
    redis_prefix: &str,
    cards_url: &str,
    hospitals: &[Hospital],
) -> Vec<(String, String)> {
    let p = "JYT_GATEWAY__";
    let mut env: Vec<(String, String)> = [
        ("HTTP__PORT", "0"),
        ("HTTP__WORKERS", "2"),
        // Same for both lock kinds: long enough that the baseline's queue
        // on a hot row is measured, not cut off.
        ("UPSTREAM__TIMEOUT_MS", "10000"),
        // One gateway replica carries the whole city's surge here; the
        // bulkhead is sized to the generator's connections.
        ("UPSTREAM__MAX_CONCURRENT", "1100"),
        ("UPSTREAM__POOL_MAX_IDLE_PER_HOST", "256"),
        // The default 500 ms is shorter than the kernel's 1 s SYN
        // retransmission: one SYN dropped by a full listen queue during the
        // surge's connection burst became a 503 (see loadtest/README.md).
        ("UPSTREAM__CONNECT_TIMEOUT_MS", "3000"),
        ("CARD_ISSUING__IDENTITY_CACHE_SECONDS", "900"),
        ("CARD_ISSUING__STANDING_CACHE_SECONDS", "900"),
        ("CARD_ISSUING__TIMEOUT_MS", "10000"),
        ("LIMITS__APP_PER_MINUTE", "10000000"),
        ("LIMITS__APP_BURST", "1000000"),
        ("LIMITS__ADDRESS_PER_MINUTE", "1000000"),
        ("LIMITS__ADDRESS_BURST", "100000"),
        ("LIMITS__PERSON_PER_MINUTE", "600"),
        ("LIMITS__PERSON_BURST", "100"),
        ("ANTI_SCALPING__RELEASE_PERSON_PER_MINUTE", "600"),
        ("ANTI_SCALPING__RELEASE_PERSON_BURST", "100"),
        ("ANTI_SCALPING__MAX_PERSONS_PER_ADDRESS", "1000000"),
        // The gateway's failed upstream calls (warn, with reqwest's error
        // chain) say why a patient got HOSPITAL_UNAVAILABLE.
        ("TELEMETRY__LOG_FILTER", "error,gateway::error=warn"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{p}{k}"), v.to_owned()))
    .collect();
    env.push((format!("{p}REDIS__URLS"), jyt_testkit::redis_url()));
    env.push((format!("{p}REDIS__KEY_PREFIX"), redis_prefix.to_owned()));
    env.push((format!("{p}CARD_ISSUING__BASE_URL"), cards_url.to_owned()));
    for channel in CHANNELS {
        let a = format!("{p}CHANNEL_APPS__{}__", channel.to_ascii_uppercase());
        env.push((format!("{a}CHANNEL"), channel.to_owned()));
        env.push((format!("{a}SECRET"), APP_SECRET.to_owned()));
    }
    for h in hospitals {
        let k = format!("{p}HOSPITALS__{}__", h.id.as_str().to_ascii_uppercase());
        env.push((format!("{k}NAME"), format!("Load-test hospital {}", h.id)));
        env.push((format!("{k}BASE_URL"), h.base_url.clone()));
        env.push((format!("{k}DISTRICT"), h.district.to_owned()));
        env.push((format!("{k}LEVEL"), h.level.to_owned()));
    }
    env.extend(
        cfg.gateway_extra
            .iter()
            .map(|(k, v)| (format!("{p}{k}"), v.clone())),
    );
    env
}

impl City {
    /// Every segment of the city, hospital by hospital.
    pub fn segments(&self) -> Vec<Segment> {
        self.hospitals
            .iter()
            .flat_map(|h| h.segments.iter().cloned())
            .collect()
    }

    pub fn hospital(&self, id: &HospitalId) -> Option<&Hospital> {
        self.hospitals.iter().find(|h| &h.id == id)
    }

    /// The release instant: from now on the seeded day can be booked.
    pub async fn release(&self) -> anyhow::Result<()> {
        self.set_clock(self.release_at).await
    }

    /// Move every hospital's clock, and the gateway's (ours, and each
    /// child process's).
    pub async fn set_clock(&self, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.clock.set(at);
        let servers = self
            .hospitals
            .iter()
            .map(|h| &h.runner)
            .chain(&self.hospitals_server)
            .chain([&self.gateway])
            .chain(&self.search_gateway);
        for runner in servers {
            if let Runner::Process(p) = runner {
                p.set_clock(at).await?;
            }
        }
        Ok(())
    }

    /// Each service's process id (processes only): (service, pid).
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let mut add = |name: &str, r: &Runner| {
            if let Runner::Process(p) = r {
                out.push((name.to_owned(), p.pid));
            }
        };
        add("gateway", &self.gateway);
        if let Some(c) = &self.cards {
            add("card-issuing", c);
        }
        for h in &self.hospitals {
            add(&format!("slot-inventory {}", h.id), &h.runner);
        }
        if let Some(s) = &self.hospitals_server {
            add("slot-inventory (every hospital)", s);
        }
        out
    }

    /// Stop the services and drop the hospitals' databases and Redis keys.
    /// A second gateway replica with `workers` workers, in a process of
    /// its own: the chart's `gateway-search` Deployment (same image, same
    /// settings), to which the ingress sends `/v1/availability`, so
    /// searches never queue behind the booking surge on the booking
    /// replica's workers, nor its Redis connection behind this process's
    /// generator. Its address.
    pub async fn start_search_replica(
        &mut self,
        workers: usize,
        realtime_priority: Option<u8>,
    ) -> anyhow::Result<String> {
        let mut env = self.gateway_env.clone();
        env.push(("JYT_GATEWAY__HTTP__WORKERS".to_owned(), workers.to_string()));
        env.push((procs::CLOCK.to_owned(), self.clock.now().to_rfc3339()));
        let replica = procs::Service::spawn_with_priority(
            procs::Role::Gateway,
            "gateway-search",
            env,
            realtime_priority,
        )
        .await?;
        let url = format!("http://127.0.0.1:{}", replica.port);
        self.search_gateway = Some(Runner::Process(Box::new(replica)));
        Ok(url)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.gateway.stop();
        if let Some(s) = &self.search_gateway {
            s.stop();
        }
        if let Some(c) = &self.cards {
            c.stop();
        }
        if let Some(s) = &self.hospitals_server {
            s.stop();
        }
        for h in &self.hospitals {
            h.runner.stop();
            h.state.pool.close();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let admin = jyt_testkit::pg_admin_url();
        let (client, conn) = jyt_db::tokio_postgres::connect(&admin, jyt_db::tokio_postgres::NoTls).await?;
        let conn_task = tokio::spawn(conn);
        for h in &self.hospitals {
            let Some(name) = h.database.rsplit('/').next() else {
                continue;
            };
            let name = name.split('?').next().unwrap_or(name);
            if let Err(e) = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
            {
                tracing::warn!(error = %e, database = name, "could not drop a load-test database");
            }
        }
        drop(client);
        conn_task.abort();
        delete_prefix(&self.redis_prefix).await
    }
}

/// A Redis key prefix of our own: the test command deletes `jyt-test:*`
/// when it starts, which would wipe a city in the middle of a run.
pub fn fresh_redis_prefix() -> String {
    format!("jyt-loadtest:{}", Uuid::new_v4().simple())
}

/// A new database of our own (`jyt_loadtest_…`: the test command drops
/// `jyt_test_*` databases when it starts), retried while the server is short
/// of connections. Dropped when the run ends.
pub async fn fresh_database(purpose: &str) -> anyhow::Result<String> {
    let admin = jyt_testkit::pg_admin_url();
    let name = format!(
        "jyt_loadtest_{purpose}_{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let mut tries = 0;
    loop {
        match jyt_db::ensure_database(&admin, &name).await {
            Ok(_) => return Ok(jyt_db::url_with_database(&admin, &name)),
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::warn!(error = %e, database = %name, "creating a database failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
        }
    }
}

/// A plain connection to the load test's Redis, for housekeeping outside
/// the services.
pub async fn redis_connection() -> anyhow::Result<jyt_cache::redis::aio::MultiplexedConnection> {
    let client = jyt_cache::redis::Client::open(jyt_testkit::redis_url())?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// Delete every Redis key under `prefix`.
pub async fn delete_prefix(prefix: &str) -> anyhow::Result<()> {
    let mut conn = redis_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = jyt_cache::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            jyt_cache::redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A booking id as the gateway answers it (`<hospital>-<uuid>`) → the uuid.
pub fn booking_uuid(booking_ref: &str) -> Option<Uuid> {
    booking_ref
        .len()
        .checked_sub(36)
        .and_then(|i| booking_ref.get(i..))
        .and_then(|s| s.parse().ok())
}
