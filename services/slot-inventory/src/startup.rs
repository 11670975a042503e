//! [`Application::build`] wires settings into a running server: pool and
//! migrations, Redis, the outbox relay, then the HTTP listener, bound first
//! so that port 0 works in tests and the real port can be read back.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use jyt_cache::Keyspace;
use jyt_events::OutboxRelay;
use jyt_web::extract::BodyLimit;
use jyt_web::ops::{OpsPort, record_http_metrics, request_tracing};
use jyt_web::server::Listeners;
use jyt_web::{Metrics, Readiness};
use tokio::task::JoinHandle;

use crate::booking::hold::{HoldScripts, HospitalKeys};
use crate::routes;
use crate::schedule;
use crate::settings::{LockKind, SERVICE, Settings};
use crate::state::{AppState, BookingMetrics};
use jyt_domain::time::Clock;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Everything a handler needs, connected and migrated, without the HTTP
/// server: `Application::build` serves it, `jyt rebuild-cache` uses it alone.
pub async fn connect(
    settings: &Settings,
    registry: &prometheus::Registry,
    clock: Clock,
) -> anyhow::Result<AppState> {
    let pool = jyt_db::build_pool(&settings.postgres).context("building the PostgreSQL pool")?;
    jyt_db::migrate(&pool, SERVICE, embedded::migrations::runner())
        .await
        .context("running slot-inventory migrations")?;
    let redis = jyt_cache::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    let keyspace = Keyspace::new(settings.redis.key_prefix.clone());
    let relay = OutboxRelay::new(
        pool.clone(),
        redis.clone(),
        keyspace.plain(&settings.events.stream),
    );
    let hospital = settings.hospital.id.clone();
    let stored = crate::booking_policy::ensure_stored(&pool.get().await?, &settings.policy, clock.now())
        .await
        .context("reading the stored booking policy")?;
    let concurrent_writes = settings
        .booking
        .concurrent_writes
        .min(settings.postgres.pool_max_size);
    let concurrent_status_writes = settings
        .booking
        .concurrent_status_writes
        .min(settings.postgres.pool_max_size);
    let state = AppState {
        policy: crate::booking_policy::CurrentPolicy::new(stored.version, stored.policy),
        keys: HospitalKeys::new(keyspace, &hospital),
        metrics: BookingMetrics::register(registry, &hospital)?,
        hospital,
        settings: Arc::new(settings.clone()),
        pool,
        redis,
        scripts: HoldScripts::default(),
        relay,
        loads: Default::default(),
        clock,
        segments: Default::default(),
        cache: Default::default(),
        tally: Default::default(),
        writer: crate::booking::writer::BookingWriter::new(concurrent_writes),
        payments: crate::booking::writer::PaymentWriter::new(concurrent_status_writes),
        check_ins: crate::booking::writer::CheckInWriter::new(concurrent_status_writes),
        waitlist_passes: Default::default(),
    };
    schedule::queries::apply_release_policy(&state.pool.get().await?, &state.policy.get(), state.clock.now())
        .await
        .context("applying the release policy to unreleased schedules")?;
    state
        .scripts
        .preload(&state.redis)
        .await
        .context("loading Lua scripts into Redis")?;
    Ok(state)
}

/// A hospital connected, migrated, its listeners bound and its background
/// tasks (outbox relay, sweepers) running, but not yet served: serve it
/// alone ([`Application`]) or with the other hospitals of the process on
/// one shared server ([`serve_together`]).
pub struct Hospital {
    port: u16,
    ops_port: Option<u16>,
    workers: usize,
    listeners: Listeners,
    parts: AppParts,
    background: Vec<JoinHandle<()>>,
    state: AppState,
}

/// What a hospital's app is built from, once per worker.
#[derive(Clone)]
struct AppParts {
    state: web::Data<AppState>,
    metrics: web::Data<Metrics>,
    readiness: web::Data<Readiness>,
    internal: web::Data<jyt_signing::internal::Verifier>,
    body_limit: BodyLimit,
    ops_port: OpsPort,
    lock: LockKind,
}

/// The hospital's app: its routes, middleware and state.
fn app(
    parts: AppParts,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let lock = parts.lock;
    App::new()
        // Inside metrics and tracing, so refused calls are counted and logged.
        .wrap(from_fn(jyt_web::internal::require_internal_token))
        .wrap(from_fn(jyt_web::ops::separate_ops_port))
        .wrap(from_fn(record_http_metrics))
        .wrap(request_tracing())
        .app_data(parts.state)
        .app_data(parts.metrics)
        .app_data(parts.readiness)
        .app_data(parts.internal)
        .app_data(parts.body_limit)
        .app_data(parts.ops_port)
        .configure(jyt_web::ops::configure)
        .configure(move |cfg| routes::configure(cfg, lock))
        .default_service(web::to(jyt_web::problem::not_found))
}

