//! Sealing personal data at rest.
//! - [`Keyring`]: AES-256-GCM with a random 96-bit nonce per value. Each row
//!   stores the id of the key that sealed it, so keys can be rotated: new
//!   rows use the active key while old keys still open old rows.
//! - [`BlindIndex`]: HMAC-SHA256 under its own key, so a row can be found by
//!   its ID number (and uniqueness enforced) without storing the number.
//!
//! Each ciphertext is bound to its row and column through the AEAD's
//! associated data, so a ciphertext copied into another row does not open.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use uuid::Uuid;

use crate::settings::{CryptoSettings, decode_key};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no key `{0}` in the keyring")]
    UnknownKey(String),
    #[error("a stored value could not be opened (wrong key or tampered)")]
    Open,
    #[error("a value could not be sealed")]
    Seal,
    #[error("invalid key material: {0}")]
    Key(String),
}

/// The AEAD keys by id, and which one seals new values.
pub struct Keyring {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &ids)
            .finish()
    }
}

impl Keyring {
    pub fn from_settings(s: &CryptoSettings) -> Result<Self, CryptoError> {
        let mut keys = HashMap::new();
        for (id, secret) in &s.keys {
            let bytes = decode_key(&format!("crypto.keys.{id}"), secret, 32)
                .map_err(|e| CryptoError::Key(e.reason))?;
            if bytes.len() != 32 {
                return Err(CryptoError::Key(format!("crypto.keys.{id} must be 32 bytes")));
            }
            keys.insert(id.clone(), Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)));
        }
        if !keys.contains_key(&s.active_key_id) {
            return Err(CryptoError::UnknownKey(s.active_key_id.clone()));
        }
        Ok(Self {
            active: s.active_key_id.clone(),
            keys,
        })
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seal with the active key; the output is `nonce || ciphertext+tag`.
    pub fn seal(&self, plaintext: &str, aad: &Aad) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .keys
            .get(&self.active)
            .ok_or_else(|| CryptoError::UnknownKey(self.active.clone()))?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.0.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, key_id: &str, sealed: &[u8], aad: &Aad) -> Result<String, CryptoError> {
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: aad.0.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

/// Associated data: which row and column a ciphertext belongs to.
pub struct Aad(String);

impl Aad {
    pub fn new(column: &str, person: Uuid) -> Self {
        Self(format!("jyt-card:{column}:{person}"))
    }
}

/// Keyed HMAC-SHA256 lookup index.
pub struct BlindIndex {
    key: Vec<u8>,
}

impl std::fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindIndex(..)")
    }
}

impl BlindIndex {
    pub fn new(secret: &SecretString) -> Result<Self, CryptoError> {
        let key = decode_key("crypto.blind_index_key", secret, 32).map_err(|e| CryptoError::Key(e.reason))?;
        Ok(Self { key })
    }

    /// `kind` separates the index spaces, so an ID number and a phone
    /// number with the same digits never share an index value.
    pub fn of(&self, kind: &str, value: &str) -> Vec<u8> {
        hmac_sha256(&self.key, &[kind.as_bytes(), b"\0", value.as_bytes()])
    }
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(active: &str, keys: &[(&str, &str)]) -> Keyring {
        Keyring::from_settings(&CryptoSettings {
            active_key_id: active.into(),
            keys: keys
                .iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
                .collect(),
            blind_index_key: SecretString::from("x".to_owned()),
        })
        .unwrap()
    }

    const K1: &str = "cEIfJwfQSiHB6KeoWdG6pVdmA84oNkASyufu5H0T2CU=";
    const K2: &str = "XxjJ9b/JvRvfa1W68mShcSOquMVhjdhSfK+ij8OIU0U=";

    #[test]
    fn sealed_values_open_after_rotation_and_only_in_their_row() {
        let person = Uuid::now_v7();
        let old = ring("k1", &[("k1", K1)]);
        let sealed = old.seal("13812345678", &Aad::new("phone", person)).unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"13812345678"));

        let rotated = ring("k2", &[("k1", K1), ("k2", K2)]);
        assert_eq!(
            rotated.open("k1", &sealed, &Aad::new("phone", person)).unwrap(),
            "13812345678"
        );
        assert!(
            rotated
                .open("k1", &sealed, &Aad::new("phone", Uuid::now_v7()))
                .is_err()
        );
        assert!(rotated.open("k2", &sealed, &Aad::new("phone", person)).is_err());
        let fresh = rotated.seal("x", &Aad::new("phone", person)).unwrap();
        assert_eq!(
            rotated
                .open(rotated.active_key_id(), &fresh, &Aad::new("phone", person))
                .unwrap(),
            "x"
        );
    }

    #[test]
    fn blind_index_is_keyed_and_separates_kinds() {
        let a = BlindIndex::new(&SecretString::from(K1.to_owned())).unwrap();
        let b = BlindIndex::new(&SecretString::from(K2.to_owned())).unwrap();
        assert_eq!(a.of("id", "1"), a.of("id", "1"));
        assert_ne!(a.of("id", "1"), a.of("phone", "1"));
        assert_ne!(a.of("id", "1"), b.of("id", "1"));
    }
}
