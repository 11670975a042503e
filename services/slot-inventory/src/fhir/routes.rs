//! The `/fhir` scope. Every answer is `application/fhir+json` (NDJSON
//! files `application/fhir+ndjson`); every error, including unknown paths,
//! an `OperationOutcome`.

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, get, post, web};
use jyt_domain::{BookingRef, Channel};
use jyt_web::extract::BodyLimit;
use jyt_web::{IdempotencyKeyHeader, RequestError};
use serde_json::Value;

use super::bulk::{self, Output};
use super::outcome::{self, FhirError};
use super::params::{self, Paging, TimeRange};
use super::queries::{self, ScheduleContext, ScheduleFilter, SlotFilter};
use super::{CHANNEL_HEADER, FHIR_JSON, base_url, operations, resources};
use crate::booking::queries as booking_queries;
use crate::error::SlotError;
use crate::state::AppState;

pub fn scope() -> actix_web::Scope {
    web::scope("/fhir")
        .service(metadata)
        .service(bulk_publish)
        .service(bulk_file)
        .service(location_read)
        .service(schedule_search)
        .service(schedule_read)
        .service(slot_search)
        .service(slot_read)
        .service(appointment_find)
        .service(appointment_hold)
        .service(appointment_book)
        .service(appointment_read)
        .default_service(web::to(outcome::not_found))
}

fn fhir(mut res: actix_web::HttpResponseBuilder, body: &Value) -> HttpResponse {
    res.insert_header((header::CONTENT_TYPE, FHIR_JSON))
        .body(body.to_string())
}

fn not_found(what: &str) -> HttpResponse {
    let body = outcome::operation_outcome(
        "NOT_FOUND",
        "not-found",
        &format!("{what} does not exist here"),
        None,
    );
    fhir(HttpResponse::NotFound(), &body)
}

/// A `Parameters` body: JSON (`application/fhir+json` or
/// `application/json`) within `http.max_body_bytes`.
async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, FhirError> {
    let limit = req.app_data::<BodyLimit>().map_or(64 * 1024, |l| l.0);
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            essence == "application/json"
                || essence == "application/json+fhir"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(RequestError::UnsupportedMediaType.into());
    }
    let declared = jyt_web::extract::declared_length(req.headers());
    Ok(jyt_web::extract::read_limited(payload, declared, limit).await?)
}

/// The search's own URL with `_page` set (for `self` and `next` links).
fn page_url(base: &str, resource: &str, pairs: &[(String, String)], page: u32) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| k != "_page") {
        query.append_pair(k, v);
    }
    if page > 1 {
        query.append_pair("_page", &page.to_string());
    }
    let query = query.finish();
    if query.is_empty() {
        format!("{base}/{resource}")
    } else {
        format!("{base}/{resource}?{query}")
    }
}

fn bundle(
    base: &str,
    resource: &str,
    pairs: &[(String, String)],
    paging: Paging,
    total: i64,
    entries: Vec<(String, Value)>,
) -> Value {
    let shown = paging.offset() + i64::try_from(entries.len()).unwrap_or(i64::MAX);
    let next =
        (shown < total && !entries.is_empty()).then(|| page_url(base, resource, pairs, paging.page + 1));
    resources::searchset(
        total,
        &page_url(base, resource, pairs, paging.page),
        next.as_deref(),
        entries,
    )
}

async fn context(state: &AppState, schedule: uuid::Uuid) -> Result<ScheduleContext, FhirError> {
    let client = state.pool.get().await?;
    queries::schedule_context(&client, schedule)
        .await?
        .ok_or_else(|| FhirError(SlotError::ScheduleNotFound(schedule.to_string())))
}

#[get("/metadata")]
pub async fn metadata(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let base = base_url(&state, &req);
    fhir(
        HttpResponse::Ok(),
        &resources::capability_statement(&state.settings, &base, state.clock.now()),
    )
}

#[get("/Location/{id}")]
pub async fn location_read(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    if path.as_str() == state.hospital.as_str() {
        fhir(HttpResponse::Ok(), &resources::location(&state.settings))
    } else {
        not_found(&format!("Location/{}", path.as_str()))
    }
}

