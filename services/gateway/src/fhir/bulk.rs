//! The city-wide SMART Scheduling Links feed: one public `$bulk-publish`
//! manifest listing, for every member hospital, its Location, Schedule and
//! Slot NDJSON files at gateway URLs (`/fhir/bulk/<hospital>/<Type>.ndjson`,
//! proxied with the hospital's ETag and `304`).
//!
//! Aggregators poll the manifest every minute or so, so a poll must be
//! cheap: the manifest is built at most once per `fhir.manifest_cache_seconds`
//! per replica (one build at a time), and a build asks each hospital for its
//! own manifest with `If-None-Match` (a `304` costs the hospital nothing).
//! The city manifest's strong ETag hashes its bytes (which hold the newest
//! hospital `transactionTime`) and every answering hospital's own ETag, so
//! it changes whenever any hospital's files do.
//!
//! A hospital that does not answer is left out of `output` (its files
//! could not be served anyway) and listed in `error`, whose file says why;
//! it returns to `output` at the first build after it answers again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use jyt_domain::HospitalId;
use jyt_web::RequestError;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::fhir::{FHIR_NDJSON, issue};
use crate::settings::FhirSettings;
use crate::state::GatewayState;
use crate::upstream::Upstreams;

/// The resource types a hospital's feed publishes.
const FILE_TYPES: [&str; 3] = ["Location", "Schedule", "Slot"];

/// The city manifest, cached per replica.
pub struct CityFeed {
    base_url: String,
    ttl: Duration,
    /// One build at a time; pollers arriving meanwhile wait for it and
    /// share its result.
    state: tokio::sync::Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    /// Each hospital's last manifest and its ETag, for `If-None-Match`.
    known: HashMap<HospitalId, Known>,
    /// Hospitals that did not answer at the last build.
    down: BTreeSet<HospitalId>,
    built: Option<Built>,
}

struct Known {
    etag: Option<Vec<u8>>,
    manifest: Value,
}

/// One built city manifest.
#[derive(Clone)]
pub struct Built {
    at: Instant,
    pub etag: String,
    pub body: web::Bytes,
}

impl CityFeed {
    pub fn new(settings: &FhirSettings) -> Self {
        Self {
            base_url: settings.public_base_url.clone(),
            ttl: Duration::from_secs(settings.manifest_cache_seconds),
            state: tokio::sync::Mutex::new(FeedState::default()),
        }
    }

    pub fn ttl_seconds(&self) -> u64 {
        self.ttl.as_secs()
    }

    /// Whether the hospital was left out of the last manifest.
    pub async fn is_down(&self, hospital: &HospitalId) -> bool {
        self.state.lock().await.down.contains(hospital)
    }

