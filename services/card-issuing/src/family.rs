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
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Transaction;
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
    let relationship = checked_pair(holder_id, req.member_id, &req.relationship)?;
    let guardian_age = state.settings.family.guardian_age;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let answer = bind_in(&tx, state, holder_id, req.member_id, &relationship, now, |age| {
        if age < guardian_age {
            let r = req
                .guardian_proof_ref
                .as_deref()
                .ok_or(CardError::GuardianProofRequired { age: guardian_age })?;
            Ok(("guardian_proof", check_ref("guardian_proof_ref", r)?))
        } else {
            // Never a reference someone types in: an older member confirms
            // themself with the one-time code (start_verification).
            Err(CardError::MemberVerificationRequired { age: guardian_age })
        }
    })
    .await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(answer)
}

/// The pair and the relationship, checked before anything is read.
fn checked_pair(holder_id: Uuid, member_id: Uuid, relationship: &str) -> Result<String, CardError> {
    if member_id == holder_id {
        return Err(RequestError::invalid("member_id", "a holder cannot bind themselves").into());
    }
    let relationship = relationship.trim();
    if !(1..=32).contains(&relationship.chars().count()) {
        return Err(RequestError::invalid("relationship", "must be 1 to 32 characters").into());
    }
    Ok(relationship.to_owned())
}

