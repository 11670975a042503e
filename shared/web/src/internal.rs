//! The door of a service that only the gateway (and jyt's own tools) may
//! call: every request but `/healthz`, `/readyz` and `/metrics` must carry
//! a valid internal token for this service (`jyt_signing::internal`), or
//! is answered `401 INTERNAL_AUTH_REQUIRED` before routing. The NetworkPolicy
//! is a second wall, not the only one.
//!
//! The operations paths are exempted by their exact raw path, so any other
//! spelling of them (`/%68ealthz`) needs a token too: the exemption can only
//! fail closed.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use jyt_signing::internal::{HEADER, Verifier};

use crate::ops::OPS_PATHS;
use crate::problem::Problem;

/// The authenticated internal caller (`gateway`, `jyt`, ...), in the
/// request's extensions for handlers and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalCaller(pub String);

/// Middleware (`from_fn`): with `web::Data<Verifier>` registered as app data.
pub async fn require_internal_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Probes and scrapes reach the operations paths without a token.
    if OPS_PATHS.contains(&req.path()) {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    }
    let outcome = match req.app_data::<web::Data<Verifier>>() {
        Some(verifier) => verifier.verify(req.headers().get(HEADER).and_then(|v| v.to_str().ok())),
        None => Err(jyt_signing::internal::Refusal::Missing),
    };
    match outcome {
        Ok(caller) => {
            req.extensions_mut().insert(InternalCaller(caller));
            next.call(req).await.map(ServiceResponse::map_into_left_body)
        }
        Err(refusal) => {
            tracing::warn!(
                reason = refusal.as_str(),
                path = req.path(),
                "internal token refused"
            );
            let res = Problem::new(
                StatusCode::UNAUTHORIZED,
                "INTERNAL_AUTH_REQUIRED",
                "Internal caller required",
            )
            .detail("this service answers only the gateway; call the city's gateway instead")
            .to_response(None);
            Ok(req.into_response(res).map_into_right_body())
        }
    }
}

/// The verifier of a service whose audience is `audience`.
pub fn verifier(key: &str, audience: &str, max_lifetime_seconds: i64) -> web::Data<Verifier> {
    web::Data::new(Verifier::new(key.as_bytes(), audience, max_lifetime_seconds))
}
