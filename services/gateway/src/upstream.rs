//! Calls to hospitals' slot-inventory services: a pooled keep-alive
//! client per worker thread ([`jyt_per_thread`]), and per hospital a timeout, a bulkhead (a cap on calls in
//! flight) and a circuit breaker, so a slow or dead hospital answers
//! `HOSPITAL_UNAVAILABLE` for its own requests, fast, while every other
//! hospital keeps its latency. W3C trace context goes on every call, and
//! answers are passed back as they came (status, problem+json body, headers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use jyt_domain::HospitalId;
use jyt_per_thread::PerThread;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use crate::error::GatewayError;
use crate::settings::{HospitalRoute, Settings};

/// Response headers worth passing back to the channel.
/// `etag` for the FHIR bulk files, which pollers fetch with `If-None-Match`.
const PASSED_BACK: [&str; 5] = [
    "content-type",
    "location",
    "idempotency-replayed",
    "retry-after",
    "etag",
];

/// A service's base URL, parsed once. A call's URL is a copy of it with
/// the path and query set: `format!("{base}{path}")` had the whole string
/// parsed again on every call, scheme, host and port included (about 1 % of
/// the machine in the gateway during a peak-day bookings phase,
/// loadtest/README.md, 2026-12-06 14:48). Same URL either way: `set_path`
/// and `set_query` encode what the parser would (`url_is_the_one_parsed`).
#[derive(Debug, Clone)]
pub struct BaseUrl {
    url: reqwest::Url,
    /// The base's own path without its trailing `/` (empty for a host's root).
    prefix: String,
}

impl BaseUrl {
    /// `base`: `http(s)://host[:port][/prefix]`, no trailing `/` (the settings' rule).
    pub fn parse(setting: &str, base: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base).map_err(|e| anyhow::anyhow!("{setting} is not a URL: {e}"))?;
        let prefix = url.path().trim_end_matches('/').to_owned();
        Ok(Self { url, prefix })
    }

    /// The URL of `path_and_query` (`/v1/...`, with `?query` or without) on this base.
    pub fn join(&self, path_and_query: &str) -> reqwest::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.url.clone();
        if self.prefix.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{}{path}", self.prefix));
        }
        url.set_query(query);
        url
    }
}

/// Consecutive failures open the circuit; after `open_for` one probe is
/// let through, and its outcome closes or reopens it.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probe_started: Option<Instant>,
}

struct Lane {
    route: HospitalRoute,
    base: BaseUrl,
    /// The hospital answers only callers with its internal token.
    internal: jyt_signing::internal::Minter,
    timeout: Duration,
    bulkhead: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

#[derive(Clone)]
pub struct Upstreams {
    client: PerThread<reqwest::Client>,
    lanes: Arc<HashMap<HospitalId, Lane>>,
    breaker_failures: u32,
    breaker_open: Duration,
    queue_timeout: Duration,
}

/// A hospital's answer, to be passed back as it came.
pub struct Forwarded {
    pub status: StatusCode,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: actix_web::web::Bytes,
}

impl Forwarded {
    /// An internal service's whole answer, keeping the headers named in
    /// `keep` (lower case); the caller decides what its status means.
    pub async fn read(res: reqwest::Response, keep: &[&str]) -> Result<Self, reqwest::Error> {
        let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let headers = keep
            .iter()
            .filter_map(|name| {
                res.headers()
                    .get(*name)
                    .map(|v| ((*name).to_owned(), v.as_bytes().to_vec()))
            })
            .collect();
        let body = res.bytes().await?;
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    pub fn into_response(self) -> HttpResponse {
        let mut out = HttpResponse::build(self.status);
        for (name, value) in self.headers {
            if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(&value) {
                out.insert_header((name, v));
            }
        }
        out.body(self.body)
    }
}

/// What the breaker decided for one call.
enum Admission {
    Closed,
    Probe,
}

impl Upstreams {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let (connect_timeout, max_idle, idle_timeout) = (
            Duration::from_millis(settings.upstream.connect_timeout_ms),
            settings.upstream.pool_max_idle_per_host,
            Duration::from_millis(settings.upstream.pool_idle_timeout_ms),
        );
        let client = PerThread::new(move || {
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .pool_max_idle_per_host(max_idle)
                .pool_idle_timeout(idle_timeout)
                .tcp_nodelay(true)
                .build()
        })?;
        let lanes = settings
            .hospital_routes()
            .into_iter()
            .map(|(id, route)| {
                let base = BaseUrl::parse(&format!("hospitals.{id}.base_url"), &route.base_url)?;
                let lane = Lane {
                    base,
                    timeout: Duration::from_millis(route.timeout_ms.unwrap_or(settings.upstream.timeout_ms)),
                    bulkhead: Arc::new(Semaphore::new(
                        route.max_concurrent.unwrap_or(settings.upstream.max_concurrent),
                    )),
                    breaker: Mutex::new(Breaker::default()),
                    internal: settings
                        .internal_auth
                        .minter(&jyt_signing::internal::hospital_audience(id.as_str())),
                    route,
                };
                Ok((id, lane))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            client,
            lanes: Arc::new(lanes),
            breaker_failures: settings.upstream.breaker_failures,
            breaker_open: Duration::from_millis(settings.upstream.breaker_open_ms),
            queue_timeout: Duration::from_millis(settings.upstream.queue_timeout_ms),
        })
    }

