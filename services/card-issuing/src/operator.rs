//! Operators: municipal staff who may read unmasked personal data and waive
//! no-shows. They present a bearer token; configuration holds only each
//! token's SHA-256, compared in constant time.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::{Ready, ready};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::CardError;
use crate::settings::OperatorSettings;
use crate::state::AppState;

pub struct Operators {
    /// (operator id, token hash)
    hashes: Vec<(String, [u8; 32])>,
}

impl Operators {
    pub fn from_settings<'a>(ops: impl IntoIterator<Item = (&'a String, &'a OperatorSettings)>) -> Self {
        let hashes = ops
            .into_iter()
            .filter_map(|(id, op)| {
                let bytes = hex::decode(&op.token_sha256).ok()?;
                let hash: [u8; 32] = bytes.try_into().ok()?;
                Some((id.clone(), hash))
            })
            .collect();
        Self { hashes }
    }

    /// The operator whose token this is.
    pub fn authenticate(&self, token: &str) -> Option<OperatorId> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry so timing does not reveal which matched.
        let mut found = None;
        for (id, hash) in &self.hashes {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(OperatorId(id.clone()));
            }
        }
        found
    }
}

/// An authenticated operator; as an extractor it answers 401 without a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorId(pub String);

impl FromRequest for OperatorId {
    type Error = CardError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let operator = match (token, req.app_data::<web::Data<AppState>>()) {
            (Some(t), Some(state)) if !t.is_empty() => state.operators.authenticate(t),
            _ => None,
        };
        ready(operator.ok_or(CardError::OperatorUnauthorized))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_authenticates() {
        let op = OperatorSettings {
            token_sha256: hex::encode(Sha256::digest(b"s3cret")),
        };
        let id = "ops-1".to_owned();
        let ops = Operators::from_settings([(&id, &op)]);
        assert_eq!(ops.authenticate("s3cret"), Some(OperatorId("ops-1".into())));
        assert_eq!(ops.authenticate("s3cret "), None);
        assert_eq!(ops.authenticate(""), None);
    }
}
