//! Family doctor signing (家庭医生签约, the Haizhu 580 model).
//!
//! - A community health centre (a member hospital) registers its family
//!   doctor teams: its own team id, a name, the doctors (the centre's own
//!   doctor ids, as it publishes schedules) and how many residents the team
//!   may have signed at once. The gateway relays this from the centre's
//!   federation key, so a centre only ever names its own teams.
//! - A resident signs with one team online, with a signature trace
//!   (签名认证): only its SHA-256 and size are kept. A signing is a
//!   year-long term from the moment of signing; one active signing per
//!   person; ending it early is allowed, and so is signing again once it
//!   has ended or expired.
//! - Both limits are checked with rows locked, the person first and then
//!   the team (always in that order, so two signers cannot deadlock): 20
//!   concurrent signers for a team's last 5 places get exactly 5 signings.
//!
//! `now` is a parameter, so a year's term is testable without waiting.

use chrono::{DateTime, Months, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::Row;
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::CardError;
use crate::state::AppState;

/// How long one signing lasts (a calendar year from signing).
pub const TERM_MONTHS: u32 = 12;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsRequest {
    pub teams: Vec<TeamInput>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamInput {
    /// The centre's own id for the team.
    pub team_id: String,
    pub name: String,
    pub doctor_ids: Vec<String>,
    pub capacity: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamView {
    pub hospital: String,
    pub team_id: String,
    pub name: String,
    pub doctor_ids: Vec<String>,
    pub capacity: i32,
    /// Residents signed now.
    pub signed: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    pub hospital: String,
    pub team: String,
    /// The signature trace as the app captured it (e.g. base64 of the
    /// strokes); hashed, never stored.
    pub signature_trace: String,
    /// The channel app the resident signed through (set by the gateway).
    #[serde(default)]
    pub app: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    /// Who ended it, for the record: `person` or `hospital-key:<id>`.
    pub ended_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningView {
    pub signing_id: Uuid,
    pub person_id: Uuid,
    pub hospital: String,
    pub team_id: String,
    pub team_name: String,
    pub doctor_ids: Vec<String>,
    /// The team's capacity now (for the operators' console).
    pub team_capacity: i32,
    pub signed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub signature_sha256: String,
    /// `active`, `ended` or `expired` at the time of reading.
    pub status: String,
}

const SELECT_SIGNING: &str =
    "SELECT s.id, s.person_id, t.hospital, t.external_id, t.name, t.doctor_ids, t.capacity,
        s.signed_at, s.expires_at, s.ended_at, s.signature_sha256
   FROM family_doctor_signings s JOIN family_doctor_teams t ON t.id = s.team_id";

fn signing_view(row: &Row, now: DateTime<Utc>) -> SigningView {
    let expires_at: DateTime<Utc> = row.get("expires_at");
    let ended_at: Option<DateTime<Utc>> = row.get("ended_at");
    let status = match ended_at {
        Some(_) => "ended",
        None if now >= expires_at => "expired",
        None => "active",
    };
    SigningView {
        signing_id: row.get("id"),
        person_id: row.get("person_id"),
        hospital: row.get("hospital"),
        team_id: row.get("external_id"),
        team_name: row.get("name"),
        doctor_ids: row.get("doctor_ids"),
        team_capacity: row.get("capacity"),
        signed_at: row.get("signed_at"),
        expires_at,
        ended_at,
        signature_sha256: row.get("signature_sha256"),
        status: status.to_owned(),
    }
}

/// An id as hospitals give them: visible ASCII without commas (the gateway
/// names doctors in a comma-separated header).
fn check_id(field: &str, v: &str) -> Result<String, RequestError> {
    let v = v.trim();
    if (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        Ok(v.to_owned())
    } else {
        Err(RequestError::invalid(
            field,
            "must be 1 to 64 visible ASCII characters without commas",
        ))
    }
}

fn check_team(t: &TeamInput) -> Result<(String, String, Vec<String>), RequestError> {
    let id = check_id("teams[].team_id", &t.team_id)?;
    let name = t.name.trim();
    if !(1..=100).contains(&name.chars().count()) {
        return Err(RequestError::invalid(
            "teams[].name",
            "must be 1 to 100 characters",
        ));
    }
    if t.doctor_ids.is_empty() || t.doctor_ids.len() > 64 {
        return Err(RequestError::invalid(
            "teams[].doctor_ids",
            "must name 1 to 64 doctors",
        ));
    }
    let doctors = t
        .doctor_ids
        .iter()
        .map(|d| check_id("teams[].doctor_ids", d))
        .collect::<Result<Vec<_>, _>>()?;
    if !(0..=100_000).contains(&t.capacity) {
        return Err(RequestError::invalid("teams[].capacity", "must be 0 to 100000"));
    }
    Ok((id, name.to_owned(), doctors))
}

/// Upsert a centre's teams by its own ids (idempotent); a capacity below
/// the residents signed now keeps them, and takes no one new.
pub async fn upsert_teams(
    state: &AppState,
    hospital: &str,
    req: &TeamsRequest,
    now: DateTime<Utc>,
) -> Result<Vec<TeamView>, CardError> {
    let hospital = check_id("hospital_id", hospital)?;
    if req.teams.is_empty() || req.teams.len() > 500 {
        return Err(RequestError::invalid("teams", "must list 1 to 500 teams").into());
    }
    let checked = req.teams.iter().map(check_team).collect::<Result<Vec<_>, _>>()?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    for ((id, name, doctors), t) in checked.iter().zip(&req.teams) {
        tx.execute_cached(
            "INSERT INTO family_doctor_teams (id, hospital, external_id, name, doctor_ids, capacity, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (hospital, external_id) DO UPDATE
                SET name = EXCLUDED.name, doctor_ids = EXCLUDED.doctor_ids,
                    capacity = EXCLUDED.capacity, updated_at = EXCLUDED.updated_at",
            &[&Uuid::now_v7(), &hospital, id, name, doctors, &t.capacity, &now],
        )
        .await?;
    }
    tx.commit().await?;
    teams_of(&client, &hospital, now).await
}

/// A centre's teams with how many residents each has signed now.
pub async fn teams_of<C: GenericClient>(
    client: &C,
    hospital: &str,
    now: DateTime<Utc>,
) -> Result<Vec<TeamView>, CardError> {
    let rows = client
        .query_cached(
            "SELECT t.hospital, t.external_id, t.name, t.doctor_ids, t.capacity,
                    (SELECT count(*) FROM family_doctor_signings s
                      WHERE s.team_id = t.id AND s.ended_at IS NULL AND s.expires_at > $2) AS signed
               FROM family_doctor_teams t WHERE t.hospital = $1 ORDER BY t.external_id",
            &[&hospital, &now],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TeamView {
            hospital: r.get(0),
            team_id: r.get(1),
            name: r.get(2),
            doctor_ids: r.get(3),
            capacity: r.get(4),
            signed: r.get(5),
        })
        .collect())
}

/// Sign `person` with a team. The same active signing again answers it
/// (`false`), so a retried request never signs twice.
pub async fn sign(
    state: &AppState,
    person: Uuid,
    req: &SignRequest,
    now: DateTime<Utc>,
) -> Result<(SigningView, bool), CardError> {
    let hospital = check_id("hospital", &req.hospital)?;
    let team = check_id("team", &req.team)?;
    let trace = req.signature_trace.trim();
    if !(16..=65_536).contains(&trace.len()) {
        return Err(RequestError::invalid("signature_trace", "must be 16 to 65536 characters").into());
    }
    let signature = hex::encode(Sha256::digest(trace.as_bytes()));
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let locked = tx
        .query_opt_cached("SELECT id FROM persons WHERE id = $1 FOR UPDATE", &[&person])
        .await?;
    if locked.is_none() {
        return Err(CardError::PersonNotFound(person));
    }
    if let Some(active) = active_in(&tx, person, now).await? {
        if active.hospital == hospital && active.team_id == team {
            return Ok((active, false));
        }
        return Err(CardError::AlreadySigned(active.expires_at));
    }
    let team_row = tx
        .query_opt_cached(
            "SELECT id, capacity FROM family_doctor_teams WHERE hospital = $1 AND external_id = $2 FOR UPDATE",
            &[&hospital, &team],
        )
        .await?
        .ok_or(CardError::TeamNotFound)?;
    let (team_id, capacity): (Uuid, i32) = (team_row.get(0), team_row.get(1));
    let signed: i64 = tx
        .query_one_cached(
            "SELECT count(*) FROM family_doctor_signings
              WHERE team_id = $1 AND ended_at IS NULL AND expires_at > $2",
            &[&team_id, &now],
        )
        .await?
        .get(0);
    if signed >= i64::from(capacity) {
        return Err(CardError::TeamFull { capacity });
    }
    let id = Uuid::now_v7();
    let expires_at = now
        .checked_add_months(Months::new(TERM_MONTHS))
        .ok_or_else(|| CardError::Unexpected(anyhow::anyhow!("a year after {now} is out of range")))?;
    let bytes = i32::try_from(trace.len()).unwrap_or(i32::MAX);
    tx.execute_cached(
        "INSERT INTO family_doctor_signings
            (id, person_id, team_id, signed_at, expires_at, signature_sha256, signature_bytes, signed_through_app)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&id, &person, &team_id, &now, &expires_at, &signature, &bytes, &req.app],
    )
    .await?;
    let row = tx
        .query_one_cached(&format!("{SELECT_SIGNING} WHERE s.id = $1"), &[&id])
        .await?;
    let view = signing_view(&row, now);
    append(&tx, "signing.created", &view).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok((view, true))
}

async fn active_in<C: GenericClient>(
    client: &C,
    person: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<SigningView>, CardError> {
    let row = client
        .query_opt_cached(
            &format!(
                "{SELECT_SIGNING} WHERE s.person_id = $1 AND s.ended_at IS NULL AND s.expires_at > $2
                  ORDER BY s.signed_at DESC LIMIT 1"
            ),
            &[&person, &now],
        )
        .await?;
    Ok(row.map(|r| signing_view(&r, now)))
}

/// The person's active signing, if any.
pub async fn active(
    state: &AppState,
    person: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<SigningView>, CardError> {
    let client = state.pool.get().await?;
    active_in(&client, person, now).await
}

/// Every signing of the person, newest first.
pub async fn history(
    state: &AppState,
    person: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<SigningView>, CardError> {
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(
            &format!("{SELECT_SIGNING} WHERE s.person_id = $1 ORDER BY s.signed_at DESC"),
            &[&person],
        )
        .await?;
    Ok(rows.iter().map(|r| signing_view(r, now)).collect())
}

/// End the person's signing early; ending an ended one answers it as is.
pub async fn end(
    state: &AppState,
    person: Uuid,
    signing: Uuid,
    req: &EndRequest,
    now: DateTime<Utc>,
) -> Result<SigningView, CardError> {
    let by = req.ended_by.trim();
    if !(1..=128).contains(&by.len()) || by.chars().any(char::is_control) {
        return Err(RequestError::invalid("ended_by", "must be 1 to 128 printable characters").into());
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt_cached(
            &format!("{SELECT_SIGNING} WHERE s.id = $1 AND s.person_id = $2 FOR UPDATE OF s"),
            &[&signing, &person],
        )
        .await?
        .ok_or(CardError::SigningNotFound)?;
    let before = signing_view(&row, now);
    if before.status != "active" {
        return Ok(before);
    }
    tx.execute_cached(
        "UPDATE family_doctor_signings SET ended_at = $2, ended_by = $3 WHERE id = $1",
        &[&signing, &now, &by],
    )
    .await?;
    let row = tx
        .query_one_cached(&format!("{SELECT_SIGNING} WHERE s.id = $1"), &[&signing])
        .await?;
    let view = signing_view(&row, now);
    append(&tx, "signing.ended", &view).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(view)
}

/// `signing.*` events: no personal data beyond the person's id.
async fn append<C: GenericClient>(client: &C, event: &str, v: &SigningView) -> Result<(), CardError> {
    jyt_events::append(
        client,
        event,
        &v.signing_id.to_string(),
        &serde_json::json!({
            "schema": 1,
            "signing_id": v.signing_id,
            "person_id": v.person_id,
            "hospital": v.hospital,
            "team_id": v.team_id,
            "team_name": v.team_name,
            "team_capacity": v.team_capacity,
            "signed_at": v.signed_at,
            "expires_at": v.expires_at,
            "ended_at": v.ended_at,
        }),
    )
    .await?;
    Ok(())
}
