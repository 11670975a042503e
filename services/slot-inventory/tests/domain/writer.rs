//! The group commit of won holds (`booking::writer`): bookings queued
//! together are written in one statement and one transaction, each with its
//! own event; a row the database refuses costs only its own booking; and
//! no queued booking is left unanswered, however few the writers.

use std::time::Duration;

use jyt_domain::{BookingStatus, Channel};
use slot_inventory::booking::queries::BookingToWrite;
use slot_inventory::booking::writer::{WriteError, WriteResult};
use uuid::Uuid;

use crate::helpers::{ALL_COMMON, Hospital, beijing, book_request, sched, won};

/// Queue every row before any writer runs: the test runtime has one
/// thread, and a writer is a task of its own, so the first writer finds
/// them all queued.
async fn write_together(h: &Hospital, rows: &[BookingToWrite]) -> Vec<WriteResult> {
    futures::future::join_all(rows.iter().map(|r| h.state.writer.write(&h.state, r.clone()))).await
}

/// The transactions that wrote `rows`' bookings.
async fn transactions(h: &Hospital, rows: &[BookingToWrite]) -> usize {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let client = h.state.pool.get().await.unwrap();
    let n: i64 = client
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM bookings WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    usize::try_from(n).unwrap()
}

/// The event written for `row`'s booking: its type and payload.
async fn event_of(h: &Hospital, row: &BookingToWrite) -> Option<(String, serde_json::Value)> {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT event_type, payload FROM outbox WHERE aggregate_id = $1",
            &[&row.aggregate_id],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test]
async fn won_holds_queued_together_are_one_statement_each_booking_with_its_own_event() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    // Twelve seats, and a thirteenth the segment does not have.
    let rows: Vec<BookingToWrite> = (1..=13).map(|seat| won(&h, &slot, seat)).collect();

    let answers = write_together(&h, &rows).await;

    for (row, answer) in rows.iter().zip(&answers) {
        let stored = answer.as_ref().map_err(|e| format!("{e:?}")).unwrap();
        if row.seat_no <= 12 {
            let stored = stored.as_ref().unwrap();
            assert_eq!(
                stored.booking.booking_id.id, row.id,
                "each answer is its own booking"
            );
            assert_eq!(stored.booking.seat_number, row.seat_no);
            assert_eq!(stored.booking.patient_id, row.patient_id);
            assert_eq!(
                stored.booking.status,
                BookingStatus::Held,
                "the expert visit has a fee"
            );
        } else {
            assert!(stored.is_none(), "seat 13 of 12 is not written");
        }
    }
    let written = &rows[..12];
    assert_eq!(transactions(&h, written).await, 1, "one commit for the twelve");
    for row in written {
        let (event_type, payload) = event_of(&h, row).await.unwrap();
        assert_eq!(event_type, "booking.held");
        assert_eq!(
            payload["seat"], row.seat_no,
            "the event joined to its own booking"
        );
        assert_eq!(payload["status"], "held");
        assert!(payload["fee_fen"].as_i64().unwrap() > 0);
        assert!(!payload["department"].as_str().unwrap().is_empty());
        assert!(!payload["doctor"].as_str().unwrap().is_empty());
    }
    assert!(
        event_of(&h, &rows[12]).await.is_none(),
        "no event without its booking"
    );
    assert_eq!(h.event_types().await.len(), 12);
}

#[tokio::test]
async fn a_batch_a_unique_index_refuses_is_written_again_one_booking_at_a_time() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let slot = h.segment(sched::CT_AM, 0);
    let taken = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    // A stale Redis would sell the taken seat again, in the middle of a
    // batch of free ones.
    let mut rows: Vec<BookingToWrite> = (5..=8).map(|seat| won(&h, &slot, seat)).collect();
    rows.insert(2, won(&h, &slot, taken.seat_number));

    let answers = write_together(&h, &rows).await;

    for (row, answer) in rows.iter().zip(&answers) {
        if row.seat_no == taken.seat_number {
            assert!(
                matches!(answer, Err(WriteError::Unique(c)) if c == "bookings_seat_uq"),
                "the taken seat: {answer:?}"
            );
            assert!(event_of(&h, row).await.is_none());
        } else {
            let stored = answer.as_ref().map_err(|e| format!("{e:?}")).unwrap();
            assert_eq!(stored.as_ref().unwrap().booking.booking_id.id, row.id);
            let (event_type, payload) = event_of(&h, row).await.unwrap();
            assert_eq!(event_type, "booking.confirmed", "CT has no fee");
            assert_eq!(payload["seat"], row.seat_no);
        }
    }
    let free: Vec<BookingToWrite> = rows
        .iter()
        .filter(|r| r.seat_no != taken.seat_number)
        .cloned()
        .collect();
    assert_eq!(transactions(&h, &free).await, 4, "each written alone");
    assert_eq!(
        h.event_types().await.len(),
        5,
        "the first booking's event and the four"
    );
}

