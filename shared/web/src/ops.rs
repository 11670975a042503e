//! Operations endpoints and middleware every service mounts:
//! `/healthz` (the process answers), `/readyz` (its dependencies answer:
//! PostgreSQL, Redis, ...) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use futures::future::BoxFuture;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::problem::Problem;

/// A service's Prometheus registry and the HTTP metrics every service has.
/// Each service owns a registry (labelled with its name) rather than using a
/// process global, because `jyt up` and the tests run several in one process.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
}

impl Metrics {
    pub fn new(service: &str) -> Result<Self, prometheus::Error> {
        let labels = std::iter::once(("service".to_owned(), service.to_owned())).collect();
        let registry = Registry::new_custom(Some("jyt".to_owned()), Some(labels))?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["method", "route"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
        })
    }

    /// Render every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "could not encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Middleware (use with `actix_web::middleware::from_fn`) that counts and
/// times every request by its route pattern, never by raw path, so ids in
/// paths cannot blow up label cardinality.
///
/// The route is read from the answer, after routing: actix then names the
/// matched resource directly, where asking before the call matched the
/// path against the app's routes by regex once more (the largest symbol of
/// the load test's profile, issue 20). An answer no resource matched
/// (a middleware's refusal before its resource, the default service) is
/// matched then, as before. An error returned instead of an answer has no
/// request left to name its route: `refused`. The services' middlewares
/// answer their refusals as responses so that they keep their route.
pub async fn record_http_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let method = req.method().clone();
    let res = next.call(req).await;
    if let Some(m) = metrics {
        let (route, status) = match &res {
            Ok(r) => (
                r.request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_owned()),
                r.status(),
            ),
            Err(e) => ("refused".to_owned(), e.as_response_error().status_code()),
        };
        m.http_requests
            .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
            .inc();
        m.http_duration
            .with_label_values(&[method.as_str(), route.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    res
}

/// Request tracing: a server span per request, continuing the caller's
/// W3C `traceparent`.
pub fn request_tracing() -> opentelemetry_instrumentation_actix_web::RequestTracing {
    opentelemetry_instrumentation_actix_web::RequestTracing::new()
}

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependencies a service needs before it should receive traffic.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a named check, e.g. `("postgres", ...)`.
    pub fn with_check<F>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.checks.push((name, Arc::new(check)));
        self
    }

    /// Run every check; the failures, by name.
    pub async fn failures(&self) -> Vec<(&'static str, String)> {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let fut = check();
            async move { (*name, fut.await) }
        }))
        .await;
        results
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|e| (name, e)))
            .collect()
    }
}

/// The port `/metrics` is served on when it is kept apart from the API
/// (`http.ops_port`): then the API port does not answer `/metrics`, and the
/// ops port answers only `/metrics`, `/healthz` and `/readyz`. The Ingress
/// and the API's callers never see the metrics; Prometheus scrapes the ops
/// port, which only the monitoring namespace may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpsPort(pub Option<u16>);

/// Paths the ops port answers.
pub const OPS_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// Bind the ops listener when `ops_port` is set (0 picks a free port); the
/// [`OpsPort`] to register as app data, with the port actually bound.
pub fn bind_ops_port(
    host: &str,
    ops_port: Option<u16>,
) -> std::io::Result<(Option<std::net::TcpListener>, OpsPort)> {
    match ops_port {
        None => Ok((None, OpsPort(None))),
        Some(port) => {
            let listener = std::net::TcpListener::bind((host, port))?;
            let bound = listener.local_addr()?.port();
            Ok((Some(listener), OpsPort(Some(bound))))
        }
    }
}

/// Middleware (`from_fn`): keep `/metrics` on the ops port and the ops port
/// to the ops paths, by the listener's own port (the exact raw path, so no
/// spelling of `/metrics` reaches it on the API port). A no-op without an
/// ops port.
pub async fn separate_ops_port(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(OpsPort(Some(ops))) = req.app_data::<OpsPort>().copied() {
        let on_ops = req.app_config().local_addr().port() == ops;
        let path = req.path();
        let refused = if on_ops {
            !OPS_PATHS.contains(&path)
        } else {
            path.starts_with("/metrics")
        };
        if refused {
            let res = Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found").to_response(None);
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// Mount `/healthz`, `/readyz` and `/metrics`. Needs `web::Data<Metrics>`
/// and `web::Data<Readiness>` in the app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let failures = readiness.failures().await;
    if failures.is_empty() {
        return HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }));
    }
    let detail = failures
        .iter()
        .map(|(name, e)| format!("{name}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "NOT_READY",
        "A dependency is not available",
    )
    .detail(detail)
    .to_response(Some(1))
}

async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}