    pub fn hospitals(&self) -> impl Iterator<Item = (&HospitalId, &HospitalRoute)> {
        self.lanes.iter().map(|(id, lane)| (id, &lane.route))
    }

    pub fn route(&self, hospital: &HospitalId) -> Result<&HospitalRoute, GatewayError> {
        self.lane(hospital).map(|l| &l.route)
    }

    fn lane(&self, hospital: &HospitalId) -> Result<&Lane, GatewayError> {
        self.lanes
            .get(hospital)
            .ok_or_else(|| GatewayError::HospitalNotFound(hospital.to_string()))
    }

    fn admit(&self, lane: &Lane) -> Option<Admission> {
        let mut b = lane
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match b.open_until {
            None => Some(Admission::Closed),
            Some(until) if now < until => None,
            Some(_) => {
                // Half open: one probe at a time; a probe that never reported
                // back (its request was dropped) is replaced after a timeout.
                let stale = b
                    .probe_started
                    .is_none_or(|t| now.duration_since(t) > lane.timeout);
                if stale {
                    b.probe_started = Some(now);
                    Some(Admission::Probe)
                } else {
                    None
                }
            }
        }
    }

    fn record(&self, lane: &Lane, ok: bool) {
        let mut b = lane
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.probe_started = None;
        if ok {
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures = b.failures.saturating_add(1);
            if b.failures >= self.breaker_failures {
                b.open_until = Some(Instant::now() + self.breaker_open);
            }
        }
    }

