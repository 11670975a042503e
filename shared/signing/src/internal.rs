//! Internal tokens: how slot-inventory and card-issuing know a call comes
//! from the gateway (or from jyt's own tools), whatever the network admits.
//!
//! ```text
//! X-Internal-Token: v1;<caller>;<audience>;<expires unix s>;<hex HMAC-SHA256>
//! ```
//!
//! The HMAC is over everything before the last `;`, keyed with the
//! **audience's key**. Each service knows only its own key:
//!
//! - `card-issuing`'s key, and each hospital's key (audience
//!   `slot-inventory:<hospital>`), are derived from one platform master
//!   secret that only the gateway (and jyt) hold: [`derive_key`] is
//!   `hex(SHA-256(master ‖ ":" ‖ audience))`, which Helm can compute with
//!   `sha256sum`. A hospital's service therefore cannot mint a token for
//!   another hospital or for card-issuing.
//! - A token names its audience, so one stolen from one hospital's traffic
//!   is refused everywhere else, and it expires: the verifier refuses one
//!   that expires more than `max_lifetime_seconds` ahead (a caller cannot
//!   mint itself a year), or that has expired.
//!
//! Why a bearer token rather than per-request signatures or mTLS: the token
//! costs one HMAC over ~60 bytes per call and no body buffering on the
//! surge path, and needs no certificate authority in `jyt up`. What it does
//! not give: someone who can read in-cluster traffic can replay a token
//! until it expires (one minute by default). Run the services behind a mesh
//! with mTLS where that matters; the token still proves the caller.

use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The request header carrying the token.
pub const HEADER: &str = "X-Internal-Token";
const VERSION: &str = "v1";

/// The audience of card-issuing.
pub const CARD_ISSUING: &str = "card-issuing";

/// The audience of channel-accounting's survey door
/// (`/internal/v1/surveys`), which the gateway calls for a patient's app.
pub const CHANNEL_ACCOUNTING: &str = "channel-accounting";

/// The audience of the gateway's operator relay (`/ops/v1`), which the
/// console's backend (channel-accounting) calls on behalf of an operator.
pub const GATEWAY_OPS: &str = "gateway-ops";

/// A console operator as the relay's tokens carry them: in the caller
/// name, so that the signature covers who acts and for which hospital,
/// and a token minted for one hospital's operator cannot be bent to
/// another hospital by a header.
///
/// ```text
/// operator:city:-:<login>            a city operator
/// operator:hospital:<hospital>:<login>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActingOperator {
    pub login: String,
    /// `None` for a city operator, else the operator's one hospital.
    pub hospital: Option<String>,
}

impl ActingOperator {
    /// The caller name, or `None` when the login or hospital holds a
    /// character a token cannot carry (`A-Za-z0-9-_.` only; `:` separates).
    pub fn caller(&self) -> Option<String> {
        let part = |s: &str| plain(s) && !s.contains(':');
        let caller = match &self.hospital {
            None => format!("operator:city:-:{}", self.login),
            Some(h) => format!("operator:hospital:{h}:{}", self.login),
        };
        (part(&self.login) && self.hospital.as_deref().is_none_or(part) && plain(&caller)).then_some(caller)
    }

    /// The operator a verified caller name stands for.
    pub fn from_caller(caller: &str) -> Option<Self> {
        let mut parts = caller.split(':');
        let (Some("operator"), Some(role), Some(hospital), Some(login), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if login.is_empty() {
            return None;
        }
        let hospital = match (role, hospital) {
            ("city", "-") => None,
            ("hospital", h) if !h.is_empty() && h != "-" => Some(h.to_owned()),
            _ => return None,
        };
        Some(Self {
            login: login.to_owned(),
            hospital,
        })
    }
}

/// The audience of one hospital's slot-inventory.
pub fn hospital_audience(hospital: &str) -> String {
    format!("slot-inventory:{hospital}")
}

/// The key of `audience`, from the platform's master secret: what that
/// service is configured with (`internal_auth.secret`).
pub fn derive_key(master: &[u8], audience: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(master);
    digest.update(b":");
    digest.update(audience.as_bytes());
    hex::encode(digest.finalize())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn mac(key: &[u8], signed: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(signed.as_bytes());
    mac
}

fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
}

/// A token from `caller` for `audience`, valid until `expires` (unix s).
///
/// # Panics
/// When `caller` or `audience` has a character outside `A-Za-z0-9-_:.`:
/// both are names from configuration, so this is a programming error.
pub fn mint(key: &[u8], caller: &str, audience: &str, expires: i64) -> String {
    assert!(
        plain(caller) && plain(audience),
        "caller and audience must be plain names"
    );
    let signed = format!("{VERSION};{caller};{audience};{expires}");
    let signature = hex::encode(mac(key, &signed).finalize().into_bytes());
    format!("{signed};{signature}")
}

/// Why a token was refused. The service answers 401 for every one of them;
/// the reason is for its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    WrongAudience,
    Expired,
    TooLong,
    BadSignature,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::WrongAudience => "for another service",
            Refusal::Expired => "expired",
            Refusal::TooLong => "valid for longer than allowed",
            Refusal::BadSignature => "bad signature",
        }
    }
}

