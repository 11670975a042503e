//! The outbox relay against real PostgreSQL and Redis: an event counts as
//! relayed only once Redis acknowledged its `XADD`; an event whose
//! transaction commits after later ones is still relayed, once; a batch
//! keeps the outbox's order; two relays at once publish each event once;
//! and the stream is trimmed only below what every consumer group has read
//! and acknowledged.

#![expect(clippy::unwrap_used, reason = "tests: a failure is a failed test")]

use jyt_cache::{RedisConn, redis};
use jyt_db::deadpool_postgres::Pool;
use jyt_events::{OutboxRelay, StreamConsumer};

async fn connection() -> RedisConn {
    jyt_cache::connect(&jyt_testkit::redis_settings()).await.unwrap()
}

/// A fresh database with the outbox table, as every service's migrations
/// leave it.
async fn outbox_pool() -> Pool {
    let pool = first_outbox_pool().await;
    pool.get()
        .await
        .unwrap()
        .batch_execute(jyt_events::OUTBOX_RELAY_DDL)
        .await
        .unwrap();
    pool
}

/// A fresh database with the outbox table as the services' first
/// migrations made it, before the relay read by transaction.
async fn first_outbox_pool() -> Pool {
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

/// A fresh outbox, a connection to Redis, a fresh stream and a relay
/// from the one to the other.
async fn relayed_outbox() -> (Pool, RedisConn, String, OutboxRelay) {
    let pool = outbox_pool().await;
    let stream = format!("{}:events", jyt_testkit::fresh_redis_prefix());
    let relay = OutboxRelay::new(pool.clone(), connection().await, stream.clone());
    (pool, connection().await, stream, relay)
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
        .query_one(jyt_events::UNRELAYED_SQL, &[])
        .await
        .unwrap()
        .get(0)
}

/// The `event_id` field of every entry on the stream, in stream order.
async fn stream_event_ids(conn: &mut RedisConn, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(conn, stream).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| e.get::<String>("event_id").unwrap())
        .collect()
}

