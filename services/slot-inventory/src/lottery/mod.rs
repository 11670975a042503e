//! Fair release by lottery (抽签放号). A schedule published with
//! `release_mode = "lottery"` takes no first-come holds in its first
//! `lottery_window_seconds` after the release instant: each person's
//! attempt becomes one entry ([`entry`]), however often they press. When
//! the window closes one replica draws ([`draw`]): a recorded 256-bit seed
//! orders the entrants ([`permutation`]), and each in turn is given a hold
//! through the normal hold path (per-person rules and channel pools
//! apply). The record ([`record`]) lets a regulator recompute the order.
//! Seats the draw leaves go first-come as usual.

pub mod draw;
pub mod entry;
pub mod permutation;
pub mod queries;
pub mod record;

use serde::{Deserialize, Serialize};

/// How a schedule's seats are released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseMode {
    /// The first attempt on a free seat takes it.
    #[default]
    FirstCome,
    /// Attempts in the window join a draw.
    Lottery,
}

impl ReleaseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseMode::FirstCome => "first_come",
            ReleaseMode::Lottery => "lottery",
        }
    }
}

/// The window a lottery may have, in seconds: long enough for a patient
/// who is a few seconds late, short enough that the draw is still "at the
/// release".
pub const WINDOW_SECONDS: std::ops::RangeInclusive<u32> = 1..=300;

/// `<hospital>-<entry>`: an entry's public id.
pub fn entry_ref(hospital: &jyt_domain::HospitalId, entry: uuid::Uuid) -> String {
    format!("{hospital}-{entry}")
}

/// Which schedule a lottery's events name.
pub fn schedule_ref(hospital: &jyt_domain::HospitalId, schedule: uuid::Uuid) -> String {
    format!("{hospital}-{schedule}")
}
