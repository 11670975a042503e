//! Everything a request needs, built once in [`crate::Application::build`].

use std::collections::HashMap;

use jyt_cache::{Keyspace, RedisConn};
use jyt_domain::Channel;

use crate::identity::PatientIndex;
use crate::limits::Limits;
use crate::notify::Notifier;
use crate::settings::{ChannelApp, Settings};
use crate::upstream::Upstreams;

pub struct GatewayState {
    pub settings: Settings,
    pub apps: HashMap<String, ChannelApp>,
    pub redis: RedisConn,
    pub keys: Keyspace,
    pub upstreams: Upstreams,
    pub patients: PatientIndex,
    /// channel-accounting's survey door (post-visit surveys).
    pub surveys: crate::surveys::SurveyDesk,
    pub limits: Limits,
    /// `limits.trusted_proxies`, parsed: peers whose `X-Client-Address` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub notifier: Notifier,
    /// Availability summaries for search, cached per date.
    pub summaries: crate::summaries::Summaries,
    /// The city-wide SMART Scheduling Links manifest, cached.
    pub fhir: crate::fhir::bulk::CityFeed,
    /// Segments this replica knows are sold out (pub/sub from the hospitals).
    pub sold_out: std::sync::Arc<crate::soldout::SoldOut>,
}

/// The authenticated member hospital of a `/federation/v1` request.
#[derive(Debug, Clone)]
pub struct HospitalCaller {
    pub key_id: String,
    pub hospital: jyt_domain::HospitalId,
}

/// The authenticated channel app of a `/v1` request, put into the request's
/// extensions by [`crate::auth::authenticate_channel`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub app_id: String,
    pub channel: Channel,
    /// The end user's device address, for the per-address rules; see
    /// [`crate::auth::connection_address`] (or a relaying app's `X-Device-Address`).
    pub address: Option<String>,
    /// A booking's nonce, not yet spent: `POST /v1/bookings` spends it in
    /// the booking's one admission script (`crate::limits`), under the
    /// patient's hash tag; every other request spent it already.
    pub nonce: Option<DeferredNonce>,
}

/// A signed request's nonce whose check [`crate::auth`] left to the
/// booking's admission script. A replay of the same signed request names
/// the same card and patient, so it meets the same key there.
#[derive(Debug, Clone)]
pub struct DeferredNonce {
    pub app_id: String,
    pub nonce: String,
}

impl DeferredNonce {
    /// The key's part after the patient's hash tag.
    pub fn key_rest(&self) -> String {
        format!("nonce:{}:{}", self.app_id, self.nonce)
    }
}
