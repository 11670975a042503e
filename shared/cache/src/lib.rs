//! # Layout
//! - [`RedisConn`]: a cheap-to-clone, auto-reconnecting connection to either
//!   one Redis node or a Redis Cluster; every command and Lua script runs on
//!   it the same way, so services never branch on the deployment.
//! - [`Keyspace`]: builds keys as `<prefix>:{<tag>}:<rest>`. The hash tag in
//!   braces decides the cluster slot, so every key one script touches shares
//!   a tag (`{h:<hospital>}` for a hospital's slots, `{p:<person>}` for one
//!   person's city-wide limits).

use std::time::Duration;

use jyt_settings::RedisSettings;
pub use redis;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use secrecy::ExposeSecret;

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connect to Redis as configured. A single node gets a
/// `ConnectionManager`, which reconnects by itself after Redis restarts.
pub async fn connect(settings: &RedisSettings) -> RedisResult<RedisConn> {
    let response = Duration::from_millis(settings.response_timeout_ms);
    let connect = Duration::from_millis(settings.connection_timeout_ms);
    let urls: Vec<String> = settings
        .urls
        .iter()
        .map(|u| u.expose_secret().to_owned())
        .collect();
    if settings.cluster {
        let conn = ClusterClientBuilder::new(urls)
            .connection_timeout(connect)
            .response_timeout(response)
            .build()?
            .get_async_connection()
            .await?;
        Ok(RedisConn::Cluster(conn))
    } else {
        let url = urls.into_iter().next().unwrap_or_default();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response))
            .set_connection_timeout(Some(connect))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = redis::Client::open(url)?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(RedisConn::Single(conn))
    }
}

/// One round trip; used by `/readyz`.
pub async fn ping(conn: &RedisConn) -> RedisResult<()> {
    let mut conn = conn.clone();
    redis::cmd("PING").query_async::<()>(&mut conn).await
}

/// Builds keys under a prefix with a cluster hash tag.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:{<tag>}:<rest>`.
    pub fn tagged(&self, tag: &str, rest: &str) -> String {
        format!("{}:{{{tag}}}:{rest}", self.prefix)
    }

    /// A key without a hash tag, for keys that no script combines with others.
    pub fn plain(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }
}

/// The layout of one hospital's keys that more than one service reads:
/// slot-inventory writes them, the gateway's city-wide search reads them.
/// Written once, here. Every key of a hospital carries the tag
/// `{h:<hospital>}`, so each Lua script touches one Redis Cluster slot.
pub mod hospital {
    use super::Keyspace;

    /// The hash tag (without braces) of a hospital's keys.
    pub fn tag(hospital: &str) -> String {
        format!("h:{hospital}")
    }

    /// `<prefix>:{h:<hospital>}:avail:<YYYY-MM-DD>`: a hash of remaining
    /// seats by [`availability_field`], one per visit date.
    pub fn availability(keys: &Keyspace, hospital: &str, date: impl std::fmt::Display) -> String {
        keys.tagged(&tag(hospital), &format!("avail:{date}"))
    }

    /// `<prefix>:{h:<hospital>}:departments`: department id → name.
    pub fn departments(keys: &Keyspace, hospital: &str) -> String {
        keys.tagged(&tag(hospital), "departments")
    }

    /// `<prefix>:seats`: the pub/sub channel on which every hospital's
    /// scripts publish `sold|<slot id>` (a segment's last seat went) and
    /// `free|<slot id>` (a seat came back), and every gateway replica keeps
    /// its sold-out set by. A channel, not a key: it has no slot, and a
    /// Redis Cluster delivers it to subscribers on every node.
    pub fn seats_channel(keys: &Keyspace) -> String {
        keys.plain("seats")
    }

    /// A field of [`availability`]: `<department id>|<clinic level>`.
    pub fn availability_field(department: &str, level: impl std::fmt::Display) -> String {
        format!("{department}|{level}")
    }

    /// The parts of an [`availability_field`]; `None` for another shape.
    pub fn parse_availability_field(field: &str) -> Option<(&str, &str)> {
        field.split_once('|')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_hash_tag_after_the_prefix() {
        let ks = Keyspace::new("jyt");
        assert_eq!(ks.tagged("h:pumch", "seg:1:free"), "jyt:{h:pumch}:seg:1:free");
        assert_eq!(ks.plain("nonce:x"), "jyt:nonce:x");
        assert_eq!(
            hospital::availability(&ks, "pumch", "2026-12-01"),
            "jyt:{h:pumch}:avail:2026-12-01"
        );
        assert_eq!(hospital::departments(&ks, "pumch"), "jyt:{h:pumch}:departments");
        let field = hospital::availability_field("cardio", "expert");
        assert_eq!(
            hospital::parse_availability_field(&field),
            Some(("cardio", "expert"))
        );
    }
}
