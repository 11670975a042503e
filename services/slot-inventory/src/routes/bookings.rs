use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use jyt_web::{IdempotencyKeyHeader, Json};

use super::booking_ref;
use crate::booking::service::{self, BookOutcome};
use crate::booking::{BookRequest, lifecycle, owner, queries};
use crate::error::SlotError;
use crate::state::AppState;

/// Book a seat in a time segment, for the channel app the gateway names in
/// `Jyt-App` (none: a hospital's own window system).
#[post("/v1/bookings")]
#[tracing::instrument(skip_all, fields(slot = %body.0.slot_id, channel = %body.0.channel))]
pub async fn create(
    state: web::Data<AppState>,
    http: HttpRequest,
    key: IdempotencyKeyHeader,
    body: Json<BookRequest>,
) -> Result<HttpResponse, SlotError> {
    let mut req = body.0;
    req.owner_app = owner::acting_app(&http)?;
    req.signed_doctors = crate::booking::signed::doctors(&http)?;
    // On its own task: a client hanging up must not cancel us between the
    // Redis hold and the PostgreSQL write.
    answer(tokio::spawn(tracing::Instrument::in_current_span(service::book(
        state.get_ref().clone(),
        req,
        key.0,
    ))))
    .await
}

/// `POST /v1/bookings` of the PostgreSQL-lock baseline
/// (`booking.lock = "postgres"`), bound instead of [`create`] at start.
#[post("/v1/bookings")]
#[tracing::instrument(skip_all, fields(slot = %body.0.slot_id, channel = %body.0.channel))]
pub async fn create_with_postgres_lock(
    state: web::Data<AppState>,
    http: HttpRequest,
    key: IdempotencyKeyHeader,
    body: Json<BookRequest>,
) -> Result<HttpResponse, SlotError> {
    let mut req = body.0;
    req.owner_app = owner::acting_app(&http)?;
    req.signed_doctors = crate::booking::signed::doctors(&http)?;
    answer(tokio::spawn(tracing::Instrument::in_current_span(
        service::book_with_postgres_lock(state.get_ref().clone(), req, key.0),
    )))
    .await
}

/// `201` with the booking (and `Idempotency-Replayed` on a replay).
async fn answer(
    task: tokio::task::JoinHandle<Result<BookOutcome, SlotError>>,
) -> Result<HttpResponse, SlotError> {
    let BookOutcome { booking, replayed } = task
        .await
        .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("booking task failed: {e}")))??;
    let mut res = HttpResponse::Created();
    res.insert_header((header::LOCATION, format!("/v1/bookings/{}", booking.booking_id)));
    if replayed {
        res.insert_header(("Idempotency-Replayed", "true"));
    }
    Ok(res.json(booking))
}

/// `GET /v1/bookings/{booking_id}`.
#[get("")]
pub async fn get(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, SlotError> {
    let raw = path.into_inner();
    let booking = booking_ref(&raw)?;
    if booking.hospital != state.hospital {
        return Err(SlotError::BookingNotFound(raw));
    }
    let client = state.pool.get().await?;
    match queries::get_booking(&client, &state.hospital, booking.id).await? {
        Some(stored) => Ok(HttpResponse::Ok().json(stored.booking)),
        None => Err(SlotError::BookingNotFound(raw)),
    }
}

/// The most bookings one lookup may name.
pub const LOOKUP_MAX: usize = 200;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    booking_ids: Vec<String>,
}

/// Many bookings as `GET /v1/bookings/{id}` shows each, in one read: the
/// gateway's notifier asks before each reminder or hold warning whether it
/// still applies, and the evening before a busy day that is tens of
/// thousands of bookings. Answers those that exist (`bookings`, in no
/// particular order); an id of another hospital is simply not found here.
#[post("/v1/bookings/lookup")]
pub async fn lookup(
    state: web::Data<AppState>,
    body: Json<LookupRequest>,
) -> Result<HttpResponse, SlotError> {
    let raw = &body.0.booking_ids;
    if raw.is_empty() || raw.len() > LOOKUP_MAX {
        return Err(jyt_web::RequestError::invalid(
            "booking_ids",
            format!("must name 1 to {LOOKUP_MAX} bookings"),
        )
        .into());
    }
    let mut ids = Vec::with_capacity(raw.len());
    for r in raw {
        let booking = r.parse::<jyt_domain::BookingRef>().map_err(|e| {
            SlotError::from(jyt_web::RequestError::invalid(
                "booking_ids",
                format!("`{r}`: {e}"),
            ))
        })?;
        if booking.hospital == state.hospital {
            ids.push(booking.id);
        }
    }
    let client = state.pool.get().await?;
    let found = queries::get_bookings(&client, &state.hospital, &ids).await?;
    let bookings: Vec<_> = found.into_iter().map(|s| s.booking).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "bookings": bookings })))
}

/// Pay a held booking (from the channel's payment notification or the
/// card's prepaid balance, via the gateway).
///
/// `POST /v1/bookings/{booking_id}/confirm`.
#[post("/confirm")]
pub async fn confirm(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<lifecycle::ConfirmRequest>,
) -> Result<HttpResponse, SlotError> {
    let booking = booking_ref(&path)?;
    let stored = lifecycle::confirm(&state, &booking, &body.0).await?;
    Ok(HttpResponse::Ok().json(stored.booking))
}

/// The patient cancels, before the hospital's cancellation deadline.
///
/// `POST /v1/bookings/{booking_id}/cancel`.
#[post("/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<lifecycle::CancelRequest>,
) -> Result<HttpResponse, SlotError> {
    let booking = booking_ref(&path)?;
    let stored = lifecycle::cancel(&state, &booking, &body.0).await?;
    Ok(HttpResponse::Ok().json(stored.booking))
}

/// 取号 at the hospital: answers the booking with its queue number. A wrong
/// code answers 403 `WRONG_PICKUP_CODE` with `attempts_left`; the last one
/// allowed, and every attempt after it, 423 `PICKUP_LOCKED`. A `patient_id`
/// other than the booking's answers 404 `BOOKING_NOT_FOUND`.
///
/// `POST /v1/bookings/{booking_id}/check-in`.
#[post("/check-in")]
pub async fn check_in(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Json<lifecycle::CheckInRequest>,
) -> Result<HttpResponse, SlotError> {
    let booking = booking_ref(&path)?;
    let stored = lifecycle::check_in(&state, &booking, &body.0).await?;
    Ok(HttpResponse::Ok().json(stored.booking))
}
