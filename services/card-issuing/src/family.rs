//! Family members (就诊人): a holder binds people they may book for.
//!
//! Limits, per calendar month in Asia/Shanghai: a holder makes at most N
//! new bindings, and a person is bound at most M times across all holders.
//! Unbound rows still count, or bind/unbind cycles would dodge the limits.
//! Both persons' rows are locked (in id order, so two opposite bindings
//! cannot deadlock) before counting, so concurrent requests cannot both
//! take the last place.
//!
//! `now` is a parameter everywhere, so month boundaries are testable
//! without waiting for one.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use jyt_db::tokio_postgres::Row;
use jyt_domain::time;
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CardError;
use crate::identity::age_on;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    pub member_id: Uuid,
    /// e.g. `child`, `parent`, `spouse`.
    pub relationship: String,
    /// For a member under the guardian age: the reference of the checked
    /// guardian relationship proof (birth certificate, household register).
    #[serde(default)]
    pub guardian_proof_ref: Option<String>,
    /// For an older member: the reference of their own confirmation
    /// (e.g. an SMS code check done by the channel).
    #[serde(default)]
    pub member_verification_ref: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbindRequest {
    /// The holder or the member: either side may unbind.
    pub acting_person_id: Uuid,
}

#[derive(Debug, Clone, Serialize)]
pub struct BindingView {
    pub binding_id: Uuid,
    pub holder_id: Uuid,
    pub member_id: Uuid,
    pub relationship: String,
    pub proof_kind: String,
    pub bound_at: DateTime<Utc>,
    pub unbound_at: Option<DateTime<Utc>>,
}

fn binding_view(row: &Row) -> BindingView {
    BindingView {
        binding_id: row.get("id"),
        holder_id: row.get("holder_id"),
        member_id: row.get("member_id"),
        relationship: row.get("relationship"),
        proof_kind: row.get("proof_kind"),
        bound_at: row.get("bound_at"),
        unbound_at: row.get("unbound_at"),
    }
}

const SELECT_BINDING: &str =
    "SELECT id, holder_id, member_id, relationship, proof_kind, bound_at, unbound_at FROM family_bindings";

/// The calendar month containing `now` in Shanghai, as UTC instants.
pub fn shanghai_month(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = time::local(now).date_naive();
    let first = local.with_day(1).unwrap_or(local);
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .unwrap_or(first);
    (time::at(first, NaiveTime::MIN), time::at(next, NaiveTime::MIN))
}

fn check_ref(field: &str, v: &str) -> Result<String, RequestError> {
    let v = v.trim();
    if (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(v.to_owned())
    } else {
        Err(RequestError::invalid(
            field,
            "must be 1 to 128 visible ASCII characters",
        ))
    }
}

/// Bind `req.member_id` to `holder_id`. An existing live binding of the pair
/// is returned as is (`false`), so a retry never counts twice.
pub async fn bind(
    state: &AppState,
    holder_id: Uuid,
    req: &BindRequest,
    now: DateTime<Utc>,
) -> Result<(BindingView, bool), CardError> {
    if req.member_id == holder_id {
        return Err(RequestError::invalid("member_id", "a holder cannot bind themselves").into());
    }
    let relationship = req.relationship.trim();
    if !(1..=32).contains(&relationship.chars().count()) {
        return Err(RequestError::invalid("relationship", "must be 1 to 32 characters").into());
    }
    let limits = &state.settings.family;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "SELECT id, birth_date FROM persons WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&vec![holder_id, req.member_id]],
        )
        .await?;
    let birth_of = |id: Uuid| {
        rows.iter()
            .find(|r| r.get::<_, Uuid>(0) == id)
            .map(|r| r.get::<_, NaiveDate>(1))
    };
    if birth_of(holder_id).is_none() {
        return Err(CardError::PersonNotFound(holder_id));
    }
    let member_birth = birth_of(req.member_id).ok_or(CardError::PersonNotFound(req.member_id))?;

    if let Some(row) = tx
        .query_opt(
            &format!("{SELECT_BINDING} WHERE holder_id = $1 AND member_id = $2 AND unbound_at IS NULL"),
            &[&holder_id, &req.member_id],
        )
        .await?
    {
        return Ok((binding_view(&row), false));
    }

    let age = age_on(member_birth, time::local(now).date_naive());
    let (proof_kind, proof_ref) = if age < limits.guardian_age {
        let r = req
            .guardian_proof_ref
            .as_deref()
            .ok_or(CardError::GuardianProofRequired {
                age: limits.guardian_age,
            })?;
        ("guardian_proof", check_ref("guardian_proof_ref", r)?)
    } else {
        let r = req
            .member_verification_ref
            .as_deref()
            .ok_or(CardError::MemberVerificationRequired {
                age: limits.guardian_age,
            })?;
        ("member_verification", check_ref("member_verification_ref", r)?)
    };

    let (month_start, month_end) = shanghai_month(now);
    let counts = tx
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE holder_id = $1),
                    COUNT(*) FILTER (WHERE member_id = $2)
               FROM family_bindings
              WHERE (holder_id = $1 OR member_id = $2) AND bound_at >= $3 AND bound_at < $4",
            &[&holder_id, &req.member_id, &month_start, &month_end],
        )
        .await?;
    let (by_holder, of_member): (i64, i64) = (counts.get(0), counts.get(1));
    if by_holder >= limits.max_new_bindings_per_holder_per_month {
        return Err(CardError::HolderMonthlyLimit {
            limit: limits.max_new_bindings_per_holder_per_month,
        });
    }
    if of_member >= limits.max_bindings_per_member_per_month {
        return Err(CardError::MemberMonthlyLimit {
            limit: limits.max_bindings_per_member_per_month,
        });
    }

    let id = Uuid::now_v7();
    let row = tx
        .query_one(
            "INSERT INTO family_bindings (id, holder_id, member_id, relationship, proof_kind, proof_ref, bound_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id, holder_id, member_id, relationship, proof_kind, bound_at, unbound_at",
            &[&id, &holder_id, &req.member_id, &relationship, &proof_kind, &proof_ref, &now],
        )
        .await?;
    jyt_events::append(
        &tx,
        "family.bound",
        &holder_id.to_string(),
        &serde_json::json!({ "binding_id": id, "holder_id": holder_id, "member_id": req.member_id }),
    )
    .await?;
    tx.commit().await?;
    state.relay.wake();
    Ok((binding_view(&row), true))
}

