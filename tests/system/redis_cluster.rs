//! The services unchanged on a real 3-master Redis Cluster: a concurrent
//! booking race across hospitals through the gateway (no CROSSSLOT, no
//! oversell), each WeChat winner told of its booking (the notifier's
//! batches: owners under the hospitals' tags, scripts in one `{notify}`
//! pipeline), then the master holding one hospital's keys restarts empty
//! and the rebuild loses no booking.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jyt_system_tests::redis_cluster::RedisCluster;
use jyt_system_tests::{ALL_SEATS_COMMON, Callback, TestCity, eventually};
use tokio::sync::Barrier;

const SEATS: i32 = 15;
const ATTEMPTS_PER_HOSPITAL: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookings_race_across_hospitals_on_a_redis_cluster_and_survive_a_master_restart() {
    let mut cluster = RedisCluster::start().await;
    let callback = Callback::start().await;
    let urls = cluster.urls();
    let on_cluster = [("REDIS__URLS", urls.as_str()), ("REDIS__CLUSTER", "true")];
    let mut hospital_settings: Vec<(&str, &str)> = on_cluster.to_vec();
    hospital_settings.extend_from_slice(ALL_SEATS_COMMON);
    let mut gateway_settings: Vec<(&str, &str)> = on_cluster.to_vec();
    gateway_settings.extend_from_slice(&[
        ("UPSTREAM__TIMEOUT_MS", "30000"),
        ("UPSTREAM__QUEUE_TIMEOUT_MS", "30000"),
        ("CARD_ISSUING__TIMEOUT_MS", "30000"),
        ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
        ("NOTIFICATIONS__POLL_MS", "20"),
    ]);
    let hospitals = ["pumch", "bjh", "tiantan"];
    let city = Arc::new(TestCity::spawn_configured(&hospitals, &gateway_settings, &hospital_settings).await);

    let mut slots = Vec::new();
    for i in 0..hospitals.len() {
        // CT is free: confirmed at once.
        slots.push(city.hospital(i).seed_visit_day(SEATS).await[10].clone());
    }
    let patients = city
        .cards
        .register_many(ATTEMPTS_PER_HOSPITAL * hospitals.len())
        .await;
    let barrier = Arc::new(Barrier::new(patients.len()));
    let mut tasks = Vec::new();
    for (i, p) in patients.iter().enumerate() {
        let (city, barrier, slot, person) = (
            city.clone(),
            barrier.clone(),
            slots[i % slots.len()].clone(),
            p.person_id,
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let res = city
                .book(
                    &slot,
                    person,
                    ["wechat", "kiosk", "app"][i % 3],
                    &format!("rc-{i}"),
                )
                .await;
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap();
            (status, body)
        }));
    }
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    let mut told: Vec<String> = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        *by_status.entry(status).or_default() += 1;
        match status {
            201 if body["owner_app"] == "wechat" => {
                told.push(body["booking_id"].as_str().unwrap().to_owned())
            }
            201 => {}
            409 => assert_eq!(body["code"], "SLOT_SOLD_OUT", "{body}"),
            other => panic!("unexpected answer {other} (a CROSSSLOT error would be a 5xx): {body}"),
        }
    }
    assert_eq!(
        by_status.get(&201),
        Some(&(SEATS as usize * hospitals.len())),
        "{by_status:?}"
    );
    for (i, slot) in slots.iter().enumerate() {
        let h = city.hospital(i);
        assert_eq!(h.live_bookings(slot).await, (i64::from(SEATS), i64::from(SEATS)));
        assert!(h.oversold_segments().await.is_empty());
        assert_eq!(h.redis_segment(slot).await.1, h.pg_holders(slot).await);
    }
    // Every WeChat winner is told (CT is free: confirmed at once).
    assert!(!told.is_empty(), "{by_status:?}");
    callback
        .wait_for("every WeChat winner told", Duration::from_secs(30), |seen| {
            told.iter()
                .all(|b| {
                    seen.iter().any(|r| {
                        r.status == 200 && r.notice_type() == "booking.confirmed" && r.booking_id() == b
                    })
                })
                .then_some(())
        })
        .await;

    // The master holding pumch's keys crashes and comes back empty.
    let port = cluster
        .master_of("{h:pumch}")
        .await
        .expect("a master serves pumch");
    cluster.restart_empty(port).await;
    let h = city.hospital(0);
    let slot = slots[0].clone();
    // Bookings are refused cleanly while pumch rebuilds from PostgreSQL,
    // then the sold-out segment is sold out again: nothing was lost or
    // handed out twice.
    let late = city.patient().await;
    eventually(
        Duration::from_secs(60),
        "pumch answers from a rebuilt Redis",
        || {
            // One request, retried with its Idempotency-Key as a client should.
            let (city, slot, key) = (city.clone(), slot.clone(), "after-restart");
            async move {
                let res = city.book(&slot, late, "wechat", key).await;
                let status = res.status().as_u16();
                // 503 while rebuilding; 429 when this loop outpaces the
                // patient's own rate limit.
                assert!(matches!(status, 409 | 429 | 503), "during the rebuild: {status}");
                let body: serde_json::Value = res.json().await.ok()?;
                (status == 409 && body["code"] == "SLOT_SOLD_OUT").then_some(())
            }
        },
    )
    .await;
    assert_eq!(h.live_bookings(&slot).await, (i64::from(SEATS), i64::from(SEATS)));
    assert!(h.oversold_segments().await.is_empty());
    assert_eq!(h.redis_segment(&slot).await.1, h.pg_holders(&slot).await);
}
