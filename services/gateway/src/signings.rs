//! A patient's family doctor signing (家庭医生签约), as bookings and
//! referrals need it: card-issuing owns signings; the gateway asks it and
//! caches the answer briefly under the person's hash tag (the family
//! cache's TTL; dropped when the signing changes through us).
//!
//! - A booking at the community health centre (registry level
//!   `community`) the patient is signed with
//!   names the team's doctors to the hospital in [`SIGNED_DOCTORS_HEADER`],
//!   so their schedules' `signed` pool is open to the patient. Only the
//!   gateway can set it: hospitals answer only its internal token.
//! - A referral is issued only by a doctor of the patient's own signed team
//!   at its centre (asked fresh, never from the cache).

use jyt_domain::HospitalId;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::GatewayError;
use crate::identity::PatientIndex;

/// Named like slot-inventory's `booking::signed::HEADER`.
pub const SIGNED_DOCTORS_HEADER: &str = "Jyt-Signed-Doctors";

/// The part of card-issuing's signing view the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveSigning {
    pub signing_id: Uuid,
    pub hospital: String,
    pub team_id: String,
    pub doctor_ids: Vec<String>,
}

#[derive(Deserialize)]
struct SigningsAnswer {
    active: Option<ActiveSigning>,
}

/// The person's active signing, asked of card-issuing now.
pub async fn ask(index: &PatientIndex, person: Uuid) -> Result<Option<ActiveSigning>, GatewayError> {
    let answer = index
        .call(
            Method::GET,
            &format!("/v1/persons/{person}/family-doctor-signings"),
            None,
            None,
        )
        .await?;
    if answer.status.as_u16() == 404 {
        return Ok(None);
    }
    if !answer.status.is_success() {
        return Err(GatewayError::IdentityUnavailable(format!(
            "signings answered {}",
            answer.status
        )));
    }
    let parsed: SigningsAnswer = serde_json::from_slice(&answer.body)
        .map_err(|e| GatewayError::IdentityUnavailable(format!("signings: {e}")))?;
    let value = serde_json::to_string(&parsed.active).unwrap_or_default();
    index
        .remember(&index.person_key(person, "signing"), &value, index.family_ttl())
        .await;
    Ok(parsed.active)
}

/// Whether `hospital` is a community health centre (`level = "community"`
/// in the registry), the only kind with family doctor teams.
pub fn keeps_signed_share(state: &crate::state::GatewayState, hospital: &HospitalId) -> bool {
    state
        .upstreams
        .route(hospital)
        .is_ok_and(|route| route.level == "community")
}

/// The doctors whose `signed` pool the person may draw from at `hospital`:
/// their team's, when they are signed there. A failure to find out books
/// without the signed share rather than not at all.
pub async fn signed_doctors_at(index: &PatientIndex, person: Uuid, hospital: &HospitalId) -> Option<String> {
    let cached = index.cached(&index.person_key(person, "signing")).await;
    let signing = match cached
        .as_deref()
        .map(serde_json::from_str::<Option<ActiveSigning>>)
    {
        Some(Ok(s)) => s,
        _ => match ask(index, person).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a patient's family doctor signing");
                None
            }
        },
    }?;
    (signing.hospital == hospital.as_str()).then(|| signing.doctor_ids.join(","))
}
