//! # Layout
//! - [`build_pool`]: a deadpool-postgres pool from [`PostgresSettings`], with
//!   explicit size, wait/create/recycle timeouts and a statement timeout.
//! - [`migrate`]: runs a service's embedded refinery migrations under a
//!   PostgreSQL advisory lock, so replicas starting together do not race;
//!   its first connection is waited for ([`first_connection`]).
//! - [`ensure_database`]: creates a database if it is missing (`jyt up`, tests).
//! - [`roll_back_or_close`]: the way out of a transaction begun by hand.
//! - [`unique_violation`]: which unique constraint a failed write hit; the
//!   database's constraints are our last word against double booking.
//! - [`Prepared`]: queries by their SQL text, each statement prepared once per
//!   pooled connection and reused.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

pub use deadpool_postgres;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use jyt_settings::PostgresSettings;
use secrecy::ExposeSecret;
pub use tokio_postgres;
use tokio_postgres::NoTls;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// Run a statement given by its SQL text through the connection's statement
/// cache (`prepare_cached`), on a pooled client or a transaction alike.
///
/// Why: tokio-postgres runs a query given as text in two round trips (an
/// unnamed `Parse`/`Describe`, then `Bind`/`Execute`), and PostgreSQL parses
/// and plans it on every call. In the peak-day profile, parsing and planning
/// led PostgreSQL's own frames and PostgreSQL was the largest consumer of the
/// machine (loadtest/README.md, 2026-12-04). A cached statement is one round
/// trip and is parsed once per connection; PostgreSQL may also settle on a
/// generic plan for it after a few executions.
///
/// Only for SQL drawn from a fixed set (literals, or text built from a fixed
/// set of fragments): each distinct text stays cached for the connection's
/// life.
pub trait Prepared: GenericClient {
    fn query_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query(&statement, params).await
        }
    }

    /// [`Prepared::query_cached`] on the statement's generic plan alone:
    /// `plan_cache_mode` is forced for this one run, set and reset around
    /// it in the same flight (each of the three leaves on its first poll,
    /// in order, so no round trip is added and the session is back to
    /// `auto` for whatever runs next, even if the caller stops waiting).
    ///
    /// For the batch statements (many rows as arrays, `unnest`): a generic
    /// plan guesses ten rows for an array, and batches are mostly smaller,
    /// so PostgreSQL (`plan_cache_mode = auto`) finds each custom plan
    /// cheaper and plans nearly every batch afresh. The payments' batch
    /// statement took 0.45 ms to plan beside 0.62 ms to run, 5.3 s of
    /// PostgreSQL's time over the load test's day (issue 20).
    ///
    /// The generic plan is made on the statement's first run on the
    /// connection and kept until PostgreSQL invalidates it (an `ANALYZE`,
    /// a schema change). Only for statements whose first run meets a table
    /// of the size it will keep: on a table of a few hundred rows the plan
    /// may scan it whole, and keeps doing so as it grows until the next
    /// `ANALYZE` (which this machine's PostgreSQL never runs by itself).
    fn query_cached_generic<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            let (set, rows, reset) = futures::join!(
                self.batch_execute("SET plan_cache_mode = force_generic_plan"),
                self.query(&statement, params),
                self.batch_execute("RESET plan_cache_mode"),
            );
            set?;
            let rows = rows?;
            reset?;
            Ok(rows)
        }
    }

    fn query_one_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, tokio_postgres::Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_one(&statement, params).await
        }
    }

    fn query_opt_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_opt(&statement, params).await
        }
    }

    fn execute_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.execute(&statement, params).await
        }
    }
}

impl<C: GenericClient + ?Sized> Prepared for C {}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("could not build the PostgreSQL pool: {0}")]
    Build(String),
    #[error("could not get a PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] refinery::Error),
}

