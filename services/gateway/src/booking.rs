//! The booking pipeline and the ownership rule, shared by every door that
//! books or acts on a booking: `/v1` (`crate::routes`) and FHIR
//! (`crate::fhir`). Handlers live in those modules; the rules live here, so
//! neither kind of handler imports the other.

use actix_web::HttpRequest;
use chrono::Utc;
use jyt_domain::{BookingRef, Channel, IdempotencyKey, SlotRef};
use jyt_web::RequestError;
use jyt_web::extract::IDEMPOTENCY_KEY;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::limits::{AdmitRequest, Admitted};
use crate::state::{Caller, GatewayState};
use crate::upstream::Forwarded;

/// The channel app the gateway acts for, named to the hospital on every
/// call that makes a booking or a waitlist entry; the hospital records it
/// as the booking's `owner_app`. Only the gateway sets it (a channel's own
/// headers are never passed on), and the hospital believes it because only
/// the gateway holds its internal token.
pub const APP_HEADER: &str = "Jyt-App";

/// On a read by id (`GET`), another channel app presents the patient's own
/// platform card number here (or [`PATIENT_ECARD_HEADER`]), as the
/// patient's consent. A header rather than the query string, so card
/// numbers never reach access logs.
pub const PATIENT_CARD_HEADER: &str = "X-Patient-Card";
/// Or the patient's e-card QR token.
pub const PATIENT_ECARD_HEADER: &str = "X-Patient-Ecard-Token";

/// [`APP_HEADER`]'s value for the calling app.
pub fn app_header(caller: &Caller) -> Result<HeaderValue, GatewayError> {
    // App ids are checked at start (a-z, 0-9), so this cannot fail.
    HeaderValue::from_str(&caller.app_id)
        .map_err(|e| GatewayError::Unexpected(anyhow::Error::new(e).context("the app id as a header")))
}

/// The patient's card presented in [`PATIENT_CARD_HEADER`] or
/// [`PATIENT_ECARD_HEADER`], if any.
pub fn patient_card_headers(req: &HttpRequest) -> Result<Option<CardRef<'_>>, GatewayError> {
    let header = |name: &'static str| -> Result<Option<&str>, GatewayError> {
        req.headers()
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| RequestError::invalid(name, "must be visible ASCII").into())
            })
            .transpose()
    };
    match (header(PATIENT_CARD_HEADER)?, header(PATIENT_ECARD_HEADER)?) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(RequestError::invalid(
            PATIENT_CARD_HEADER,
            format!("give at most one of {PATIENT_CARD_HEADER} and {PATIENT_ECARD_HEADER}"),
        )
        .into()),
        (card_number, ecard_token) => Ok(Some(CardRef {
            card_number,
            ecard_token,
        })),
    }
}

/// Identity errors name the body's fields; a card presented in a header is
/// refused naming the header.
pub fn as_card_header(e: GatewayError) -> GatewayError {
    match e {
        GatewayError::Request(RequestError::InvalidField { field, reason }) if field == "card_number" => {
            RequestError::invalid(PATIENT_CARD_HEADER, reason).into()
        }
        GatewayError::Request(RequestError::InvalidField { field, reason }) if field == "ecard_token" => {
            RequestError::invalid(PATIENT_ECARD_HEADER, reason).into()
        }
        other => other,
    }
}

/// What slot-inventory is sent: the identity the gateway established.
#[derive(Serialize)]
struct HospitalBookRequest<'a> {
    slot_id: &'a SlotRef,
    patient_id: Uuid,
    channel: Channel,
    #[serde(skip_serializing_if = "Option::is_none")]
    referral_id: Option<&'a str>,
}

/// One booking request, whichever door it came through (`/v1/bookings`
/// or FHIR `Appointment/$hold`).
pub struct BookingAttempt<'a> {
    pub slot: &'a SlotRef,
    pub card: CardRef<'a>,
    /// Whom to book, when not the card holder: a bound family member.
    pub patient_id: Option<Uuid>,
    pub referral: Option<&'a str>,
    pub key: &'a IdempotencyKey,
}

