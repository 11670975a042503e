//! The SMART Scheduling Links bulk feed: `$bulk-publish` answers a manifest
//! naming three NDJSON files (Location, Schedule, Slot), each served from
//! today on. Aggregators poll every minute, so every answer carries a
//! strong ETag and a matching `If-None-Match` is a 304 answered from a few
//! index lookups, without building anything.
//!
//! The ETag is a digest of what decides the files' bytes, read in the same
//! repeatable-read snapshot the files are built from:
//! - booking changes: each writes an outbox row in its own transaction;
//!   the feed's sequencer gives committed rows positions in order, so the
//!   last position plus the rows not yet positioned name exactly the
//!   booking changes this snapshot sees (holds, payments, cancellations,
//!   expiries, stops, promotions);
//! - catalogue changes (publish, 加号, 停诊): `catalog_version`, bumped in
//!   the changing transaction (migration V4);
//! - time: the latest release instant passed and today's date;
//! - the settings and base URL the files quote.
//!
//! Seats are counted in PostgreSQL rather than read from Redis: Redis runs
//! ahead of PostgreSQL only between a Lua hold and its commit, and a feed
//! whose ETag could not see such a change would be wrong until the next one.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use jyt_db::tokio_postgres::IsolationLevel;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::outcome::FhirError;
use super::queries::{self, FeedVersion, ScheduleFilter, SlotFilter};
use super::{FHIR_NDJSON, base_url, resources};
use crate::state::AppState;

/// How long a client may reuse an answer before asking again.
pub const CACHE_CONTROL: &str = "max-age=60";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Manifest,
    Location,
    Schedule,
    Slot,
}

impl Output {
    /// The file of `/fhir/bulk/<name>`, if it is one of ours.
    pub fn file(name: &str) -> Option<Self> {
        match name {
            "Location.ndjson" => Some(Output::Location),
            "Schedule.ndjson" => Some(Output::Schedule),
            "Slot.ndjson" => Some(Output::Slot),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Output::Manifest => "manifest",
            Output::Location => "Location",
            Output::Schedule => "Schedule",
            Output::Slot => "Slot",
        }
    }
}

fn etag(state: &AppState, base: &str, today: NaiveDate, v: &FeedVersion, output: Output) -> String {
    let mut h = Sha256::new();
    h.update(
        format!(
            "{}|{}|{:?}|{base}|{today}|{}|{}|{:?}|{:?}|{}",
            state.hospital,
            state.settings.hospital.name,
            state.settings.fhir,
            v.catalog,
            v.feed_position,
            v.unsequenced,
            v.released,
            output.name(),
        )
        .as_bytes(),
    );
    format!("\"{}\"", hex::encode(&h.finalize()[..16]))
}

/// Whether `If-None-Match` names this tag (weak comparison, as RFC 9110
/// asks for this header), or is `*`.
fn not_modified(req: &HttpRequest, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

fn with_caching(mut res: actix_web::HttpResponseBuilder, tag: &str) -> actix_web::HttpResponseBuilder {
    if let Ok(v) = HeaderValue::from_str(tag) {
        res.insert_header((header::ETAG, v));
    }
    res.insert_header((header::CACHE_CONTROL, CACHE_CONTROL));
    res
}

/// Answer the manifest or one file, or 304.
pub async fn serve(state: &AppState, req: &HttpRequest, output: Output) -> Result<HttpResponse, FhirError> {
    let base = base_url(state, req);
    let now = state.clock.now();
    let today = state.clock.today();
    // Give committed booking changes their positions first, so the
    // unpositioned list stays short.
    crate::federation::feed::sequence(state).await?;
    let mut client = state.pool.get().await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let version = queries::feed_version(&tx, now).await?;
    let tag = etag(state, &base, today, &version, output);
    if not_modified(req, &tag) {
        return Ok(with_caching(HttpResponse::NotModified(), &tag).finish());
    }
    let settings = &state.settings;
    let (content_type, body) = match output {
        Output::Manifest => {
            let midnight = jyt_domain::time::at(today, NaiveTime::MIN);
            let transaction_time: DateTime<Utc> = version.changed_at.max(midnight);
            let url = |kind: &str| json!({ "type": kind, "url": format!("{base}/bulk/{kind}.ndjson") });
            let manifest = json!({
                "transactionTime": resources::instant(transaction_time),
                "request": format!("{base}/$bulk-publish"),
                "output": [url("Location"), url("Schedule"), url("Slot")],
                "error": [],
            });
            ("application/json", manifest.to_string())
        }
        Output::Location => (FHIR_NDJSON, format!("{}\n", resources::location(settings))),
        Output::Schedule => {
            let filter = ScheduleFilter {
                from_date: Some(today),
                ..Default::default()
            };
            let rows = queries::schedules(&tx, &filter, None, 0).await?;
            (
                FHIR_NDJSON,
                ndjson(rows.iter().map(|s| resources::schedule(settings, s))),
            )
        }
        Output::Slot => {
            let filter = SlotFilter {
                from_date: Some(today),
                ..Default::default()
            };
            let rows = queries::slots(&tx, &filter, now, None, 0).await?;
            (
                FHIR_NDJSON,
                ndjson(rows.iter().map(|s| resources::slot(settings, s, true))),
            )
        }
    };
    tx.commit().await?;
    Ok(with_caching(HttpResponse::Ok(), &tag)
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(body))
}

fn ndjson(resources: impl Iterator<Item = serde_json::Value>) -> String {
    let mut out = String::new();
    for r in resources {
        out.push_str(&r.to_string());
        out.push('\n');
    }
    out
}
