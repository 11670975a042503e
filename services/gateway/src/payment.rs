//! `POST /v1/bookings/{booking_id}/payments`: pay a held booking.
//!
//! - `self_pay` / `insurance`: the channel's payment notification (signed
//!   like every request, by the app the booking belongs to, its
//!   `owner_app`; another app adds the patient's own card, `card_number` or
//!   `ecard_token`, as the patient's consent). The amount must
//!   be the booking's fee; the hospital confirms under the channel's
//!   transaction id. A payment arriving after the hold expired is not
//!   booked: the answer is `409 HOLD_EXPIRED` and the channel refunds it.
//! - `prepaid_card`: the fee is debited from the card's prepaid balance in
//!   card-issuing, then the hospital confirms; if the hospital refuses
//!   (hold expired, already paid otherwise, ...), the debit is refunded.
//!
//! Idempotent: the definitive answer (2xx or 4xx) is kept in Redis under
//! (app, booking, reference), so a notification delivered twice confirms
//! once and gets the same answer; a duplicate arriving while the first is
//! still being processed gets `409 PAYMENT_IN_PROGRESS` with Retry-After.
//! The debit and the confirmation are idempotent under their references
//! too, so after a timeout (503) the same request can simply be retried.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use chrono::Utc;
use jyt_cache::redis::{self, AsyncCommands};
use jyt_domain::BookingRef;
use jyt_web::RequestError;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::state::{Caller, GatewayState};
use crate::upstream::Forwarded;

/// How long a payment's answer is kept for duplicate notifications.
const RESULT_TTL_SECONDS: u64 = 7 * 86_400;
/// How long a payment being processed blocks its duplicates.
const LOCK_TTL_SECONDS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Through the channel's own payment (WeChat Pay, kiosk UnionPay, ...).
    SelfPay,
    /// The medical-insurance personal account.
    Insurance,
    /// The platform card's prepaid balance.
    PrepaidCard,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub payment_method: PaymentMethod,
    /// self_pay / insurance: the channel's transaction id.
    #[serde(default)]
    pub payment_reference: Option<String>,
    /// self_pay / insurance: what was paid, in fen; must be the booking's fee.
    #[serde(default)]
    pub amount_fen: Option<i64>,
    /// prepaid_card: the card to debit (the patient's, or their family
    /// account holder's), by number or e-card token. Any method, from an
    /// app other than the booking's own (`owner_app`): the patient's own
    /// card, as their consent (then the debit is from it too).
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub ecard_token: Option<String>,
}

#[derive(Deserialize)]
struct BookingFacts {
    patient_id: Uuid,
    fee_fen: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredAnswer {
    status: u16,
    body: String,
}

fn code_of(answer: &Forwarded) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
}

/// A payment's answer: fresh from the hospital, or the stored answer to
/// the same payment delivered before.
pub enum Settled {
    Fresh(Forwarded),
    Replayed { status: StatusCode, body: String },
}

impl Settled {
    pub fn status(&self) -> StatusCode {
        match self {
            Settled::Fresh(a) => a.status,
            Settled::Replayed { status, .. } => *status,
        }
    }

    pub fn into_response(self) -> HttpResponse {
        match self {
            Settled::Fresh(answer) => answer.into_response(),
            Settled::Replayed { status, body } => HttpResponse::build(status)
                .insert_header(("content-type", content_type(status.as_u16())))
                .insert_header(("Idempotency-Replayed", "true"))
                .body(body),
        }
    }
}