/// Build a pool. Connections are opened lazily; call [`ping`] to check.
pub fn build_pool(settings: &PostgresSettings) -> Result<Pool, DbError> {
    let mut pg = tokio_postgres::Config::from_str(settings.url.expose_secret()).map_err(DbError::Url)?;
    pg.options(format!("-c statement_timeout={}", settings.statement_timeout_ms));
    pg.connect_timeout(Duration::from_millis(settings.create_timeout_ms));
    if pg.get_application_name().is_none() {
        pg.application_name("jyt");
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // `Fast` trusts the connection; a broken one surfaces as a query
            // error and is dropped, which is cheaper than a round trip on
            // every checkout during a surge.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_max_size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(Duration::from_millis(settings.wait_timeout_ms)),
            create: Some(Duration::from_millis(settings.create_timeout_ms)),
            recycle: Some(Duration::from_millis(settings.recycle_timeout_ms)),
        })
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// A pooled connection in a transaction begun by hand (`BEGIN` pipelined
/// with the first statement, which `Transaction` cannot do). The request
/// that holds it may be cancelled at any await (a caller that hangs up, an
/// upstream timeout): dropped before [`Begun::finish`], the connection is
/// closed, never handed back to the pool inside a transaction, and the
/// server rolls the transaction back when it goes.
pub struct Begun(Option<deadpool_postgres::Object>);

impl Begun {
    /// Take `client`, about to send `BEGIN`.
    pub fn new(client: deadpool_postgres::Object) -> Self {
        Self(Some(client))
    }

    /// The transaction is over (committed or rolled back): the connection
    /// may go back to the pool.
    pub fn finish(mut self) -> Option<deadpool_postgres::Object> {
        self.0.take()
    }

    /// Roll the transaction back ([`roll_back_or_close`]).
    pub async fn roll_back(self) {
        if let Some(client) = self.finish() {
            roll_back_or_close(client).await;
        }
    }

    /// Begin a transaction on `client` with `BEGIN` and `first` in one
    /// flight (`BEGIN` is polled first, so it leaves first; a statement of
    /// `first` that is prepared already leaves on its first poll right
    /// behind it). The transaction and what `first` answered; if either
    /// failed, it is rolled back and the error answered.
    pub async fn begin_with<T, E>(
        client: deadpool_postgres::Object,
        first: impl AsyncFnOnce(&deadpool_postgres::Object) -> Result<T, E>,
    ) -> Result<(Self, T), E>
    where
        E: From<tokio_postgres::Error>,
    {
        let begun = Self::new(client);
        let started = futures::future::try_join(
            futures::TryFutureExt::map_err(begun.batch_execute("BEGIN"), E::from),
            first(&begun),
        )
        .await;
        match started {
            Ok(((), answer)) => Ok((begun, answer)),
            Err(e) => {
                begun.roll_back().await;
                Err(e)
            }
        }
    }

    /// Send `last` and `COMMIT` in one flight, in that order, and hand the
    /// connection back to the pool. If a statement of `last` fails, the
    /// pipelined `COMMIT` becomes a rollback; if `COMMIT` fails, nothing
    /// was written either: the transaction is rolled back and the error
    /// answered.
    pub async fn commit_with<T, E>(
        self,
        last: impl AsyncFnOnce(&deadpool_postgres::Object) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<tokio_postgres::Error>,
    {
        let committed = futures::future::try_join(
            last(&self),
            futures::TryFutureExt::map_err(self.batch_execute("COMMIT"), E::from),
        )
        .await;
        match committed {
            Ok((answer, ())) => {
                drop(self.finish());
                Ok(answer)
            }
            Err(e) => {
                self.roll_back().await;
                Err(e)
            }
        }
    }
}

impl std::ops::Deref for Begun {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        // Some until `finish`, which consumes self.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("a Begun connection used after finish"))
    }
}

