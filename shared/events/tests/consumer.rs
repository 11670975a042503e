//! A stream consumer group against real Redis: entries a replica read and
//! never acknowledged (it died) are taken over by another replica after
//! `claim_idle_ms`, and an entry is handed out again only after that idle
//! time, never in a tight loop.

#![expect(clippy::unwrap_used, reason = "tests: a failure is a failed test")]

use std::time::Duration;

use jyt_cache::{RedisConn, redis};
use jyt_events::StreamConsumer;

async fn connection() -> RedisConn {
    jyt_cache::connect(&jyt_testkit::redis_settings()).await.unwrap()
}

async fn add(conn: &mut RedisConn, stream: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("event_id")
            .arg(i.to_string())
            .query_async(conn)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// A member `name` of group `g` on `stream`, blocking 10 ms per read.
async fn member(stream: &str, name: &str) -> StreamConsumer {
    let mut consumer = StreamConsumer::new(connection().await, stream.to_owned(), "g".into(), name.into());
    consumer.block_ms = 10;
    consumer
}

fn ids(batch: &[jyt_events::StreamEntry]) -> Vec<String> {
    batch.iter().map(|e| e.id.clone()).collect()
}

/// The only member of a new group on a new, empty stream, that never takes
/// over entries (its pending pass at start already done), with a
/// connection for writing to the stream.
async fn lone_member() -> (String, RedisConn, StreamConsumer) {
    let stream = format!("{}:events", jyt_testkit::fresh_redis_prefix());
    let conn = connection().await;
    let mut consumer = member(&stream, "pod-a").await;
    consumer.claim_idle_ms = 3_600_000;
    consumer.ensure_group().await.unwrap();
    assert!(consumer.next_batch().await.unwrap().is_empty());
    (stream, conn, consumer)
}

#[tokio::test]
async fn a_dead_replicas_unacknowledged_entries_are_taken_over_after_the_idle_time() {
    let stream = format!("{}:events", jyt_testkit::fresh_redis_prefix());
    let mut conn = connection().await;
    let mut dead = member(&stream, "pod-a").await;
    dead.ensure_group().await.unwrap();
    let sent = add(&mut conn, &stream, 3).await;

    // pod-a reads all three, acknowledges the first, then dies.
    let read = dead.next_batch().await.unwrap();
    assert_eq!(ids(&read), sent);
    dead.ack(&sent[..1]).await.unwrap();
    drop(dead);

    let mut alive = member(&stream, "pod-b").await;
    alive.claim_idle_ms = 200;
    // Before the idle time nothing is taken: pod-a may only be slow.
    assert!(alive.next_batch().await.unwrap().is_empty());
    // Polled with a deadline; each read blocks up to `block_ms`.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let taken = loop {
        let batch = alive.next_batch().await.unwrap();
        if !batch.is_empty() {
            break ids(&batch);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod-b never took over pod-a's entries"
        );
    };
    assert_eq!(
        taken,
        sent[1..],
        "the two unacknowledged entries, not the acknowledged one"
    );
    alive.ack(&taken).await.unwrap();

    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("g")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "nothing left unacknowledged in the group");
}

#[tokio::test]
async fn an_entry_that_fails_is_read_again_on_the_next_pass_not_at_once() {
    let (stream, mut conn, mut consumer) = lone_member().await;
    let first = add(&mut conn, &stream, 1).await;
    assert_eq!(ids(&consumer.next_batch().await.unwrap()), first);
    // Not acknowledged (the apply failed): new entries still flow.
    let second = add(&mut conn, &stream, 1).await;
    assert_eq!(ids(&consumer.next_batch().await.unwrap()), second);
    consumer.ack(&second).await.unwrap();

    // A restarted consumer reads its own pending entry first, once.
    let mut restarted = member(&stream, "pod-a").await;
    assert_eq!(ids(&restarted.next_batch().await.unwrap()), first);
    assert!(
        restarted.next_batch().await.unwrap().is_empty(),
        "one pass, then new entries"
    );
}

/// `n` entries of `event_type`, each with its envelope, as the relay writes
/// them.
async fn add_typed(conn: &mut RedisConn, stream: &str, event_type: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let envelope = jyt_events::Envelope {
            event_id: uuid::Uuid::now_v7(),
            event_type: event_type.to_owned(),
            aggregate_id: "pumch-1".to_owned(),
            occurred_at: chrono::Utc::now(),
            payload: serde_json::json!({}),
        };
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("event_id")
            .arg(envelope.event_id.to_string())
            .arg("event_type")
            .arg(event_type)
            .arg("envelope")
            .arg(serde_json::to_string(&envelope).unwrap())
            .query_async(conn)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// The ids of the group's entries delivered and not yet acknowledged.
async fn pending_ids(conn: &mut RedisConn, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(conn)
        .await
        .unwrap();
    reply.ids.into_iter().map(|p| p.id).collect()
}

#[tokio::test]
async fn a_consumer_wanting_some_types_is_handed_only_those_and_acknowledges_the_rest_with_its_batch() {
    let stream = format!("{}:events", jyt_testkit::fresh_redis_prefix());
    let mut conn = connection().await;
    let mut consumer = member(&stream, "pod-a").await.wanting(&["booking.no_show"]);
    consumer.ensure_group().await.unwrap();
    let confirmed = add_typed(&mut conn, &stream, "booking.confirmed", 3).await;
    let no_show = add_typed(&mut conn, &stream, "booking.no_show", 1).await;
    let checked_in = add_typed(&mut conn, &stream, "booking.checked_in", 2).await;
    // An entry written without the type field (an older relay's) is read.
    let untyped = add(&mut conn, &stream, 1).await;

    let batch = consumer.next_batch().await.unwrap();
    assert_eq!(ids(&batch), [no_show.clone(), untyped.clone()].concat());
    assert_eq!(
        batch[0].envelope.as_ref().map(|e| e.event_type.as_str()),
        Some("booking.no_show")
    );
    // Until the batch is acknowledged every entry is pending, the unwanted
    // ones too: a consumer that dies now has them all delivered again.
    assert_eq!(pending_ids(&mut conn, &stream).await.len(), 7);
    consumer.ack(&ids(&batch)).await.unwrap();
    assert!(
        pending_ids(&mut conn, &stream).await.is_empty(),
        "the unwanted entries went with the batch's XACK"
    );
    assert_eq!(confirmed.len() + checked_in.len(), 5);

    // A batch of nothing wanted hands out nothing, and its empty ack still
    // acknowledges what was read.
    add_typed(&mut conn, &stream, "booking.confirmed", 2).await;
    assert!(consumer.next_batch().await.unwrap().is_empty());
    assert_eq!(pending_ids(&mut conn, &stream).await.len(), 2);
    consumer.ack(&[]).await.unwrap();
    assert!(pending_ids(&mut conn, &stream).await.is_empty());
}

#[tokio::test]
async fn after_a_failed_apply_the_pending_entries_are_read_again_before_new_ones() {
    let (stream, mut conn, mut consumer) = lone_member().await;
    let first = add(&mut conn, &stream, 2).await;
    assert_eq!(ids(&consumer.next_batch().await.unwrap()), first);
    // The first applied, the second failed: only the first acknowledged.
    consumer.ack(&first[..1]).await.unwrap();
    consumer.reread_pending();
    let later = add(&mut conn, &stream, 1).await;
    assert_eq!(
        ids(&consumer.next_batch().await.unwrap()),
        first[1..],
        "the failed entry comes back before the new one"
    );
    consumer.ack(&first[1..]).await.unwrap();
    assert_eq!(ids(&consumer.next_batch().await.unwrap()), later);
}