/// Pay a held booking (see the module's doc): the one payment pipeline,
/// shared by `POST /v1/bookings/{id}/payments` and FHIR `Appointment/$book`.
pub async fn settle(
    state: &GatewayState,
    caller: &Caller,
    booking: &BookingRef,
    req: &PaymentRequest,
) -> Result<Settled, GatewayError> {
    let reference = match req.payment_method {
        PaymentMethod::PrepaidCard => format!("prepaid:{}", booking.id),
        PaymentMethod::SelfPay | PaymentMethod::Insurance => {
            let r = req.payment_reference.as_deref().map(str::trim).unwrap_or("");
            let ok = !r.is_empty()
                && r.len() + caller.app_id.len() < 64
                && r.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(RequestError::invalid(
                    "payment_reference",
                    "the channel's transaction id: visible ASCII, at most 63 characters with the app id",
                )
                .into());
            }
            // Prefixed with the app: two channels' transaction ids may collide.
            format!("{}:{r}", caller.app_id)
        }
    };
    let card = (req.card_number.is_some() || req.ecard_token.is_some()).then_some(CardRef {
        card_number: req.card_number.as_deref(),
        ecard_token: req.ecard_token.as_deref(),
    });
    let key = state.keys.tagged(
        &format!("h:{}", booking.hospital),
        &format!("pay:{}:{reference}", booking.id),
    );
    let lock = format!("{key}:lock");
    let mut conn = state.redis.clone();
    let (kept, locked) = match owners_payment(state, caller, booking, card, &key, &lock).await? {
        OwnersPayment::Owned { kept, locked } => (kept, locked),
        OwnersPayment::NotCachedAsCallers { presented, cached } => {
            // The rest of the owner check (the hospital's row, the
            // patient's card) with what the script read, then the same step.
            crate::booking::authorize_known(state, caller, booking, presented, cached).await?;
            // One round trip: a kept answer, and the lock in case there is none.
            let (kept, locked): (Option<String>, Option<String>) = redis::pipe()
                .get(&key)
                .cmd("SET")
                .arg(&lock)
                .arg(Utc::now().timestamp())
                .arg("NX")
                .arg("EX")
                .arg(LOCK_TTL_SECONDS)
                .query_async(&mut conn)
                .await?;
            (kept, locked.is_some())
        }
    };
    if let Some(kept) = kept
        && let Ok(a) = serde_json::from_str::<StoredAnswer>(&kept)
    {
        if locked {
            conn.del::<_, ()>(&lock).await?;
        }
        return Ok(Settled::Replayed {
            status: StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK),
            body: a.body,
        });
    }
    if !locked {
        return Err(GatewayError::PaymentInProgress);
    }
    let outcome = process(state, caller, booking, req, &reference).await;
    // Keep definitive answers; after a 5xx the same request is retried, and
    // after a 400 (the hospital's `amount_fen`) the corrected one is taken.
    let keep = match &outcome {
        Ok(answer) if !answer.status.is_server_error() && answer.status != StatusCode::BAD_REQUEST => {
            Some(StoredAnswer {
                status: answer.status.as_u16(),
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            })
        }
        Err(e @ GatewayError::HoldExpired { .. }) => Some(StoredAnswer {
            status: 409,
            body: serde_json::to_string(&problem_body(e)).unwrap_or_default(),
        }),
        _ => None,
    };
    // One round trip: the answer kept (if definitive) and the lock gone.
    let mut done = redis::pipe();
    if let Some(keep) = keep {
        done.set_ex(
            &key,
            serde_json::to_string(&keep).unwrap_or_default(),
            RESULT_TTL_SECONDS,
        )
        .ignore();
    }
    done.del(&lock).ignore().query_async::<()>(&mut conn).await?;
    outcome.map(Settled::Fresh)
}

/// The owner's payment, in one round trip: whether the booking is cached
/// as the calling app's and, if it is, the payment's own step: a kept
/// answer to this payment, and its lock in case there is none. These were
/// two round trips of a payment's four (loadtest/README.md, 2026-12-06
/// 20:23); a channel pays its own bookings, so this is the common case.
/// KEYS: the booking's app, the payment's kept answer, its lock.
/// ARGV: the calling app, now (the lock's value), the lock's TTL.
/// Returns {1, kept answer or false, locked} for the owner, else
/// {0, the cached app or false, 0}.
const OWNERS_PAYMENT: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner ~= ARGV[1] then
  return {0, owner, 0}
end
local kept = redis.call('GET', KEYS[2])
local locked = 0
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', tonumber(ARGV[3])) then
  locked = 1
end
return {1, kept, locked}
";

static OWNERS_PAYMENT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(OWNERS_PAYMENT));

/// What [`OWNERS_PAYMENT`] found.
enum OwnersPayment {
    /// The booking is cached as the caller's: the kept answer and the
    /// lock, as the payment's own step reads them.
    Owned { kept: Option<String>, locked: bool },
    /// It is not: the presented card's holder and the cached app, for the
    /// rest of the owner check.
    NotCachedAsCallers {
        presented: Option<Uuid>,
        cached: Option<String>,
    },
}