/// How the hospital is asked to book: its JSON API or its FHIR operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HospitalApi {
    /// `POST /v1/bookings`; the answer's `booking_id` names the booking.
    Json,
    /// `POST /fhir/Appointment/$hold`; the Appointment's `id` names it.
    Fhir,
}

/// The booking pipeline every booking door shares: identity, family,
/// anti-scalping and rate limits, standing, the city-wide daily limit,
/// then the hospital; the owning app is recorded on success. One
/// function, so the rules cannot drift apart between doors.
pub async fn book(
    state: &GatewayState,
    caller: &Caller,
    attempt: &BookingAttempt<'_>,
    api: HospitalApi,
) -> Result<Forwarded, GatewayError> {
    let now = Utc::now();
    let slot = attempt.slot;
    // A stranger hospital is refused before anyone is asked anything.
    state.upstreams.route(&slot.hospital)?;
    let mut headers = HeaderMap::new();
    let key_header = HeaderValue::from_str(attempt.key.as_str())
        .map_err(|_| RequestError::invalid(IDEMPOTENCY_KEY, "must be visible ASCII"))?;
    headers.insert(IDEMPOTENCY_KEY, key_header);
    // The booking row records its app: no extra call, one more column.
    headers.insert(APP_HEADER, app_header(caller)?);

    let (holder, patient) = state
        .patients
        .acting(attempt.card, attempt.patient_id, now)
        .await?;

    // Anti-scalping and limits: every Redis rule in one round trip (see
    // `crate::limits`), then the person's bucket (in memory). The bucket
    // comes second so that only a fresh nonce spends it: a replayed
    // request must not drain a patient's bookings.
    let request_id = format!("{}|{}|{}", caller.app_id, attempt.key.as_str(), slot);
    let address = caller
        .address
        .as_deref()
        .filter(|_| state.limits.address_rules_apply(caller.channel));
    // The FHIR door answers in OperationOutcomes: it asks the hospital.
    let sold_out =
        api == HospitalApi::Json && state.sold_out.is_sold_out(slot, caller.channel, now.timestamp());
    let mut read_standing = true;
    let admission = loop {
        let req = AdmitRequest {
            holder,
            patient,
            address,
            nonce: caller.nonce.as_ref(),
            request: &request_id,
            sold_out,
            read_standing,
        };
        match state.limits.admit(&req, now).await? {
            Admitted::Go(admission) => {
                if let Err(limited) = state.limits.check_person(holder, now) {
                    state.limits.leave(admission, true).await;
                    return Err(limited);
                }
                break admission;
            }
            Admitted::SoldOut => {
                state.limits.check_person(holder, now)?;
                state.sold_out.answered_here();
                return Ok(sold_out_answer());
            }
            Admitted::Barred(until) => return Err(GatewayError::PatientBarred { until }),
            Admitted::StandingUnknown if read_standing => {
                // Not cached: asked once, then admitted with the answer.
                if let Some(until) = state.patients.ask_standing(patient, now).await? {
                    return Err(GatewayError::PatientBarred { until });
                }
                read_standing = false;
            }
            Admitted::StandingUnknown => {
                return Err(GatewayError::Unexpected(anyhow::anyhow!(
                    "the admission asked for a standing it was given"
                )));
            }
        }
    };

    // A resident signed with a family doctor team of this community
    // centre may draw from the `signed` pool of the team's doctors'
    // schedules. Asked at community centres only: a tertiary hospital's
    // surge never waits for it.
    if crate::signings::keeps_signed_share(state, &slot.hospital)
        && let Some(doctors) =
            crate::signings::signed_doctors_at(&state.patients, patient, &slot.hospital).await
        && let Ok(value) = HeaderValue::from_str(&doctors)
    {
        headers.insert(crate::signings::SIGNED_DOCTORS_HEADER, value);
    }
    let (path, upstream_body) = match api {
        HospitalApi::Json => (
            "/v1/bookings",
            serde_json::to_vec(&HospitalBookRequest {
                slot_id: slot,
                patient_id: patient,
                channel: caller.channel,
                referral_id: attempt.referral,
            }),
        ),
        HospitalApi::Fhir => {
            headers.extend(crate::fhir::public_headers(&state.settings.fhir));
            headers.insert(
                crate::fhir::CHANNEL_HEADER,
                HeaderValue::from_static(caller.channel.as_str()),
            );
            (
                "/fhir/Appointment/$hold",
                serde_json::to_vec(&crate::fhir::hold_parameters(slot, patient, attempt.referral)),
            )
        }
    };
    let upstream_body = upstream_body.map_err(|e| GatewayError::Unexpected(e.into()))?;
    let answer = state
        .upstreams
        .forward(
            &slot.hospital,
            reqwest::Method::POST,
            path,
            headers,
            Some(upstream_body),
        )
        .await;
    // Give the day's reservation back only on a definite refusal: a 4xx, or
    // the hospital's own 503 (its lock or database briefly unavailable:
    // nothing was written). After a timeout the booking may have been
    // made, and a retry with the same Idempotency-Key reuses this
    // reservation anyway. A lottery entry (202) is no booking either: the
    // day's limit was checked at entry, and the hospital's per-person
    // rules are applied again by the draw. The in-flight mark goes either way.
    let refused = |r: &Forwarded| {
        r.status.is_client_error()
            || r.status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE
            || r.status == actix_web::http::StatusCode::ACCEPTED
    };
    let give_back = answer.as_ref().is_ok_and(refused);
    // A new booking, recorded at the hospital as this app's: cached so
    // reads, payments and its later notices (停诊, cancellation, ...) need
    // not ask. (A replay may answer a booking another app made for the
    // same patient: the hospital's row says whose, when asked.)
    let booking = answer.as_ref().ok().and_then(|a| new_booking_id(a, api));
    // Two round trips, one wait: the admission is left while the owner is
    // remembered.
    let remember = async {
        if let Some(booking) = &booking {
            state.notifier.remember_booking(booking, &caller.app_id).await;
        }
    };
    futures::join!(state.limits.leave(admission, give_back), remember);
    answer
}