#[get("/Schedule")]
pub async fn schedule_search(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, FhirError> {
    let pairs = params::parse_query(req.query_string())?;
    let mut paging = Paging::default();
    let mut f = ScheduleFilter::default();
    let mut range = TimeRange::default();
    // `actor` takes a comma list: a second one is refused like any other.
    let mut actor_given: Option<()> = None;
    for (name, value) in &pairs {
        if params::common(&mut paging, name, value)? {
            continue;
        }
        match name.as_str() {
            "_id" => {
                params::once(&f.ids, name)?;
                f.ids = Some(params::id_list(name, value, "Schedule", &state.hospital)?);
            }
            "specialty" => {
                params::once(&f.departments, name)?;
                f.departments = Some(params::department_codes(name, value)?);
            }
            "date" => range.narrow(name, value)?,
            "actor" => {
                params::once(&actor_given, name)?;
                actor_given = Some(());
                f.doctors = actor_filter(&state, name, value)?;
            }
            _ => {
                return Err(params::unknown(
                    name,
                    "_id, actor, specialty, date, _count, _page",
                ));
            }
        }
    }
    f.from = range.from;
    f.until = range.until;
    let client = state.pool.get().await?;
    let total = queries::count_schedules(&client, &f).await?;
    let rows = queries::schedules(&client, &f, Some(i64::from(paging.count)), paging.offset()).await?;
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|s| {
            let r = resources::schedule(&state.settings, s);
            (
                format!("{base}/Schedule/{}", r["id"].as_str().unwrap_or_default()),
                r,
            )
        })
        .collect();
    Ok(fhir(
        HttpResponse::Ok(),
        &bundle(&base, "Schedule", &pairs, paging, total, entries),
    ))
}

/// `actor=Location/<hospital>,Practitioner/<id>,...`: `None` (every
/// doctor) when our Location is among them, else those doctors (none
/// when only other hospitals' actors are named).
fn actor_filter(state: &AppState, name: &str, raw: &str) -> Result<Option<Vec<uuid::Uuid>>, FhirError> {
    let mut doctors = Vec::new();
    let mut whole_hospital = false;
    for item in raw.split(',') {
        if let Some(location) = item.strip_prefix("Location/") {
            whole_hospital |= location == state.hospital.as_str();
        } else if let Some(practitioner) = item.strip_prefix("Practitioner/") {
            if let Some(id) = params::scoped_id(name, practitioner, &state.hospital)? {
                doctors.push(id);
            }
        } else {
            return Err(FhirError::invalid(
                name,
                "must reference Location/<id> or Practitioner/<id>",
            ));
        }
    }
    Ok((!whole_hospital).then_some(doctors))
}

#[get("/Schedule/{id}")]
pub async fn schedule_read(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let Ok(Some(id)) = params::scoped_id("id", &path, &state.hospital) else {
        return Err(SlotError::ScheduleNotFound(path.into_inner()).into());
    };
    let client = state.pool.get().await?;
    let filter = ScheduleFilter {
        ids: Some(vec![id]),
        ..Default::default()
    };
    match queries::schedules(&client, &filter, Some(1), 0).await?.first() {
        Some(s) => Ok(fhir(HttpResponse::Ok(), &resources::schedule(&state.settings, s))),
        None => Err(SlotError::ScheduleNotFound(path.into_inner()).into()),
    }
}

const SLOT_STATUSES: [&str; 4] = ["free", "busy", "busy-tentative", "busy-unavailable"];

#[get("/Slot")]
pub async fn slot_search(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, FhirError> {
    let pairs = params::parse_query(req.query_string())?;
    let mut paging = Paging::default();
    let mut f = SlotFilter::default();
    let mut range = TimeRange::default();
    for (name, value) in &pairs {
        if params::common(&mut paging, name, value)? {
            continue;
        }
        match name.as_str() {
            "_id" => {
                params::once(&f.ids, name)?;
                f.ids = Some(params::id_list(name, value, "Slot", &state.hospital)?);
            }
            "schedule" => {
                params::once(&f.schedules, name)?;
                f.schedules = Some(params::id_list(name, value, "Schedule", &state.hospital)?);
            }
            "status" => {
                params::once(&f.statuses, name)?;
                let statuses: Vec<String> = value.split(',').map(str::to_owned).collect();
                if let Some(bad) = statuses.iter().find(|s| !SLOT_STATUSES.contains(&s.as_str())) {
                    return Err(FhirError::invalid(
                        name,
                        format!(
                            "`{}` is not a slot status; use free, busy, busy-tentative or busy-unavailable",
                            bad.chars().take(40).collect::<String>()
                        ),
                    ));
                }
                f.statuses = Some(statuses);
            }
            "start" => range.narrow(name, value)?,
            "specialty" => {
                params::once(&f.departments, name)?;
                f.departments = Some(params::department_codes(name, value)?);
            }
            _ => {
                return Err(params::unknown(
                    name,
                    "_id, schedule, status, start, specialty, _count, _page",
                ));
            }
        }
    }
    f.from = range.from;
    f.until = range.until;
    let now = state.clock.now();
    let client = state.pool.get().await?;
    let total = queries::count_slots(&client, &f, now).await?;
    let rows = queries::slots(&client, &f, now, Some(i64::from(paging.count)), paging.offset()).await?;
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|s| {
            let r = resources::slot(&state.settings, s, false);
            (format!("{base}/Slot/{}", r["id"].as_str().unwrap_or_default()), r)
        })
        .collect();
    Ok(fhir(
        HttpResponse::Ok(),
        &bundle(&base, "Slot", &pairs, paging, total, entries),
    ))
}

