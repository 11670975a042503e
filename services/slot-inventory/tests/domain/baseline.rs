//! The load test's baseline (`booking.lock = "postgres"`) must be a fair
//! opponent: the same rules and the same no-oversell guarantee, decided by
//! row locks instead of Redis.

use jyt_domain::Channel;
use uuid::Uuid;

use crate::helpers::{Hospital, beijing, code, sched};

#[tokio::test]
async fn row_locks_alone_sell_each_seat_once_and_keep_the_rules() {
    let h = Hospital::start(
        beijing(3, 9, 0),
        10,
        // Every attempt waits for the row lock holding a connection: on a
        // loaded machine the default 2 s wait for a connection can pass.
        &[
            ("BOOKING__LOCK", "postgres"),
            ("POSTGRES__POOL_MAX_SIZE", "8"),
            ("POSTGRES__WAIT_TIMEOUT_MS", "60000"),
            ("POSTGRES__STATEMENT_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let slot = h.segment(sched::CT_AM, 0);
    let mut tasks = Vec::new();
    for i in 0..120 {
        let state = h.state.clone();
        let slot = slot.clone();
        tasks.push(tokio::spawn(async move {
            let channel = [Channel::Wechat, Channel::Kiosk, Channel::Phone114][i % 3];
            let req = crate::helpers::book_request(&slot, Uuid::new_v4(), channel, None);
            slot_inventory::booking::service::book_with_postgres_lock(
                state,
                req,
                format!("k{i}").parse().unwrap(),
            )
            .await
        }));
    }
    let mut booked = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => booked.push(o.booking),
            Err(e) => assert_eq!(code(&e), "SLOT_SOLD_OUT", "{e}"),
        }
    }
    // wechat 4 + kiosk 3 + phone114 1 + common 2: every seat reachable by
    // these channels before the merge.
    assert_eq!(booked.len(), 10);
    let mut seats: Vec<i32> = booked.iter().map(|b| b.seat_number).collect();
    seats.sort_unstable();
    assert_eq!(seats, (1..=10).collect::<Vec<_>>());
    let mut visits: Vec<i32> = booked.iter().map(|b| b.visit_number).collect();
    visits.sort_unstable();
    assert_eq!(visits, (1..=10).collect::<Vec<_>>());

    let patient = Uuid::new_v4();
    h.book(&h.segment(sched::CARDIO_EXPERT_AM, 0), patient, Channel::Wechat)
        .await
        .unwrap();
    let err = h
        .book(&h.segment(sched::CARDIO_GENERAL_AM, 0), patient, Channel::Wechat)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DEPARTMENT_DAILY_LIMIT");
}
