//! A starting service's first connection to PostgreSQL is asked for again
//! while PostgreSQL does not answer, and an answered error is not.
#![expect(clippy::unwrap_used, reason = "tests: a failure is a failed test")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jyt_settings::PostgresSettings;
use jyt_testkit::pg_admin_url;
use tokio::net::{TcpListener, TcpStream};

/// The host and port of the test PostgreSQL.
fn pg_address() -> String {
    let config: tokio_postgres::Config = pg_admin_url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

/// A stand-in for PostgreSQL at a port of its own: it closes the first
/// `refused` connections at once (a server that is not there yet), then
/// passes every later one through to the test PostgreSQL. The count of
/// connections it took.
async fn flaky_server(refused: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if counted.fetch_add(1, Ordering::SeqCst) < refused {
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                let mut server = TcpStream::connect(pg_address()).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let mut config: tokio_postgres::Config = pg_admin_url().parse().unwrap();
    config.host("127.0.0.1").port(port);
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let database = config.get_dbname().unwrap_or("postgres").to_owned();
    (format!("postgres://{user}@127.0.0.1:{port}/{database}"), taken)
}

fn pool(url: String) -> deadpool_postgres::Pool {
    jyt_db::build_pool(&PostgresSettings {
        url: secrecy::SecretString::from(url),
        pool_max_size: 2,
        wait_timeout_ms: 1_000,
        create_timeout_ms: 1_000,
        recycle_timeout_ms: 1_000,
        statement_timeout_ms: 5_000,
    })
    .unwrap()
}

#[tokio::test]
async fn the_first_connection_is_asked_for_again_until_postgres_answers() {
    let (url, taken) = flaky_server(2).await;
    let pool = pool(url);
    let client = jyt_db::first_connection(&pool, Duration::from_secs(20))
        .await
        .unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(
        taken.load(Ordering::SeqCst),
        3,
        "two closed, the third passed through"
    );
}

#[tokio::test]
async fn a_closed_first_connection_alone_fails_the_plain_get() {
    // What a service met before: one try, and the start failed.
    let (url, _) = flaky_server(1).await;
    let pool = pool(url);
    assert!(pool.get().await.is_err());
}

#[tokio::test]
async fn an_error_postgres_answers_is_not_asked_again() {
    let (url, taken) = flaky_server(0).await;
    let missing = url.rsplit_once('/').unwrap().0.to_owned() + "/jyt_no_such_database";
    let pool = pool(missing);
    let started = tokio::time::Instant::now();
    let error = jyt_db::first_connection(&pool, Duration::from_secs(20))
        .await
        .unwrap_err();
    let code = match &error {
        jyt_db::DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => {
            e.as_db_error().map(|d| d.code().clone())
        }
        _ => None,
    };
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INVALID_CATALOG_NAME),
        "{error:?}"
    );
    assert_eq!(taken.load(Ordering::SeqCst), 1, "asked once");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_server_that_never_answers_is_given_up_on_at_the_deadline() {
    let (url, taken) = flaky_server(usize::MAX).await;
    let pool = pool(url);
    let error = jyt_db::first_connection(&pool, Duration::from_millis(700))
        .await
        .unwrap_err();
    assert!(matches!(error, jyt_db::DbError::Pool(_)), "{error}");
    assert!(taken.load(Ordering::SeqCst) >= 2, "asked more than once");
}
