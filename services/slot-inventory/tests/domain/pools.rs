//! Channel pools (号源池): a channel's share first, then the common rest;
//! the referral pool only with a referral; unused shares merge at D-1 15:00.

use jyt_cache::redis;
use jyt_domain::Channel;
use uuid::Uuid;

use slot_inventory::booking::lifecycle;
use slot_inventory::booking::service::BookOutcome;
use slot_inventory::error::SlotError;

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
async fn the_referral_pool_needs_a_referral_the_script_checks_and_uses_once() {
    let h = Hospital::start(
        beijing(3, 9, 0),
        10,
        &[
            ("POLICY__POOL_SHARES__REFERRAL", "20"),
            ("POLICY__POOL_SHARES__WECHAT", "30"),
            ("POLICY__POOL_SHARES__WINDOW", "0"),
            // Two radiology visits a day, so a second use meets the
            // referral rule rather than the department's.
            ("POLICY__MAX_PER_PERSON_PER_DEPARTMENT_PER_DAY", "2"),
        ],
    )
    .await;
    let slot = h.segment(sched::CT_AM, 0);
    let afternoon = h.segment(sched::CT_AM + 1, 0);
    let patient = Uuid::new_v4();
    let refusal = |r: Result<_, SlotError>| code(&r.map(|_: BookOutcome| ()).unwrap_err());
    let missing = h.book_via(&slot, patient, Channel::Referral, None).await;
    assert_eq!(refusal(missing), "INVALID_FIELD");
    // The old free string is no longer a referral.
    let free = h
        .book_via(&slot, patient, Channel::Referral, Some("CH-2026-0001"))
        .await;
    assert_eq!(refusal(free), "INVALID_FIELD");
    let unknown = Uuid::new_v4().to_string();
    let unknown = h
        .book_via(&slot, patient, Channel::Referral, Some(&unknown))
        .await;
    assert_eq!(refusal(unknown), "REFERRAL_UNKNOWN");
    let cardiology = h.referral(patient, "cardio", 60).await.to_string();
    let wrong_department = h
        .book_via(&slot, patient, Channel::Referral, Some(&cardiology))
        .await;
    assert_eq!(refusal(wrong_department), "REFERRAL_NOT_FOR_DEPARTMENT");
    let radiology = h.referral(patient, "radiology", 60).await.to_string();
    let someone_else = h
        .book_via(&slot, Uuid::new_v4(), Channel::Referral, Some(&radiology))
        .await;
    assert_eq!(refusal(someone_else), "REFERRAL_OF_ANOTHER_PATIENT");
    // A referral entitles to the referral pool only.
    let wechat = h
        .book_via(&slot, patient, Channel::Wechat, Some(&radiology))
        .await;
    assert_eq!(refusal(wechat), "INVALID_FIELD");
    assert!(
        !h.event_types().await.iter().any(|e| e.starts_with("booking.")),
        "nothing written"
    );

    let referred = h
        .book_via(&slot, patient, Channel::Referral, Some(&radiology))
        .await
        .unwrap()
        .booking;
    assert_eq!(referred.pool, "referral");
    assert_eq!(referred.referral_id.as_deref(), Some(radiology.as_str()));
    let again = h.segment(sched::CT_AM, 1);
    let used = h
        .book_via(&afternoon, patient, Channel::Referral, Some(&radiology))
        .await;
    assert_eq!(refusal(used), "REFERRAL_USED");

    // Cancelled, the referral is free again; after a Redis rebuild too.
    lifecycle::cancel(
        &h.state,
        &referred.booking_id,
        &lifecycle::CancelRequest { patient_id: patient },
    )
    .await
    .unwrap();
    slot_inventory::booking::cache::rebuild(&h.state).await.unwrap();
    let rebooked = h
        .book_via(&again, patient, Channel::Referral, Some(&radiology))
        .await
        .unwrap()
        .booking;
    assert_eq!(rebooked.pool, "referral");
    slot_inventory::booking::cache::rebuild(&h.state).await.unwrap();
    let key = h.state.keys.referral(radiology.parse().ok());
    let used_by: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("used_by")
        .query_async(&mut h.state.redis.clone())
        .await
        .unwrap();
    assert_eq!(
        used_by,
        Some(rebooked.booking_id.id.to_string()),
        "a rebuild keeps the use"
    );
    let types = h.event_types().await;
    assert_eq!(
        types.iter().filter(|e| *e == "referral.used").count(),
        2,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|e| *e == "referral.issued").count(),
        2,
        "{types:?}"
    );

    // Past its expiry, a referral books nothing.
    let late = Uuid::new_v4();
    let expiring = h.referral(late, "radiology", 30).await.to_string();
    h.advance(31);
    let expired = h.book_via(&slot, late, Channel::Referral, Some(&expiring)).await;
    assert_eq!(refusal(expired), "REFERRAL_EXPIRED");
    h.assert_consistent(&slot).await;
    h.assert_consistent(&again).await;
    h.assert_consistent(&afternoon).await;
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

