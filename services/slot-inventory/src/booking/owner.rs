//! Whose channel app a booking belongs to (`owner_app`, on the booking row
//! and in every view and `booking.*` event of it), so the patient's channel
//! can read and pay it however it was made:
//!
//! - booked by a channel app: that app. Only the gateway calls this
//!   service (its internal token is checked on every route), and it names
//!   the acting app in [`APP_HEADER`]; no header, no app (a hospital's own
//!   window system);
//! - a waitlist promotion: the app that made the waitlist entry (which
//!   keeps [`APP_HEADER`] of the join);
//! - a priority offer after 停诊: the app that made the stopped booking (or
//!   the stopped clinic's waitlist entry);
//! - an in-clinic follow-up (channel `clinic`, booked by the hospital):
//!   [`settle`].

use actix_web::HttpRequest;
use jyt_db::Prepared;
use jyt_domain::Channel;
use jyt_web::RequestError;

use super::BookRequest;
use crate::error::SlotError;
use crate::state::AppState;

/// The channel app the gateway acts for: its `channel_apps` id.
pub const APP_HEADER: &str = "Jyt-App";

/// An app id as the gateway's settings allow them (and the column's CHECK).
pub fn is_app_id(id: &str) -> bool {
    (2..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The acting app named by [`APP_HEADER`], if any; a malformed one is
/// refused naming the header.
pub fn acting_app(req: &HttpRequest) -> Result<Option<String>, RequestError> {
    let Some(raw) = req.headers().get(APP_HEADER) else {
        return Ok(None);
    };
    match raw.to_str() {
        Ok(id) if is_app_id(id) => Ok(Some(id.to_owned())),
        _ => Err(RequestError::invalid(
            APP_HEADER,
            "must be a channel app id: 2 to 32 characters of a-z and 0-9",
        )),
    }
}

/// Settle the owner of an in-clinic follow-up the hospital books (channel
/// `clinic`, no acting app), and check `follows_booking_id`:
///
/// 1. the app of the booking it follows, when the request names one (it
///    must be the same patient's booking here), if that booking had an app;
/// 2. else the app of the patient's most recent booking at this hospital
///    made through a channel app;
/// 3. else none.
///
/// Other bookings are left as they are, without a query: the surge path
/// pays nothing for this.
pub async fn settle(state: &AppState, req: &mut BookRequest) -> Result<(), SlotError> {
    let Some(follows) = &req.follows_booking_id else {
        if req.channel == Channel::Clinic
            && req.owner_app.is_none()
            && req.waitlist_entry.is_none()
            && req.offer.is_none()
        {
            req.owner_app = follow_up_owner(state, req, None).await?;
        }
        return Ok(());
    };
    if req.channel != Channel::Clinic {
        return Err(RequestError::invalid(
            "follows_booking_id",
            "only an in-clinic follow-up (channel clinic) follows a booking",
        )
        .into());
    }
    if follows.hospital != state.hospital {
        return Err(RequestError::invalid("follows_booking_id", "must be a booking at this hospital").into());
    }
    let owner = follow_up_owner(state, req, Some(follows.id)).await?;
    if req.owner_app.is_none() {
        req.owner_app = owner;
    }
    Ok(())
}

/// [`settle`]'s rule, in one statement; `follows` must be the patient's own.
async fn follow_up_owner(
    state: &AppState,
    req: &BookRequest,
    follows: Option<uuid::Uuid>,
) -> Result<Option<String>, SlotError> {
    let client = state.pool.get().await?;
    let row = client
        .query_one_cached(
            "SELECT (SELECT count(*) FROM bookings WHERE id = $2 AND patient_id = $1),
                    (SELECT owner_app FROM bookings WHERE id = $2 AND patient_id = $1),
                    (SELECT owner_app FROM bookings
                      WHERE patient_id = $1 AND owner_app IS NOT NULL
                      ORDER BY created_at DESC, id DESC LIMIT 1)",
            &[&req.patient_id, &follows],
        )
        .await?;
    let (found, followed, recent): (i64, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    if follows.is_some() && found == 0 {
        return Err(RequestError::invalid(
            "follows_booking_id",
            "must be one of the patient's own bookings at this hospital",
        )
        .into());
    }
    Ok(followed.or(recent))
}