/// Bookings queued from many threads while one writer is busy are all
/// answered: a writer that finds the queue empty gives its permit back and
/// looks again, so a booking queued in between is never stranded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_queued_booking_is_answered_with_one_writer_and_many_threads() {
    let h = Hospital::start(
        beijing(2, 9, 0),
        240,
        &[ALL_COMMON, &[("BOOKING__CONCURRENT_WRITES", "1")]].concat(),
    )
    .await;
    let slot = h.segment(sched::CT_AM, 0);
    let rows: Vec<BookingToWrite> = (1..=240).map(|seat| won(&h, &slot, seat)).collect();

    let mut tasks = Vec::new();
    for chunk in rows.chunks(30) {
        let (state, chunk) = (h.state.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut answered = 0;
            for row in chunk {
                if matches!(state.writer.write(&state, row).await, Ok(Some(_))) {
                    answered += 1;
                }
                tokio::task::yield_now().await;
            }
            answered
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
        .await
        .expect("every booking answered");
    let booked: usize = all.into_iter().map(Result::unwrap).sum();
    assert_eq!(booked, 240);
    assert_eq!(h.column::<i64>("SELECT count(*) FROM bookings").await, [240]);
    assert_eq!(h.event_types().await.len(), 240);
}

/// A request dropped once its booking is queued (its client gone) takes
/// nobody's answer with it: the writer is a task of its own, so the
/// queued booking is written and the next winner is answered.
#[tokio::test]
async fn a_request_dropped_after_queuing_leaves_the_batch_whole() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let slot = h.segment(sched::CT_AM, 0);
    let (gone, waiting) = (won(&h, &slot, 1), won(&h, &slot, 2));

    let mut dropped = Box::pin(h.state.writer.write(&h.state, gone.clone()));
    assert!(
        futures::poll!(dropped.as_mut()).is_pending(),
        "queued, not yet written"
    );
    drop(dropped);
    let answer = h.state.writer.write(&h.state, waiting.clone()).await;

    let stored = answer.map_err(|e| format!("{e:?}")).unwrap().unwrap();
    assert_eq!(stored.booking.booking_id.id, waiting.id);
    let mut written = h.column::<Uuid>("SELECT id FROM bookings").await;
    written.sort();
    let mut expected = vec![gone.id, waiting.id];
    expected.sort();
    assert_eq!(written, expected, "the dropped request's booking is written too");
    assert!(event_of(&h, &gone).await.is_some());
}

/// A batch finds each booking's segment by its key, not by reading every
/// segment: on a hospital with months of clinics (23,400 segments) in a
/// table without statistics (a first release; this machine's PostgreSQL
/// never analyzes), the generic plan of the batch statement reads
/// `segments` only through its primary key.
#[tokio::test]
async fn a_batch_reads_each_segment_by_its_key_among_many() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let client = h.state.pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO segments (id, schedule_id, starts_at, ends_at, capacity)
             SELECT gen_random_uuid(), schedule_id, starts_at + g * interval '1 day',
                    ends_at + g * interval '1 day', capacity
               FROM segments, generate_series(1, 300) g",
        )
        .await
        .unwrap();
    let statement = slot_inventory::booking::queries::INSERT_BOOKINGS_WITH_EVENTS.as_str();
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE batch AS {statement}"
        ))
        .await
        .unwrap();
    let slot = h.segment(sched::CT_AM, 0);
    let plan = jyt_testkit::explain(
        &client,
        &format!(
            "EXECUTE batch(ARRAY[gen_random_uuid()], ARRAY['{}'::uuid], ARRAY[gen_random_uuid()],
                           ARRAY['wechat'], ARRAY[1], ARRAY['k'], ARRAY['common'], ARRAY[1],
                           ARRAY['000001'], ARRAY[now()], ARRAY[NULL::text], ARRAY[gen_random_uuid()],
                           ARRAY['a'], ARRAY['{{}}'::jsonb])",
            slot.id
        ),
    )
    .await;
    client
        .batch_execute("DEALLOCATE batch; RESET plan_cache_mode")
        .await
        .unwrap();
    let reads: Vec<&String> = plan.iter().filter(|l| l.contains(" on segments")).collect();
    assert!(!reads.is_empty(), "no read of segments in\n{}", plan.join("\n"));
    assert!(
        reads.iter().all(|l| l.contains("Index Scan using segments_pkey")),
        "segments read other than by key:\n{}",
        plan.join("\n")
    );
}