#[get("/Slot/{id}")]
pub async fn slot_read(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let Ok(Some(id)) = params::scoped_id("id", &path, &state.hospital) else {
        return Err(SlotError::SlotNotFound(path.into_inner()).into());
    };
    let client = state.pool.get().await?;
    let filter = SlotFilter {
        ids: Some(vec![id]),
        ..Default::default()
    };
    match queries::slots(&client, &filter, state.clock.now(), Some(1), 0)
        .await?
        .first()
    {
        Some(s) => Ok(fhir(
            HttpResponse::Ok(),
            &resources::slot(&state.settings, s, false),
        )),
        None => Err(SlotError::SlotNotFound(path.into_inner()).into()),
    }
}

/// A booking, or a waitlist entry (候补), by its `<hospital>-<uuid>` id.
#[get("/Appointment/{id}")]
pub async fn appointment_read(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let raw = path.into_inner();
    let id = match raw.parse::<BookingRef>() {
        Ok(r) if r.hospital == state.hospital => r.id,
        _ => return Err(SlotError::BookingNotFound(raw).into()),
    };
    let client = state.pool.get().await?;
    if let Some(stored) = booking_queries::get_booking(&client, &state.hospital, id).await? {
        drop(client);
        let ctx = context(&state, stored.booking.schedule_id).await?;
        return Ok(fhir(
            HttpResponse::Ok(),
            &resources::appointment(&state.settings, &stored.booking, &ctx),
        ));
    }
    let Some((schedule, patient, status, promoted, created)) = queries::waitlist_entry(&client, id).await?
    else {
        return Err(SlotError::BookingNotFound(raw).into());
    };
    let promoted = match promoted {
        Some(booking) if status == "promoted" => {
            booking_queries::get_booking(&client, &state.hospital, booking).await?
        }
        _ => None,
    };
    drop(client);
    let ctx = context(&state, schedule).await?;
    let mut appointment = match promoted {
        // Promoted: the entry became this booking, and reads as it does.
        Some(stored) => resources::appointment(&state.settings, &stored.booking, &ctx),
        None => {
            resources::waitlist_appointment(&state.settings, id, patient, status == "waiting", created, &ctx)
        }
    };
    appointment["id"] = Value::String(raw);
    Ok(fhir(HttpResponse::Ok(), &appointment))
}

#[post("/Appointment/$find")]
pub async fn appointment_find(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, FhirError> {
    let body = read_body(&req, payload).await?;
    let (total, rows) = operations::find(&state, &body).await?;
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|s| {
            (
                format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                resources::proposed_appointment(&state.settings, s),
            )
        })
        .collect();
    Ok(fhir(
        HttpResponse::Ok(),
        &resources::searchset(total, &format!("{base}/Appointment/$find"), None, entries),
    ))
}

/// The channel the gateway established (`Jyt-Channel`).
fn channel(req: &HttpRequest) -> Result<Channel, FhirError> {
    let raw = req
        .headers()
        .get(CHANNEL_HEADER)
        .ok_or(RequestError::MissingHeader {
            header: CHANNEL_HEADER,
        })?;
    raw.to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FhirError::invalid(CHANNEL_HEADER, jyt_domain::ParseError::Channel.to_string()))
}

#[post("/Appointment/$hold")]
pub async fn appointment_hold(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, FhirError> {
    let key = IdempotencyKeyHeader::extract(&req).await?.0;
    let channel = channel(&req)?;
    let owner_app = crate::booking::owner::acting_app(&req)?;
    let signed_doctors = crate::booking::signed::doctors(&req)?;
    let body = read_body(&req, payload).await?;
    let outcome = operations::hold(&state, key, channel, (owner_app, signed_doctors), &body).await?;
    let ctx = context(&state, outcome.booking.schedule_id).await?;
    let appointment = resources::appointment(&state.settings, &outcome.booking, &ctx);
    let mut res = HttpResponse::Created();
    res.insert_header((
        header::LOCATION,
        format!(
            "{}/Appointment/{}",
            base_url(&state, &req),
            outcome.booking.booking_id
        ),
    ));
    if outcome.replayed {
        res.insert_header(("Idempotency-Replayed", "true"));
    }
    Ok(fhir(res, &appointment))
}

#[post("/Appointment/$book")]
pub async fn appointment_book(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, FhirError> {
    let body = read_body(&req, payload).await?;
    let stored = operations::book(&state, &body).await?;
    let ctx = context(&state, stored.booking.schedule_id).await?;
    Ok(fhir(
        HttpResponse::Ok(),
        &resources::appointment(&state.settings, &stored.booking, &ctx),
    ))
}

#[get("/$bulk-publish")]
pub async fn bulk_publish(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, FhirError> {
    bulk::serve(&state, &req, Output::Manifest).await
}

#[get("/bulk/{file}")]
pub async fn bulk_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    match Output::file(&path) {
        Some(output) => bulk::serve(&state, &req, output).await,
        None => Ok(not_found(&format!("bulk file {}", path.as_str()))),
    }
}