/// The next message on the seats channel, within a deadline.
async fn next_seats_message(messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin)) -> String {
    use futures::StreamExt;
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
        .await
        .expect("a message on the seats channel within 5 s")
        .expect("the subscription open");
    msg.get_payload().unwrap()
}

/// What the gateways' sold-out marks (services/gateway/src/soldout.rs) are
/// fed: a "book" attempt that finds nothing on offer for its channel
/// before the merge publishes that channel's mark with the merge time;
/// seats kept for a waitlist put back on sale publish "free" (which clears
/// every mark of the segment); after the merge only the last seat's going
/// is published, for every channel.
#[tokio::test]
async fn a_channel_with_nothing_on_offer_is_published_until_the_merge_and_seats_put_on_sale_clear_it() {
    use slot_inventory::booking::cache;

    // 10 seats: wechat 4, kiosk 3, phone114 1, common 2.
    let h = Hospital::start(beijing(3, 9, 0), 10, &[]).await;
    let slot = h.segment(sched::CT_AM, 0);
    let info = cache::segment_info(&h.state, slot.id).await.unwrap();
    let keys = h.state.keys.segment(&info);
    // A kiosk booking first loads the segment (whose load is published).
    h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap();
    let client = redis::Client::open(jyt_testkit::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&keys.seats_channel).await.unwrap();
    let mut messages = pubsub.into_on_message();

    for _ in 0..6 {
        h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    }
    let err = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap_err();
    assert_eq!(code(&err), "SLOT_SOLD_OUT");
    let mut conn = h.state.redis.clone();
    let merge_at: i64 = redis::cmd("HGET")
        .arg(&keys.meta)
        .arg("merge_at")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(merge_at, beijing(1, 15, 0).timestamp(), "D-1 15:00");
    assert_eq!(
        next_seats_message(&mut messages).await,
        format!("sold|{}|wechat|{merge_at}", keys.slot),
        "the first message of the day is WeChat's mark"
    );
    // The kiosks' pool is theirs still (their second seat of three).
    assert_eq!(
        h.book(&slot, Uuid::new_v4(), Channel::Kiosk).await.unwrap().pool,
        "kiosk"
    );

    // One kiosk seat kept back for a waitlist (as a release for the line
    // does: off the summary), then put on sale with nobody waiting.
    redis::pipe()
        .hset(&keys.meta, "kept:kiosk", 1)
        .hincr(&keys.availability, &keys.availability_field, -1)
        .hincr(&keys.availability_shares, keys.segment.to_string(), -1)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let now = h.state.clock.now().timestamp();
    let freed = h
        .state
        .scripts
        .unreserve(&h.state.redis, &keys, now, &[])
        .await
        .unwrap();
    assert_eq!(freed, 1);
    assert_eq!(
        next_seats_message(&mut messages).await,
        format!("free|{}", keys.slot)
    );
    h.assert_consistent(&slot).await;

    // After the merge WeChat takes what is left (a kiosk seat and 114's);
    // no channel mark, only the last seat's going.
    h.clock.set(beijing(1, 15, 0));
    for _ in 0..2 {
        h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap();
    }
    assert_eq!(
        next_seats_message(&mut messages).await,
        format!("sold|{}", keys.slot)
    );
    let err = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap_err();
    assert_eq!(code(&err), "SLOT_SOLD_OUT");
    assert_eq!(
        next_seats_message(&mut messages).await,
        format!("sold|{}", keys.slot),
        "a loser after the merge says the segment is sold out, for everyone"
    );
    h.assert_consistent(&slot).await;
}
