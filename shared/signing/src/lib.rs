//! # jyt-signing
//! Who is calling, proven without I/O, both sides in one place so that
//! channels, tests, the load generator and the services sign and verify
//! with exactly the same code.
//!
//! - [`channel`]: a channel app's (or a member hospital's) signed request
//!   to the gateway: app id, timestamp, nonce and an HMAC over the method,
//!   path, query and body.
//! - [`ecard`]: e-card QR tokens, signed by card-issuing and verified
//!   offline by the gateway.
//! - [`internal`]: the short-lived token the gateway (and jyt's own tools)
//!   present to slot-inventory and card-issuing, bound to the service it is
//!   for; see that module for the trade-off against mTLS.

pub mod channel;
pub mod ecard;
pub mod internal;