    /// Send a request to a hospital and turn its answer into ours.
    pub async fn call(
        &self,
        hospital: &HospitalId,
        method: reqwest::Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, GatewayError> {
        self.forward(hospital, method, path, headers, body)
            .await
            .map(Forwarded::into_response)
    }

    /// The booking as its hospital has it (`GET /v1/bookings/{id}`); its
    /// answer, unless the call failed.
    pub async fn booking(&self, booking: &jyt_domain::BookingRef) -> Result<Forwarded, GatewayError> {
        self.forward(
            &booking.hospital,
            reqwest::Method::GET,
            &format!("/v1/bookings/{booking}"),
            HeaderMap::new(),
            None,
        )
        .await
    }

    /// Send a request to a hospital; its answer, unless it failed. The span
    /// records the path without its query: a query carries the caller's
    /// values (a patient id, a fuzzer's phone-like number), and no log line
    /// may hold personal data.
    #[tracing::instrument(
        name = "upstream",
        skip_all,
        fields(hospital = %hospital, path = path.split('?').next().unwrap_or_default())
    )]
    pub async fn forward(
        &self,
        hospital: &HospitalId,
        method: reqwest::Method,
        path: &str,
        mut headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<Forwarded, GatewayError> {
        let lane = self.lane(hospital)?;
        let unavailable = |reason: String| GatewayError::HospitalUnavailable {
            hospital: hospital.to_string(),
            reason,
        };
        let admission = self
            .admit(lane)
            .ok_or_else(|| unavailable("circuit open".to_owned()))?;
        // Wait briefly for a place: a burst at a healthy hospital drains in
        // milliseconds, while a hung one keeps its places for its whole
        // timeout, so its callers are refused after `queue_timeout`.
        let permit = tokio::time::timeout(self.queue_timeout, lane.bulkhead.clone().acquire_owned()).await;
        let Ok(Ok(_permit)) = permit else {
            if matches!(admission, Admission::Probe) {
                self.record(lane, false);
            }
            return Err(unavailable("too many calls in flight".to_owned()));
        };
        jyt_telemetry::inject_trace_context(&mut headers);
        if let Ok(token) = HeaderValue::from_str(&lane.internal.token()) {
            headers.insert(jyt_signing::internal::HEADER, token);
        }
        let mut req = self
            .client
            .local()
            .request(method, lane.base.join(path))
            .timeout(lane.timeout)
            .headers(headers);
        if let Some(body) = body {
            req = req
                .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let outcome = async {
            let again = req.try_clone();
            let res = match req.send().await {
                // Nothing reached the hospital: a connection that could not
                // be made (a SYN dropped by a full listen queue in a burst,
                // seen in the load test) is tried once more, which is safe
                // even for a booking.
                Err(e) if e.is_connect() => match again {
                    Some(again) => {
                        tracing::warn!(%hospital, error = %error_chain(&e), "connecting to the hospital failed; trying once more");
                        again.send().await
                    }
                    None => Err(e),
                },
                other => other,
            }
            .map_err(|e| error_chain(&e))?;
            Forwarded::read(res, &PASSED_BACK)
                .await
                .map_err(|e| error_chain(&e))
        }
        .await;
        let answer = match outcome {
            Ok(o) => o,
            Err(reason) => {
                self.record(lane, false);
                return Err(unavailable(reason));
            }
        };
        let status = answer.status;
        if status == StatusCode::UNAUTHORIZED {
            // The hospital answers 401 only to a refused internal token: a
            // configuration fault of ours, not the channel's.
            self.record(lane, false);
            return Err(GatewayError::InternalAuthRefused);
        }
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            // A hospital's internal failure is not the channel's business;
            // its own 503s (lock or database briefly unavailable) pass through.
            self.record(lane, false);
            return Err(unavailable(format!("answered {status}")));
        }
        self.record(lane, true);
        Ok(answer)
    }
}

/// An error with its causes (reqwest's own message is only "error sending
/// request"): the log must say whether it was a connect timeout, a reset
/// or a refused connection.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::BaseUrl;
    use proptest::prelude::*;

    /// What the calls did before: the whole string parsed.
    fn parsed(base: &str, path: &str) -> String {
        reqwest::Url::parse(&format!("{base}{path}")).unwrap().to_string()
    }

    #[test]
    fn url_is_the_one_parsed() {
        for base in [
            "http://slot-pumch:8101",
            "https://h.example.cn",
            "http://127.0.0.1:9/api/v2",
        ] {
            let b = BaseUrl::parse("hospitals.pumch.base_url", base).unwrap();
            for path in [
                "/v1/bookings",
                "/v1/bookings/pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/confirm",
                "/v1/hospitals/pumch/schedules?date=2026-12-06&department=%E5%BF%83",
                "/v1/search?q=心内科 专家&page=2",
                "/v1/a b/c%2Fd/../e/./f?x=1?y=2",
                "/v1/patients?",
                "/",
            ] {
                assert_eq!(b.join(path).to_string(), parsed(base, path), "{base} + {path}");
            }
        }
    }

    #[test]
    fn a_base_that_is_not_a_url_is_refused_naming_its_setting() {
        let e = BaseUrl::parse("card_issuing.base_url", "http//cards").unwrap_err();
        assert!(
            e.to_string().starts_with("card_issuing.base_url is not a URL"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn any_path_and_query_joins_as_it_parses(
            path in "(/[a-zA-Z0-9._~%!$&'()*+,;=:@ 心-]{0,12}){1,5}",
            query in proptest::option::of("[a-zA-Z0-9._~%!$&'()*+,;=:@/? 心-]{0,20}"),
        ) {
            let base = "http://slot-pumch:8101";
            let b = BaseUrl::parse("hospitals.pumch.base_url", base).unwrap();
            let full = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            // The parser trims spaces off the end of its whole input; a path
            // or query from an HTTP request line never ends in a raw space.
            prop_assume!(!full.ends_with(' '));
            prop_assert_eq!(b.join(&full).to_string(), parsed(base, &full));
        }
    }
}
