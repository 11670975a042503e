//! Family doctor care (家庭医生签约 and 转诊) for the operators' console:
//! card-issuing's `signing.created` / `signing.ended` and slot-inventory's
//! `referral.issued` / `referral.used`, each applied once (the caller
//! records the event id first, see [`crate::ledger::apply`]), and the view
//! per community health centre: signings active and capacity used per
//! team, referrals issued, used and expired by target hospital.

use chrono::{DateTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_events::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

fn text(p: &Value, field: &str) -> String {
    p.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn uuid(p: &Value, field: &str) -> Option<Uuid> {
    p.get(field).and_then(Value::as_str).and_then(|s| s.parse().ok())
}

fn time(p: &Value, field: &str) -> Option<DateTime<Utc>> {
    p.get(field).and_then(Value::as_str).and_then(|s| s.parse().ok())
}

/// Apply the event if it is one of ours; false when it is not.
pub async fn apply<C: GenericClient>(client: &C, event: &Envelope) -> anyhow::Result<bool> {
    let p = &event.payload;
    match event.event_type.as_str() {
        "signing.created" | "signing.ended" => signing(client, p).await?,
        "referral.issued" => issued(client, p).await?,
        "referral.used" => {
            client
                .execute_cached(
                    "UPDATE referrals SET uses = uses + 1, last_used_at = $2 WHERE referral_id = $1",
                    &[&uuid(p, "referral_id"), &event.occurred_at],
                )
                .await?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Both events carry the whole signing: the row is upserted, the team's
/// latest capacity kept.
async fn signing<C: GenericClient>(client: &C, p: &Value) -> anyhow::Result<()> {
    let (Some(id), Some(signed_at), Some(expires_at)) =
        (uuid(p, "signing_id"), time(p, "signed_at"), time(p, "expires_at"))
    else {
        tracing::error!(payload = %p, "a signing event without its signing; skipped");
        return Ok(());
    };
    let (hospital, team, name) = (text(p, "hospital"), text(p, "team_id"), text(p, "team_name"));
    client
        .execute_cached(
            "INSERT INTO family_doctor_signings (signing_id, hospital, team_id, team_name, signed_at, expires_at, ended_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (signing_id) DO UPDATE SET ended_at = EXCLUDED.ended_at",
            &[&id, &hospital, &team, &name, &signed_at, &expires_at, &time(p, "ended_at")],
        )
        .await?;
    if let Some(capacity) = p.get("team_capacity").and_then(Value::as_i64) {
        client
            .execute_cached(
                "INSERT INTO family_doctor_teams (hospital, team_id, team_name, capacity) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hospital, team_id) DO UPDATE
                    SET team_name = EXCLUDED.team_name, capacity = EXCLUDED.capacity",
                &[&hospital, &team, &name, &i32::try_from(capacity).unwrap_or(i32::MAX)],
            )
            .await?;
    }
    Ok(())
}

async fn issued<C: GenericClient>(client: &C, p: &Value) -> anyhow::Result<()> {
    let (Some(id), Some(issued_at), Some(expires_at)) = (
        uuid(p, "referral_id"),
        time(p, "issued_at"),
        time(p, "expires_at"),
    ) else {
        tracing::error!(payload = %p, "a referral event without its referral; skipped");
        return Ok(());
    };
    client
        .execute_cached(
            "INSERT INTO referrals (referral_id, issuing_hospital, issuing_team, target_hospital, department,
                                    issued_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (referral_id) DO NOTHING",
            &[
                &id,
                &text(p, "issuing_hospital"),
                &text(p, "issuing_team"),
                &text(p, "target_hospital"),
                &text(p, "department"),
                &issued_at,
                &expires_at,
            ],
        )
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TeamLine {
    pub hospital: String,
    pub team_id: String,
    pub team_name: String,
    pub active: i64,
    /// The latest capacity the team's events reported.
    pub capacity: Option<i32>,
    pub capacity_used_percent: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReferralLine {
    pub issuing_hospital: String,
    pub target_hospital: String,
    pub issued: i64,
    /// Used by a booking (at least once; a cancelled booking frees it).
    pub used: i64,
    /// Past their expiry unused.
    pub expired: i64,
    /// Still open to book with.
    pub open: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FamilyDoctorView {
    pub hospital: Option<String>,
    pub signings_active: i64,
    pub teams: Vec<TeamLine>,
    pub referrals: Vec<ReferralLine>,
}

/// The view at `now`, for one hospital (as a centre: its teams and the
/// referrals it issued; as a target: the referrals it received) or all.
pub async fn view<C: GenericClient>(
    client: &C,
    hospital: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<FamilyDoctorView> {
    let teams: Vec<TeamLine> = client
        .query_cached(
            "SELECT s.hospital, s.team_id, max(s.team_name),
                    count(*) FILTER (WHERE s.ended_at IS NULL AND s.expires_at > $2), max(t.capacity)
               FROM family_doctor_signings s
               LEFT JOIN family_doctor_teams t ON t.hospital = s.hospital AND t.team_id = s.team_id
              WHERE $1::text IS NULL OR s.hospital = $1
              GROUP BY 1, 2 ORDER BY 1, 2",
            &[&hospital, &now],
        )
        .await?
        .iter()
        .map(|r| {
            let (active, capacity): (i64, Option<i32>) = (r.get(3), r.get(4));
            TeamLine {
                hospital: r.get(0),
                team_id: r.get(1),
                team_name: r.get(2),
                active,
                capacity,
                capacity_used_percent: capacity
                    .filter(|c| *c > 0)
                    .map(|c| (active as f64 * 1000.0 / f64::from(c)).round() / 10.0),
            }
        })
        .collect();
    let referrals = client
        .query_cached(
            "SELECT issuing_hospital, target_hospital, count(*),
                    count(*) FILTER (WHERE uses > 0),
                    count(*) FILTER (WHERE uses = 0 AND expires_at <= $2),
                    count(*) FILTER (WHERE uses = 0 AND expires_at > $2)
               FROM referrals
              WHERE $1::text IS NULL OR issuing_hospital = $1 OR target_hospital = $1
              GROUP BY 1, 2 ORDER BY 1, 2",
            &[&hospital, &now],
        )
        .await?
        .iter()
        .map(|r| ReferralLine {
            issuing_hospital: r.get(0),
            target_hospital: r.get(1),
            issued: r.get(2),
            used: r.get(3),
            expired: r.get(4),
            open: r.get(5),
        })
        .collect();
    Ok(FamilyDoctorView {
        hospital: hospital.map(str::to_owned),
        signings_active: teams.iter().map(|t| t.active).sum(),
        teams,
        referrals,
    })
}
