//! Real-name registration and personal data. One person, one identity: the
//! blind index of the ID number is unique in PostgreSQL, so two kiosks
//! registering the same person at the same moment still make one row.

use jyt_db::Prepared;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::Row;
use jyt_domain::time;
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{Aad, BlindIndex, Keyring};
use crate::error::CardError;
use crate::identity::{InsuranceNumber, Phone, ResidentId, mask_id_number, mask_phone, mask_tail};
use crate::operator::OperatorId;
use crate::state::AppState;

const COL_ID: &str = "id_number";
const COL_PHONE: &str = "phone";
const COL_INSURANCE: &str = "insurance_number";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    pub id_number: String,
    pub phone: String,
    #[serde(default)]
    pub insurance_number: Option<String>,
    /// The channel app registering the person through the gateway (set by
    /// the gateway, never by the patient): the app that may act for them.
    #[serde(default)]
    pub enrolled_by_app: Option<String>,
}

/// Only masked values, so logging a request cannot leak it.
impl fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("id_number", &mask_id_number(&self.id_number))
            .field("phone", &mask_phone(&self.phone))
            .finish_non_exhaustive()
    }
}

/// A person as every response shows them: identifiers masked.
#[derive(Debug, Clone, Serialize)]
pub struct PersonView {
    pub person_id: Uuid,
    pub name: String,
    pub id_number_masked: String,
    pub phone_masked: String,
    pub insurance_number_masked: Option<String>,
    pub birth_date: NaiveDate,
    pub registered_at: DateTime<Utc>,
    /// The channel app that registered the person, if one did.
    pub enrolled_by_app: Option<String>,
}

/// Unmasked data, only for an audited operator read.
#[derive(Debug, Clone, Serialize)]
pub struct RevealedPerson {
    pub person_id: Uuid,
    pub name: String,
    pub id_number: String,
    pub phone: String,
    pub insurance_number: Option<String>,
    pub audit_id: i64,
}

#[derive(Debug)]
pub struct Registered {
    pub person: PersonView,
    /// False when the ID number was already registered.
    pub created: bool,
}

struct ValidRegistration {
    enrolled_by_app: Option<String>,
    name: String,
    id: ResidentId,
    phone: Phone,
    insurance: Option<InsuranceNumber>,
}

