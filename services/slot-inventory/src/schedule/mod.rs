//! Departments, doctors, schedules and their time segments: what there is to
//! book. [`queries`] writes and reads them; [`listing`] answers "what can I
//! book on this date" with live remaining counts.

pub mod capacity;
pub mod listing;
pub mod queries;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// 上午 / 下午 / 晚间.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Session {
    Morning,
    Afternoon,
    Evening,
}

impl Session {
    pub fn as_str(self) -> &'static str {
        match self {
            Session::Morning => "morning",
            Session::Afternoon => "afternoon",
            Session::Evening => "evening",
        }
    }
}

pub use jyt_domain::ClinicLevel;

/// A schedule to create or update, keyed by the hospital's own ids.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub external_id: String,
    pub department: NewDepartment,
    pub doctor: NewDoctor,
    pub visit_date: NaiveDate,
    pub session: Session,
    pub clinic_level: ClinicLevel,
    pub fee_fen: i64,
    pub segments: Vec<NewSegment>,
}

#[derive(Debug, Clone)]
pub struct NewDepartment {
    pub external_id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct NewDoctor {
    pub external_id: String,
    pub name: String,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct NewSegment {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: i32,
}
