//! At least once, everywhere, with real services: the hospital's outbox
//! relay dies between `XADD` and moving its position on (a trigger makes
//! the move fail, over and over, so every event goes out several times), and the gateway — with its notifier — is killed while a notice
//! is in flight and others wait their turn, then started again. Every
//! event still reaches channel-accounting, applied once; every notice a
//! channel is owed reaches its callback at least once (counted by booking
//! and notice type); nothing stays unpublished or scheduled.

#![expect(clippy::unwrap_used, reason = "test helpers: a failure is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jyt_domain::time::Clock;
use jyt_system_tests::callback::Received;
use jyt_system_tests::{
    ALL_SEATS_COMMON, Callback, Route, TestHospital, eventually, signed, spawn_accounting, spawn_cards,
    start_gateway,
};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const RELAY_DIES_AFTER_XADD: &str = "
    CREATE FUNCTION relay_dies() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the relay died between XADD and committing its position'; END $$;
    CREATE CONSTRAINT TRIGGER relay_dies AFTER UPDATE ON outbox_relay
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION relay_dies();";

async fn pg(url: &str) -> jyt_db::tokio_postgres::Client {
    let (client, connection) = jyt_db::tokio_postgres::connect(url, jyt_db::tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn killing_the_relay_and_the_notifier_mid_run_loses_no_event_and_no_notice() {
    let started = Instant::now();
    let prefix = jyt_testkit::fresh_redis_prefix();
    let callback = Callback::start().await;
    let h = TestHospital::spawn_with("xuanwu", &prefix, ALL_SEATS_COMMON, Clock::System).await;
    let cards = spawn_cards(&prefix).await;
    let (accounting_url, accounting_db, _token) = spawn_accounting(&prefix).await;
    let routes = [Route {
        id: h.id.as_str(),
        base_url: &h.base_url,
        district: "xicheng",
        level: "tertiary",
    }];
    // A notice taken by a notifier that dies is sent again after
    // `lease_ms`; its stream entries are re-read by the restarted one.
    let gateway_settings = [
        ("CHANNEL_APPS__WECHAT__CALLBACK_URL", callback.url.as_str()),
        ("NOTIFICATIONS__POLL_MS", "20"),
        ("NOTIFICATIONS__BACKOFF_BASE_MS", "50"),
        ("NOTIFICATIONS__TIMEOUT_MS", "2000"),
        ("NOTIFICATIONS__LEASE_MS", "3500"),
        ("NOTIFICATIONS__CLAIM_IDLE_MS", "1000"),
    ];
    let gateway = start_gateway(&routes, &prefix, &cards.base_url, 1000, &gateway_settings).await;
    let slots = h.seed_visit_day(10).await;
    let http = reqwest::Client::new();
    let _ = accounting_url;

    // The relay now dies after every XADD, before its mark commits (a
    // deferred trigger refuses the COMMIT): the rows go out again.
    h.sql(RELAY_DIES_AFTER_XADD).await;
    // Each answer takes longer than the notifier waits (TIMEOUT_MS): a
    // notice is in flight when the gateway dies, however slowly the kill
    // comes on a busy machine. (With 1.5 s, a kill later than that let the
    // first send complete and nothing was owed again.) Either way the
    // notice is owed again: by the lease running out after the kill, or
    // by the timeout's retry if the kill came late.
    callback.set_delay(Duration::from_secs(10));

    // Six bookings, four of them paid (self-pay, through the channel).
    let mut bookings = Vec::new();
    for i in 0..6 {
        let patient = cards.register().await;
        let body = json!({ "slot_id": slots[0].to_string(), "card_number": patient.card_number });
        let res = signed(
            &http,
            &gateway.url,
            "wechat",
            Method::POST,
            "/v1/bookings",
            Some(&body),
        )
        .header("Idempotency-Key", format!("df-{i}"))
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 201);
        let booking: Value = res.json().await.unwrap();
        if i < 4 {
            let id = booking["booking_id"].as_str().unwrap().to_owned();
            let pay = json!({ "payment_method": "self_pay", "payment_reference": format!("tx{i}{}", Uuid::new_v4().simple()), "amount_fen": booking["fee_fen"] });
            let res = signed(
                &http,
                &gateway.url,
                "wechat",
                Method::POST,
                &format!("/v1/bookings/{id}/payments"),
                Some(&pay),
            )
            .send()
            .await
            .unwrap();
            assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        }
        bookings.push((patient, booking));
    }
    let paid: Vec<String> = bookings[..4]
        .iter()
        .map(|(_, b)| b["booking_id"].as_str().unwrap().to_owned())
        .collect();

    // The first notices reach the (slow) callback: kill the gateway while
    // it waits for their answers, with other notices still scheduled.
    eventually(Duration::from_secs(20), "a notice in flight", || async {
        (!callback.received().is_empty()).then_some(())
    })
    .await;
    gateway.kill().await;
    let in_flight = callback.received();

    // While no notifier runs, two paid bookings are cancelled at the
    // hospital (a window): cancellations and refunds to tell.
    let cancelled = &bookings[..2];
    for (patient, booking) in cancelled {
        let id = booking["booking_id"].as_str().unwrap();
        let res = h
            .http()
            .post(format!("{}/v1/bookings/{id}/cancel", h.base_url))
            .json(&json!({ "patient_id": patient.person_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    // Let the dying relay publish everything a few times over.
    let stream = format!("{prefix}:events:slot-inventory");
    let conn = h.state.redis.clone();
    let outbox_rows: i64 = h
        .state
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    eventually(
        Duration::from_secs(30),
        "every row on the stream twice",
        || async {
            let len: i64 = jyt_cache::redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut conn.clone())
                .await
                .ok()?;
            (len >= 2 * outbox_rows).then_some(())
        },
    )
    .await;
    h.sql("DROP TRIGGER relay_dies ON outbox_relay; DROP FUNCTION relay_dies();")
        .await;

    // The gateway comes back (same consumer name, as a restarted pod).
    let gateway = start_gateway(&routes, &prefix, &cards.base_url, 1000, &gateway_settings).await;
    callback.set_delay(Duration::ZERO);

    // Every notice owed, by booking and type, at least once.
    let mut owed: BTreeSet<(String, String)> = paid
        .iter()
        .map(|b| (b.clone(), "booking.confirmed".to_owned()))
        .collect();
    for (_, b) in cancelled {
        let b = b["booking_id"].as_str().unwrap().to_owned();
        for kind in ["booking.cancelled", "refund.instruction", "refund.issued"] {
            owed.insert((b.clone(), kind.to_owned()));
        }
    }
    callback
        .wait_for("every notice owed", Duration::from_secs(60), |seen| {
            let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
            for r in seen {
                *counts
                    .entry((r.booking_id().to_owned(), r.notice_type().to_owned()))
                    .or_default() += 1;
            }
            owed.iter().all(|k| counts.contains_key(k)).then_some(())
        })
        .await;
    for r in callback.delivered() {
        assert!(r.signed_by("wechat"));
    }
    // Each notice cut off mid-send was taken, never recorded: once its
    // lease ran out, the restarted notifier sent it again.
    let cut_off: BTreeSet<String> = in_flight.iter().map(Received::notice_id).collect();
    callback
        .wait_for(
            "every cut-off notice sent again",
            Duration::from_secs(30),
            |seen| {
                cut_off
                    .iter()
                    .all(|id| seen.iter().filter(|r| &r.notice_id() == id).count() >= 2)
                    .then_some(())
            },
        )
        .await;
    let counts: BTreeMap<(String, String), usize> =
        callback.received().iter().fold(BTreeMap::new(), |mut counts, r| {
            *counts
                .entry((r.booking_id().to_owned(), r.notice_type().to_owned()))
                .or_default() += 1;
            counts
        });
    let duplicates: usize = counts.values().map(|n| n - 1).sum();

    // Every event reached channel-accounting, each applied once.
    let event_ids: Vec<Uuid> = h
        .state
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT event_id FROM outbox ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let accounting = pg(&accounting_db).await;
    eventually(Duration::from_secs(30), "every event applied", || async {
        let applied: i64 = accounting
            .query_one(
                "SELECT count(*) FROM processed_events WHERE event_id = ANY($1)",
                &[&event_ids],
            )
            .await
            .ok()?
            .get(0);
        (applied == i64::try_from(event_ids.len()).unwrap()).then_some(())
    })
    .await;
    let today = jyt_domain::time::today();
    let row = accounting
        .query_one(
            "SELECT bookings, cancellations FROM channel_daily
              WHERE day = $1 AND hospital_id = 'xuanwu' AND channel = 'wechat'",
            &[&today],
        )
        .await;
    let fee = bookings[0].1["fee_fen"].as_i64().unwrap();
    let (counted, cancellations): (i64, i64) = row.as_ref().map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!(
        (counted, cancellations),
        (4, 2),
        "each booking and cancellation once"
    );
    let refunds: i64 = accounting
        .query_one(
            "SELECT COALESCE(sum(amount_fen), 0)::bigint FROM money_entries WHERE kind = 'refund'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refunds, 2 * fee, "each refund once");

    // Nothing left behind: every row published, no notice owed still
    // scheduled (hold warnings and tomorrow's reminders may wait).
    eventually(Duration::from_secs(30), "every outbox event relayed", || async {
        let unpublished: i64 = h
            .state
            .pool
            .get()
            .await
            .ok()?
            .query_one(jyt_events::UNRELAYED_SQL, &[])
            .await
            .ok()?
            .get(0);
        (unpublished == 0).then_some(())
    })
    .await;
    // Every notice cut off at the kill (the bookings' notices go out side
    // by side, so several were in flight) is sent again once its lease
    // ends, and then leaves the schedule.
    let keys = jyt_cache::Keyspace::new(prefix.clone());
    let due_key = keys.tagged("notify", "due");
    eventually(
        Duration::from_secs(30),
        "no notice owed still scheduled",
        || async {
            let scheduled: Vec<String> = jyt_cache::redis::cmd("ZRANGE")
                .arg(&due_key)
                .arg(0)
                .arg(-1)
                .query_async(&mut h.state.redis.clone())
                .await
                .ok()?;
            scheduled
                .iter()
                .all(|id| id.starts_with("hold_expiring:") || id.starts_with("visit_reminder:"))
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "reliability | relay dies after XADD, notifier killed mid-send | events {} (stream entries ≥ {}) | \
         notices owed {} | delivered {} ({} duplicates, {} in flight at the kill) | lost 0 | {:.1} s",
        event_ids.len(),
        2 * outbox_rows,
        owed.len(),
        counts.values().sum::<usize>(),
        duplicates,
        in_flight.len(),
        started.elapsed().as_secs_f64()
    );
    gateway.kill().await;
}
