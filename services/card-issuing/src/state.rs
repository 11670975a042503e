//! The one typed state every handler (and the no-show consumer) receives.

use std::sync::Arc;

use jyt_db::deadpool_postgres::Pool;
use jyt_events::OutboxRelay;

use crate::crypto::{BlindIndex, Keyring};
use crate::operator::Operators;
use crate::settings::Settings;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub keyring: Arc<Keyring>,
    pub blind_index: Arc<BlindIndex>,
    /// The decoded e-card signing secret, shared with the gateway.
    pub ecard_secret: Arc<EcardSecret>,
    pub operators: Arc<Operators>,
    /// Woken after each commit so events leave promptly.
    pub relay: OutboxRelay,
    /// The channels' clearing and fee accounts' ids, once seen.
    pub system_accounts: Arc<crate::ledger::SystemAccounts>,
}

/// Raw key bytes that never print.
pub struct EcardSecret(pub Vec<u8>);

impl std::fmt::Debug for EcardSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcardSecret(..)")
    }
}
