//! Channel pools (号源池): a channel's share first, then the common rest;
//! the referral pool only with a referral; unused shares merge at D-1 15:00.

use jyt_domain::Channel;
use uuid::Uuid;

use crate::helpers::{Hospital, beijing, code, sched};

#[tokio::test]
async fn a_channel_takes_its_pool_then_common_and_other_pools_open_only_after_the_merge() {
    // 10 seats: wechat 40 % = 4, kiosk 30 % = 3, phone114 10 % = 1,
    // window/app/referral 5 % = 0 each, common the remaining 2.
    let h = Hospital::start(beijing(3, 9, 0), 10, &[]).await;
    let slot = h.segment(sched::CT_AM, 0);
    let mut pools = Vec::new();
    for _ in 0..6 {
        pools.push(h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap().pool);
    }
    assert_eq!(
        pools,
        ["wechat", "wechat", "wechat", "wechat", "common", "common"]
    );
    // WeChat's share and the common rest are gone; kiosk's are not.
    let err = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap_err();
    assert_eq!(code(&err), "SLOT_SOLD_OUT");
    assert_eq!(
        h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap().pool,
        "kiosk"
    );

    // At D-1 15:00 unused shares open to every channel.
    h.clock.set(beijing(1, 15, 0));
    let merged = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    assert_eq!(merged.pool, "kiosk");
    let mut rest = 0;
    while h.book(&slot, Uuid::new_v4(), Channel::App).await.is_ok() {
        rest += 1;
    }
    assert_eq!(rest, 2, "one kiosk seat and the phone114 seat were left");
    let client = h.state.pool.get().await.unwrap();
    let live: i64 = client
        .query_one("SELECT count(*) FROM bookings WHERE segment_id = $1", &[&slot.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 10, "every seat sold once, none twice");
}

#[tokio::test]
async fn the_referral_pool_needs_a_referral() {
    let h = Hospital::start(
        beijing(3, 9, 0),
        10,
        &[
            ("POLICY__POOL_SHARES__REFERRAL", "20"),
            ("POLICY__POOL_SHARES__WECHAT", "30"),
            ("POLICY__POOL_SHARES__WINDOW", "0"),
        ],
    )
    .await;
    let slot = h.segment(sched::CT_AM, 0);
    let missing = h.book_via(&slot, Uuid::new_v4(), Channel::Referral, None).await;
    let err = missing.unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    assert!(err.to_string().contains("referral_id"), "{err}");
    let referred = h
        .book_via(&slot, Uuid::new_v4(), Channel::Referral, Some("CH-2026-0001"))
        .await
        .unwrap()
        .booking;
    assert_eq!(referred.pool, "referral");
    assert_eq!(referred.referral_id.as_deref(), Some("CH-2026-0001"));
}

#[tokio::test]
async fn a_policy_change_moves_the_release_of_unreleased_schedules_only() {
    let h = Hospital::start(beijing(7, 9, 0), 2, &[]).await;
    let client = h.state.pool.get().await.unwrap();
    // Released an hour ago (D-7 08:30); a new 3-day window must not close it.
    let mut policy = h.state.settings.policy.clone();
    policy.window_days = 3;
    slot_inventory::schedule::queries::apply_release_policy(&client, &policy, h.clock.now())
        .await
        .unwrap();
    let release: chrono::DateTime<chrono::Utc> = client
        .query_one("SELECT min(release_at) FROM schedules", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(release, beijing(7, 8, 30));

    // Earlier, before the release, the same change moves it to D-3 08:30.
    h.clock.set(beijing(8, 9, 0));
    slot_inventory::schedule::queries::apply_release_policy(&client, &policy, h.clock.now())
        .await
        .unwrap();
    let release: chrono::DateTime<chrono::Utc> = client
        .query_one("SELECT min(release_at) FROM schedules", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(release, beijing(3, 8, 30));
}