/// The outbox's event ids in `seq` order.
async fn outbox_event_ids(pool: &Pool) -> Vec<String> {
    pool.get()
        .await
        .unwrap()
        .query("SELECT event_id::text FROM outbox ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn stream_ids(conn: &mut RedisConn, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(conn, stream).await.unwrap();
    reply.ids.into_iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn a_row_counts_as_published_only_after_redis_acknowledged_its_xadd() {
    let (pool, mut conn, stream, relay) = relayed_outbox().await;
    append(&pool, 3).await;

    // Redis refuses the XADDs (the key is not a stream): nothing is marked.
    redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(relay.relay_once().await.is_err());
    assert_eq!(
        unpublished(&pool).await,
        3,
        "the position stays without an entry id"
    );

    // Redis accepts them: each event is on the stream once and relayed.
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
    let (pool, mut conn, stream, relay) = relayed_outbox().await;
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

#[tokio::test]
async fn an_event_whose_transaction_commits_after_later_ones_is_still_relayed_once() {
    let (pool, mut conn, stream, relay) = relayed_outbox().await;

    // A transaction takes the lower `seq` and stays open while a later
    // event commits and is relayed.
    let mut slow = pool.get().await.unwrap();
    let slow_tx = slow.transaction().await.unwrap();
    let late = jyt_events::append(&slow_tx, "booking.held", "late", &serde_json::json!({}))
        .await
        .unwrap();
    append(&pool, 1).await;
    assert_eq!(relay.relay_once().await.unwrap(), 1, "only the committed event");
    assert_eq!(relay.relay_once().await.unwrap(), 0);

    slow_tx.commit().await.unwrap();
    assert_eq!(unpublished(&pool).await, 1, "the late commit waits for the relay");
    assert_eq!(relay.relay_once().await.unwrap(), 1, "the late commit is relayed");
    assert_eq!(relay.relay_once().await.unwrap(), 0, "and only once");
    let on_stream = stream_event_ids(&mut conn, &stream).await;
    assert_eq!(on_stream.len(), 2);
    assert_eq!(on_stream[1], late.to_string());
    assert_eq!(unpublished(&pool).await, 0);

    // An event written in a transaction that rolls back is never relayed.
    let mut gone = pool.get().await.unwrap();
    let gone_tx = gone.transaction().await.unwrap();
    jyt_events::append(&gone_tx, "booking.held", "gone", &serde_json::json!({}))
        .await
        .unwrap();
    gone_tx.rollback().await.unwrap();
    append(&pool, 1).await;
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    assert_eq!(stream_event_ids(&mut conn, &stream).await.len(), 3);
}

#[tokio::test]
async fn more_events_than_a_batch_go_out_in_batches_in_the_outboxs_order() {
    let (pool, mut conn, stream, mut relay) = relayed_outbox().await;
    relay.batch_size = 3;
    append(&pool, 7).await;

    assert_eq!(relay.relay_once().await.unwrap(), 3);
    assert_eq!(unpublished(&pool).await, 4);
    // Events committed while a target is drained wait for the next one.
    append(&pool, 1).await;
    assert_eq!(relay.relay_once().await.unwrap(), 3);
    assert_eq!(unpublished(&pool).await, 2);
    assert_eq!(
        relay.relay_once().await.unwrap(),
        1,
        "the rest of the first target"
    );
    assert_eq!(
        relay.relay_once().await.unwrap(),
        1,
        "then the event written meanwhile"
    );
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert_eq!(unpublished(&pool).await, 0);
    assert_eq!(
        stream_event_ids(&mut conn, &stream).await,
        outbox_event_ids(&pool).await
    );
}

#[tokio::test]
async fn two_relays_at_once_put_each_event_on_the_stream_once() {
    let (pool, mut conn, stream, mut first) = relayed_outbox().await;
    first.batch_size = 7;
    let mut second = OutboxRelay::new(pool.clone(), connection().await, stream.clone());
    second.batch_size = 7;
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                append(&pool, 5).await;
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (a, b) = tokio::join!(first.relay_once(), second.relay_once());
        a.unwrap();
        b.unwrap();
        if writer.is_finished() && unpublished(&pool).await == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relays did not catch up"
        );
    }
    writer.await.unwrap();
    let on_stream = stream_event_ids(&mut conn, &stream).await;
    assert_eq!(on_stream.len(), 100, "each event once");
    assert_eq!(on_stream, outbox_event_ids(&pool).await);
}

#[tokio::test]
async fn the_migration_relays_what_was_unpublished_and_nothing_that_was() {
    let pool = first_outbox_pool().await;
    let mut conn = connection().await;
    let stream = format!("{}:events", jyt_testkit::fresh_redis_prefix());
    append(&pool, 3).await;
    let client = pool.get().await.unwrap();
    client
        .execute(
            "UPDATE outbox SET published_at = now() WHERE seq < (SELECT max(seq) FROM outbox)",
            &[],
        )
        .await
        .unwrap();
    let waiting: String = client
        .query_one(
            "SELECT event_id::text FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client.batch_execute(jyt_events::OUTBOX_RELAY_DDL).await.unwrap();

    let relay = OutboxRelay::new(pool.clone(), connection().await, stream.clone());
    assert_eq!(unpublished(&pool).await, 1);
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    append(&pool, 1).await;
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    let on_stream = stream_event_ids(&mut conn, &stream).await;
    assert_eq!(on_stream.len(), 2);
    assert_eq!(on_stream[0], waiting);
}

#[tokio::test]
async fn an_outbox_without_its_relay_position_is_an_error_not_a_quiet_relay() {
    let (pool, _conn, _stream, relay) = relayed_outbox().await;
    append(&pool, 1).await;
    pool.get()
        .await
        .unwrap()
        .batch_execute("DELETE FROM outbox_relay")
        .await
        .unwrap();
    assert!(matches!(
        relay.relay_once().await,
        Err(jyt_events::EventError::Position { rows: 0 })
    ));
}
