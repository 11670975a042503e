//! # Layout
//! Process-wide telemetry, set up once by each binary (or once by `jyt up`
//! for the whole city in one process):
//! - [`init`]: a `tracing` subscriber writing JSON (or pretty) logs, bridged
//!   to OpenTelemetry; spans are exported over OTLP/HTTP when an endpoint is
//!   configured. The returned [`TelemetryGuard`] flushes spans when dropped.
//! - [`inject_trace_context`]: writes the current span's W3C `traceparent`
//!   into an outgoing request, so a booking is one trace from gateway to
//!   hospital. The receiving side extracts it in the actix middleware from
//!   `opentelemetry-instrumentation-actix-web` (see `jyt-web`).

use std::sync::OnceLock;

use jyt_settings::{LogFormat, TelemetrySettings};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "trace provider did not shut down cleanly");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Install logging and tracing for this process. Only the first call in a
/// process installs anything (tests start many services in one process);
/// later calls return an inert guard.
pub fn init(service_name: &str, settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    if INSTALLED.set(()).is_err() {
        return Ok(TelemetryGuard { provider: None });
    }
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));

    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.namespace", "jyt"))
        .build();
    let endpoint = settings
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty());
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let traces_endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_endpoint)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    // Without an exporter the provider still mints trace and span ids, so
    // `traceparent` flows between services and shows in logs.
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer(service_name.to_owned());

    // The log filter applies to log output only. Spans exported as traces
    // keep their own, fixed threshold: turning logs down to `warn` must not
    // switch off the spans that carry `traceparent` to the next service.
    let log_filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    let trace_filter = EnvFilter::new("info,h2=off,hyper=off,reqwest=off,tokio_postgres=off");
    let installed = tracing_subscriber::registry()
        .with(fmt_layer.with_filter(log_filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(trace_filter),
        )
        .try_init();
    if let Err(err) = installed {
        // Another subscriber (a test harness's) got there first; ours would
        // only duplicate it.
        tracing::debug!(error = %err, "tracing subscriber already installed");
    }
    tracing::info!(
        service = service_name,
        otlp = endpoint.as_deref().unwrap_or("off"),
        "telemetry ready"
    );
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// Write the current span's context as W3C `traceparent` (and `baggage`)
/// headers into an outgoing request.
pub fn inject_trace_context(headers: &mut reqwest::header::HeaderMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    });
}

/// The trace id of the current span, as 32 hex digits; for logs and tests.
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}
