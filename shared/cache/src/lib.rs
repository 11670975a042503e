//! # Layout
//! - [`RedisConn`]: a cheap-to-clone, auto-reconnecting handle on either
//!   one Redis node or a Redis Cluster, with a connection per thread that
//!   uses it; every command and Lua script runs on it the same way, so
//!   services never branch on the deployment.
//! - [`Keyspace`]: builds keys as `<prefix>:{<tag>}:<rest>`. The hash tag in
//!   braces decides the cluster slot, so every key one script touches shares
//!   a tag (`{h:<hospital>}` for a hospital's slots, `{p:<person>}` for one
//!   person's city-wide limits).

use std::sync::Arc;
use std::time::Duration;

use jyt_per_thread::PerThread;
use jyt_settings::RedisSettings;
pub use redis;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

/// A cheap-to-clone handle on Redis (one node or a cluster) that gives
/// **each thread its own connection**, opened there on the thread's first
/// command and reconnecting by itself after Redis restarts.
///
/// Why per thread: a multiplexed connection's driver is a task on the
/// runtime that opened it. One connection opened at start-up lives on the
/// main runtime, and every command from an actix worker then crosses
/// threads twice (the worker hands the command to the driver's thread and
/// is woken from it). On the 2-core machine of the surge profile, those
/// wake-ups and task switches were about a tenth of the workers' samples.
/// Opened by the worker itself, the driver runs on the worker's own
/// runtime, between its requests. A process then holds one connection per
/// thread that talks to Redis (its actix workers and its main runtime's
/// threads), not one per request.
///
/// Each [`connect`] makes a separate set: a connection that blocks (a
/// stream reader's `XREAD BLOCK`) gets its own handle and never delays the
/// commands of another.
#[derive(Clone)]
pub struct RedisConn(Arc<Opener>);

/// How a [`RedisConn`] opens a thread's connection, and the connections.
struct Opener {
    kind: OpenerKind,
    db: i64,
    /// Each thread's connection, opened on first use there and shared by
    /// the requests running on that thread (and opened again if the
    /// thread runs another runtime: the old one's driver is gone).
    links: PerThread<Arc<OnceCell<Link>>>,
}

enum OpenerKind {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
    },
    Cluster(ClusterClient),
}

/// One thread's connection of a [`RedisConn`].
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0.kind, OpenerKind::Cluster(_))
    }

    /// This thread's connection, opened (and its driver spawned on this
    /// thread's runtime) if it is the first command here.
    async fn link(&self) -> RedisResult<Link> {
        let cell = self.0.links.local();
        cell.get_or_try_init(|| self.0.open()).await.cloned()
    }
}

impl Opener {
    async fn open(&self) -> RedisResult<Link> {
        match &self.kind {
            OpenerKind::Single { client, config } => Ok(Link::Single(
                client.get_connection_manager_with_config(config.clone()).await?,
            )),
            OpenerKind::Cluster(client) => Ok(Link::Cluster(client.get_async_connection().await?)),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.link().await? {
                Link::Single(mut c) => c.req_packed_command(cmd).await,
                Link::Cluster(mut c) => c.req_packed_command(cmd).await,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.link().await? {
                Link::Single(mut c) => c.req_packed_commands(pipeline, offset, count).await,
                Link::Cluster(mut c) => c.req_packed_commands(pipeline, offset, count).await,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

/// Connect to Redis as configured: a single node's connections are
/// `ConnectionManager`s, a cluster's `ClusterConnection`s. The calling
/// thread's connection is opened now, so an unreachable Redis fails the
/// start; every other thread opens its own on its first command.
pub async fn connect(settings: &RedisSettings) -> RedisResult<RedisConn> {
    let response = Duration::from_millis(settings.response_timeout_ms);
    let connect = Duration::from_millis(settings.connection_timeout_ms);
    let urls: Vec<String> = settings
        .urls
        .iter()
        .map(|u| u.expose_secret().to_owned())
        .collect();
    let (kind, db) = if settings.cluster {
        let client = ClusterClientBuilder::new(urls)
            .connection_timeout(connect)
            .response_timeout(response)
            .build()?;
        (OpenerKind::Cluster(client), 0)
    } else {
        let url = urls.into_iter().next().unwrap_or_default();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response))
            .set_connection_timeout(Some(connect))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let client = redis::Client::open(url)?;
        let db = client.get_connection_info().redis_settings().db();
        (OpenerKind::Single { client, config }, db)
    };
    let Ok(links) = PerThread::new(|| Ok::<_, std::convert::Infallible>(Arc::default()));
    let conn = RedisConn(Arc::new(Opener { kind, db, links }));
    conn.link().await?;
    Ok(conn)
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

    /// What follows the hospital's tag in an [`availability`] key, before
    /// the date: for a writer that builds its keys without `format!`.
    pub const AVAILABILITY: &str = "avail:";

    /// `<prefix>:{h:<hospital>}:avail:<YYYY-MM-DD>`: a hash of remaining
    /// seats by [`availability_field`], one per visit date.
    pub fn availability(keys: &Keyspace, hospital: &str, date: impl std::fmt::Display) -> String {
        keys.tagged(&tag(hospital), &format!("{AVAILABILITY}{date}"))
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