/// Every connection the pool has opened, held at once, so that each can
/// be asked what it has prepared.
async fn every_connection(h: &Hospital) -> Vec<jyt_db::deadpool_postgres::Object> {
    let size = h.state.pool.status().size;
    let mut clients = Vec::new();
    for _ in 0..size {
        clients.push(h.state.pool.get().await.unwrap());
    }
    clients
}

/// How each connection the pool has opened has run the two booking
/// statements: per statement (single row, batch), the runs on its generic
/// plan and the custom plans made.
async fn plans_per_connection(h: &Hospital) -> Vec<[(i64, i64); 2]> {
    use slot_inventory::booking::queries::{INSERT_BOOKING_WITH_EVENT, INSERT_BOOKINGS_WITH_EVENTS};
    let clients = every_connection(h).await;
    let mut plans = Vec::new();
    for client in &clients {
        let of = |statement: &str| {
            let client = &**client;
            let statement = statement.to_owned();
            async move {
                client
                    .query_opt(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
                        &[&statement],
                    )
                    .await
                    .unwrap()
                    .map_or((0, 0), |r| (r.get(0), r.get(1)))
            }
        };
        plans.push([
            of(INSERT_BOOKING_WITH_EVENT.as_str()).await,
            of(INSERT_BOOKINGS_WITH_EVENTS.as_str()).await,
        ]);
    }
    plans
}

/// The warm-up readies a connection per writer and one for the relay for
/// the release second, and writes nothing: each has run both booking
/// statements past PostgreSQL's five custom plans onto its generic plan,
/// so the first winners after a start are not planned one by one (issue
/// 20: planning was a third of PostgreSQL's statement time in a surge right
/// after a start). A single booking and a batch written afterwards make
/// no new plan on any connection. The rest of the pool is not opened.
#[tokio::test]
async fn a_warmed_pool_writes_its_first_bookings_on_generic_plans_and_the_warm_up_writes_nothing() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    slot_inventory::booking::writer::warm_connections(&h.state)
        .await
        .unwrap();
    assert_eq!(h.count("SELECT count(*) FROM bookings").await, 0);
    assert_eq!(h.count("SELECT count(*) FROM outbox").await, 0);

    let status = h.state.pool.status();
    let expected = slot_inventory::booking::writer::warm_connection_count(
        h.state.writer.concurrent_batches(),
        status.max_size,
    );
    assert_eq!(expected, 3, "two writers and the relay, by default");
    assert!(status.max_size > expected, "the pool could open more: {status:?}");
    assert_eq!(status.size, expected, "only the warmed connections are open");
    let warmed = plans_per_connection(&h).await;
    assert_eq!(warmed.len(), expected);
    for (connection, statements) in warmed.iter().enumerate() {
        for (statement, (generic, custom)) in statements.iter().enumerate() {
            assert!(
                *generic >= 1 && *custom == 5,
                "connection {connection}, statement {statement}: {generic} generic runs, {custom} custom plans"
            );
        }
    }

    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let alone = won(&h, &slot, 1);
    assert!(matches!(
        write_together(&h, std::slice::from_ref(&alone)).await.as_slice(),
        [Ok(Some(_))]
    ));
    let batch: Vec<BookingToWrite> = (2..=4).map(|seat| won(&h, &slot, seat)).collect();
    let answers = write_together(&h, &batch).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(Some(_)))), "{answers:?}");
    assert_eq!(transactions(&h, &batch).await, 1, "the three were one batch");

    let after = plans_per_connection(&h).await;
    let custom = |plans: &[[(i64, i64); 2]]| plans.iter().flatten().map(|(_, c)| c).sum::<i64>();
    let generic = |plans: &[[(i64, i64); 2]]| plans.iter().flatten().map(|(g, _)| g).sum::<i64>();
    assert_eq!(
        custom(&after),
        custom(&warmed),
        "a booking after the warm-up was planned afresh"
    );
    assert_eq!(
        generic(&after),
        generic(&warmed) + 2,
        "one single-row run and one batch, on generic plans"
    );
}