impl Drop for Begun {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            tracing::warn!("a transaction begun by hand was abandoned; closing its connection");
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// End a transaction begun by hand (`BEGIN` pipelined with the first
/// statement) that will not commit. A connection that cannot even roll back
/// is closed rather than handed to the next caller inside a transaction.
pub async fn roll_back_or_close(client: deadpool_postgres::Object) {
    if let Err(e) = client.batch_execute("ROLLBACK").await {
        tracing::warn!(error = %e, "could not roll back; closing the connection");
        drop(deadpool_postgres::Object::take(client));
    }
}

/// One round trip; used by `/readyz`.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// How long a starting service asks again for its first connection
/// ([`first_connection`]).
pub const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(30);

/// The pool's first connection, asked for again until `wait` has passed
/// while PostgreSQL does not answer (the connection times out, is refused
/// or is closed): a server that is restarting, or whose disk stalls for a
/// few seconds, is waited for rather than taken for absent. A starting
/// service has nothing to answer yet, and a process that exits on the
/// first try fails a whole `jyt up` or load test (CI once: a card-issuing
/// whose first connection took longer than its 3 s create timeout while
/// the machine's disk stalled). An error PostgreSQL itself answers (a
/// wrong password, a missing database) is returned at once.
pub async fn first_connection(pool: &Pool, wait: Duration) -> Result<deadpool_postgres::Object, DbError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match pool.get().await {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        let unanswered = match &error {
            deadpool_postgres::PoolError::Timeout(_) => true,
            deadpool_postgres::PoolError::Backend(e) => e.as_db_error().is_none(),
            _ => false,
        };
        if !unanswered || tokio::time::Instant::now() + pause >= deadline {
            return Err(error.into());
        }
        tracing::warn!(error = %error, "PostgreSQL gave no connection yet; asking again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Run migrations, holding an advisory lock named after the service so that
/// only one replica migrates at a time. The first connection is waited for
/// ([`first_connection`]).
pub async fn migrate(pool: &Pool, service: &str, runner: refinery::Runner) -> Result<(), DbError> {
    let mut client = first_connection(pool, FIRST_CONNECTION_WAIT).await?;
    let lock_id = advisory_lock_id(service);
    client.execute("SELECT pg_advisory_lock($1)", &[&lock_id]).await?;
    let result = runner.run_async(&mut **client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_id])
        .await?;
    let report = result?;
    for m in report.applied_migrations() {
        tracing::info!(service, migration = %m, "applied migration");
    }
    Ok(())
}

/// A stable 64-bit lock key from a name (FNV-1a; stable across releases,
/// unlike `DefaultHasher`).
fn advisory_lock_id(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"jyt-migrate:".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Create `database` through `admin_url` (any database on the same server)
/// unless it exists. Names are restricted to `[a-z0-9_]` so they can be
/// quoted safely into DDL.
pub async fn ensure_database(admin_url: &str, database: &str) -> Result<bool, DbError> {
    let valid = !database.is_empty()
        && database.len() <= 63
        && database
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(DbError::Build(format!("invalid database name `{database}`")));
    }
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls).await?;
    let conn_task = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    let created = if exists {
        false
    } else {
        match client
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
        {
            Ok(()) => true,
            // Someone else created it between our check and our create.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => false,
            Err(e) => return Err(e.into()),
        }
    };
    drop(client);
    if let Err(e) = conn_task.await {
        tracing::debug!(error = %e, "admin connection task ended abnormally");
    }
    Ok(created)
}

/// Replace the database name in a `postgres://` URL.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{database}?{q}"),
        None => format!("{host_part}/{database}"),
    }
}

/// The name of the unique constraint (or unique index) a write violated.
pub fn unique_violation(err: &tokio_postgres::Error) -> Option<&str> {
    let db = err.as_db_error()?;
    if db.code() == &SqlState::UNIQUE_VIOLATION {
        db.constraint()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_in_urls() {
        assert_eq!(
            url_with_database("postgres://u:p@h:5432/postgres", "jyt_card"),
            "postgres://u:p@h:5432/jyt_card"
        );
        assert_eq!(url_with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            url_with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }

    #[test]
    fn lock_ids_are_stable_per_name() {
        assert_eq!(advisory_lock_id("a"), advisory_lock_id("a"));
        assert_ne!(advisory_lock_id("a"), advisory_lock_id("b"));
    }
}