/// Unbind; either party may. Unbinding twice answers the same.
pub async fn unbind(
    state: &AppState,
    binding_id: Uuid,
    acting: Uuid,
    now: DateTime<Utc>,
) -> Result<BindingView, CardError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!("{SELECT_BINDING} WHERE id = $1 FOR UPDATE"),
            &[&binding_id],
        )
        .await?
        .ok_or(CardError::BindingNotFound)?;
    let binding = binding_view(&row);
    if binding.holder_id != acting && binding.member_id != acting {
        return Err(CardError::NotBindingParty);
    }
    if binding.unbound_at.is_some() {
        return Ok(binding);
    }
    let row = tx
        .query_one(
            "UPDATE family_bindings SET unbound_at = $2, unbound_by = $3 WHERE id = $1
             RETURNING id, holder_id, member_id, relationship, proof_kind, bound_at, unbound_at",
            &[&binding_id, &now, &acting],
        )
        .await?;
    jyt_events::append(
        &tx,
        "family.unbound",
        &binding.holder_id.to_string(),
        &serde_json::json!({
            "binding_id": binding_id, "holder_id": binding.holder_id,
            "member_id": binding.member_id, "by": acting,
        }),
    )
    .await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(binding_view(&row))
}

#[derive(Debug, Serialize)]
pub struct FamilyView {
    pub person_id: Uuid,
    /// Live bindings where this person is the holder.
    pub members: Vec<BindingView>,
    /// Live bindings where this person is the member.
    pub holders: Vec<BindingView>,
}

pub async fn list(state: &AppState, person_id: Uuid) -> Result<FamilyView, CardError> {
    let client = state.pool.get().await?;
    client
        .query_opt("SELECT 1 FROM persons WHERE id = $1", &[&person_id])
        .await?
        .ok_or(CardError::PersonNotFound(person_id))?;
    let rows = client
        .query(
            &format!(
                "{SELECT_BINDING} WHERE (holder_id = $1 OR member_id = $1) AND unbound_at IS NULL ORDER BY bound_at"
            ),
            &[&person_id],
        )
        .await?;
    let (members, holders): (Vec<_>, Vec<_>) = rows
        .iter()
        .map(binding_view)
        .partition(|b| b.holder_id == person_id);
    Ok(FamilyView {
        person_id,
        members,
        holders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_month_turns_at_midnight_in_shanghai_not_utc() {
        // 2026-01-31 16:30 UTC is already 1 February in Beijing.
        let now = Utc.with_ymd_and_hms(2026, 1, 31, 16, 30, 0).unwrap();
        let (start, end) = shanghai_month(now);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 1, 31, 16, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 2, 28, 16, 0, 0).unwrap());
        let dec = Utc.with_ymd_and_hms(2026, 12, 15, 0, 0, 0).unwrap();
        assert_eq!(
            shanghai_month(dec).1,
            Utc.with_ymd_and_hms(2026, 12, 31, 16, 0, 0).unwrap()
        );
    }
}
