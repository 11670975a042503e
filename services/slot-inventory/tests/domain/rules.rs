//! Release time and the per-person rules, each with its error code.

use jyt_domain::Channel;
use uuid::Uuid;

use crate::helpers::{Hospital, beijing, code, sched, visit_date};

#[tokio::test]
async fn before_the_release_instant_a_booking_answers_not_yet_released_then_books_at_0830() {
    // Day D+7 opens at 08:30 on day D: one minute before, it is closed.
    let h = Hospital::start(beijing(7, 8, 29), 3, &[]).await;
    let slot = h.segment(sched::CT_AM, 0);
    let err = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap_err();
    assert_eq!(code(&err), "NOT_YET_RELEASED");
    let slot_inventory::SlotError::NotYetReleased(at) = err else {
        unreachable!()
    };
    assert_eq!(at, beijing(7, 8, 30));
    assert_eq!(at, h.state.settings.policy.release_at(visit_date()));

    h.advance(1);
    let booked = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    // CT has no fee: confirmed at once, no hold.
    assert_eq!(booked.status, jyt_domain::BookingStatus::Confirmed);
    assert!(booked.hold_deadline.is_none());
    assert_eq!(booked.visit_number, 1);
}

#[tokio::test]
async fn one_booking_per_schedule_one_per_department_and_two_per_day() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let patient = Uuid::new_v4();
    h.book(&h.segment(sched::CARDIO_EXPERT_AM, 0), patient, Channel::Wechat)
        .await
        .unwrap();

    let same_schedule = h
        .book(&h.segment(sched::CARDIO_EXPERT_AM, 3), patient, Channel::Wechat)
        .await;
    assert_eq!(code(&same_schedule.unwrap_err()), "SCHEDULE_ALREADY_BOOKED");
    let same_department = h
        .book(&h.segment(sched::CARDIO_GENERAL_AM, 0), patient, Channel::Wechat)
        .await;
    assert_eq!(code(&same_department.unwrap_err()), "DEPARTMENT_DAILY_LIMIT");
    let same_segment = h
        .book(&h.segment(sched::CARDIO_EXPERT_AM, 0), patient, Channel::Kiosk)
        .await;
    assert_eq!(code(&same_segment.unwrap_err()), "ALREADY_BOOKED");

    h.book(&h.segment(sched::PEDS_EXPERT_AM, 0), patient, Channel::Wechat)
        .await
        .unwrap();
    let third = h
        .book(&h.segment(sched::ENDO_AM, 0), patient, Channel::Wechat)
        .await;
    assert_eq!(code(&third.unwrap_err()), "DAILY_LIMIT");

    // Nothing of the refused attempts reached PostgreSQL.
    let client = h.state.pool.get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM bookings WHERE patient_id = $1", &[&patient])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn visit_numbers_follow_booking_order_within_the_schedule() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let mut numbers = Vec::new();
    for segment in [4, 0, 2, 0] {
        let b = h
            .book(&h.segment(sched::CT_AM, segment), Uuid::new_v4(), Channel::Kiosk)
            .await
            .unwrap();
        numbers.push(b.visit_number);
    }
    assert_eq!(numbers, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_seat_postgresql_already_has_is_refused_leaving_nothing_and_the_connection_clean() {
    // One connection: a write path that left its transaction open (or
    // aborted) would break every statement after it.
    let h = Hospital::start(beijing(2, 9, 0), 1, &[("POSTGRES__POOL_MAX_SIZE", "1")]).await;
    let slot = h.segment(sched::CT_AM, 0);
    let first = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();

    // Redis wrongly offers the taken seat again: the hold succeeds, and the
    // pipelined insert is refused by the seat's unique index.
    let info = slot_inventory::booking::cache::segment_info(&h.state, slot.id)
        .await
        .unwrap();
    let keys = h.state.keys.segment(&info);
    let mut conn = h.state.redis.clone();
    let () = jyt_cache::redis::pipe()
        .lpush(&keys.free, 1)
        .ignore()
        .hincr(&keys.pools, &first.pool, 1)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(h.redis_free(&slot).await, 1);

    let second = h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await;
    assert_eq!(
        code(&second.unwrap_err()),
        "SLOT_SOLD_OUT",
        "refreshed from PostgreSQL"
    );
    assert_eq!(h.redis_free(&slot).await, 0, "Redis repaired");

    let client = h.state.pool.get().await.unwrap();
    let bookings: i64 = client
        .query_one("SELECT count(*) FROM bookings WHERE segment_id = $1", &[&slot.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bookings, 1, "nothing written for the refused seat");
    drop(client);
    // Seen from another connection, the pooled one is idle, not idle in a
    // transaction (open or aborted).
    assert_eq!(
        h.pooled_connection_state().await,
        "idle",
        "no transaction left open"
    );
    assert_eq!(
        h.event_types().await,
        ["booking.confirmed"],
        "one event, the first booking's"
    );

    // The same (only) connection books the next seat.
    let next = h
        .book(&h.segment(sched::CT_AM, 1), Uuid::new_v4(), Channel::Kiosk)
        .await
        .unwrap();
    assert_eq!(next.status, jyt_domain::BookingStatus::Confirmed);
}
