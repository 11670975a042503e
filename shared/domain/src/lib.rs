//! # Layout
//! Types every service agrees on, so that a value means the same thing on
//! both sides of an HTTP call:
//! - [`HospitalId`], [`SlotRef`], [`BookingRef`]: identifiers; public slot and
//!   booking references carry their hospital so the stateless gateway can
//!   route them without a lookup.
//! - [`Channel`]: the booking channel a request came through.
//! - [`ClinicLevel`]: general, expert, special, CT or MRI.
//! - [`Fen`]: money as an integer number of fen (0.01 yuan), never a float.
//! - [`time`]: Asia/Shanghai calendar helpers (times are stored in UTC).
//! - [`IdempotencyKey`]: the client's key that makes a write safe to retry.
//! - [`survey`]: the post-visit survey's id (derived from the booking),
//!   question set and expiry, agreed by the gateway and channel-accounting.

pub mod card_number;
pub mod clinic;
pub mod id_number;
pub mod survey;
pub mod time;

pub use clinic::ClinicLevel;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a textual value could not become a domain value. The message is meant
/// for the API client and never contains more than the offending value's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("hospital id must be 2 to 20 characters of a-z and 0-9")]
    HospitalId,
    #[error("reference must look like `<hospital id>-<uuid>`")]
    Reference,
    #[error("unknown channel; expected one of wechat, kiosk, phone114, window, app, referral, clinic")]
    Channel,
    #[error("idempotency key must be 1 to 128 visible ASCII characters")]
    IdempotencyKey,
}

/// A member hospital's (or campus's) short code, e.g. `pumch`. It appears in
/// Redis hash tags and database names, hence the narrow alphabet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HospitalId(String);

impl HospitalId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HospitalId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok =
            (2..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::HospitalId)
        }
    }
}

impl<'de> Deserialize<'de> for HospitalId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for HospitalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Defines a `<hospital>-<uuid>` reference type. Slots and bookings live in
/// one hospital's database; putting the hospital in the public id lets the
/// gateway route without keeping any state of its own.
macro_rules! hospital_scoped_ref {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            pub hospital: HospitalId,
            pub id: Uuid,
        }

        impl $name {
            pub fn new(hospital: HospitalId, id: Uuid) -> Self {
                Self { hospital, id }
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let (hospital, id) = s.split_once('-').ok_or(ParseError::Reference)?;
                let hospital = hospital.parse().map_err(|_| ParseError::Reference)?;
                // Only the hyphenated form, so that one reference has one spelling.
                if id.len() != 36 {
                    return Err(ParseError::Reference);
                }
                let id = Uuid::parse_str(id).map_err(|_| ParseError::Reference)?;
                Ok(Self { hospital, id })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-{}", self.hospital, self.id.hyphenated())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hospital_scoped_ref!(
    /// A bookable time segment (分时段) of one schedule in one hospital.
    SlotRef
);
hospital_scoped_ref!(
    /// One booking in one hospital.
    BookingRef
);

/// The channel a booking came through. Pools and accounting are kept per
/// channel; `referral` and `clinic` are not public channels but pools drawn
/// by community-hospital referrals and by doctors booking follow-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Wechat,
    Kiosk,
    Phone114,
    Window,
    App,
    Referral,
    Clinic,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::Wechat,
        Channel::Kiosk,
        Channel::Phone114,
        Channel::Window,
        Channel::App,
        Channel::Referral,
        Channel::Clinic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Wechat => "wechat",
            Channel::Kiosk => "kiosk",
            Channel::Phone114 => "phone114",
            Channel::Window => "window",
            Channel::App => "app",
            Channel::Referral => "referral",
            Channel::Clinic => "clinic",
        }
    }
}

impl FromStr for Channel {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(ParseError::Channel)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Money in fen (分, 0.01 yuan). Integers only: fees, refunds and balances must
/// add up to the fen in reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fen(pub i64);

impl Fen {
    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }
}

impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}¥{}.{:02}", abs / 100, abs % 100)
    }
}

/// The client's `Idempotency-Key`: the same key with the same request gets
/// the first answer again, and writes nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::IdempotencyKey)
        }
    }
}

/// The life of a booking. Every transition is an event in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Held,
    Confirmed,
    CheckedIn,
    Completed,
    Cancelled,
    Expired,
    Stopped,
    NoShow,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Held => "held",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::CheckedIn => "checked_in",
            BookingStatus::Completed => "completed",
            BookingStatus::Cancelled => "cancelled",
            BookingStatus::Expired => "expired",
            BookingStatus::Stopped => "stopped",
            BookingStatus::NoShow => "no_show",
        }
    }

    /// Whether the booking still occupies its seat in the segment.
    pub fn occupies_seat(self) -> bool {
        !matches!(
            self,
            BookingStatus::Cancelled | BookingStatus::Expired | BookingStatus::Stopped
        )
    }
}

impl FromStr for BookingStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            BookingStatus::Held,
            BookingStatus::Confirmed,
            BookingStatus::CheckedIn,
            BookingStatus::Completed,
            BookingStatus::Cancelled,
            BookingStatus::Expired,
            BookingStatus::Stopped,
            BookingStatus::NoShow,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown booking status `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slot_ref_round_trips_and_names_its_hospital() {
        let s = "pumch-0193f4a2-7c1e-7b3a-9f00-1234567890ab";
        let r: SlotRef = s.parse().unwrap();
        assert_eq!(r.hospital.as_str(), "pumch");
        assert_eq!(r.to_string(), s);
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "pumch",
            "PUMCH-0193f4a2-7c1e-7b3a-9f00-1234567890ab",
            "pumch-0193f4a27c1e7b3a9f001234567890ab",
            "pumch-not-a-uuid",
            "p-0193f4a2-7c1e-7b3a-9f00-1234567890ab",
        ] {
            assert!(bad.parse::<SlotRef>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn channels_parse_from_their_wire_names() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), c);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        assert!("weixin".parse::<Channel>().is_err());
    }

    #[test]
    fn fen_displays_as_yuan() {
        assert_eq!(Fen(500).to_string(), "¥5.00");
        assert_eq!(Fen(-1).to_string(), "-¥0.01");
    }

    proptest! {
        #[test]
        fn reference_parser_never_panics(s in "\\PC*") {
            let _ = s.parse::<BookingRef>();
        }

        #[test]
        fn every_valid_reference_round_trips(h in "[a-z0-9]{2,20}", n in any::<u128>()) {
            let r = BookingRef::new(h.parse().unwrap(), Uuid::from_u128(n));
            prop_assert_eq!(r.to_string().parse::<BookingRef>().unwrap(), r);
        }
    }
}
