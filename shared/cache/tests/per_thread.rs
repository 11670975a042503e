//! `RedisConn` against a real Redis: each thread that uses a handle talks
//! over its own connection, opened on that thread, and keeps it.

#![expect(clippy::unwrap_used, reason = "tests: a failure is a failed test")]

use jyt_cache::{RedisConn, redis};

/// The server's id of the connection this thread's command went over.
async fn connection_id(conn: &RedisConn) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn.clone())
        .await
        .unwrap()
}

/// `connection_id` on a new thread with a runtime of its own, as an actix
/// worker has.
fn connection_id_on_another_thread(conn: &RedisConn) -> (i64, i64) {
    let conn = conn.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async { (connection_id(&conn).await, connection_id(&conn).await) })
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn each_thread_has_its_own_connection_and_keeps_it() {
    let conn = jyt_cache::connect(&jyt_testkit::redis_settings()).await.unwrap();
    let here = connection_id(&conn).await;
    assert_eq!(
        connection_id(&conn).await,
        here,
        "one thread keeps its connection"
    );

    let (first, second) = connection_id_on_another_thread(&conn);
    assert_eq!(first, second, "the other thread keeps its connection too");
    assert_ne!(first, here, "the other thread opened its own");

    let (third, _) = connection_id_on_another_thread(&conn);
    assert_ne!(third, first, "a new thread opens a new one");
    assert_eq!(connection_id(&conn).await, here);
}

#[tokio::test]
async fn separately_connected_handles_never_share_a_connection() {
    // A stream reader's `XREAD BLOCK` must not hold up another handle's
    // commands on the same thread.
    let reader = jyt_cache::connect(&jyt_testkit::redis_settings()).await.unwrap();
    let other = jyt_cache::connect(&jyt_testkit::redis_settings()).await.unwrap();
    assert_ne!(connection_id(&reader).await, connection_id(&other).await);

    let stream = format!("{}:stream", jyt_testkit::fresh_redis_prefix());
    let blocked = {
        let mut reader = reader.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(2_000)
                .arg("STREAMS")
                .arg(&stream)
                .arg("$")
                .query_async::<redis::Value>(&mut reader)
                .await
        })
    };
    // While the reader blocks, the other handle answers at once.
    let started = std::time::Instant::now();
    let pong: String = redis::cmd("PING").query_async(&mut other.clone()).await.unwrap();
    assert_eq!(pong, "PONG");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_000),
        "the other handle waited behind the blocked read"
    );
    blocked.abort();
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_connect() {
    let mut unreachable = jyt_testkit::redis_settings();
    unreachable.urls = vec![secrecy::SecretString::from("redis://127.0.0.1:1/".to_owned())];
    unreachable.connection_timeout_ms = 500;
    assert!(jyt_cache::connect(&unreachable).await.is_err());
}