impl Hospital {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::System).await
    }

    /// As [`Hospital::build`], with time from `clock` (tests).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let metrics = Metrics::new(SERVICE)?;
        let state = connect(&settings, &metrics.registry, clock).await?;
        // Before the sweepers take connections: it holds the ones it warms at once.
        if let Err(e) = crate::booking::writer::warm_connections(&state).await {
            tracing::warn!(error = %e, "could not warm the PostgreSQL connections; the first bookings will");
        }
        let (pool, redis, relay) = (state.pool.clone(), state.redis.clone(), state.relay.clone());
        // Redis must mirror PostgreSQL before bookings are taken: rebuilt
        // in full if it lost our state, else topped up. Readiness waits.
        let preparing = state.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::booking::cache::ensure(&preparing).await {
                tracing::warn!(error = %e, "could not prepare the slot cache; retrying in the sweeper");
            }
        });
        let sweepers = tokio::spawn(crate::booking::lifecycle::run_sweepers(state.clone()));

        let readiness = Readiness::new()
            .with_check("postgres", {
                let pool = pool.clone();
                move || {
                    let pool = pool.clone();
                    Box::pin(async move { jyt_db::ping(&pool).await.map_err(|e| e.to_string()) })
                }
            })
            .with_check("slot-cache", {
                let cache = state.cache.clone();
                move || {
                    let ready = cache.is_ready();
                    Box::pin(async move {
                        if ready {
                            Ok(())
                        } else {
                            Err("Redis is being rebuilt from PostgreSQL".to_owned())
                        }
                    })
                }
            })
            .with_check("redis", {
                let redis = redis.clone();
                move || {
                    let redis = redis.clone();
                    Box::pin(async move { jyt_cache::ping(&redis).await.map_err(|e| e.to_string()) })
                }
            });

        let listeners = Listeners::bind(&settings.http)?;
        let (port, ops_port) = (listeners.port, listeners.ops_port);
        let audience = &jyt_signing::internal::hospital_audience(settings.hospital.id.as_str());
        let parts = AppParts {
            state: web::Data::new(state.clone()),
            metrics: web::Data::new(metrics),
            readiness: web::Data::new(readiness),
            internal: jyt_web::internal::verifier(
                &settings.internal_auth.key(audience),
                audience,
                settings.internal_auth.max_lifetime_seconds,
            ),
            body_limit: BodyLimit(settings.http.max_body_bytes),
            ops_port,
            lock: settings.booking.lock,
        };
        let relay_task = tokio::spawn(relay.run(std::future::pending()));
        tracing::info!(service = SERVICE, hospital = %state.hospital, port, "listening");
        Ok(Self {
            port,
            ops_port: ops_port.0,
            workers: settings.http.workers,
            listeners,
            parts,
            background: vec![relay_task, sweepers],
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port serving `/metrics` apart from the API, if `http.ops_port` is set.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops_port
    }

    /// The state handlers see; tests and `jyt` use it to seed and inspect.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve this hospital alone, with `http.workers` workers.
    pub fn serve(self) -> std::io::Result<Application> {
        let parts = self.parts;
        let server = self.listeners.serve(self.workers, move || app(parts.clone()))?;
        Ok(Application {
            port: self.port,
            ops_port: self.ops_port,
            server: Served {
                server,
                background: Background(self.background),
            },
            state: self.state,
        })
    }
}

/// Serve every hospital of this process on one server: one accept thread
/// and `workers` workers (0: one per core) for all of them, each listener
/// answered by its own hospital's app, instead of an accept loop and a
/// worker pool per hospital (issue 20: 29 hospitals on 2 cores meant 58
/// threads of HTTP serving alone).
pub fn serve_together(workers: usize, hospitals: Vec<Hospital>) -> std::io::Result<Served> {
    let mut background = Vec::new();
    let mut apps = Vec::with_capacity(hospitals.len());
    for h in hospitals {
        background.extend(h.background);
        apps.push((h.listeners, h.parts));
    }
    let server = jyt_web::server::serve_shared(workers, apps, |parts: &AppParts| app(parts.clone()))?;
    Ok(Served {
        server,
        background: Background(background),
    })
}

/// A running server and the background tasks of the hospitals it serves.
pub struct Served {
    server: Server,
    background: Background,
}

/// Background tasks, stopped when dropped: when the server stops, and
/// also when the task running it is aborted (the load test's city).
struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Served {
    /// Until the server stops (SIGINT/SIGTERM, or its handle); then the
    /// hospitals' background tasks are stopped too.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self { server, background } = self;
        let result = server.await;
        drop(background);
        result
    }
}

/// One hospital served alone (the service's own binary, and tests).
pub struct Application {
    port: u16,
    /// `/metrics` apart from the API (`http.ops_port`), when set.
    ops_port: Option<u16>,
    server: Served,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::System).await
    }

    /// As [`Application::build`], with time from `clock` (tests).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        Ok(Hospital::build_with_clock(settings, clock).await?.serve()?)
    }

    /// The port serving `/metrics` apart from the API, if `http.ops_port` is set.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops_port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state handlers see; tests and `jyt` use it to seed and inspect.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.run_until_stopped().await
    }
}
