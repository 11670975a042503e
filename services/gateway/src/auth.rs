//! Middleware on every `/v1` and signed `/fhir` request: read the body (up to the size
//! limit), check the signed headers (see [`crate::signing`]), remember the
//! nonce, apply the app's and the address's token buckets, and hand the
//! [`Caller`] to the handler. Operations endpoints (`/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`) are not signed.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::middleware::Next;
use actix_web::web::{self, BytesMut};
use chrono::Utc;
use futures::StreamExt;
use jyt_cache::redis;
use jyt_web::RequestError;

use crate::error::GatewayError;
use crate::signing::{self, HeaderProblem};
use crate::state::{Caller, GatewayState, HospitalCaller};
use secrecy::ExposeSecret;

fn header<'a>(req: &'a ServiceRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The end user's device address, from `limits.client_address_header`
/// (`X-Client-Address` by default): channel backends (the WeChat
/// mini-program server, an app's server) relay many patients' requests from
/// a few addresses of their own, so they pass the device's address on; a
/// trusted load balancer sets it for clients that connect directly. `None`
/// when absent or not an IP address: the address rules are then skipped
/// rather than applied to a backend's address, which would throttle every
/// patient behind it.
pub fn client_address(req: &ServiceRequest, header_name: &str) -> Option<String> {
    if header_name.is_empty() {
        return None;
    }
    let raw = header(req, header_name)?.split(',').next()?.trim();
    raw.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}

pub async fn authenticate(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let federation = req.path().starts_with("/federation/v1/");
    // FHIR channel calls are signed like /v1; the public bulk feed is not.
    let fhir = req.path().starts_with("/fhir/") && !crate::fhir::is_public_path(req.path());
    if !req.path().starts_with("/v1/") && !fhir && !federation {
        return next.call(req).await;
    }
    let Some(state) = req.app_data::<web::Data<GatewayState>>().cloned() else {
        return Err(GatewayError::Unexpected(anyhow::anyhow!("gateway state missing")).into());
    };
    if federation {
        let caller = verify_hospital(&state, &mut req).await?;
        req.extensions_mut().insert(caller);
        return next.call(req).await;
    }
    let caller = verify(&state, &mut req).await?;
    state.limits.check_app(&caller.app_id)?;
    if let Some(address) = caller.address.as_deref()
        && state.limits.address_rules_apply(caller.channel)
    {
        state.limits.check_address(address)?;
    }
    req.extensions_mut().insert(caller);
    next.call(req).await
}

async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<web::Bytes, GatewayError> {
    let declared = header(req, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RequestError::BodyTooLarge { limit }.into());
    }
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| RequestError::MalformedJson {
            detail: e.to_string(),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(RequestError::BodyTooLarge { limit }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[tracing::instrument(skip_all, fields(app))]
async fn verify(state: &GatewayState, req: &mut ServiceRequest) -> Result<Caller, GatewayError> {
    let app_id = header(req, signing::APP_ID).unwrap_or("").to_owned();
    let app = state.apps.get(&app_id).ok_or(GatewayError::UnknownApp)?;
    tracing::Span::current().record("app", app_id.as_str());
    let secrets: Vec<&[u8]> = app.secrets().collect();
    check_signed(state, req, &secrets, &format!("nonce:{app_id}")).await?;
    Ok(Caller {
        app_id,
        channel: app.channel,
        address: client_address(req, &state.settings.limits.client_address_header),
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
    check_signed(state, req, &[secret], &format!("nonce:hk:{key_id}")).await?;
    Ok(HospitalCaller {
        key_id,
        hospital: key.hospital.clone(),
    })
}

/// Timestamp, nonce and signature of a request signed with one of
/// `secrets`; the nonce is remembered under `nonce_scope`.
async fn check_signed(
    state: &GatewayState,
    req: &mut ServiceRequest,
    secrets: &[&[u8]],
    nonce_scope: &str,
) -> Result<(), GatewayError> {
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
    Ok(())
}