/// The id of the booking the hospital just made, from its answer: `None`
/// for a refusal or a replayed answer. Only the id is read, not the whole
/// booking.
fn new_booking_id(answer: &Forwarded, api: HospitalApi) -> Option<String> {
    /// The two doors' id fields: the JSON API's `booking_id`, the FHIR
    /// Appointment's `id`.
    #[derive(Deserialize)]
    struct Ids<'a> {
        #[serde(borrow)]
        booking_id: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    let replayed = answer
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("idempotency-replayed"));
    if !answer.status.is_success() || replayed {
        return None;
    }
    let ids = serde_json::from_slice::<Ids<'_>>(&answer.body).ok()?;
    let id = match api {
        HospitalApi::Json => ids.booking_id,
        HospitalApi::Fhir => ids.id,
    };
    id.map(std::borrow::Cow::into_owned)
}

/// The answer to an attempt on a segment this replica knows is sold out:
/// the hospital's own `409 SLOT_SOLD_OUT`, word for word, so a channel
/// cannot tell (nor needs to) which of the two answered.
fn sold_out_answer() -> Forwarded {
    static BODY: std::sync::LazyLock<actix_web::web::Bytes> = std::sync::LazyLock::new(|| {
        let status = actix_web::http::StatusCode::CONFLICT;
        let problem = jyt_web::Problem::new(status, "SLOT_SOLD_OUT", "Conflict")
            .detail("no seats are left in this time segment");
        serde_json::to_vec(&problem).unwrap_or_default().into()
    });
    Forwarded {
        status: actix_web::http::StatusCode::CONFLICT,
        headers: vec![(
            "content-type".to_owned(),
            jyt_web::problem::CONTENT_TYPE.as_bytes().to_vec(),
        )],
        body: BODY.clone(),
    }
}

/// What the owner's check reads of the hospital's booking.
#[derive(Deserialize)]
struct OwnerFacts {
    patient_id: Uuid,
    #[serde(default)]
    owner_app: Option<String>,
}

