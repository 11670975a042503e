//! E-card QR tokens: signed here, verified by the gateway too, so the code
//! lives in the shared `jyt-signing` crate (`jyt_signing::ecard`).

pub use jyt_signing::ecard::{EcardClaims, EcardTokenError, sign_ecard_token, verify_ecard_token};
