//! When PostgreSQL or Redis misbehaves, no seat is lost or sold twice.

use jyt_system_tests::{TestCity, problem};

#[tokio::test]
async fn a_postgres_failure_after_the_redis_hold_gives_the_seat_back() {
    let city = TestCity::spawn(&["pkuth"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(2).await;
    let slot = &slots[0];
    // Warm the segment into Redis.
    let first = city.book(slot, city.patient().await, "wechat", "warm").await;
    assert_eq!(first.status(), 201);
    assert_eq!(h.redis_segment(slot).await.0, 1);

    // Make the booking transaction fail after the Lua hold succeeded: the
    // outbox insert (the transaction's last statement) raises.
    h.sql(
        "CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox
           FOR EACH ROW EXECUTE FUNCTION fail_outbox();",
    )
    .await;
    let patient = city.patient().await;
    let res = city.book(slot, patient, "kiosk", "fails-once").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(problem(res).await["code"], "DATABASE_UNAVAILABLE");

    // Nothing half-written, and the seat is back in Redis.
    assert_eq!(h.live_bookings(slot).await, (1, 1));
    let (free, holders) = h.redis_segment(slot).await;
    assert_eq!(free, 1, "the held seat was given back");
    assert!(!holders.contains_key(&patient.to_string()));

    // Once PostgreSQL is healthy, the very same request books that seat.
    h.sql("DROP TRIGGER fail_outbox ON outbox;").await;
    let res = city.book(slot, patient, "kiosk", "fails-once").await;
    assert_eq!(res.status(), 201);
    assert_eq!(h.live_bookings(slot).await, (2, 2));
    assert_eq!(h.redis_segment(slot).await.0, 0);
    assert!(h.oversold_segments().await.is_empty());
}

#[tokio::test]
async fn redis_losing_its_data_is_rebuilt_from_postgres_without_double_booking() {
    let city = TestCity::spawn(&["fuwai"]).await;
    let h = city.hospital(0);
    let slots = h.seed_visit_day(3).await;
    let slot = &slots[0];
    let patient = city.patient().await;
    let first = city.book(slot, patient, "wechat", "before-restart").await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();

    // Redis comes back empty.
    h.wipe_redis_segments(&slots).await;

    // The retry of the first request still finds its booking, not a new one
    // (its Redis idempotency record is kept, but its seat map is gone).
    let replay = city.book(slot, patient, "wechat", "before-restart").await;
    assert_eq!(replay.status(), 201);
    let replay: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(replay["booking_id"], first["booking_id"]);

    // New patients get the remaining seats, never the taken one.
    let mut seats = vec![first["seat_number"].as_i64().unwrap()];
    for i in 0..2 {
        let res = city
            .book(slot, city.patient().await, "kiosk", &format!("after-{i}"))
            .await;
        assert_eq!(res.status(), 201);
        let b: serde_json::Value = res.json().await.unwrap();
        seats.push(b["seat_number"].as_i64().unwrap());
    }
    seats.sort_unstable();
    assert_eq!(seats, vec![1, 2, 3]);
    let res = city
        .book(slot, city.patient().await, "kiosk", "one-too-many")
        .await;
    assert_eq!(res.status(), 409);
    assert_eq!(h.live_bookings(slot).await, (3, 3));
    assert_eq!(h.redis_segment(slot).await.1, h.pg_holders(slot).await);

    // The operator's rebuild command gives the same answer as PostgreSQL.
    let loaded = slot_inventory::booking::cache::rebuild_cache(&h.state)
        .await
        .unwrap();
    assert!(loaded >= slots.len());
    assert_eq!(h.redis_segment(slot).await.0, 0);
    assert_eq!(h.redis_segment(slot).await.1, h.pg_holders(slot).await);
    assert_eq!(h.redis_segment(&slots[1]).await.0, 3);
}