    /// The current manifest: the cached one while fresh, else a new build.
    pub async fn current(&self, upstreams: &Upstreams) -> Built {
        let mut state = self.state.lock().await;
        if let Some(b) = state.built.as_ref().filter(|b| b.at.elapsed() < self.ttl) {
            return b.clone();
        }
        let mut hospitals: Vec<HospitalId> = upstreams.hospitals().map(|(id, _)| id.clone()).collect();
        hospitals.sort();
        let answers = join_all(hospitals.iter().map(|h| {
            let mut headers = HeaderMap::new();
            if let Some(etag) = state
                .known
                .get(h)
                .and_then(|k| k.etag.as_deref())
                .and_then(|e| HeaderValue::from_bytes(e).ok())
            {
                headers.insert(reqwest::header::IF_NONE_MATCH, etag);
            }
            upstreams.forward(h, reqwest::Method::GET, "/fhir/$bulk-publish", headers, None)
        }))
        .await;
        let mut down = BTreeSet::new();
        for (h, answer) in hospitals.iter().zip(answers) {
            match answer {
                Ok(a) if a.status == StatusCode::NOT_MODIFIED && state.known.contains_key(h) => {}
                Ok(a) if a.status.is_success() => match serde_json::from_slice::<Value>(&a.body) {
                    Ok(theirs) => {
                        let etag = a
                            .headers
                            .iter()
                            .find(|(n, _)| n == "etag")
                            .map(|(_, v)| v.clone());
                        state.known.insert(
                            h.clone(),
                            Known {
                                etag,
                                manifest: theirs,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(hospital = %h, error = %e, "unreadable bulk manifest");
                        down.insert(h.clone());
                    }
                },
                Ok(a) => {
                    tracing::warn!(hospital = %h, status = %a.status, "bulk manifest refused");
                    down.insert(h.clone());
                }
                Err(e) => {
                    tracing::warn!(hospital = %h, error = %e, "bulk manifest not answered");
                    down.insert(h.clone());
                }
            }
        }
        let body = self.compose(&hospitals, &state.known, &down);
        // The bytes, and each answering hospital's own ETag: a change at a
        // hospital within the same millisecond still changes ours.
        let mut hash = Sha256::new();
        hash.update(&body);
        for h in hospitals.iter().filter(|h| !down.contains(*h)) {
            if let Some(etag) = state.known.get(h).and_then(|k| k.etag.as_deref()) {
                hash.update(h.as_str().as_bytes());
                hash.update(etag);
            }
        }
        let digest = hex::encode(hash.finalize());
        let built = Built {
            at: Instant::now(),
            etag: format!("\"{}\"", &digest[..32]),
            body: web::Bytes::from(body),
        };
        state.down = down;
        state.built = Some(built.clone());
        built
    }

    fn compose(
        &self,
        hospitals: &[HospitalId],
        known: &HashMap<HospitalId, Known>,
        down: &BTreeSet<HospitalId>,
    ) -> Vec<u8> {
        let base = &self.base_url;
        let mut output = Vec::new();
        let mut error = Vec::new();
        let mut newest: Option<DateTime<Utc>> = None;
        for h in hospitals {
            let Some(k) = known.get(h).filter(|_| !down.contains(h)) else {
                error.push(json!({
                    "type": "OperationOutcome",
                    "url": format!("{base}/fhir/bulk/{h}/OperationOutcome.ndjson"),
                }));
                continue;
            };
            if let Some(t) = k.manifest["transactionTime"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            {
                let t = t.with_timezone(&Utc);
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            // The hospital's own entries, in its order, at our URLs; their
            // extensions (e.g. the state served) are kept.
            for entry in k.manifest["output"].as_array().into_iter().flatten() {
                let Some(kind) = entry["type"].as_str().filter(|t| FILE_TYPES.contains(t)) else {
                    continue;
                };
                let mut e = json!({
                    "type": kind,
                    "url": format!("{base}/fhir/bulk/{h}/{kind}.ndjson"),
                });
                if entry.get("extension").is_some() {
                    e["extension"] = entry["extension"].clone();
                }
                output.push(e);
            }
        }
        let city = json!({
            // The newest hospital data: stable while nothing changes, so
            // the bytes (and the ETag) are too.
            "transactionTime": newest.unwrap_or_else(Utc::now).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "request": format!("{base}/fhir/$bulk-publish"),
            "output": output,
            "error": error,
        });
        city.to_string().into_bytes()
    }
}

/// Whether `If-None-Match` names this ETag (weak comparison, as RFC 9110
/// asks for `If-None-Match`).
pub fn none_match(req: &HttpRequest, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == strip(etag))
}

/// The per-address token bucket for unsigned requests, keyed by the
/// connection's address (the Ingress's `X-Client-Address` only when the
/// peer is a trusted proxy; see `auth::connection_address`).
fn check_public_address(state: &GatewayState, req: &HttpRequest) -> Result<(), GatewayError> {
    match crate::auth::connection_address(state, req) {
        Some(ip) => state.limits.check_address(&ip.to_string()),
        None => Ok(()),
    }
}

#[utoipa::path(
    get, path = "/fhir/$bulk-publish", tag = "fhir",
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of the manifest the poller has")),
    responses(
        (status = 200, description = "SMART Scheduling Links manifest: every hospital's Location, Schedule and Slot files at gateway URLs; a hospital not answering is listed in `error`. Strong ETag; public, no signature", body = serde_json::Value),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 429, description = "RATE_LIMITED (per client address)", body = serde_json::Value, content_type = "application/fhir+json"),
    )
)]
#[get("/fhir/$bulk-publish")]
pub async fn manifest(
    state: web::Data<GatewayState>,
    req: HttpRequest,
) -> Result<HttpResponse, GatewayError> {
    check_public_address(&state, &req)?;
    let built = state.fhir.current(&state.upstreams).await;
    let cache = format!("public, max-age={}", state.fhir.ttl_seconds());
    if none_match(&req, &built.etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, built.etag))
            .insert_header((header::CACHE_CONTROL, cache))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, built.etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .body(built.body))
}

#[utoipa::path(
    get, path = "/fhir/bulk/{hospital}/{file}", tag = "fhir",
    params(
        ("hospital" = String, Path, description = "Hospital id"),
        ("file" = String, Path, description = "`Location.ndjson`, `Schedule.ndjson`, `Slot.ndjson`, or `OperationOutcome.ndjson` (why the hospital is in the manifest's `error`)"),
        ("If-None-Match" = Option<String>, Header, description = "The file's ETag the poller has"),
    ),
    responses(
        (status = 200, description = "NDJSON, one resource a line (application/fhir+ndjson), with the hospital's ETag; public, no signature", body = String, content_type = "application/fhir+ndjson"),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 400, description = "INVALID_FIELD", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND, NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "RATE_LIMITED (per client address)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    )
)]
#[get("/fhir/bulk/{hospital}/{file}")]
pub async fn file(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    check_public_address(&state, &req)?;
    let (hospital, file) = path.into_inner();
    let hospital: HospitalId = hospital
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("hospital", e.to_string()))?;
    state.upstreams.route(&hospital)?;
    if file == "OperationOutcome.ndjson" {
        let mut body = String::new();
        if state.fhir.is_down(&hospital).await {
            let outcome = json!({
                "resourceType": "OperationOutcome",
                "issue": [issue(
                    "error",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "HOSPITAL_UNAVAILABLE",
                    &format!("hospital `{hospital}` did not answer; its files are left out until it does"),
                    None,
                )],
            });
            body = format!("{outcome}\n");
        }
        return Ok(HttpResponse::Ok().content_type(FHIR_NDJSON).body(body));
    }
    let Some(kind) = file.strip_suffix(".ndjson").filter(|k| FILE_TYPES.contains(k)) else {
        return Err(
            RequestError::invalid("file", "must be Location.ndjson, Schedule.ndjson or Slot.ndjson").into(),
        );
    };
    let mut headers = HeaderMap::new();
    if let Some(v) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
    {
        headers.insert(reqwest::header::IF_NONE_MATCH, v);
    }
    state
        .upstreams
        .call(
            &hospital,
            reqwest::Method::GET,
            &format!("/fhir/bulk/{kind}.ndjson"),
            headers,
            None,
        )
        .await
}