/// A booking's write locks no row of its segment or schedule (V20): while
/// a batch of bookings is written and not yet committed, another session
/// locks both rows `FOR UPDATE NOWAIT` at once, and a 加号 on the segment
/// completes without waiting for the write. With the foreign keys the
/// write held `FOR KEY SHARE` on both until its commit, and the `NOWAIT`
/// failed with `lock_not_available`.
#[tokio::test]
async fn a_booking_write_in_flight_locks_neither_its_segment_nor_its_schedule() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let schedule = h.schedules[sched::CARDIO_EXPERT_AM].schedule_id;
    let rows: Vec<BookingToWrite> = (1..=3).map(|seat| won(&h, &slot, seat)).collect();

    let mut writing = h.state.pool.get().await.unwrap();
    let tx = writing.transaction().await.unwrap();
    let written =
        slot_inventory::booking::queries::insert_bookings_with_events(&tx, &h.state.hospital, &rows)
            .await
            .unwrap();
    assert_eq!(written.len(), 3);

    let mut other = h.state.pool.get().await.unwrap();
    let probe = other.transaction().await.unwrap();
    for (table, id) in [("segments", slot.id), ("schedules", schedule)] {
        probe
            .query_one(
                &format!("SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE NOWAIT"),
                &[&id],
            )
            .await
            .unwrap_or_else(|e| panic!("{table}: the row is locked by the booking write: {e}"));
    }
    probe.rollback().await.unwrap();
    drop(other);

    let added = tokio::time::timeout(
        Duration::from_secs(10),
        slot_inventory::schedule::capacity::set_segment_capacity(
            &h.state,
            slot.id,
            &slot_inventory::schedule::capacity::CapacityChange { capacity: 13 },
        ),
    )
    .await
    .expect("the 加号 waited for the booking write in flight");
    added.unwrap();

    tx.commit().await.unwrap();
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM bookings WHERE segment_id = '{}'",
            slot.id
        ))
        .await,
        3
    );
}

/// Without the foreign keys, a segment or schedule that bookings refer to
/// is still never removed (V20's triggers): deleting, renumbering or
/// truncating either is refused with `restrict_violation`, and nothing
/// changes. A schedule is stopped instead.
#[tokio::test]
async fn a_segment_or_schedule_is_never_deleted_renumbered_or_truncated() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let booked = h.book_expert(Channel::Kiosk).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let schedule = h.schedules[sched::CARDIO_EXPERT_AM].schedule_id;
    let client = h.state.pool.get().await.unwrap();
    let attempts = [
        ("DELETE FROM segments WHERE id = $1", slot.id),
        (
            "UPDATE segments SET id = gen_random_uuid() WHERE id = $1",
            slot.id,
        ),
        ("DELETE FROM schedules WHERE id = $1", schedule),
        (
            "UPDATE schedules SET id = gen_random_uuid() WHERE id = $1",
            schedule,
        ),
    ];
    for (sql, id) in attempts {
        let e = client.execute(sql, &[&id]).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&jyt_db::tokio_postgres::error::SqlState::RESTRICT_VIOLATION),
            "{sql}: {e:?}"
        );
    }
    for table in ["segments", "schedules"] {
        let e = client
            .batch_execute(&format!("TRUNCATE {table} CASCADE"))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Some(&jyt_db::tokio_postgres::error::SqlState::RESTRICT_VIOLATION),
            "TRUNCATE {table}: {e:?}"
        );
    }
    assert_eq!(
        h.count(&format!("SELECT count(*) FROM segments WHERE id = '{}'", slot.id))
            .await,
        1
    );
    assert_eq!(
        h.count(&format!("SELECT count(*) FROM schedules WHERE id = '{schedule}'"))
            .await,
        1
    );
    let still = h.booking(&booked.booking_id).await;
    assert_eq!(still.status, BookingStatus::Held);
}

