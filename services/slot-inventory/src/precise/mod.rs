//! 精准预约 (precise appointment, the 301 Hospital model): an expert's
//! patient profile says which patients they want to see; a patient whose
//! expert clinic is sold out for their channel submits their history; a
//! submission that fits (by the expert's own rule at once, or by the
//! hospital's decision) gets one seat added (加号) to the expert's next
//! session, held for that patient alone, paid like any hold.
//!
//! - [`profile`]: the profile, published by the hospital (federation API).
//! - [`submission`]: submitting (only against a sold-out clinic), the
//!   automatic rule, the hospital's decision, reads.
//! - [`seat`]: the 加号 seat of a match, and matches waiting for a session.
//! - [`queries`]: the SQL.
//! - [`rules`]: field checks and the matching rule, pure.

pub mod profile;
pub mod queries;
pub mod rules;
pub mod seat;
pub mod submission;

use chrono::{DateTime, FixedOffset, NaiveDate};
use jyt_domain::{BookingRef, Channel};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The expert's rule: which submissions match without the hospital.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoMatch {
    /// Never automatically: the hospital decides every submission.
    Review,
    /// A diagnosis code under one of the wanted conditions.
    Condition,
    /// A wanted condition and a wanted finding.
    ConditionAndFinding,
}

impl AutoMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoMatch::Review => "review",
            AutoMatch::Condition => "condition",
            AutoMatch::ConditionAndFinding => "condition_and_finding",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "condition" => AutoMatch::Condition,
            "condition_and_finding" => AutoMatch::ConditionAndFinding,
            _ => AutoMatch::Review,
        }
    }
}

/// `PUT /v1/doctors/{doctor_id}/precise-profile`: what the expert wants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    /// ICD-10 codes or code prefixes (`C34`, `I25.1`).
    pub conditions: Vec<String>,
    /// Keys of findings (`ct_nodule_over_8mm`), lower-case snake case.
    #[serde(default)]
    pub findings: Vec<String>,
    #[serde(default)]
    pub min_age: Option<i32>,
    #[serde(default)]
    pub max_age: Option<i32>,
    /// Document kinds every submission must reference.
    #[serde(default)]
    pub required_documents: Vec<String>,
    pub auto_match: AutoMatch,
    /// Shown to patients: what the expert treats.
    #[serde(default)]
    pub note: String,
}

/// A profile as every API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The hospital's own id of the doctor.
    pub doctor_id: String,
    pub doctor: String,
    pub conditions: Vec<String>,
    pub findings: Vec<String>,
    pub min_age: Option<i32>,
    pub max_age: Option<i32>,
    pub required_documents: Vec<String>,
    pub auto_match: AutoMatch,
    pub note: String,
    pub updated_at: DateTime<FixedOffset>,
}

/// A document the patient's app holds, by reference only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentRef {
    /// A document kind key (`ct_report`, `pathology_report`).
    pub kind: String,
    /// The app's own id of the document: never its contents.
    pub id: String,
}

/// `POST /v1/doctors/{doctor_id}/precise-submissions` (from the gateway).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionInput {
    pub patient_id: Uuid,
    pub channel: Channel,
    pub diagnosis_codes: Vec<String>,
    #[serde(default)]
    pub findings: Vec<String>,
    pub age_years: i32,
    pub symptom_days: i32,
    #[serde(default)]
    pub prior_treatment: String,
    #[serde(default)]
    pub documents: Vec<DocumentRef>,
    /// The dates whose clinics the patient found sold out; today to the
    /// end of the release window when absent.
    #[serde(default)]
    pub window_from: Option<NaiveDate>,
    #[serde(default)]
    pub window_to: Option<NaiveDate>,
    /// The gateway's `Jyt-App` (never the body): the app that submits.
    #[serde(skip)]
    pub owner_app: Option<String>,
}

/// `POST /v1/precise-submissions/{id}/decision` (federation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionInput {
    pub decision: Decision,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Matched,
    Rejected,
}

/// A submission as every API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub submission_id: Uuid,
    pub doctor_id: String,
    pub patient_id: Uuid,
    pub channel: Channel,
    pub owner_app: Option<String>,
    pub diagnosis_codes: Vec<String>,
    pub findings: Vec<String>,
    pub age_years: i32,
    pub symptom_days: i32,
    pub prior_treatment: String,
    pub documents: Vec<DocumentRef>,
    pub window_from: NaiveDate,
    pub window_to: NaiveDate,
    /// `pending` (the hospital decides), `matched` (waiting for the
    /// doctor's next session), `seated` (see `booking_id`), `rejected`.
    pub status: String,
    /// Matched by the expert's rule at submission.
    pub auto_matched: bool,
    pub decision_reason: Option<String>,
    pub decided_at: Option<DateTime<FixedOffset>>,
    /// The held 加号 seat, once seated.
    pub booking_id: Option<BookingRef>,
    pub seated_at: Option<DateTime<FixedOffset>>,
    pub submitted_at: DateTime<FixedOffset>,
}