/// Lock both persons (in id order) and answer the member's age, or 404.
async fn lock_pair(
    tx: &Transaction<'_>,
    holder_id: Uuid,
    member_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u32, CardError> {
    let rows = tx
        .query_cached(
            "SELECT id, birth_date FROM persons WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&vec![holder_id, member_id]],
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
    let member_birth = birth_of(member_id).ok_or(CardError::PersonNotFound(member_id))?;
    Ok(age_on(member_birth, time::local(now).date_naive()))
}

/// The monthly limits, counted with both persons locked.
async fn check_limits(
    tx: &Transaction<'_>,
    state: &AppState,
    holder_id: Uuid,
    member_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), CardError> {
    let limits = &state.settings.family;
    let (month_start, month_end) = shanghai_month(now);
    let counts = tx
        .query_one_cached(
            "SELECT COUNT(*) FILTER (WHERE holder_id = $1),
                    COUNT(*) FILTER (WHERE member_id = $2)
               FROM family_bindings
              WHERE (holder_id = $1 OR member_id = $2) AND bound_at >= $3 AND bound_at < $4",
            &[&holder_id, &member_id, &month_start, &month_end],
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
    Ok(())
}

/// The binding itself, in the caller's transaction. `proof` answers, from
/// the member's age, which proof binds them (or why none does).
async fn bind_in(
    tx: &Transaction<'_>,
    state: &AppState,
    holder_id: Uuid,
    member_id: Uuid,
    relationship: &str,
    now: DateTime<Utc>,
    proof: impl FnOnce(u32) -> Result<(&'static str, String), CardError>,
) -> Result<(BindingView, bool), CardError> {
    let age = lock_pair(tx, holder_id, member_id, now).await?;
    if let Some(row) = tx
        .query_opt_cached(
            &format!("{SELECT_BINDING} WHERE holder_id = $1 AND member_id = $2 AND unbound_at IS NULL"),
            &[&holder_id, &member_id],
        )
        .await?
    {
        return Ok((binding_view(&row), false));
    }
    let (proof_kind, proof_ref) = proof(age)?;
    check_limits(tx, state, holder_id, member_id, now).await?;
    let id = Uuid::now_v7();
    let row = tx
        .query_one_cached(
            "INSERT INTO family_bindings (id, holder_id, member_id, relationship, proof_kind, proof_ref, bound_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id, holder_id, member_id, relationship, proof_kind, bound_at, unbound_at",
            &[&id, &holder_id, &member_id, &relationship, &proof_kind, &proof_ref, &now],
        )
        .await?;
    jyt_events::append(
        tx,
        "family.bound",
        &holder_id.to_string(),
        &serde_json::json!({ "binding_id": id, "holder_id": holder_id, "member_id": member_id }),
    )
    .await?;
    Ok((binding_view(&row), true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationRequest {
    pub member_id: Uuid,
    pub relationship: String,
}

/// A new verification, with its code: answered only to the gateway, which
/// sends the code to the member's own channel app and never to the holder's.
#[derive(Debug, Serialize)]
pub struct StartedVerification {
    pub verification_id: Uuid,
    pub holder_id: Uuid,
    pub member_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    pub code: String,
}

fn code_hash(state: &AppState, verification: Uuid, code: &str) -> Vec<u8> {
    state
        .blind_index
        .of("family_verification", &format!("{verification}:{code}"))
}

/// A holder asks to bind a member aged `guardian_age` or over. The limits
/// are checked now too, so a holder is told before the member is bothered.
pub async fn start_verification(
    state: &AppState,
    holder_id: Uuid,
    req: &VerificationRequest,
    now: DateTime<Utc>,
) -> Result<StartedVerification, CardError> {
    let relationship = checked_pair(holder_id, req.member_id, &req.relationship)?;
    let rules = &state.settings.family;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let age = lock_pair(&tx, holder_id, req.member_id, now).await?;
    if age < rules.guardian_age {
        return Err(CardError::GuardianProofRequired {
            age: rules.guardian_age,
        });
    }
    // A pair bound already confirms into its binding (a replay, not a new
    // binding): only a new one must fit this month's limits.
    let bound = tx
        .query_opt_cached(
            "SELECT 1 FROM family_bindings WHERE holder_id = $1 AND member_id = $2 AND unbound_at IS NULL",
            &[&holder_id, &req.member_id],
        )
        .await?
        .is_some();
    if !bound {
        check_limits(&tx, state, holder_id, req.member_id, now).await?;
    }
    let id = Uuid::now_v7();
    // Six digits from the OS's randomness (a v4 UUID's 122 random bits).
    let code = format!("{:06}", Uuid::new_v4().as_u128() % 1_000_000);
    let expires_at = now + chrono::Duration::minutes(rules.verification_minutes);
    tx.execute_cached(
        "INSERT INTO family_verifications (id, holder_id, member_id, relationship, code_hash, expires_at,
                                           status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7)",
        &[
            &id,
            &holder_id,
            &req.member_id,
            &relationship,
            &code_hash(state, id, &code),
            &expires_at,
            &now,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(StartedVerification {
        verification_id: id,
        holder_id,
        member_id: req.member_id,
        expires_at,
        code,
    })
}

/// The member enters the code: right and in time, the binding is made (the
/// monthly limits counted again); wrong, one of the attempts is used, and
/// the last one locks the verification. A confirmed one answers its binding.
pub async fn confirm_verification(
    state: &AppState,
    verification_id: Uuid,
    req: &ConfirmRequest,
    now: DateTime<Utc>,
) -> Result<(BindingView, bool), CardError> {
    let code = req.code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::invalid("code", "must be the 6 digits sent to the member").into());
    }
    let rules = &state.settings.family;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt_cached(
            "SELECT holder_id, member_id, relationship, code_hash, expires_at, attempts, status, binding_id
               FROM family_verifications WHERE id = $1 FOR UPDATE",
            &[&verification_id],
        )
        .await?
        .ok_or(CardError::VerificationNotFound)?;
    let (holder_id, member_id, relationship): (Uuid, Uuid, String) = (row.get(0), row.get(1), row.get(2));
    let status: String = row.get(6);
    if status == "confirmed" {
        let binding: Option<Uuid> = row.get(7);
        let b = tx
            .query_one_cached(&format!("{SELECT_BINDING} WHERE id = $1"), &[&binding])
            .await?;
        return Ok((binding_view(&b), false));
    }
    if status == "locked" {
        return Err(CardError::VerificationLocked);
    }
    if row.get::<_, DateTime<Utc>>(4) <= now {
        return Err(CardError::VerificationExpired);
    }
    let stored: Vec<u8> = row.get(3);
    let presented = code_hash(state, verification_id, code);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        stored.as_slice(),
        presented.as_slice(),
    )) {
        let attempts = row.get::<_, i32>(5) + 1;
        let locked = attempts >= rules.verification_attempts;
        tx.execute_cached(
            "UPDATE family_verifications SET attempts = $2, status = $3 WHERE id = $1",
            &[
                &verification_id,
                &attempts,
                &if locked { "locked" } else { "pending" },
            ],
        )
        .await?;
        tx.commit().await?;
        return Err(if locked {
            CardError::VerificationLocked
        } else {
            CardError::VerificationCodeWrong {
                attempts_left: rules.verification_attempts - attempts,
            }
        });
    }
    let proof_ref = format!("verification:{verification_id}");
    let (binding, created) = bind_in(&tx, state, holder_id, member_id, &relationship, now, |_| {
        Ok(("member_verification", proof_ref))
    })
    .await?;
    tx.execute_cached(
        "UPDATE family_verifications SET status = 'confirmed', binding_id = $2 WHERE id = $1",
        &[&verification_id, &binding.binding_id],
    )
    .await?;
    tx.commit().await?;
    state.relay.wake();
    Ok((binding, created))
}

/// Who a verification is between (the gateway checks that the member's own
/// app is the one confirming).
#[derive(Debug, Serialize)]
pub struct VerificationView {
    pub verification_id: Uuid,
    pub holder_id: Uuid,
    pub member_id: Uuid,
    pub status: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn verification(state: &AppState, id: Uuid) -> Result<VerificationView, CardError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt_cached(
            "SELECT holder_id, member_id, status, expires_at FROM family_verifications WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or(CardError::VerificationNotFound)?;
    Ok(VerificationView {
        verification_id: id,
        holder_id: row.get(0),
        member_id: row.get(1),
        status: row.get(2),
        expires_at: row.get(3),
    })
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
        .query_opt_cached(
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
        .query_one_cached(
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
        .query_opt_cached("SELECT 1 FROM persons WHERE id = $1", &[&person_id])
        .await?
        .ok_or(CardError::PersonNotFound(person_id))?;
    let rows = client
        .query_cached(
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
