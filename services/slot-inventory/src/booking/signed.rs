//! The signed residents' share (家庭医生签约): a community health centre
//! reserves the `signed` pool of its schedules for the residents signed with
//! the family doctor team of the schedule's doctor. card-issuing owns the
//! signings; the gateway looks the patient's active signing up and, when it
//! is with this hospital, names the team's doctors (this hospital's own
//! ids) in [`HEADER`] of its internal call. Nobody else reaches this
//! service, and the header is never read from a body, so a channel cannot
//! claim a signing. Others get those seats only after the pools merge.

use actix_web::HttpRequest;
use jyt_db::Prepared;
use jyt_web::RequestError;

use crate::error::SlotError;
use crate::state::AppState;

/// `Jyt-Signed-Doctors: <doctor id>,<doctor id>,...`.
pub const HEADER: &str = "Jyt-Signed-Doctors";

/// The doctors named in [`HEADER`]; none without it.
pub fn doctors(req: &HttpRequest) -> Result<Vec<String>, RequestError> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(Vec::new());
    };
    let text = raw
        .to_str()
        .map_err(|_| RequestError::invalid(HEADER, "must be visible ASCII"))?;
    let doctors: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    if doctors.len() > 64 || doctors.iter().any(|d| d.len() > 64) {
        return Err(RequestError::invalid(
            HEADER,
            "at most 64 doctor ids of 1 to 64 characters",
        ));
    }
    Ok(doctors)
}

/// Whether the segment's doctor is one of `doctors` (asked only for a
/// signed resident: the community centre's bookings, never the surge).
pub async fn entitled(state: &AppState, segment: uuid::Uuid, doctors: &[String]) -> Result<bool, SlotError> {
    if doctors.is_empty() {
        return Ok(false);
    }
    let client = state.pool.get().await?;
    let row = client
        .query_opt_cached(
            "SELECT doc.external_id
               FROM segments seg
               JOIN schedules sch ON sch.id = seg.schedule_id
               JOIN doctors doc ON doc.id = sch.doctor_id
              WHERE seg.id = $1",
            &[&segment],
        )
        .await?;
    Ok(row.is_some_and(|r| doctors.iter().any(|d| *d == r.get::<_, String>(0))))
}
