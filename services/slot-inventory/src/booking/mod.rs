//! Bookings: the surge path ([`service::book`]), the Redis lock it runs on
//! ([`hold`]), what happens after ([`lifecycle`]: pay, cancel, check in,
//! expiry and no-show sweepers), the PostgreSQL rows ([`queries`]) and the
//! events every change emits ([`events`]).

pub mod cache;
pub mod events;
pub mod hold;
pub mod lifecycle;
pub mod owner;
pub mod pg_lock;
pub mod queries;
pub mod referral;
pub mod service;
pub mod signed;
pub mod tally;
pub mod waitlist;
pub mod waitlist_queries;
pub mod writer;

use chrono::{DateTime, FixedOffset, NaiveDate};
use jyt_domain::{BookingRef, BookingStatus, Channel, Fen, HospitalId, SlotRef};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `POST /v1/bookings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    pub slot_id: SlotRef,
    pub patient_id: Uuid,
    pub channel: Channel,
    /// Required for the `referral` channel, and only there: the id of the
    /// referral (医联体 green channel) a community health centre's family
    /// doctor issued to this hospital ([`referral`]); it entitles the
    /// patient to the referral pool, once.
    #[serde(default)]
    pub referral_id: Option<String>,
    /// The doctors (this hospital's ids) of the family doctor team the
    /// patient is signed with here: the gateway's [`signed::HEADER`] (never
    /// the body). Their schedules' `signed` pool is open to the patient.
    #[serde(skip)]
    pub signed_doctors: Vec<String>,
    /// An in-clinic follow-up (channel `clinic`): the patient's booking it
    /// follows, whose channel app then owns it too ([`owner::settle`]).
    #[serde(default)]
    pub follows_booking_id: Option<BookingRef>,
    /// The channel app the booking will belong to: the gateway's
    /// [`owner::APP_HEADER`] (never the body), or for a booking the platform
    /// makes, the patient's app ([`owner`]).
    #[serde(skip)]
    pub owner_app: Option<String>,
    /// Set (never by a client) when a waitlist entry is being promoted.
    #[serde(skip)]
    pub waitlist_entry: Option<Uuid>,
    /// Set (never by a client) for a priority hold offered after a stopped
    /// clinic.
    #[serde(skip)]
    pub offer: Option<OfferOf>,
    /// Set (never by a client) when a lottery's draw gives this entry its
    /// hold ([`crate::lottery::draw`]).
    #[serde(skip)]
    pub draw_entry: Option<Uuid>,
}

impl BookRequest {
    /// A plain booking of `slot_id` for `patient_id` through `channel`,
    /// nothing else set: the paths that book on a patient's behalf (a
    /// waitlist promotion, a draw, a re-offer after 停诊, ...) add the one
    /// or two fields that are theirs with struct-update syntax, so a field
    /// added here later starts unset everywhere instead of in eight copies.
    pub fn new(slot_id: SlotRef, patient_id: Uuid, channel: Channel) -> Self {
        Self {
            slot_id,
            patient_id,
            channel,
            referral_id: None,
            signed_doctors: Vec::new(),
            follows_booking_id: None,
            owner_app: None,
            waitlist_entry: None,
            offer: None,
            draw_entry: None,
        }
    }
}

/// A priority hold offered after 停诊, in place of a stopped booking (or
/// for a patient of the stopped clinic's waitlist: `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferOf {
    pub replaces: Option<Uuid>,
}

/// A booking as every API shows it. Times are in Asia/Shanghai.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub booking_id: BookingRef,
    pub hospital_id: HospitalId,
    pub slot_id: SlotRef,
    pub schedule_id: Uuid,
    pub patient_id: Uuid,
    pub channel: Channel,
    /// The channel app the booking belongs to (see [`owner`]): it reads and
    /// pays the booking through the gateway; `null` for none (a hospital
    /// window). In every `booking.*` event too.
    #[serde(default)]
    pub owner_app: Option<String>,
    pub status: BookingStatus,
    /// The seat within the time segment, from 1.
    pub seat_number: i32,
    /// 就诊序号, in booking order within the schedule.
    pub visit_number: i32,
    /// The channel pool (号源池) the seat came from.
    pub pool: String,
    /// Shown at 取号 (check-in).
    pub pickup_code: String,
    /// Until when an unpaid hold stays; `null` once paid or for free visits.
    pub hold_deadline: Option<DateTime<FixedOffset>>,
    pub payment_method: Option<String>,
    /// Order of arrival, given at check-in.
    pub queue_number: Option<i32>,
    pub referral_id: Option<String>,
    pub visit_date: NaiveDate,
    pub segment_starts_at: DateTime<FixedOffset>,
    pub segment_ends_at: DateTime<FixedOffset>,
    pub department: String,
    pub doctor: String,
    pub fee_fen: Fen,
    pub created_at: DateTime<FixedOffset>,
}

/// A booking attempt's answer, whichever lock decided it.
#[derive(Debug, Clone)]
pub struct BookOutcome {
    pub booking: Booking,
    /// True when this answers a retry of an earlier request.
    pub replayed: bool,
}

pub(crate) fn same_request(
    existing: queries::StoredBooking,
    req: &BookRequest,
) -> Result<BookOutcome, crate::error::SlotError> {
    let b = &existing.booking;
    if existing.segment_id == req.slot_id.id && b.patient_id == req.patient_id && b.channel == req.channel {
        Ok(BookOutcome {
            booking: existing.booking,
            replayed: true,
        })
    } else {
        Err(crate::error::SlotError::IdempotencyKeyReused)
    }
}
