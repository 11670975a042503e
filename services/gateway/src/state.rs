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
    pub limits: Limits,
    /// `limits.trusted_proxies`, parsed: peers whose `X-Client-Address` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub notifier: Notifier,
    /// Availability summaries for search, cached per date.
    pub summaries: crate::summaries::Summaries,
    /// The city-wide SMART Scheduling Links manifest, cached.
    pub fhir: crate::fhir::bulk::CityFeed,
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
}
