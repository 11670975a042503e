//! Clinic levels: what a schedule offers, as slot-inventory stores it and
//! as the gateway's city-wide search filters on it.

use serde::{Deserialize, Serialize};

/// 普通 (general), 专家 (expert), 特需 (special) clinics, and imaging exams
/// (CT, MRI) booked by time slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClinicLevel {
    General,
    Expert,
    Special,
    Ct,
    Mri,
}

impl ClinicLevel {
    pub const ALL: [ClinicLevel; 5] = [
        ClinicLevel::General,
        ClinicLevel::Expert,
        ClinicLevel::Special,
        ClinicLevel::Ct,
        ClinicLevel::Mri,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClinicLevel::General => "general",
            ClinicLevel::Expert => "expert",
            ClinicLevel::Special => "special",
            ClinicLevel::Ct => "ct",
            ClinicLevel::Mri => "mri",
        }
    }

    /// The level named `s` exactly as [`ClinicLevel::as_str`] writes it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_parses_back_from_its_name_and_its_json() {
        for level in ClinicLevel::ALL {
            assert_eq!(ClinicLevel::parse(level.as_str()), Some(level));
            let json = serde_json::to_string(&level).unwrap();
            assert_eq!(json, format!("\"{}\"", level.as_str()));
        }
        assert_eq!(ClinicLevel::parse("Expert"), None);
        assert_eq!(ClinicLevel::parse("dental"), None);
    }
}