/// The verifying side, built once per service from its settings.
#[derive(Clone)]
pub struct Verifier {
    key: Vec<u8>,
    audience: String,
    max_lifetime_seconds: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.audience)
            .field("max_lifetime_seconds", &self.max_lifetime_seconds)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(key: &[u8], audience: impl Into<String>, max_lifetime_seconds: i64) -> Self {
        Self {
            key: key.to_vec(),
            audience: audience.into(),
            max_lifetime_seconds,
        }
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The caller's name, if `token` is a valid token for this service now.
    pub fn verify(&self, token: Option<&str>) -> Result<String, Refusal> {
        self.verify_at(token, now_unix())
    }

    pub fn verify_at(&self, token: Option<&str>, now: i64) -> Result<String, Refusal> {
        let token = token.ok_or(Refusal::Missing)?;
        let (signed, signature) = token.rsplit_once(';').ok_or(Refusal::Malformed)?;
        let mut parts = signed.split(';');
        let (Some(VERSION), Some(caller), Some(audience), Some(expires), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refusal::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| Refusal::Malformed)?;
        let signature = hex::decode(signature).map_err(|_| Refusal::Malformed)?;
        // The signature first, so that nothing about audiences or clocks is
        // told to someone without a key.
        let expected = mac(&self.key, signed).finalize().into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&signature)) {
            return Err(Refusal::BadSignature);
        }
        if audience != self.audience {
            return Err(Refusal::WrongAudience);
        }
        if expires < now {
            return Err(Refusal::Expired);
        }
        if expires - now > self.max_lifetime_seconds {
            return Err(Refusal::TooLong);
        }
        Ok(caller.to_owned())
    }
}

/// The calling side: a token for one audience, minted again once half its
/// lifetime has passed, so a busy caller signs about once a minute rather
/// than once a request.
pub struct Minter {
    key: Vec<u8>,
    caller: String,
    audience: String,
    lifetime_seconds: i64,
    current: RwLock<(String, i64)>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("caller", &self.caller)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// `key` is the audience's key (see [`derive_key`]).
    pub fn new(key: &[u8], caller: &str, audience: &str, lifetime_seconds: i64) -> Self {
        Self {
            key: key.to_vec(),
            caller: caller.to_owned(),
            audience: audience.to_owned(),
            lifetime_seconds: lifetime_seconds.max(2),
            current: RwLock::new((String::new(), 0)),
        }
    }

    /// From the platform master secret.
    pub fn from_master(master: &[u8], caller: &str, audience: &str, lifetime_seconds: i64) -> Self {
        Self::new(
            derive_key(master, audience).as_bytes(),
            caller,
            audience,
            lifetime_seconds,
        )
    }

