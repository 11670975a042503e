//! Reading a lottery: one entry (for the patient's app, through the
//! gateway's owner check) and a schedule's whole draw record with a
//! reproduction check (for the hospital and the regulator).

use chrono::{DateTime, FixedOffset};
use jyt_domain::HospitalId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entry::Entry;
use super::permutation::{ALGORITHM, permutation};
use super::queries;
use crate::error::SlotError;
use crate::state::AppState;

/// One entry with its outcome once drawn.
pub async fn entry(state: &AppState, entry: Uuid) -> Result<Entry, SlotError> {
    let client = state.pool.get().await?;
    let Some(stored) = queries::entry_by_id(&client, entry).await? else {
        return Err(SlotError::EntryNotFound(super::entry_ref(&state.hospital, entry)));
    };
    let mut answer = Entry::entered(
        &state.hospital,
        stored.schedule_id,
        stored.patient_id,
        &stored.record,
        stored.closes_at,
    );
    if let Some(outcome) = stored.outcome {
        answer.status = outcome;
    }
    answer.booking_id = stored.booking_id.map(|b| format!("{}-{b}", state.hospital));
    answer.lost_reason = stored.lost_reason;
    Ok(answer)
}

/// A schedule's draw as a regulator reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrawRecord {
    pub draw_id: Uuid,
    pub hospital_id: HospitalId,
    pub schedule_id: Uuid,
    /// `drawing` while its holds are being given, then `drawn`.
    pub status: String,
    /// How the permutation is computed (see `docs/seed-systems/lottery.md`).
    pub algorithm: String,
    /// The 256-bit seed, hex.
    pub seed: String,
    /// Entry ids (`<hospital>-<uuid>`) in canonical (ascending) order.
    pub entrants: Vec<String>,
    /// `entrants[permutation[k]]` was served k-th.
    pub permutation: Vec<usize>,
    /// Free seats of the schedule when the draw began.
    pub seats: i32,
    pub winners: Option<i32>,
    /// In draw order: entry, patient, outcome, booking, reason.
    pub outcomes: Option<serde_json::Value>,
    pub started_at: DateTime<FixedOffset>,
    pub drawn_at: Option<DateTime<FixedOffset>>,
    pub drawn_by: Option<String>,
    pub reproduction: Reproduction,
}

/// The record checked against itself and the entries table: what a
/// regulator would do by hand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reproduction {
    /// The permutation recomputed from `seed` and the number of entrants.
    pub recomputed_permutation: Vec<usize>,
    pub permutation_matches: bool,
    /// `entrants` are sorted ascending.
    pub entrants_canonical: bool,
    /// `entrants` are exactly the schedule's entries.
    pub entrants_match_entries: bool,
    /// The outcomes list the entrants in permutation order.
    pub outcomes_follow_permutation: bool,
    pub algorithm_known: bool,
    /// All of the above.
    pub reproduced: bool,
}

pub async fn draw_record(state: &AppState, schedule: Uuid) -> Result<DrawRecord, SlotError> {
    let client = state.pool.get().await?;
    let Some(draw) = queries::draw_of_schedule(&client, schedule).await? else {
        return Err(SlotError::DrawNotFound(super::schedule_ref(
            &state.hospital,
            schedule,
        )));
    };
    let mut in_table: Vec<Uuid> = queries::entries(&client, schedule)
        .await?
        .into_iter()
        .map(|(_, e)| e.entry_id)
        .collect();
    in_table.sort_unstable();
    let seed: Option<[u8; 32]> = draw.seed.as_slice().try_into().ok();
    let recomputed = seed
        .map(|s| permutation(&s, draw.entrants.len()))
        .unwrap_or_default();
    let refs: Vec<String> = draw
        .entrants
        .iter()
        .map(|e| super::entry_ref(&state.hospital, *e))
        .collect();
    let served: Vec<&str> = draw
        .outcomes
        .as_ref()
        .and_then(|o| o.as_array())
        .map(|list| list.iter().filter_map(|o| o["entry_id"].as_str()).collect())
        .unwrap_or_default();
    let in_order: Vec<&str> = draw
        .permutation
        .iter()
        .filter_map(|k| refs.get(*k).map(String::as_str))
        .collect();
    let mut reproduction = Reproduction {
        permutation_matches: recomputed == draw.permutation,
        recomputed_permutation: recomputed,
        entrants_canonical: draw.entrants.is_sorted(),
        entrants_match_entries: draw.entrants == in_table,
        outcomes_follow_permutation: draw.outcomes.is_none() || served == in_order,
        algorithm_known: draw.algorithm == ALGORITHM,
        reproduced: false,
    };
    reproduction.reproduced = reproduction.permutation_matches
        && reproduction.entrants_canonical
        && reproduction.entrants_match_entries
        && reproduction.outcomes_follow_permutation
        && reproduction.algorithm_known;
    Ok(DrawRecord {
        draw_id: draw.id,
        hospital_id: state.hospital.clone(),
        schedule_id: draw.schedule_id,
        status: draw.status,
        algorithm: draw.algorithm,
        seed: hex::encode(&draw.seed),
        entrants: refs,
        permutation: draw.permutation,
        seats: draw.seats,
        winners: draw.winners,
        outcomes: draw.outcomes,
        started_at: jyt_domain::time::local(draw.started_at),
        drawn_at: draw.drawn_at.map(jyt_domain::time::local),
        drawn_by: draw.drawn_by,
        reproduction,
    })
}