/// Run [`OWNERS_PAYMENT`]. A card presented is checked first, whoever
/// calls, as the owner check does: bad input is refused as such.
async fn owners_payment(
    state: &GatewayState,
    caller: &Caller,
    booking: &BookingRef,
    card: Option<CardRef<'_>>,
    key: &str,
    lock: &str,
) -> Result<OwnersPayment, GatewayError> {
    let presented = match card {
        Some(card) => Some(state.patients.resolve(card, Utc::now()).await?),
        None => None,
    };
    let mut conn = state.redis.clone();
    let (owned, found, locked): (u8, Option<String>, u8) = OWNERS_PAYMENT_SCRIPT
        .key(state.notifier.booking_app_key_of(booking))
        .key(key)
        .key(lock)
        .arg(&caller.app_id)
        .arg(Utc::now().timestamp())
        .arg(LOCK_TTL_SECONDS)
        .invoke_async(&mut conn)
        .await?;
    Ok(if owned == 1 {
        OwnersPayment::Owned {
            kept: found,
            locked: locked == 1,
        }
    } else {
        OwnersPayment::NotCachedAsCallers {
            presented,
            cached: found,
        }
    })
}

fn content_type(status: u16) -> &'static str {
    if status >= 400 {
        jyt_web::problem::CONTENT_TYPE
    } else {
        "application/json"
    }
}

fn problem_body(e: &GatewayError) -> serde_json::Value {
    use actix_web::ResponseError;
    let mut p = jyt_web::Problem::new(e.status_code(), e.code(), "Hold expired").detail(e.to_string());
    if let GatewayError::HoldExpired { refund } = e {
        p = p.extension("refund", *refund);
    }
    serde_json::to_value(p).unwrap_or_default()
}

async fn process(
    state: &GatewayState,
    caller: &Caller,
    booking: &BookingRef,
    req: &PaymentRequest,
    reference: &str,
) -> Result<Forwarded, GatewayError> {
    let confirm = |method: PaymentMethod, amount_fen: Option<i64>| {
        let body = serde_json::json!({
            "payment_reference": reference,
            "payment_method": method,
            "amount_fen": amount_fen,
        });
        async move {
            state
                .upstreams
                .forward(
                    &booking.hospital,
                    reqwest::Method::POST,
                    &format!("/v1/bookings/{booking}/confirm"),
                    HeaderMap::new(),
                    Some(serde_json::to_vec(&body).unwrap_or_default()),
                )
                .await
        }
    };

    match req.payment_method {
        PaymentMethod::SelfPay | PaymentMethod::Insurance => {
            // The hospital compares the amount with the fee as it confirms
            // (`400 amount_fen` naming the fee when they differ): the
            // booking is not read first only to learn its fee.
            let Some(amount_fen) = req.amount_fen else {
                return Err(
                    RequestError::invalid("amount_fen", "required: the booking's fee, in fen").into(),
                );
            };
            let answer = confirm(req.payment_method, Some(amount_fen)).await?;
            if answer.status.is_client_error() && code_of(&answer).as_deref() == Some("HOLD_EXPIRED") {
                return Err(GatewayError::HoldExpired {
                    refund: "the channel refunds the payment",
                });
            }
            Ok(answer)
        }
        PaymentMethod::PrepaidCard => {
            // The card is debited before the hospital confirms, so the fee
            // and the patient are read first.
            let current = state.upstreams.booking(booking).await?;
            if !current.status.is_success() {
                return Ok(current);
            }
            let facts: BookingFacts = serde_json::from_slice(&current.body).map_err(|e| {
                GatewayError::Unexpected(anyhow::Error::new(e).context("the hospital's booking"))
            })?;
            let holder = state
                .patients
                .resolve_card(
                    CardRef {
                        card_number: req.card_number.as_deref(),
                        ecard_token: req.ecard_token.as_deref(),
                    },
                    Utc::now(),
                )
                .await?;
            if holder.person_id != facts.patient_id
                && !state
                    .patients
                    .is_family_member(holder.person_id, facts.patient_id)
                    .await?
            {
                return Err(GatewayError::NotFamilyMember);
            }
            let ledger_ref = booking.to_string();
            if facts.fee_fen > 0 {
                state
                    .patients
                    .debit(holder.card_id, facts.fee_fen, caller.channel, &ledger_ref)
                    .await?;
            }
            // A 5xx or timeout leaves the debit in place: the confirmation
            // may have happened, and a retry of this request replays both.
            let answer = confirm(PaymentMethod::PrepaidCard, Some(facts.fee_fen)).await?;
            if answer.status.is_client_error() {
                if facts.fee_fen > 0 {
                    state
                        .patients
                        .refund(
                            holder.card_id,
                            facts.fee_fen,
                            &format!("refund:{ledger_ref}"),
                            &ledger_ref,
                        )
                        .await?;
                }
                if code_of(&answer).as_deref() == Some("HOLD_EXPIRED") {
                    return Err(GatewayError::HoldExpired {
                        refund: "the fee was refunded to the card",
                    });
                }
            }
            Ok(answer)
        }
    }
}
