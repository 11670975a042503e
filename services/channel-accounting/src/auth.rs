//! Operators and their sessions. Accounts come from settings (seeded into
//! PostgreSQL at start, passwords as Argon2 PHC strings); a login returns an
//! opaque bearer token of which only the SHA-256 is stored, with an expiry.
//!
//! Roles: a `city` operator sees every hospital; a `hospital` operator only
//! their own, and asking for another hospital is refused with 403.
//!
//! Brute force is slowed: [`throttle`] counts failed logins per name and
//! per client address; the Argon2 check runs on a blocking thread with no
//! PostgreSQL connection held; an unknown login is checked against
//! [`DUMMY_HASH`] so it costs what a wrong password does.

pub mod throttle;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use futures::future::LocalBoxFuture;
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

use crate::error::AccountingError;
use crate::settings::OperatorSettings;

pub const DEMO_LOGIN: &str = "city";
pub const DEMO_PASSWORD: &str = "demo-city-password";

/// OWASP's recommended Argon2id cost (19 MiB, 2 passes), for real accounts.
pub const PASSWORD_MEMORY_KIB: u32 = 19_456;
pub const PASSWORD_ITERATIONS: u32 = 2;

/// What an unknown login is checked against, so that it costs one Argon2
/// verification at the real accounts' cost, like a wrong password, and
/// answers in the same time. Made by `hash-password` from random bytes that
/// were thrown away; [`check_password`] refuses it whatever is typed.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$CZVcmROZQn2Gb8wviCXcPw$hvuzsEGpaOGABaqND8neuumqy2Vbj7Z4X7AlXfY8EE0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    City,
    Hospital(String),
}

/// An operator with a live session; as an extractor it answers 401 without one.
#[derive(Debug, Clone)]
pub struct Operator {
    pub login: String,
    pub role: Role,
}

impl Operator {
    /// The hospital a request may see: a city operator whatever it asked
    /// for (None = all), a hospital operator only their own.
    pub fn hospital_scope(&self, requested: Option<&str>) -> Result<Option<String>, AccountingError> {
        match (&self.role, requested) {
            (Role::City, r) => Ok(r.map(str::to_owned)),
            (Role::Hospital(own), Some(r)) if r != own => Err(AccountingError::Forbidden {
                field: "hospital",
                reason: format!("operator `{}` may only see hospital `{own}`", self.login),
            }),
            (Role::Hospital(own), _) => Ok(Some(own.clone())),
        }
    }

    pub fn require_city(&self, what: &str) -> Result<(), AccountingError> {
        match self.role {
            Role::City => Ok(()),
            Role::Hospital(_) => Err(AccountingError::Forbidden {
                field: "role",
                reason: format!("{what} needs a city operator"),
            }),
        }
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::City => "city",
            Role::Hospital(_) => "hospital",
        }
    }

    pub fn hospital_id(&self) -> Option<&str> {
        match &self.role {
            Role::City => None,
            Role::Hospital(h) => Some(h),
        }
    }
}

/// Argon2id with the given cost; the PHC string carries it, so verifying
/// needs no settings.
pub fn hash_password_with(password: &str, memory_kib: u32, iterations: u32) -> anyhow::Result<String> {
    let params =
        Params::new(memory_kib, iterations, 1, None).map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let salt =
        SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))
}