/// Who may act on a booking by its id: the channel app it belongs to (its
/// `owner_app`, on the hospital's booking row), or any channel app that
/// presents the patient's own card (`card`: the patient consents through
/// that app). The owner never changes, so it is cached in Redis
/// (`{h:<hospital>}:booking-app:<id>`); on a miss the hospital is asked and its answer
/// cached. Fails closed: a booking of no app (a hospital window) or one the
/// hospital does not know is `NOT_YOUR_BOOKING`, and a hospital that cannot
/// answer `HOSPITAL_UNAVAILABLE`, never a guess.
pub async fn ensure_owner(
    state: &GatewayState,
    caller: &Caller,
    booking: &BookingRef,
    card: Option<CardRef<'_>>,
) -> Result<(), GatewayError> {
    authorize(state, caller, booking, card).await.map(|_| ())
}

/// [`ensure_owner`], answering the hospital's booking when it was read.
pub async fn authorize(
    state: &GatewayState,
    caller: &Caller,
    booking: &BookingRef,
    card: Option<CardRef<'_>>,
) -> Result<Option<Forwarded>, GatewayError> {
    // A card given is checked whoever calls: bad input is refused as such.
    let presented = match card {
        Some(card) => Some(state.patients.resolve(card, Utc::now()).await?),
        None => None,
    };
    let cached = match state.notifier.booking_app(&booking.to_string()).await {
        Ok(app) => app,
        Err(e) => {
            // Only a cache: the hospital's row still answers.
            tracing::warn!(error = %e, "the booking-owner cache did not answer; asking the hospital");
            None
        }
    };
    authorize_known(state, caller, booking, presented, cached).await
}

/// [`authorize`] once the presented card's holder and the cached owner
/// are known (the payment's script reads the cache with its own keys).
pub(crate) async fn authorize_known(
    state: &GatewayState,
    caller: &Caller,
    booking: &BookingRef,
    presented: Option<Uuid>,
    cached: Option<String>,
) -> Result<Option<Forwarded>, GatewayError> {
    if cached.as_deref() == Some(caller.app_id.as_str()) {
        return Ok(None);
    }
    if cached.is_some() && presented.is_none() {
        return Err(GatewayError::NotYourBooking);
    }
    let answer = state.upstreams.booking(booking).await?;
    if answer.status.is_server_error() {
        return Err(GatewayError::HospitalUnavailable {
            hospital: booking.hospital.to_string(),
            reason: format!("answered {} to the owner's check", answer.status),
        });
    }
    if !answer.status.is_success() {
        // Unknown at the hospital: answered as anyone else's booking, so a
        // refusal never tells whether an id exists.
        return Err(GatewayError::NotYourBooking);
    }
    let facts: OwnerFacts = serde_json::from_slice(&answer.body)
        .map_err(|e| GatewayError::Unexpected(anyhow::Error::new(e).context("the hospital's booking")))?;
    if cached.is_none()
        && let Some(owner) = &facts.owner_app
    {
        state.notifier.remember_booking(&booking.to_string(), owner).await;
    }
    let owns = facts.owner_app.as_deref() == Some(caller.app_id.as_str());
    if owns || presented == Some(facts.patient_id) {
        Ok(Some(answer))
    } else {
        Err(GatewayError::NotYourBooking)
    }
}

/// What the owner's check reads of a record the hospital answered (a
/// waitlist place, a lottery entry): whose it is and which app made it.
#[derive(Deserialize)]
struct RecordOwner {
    patient_id: Uuid,
    #[serde(default)]
    owner_app: Option<String>,
}

/// [`read_as_owner`] for a record a channel names by its reference
/// (`<hospital>-<uuid>`, path parameter `field`): the reference parsed
/// (bad input `400` naming `field`), its hospital routed, the record read
/// at `upstream(reference)`.
pub async fn read_referenced_as_owner(
    state: &GatewayState,
    caller: &Caller,
    req: &HttpRequest,
    raw: &str,
    field: &str,
    upstream: impl FnOnce(&jyt_domain::BookingRef) -> String,
    what: &str,
) -> Result<(jyt_domain::BookingRef, Forwarded), GatewayError> {
    let reference: jyt_domain::BookingRef = raw
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid(field, e.to_string()))?;
    state.upstreams.route(&reference.hospital)?;
    let answer = read_as_owner(
        state,
        caller,
        req,
        &reference.hospital,
        &upstream(&reference),
        what,
    )
    .await?;
    Ok((reference, answer))
}