/// Lowering a segment's capacity below a seat whose booking is still being
/// written is refused, naming the seat: PostgreSQL does not show that
/// booking to the lowering (it takes no lock on the segment, V20, and it
/// is not committed), but Redis names its holder from the hold on. Seats
/// above a lowered capacity that are free are withdrawn before the commit,
/// and when the write lands every booking is within the capacity. Without
/// the Redis check the lowering to 3 succeeded and seat 4 was booked
/// beyond it.
#[tokio::test]
async fn a_capacity_is_not_lowered_below_a_seat_whose_booking_is_in_flight() {
    use slot_inventory::schedule::capacity::{CapacityChange, set_segment_capacity};

    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    for _ in 0..3 {
        h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    }

    // Booking writes wait behind this lock: the fourth booking's hold is
    // taken in Redis (seat 4) and its row is in flight.
    let mut blocker = h.state.pool.get().await.unwrap();
    let block = blocker.transaction().await.unwrap();
    block
        .batch_execute("LOCK TABLE bookings IN SHARE MODE")
        .await
        .unwrap();
    let fourth = Uuid::new_v4();
    let in_flight = tokio::spawn(slot_inventory::booking::service::book(
        h.state.clone(),
        book_request(&slot, fourth, Channel::Wechat, None),
        Uuid::new_v4().to_string().parse().unwrap(),
    ));
    let keys = h.segment_keys(&slot).await;
    let mut conn = h.state.redis.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let held: String = loop {
        let held: Option<String> = jyt_cache::redis::cmd("HGET")
            .arg(&keys.holders)
            .arg(fourth.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(held) = held {
            break held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fourth hold was never taken"
        );
        tokio::task::yield_now().await;
    };
    assert!(held.ends_with("|4"), "{held}");

    let refused = set_segment_capacity(&h.state, slot.id, &CapacityChange { capacity: 3 })
        .await
        .unwrap_err();
    assert_eq!(
        actix_web::ResponseError::status_code(&refused),
        actix_web::http::StatusCode::BAD_REQUEST
    );
    let message = refused.to_string();
    assert!(
        message.contains("capacity") && message.contains("seat 4"),
        "{message}"
    );
    assert_eq!(
        h.redis_free(&slot).await,
        8,
        "a refused lowering withdraws nothing"
    );

    set_segment_capacity(&h.state, slot.id, &CapacityChange { capacity: 5 })
        .await
        .unwrap();
    block.rollback().await.unwrap();
    let fourth_booking = in_flight.await.unwrap().unwrap().booking;
    assert_eq!(fourth_booking.seat_number, 4);
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM bookings b JOIN segments s ON s.id = b.segment_id
              WHERE s.id = '{}' AND b.live AND b.seat_no > s.capacity",
            slot.id
        ))
        .await,
        0,
        "every booking within the capacity"
    );
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM bookings WHERE segment_id = '{}' AND live",
            slot.id
        ))
        .await,
        4
    );
}

