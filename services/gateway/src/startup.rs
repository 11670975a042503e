//! [`Application::build`]: bind first (port 0 in tests), then serve.

use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use jyt_cache::Keyspace;
use jyt_domain::time::Clock;
use jyt_web::extract::BodyLimit;
use jyt_web::ops::{record_http_metrics, request_tracing};
use jyt_web::server::Listeners;
use jyt_web::{Metrics, Readiness};

use crate::identity::PatientIndex;
use crate::limits::Limits;
use crate::notify::Notifier;
use crate::routes;
use crate::settings::{SERVICE, Settings};
use crate::state::GatewayState;
use crate::summaries::Summaries;
use crate::upstream::Upstreams;

pub struct Application {
    port: u16,
    /// `/metrics` apart from the API (`http.ops_port`), when set.
    ops_port: Option<u16>,
    server: Server,
    /// The notifier's readers and sender; stopped with the server.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::System).await
    }

    /// [`Self::build`] on the hospitals' clock, for the notifier (when a
    /// notice falls due): tests and the load test move a manual one.
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let redis = jyt_cache::connect(&settings.redis)
            .await
            .context("connecting to Redis")?;
        let keys = Keyspace::new(settings.redis.key_prefix.clone());
        let stream_redis = jyt_cache::connect(&settings.redis)
            .await
            .context("connecting to Redis for the event stream")?;
        let card_stream_redis = jyt_cache::connect(&settings.redis)
            .await
            .context("connecting to Redis for card-issuing's event stream")?;
        let upstreams = Upstreams::new(&settings)?;
        let notifier = Notifier::new(
            &settings.notifications,
            settings.channel_apps.clone().into_iter().collect(),
            redis.clone(),
            stream_redis,
            card_stream_redis,
            keys.clone(),
            upstreams.clone(),
        )?
        .on_clock(clock);
        let mut background = notifier.clone().spawn();
        // The sold-out set follows the hospitals' pushes on its own
        // connection (a subscribed connection serves nothing else). On a
        // cluster, any node delivers the channel.
        let metrics = web::Data::new(Metrics::new(SERVICE)?);
        let sold_out = std::sync::Arc::new(crate::soldout::SoldOut::new(&metrics.registry)?);
        let pubsub_url = settings
            .redis
            .urls
            .first()
            .map(|u| secrecy::ExposeSecret::expose_secret(u).to_owned())
            .unwrap_or_default();
        background.push(sold_out.clone().spawn(
            jyt_cache::redis::Client::open(pubsub_url).context("the Redis URL for the seats channel")?,
            jyt_cache::hospital::seats_channel(&keys),
        ));
        let state = web::Data::new(GatewayState {
            notifier,
            fhir: crate::fhir::bulk::CityFeed::new(&settings.fhir),
            summaries: Summaries::new(
                redis.clone(),
                keys.clone(),
                Duration::from_millis(settings.search.max_age_ms),
                settings.hospital_routes().into_iter().map(|(id, _)| id).collect(),
            ),
            apps: settings.channel_apps.clone().into_iter().collect(),
            upstreams,
            patients: PatientIndex::new(
                &settings.card_issuing,
                settings.internal_auth.minter(jyt_signing::internal::CARD_ISSUING),
                Duration::from_millis(settings.upstream.pool_idle_timeout_ms),
                redis.clone(),
                keys.clone(),
            )?,
            surveys: crate::surveys::SurveyDesk::new(
                &settings.channel_accounting,
                settings
                    .internal_auth
                    .minter(jyt_signing::internal::CHANNEL_ACCOUNTING),
                Duration::from_millis(settings.upstream.pool_idle_timeout_ms),
            )?,
            limits: Limits::new(
                &settings.limits,
                &settings.anti_scalping,
                crate::limits::Timeouts {
                    nonce_ttl_seconds: settings.signing.nonce_ttl_seconds,
                    upstream_timeout_ms: settings.upstream.timeout_ms,
                },
                redis.clone(),
                keys.clone(),
            ),
            trusted_proxies: settings.limits.trusted_proxies(),
            sold_out,
            redis: redis.clone(),
            keys,
            settings: settings.clone(),
        });
        // Redis holds nonces: without it no signed request can be checked
        // for replay. A hospital being down is that hospital's problem.
        let readiness = web::Data::new(Readiness::new().with_check("redis", move || {
            let redis = redis.clone();
            Box::pin(async move { jyt_cache::ping(&redis).await.map_err(|e| e.to_string()) })
        }));
        // Idle token buckets are forgotten, so memory follows active keys.
        let shrinking = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                shrinking.limits.shrink();
            }
        });
        let listeners = Listeners::bind(&settings.http)?;
        let (port, ops_port) = (listeners.port, listeners.ops_port);
        let body_limit = BodyLimit(settings.http.max_body_bytes);
        let server = listeners.serve(settings.http.workers, move || {
            // Authentication wraps the signed scopes themselves (see
            // `routes::configure`); the non-canonical path check runs before
            // routing, inside `outcomes` so that a non-canonical FHIR path is
            // refused with an OperationOutcome like every other FHIR answer.
            App::new()
                .wrap(from_fn(crate::auth::canonical_path))
                // Outside the scopes' authentication, so its refusals on
                // FHIR paths become OperationOutcomes too.
                .wrap(from_fn(crate::fhir::outcomes))
                .wrap(from_fn(jyt_web::ops::separate_ops_port))
                .wrap(from_fn(record_http_metrics))
                .wrap(request_tracing())
                .app_data(state.clone())
                .app_data(metrics.clone())
                .app_data(readiness.clone())
                .app_data(body_limit)
                .app_data(ops_port)
                .configure(jyt_web::ops::configure)
                .configure(routes::configure)
                .default_service(web::to(crate::openapi::no_route))
        })?;
        tracing::info!(service = SERVICE, port, "listening");
        Ok(Self {
            port,
            ops_port: ops_port.0,
            server,
            background,
        })
    }

    /// Stops the server (and with it the notifier), as a shutdown signal
    /// would; tests use it to kill a gateway mid-run.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
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
        for task in self.background {
            task.abort();
        }
        result
    }
}
