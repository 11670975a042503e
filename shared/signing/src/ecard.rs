//! E-card QR tokens. A token is `base64url(version || person || card ||
//! expiry || HMAC-SHA256(secret, version || person || card || expiry))`:
//! 73 bytes, 98 characters, small enough for a low-density QR code.
//!
//! card-issuing signs them; the gateway holds the same secret and calls
//! [`verify_ecard_token`] for every request, without a database or network
//! call (which is why this lives in a shared crate, not in card-issuing); expiry in minutes
//! bounds what a lost or screenshotted code is worth. Card status (lost,
//! cancelled) is checked when the gateway resolves the token through us.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// HMAC-SHA256 over `parts`, concatenated.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 16 + 16 + 8;
const MAC_LEN: usize = 32;

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcardClaims {
    pub person_id: Uuid,
    pub card_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EcardTokenError {
    #[error("the e-card token is malformed or its signature does not match")]
    Invalid,
    #[error("the e-card token has expired; show a fresh QR code")]
    Expired,
}

/// Sign a token for `card_id` of `person_id`, valid until `expires_at`.
pub fn sign_ecard_token(secret: &[u8], person_id: Uuid, card_id: Uuid, expires_at: DateTime<Utc>) -> String {
    let mut buf = Vec::with_capacity(BODY_LEN + MAC_LEN);
    buf.push(VERSION);
    buf.extend_from_slice(person_id.as_bytes());
    buf.extend_from_slice(card_id.as_bytes());
    buf.extend_from_slice(&expires_at.timestamp().to_be_bytes());
    let mac = hmac_sha256(secret, &[&buf]);
    buf.extend_from_slice(&mac);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Verify a token's signature and expiry at `now`. Pure: no I/O, so the
/// gateway can call it on every request.
pub fn verify_ecard_token(
    secret: &[u8],
    token: &str,
    now: DateTime<Utc>,
) -> Result<EcardClaims, EcardTokenError> {
    if token.len() > 200 {
        return Err(EcardTokenError::Invalid);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| EcardTokenError::Invalid)?;
    if raw.len() != BODY_LEN + MAC_LEN || raw[0] != VERSION {
        return Err(EcardTokenError::Invalid);
    }
    let (body, mac) = raw.split_at(BODY_LEN);
    let expected = hmac_sha256(secret, &[body]);
    // Constant time, so the signature cannot be found byte by byte.
    if !bool::from(expected.ct_eq(mac)) {
        return Err(EcardTokenError::Invalid);
    }
    let uuid_at = |i: usize| {
        body.get(i..i + 16)
            .and_then(|b| Uuid::from_slice(b).ok())
            .ok_or(EcardTokenError::Invalid)
    };
    let person_id = uuid_at(1)?;
    let card_id = uuid_at(17)?;
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&body[33..41]);
    let expires_at = DateTime::from_timestamp(i64::from_be_bytes(exp), 0).ok_or(EcardTokenError::Invalid)?;
    if now >= expires_at {
        return Err(EcardTokenError::Expired);
    }
    Ok(EcardClaims {
        person_id,
        card_id,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let now = Utc::now();
        let (p, c) = (Uuid::now_v7(), Uuid::now_v7());
        let t = sign_ecard_token(SECRET, p, c, now + Duration::minutes(5));
        assert_eq!(t.len(), 98);
        let claims = verify_ecard_token(SECRET, &t, now).unwrap();
        assert_eq!((claims.person_id, claims.card_id), (p, c));
        assert_eq!(
            verify_ecard_token(SECRET, &t, now + Duration::minutes(5)),
            Err(EcardTokenError::Expired)
        );
    }

    #[test]
    fn tampered_or_foreign_tokens_are_invalid() {
        let now = Utc::now();
        let t = sign_ecard_token(SECRET, Uuid::now_v7(), Uuid::now_v7(), now + Duration::minutes(5));
        assert_eq!(
            verify_ecard_token(b"another secret, also 32 bytes...", &t, now),
            Err(EcardTokenError::Invalid)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        bytes[5] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            verify_ecard_token(SECRET, &forged, now),
            Err(EcardTokenError::Invalid)
        );
        for junk in ["", "abc", "!!!", &"A".repeat(98)] {
            assert_eq!(
                verify_ecard_token(SECRET, junk, now),
                Err(EcardTokenError::Invalid)
            );
        }
    }
}