/// A hash at OWASP's recommended cost (19 MiB, 2 passes), for real accounts.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    hash_password_with(password, PASSWORD_MEMORY_KIB, PASSWORD_ITERATIONS)
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Check a password against an account's stored hash, or, for an unknown
/// login (`None`), against [`DUMMY_HASH`] and refuse: one Argon2
/// verification either way. Slow on purpose: call it off the async threads.
pub fn check_password(password: &str, stored: Option<&str>) -> bool {
    let matches = verify_password(password, stored.unwrap_or(DUMMY_HASH));
    matches && stored.is_some()
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Make PostgreSQL's operators exactly the configured ones (plus the demo
/// account when enabled). Removing an account ends its sessions.
pub async fn seed_operators(pool: &Pool, settings: &OperatorSettings) -> anyhow::Result<()> {
    let mut accounts: Vec<(String, String, String, Option<String>)> = settings
        .accounts
        .iter()
        .map(|(login, a)| {
            let hospital = (a.role == "hospital").then(|| a.hospital_id.trim().to_owned());
            (login.clone(), a.password_hash.clone(), a.role.clone(), hospital)
        })
        .collect();
    if settings.demo_account && !settings.accounts.contains_key(DEMO_LOGIN) {
        // A light hash: a demo password guards nothing worth a slow one.
        let hash = hash_password_with(DEMO_PASSWORD, 1024, 1)?;
        accounts.push((DEMO_LOGIN.to_owned(), hash, "city".to_owned(), None));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let logins: Vec<String> = accounts.iter().map(|a| a.0.clone()).collect();
    tx.execute_cached("DELETE FROM operators WHERE login <> ALL($1)", &[&logins])
        .await?;
    for (login, hash, role, hospital) in &accounts {
        // Keep the stored hash when the password did not change, so
        // re-seeding on every start does not end sessions needlessly.
        tx.execute_cached(
            "INSERT INTO operators (login, password_hash, role, hospital_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (login) DO UPDATE SET
               password_hash = CASE WHEN operators.role = EXCLUDED.role
                                     AND operators.hospital_id IS NOT DISTINCT FROM EXCLUDED.hospital_id
                                     AND $5 THEN operators.password_hash ELSE EXCLUDED.password_hash END,
               role = EXCLUDED.role, hospital_id = EXCLUDED.hospital_id",
            &[
                login,
                hash,
                role,
                hospital,
                &(login == DEMO_LOGIN
                    && settings.demo_account
                    && !settings.accounts.contains_key(DEMO_LOGIN)),
            ],
        )
        .await?;
    }
    tx.execute_cached("DELETE FROM operator_sessions WHERE expires_at < now()", &[])
        .await?;
    tx.commit().await?;
    Ok(())
}

pub struct Session {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub operator: Operator,
}

/// An operator row: its password hash and role.
struct Account {
    password_hash: String,
    role: String,
    hospital_id: Option<String>,
}

/// Read a login's account on a connection of its own, back in the pool
/// when this returns: the Argon2 check that follows takes tens of
/// milliseconds, and holding a connection through it would let a burst of
/// logins take the whole pool from the reports.
async fn find_account(pool: &Pool, login: &str) -> Result<Option<Account>, AccountingError> {
    let client = pool.get().await?;
    let row = client
        .query_opt_cached(
            "SELECT password_hash, role, hospital_id FROM operators WHERE login = $1",
            &[&login],
        )
        .await?;
    Ok(row.map(|row| Account {
        password_hash: row.get(0),
        role: row.get(1),
        hospital_id: row.get(2),
    }))
}

/// Check a login and open a session; `None` for a wrong login or password
/// (the caller cannot tell which, on purpose: same answer, same cost).
pub async fn login(
    pool: &Pool,
    login: &str,
    password: &str,
    ttl_minutes: u32,
) -> Result<Option<Session>, AccountingError> {
    let account = find_account(pool, login).await?;
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || check_password(&password, stored.as_deref()))
        .await
        .map_err(|e| anyhow::anyhow!("the password check did not finish: {e}"))?;
    let Some(account) = account.filter(|_| ok) else {
        return Ok(None);
    };
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let expires_at = Utc::now() + chrono::Duration::minutes(i64::from(ttl_minutes));
    let client = pool.get().await?;
    client
        .execute_cached(
            "INSERT INTO operator_sessions (token_sha256, login, expires_at) VALUES ($1, $2, $3)",
            &[&token_hash(&token), &login, &expires_at],
        )
        .await?;
    Ok(Some(Session {
        token,
        expires_at,
        operator: Operator {
            login: login.to_owned(),
            role: role_of(account.role, account.hospital_id),
        },
    }))
}

pub async fn logout(pool: &Pool, token: &str) -> Result<(), AccountingError> {
    let client = pool.get().await?;
    client
        .execute_cached(
            "DELETE FROM operator_sessions WHERE token_sha256 = $1",
            &[&token_hash(token)],
        )
        .await?;
    Ok(())
}

fn role_of(role: String, hospital: Option<String>) -> Role {
    match (role.as_str(), hospital) {
        ("hospital", Some(h)) => Role::Hospital(h),
        _ => Role::City,
    }
}

/// The bearer token of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl FromRequest for Operator {
    type Error = AccountingError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req);
        let pool = req.app_data::<web::Data<Pool>>().cloned();
        Box::pin(async move {
            let token = token.ok_or(AccountingError::Unauthenticated)?;
            let pool = pool.ok_or_else(|| AccountingError::DatabaseUnavailable("no pool".into()))?;
            let client = pool.get().await?;
            let row = client
                .query_opt_cached(
                    "SELECT o.login, o.role, o.hospital_id FROM operator_sessions s
                       JOIN operators o ON o.login = s.login
                      WHERE s.token_sha256 = $1 AND s.expires_at > now()",
                    &[&token_hash(&token)],
                )
                .await?
                .ok_or(AccountingError::Unauthenticated)?;
            Ok(Operator {
                login: row.get(0),
                role: role_of(row.get(1), row.get(2)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let h = hash_password_with("s3cret", 1024, 1).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("S3cret", &h));
        assert!(!verify_password("s3cret", "not a hash"));
        assert!(check_password("s3cret", Some(&h)));
        assert!(!check_password("S3cret", Some(&h)));
    }

    #[test]
    fn unknown_logins_are_checked_against_a_dummy_at_the_real_cost() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(dummy.algorithm, Algorithm::Argon2id.ident());
        assert_eq!(dummy.version, Some(Version::V0x13.into()));
        let params = Params::try_from(&dummy).unwrap();
        assert_eq!(
            (
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                params.output_len()
            ),
            (
                PASSWORD_MEMORY_KIB,
                PASSWORD_ITERATIONS,
                1,
                Some(Params::DEFAULT_OUTPUT_LEN)
            )
        );
        // There is no account behind it: refused whatever is typed.
        assert!(!check_password("anything", None));
    }

    #[test]
    fn hospital_operators_see_only_their_hospital() {
        let op = Operator {
            login: "ann".into(),
            role: Role::Hospital("pumch".into()),
        };
        assert_eq!(op.hospital_scope(None).unwrap().as_deref(), Some("pumch"));
        assert_eq!(
            op.hospital_scope(Some("pumch")).unwrap().as_deref(),
            Some("pumch")
        );
        assert!(op.hospital_scope(Some("tongren")).is_err());
        let city = Operator {
            login: "c".into(),
            role: Role::City,
        };
        assert_eq!(city.hospital_scope(None).unwrap(), None);
    }
}
