//! The hospital's current booking policy: stored in PostgreSQL (one row,
//! created from the settings at first start), held by every replica in
//! [`CurrentPolicy`] and re-read when its version moves (the sweeper's
//! tick). A change is validated, applies to schedules not yet released
//! only, and is written with its history row and a `policy.changed` event
//! in one transaction.

use jyt_db::Prepared;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use jyt_db::deadpool_postgres::GenericClient;
use jyt_web::RequestError;
use serde::Serialize;
use uuid::Uuid;

use crate::error::SlotError;
use crate::policy::Policy;
use crate::state::AppState;

/// The policy this replica applies, and the stored version it came from.
#[derive(Clone)]
pub struct CurrentPolicy {
    inner: Arc<RwLock<(i64, Arc<Policy>)>>,
}

impl CurrentPolicy {
    pub fn new(version: i64, policy: Policy) -> Self {
        Self {
            inner: Arc::new(RwLock::new((version, Arc::new(policy)))),
        }
    }

    /// The policy in force now.
    pub fn get(&self) -> Arc<Policy> {
        let held = self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        held.1.clone()
    }

    pub fn version(&self) -> i64 {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
    }

    /// Take a stored version, unless a newer one is already held.
    pub fn set(&self, version: i64, policy: Policy) {
        let mut held = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if version > held.0 {
            *held = (version, Arc::new(policy));
        }
    }
}

/// The stored policy with who changed it last.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPolicy {
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    pub policy: Policy,
}

fn parse(value: serde_json::Value) -> Result<Policy, SlotError> {
    serde_json::from_value(value)
        .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("the stored booking policy is unreadable: {e}")))
}

/// The stored policy, created from `initial` (the settings) when missing.
pub async fn ensure_stored<C: GenericClient>(
    client: &C,
    initial: &Policy,
    now: DateTime<Utc>,
) -> Result<StoredPolicy, SlotError> {
    let json = serde_json::to_value(initial).map_err(|e| SlotError::Unexpected(e.into()))?;
    client
        .execute_cached(
            "INSERT INTO booking_policy (policy, version, updated_at, updated_by)
             VALUES ($1, 1, $2, 'settings') ON CONFLICT DO NOTHING",
            &[&json, &now],
        )
        .await?;
    stored(client, false).await
}

async fn stored<C: GenericClient>(client: &C, for_update: bool) -> Result<StoredPolicy, SlotError> {
    let sql = if for_update {
        "SELECT policy, version, updated_at, updated_by FROM booking_policy FOR UPDATE"
    } else {
        "SELECT policy, version, updated_at, updated_by FROM booking_policy"
    };
    let row = client.query_one_cached(sql, &[]).await?;
    Ok(StoredPolicy {
        policy: parse(row.get(0))?,
        version: row.get(1),
        updated_at: row.get(2),
        updated_by: row.get(3),
    })
}

/// The stored policy, as the console shows it.
pub async fn read(state: &AppState) -> Result<StoredPolicy, SlotError> {
    let client = state.pool.get().await?;
    stored(&client, false).await
}

/// Re-read the stored policy when another replica changed it.
pub async fn refresh(state: &AppState) -> Result<(), SlotError> {
    let client = state.pool.get().await?;
    let version: i64 = client
        .query_one_cached("SELECT version FROM booking_policy", &[])
        .await?
        .get(0);
    if version != state.policy.version() {
        let now = stored(&client, false).await?;
        state.policy.set(now.version, now.policy);
    }
    Ok(())
}

/// What a change did.
#[derive(Debug, Serialize)]
pub struct Changed {
    #[serde(flatten)]
    pub stored: StoredPolicy,
    pub schedules_affected: u64,
}

/// Replace the policy as a whole: refused (400 naming the field, nothing
/// written) unless valid; schedules not yet released take the new release
/// instant and, when next loaded into Redis, the new pool shares. Released
/// schedules keep what patients already see.
pub async fn change(state: &AppState, new: Policy, actor: &str) -> Result<Changed, SlotError> {
    if let Err(invalid) = new.validate("policy") {
        let field = invalid
            .key
            .strip_prefix("policy.")
            .unwrap_or(&invalid.key)
            .to_owned();
        return Err(RequestError::invalid(field, invalid.reason).into());
    }
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let before = stored(&tx, true).await?;
    let version = before.version + 1;
    let (before_json, after_json) = (
        serde_json::to_value(&before.policy).map_err(|e| SlotError::Unexpected(e.into()))?,
        serde_json::to_value(&new).map_err(|e| SlotError::Unexpected(e.into()))?,
    );
    // Segments of unreleased schedules, to reload after the commit.
    let unreleased: Vec<Uuid> = tx
        .query_cached(
            "SELECT seg.id FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id
              WHERE sch.release_at > $1",
            &[&now],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let affected = crate::schedule::queries::apply_release_policy(&tx, &new, now).await?;
    tx.execute_cached(
        "UPDATE booking_policy SET policy = $1, version = $2, updated_at = $3, updated_by = $4",
        &[&after_json, &version, &now, &actor],
    )
    .await?;
    let affected_i32 = i32::try_from(affected).unwrap_or(i32::MAX);
    tx.execute_cached(
        "INSERT INTO booking_policy_history (version, before, after, changed_at, changed_by, schedules_affected)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&version, &before_json, &after_json, &now, &actor, &affected_i32],
    )
    .await?;
    jyt_events::append(
        &tx,
        "policy.changed",
        state.hospital.as_str(),
        &serde_json::json!({
            "schema": 1,
            "hospital_id": state.hospital,
            "version": version,
            "before": before_json,
            "after": after_json,
            "actor": actor,
            "at": now,
            "schedules_affected": affected,
        }),
    )
    .await?;
    tx.commit().await?;
    drop(client);
    state.relay.wake();
    state.policy.set(version, new.clone());
    // Redis holds each segment's release instant and pool split: unreleased
    // ones are reloaded with the new policy; released ones are left alone.
    for segment in unreleased {
        crate::booking::cache::reload_segment(state, segment).await?;
    }
    Ok(Changed {
        stored: StoredPolicy {
            version,
            updated_at: now,
            updated_by: actor.to_owned(),
            policy: new,
        },
        schedules_affected: affected,
    })
}
