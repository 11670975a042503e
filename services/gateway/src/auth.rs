//! Who may call what, before any handler runs.
//!
//! - [`canonical_path`] (outermost, before routing): a raw path that is not
//!   in canonical form is refused with 400, so no two spellings of one route
//!   exist (percent-encoded letters, digits or `/`, doubled slashes, dot
//!   segments, backslashes).
//! - [`authenticate_channel`] wraps the `/v1` and signed `/fhir` scopes and
//!   [`authenticate_hospital`] the `/federation/v1` scope: authentication is
//!   bound to the routed scope, not to a prefix of the path string.
//!   They read the body (up to the size limit), check the signed headers
//!   (see [`jyt_signing::channel`]), remember the nonce, apply the app's and the
//!   address's token buckets, and hand the [`Caller`] / [`HospitalCaller`]
//!   to the handler, whose extractor answers 401 if it is missing.
//!
//! Operations endpoints (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`)
//! and the public FHIR feed are not signed.

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use chrono::Utc;
use futures::future::{Ready, ready};
use jyt_cache::redis;
use jyt_web::RequestError;

use crate::error::GatewayError;
use crate::state::{Caller, GatewayState, HospitalCaller};
use jyt_signing::channel::{self as signing, HeaderProblem};
use secrecy::ExposeSecret;

/// The header a channel app whose backend relays its patients' requests
/// (`channel_apps.<id>.relays_device_address`) names the patient's device
/// address in. Only such an app, once its signature is checked, is believed.
pub const DEVICE_ADDRESS: &str = "X-Device-Address";

fn header<'a>(req: &'a ServiceRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Why a raw path is not canonical, or `None` when it is. Canonical: starts
/// with `/`; no empty, `.` or `..` segment (except one trailing slash is
/// left to routing); no backslash; no percent-encoding of an unreserved
/// character (RFC 3986: letters, digits, `-._~`), of `/`, `\` or `%`; no
/// broken `%` escape; nothing outside printable ASCII.
pub fn non_canonical(raw: &str) -> Option<&'static str> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Some("must start with /");
    }
    if raw.contains('\\') {
        return Some("must not contain a backslash");
    }
    if bytes.iter().any(|b| !(0x21..0x7f).contains(b)) {
        return Some("must be printable ASCII");
    }
    let segments: Vec<&str> = raw[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && i != last {
            return Some("must not contain an empty segment (//)");
        }
        if *segment == "." || *segment == ".." {
            return Some("must not contain a dot segment");
        }
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(decoded) = hex else {
                return Some("has a broken percent-escape");
            };
            if decoded.is_ascii_alphanumeric() || b"-._~/\\%".contains(&decoded) {
                return Some("must not percent-encode a letter, digit, -._~, /, \\ or %");
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    None
}

/// Middleware, outermost: refuse a non-canonical raw path with
/// `400 NON_CANONICAL_PATH` before actix decodes and routes it.
pub async fn canonical_path(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(reason) = non_canonical(req.uri().path()) {
        return Err(GatewayError::NonCanonicalPath(reason).into());
    }
    next.call(req).await
}

/// Whether `ip` is in one of `limits.trusted_proxies`.
fn trusted_proxy(state: &GatewayState, ip: IpAddr) -> bool {
    state.trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// The address a request comes from, for the per-address rules: the TCP
/// peer, unless the peer is a configured trusted proxy (the Ingress), which
/// names the client's address in `limits.client_address_header`
/// (`X-Client-Address`; the Ingress sets it and drops any value the client
/// sent). A client that connects directly cannot choose its address by
/// sending the header.
pub fn connection_address(state: &GatewayState, req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let name = state.settings.limits.client_address_header.as_str();
    if name.is_empty() || !trusted_proxy(state, peer) {
        return Some(peer);
    }
    let relayed = req
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    Some(relayed.unwrap_or(peer))
}

/// The patient's address for a signed channel request: the device address
/// a relaying app's backend names in [`DEVICE_ADDRESS`] (its signature
/// vouches for it), else the connection's address.
fn caller_address(state: &GatewayState, req: &ServiceRequest, relays_device: bool) -> Option<String> {
    if relays_device
        && let Some(ip) = header(req, DEVICE_ADDRESS).and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return Some(ip.to_string());
    }
    connection_address(state, req.request()).map(|ip| ip.to_string())
}

fn state_of(req: &ServiceRequest) -> Result<web::Data<GatewayState>, GatewayError> {
    req.app_data::<web::Data<GatewayState>>()
        .cloned()
        .ok_or_else(|| GatewayError::Unexpected(anyhow::anyhow!("gateway state missing")))
}

/// Middleware of the `/v1` and signed `/fhir` scopes: a channel app's signed request.
///
/// A refusal is answered here, as a response carrying its request, not
/// returned as an error: the metrics (`jyt_web::ops::record_http_metrics`)
/// then label it by its route after routing, as every other answer, and
/// need not match the path against every route before it (issue 20).
pub async fn authenticate_channel(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = state_of(&req)?;
    let verdict = admit_channel(&state, &mut req).await;
    pass_on(req, next, verdict).await
}

/// The signature, then the app's and the address's limits.
async fn admit_channel(state: &GatewayState, req: &mut ServiceRequest) -> Result<Caller, GatewayError> {
    let caller = verify(state, req).await?;
    state.limits.check_app(&caller.app_id)?;
    if let Some(address) = caller.address.as_deref()
        && state.limits.address_rules_apply(caller.channel)
    {
        state.limits.check_address(address)?;
    }
    Ok(caller)
}

/// Middleware of the `/federation/v1` scope: a member hospital's signed
/// request (a refusal answered as [`authenticate_channel`]'s).
pub async fn authenticate_hospital(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = state_of(&req)?;
    let verdict = verify_hospital(&state, &mut req).await;
    pass_on(req, next, verdict).await
}

/// An authenticated caller goes on to its handler, found in the request's
/// extensions; a refusal is answered here.
async fn pass_on<T: 'static>(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
    verdict: Result<T, GatewayError>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match verdict {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.call(req).await.map(ServiceResponse::map_into_left_body)
        }
        Err(refused) => Ok(req.error_response(refused).map_into_right_body()),
    }
}

