//! [`Application::build`] wires settings into a running server: keys,
//! pool and migrations, Redis, the outbox relay, the booking-event consumer
//! (no-shows, prepaid-card refunds), then the HTTP listener, bound first so
//! that port 0 works in tests and the real port can be read back.

use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use jyt_cache::Keyspace;
use jyt_events::OutboxRelay;
use jyt_web::extract::BodyLimit;
use jyt_web::ops::{record_http_metrics, request_tracing};
use jyt_web::server::Listeners;
use jyt_web::{Metrics, Readiness};
use tokio::task::JoinHandle;

use crate::consumer::BookingEventConsumer;
use crate::crypto::{BlindIndex, Keyring};
use crate::operator::Operators;
use crate::routes;
use crate::settings::{SERVICE, Settings, decode_key};
use crate::state::{AppState, EcardSecret};

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub struct Application {
    port: u16,
    /// `/metrics` apart from the API (`http.ops_port`), when set.
    ops_port: Option<u16>,
    server: Server,
    background: Vec<JoinHandle<()>>,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Key material first: a bad key should stop the start before any I/O.
        let keyring =
            Keyring::from_settings(&settings.crypto).context("loading the personal-data keyring")?;
        let blind_index =
            BlindIndex::new(&settings.crypto.blind_index_key).context("loading the blind-index key")?;
        let ecard_secret = decode_key("ecard.secret", &settings.ecard.secret, 32)
            .map_err(|i| anyhow::anyhow!("{}: {}", i.key, i.reason))?;
        let operators = Operators::from_settings(&settings.operators);

        let pool = jyt_db::build_pool(&settings.postgres).context("building the PostgreSQL pool")?;
        jyt_db::migrate(&pool, SERVICE, embedded::migrations::runner())
            .await
            .context("running card-issuing migrations")?;
        let redis = jyt_cache::connect(&settings.redis)
            .await
            .context("connecting to Redis")?;
        let consumer_redis = jyt_cache::connect(&settings.redis)
            .await
            .context("connecting to Redis for the no-show consumer")?;

        let metrics = Metrics::new(SERVICE)?;
        let keyspace = Keyspace::new(settings.redis.key_prefix.clone());
        let relay = OutboxRelay::new(
            pool.clone(),
            redis.clone(),
            keyspace.plain(&settings.events.stream),
        );
        let state = AppState {
            settings: Arc::new(settings.clone()),
            pool: pool.clone(),
            keyring: Arc::new(keyring),
            blind_index: Arc::new(blind_index),
            ecard_secret: Arc::new(EcardSecret(ecard_secret)),
            operators: Arc::new(operators),
            relay: relay.clone(),
            system_accounts: Arc::default(),
        };
        let consumer = BookingEventConsumer {
            state: state.clone(),
            redis: consumer_redis,
            stream: keyspace.plain(&settings.standing.source_stream),
        };

        let readiness = Readiness::new()
            .with_check("postgres", {
                let pool = pool.clone();
                move || {
                    let pool = pool.clone();
                    Box::pin(async move { jyt_db::ping(&pool).await.map_err(|e| e.to_string()) })
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
        let body_limit = BodyLimit(settings.http.max_body_bytes);
        let app_state = web::Data::new(state.clone());
        let metrics = web::Data::new(metrics);
        let readiness = web::Data::new(readiness);
        let audience = jyt_signing::internal::CARD_ISSUING;
        let internal = jyt_web::internal::verifier(
            &settings.internal_auth.key(audience),
            audience,
            settings.internal_auth.max_lifetime_seconds,
        );
        let server = listeners.serve(settings.http.workers, move || {
            App::new()
                // Inside metrics and tracing, so refused calls are counted and logged.
                .wrap(from_fn(jyt_web::internal::require_internal_token))
                .wrap(from_fn(jyt_web::ops::separate_ops_port))
                .wrap(from_fn(record_http_metrics))
                .wrap(request_tracing())
                .app_data(app_state.clone())
                .app_data(metrics.clone())
                .app_data(readiness.clone())
                .app_data(internal.clone())
                .app_data(body_limit)
                .app_data(ops_port)
                .configure(jyt_web::ops::configure)
                .configure(routes::configure)
                .default_service(web::to(jyt_web::problem::not_found))
        })?;
        let background = vec![
            tokio::spawn(relay.run(std::future::pending())),
            tokio::spawn(consumer.run(std::future::pending())),
        ];
        tracing::info!(service = SERVICE, port, "listening");
        Ok(Self {
            port,
            ops_port: ops_port.0,
            server,
            background,
            state,
        })
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

    /// Stops the server (and with it the relay and the consumer) from
    /// outside: a caller that must not leave a second replica running.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for task in self.background {
            task.abort();
        }
        result
    }
}
