//! [`Application::build`]: migrations, one consumer per stream, then the
//! HTTP listener (bound first, so port 0 works in tests).

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use jyt_cache::Keyspace;
use jyt_events::StreamConsumer;
use jyt_web::extract::BodyLimit;
use jyt_web::ops::{record_http_metrics, request_tracing};
use jyt_web::server::Listeners;
use jyt_web::{Metrics, Readiness};
use tokio::task::JoinHandle;

use crate::auth;
use crate::consumer::{self, ConsumerMetrics};
use crate::routes;
use crate::settings::{SERVICE, Settings};

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub struct Application {
    port: u16,
    /// `/metrics` apart from the API (`http.ops_port`), when set.
    ops_port: Option<u16>,
    server: Server,
    consumers: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = jyt_db::build_pool(&settings.postgres).context("building the PostgreSQL pool")?;
        jyt_db::migrate(&pool, SERVICE, embedded::migrations::runner())
            .await
            .context("running channel-accounting migrations")?;
        auth::seed_operators(&pool, &settings.operators)
            .await
            .context("seeding operator accounts")?;
        let redis = jyt_cache::connect(&settings.redis)
            .await
            .context("connecting to Redis")?;
        let metrics = Metrics::new(SERVICE)?;
        let consumer_metrics = ConsumerMetrics::register(&metrics.registry)?;

        let keyspace = Keyspace::new(settings.redis.key_prefix.clone());
        let mut consumers = Vec::new();
        for stream in &settings.consumer.streams {
            // Each consumer blocks on its own connection.
            let conn = jyt_cache::connect(&settings.redis)
                .await
                .context("connecting to Redis")?;
            let mut consumer = StreamConsumer::new(
                conn,
                keyspace.plain(stream),
                settings.consumer.group.clone(),
                settings.consumer_name(),
            );
            consumer.claim_idle_ms = settings.consumer.claim_idle_ms;
            consumers.push(tokio::spawn(consumer::run(
                consumer,
                pool.clone(),
                consumer_metrics.clone(),
            )));
        }

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
        let pool = web::Data::new(pool);
        let metrics = web::Data::new(metrics);
        let readiness = web::Data::new(readiness);
        let fees = web::Data::new(settings.fees.clone());
        let operators = web::Data::new(settings.operators.clone());
        let relay = web::Data::new(routes::operations::RelayHandle(
            crate::relay::Relay::new(&settings.gateway).context("building the gateway relay client")?,
        ));
        let login_throttle = web::Data::new(auth::throttle::LoginThrottle::new(
            redis.clone(),
            keyspace.clone(),
            &settings.operators,
        ));
        // The survey door's token check; without a key it refuses every call.
        let audience = jyt_signing::internal::CHANNEL_ACCOUNTING;
        let internal = settings.surveys_open().then(|| {
            jyt_web::internal::verifier(
                &settings.internal_auth.key(audience),
                audience,
                settings.internal_auth.max_lifetime_seconds,
            )
        });
        let server = listeners.serve(settings.http.workers, move || {
            let mut app = App::new();
            if let Some(internal) = &internal {
                app = app.app_data(internal.clone());
            }
            app.wrap(from_fn(jyt_web::ops::separate_ops_port))
                .wrap(from_fn(record_http_metrics))
                .wrap(request_tracing())
                .app_data(pool.clone())
                .app_data(metrics.clone())
                .app_data(readiness.clone())
                .app_data(fees.clone())
                .app_data(operators.clone())
                .app_data(relay.clone())
                .app_data(login_throttle.clone())
                .app_data(body_limit)
                .app_data(ops_port)
                .configure(jyt_web::ops::configure)
                .configure(routes::configure)
                .default_service(web::to(jyt_web::problem::not_found))
        })?;
        tracing::info!(service = SERVICE, port, "listening");
        Ok(Self {
            port,
            ops_port: ops_port.0,
            server,
            consumers,
        })
    }

    /// The port serving `/metrics` apart from the API, if `http.ops_port` is set.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops_port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for c in self.consumers {
            c.abort();
        }
        result
    }
}
