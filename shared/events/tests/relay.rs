//! The outbox relay against real PostgreSQL and Redis: a row counts as
//! published only once Redis acknowledged its `XADD`, and the stream is
//! trimmed only below what every consumer group has read and acknowledged.

#![expect(clippy::unwrap_used, reason = "tests: a failure is a failed test")]

use jyt_cache::{RedisConn, redis};
use jyt_db::deadpool_postgres::Pool;
use jyt_events::{OutboxRelay, StreamConsumer};

async fn connection() -> RedisConn {
    jyt_cache::connect(&jyt_testkit::redis_settings()).await.unwrap()
}

/// A fresh database with the outbox table.
async fn outbox_pool() -> Pool {
    let url = jyt_testkit::fresh_database("events").await;
    let pool = jyt_db::build_pool(&jyt_settings::PostgresSettings {
        url: secrecy::SecretString::from(url),
        pool_max_size: 4,
        wait_timeout_ms: 5_000,
        create_timeout_ms: 5_000,
        recycle_timeout_ms: 5_000,
        statement_timeout_ms: 5_000,
    })
    .unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(jyt_events::OUTBOX_DDL)
        .await
        .unwrap();
    pool
}

async fn append(pool: &Pool, n: usize) {
    let client = pool.get().await.unwrap();
    for i in 0..n {
        jyt_events::append(
            &client,
            "booking.held",
            &format!("b-{i}"),
            &serde_json::json!({ "n": i }),
        )
        .await
        .unwrap();
    }
}

async fn unpublished(pool: &Pool) -> i64 {
    pool.get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[])
        .await
        .unwrap()
        .get(0)
}

async fn stream_ids(conn: &mut RedisConn, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(conn, stream).await.unwrap();
    reply.ids.into_iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn a_row_counts_as_published_only_after_redis_acknowledged_its_xadd() {
    let pool = outbox_pool().await;
    let mut conn = connection().await;
    let stream = format!("{}:events", jyt_testkit::fresh_redis_prefix());
    let relay = OutboxRelay::new(pool.clone(), connection().await, stream.clone());
    append(&pool, 3).await;

    // Redis refuses the XADDs (the key is not a stream): nothing is marked.
    redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(relay.relay_once().await.is_err());
    assert_eq!(unpublished(&pool).await, 3, "no row marked without an entry id");

    // Redis accepts them: each row is on the stream once and marked.
    redis::cmd("DEL")
        .arg(&stream)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(relay.relay_once().await.unwrap(), 3);
    assert_eq!(unpublished(&pool).await, 0);
    assert_eq!(stream_ids(&mut conn, &stream).await.len(), 3);
    assert_eq!(relay.relay_once().await.unwrap(), 0, "nothing twice");
}

#[tokio::test]
async fn the_stream_is_trimmed_only_below_the_slowest_consumer_group() {
    let pool = outbox_pool().await;
    let mut conn = connection().await;
    let stream = format!("{}:events", jyt_testkit::fresh_redis_prefix());
    let relay = OutboxRelay::new(pool.clone(), connection().await, stream.clone());
    append(&pool, 10).await;
    assert_eq!(relay.relay_once().await.unwrap(), 10);
    let ids = stream_ids(&mut conn, &stream).await;

    // Nobody reads the stream yet: nothing may go.
    assert_eq!(relay.trim_once().await.unwrap(), 0);

    let member = |group: &str| {
        let group = group.to_owned();
        let stream = stream.clone();
        async move {
            let mut c = StreamConsumer::new(connection().await, stream, group, "pod-a".into());
            c.block_ms = 10;
            c.ensure_group().await.unwrap();
            c
        }
    };
    let mut fast = member("fast").await;
    let mut slow = member("slow").await;
    // A group that has read nothing holds everything.
    let read = fast.next_batch().await.unwrap();
    let read: Vec<String> = read.into_iter().map(|e| e.id).collect();
    assert_eq!(read, ids);
    fast.ack(&read).await.unwrap();
    assert_eq!(relay.trim_once().await.unwrap(), 0, "`slow` has read nothing");

    // `slow` reads four and acknowledges two: its oldest pending entry is
    // the floor; the two acknowledged ones go.
    slow.batch_size = 4;
    let batch: Vec<String> = slow
        .next_batch()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(batch, ids[..4]);
    slow.ack(&batch[..2]).await.unwrap();
    assert_eq!(
        jyt_events::trim_floor(&mut conn, &stream).await.unwrap(),
        Some(ids[2].clone())
    );
    assert_eq!(relay.trim_once().await.unwrap(), 2);
    assert_eq!(stream_ids(&mut conn, &stream).await, ids[2..]);

    // Its pending entries are still there to be read again (a restart).
    let mut restarted = member("slow").await;
    let again: Vec<String> = restarted
        .next_batch()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(again, ids[2..4]);
    restarted.ack(&again).await.unwrap();
    // Nothing pending: its last-delivered entry is the floor.
    assert_eq!(relay.trim_once().await.unwrap(), 1);
    assert_eq!(stream_ids(&mut conn, &stream).await, ids[3..]);

    // Once every group has read and acknowledged everything, only the
    // last entry (the floor itself) stays.
    let rest: Vec<String> = restarted
        .next_batch()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(rest, ids[4..]);
    restarted.ack(&rest).await.unwrap();
    relay.trim_once().await.unwrap();
    assert_eq!(stream_ids(&mut conn, &stream).await, ids[9..]);
}