pub fn validate_name(raw: &str) -> Result<String, RequestError> {
    let name = raw.trim();
    let n = name.chars().count();
    if !(1..=64).contains(&n) || name.chars().any(char::is_control) {
        return Err(RequestError::invalid(
            "name",
            "must be 1 to 64 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

fn validate(req: &RegisterRequest, today: NaiveDate) -> Result<ValidRegistration, CardError> {
    let name = validate_name(&req.name)?;
    let id = ResidentId::parse(&req.id_number, today).map_err(CardError::IdNumber)?;
    let phone = Phone::parse(&req.phone)
        .ok_or_else(|| RequestError::invalid("phone", "must be an 11-digit mainland mobile number"))?;
    let insurance = match &req.insurance_number {
        None => None,
        Some(raw) => Some(InsuranceNumber::parse(raw).ok_or_else(|| {
            RequestError::invalid("insurance_number", "must be 6 to 32 letters and digits")
        })?),
    };
    let enrolled_by_app = match &req.enrolled_by_app {
        None => None,
        Some(app) if (1..=64).contains(&app.len()) && app.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(app.clone())
        }
        Some(_) => return Err(RequestError::invalid("enrolled_by_app", "must be a channel app id").into()),
    };
    Ok(ValidRegistration {
        enrolled_by_app,
        name,
        id,
        phone,
        insurance,
    })
}

/// A person's columns as [`view`] reads them, qualified by `p`.
pub const SELECT_PERSON_COLUMNS: &str =
    "SELECT p.id, p.name, p.birth_date, p.key_id, p.id_number_ct, p.phone_ct,
        p.insurance_ct, p.created_at, p.enrolled_by_app";

const SELECT_PERSON: &str =
    "SELECT id, name, birth_date, key_id, id_number_ct, phone_ct, insurance_ct, created_at,
            enrolled_by_app FROM persons";

/// Register a person, or find them if their ID number is already known.
pub async fn register(
    state: &AppState,
    req: &RegisterRequest,
    now: DateTime<Utc>,
) -> Result<Registered, CardError> {
    let valid = validate(req, time::local(now).date_naive())?;
    let id_bidx = state.blind_index.of(COL_ID, valid.id.expose());
    let phone_bidx = state.blind_index.of(COL_PHONE, valid.phone.expose());

    let mut client = state.pool.get().await?;
    if let Some(row) = client
        .query_opt_cached(&format!("{SELECT_PERSON} WHERE id_number_bidx = $1"), &[&id_bidx])
        .await?
    {
        return existing(&state.keyring, &row, &valid.name);
    }

    let person_id = Uuid::now_v7();
    let keyring = &state.keyring;
    let id_ct = keyring.seal(valid.id.expose(), &Aad::new(COL_ID, person_id))?;
    let phone_ct = keyring.seal(valid.phone.expose(), &Aad::new(COL_PHONE, person_id))?;
    let insurance_ct = match &valid.insurance {
        Some(i) => Some(keyring.seal(i.expose(), &Aad::new(COL_INSURANCE, person_id))?),
        None => None,
    };
    let tx = client.transaction().await?;
    let inserted = tx
        .query_opt_cached(
            "INSERT INTO persons (id, name, birth_date, key_id, id_number_ct, phone_ct, insurance_ct,
                                  id_number_bidx, phone_bidx, created_at, enrolled_by_app)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (id_number_bidx) DO NOTHING
             RETURNING id, name, birth_date, key_id, id_number_ct, phone_ct, insurance_ct, created_at,
                       enrolled_by_app",
            &[
                &person_id,
                &valid.name,
                &valid.id.birth_date(),
                &keyring.active_key_id(),
                &id_ct,
                &phone_ct,
                &insurance_ct,
                &id_bidx,
                &phone_bidx,
                &now,
                &valid.enrolled_by_app,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        // A concurrent registration of the same person won the race.
        drop(tx);
        let row = client
            .query_one_cached(&format!("{SELECT_PERSON} WHERE id_number_bidx = $1"), &[&id_bidx])
            .await?;
        return existing(keyring, &row, &valid.name);
    };
    // The event carries no personal data: consumers look the person up.
    jyt_events::append(
        &tx,
        "person.registered",
        &person_id.to_string(),
        &serde_json::json!({ "person_id": person_id }),
    )
    .await?;
    tx.commit().await?;
    state.relay.wake();
    tracing::info!(person = %person_id, "person registered");
    Ok(Registered {
        person: view(keyring, &row)?,
        created: true,
    })
}

fn existing(keyring: &Keyring, row: &Row, name: &str) -> Result<Registered, CardError> {
    let stored: String = row.get("name");
    if stored != name {
        return Err(CardError::IdentityConflict);
    }
    Ok(Registered {
        person: view(keyring, row)?,
        created: false,
    })
}

/// Open the row's ciphertexts and mask them.
pub fn view(keyring: &Keyring, row: &Row) -> Result<PersonView, CardError> {
    let opened = open(keyring, row)?;
    Ok(PersonView {
        person_id: opened.person_id,
        name: opened.name,
        id_number_masked: mask_id_number(&opened.id_number),
        phone_masked: mask_phone(&opened.phone),
        insurance_number_masked: opened.insurance_number.as_deref().map(mask_tail),
        birth_date: row.get("birth_date"),
        registered_at: row.get("created_at"),
        enrolled_by_app: row.get("enrolled_by_app"),
    })
}

struct Opened {
    person_id: Uuid,
    name: String,
    id_number: String,
    phone: String,
    insurance_number: Option<String>,
}

fn open(keyring: &Keyring, row: &Row) -> Result<Opened, CardError> {
    let person_id: Uuid = row.get("id");
    let key_id: String = row.get("key_id");
    let id_ct: Vec<u8> = row.get("id_number_ct");
    let phone_ct: Vec<u8> = row.get("phone_ct");
    let insurance_ct: Option<Vec<u8>> = row.get("insurance_ct");
    Ok(Opened {
        person_id,
        name: row.get("name"),
        id_number: keyring.open(&key_id, &id_ct, &Aad::new(COL_ID, person_id))?,
        phone: keyring.open(&key_id, &phone_ct, &Aad::new(COL_PHONE, person_id))?,
        insurance_number: match insurance_ct {
            Some(ct) => Some(keyring.open(&key_id, &ct, &Aad::new(COL_INSURANCE, person_id))?),
            None => None,
        },
    })
}

pub async fn get<C: GenericClient>(
    client: &C,
    keyring: &Keyring,
    person_id: Uuid,
) -> Result<PersonView, CardError> {
    let row = client
        .query_opt_cached(&format!("{SELECT_PERSON} WHERE id = $1"), &[&person_id])
        .await?
        .ok_or(CardError::PersonNotFound(person_id))?;
    view(keyring, &row)
}

/// Find a person by ID number through the blind index (a kiosk's "find me").
pub async fn find_by_id_number(
    state: &AppState,
    raw_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<PersonView>, CardError> {
    let id = ResidentId::parse(raw_id, time::local(now).date_naive()).map_err(CardError::IdNumber)?;
    let bidx: Vec<u8> = blind(&state.blind_index, &id);
    let client = state.pool.get().await?;
    match client
        .query_opt_cached(&format!("{SELECT_PERSON} WHERE id_number_bidx = $1"), &[&bidx])
        .await?
    {
        Some(row) => Ok(Some(view(&state.keyring, &row)?)),
        None => Ok(None),
    }
}

fn blind(index: &BlindIndex, id: &ResidentId) -> Vec<u8> {
    index.of(COL_ID, id.expose())
}

/// An operator's read of unmasked data: the audit row is written in the
/// same transaction, so there is no read without its record.
pub async fn reveal(
    state: &AppState,
    person_id: Uuid,
    operator: &OperatorId,
    reason: &str,
) -> Result<RevealedPerson, CardError> {
    let reason = reason.trim();
    if !(1..=500).contains(&reason.chars().count()) {
        return Err(RequestError::invalid("reason", "must be 1 to 500 characters").into());
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt_cached(&format!("{SELECT_PERSON} WHERE id = $1"), &[&person_id])
        .await?
        .ok_or(CardError::PersonNotFound(person_id))?;
    let opened = open(&state.keyring, &row)?;
    let mut fields = vec![COL_ID, COL_PHONE];
    if opened.insurance_number.is_some() {
        fields.push(COL_INSURANCE);
    }
    let audit_id: i64 = tx
        .query_one_cached(
            "INSERT INTO personal_data_audit (operator_id, person_id, reason, fields)
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&operator.0, &person_id, &reason, &fields],
        )
        .await?
        .get(0);
    tx.commit().await?;
    tracing::info!(person = %person_id, operator = %operator.0, audit_id, "personal data revealed");
    Ok(RevealedPerson {
        person_id,
        name: opened.name,
        id_number: opened.id_number,
        phone: opened.phone,
        insurance_number: opened.insurance_number,
        audit_id,
    })
}

/// Re-seal up to `batch` rows still sealed with a key other than the active
/// one; returns how many. Run until it returns 0 after rotating keys, then
/// the old key can leave the keyring. `SKIP LOCKED` lets several replicas
/// (or a retry) run it at once without waiting on each other.
pub async fn reseal_batch(state: &AppState, batch: i64) -> Result<usize, CardError> {
    let keyring = &state.keyring;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query_cached(
            &format!("{SELECT_PERSON} WHERE key_id <> $1 LIMIT $2 FOR UPDATE SKIP LOCKED"),
            &[&keyring.active_key_id(), &batch],
        )
        .await?;
    for row in &rows {
        let opened = open(keyring, row)?;
        let id = opened.person_id;
        let insurance_ct = match &opened.insurance_number {
            Some(i) => Some(keyring.seal(i, &Aad::new(COL_INSURANCE, id))?),
            None => None,
        };
        tx.execute_cached(
            "UPDATE persons SET key_id = $2, id_number_ct = $3, phone_ct = $4, insurance_ct = $5 WHERE id = $1",
            &[
                &id,
                &keyring.active_key_id(),
                &keyring.seal(&opened.id_number, &Aad::new(COL_ID, id))?,
                &keyring.seal(&opened.phone, &Aad::new(COL_PHONE, id))?,
                &insurance_ct,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_debug_shows_no_identifier() {
        let req = RegisterRequest {
            name: "张三".into(),
            id_number: "11010519491231002X".into(),
            phone: "13812345678".into(),
            insurance_number: None,
            enrolled_by_app: None,
        };
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("11010519491231002X") && !shown.contains("13812345678"),
            "{shown}"
        );
    }
}