    /// A token valid for at least half the lifetime.
    pub fn token(&self) -> String {
        let now = now_unix();
        let renew_after = |expires: i64| expires - self.lifetime_seconds / 2;
        {
            let current = self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now < renew_after(current.1) {
                return current.0.clone();
            }
        }
        let expires = now + self.lifetime_seconds;
        let token = mint(&self.key, &self.caller, &self.audience, expires);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (token.clone(), expires);
        token
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn acting_operators_round_trip_through_the_caller_name() {
        let city = ActingOperator {
            login: "ops".into(),
            hospital: None,
        };
        let ann = ActingOperator {
            login: "pumch_ops".into(),
            hospital: Some("pumch".into()),
        };
        assert_eq!(city.caller().as_deref(), Some("operator:city:-:ops"));
        assert_eq!(ann.caller().as_deref(), Some("operator:hospital:pumch:pumch_ops"));
        for op in [&city, &ann] {
            assert_eq!(
                ActingOperator::from_caller(&op.caller().unwrap()).as_ref(),
                Some(op)
            );
        }
        let odd = ActingOperator {
            login: "a:b".into(),
            hospital: None,
        };
        assert_eq!(odd.caller(), None, "a colon would shift the fields");
        for bad in [
            "gateway",
            "operator:city:pumch:x",
            "operator:hospital:-:x",
            "operator:city:-:",
            "operator:root:-:x",
        ] {
            assert_eq!(ActingOperator::from_caller(bad), None, "{bad}");
        }
    }

    use super::*;

    const MASTER: &[u8] = b"a master secret of the platform, 32+ bytes long";

    fn verifier(audience: &str) -> Verifier {
        Verifier::new(derive_key(MASTER, audience).as_bytes(), audience, 300)
    }

    #[test]
    fn a_minted_token_is_accepted_by_its_audience_and_names_the_caller() {
        let minter = Minter::from_master(MASTER, "gateway", CARD_ISSUING, 60);
        assert_eq!(
            verifier(CARD_ISSUING).verify(Some(&minter.token())),
            Ok("gateway".into())
        );
        // Cached: the same token until half the lifetime has passed.
        assert_eq!(minter.token(), minter.token());
    }

    #[test]
    fn another_hospitals_key_or_audience_is_refused() {
        let pumch = hospital_audience("pumch");
        let bjh = hospital_audience("bjh");
        let for_pumch = Minter::from_master(MASTER, "gateway", &pumch, 60).token();
        // Presented at bjh: bjh's key does not verify pumch's token.
        assert_eq!(
            verifier(&bjh).verify(Some(&for_pumch)),
            Err(Refusal::BadSignature)
        );
        // A hospital that knows only its own key cannot mint for another:
        // signing bjh's audience with pumch's key fails at bjh.
        let forged = mint(
            derive_key(MASTER, &pumch).as_bytes(),
            "gateway",
            &bjh,
            now_unix() + 30,
        );
        assert_eq!(verifier(&bjh).verify(Some(&forged)), Err(Refusal::BadSignature));
        // The right key with the wrong audience named (a shared key).
        let v = Verifier::new(b"shared", &bjh, 300);
        let other = mint(b"shared", "gateway", &pumch, now_unix() + 30);
        assert_eq!(v.verify(Some(&other)), Err(Refusal::WrongAudience));
    }

    #[test]
    fn expired_overlong_malformed_and_missing_tokens_are_refused() {
        let key = derive_key(MASTER, CARD_ISSUING);
        let v = verifier(CARD_ISSUING);
        let now = 1_800_000_000;
        let expired = mint(key.as_bytes(), "gateway", CARD_ISSUING, now - 1);
        assert_eq!(v.verify_at(Some(&expired), now), Err(Refusal::Expired));
        let year = mint(key.as_bytes(), "gateway", CARD_ISSUING, now + 365 * 86_400);
        assert_eq!(v.verify_at(Some(&year), now), Err(Refusal::TooLong));
        let good = mint(key.as_bytes(), "jyt", CARD_ISSUING, now + 60);
        assert_eq!(v.verify_at(Some(&good), now), Ok("jyt".into()));
        let tampered = good.replacen(";jyt;", ";gateway;", 1);
        assert_eq!(v.verify_at(Some(&tampered), now), Err(Refusal::BadSignature));
        for bad in [
            "",
            "v1",
            "v1;a;b;c",
            "v2;gateway;card-issuing;1;00",
            "v1;g;card-issuing;x;00",
        ] {
            assert!(
                matches!(
                    v.verify_at(Some(bad), now),
                    Err(Refusal::Malformed | Refusal::BadSignature)
                ),
                "{bad}"
            );
        }
        assert_eq!(v.verify_at(None, now), Err(Refusal::Missing));
    }
}