/// A handler that takes a [`Caller`] cannot run without a verified
/// signature, whatever the routing: a missing caller is 401, never a
/// default.
impl FromRequest for Caller {
    type Error = GatewayError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or(GatewayError::BadSignature),
        )
    }
}

impl FromRequest for HospitalCaller {
    type Error = GatewayError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<HospitalCaller>()
                .cloned()
                .ok_or(GatewayError::BadSignature),
        )
    }
}

async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<web::Bytes, GatewayError> {
    let declared = jyt_web::extract::declared_length(req.headers());
    Ok(jyt_web::extract::read_limited(req.take_payload(), declared, limit).await?)
}

#[tracing::instrument(skip_all, fields(app))]
async fn verify(state: &GatewayState, req: &mut ServiceRequest) -> Result<Caller, GatewayError> {
    let app_id = header(req, signing::APP_ID).unwrap_or("").to_owned();
    let app = state.apps.get(&app_id).ok_or(GatewayError::UnknownApp)?;
    tracing::Span::current().record("app", app_id.as_str());
    let secrets: Vec<&[u8]> = app.secrets().collect();
    // A booking spends its nonce in its one admission script, once the
    // patient (and so the hash tag) is known; see `crate::limits`. Its
    // handler does nothing before that script that a replay could repeat.
    let defer = req.method() == actix_web::http::Method::POST && req.path() == BOOKINGS_PATH;
    let nonce = check_signed(state, req, &secrets, &format!("nonce:{app_id}"), defer).await?;
    Ok(Caller {
        address: caller_address(state, req, app.relays_device_address),
        nonce: nonce.map(|nonce| crate::state::DeferredNonce {
            app_id: app_id.clone(),
            nonce,
        }),
        app_id,
        channel: app.channel,
    })
}

/// A member hospital's HIS on the federation API: the same signed
/// request, with the hospital's key id in `X-App-Id`.
#[tracing::instrument(skip_all, fields(key))]
async fn verify_hospital(
    state: &GatewayState,
    req: &mut ServiceRequest,
) -> Result<HospitalCaller, GatewayError> {
    let key_id = header(req, signing::APP_ID).unwrap_or("").to_owned();
    let key = state
        .settings
        .hospital_keys
        .get(&key_id)
        .ok_or(GatewayError::UnknownApp)?;
    tracing::Span::current().record("key", key_id.as_str());
    let secret = key.secret.expose_secret().as_bytes();
    check_signed(state, req, &[secret], &format!("nonce:hk:{key_id}"), false).await?;
    Ok(HospitalCaller {
        key_id,
        hospital: key.hospital.clone(),
    })
}

/// The one path whose nonce is spent later, by the booking's admission.
const BOOKINGS_PATH: &str = "/v1/bookings";

/// Timestamp, nonce and signature of a request signed with one of
/// `secrets`; the nonce is remembered under `nonce_scope`, or, with
/// `defer`, answered unspent for the booking's admission script to spend.
async fn check_signed(
    state: &GatewayState,
    req: &mut ServiceRequest,
    secrets: &[&[u8]],
    nonce_scope: &str,
    defer: bool,
) -> Result<Option<String>, GatewayError> {
    let timestamp = header(req, signing::TIMESTAMP)
        .ok_or(RequestError::MissingHeader {
            header: signing::TIMESTAMP,
        })
        .and_then(|v| {
            signing::parse_timestamp(v)
                .map_err(|_| RequestError::invalid(signing::TIMESTAMP, "must be unix seconds"))
        })?;
    let nonce = header(req, signing::NONCE)
        .ok_or(RequestError::MissingHeader {
            header: signing::NONCE,
        })?
        .to_owned();
    signing::valid_nonce(&nonce).map_err(|_: HeaderProblem| {
        RequestError::invalid(signing::NONCE, "must be 16 to 64 of A-Z a-z 0-9 - _")
    })?;
    let signature = header(req, signing::SIGNATURE)
        .ok_or(GatewayError::BadSignature)?
        .to_owned();
    let max_skew = state.settings.signing.max_skew_seconds;
    if (Utc::now().timestamp() - timestamp).abs() > max_skew {
        return Err(GatewayError::StaleTimestamp {
            max_skew_seconds: max_skew,
        });
    }
    let body = read_body(req, state.settings.http.max_body_bytes).await?;
    let canonical = signing::canonical_string(
        req.method().as_str(),
        req.path(),
        req.query_string(),
        timestamp,
        &nonce,
        &body,
    );
    if !signing::verify_signature(secrets.iter().copied(), &canonical, &signature) {
        return Err(GatewayError::BadSignature);
    }
    if defer {
        req.set_payload(actix_web::dev::Payload::from(body));
        return Ok(Some(nonce));
    }
    // Only after the signature: nobody can burn an app's nonces without its secret.
    let key = state.keys.plain(&format!("{nonce_scope}:{nonce}"));
    let mut conn = state.redis.clone();
    let fresh: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(timestamp)
        .arg("NX")
        .arg("EX")
        .arg(state.settings.signing.nonce_ttl_seconds)
        .query_async(&mut conn)
        .await?;
    if fresh.is_none() {
        return Err(GatewayError::ReplayedNonce);
    }
    req.set_payload(actix_web::dev::Payload::from(body));
    Ok(None)
}
