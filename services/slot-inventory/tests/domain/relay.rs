//! The outbox relay: every booking's event reaches the stream once, is
//! written to the outbox once (the relay marks nothing), and the relay
//! (which shares the booking path's pool) leaves its connection idle, also
//! when Redis refuses the batch.

use std::collections::HashMap;

use jyt_cache::redis;
use jyt_domain::Channel;
use uuid::Uuid;

use crate::helpers::{Hospital, beijing, sched};

async fn stream_event_ids(h: &Hospital) -> Vec<String> {
    let mut conn = h.state.redis.clone();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&h.state.relay.stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| {
            let map: &HashMap<String, redis::Value> = &e.map;
            redis::from_redis_value(map["event_id"].clone()).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn each_event_reaches_the_stream_once_and_a_failed_batch_is_sent_again() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[("POSTGRES__POOL_MAX_SIZE", "1")]).await;
    for segment in 0..3 {
        h.book(&h.segment(sched::CT_AM, segment), Uuid::new_v4(), Channel::Wechat)
            .await
            .unwrap();
    }

    // Redis refuses the batch (the stream key holds a string): the relay's
    // position stays, and the connection is not left in the transaction.
    let mut conn = h.state.redis.clone();
    let () = redis::cmd("SET")
        .arg(&h.state.relay.stream)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(h.state.relay.relay_once().await.is_err(), "WRONGTYPE from Redis");
    assert_eq!(h.pooled_connection_state().await, "idle");
    let client = h.state.pool.get().await.unwrap();
    let unpublished: i64 = client
        .query_one(jyt_events::UNRELAYED_SQL, &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    assert_eq!(unpublished, 3, "a failed batch relays nothing");

    let () = redis::cmd("DEL")
        .arg(&h.state.relay.stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(h.state.relay.relay_once().await.unwrap(), 3);
    assert_eq!(h.state.relay.relay_once().await.unwrap(), 0, "nothing twice");
    assert_eq!(h.pooled_connection_state().await, "idle");

    let written: Vec<String> = h.column("SELECT event_id::text FROM outbox ORDER BY seq").await;
    assert_eq!(written.len(), 3);
    assert_eq!(
        stream_event_ids(&h).await,
        written,
        "every event on the stream, once, in the outbox's order"
    );
    // Relaying wrote nothing to the events: each row is still the version
    // its own transaction inserted (`xmin` is the low 32 bits of `xid`).
    let rewritten: i64 = h
        .count(
            "SELECT count(*) FROM outbox
              WHERE xmin::text::bigint <> xid::text::bigint % 4294967296",
        )
        .await;
    assert_eq!(rewritten, 0, "no event rewritten by the relay");
}

/// The outbox keeps only indexes that a query reads (V19, V22, V23): each
/// event adds an entry to every one of them. The relay finds a new
/// target's first event through `outbox_by_xact` and reads on by the
/// primary key, the feed's sequencer reads `outbox_unsequenced` and its
/// pages `outbox_feed_seq_key`; the event id, unique by construction, has
/// none.
#[tokio::test]
async fn the_outbox_keeps_only_the_indexes_its_reads_use() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let indexes: Vec<String> = h
        .column("SELECT indexname::text FROM pg_indexes WHERE tablename = 'outbox' ORDER BY 1")
        .await;
    assert_eq!(
        indexes,
        [
            "outbox_by_xact",
            "outbox_feed_seq_key",
            "outbox_pkey",
            "outbox_unsequenced"
        ]
    );
    let client = h.state.pool.get().await.unwrap();
    client
        .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .await
        .unwrap();
    for (read, index) in [
        (
            "SELECT min(seq + 0) FROM outbox WHERE xid >= '3'::xid8 AND xid < '1000'::xid8",
            "outbox_by_xact",
        ),
        (
            "SELECT seq FROM outbox WHERE seq > 10 ORDER BY seq LIMIT 500",
            "outbox_pkey",
        ),
        (
            "SELECT seq FROM outbox WHERE feed_seq IS NULL ORDER BY seq LIMIT 5000",
            "outbox_unsequenced",
        ),
        (
            "SELECT feed_seq FROM outbox WHERE feed_seq > 0 ORDER BY feed_seq LIMIT 10",
            "outbox_feed_seq_key",
        ),
    ] {
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {read}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            plan.iter().any(|l| l.contains(index)),
            "{read} reads {index}: {plan:?}"
        );
    }
}