/// The withdrawal itself (`HoldScripts::withdraw_above`): below a held
/// seat it names the seat and changes nothing; otherwise the free seats
/// above the capacity leave the free list, the others keep their order.
#[tokio::test]
async fn withdrawing_seats_above_a_capacity_names_a_held_one_or_takes_the_free_ones_off_sale() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    for _ in 0..4 {
        h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    }
    let keys = h.segment_keys(&slot).await;
    assert_eq!(h.redis_free_seats(&slot).await, (5..=12).collect::<Vec<_>>());

    let named = h
        .state
        .scripts
        .withdraw_above(&h.state.redis, &keys, 3)
        .await
        .unwrap();
    assert_eq!(named, Some(4), "seat 4 is held");
    assert_eq!(
        h.redis_free_seats(&slot).await,
        (5..=12).collect::<Vec<_>>(),
        "nothing withdrawn"
    );

    let named = h
        .state
        .scripts
        .withdraw_above(&h.state.redis, &keys, 7)
        .await
        .unwrap();
    assert_eq!(named, None);
    assert_eq!(h.redis_free_seats(&slot).await, vec![5, 6, 7]);

    // A segment Redis does not have (forgotten, as after Redis is lost)
    // names no holder; PostgreSQL refuses the cut below its booked seat 4,
    // and the segment is loaded again with every free seat back.
    slot_inventory::booking::cache::invalidate_segment(&h.state, slot.id).await;
    let refused = slot_inventory::schedule::capacity::set_segment_capacity(
        &h.state,
        slot.id,
        &slot_inventory::schedule::capacity::CapacityChange { capacity: 3 },
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("seat 4"), "{refused}");
    assert_eq!(h.redis_free_seats(&slot).await, (5..=12).collect::<Vec<_>>());
    h.assert_consistent(&slot).await;
}

/// Copies of the hospital's bookings, cancelled (so no seat is taken
/// twice), until the table holds about `copies` times as many: a plan's
/// choice between reading the table whole and by key is then a real
/// day's, not an empty table's.
async fn fill_bookings(h: &Hospital, copies: i32) {
    let client = h.state.pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "SET statement_timeout = 0;
             DO $$
             DECLARE cols text;
             BEGIN
               SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) INTO cols
                 FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = 'bookings' AND is_generated = 'NEVER';
               EXECUTE format(
                 'INSERT INTO bookings (%s) SELECT %s FROM (
                    SELECT (jsonb_populate_record(b, jsonb_build_object(
                              ''id'', gen_random_uuid(), ''patient_id'', gen_random_uuid(),
                              ''idempotency_key'', gen_random_uuid()::text,
                              ''status'', ''cancelled'', ''cancelled_at'', now()))).*
                      FROM bookings b, generate_series(1, {copies})) c',
                 cols, cols);
             END $$;
             RESET statement_timeout"
        ))
        .await
        .unwrap();
}

/// A prepared statement as a connection keeps it: its name, its runs on
/// the generic plan and the custom plans made.
struct PreparedOn {
    name: String,
    generic: i64,
    custom: i64,
}

/// Every open connection asked for `statement`; also whether each is
/// back to `plan_cache_mode = auto`.
async fn prepared_on_each_connection(h: &Hospital, statement: &str) -> Vec<(Option<PreparedOn>, String)> {
    let clients = every_connection(h).await;
    let mut found = Vec::new();
    for client in &clients {
        let prepared = client
            .query_opt(
                "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
                &[&statement],
            )
            .await
            .unwrap()
            .map(|r| PreparedOn {
                name: r.get(0),
                generic: r.get(1),
                custom: r.get(2),
            });
        let mode: String = client
            .query_one("SHOW plan_cache_mode", &[])
            .await
            .unwrap()
            .get(0);
        found.push((prepared, mode));
    }
    found
}

