//! The post-visit satisfaction survey (广东省中医 model): one per completed
//! visit, open for [`TTL_DAYS`] days. The gateway announces it to the
//! booking's app as soon as the visit is completed and channel-accounting
//! stores it from the same event; neither asks the other for its id,
//! because both derive it from the booking with [`survey_id`].

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// How long after the visit's completion a survey takes answers.
pub const TTL_DAYS: i64 = 7;

/// The question set the platform asks today; stored with every survey
/// and answer, so a later set never reinterprets older figures.
/// v1: overall 1-5, wait time 1-5, the doctor's explanation 1-5, would
/// recommend yes/no, an optional comment of at most [`MAX_COMMENT_CHARS`].
pub const QUESTIONS_VERSION: i32 = 1;

/// The longest comment kept, in characters.
pub const MAX_COMMENT_CHARS: usize = 500;

/// The survey of a booking (`<hospital>-<uuid>`): a version-8 UUID made
/// from SHA-256 of the booking reference, so the gateway can name it in the
/// invitation without a round trip, and a second `booking.completed`
/// names the same survey. Not guessable from anything an outsider holds
/// without the booking id, and even then only the booking's own app may
/// read it.
pub fn survey_id(booking_id: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"jyt-survey-v1:")
        .chain_update(booking_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Until when a visit completed at `completed_at` may be answered.
pub fn expires_at(completed_at: DateTime<Utc>) -> DateTime<Utc> {
    completed_at + TimeDelta::days(TTL_DAYS)
}

/// A patient's answers to question set [`QUESTIONS_VERSION`]. Scores are
/// 1 (poor) to 5 (excellent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// 总体满意度: the visit as a whole, 1 to 5.
    pub overall: i16,
    /// 候诊时间: the wait, 1 to 5.
    pub wait_time: i16,
    /// 医生解释: how well the doctor explained, 1 to 5.
    pub explanation: i16,
    /// Would recommend the hospital to family and friends.
    pub would_recommend: bool,
    /// Optional, at most 500 characters; blank is none.
    #[serde(default)]
    pub comment: Option<String>,
}

impl Answers {
    /// The answers as stored: a blank comment is none, and a comment is
    /// trimmed, so a resend that differs only in spaces is the same answer.
    /// Refused naming the first field out of range.
    pub fn checked(mut self) -> Result<Self, (&'static str, String)> {
        for (field, score) in [
            ("overall", self.overall),
            ("wait_time", self.wait_time),
            ("explanation", self.explanation),
        ] {
            if !(1..=5).contains(&score) {
                return Err((field, "must be a whole score from 1 to 5".to_owned()));
            }
        }
        self.comment = self
            .comment
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        if let Some(c) = &self.comment
            && c.chars().count() > MAX_COMMENT_CHARS
        {
            return Err((
                "comment",
                format!("must be at most {MAX_COMMENT_CHARS} characters"),
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_booking_always_names_the_same_survey_and_two_bookings_two() {
        let a = survey_id("pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(a, survey_id("pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        assert_ne!(a, survey_id("pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"));
        assert_eq!(a.get_version_num(), 8);
    }

    fn answers(overall: i16, comment: Option<&str>) -> Answers {
        Answers {
            overall,
            wait_time: 3,
            explanation: 4,
            would_recommend: true,
            comment: comment.map(str::to_owned),
        }
    }

    #[test]
    fn answers_out_of_range_are_refused_naming_the_field() {
        assert_eq!(answers(0, None).checked().unwrap_err().0, "overall");
        assert_eq!(answers(6, None).checked().unwrap_err().0, "overall");
        let long = "好".repeat(501);
        assert_eq!(answers(5, Some(&long)).checked().unwrap_err().0, "comment");
        let just = "好".repeat(500);
        assert!(answers(5, Some(&just)).checked().is_ok());
        assert_eq!(answers(5, Some("  ")).checked().unwrap().comment, None);
        assert_eq!(
            answers(5, Some(" 很好 ")).checked().unwrap().comment.as_deref(),
            Some("很好")
        );
    }

    #[test]
    fn a_survey_closes_seven_days_after_the_visit() {
        let done = DateTime::parse_from_rfc3339("2026-11-30T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(expires_at(done).to_rfc3339(), "2026-12-07T02:00:00+00:00");
    }
}
