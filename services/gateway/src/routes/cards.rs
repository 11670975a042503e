//! A patient's card services that move money or mint credentials, through
//! their channel. card-issuing answers only the gateway, so these signed
//! routes are the only way in:
//!
//! - `POST /v1/cards/top-ups`: the channel's payment notification for a
//!   top-up (the patient paid the channel; the channel tells us). The
//!   balance moves only on this signed notification, and only once per
//!   channel transaction: card-issuing's ledger is idempotent under
//!   (channel, `<app>:<payment_reference>`), so two apps of one channel
//!   cannot collide and a retried notification credits nothing twice.
//! - `POST /v1/cards/ecard-token`: a fresh e-card QR token for the patient.
//! - `POST /v1/cards/cancel`: cancel the card and pay its balance out
//!   through the calling channel.
//!
//! The channel (recorded on the ledger) is always the signed app's, never
//! one named in the body.

use actix_web::{HttpResponse, post, web};
use chrono::Utc;
use jyt_web::{Json, RequestError};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::state::{Caller, GatewayState};

/// The card: one of `card_number` and `ecard_token`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardRequest {
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub ecard_token: Option<String>,
}

/// A channel's notification that the patient paid it `amount_fen` to top
/// up the card.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpNotification {
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub ecard_token: Option<String>,
    /// Fen, 1 to 1,000,000 (10,000 yuan).
    pub amount_fen: i64,
    /// The channel's own transaction id: a retry with the same one
    /// credits nothing twice.
    pub payment_reference: String,
}

/// The largest single top-up, in fen (10,000 yuan).
const MAX_TOP_UP_FEN: i64 = 1_000_000;

/// Ask card-issuing to do `action` (`top-ups`, `ecard-token`, `cancel`)
/// on the card a request names; its answer is passed back as it came.
async fn relay_to_card(
    state: &GatewayState,
    number: Option<&str>,
    token: Option<&str>,
    action: &str,
    body: &serde_json::Value,
) -> Result<HttpResponse, GatewayError> {
    let card = CardRef {
        card_number: number,
        ecard_token: token,
    };
    let card_id = state.patients.resolve_card(card, Utc::now()).await?.card_id;
    let answer = state
        .patients
        .relay(&format!("/v1/cards/{card_id}/{action}"), body)
        .await?;
    Ok(answer.into_response())
}

fn valid_reference(raw: &str) -> Result<&str, GatewayError> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(raw)
    } else {
        Err(RequestError::invalid("payment_reference", "must be 1 to 64 of A-Z a-z 0-9 - _ .").into())
    }
}

#[utoipa::path(
    post,
    path = "/v1/cards/top-ups",
    tag = "cards",
    request_body = TopUpNotification,
    responses(
        (status = 201, description = "Credited: the ledger entry and the new balance", body = serde_json::Value),
        (status = 200, description = "This payment_reference was credited before (Idempotency-Replayed: true); nothing credited again", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (amount_fen, payment_reference, card_number), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CARD_LOST, CARD_REPLACED, CARD_CANCELLED; REFERENCE_REUSED (the same payment_reference with another amount)", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/cards/top-ups")]
pub async fn top_up(
    caller: Caller,
    state: web::Data<GatewayState>,
    body: Json<TopUpNotification>,
) -> Result<HttpResponse, GatewayError> {
    let n = body.0;
    if !(1..=MAX_TOP_UP_FEN).contains(&n.amount_fen) {
        return Err(RequestError::invalid("amount_fen", format!("must be 1 to {MAX_TOP_UP_FEN} fen")).into());
    }
    let reference = valid_reference(&n.payment_reference)?;
    let upstream = serde_json::json!({
        "amount_fen": n.amount_fen,
        "channel": caller.channel,
        "channel_ref": format!("{}:{reference}", caller.app_id),
    });
    relay_to_card(
        &state,
        n.card_number.as_deref(),
        n.ecard_token.as_deref(),
        "top-ups",
        &upstream,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/v1/cards/ecard-token",
    tag = "cards",
    request_body = CardRequest,
    responses(
        (status = 200, description = "A fresh, short-lived e-card QR token (Cache-Control: no-store)", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 403, description = "CARD_OF_ANOTHER_CHANNEL: minted for the apps of the card's own channel, or at a kiosk or window", body = crate::openapi::ProblemDoc),
        (status = 409, description = "NOT_AN_ECARD, CARD_LOST, CARD_REPLACED, CARD_CANCELLED", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/cards/ecard-token")]
pub async fn ecard_token(
    caller: Caller,
    state: web::Data<GatewayState>,
    body: Json<CardRequest>,
) -> Result<HttpResponse, GatewayError> {
    // An e-card token is the patient's proof of presence (it pays a card
    // out): it is minted for the apps of the channel the card was issued
    // through, where the patient holds the card, or at a kiosk or window.
    let card = CardRef {
        card_number: body.0.card_number.as_deref(),
        ecard_token: body.0.ecard_token.as_deref(),
    };
    let card_id = state.patients.resolve_card(card, Utc::now()).await?.card_id;
    if !at_a_desk(&caller) && state.patients.card_channel(card_id).await? != caller.channel {
        return Err(GatewayError::CardOfAnotherChannel);
    }
    let answer = state
        .patients
        .relay(
            &format!("/v1/cards/{card_id}/ecard-token"),
            &serde_json::json!({}),
        )
        .await?;
    Ok(answer.into_response())
}

/// A kiosk or a window: the card is read and the person seen there.
pub(crate) fn at_a_desk(caller: &Caller) -> bool {
    matches!(
        caller.channel,
        jyt_domain::Channel::Kiosk | jyt_domain::Channel::Window
    )
}

#[utoipa::path(
    post,
    path = "/v1/cards/cancel",
    tag = "cards",
    request_body = CardRequest,
    responses(
        (status = 200, description = "Cancelled; the balance is paid out through the calling channel", body = serde_json::Value),
        (status = 403, description = "PATIENT_PROOF_REQUIRED: outside a kiosk or window, the patient's own ecard_token is needed", body = crate::openapi::ProblemDoc),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CARD_LOST, CARD_REPLACED", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/cards/cancel")]
pub async fn cancel(
    caller: Caller,
    state: web::Data<GatewayState>,
    body: Json<CardRequest>,
) -> Result<HttpResponse, GatewayError> {
    // The balance leaves through the calling channel: a card number alone
    // (printed on the card, known to any app the patient ever used) is no
    // proof the patient is there. The patient's own e-card token is (a
    // short-lived QR from their device), and so is presence at a kiosk or
    // window, where the card is read and the person seen.
    if !at_a_desk(&caller) && body.0.ecard_token.is_none() {
        return Err(GatewayError::PatientProofRequired);
    }
    relay_to_card(
        &state,
        body.0.card_number.as_deref(),
        body.0.ecard_token.as_deref(),
        "cancel",
        &serde_json::json!({ "channel": caller.channel }),
    )
    .await
}