/// Read a patient's record by id at its hospital (`upstream`, e.g.
/// `/v1/waitlist/<uuid>`) for the app that made it, or for any app
/// presenting the patient's own card in [`PATIENT_CARD_HEADER`] /
/// [`PATIENT_ECARD_HEADER`]. Fails closed like [`authorize`]: unknown at
/// the hospital or someone else's is `NOT_YOUR_BOOKING`, a hospital that
/// cannot answer `HOSPITAL_UNAVAILABLE`.
pub async fn read_as_owner(
    state: &GatewayState,
    caller: &Caller,
    req: &HttpRequest,
    hospital: &jyt_domain::HospitalId,
    upstream: &str,
    what: &str,
) -> Result<Forwarded, GatewayError> {
    // A card given is checked whoever calls: bad input is refused as such.
    let presented = match patient_card_headers(req)? {
        Some(card) => Some(
            state
                .patients
                .resolve(card, Utc::now())
                .await
                .map_err(as_card_header)?,
        ),
        None => None,
    };
    let answer = state
        .upstreams
        .forward(hospital, reqwest::Method::GET, upstream, HeaderMap::new(), None)
        .await?;
    if answer.status.is_server_error() {
        return Err(GatewayError::HospitalUnavailable {
            hospital: hospital.to_string(),
            reason: format!("answered {} for {what}", answer.status),
        });
    }
    if !answer.status.is_success() {
        // Unknown at the hospital: answered as anyone else's.
        return Err(GatewayError::NotYourBooking);
    }
    let owner: RecordOwner = serde_json::from_slice(&answer.body).map_err(|e| {
        GatewayError::Unexpected(anyhow::Error::new(e).context(format!("the hospital's {what}")))
    })?;
    let owns = owner.owner_app.as_deref() == Some(caller.app_id.as_str());
    if owns || presented == Some(owner.patient_id) {
        Ok(answer)
    } else {
        Err(GatewayError::NotYourBooking)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;

    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Forwarded {
        Forwarded {
            status: StatusCode::from_u16(status).unwrap(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_owned().into(),
        }
    }

    #[test]
    fn a_new_booking_is_named_by_its_door_s_id_field_and_nothing_else_is() {
        let json = r#"{"booking_id":"h1-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","status":"held","id":"no"}"#;
        assert_eq!(
            new_booking_id(&answer(201, &[], json), HospitalApi::Json).as_deref(),
            Some("h1-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
        );
        let fhir = r#"{"resourceType":"Appointment","id":"h1-0190a1b2","status":"pending"}"#;
        assert_eq!(
            new_booking_id(&answer(201, &[], fhir), HospitalApi::Fhir).as_deref(),
            Some("h1-0190a1b2")
        );
        // An escaped string is read whole.
        assert_eq!(
            new_booking_id(
                &answer(201, &[], r#"{"booking_id":"h1-\u0030a"}"#),
                HospitalApi::Json
            )
            .as_deref(),
            Some("h1-0a")
        );
        // A replay names a booking made before (perhaps by another app), a
        // refusal none, and an answer without the field or not JSON none.
        let replayed = [("Idempotency-Replayed", "true")];
        assert_eq!(
            new_booking_id(&answer(201, &replayed, json), HospitalApi::Json),
            None
        );
        assert_eq!(new_booking_id(&answer(409, &[], json), HospitalApi::Json), None);
        assert_eq!(new_booking_id(&answer(201, &[], fhir), HospitalApi::Json), None);
        assert_eq!(
            new_booking_id(&answer(201, &[], r#"{"booking_id":7}"#), HospitalApi::Json),
            None
        );
        assert_eq!(
            new_booking_id(&answer(201, &[], "not json"), HospitalApi::Json),
            None
        );
    }
}