/// The day's payments and check-ins come in small batches (3.5 and 3.8
/// rows on average in the load test's day), fewer than the ten rows a
/// generic plan guesses for an array, and PostgreSQL left to itself
/// planned most batches afresh (issue 20: 7,644 plans for 11,846 payment
/// batches, 5.3 s of its time). On a table of 4,000 bookings, eight
/// batches of two payments and then eight of two check-ins make no
/// custom plan on any connection; each connection is back to
/// `plan_cache_mode = auto` afterwards; and the generic plan each kept
/// reads bookings by key, never whole.
#[tokio::test]
async fn small_payment_and_check_in_batches_run_on_generic_plans_that_read_bookings_by_key() {
    use slot_inventory::booking::lifecycle::{self, CheckInRequest, ConfirmRequest, PaymentMethod};
    use slot_inventory::booking::queries::{CHECK_INS_IF_DUE, CONFIRM_PAYMENTS_WITH_EVENTS};
    let h = Hospital::start(beijing(2, 9, 0), 20, ALL_COMMON).await;
    // The cardiology general clinic has a fee: each booking is held until paid.
    let slot = h.segment(sched::CARDIO_GENERAL_AM, 0);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap());
    }
    fill_bookings(&h, 250).await;
    assert!(h.count("SELECT count(*) FROM bookings").await >= 4_000);

    for (pair, two) in held.chunks(2).enumerate() {
        let pays: Vec<ConfirmRequest> = (0..2)
            .map(|i| ConfirmRequest {
                payment_reference: format!("pair-{pair}-{i}"),
                payment_method: PaymentMethod::SelfPay,
                amount_fen: None,
            })
            .collect();
        let paid = futures::future::join_all(
            two.iter()
                .zip(&pays)
                .map(|(b, pay)| lifecycle::confirm(&h.state, &b.booking_id, pay)),
        )
        .await;
        assert!(paid.iter().all(Result::is_ok), "{paid:?}");
    }
    h.clock.set(beijing(0, 7, 30));
    for two in held.chunks(2) {
        let asks: Vec<CheckInRequest> = two
            .iter()
            .map(|b| CheckInRequest {
                pickup_code: b.pickup_code.clone(),
                patient_id: Some(b.patient_id),
            })
            .collect();
        let checked_in = futures::future::join_all(
            two.iter()
                .zip(&asks)
                .map(|(b, ask)| lifecycle::check_in(&h.state, &b.booking_id, ask)),
        )
        .await;
        assert!(checked_in.iter().all(Result::is_ok), "{checked_in:?}");
    }
    assert_eq!(
        h.count("SELECT count(*) FROM bookings WHERE status = 'checked_in'")
            .await,
        16
    );

    let hospital = h.state.hospital.as_str();
    for (statement, arguments) in [
        (
            CONFIRM_PAYMENTS_WITH_EVENTS.as_str(),
            format!(
                "ARRAY[gen_random_uuid()], ARRAY['r'], ARRAY['self_pay'], ARRAY[NULL::int8], ARRAY[now()],
                 ARRAY[gen_random_uuid()], 'booking.confirmed', '{hospital}'"
            ),
        ),
        (
            CHECK_INS_IF_DUE.as_str(),
            format!(
                "ARRAY[gen_random_uuid()], ARRAY['000000'], ARRAY[NULL::uuid], ARRAY[now()],
                 ARRAY[gen_random_uuid()], 3, 60, 'booking.checked_in', '{hospital}'"
            ),
        ),
    ] {
        let on_each = prepared_on_each_connection(&h, statement).await;
        let runs: i64 = on_each.iter().flat_map(|(p, _)| p).map(|p| p.generic).sum();
        let custom: i64 = on_each.iter().flat_map(|(p, _)| p).map(|p| p.custom).sum();
        assert_eq!(runs, 8, "eight batches of two, each on the generic plan");
        assert_eq!(custom, 0, "a small batch was planned afresh");
        assert!(
            on_each.iter().all(|(_, mode)| mode == "auto"),
            "a connection was left forcing generic plans: {:?}",
            on_each.iter().map(|(_, m)| m).collect::<Vec<_>>()
        );
        drop(on_each);
        // The plan a connection keeps, as its next batch would run it.
        let kept = prepared_on_each_connection(&h, statement)
            .await
            .into_iter()
            .find_map(|(p, _)| p)
            .unwrap();
        let on = client_with(&h, &kept.name).await;
        on.batch_execute("SET plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        let plan = jyt_testkit::explain(&on, &format!("EXECUTE {}({arguments})", kept.name)).await;
        on.batch_execute("RESET plan_cache_mode").await.unwrap();
        let reads: Vec<&String> = plan.iter().filter(|l| l.contains(" on bookings")).collect();
        assert!(!reads.is_empty(), "no read of bookings in\n{}", plan.join("\n"));
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan on bookings")),
            "bookings read whole:\n{}",
            plan.join("\n")
        );
    }
}

/// The pooled connection that has prepared `name`.
async fn client_with(h: &Hospital, name: &str) -> jyt_db::deadpool_postgres::Object {
    let mut clients = every_connection(h).await;
    let mut found = None;
    for (i, client) in clients.iter().enumerate() {
        if client
            .query_opt("SELECT 1 FROM pg_prepared_statements WHERE name = $1", &[&name])
            .await
            .unwrap()
            .is_some()
        {
            found = Some(i);
        }
    }
    let at = found.expect("a connection has prepared the statement");
    clients.swap_remove(at)
}
