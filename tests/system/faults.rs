//! Faults injected into real processes: Redis killed during a surge and
//! restarted empty, PostgreSQL stopped during a surge and started again, a
//! hospital dying between its Lua hold and its PostgreSQL write, the
//! gateway giving up on a hospital that then books, and hold expiry,
//! cancellation and waitlist promotion racing on the last seat. Each ends
//! with the two invariants read from PostgreSQL: nothing oversold, and
//! every booking a patient was told of exists in the state they were told.
//!
//! Kill/restart faults use private Redis and PostgreSQL processes on free
//! ports (the machine's shared servers are never touched); without
//! `redis-server` or PostgreSQL's `initdb`/`pg_ctl` those tests skip with a
//! message, except under `CI=true`, where they fail naming what to install.
//! Each test prints a `reliability |` line: the README's reliability table.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure is a failed test"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveTime, TimeDelta};
use jyt_domain::time::{Clock, at};
use jyt_domain::{BookingRef, Channel, SlotRef};
use jyt_system_tests::faults::{
    FaultCity, PrivatePostgres, PrivateRedis, SurgeOutcome, check_invariants, live_count, redis_agrees,
    report, spawn_hospital_on, surge,
};
use jyt_system_tests::{ALL_SEATS_COMMON, TestCity, TestHospital, eventually, problem};
use slot_inventory::booking::hold::{HoldOutcome, HoldRequest};
use slot_inventory::booking::lifecycle::{self, CancelRequest, ConfirmRequest, PaymentMethod};
use slot_inventory::booking::waitlist::{self, JoinRequest};
use slot_inventory::booking::{BookRequest, cache, service};
use uuid::Uuid;

const SURGE_PATIENTS: usize = 150;
const SURGE_SEATS: i32 = 40;

/// The checks every surge ends with, beyond the two invariants: each
/// patient was answered cleanly and decided, every seat was sold exactly
/// once (none leaked by the fault), and a retry never changed an answer.
/// `probe_seats`: seats the probe patient won before the fault took hold.
fn assert_surge_answers(outcome: &SurgeOutcome, probe_seats: usize) {
    assert!(
        outcome.unexpected.is_empty(),
        "unexpected answers: {:?}",
        outcome.unexpected
    );
    assert_eq!(
        outcome.unavailable_without_retry_after, 0,
        "every 503 carries Retry-After"
    );
    assert_eq!(
        outcome.undecided, 0,
        "every patient was answered before the deadline"
    );
    assert_eq!(
        outcome.booked.len() + probe_seats,
        usize::try_from(SURGE_SEATS).unwrap(),
        "every seat sold, none leaked"
    );
    assert_eq!(
        outcome.refused.get("SLOT_SOLD_OUT").copied().unwrap_or(0),
        SURGE_PATIENTS - outcome.booked.len()
    );
    for ids in outcome.booked_ids.values() {
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "a retry answered another booking: {ids:?}"
        );
    }
}

async fn readyz(base_url: &str) -> u16 {
    match reqwest::get(format!("{base_url}/readyz")).await {
        Ok(res) => res.status().as_u16(),
        Err(_) => 0,
    }
}

/// Time from `since` to the first booking answered after it.
fn recovery(outcome: &SurgeOutcome, since: Instant) -> Duration {
    outcome
        .booked_at
        .iter()
        .filter(|t| **t > since)
        .min()
        .map(|t| *t - since)
        .unwrap_or_default()
}

/// Poll with one probe patient until a booking is refused with 503 and
/// Retry-After; a 201 on the way (a hold just before the fault) is kept.
async fn until_refused(
    city: &FaultCity,
    slot: &SlotRef,
    probe: Uuid,
    told: &mut HashMap<Uuid, (String, String)>,
) -> String {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bookings were never refused during the fault"
        );
        let res = city
            .book(slot, probe, &format!("probe-{probe}"))
            .await
            .expect("the gateway answers");
        match res.status().as_u16() {
            503 => {
                assert!(res.headers().contains_key("retry-after"), "503 with Retry-After");
                return problem(res).await["code"].as_str().unwrap().to_owned();
            }
            201 => {
                let b: serde_json::Value = res.json().await.unwrap();
                told.insert(
                    probe,
                    (
                        b["booking_id"].as_str().unwrap().to_owned(),
                        b["status"].as_str().unwrap().to_owned(),
                    ),
                );
            }
            409 => {}
            other => panic!("unexpected answer {other} during the fault"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_killed_during_a_surge_and_restarted_empty_loses_and_oversells_nothing() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let prefix = jyt_testkit::fresh_redis_prefix();
    let database = jyt_testkit::fresh_database("slotrkill").await;
    let h = spawn_hospital_on("rkill", &prefix, database, &redis.url(), ALL_SEATS_COMMON).await;
    let redis_url = redis.url();
    let city = Arc::new(FaultCity::spawn(h, &prefix, &[("REDIS__URLS", redis_url.as_str())]).await);
    let h = &city.hospital;
    let slot = h.seed_visit_day(SURGE_SEATS).await.remove(0);
    let persons: Vec<Uuid> = city
        .cards
        .register_many(SURGE_PATIENTS)
        .await
        .iter()
        .map(|p| p.person_id)
        .collect();
    let probe = city.cards.register().await.person_id;
    eventually(Duration::from_secs(60), "the hospital to be ready", || async {
        (readyz(&h.base_url).await == 200).then_some(())
    })
    .await;

    let started = Instant::now();
    let surge = tokio::spawn(surge(
        city.clone(),
        slot.clone(),
        persons,
        Duration::from_millis(40),
        Duration::from_secs(150),
    ));
    eventually(Duration::from_secs(60), "a third of the seats booked", || async {
        live_count(h, &slot)
            .await
            .filter(|n| *n >= i64::from(SURGE_SEATS / 3))
    })
    .await;

    redis.kill();
    let killed = Instant::now();
    let mut told = HashMap::new();
    let code = until_refused(&city, &slot, probe, &mut told).await;
    assert!(
        [
            "SLOT_LOCK_UNAVAILABLE",
            "CACHE_UNAVAILABLE",
            "HOSPITAL_UNAVAILABLE"
        ]
        .contains(&code.as_str()),
        "refused with {code}"
    );
    assert_ne!(readyz(&h.base_url).await, 200, "not ready without Redis");
    redis.restart().await;
    let restarted = Instant::now();
    eprintln!("Redis was down for {:?}", restarted - killed);

    let outcome = surge.await.unwrap();
    assert_surge_answers(&outcome, told.len());
    eventually(
        Duration::from_secs(60),
        "the hospital to be ready again",
        || async { (readyz(&h.base_url).await == 200).then_some(()) },
    )
    .await;
    // The probe is not part of the count: it had a seat only if it won one
    // before the kill, and then it is among the told.
    told.extend(outcome.booked.clone());
    let (oversold, lost) = check_invariants(h, &told).await;
    assert!(told.len() >= usize::try_from(SURGE_SEATS).unwrap());
    redis_agrees(h, &slot).await;
    assert!(
        outcome.unavailable.values().sum::<usize>() > 0,
        "the surge met the outage: {:?}",
        outcome.unavailable
    );
    report(
        "Redis killed (SIGKILL) mid-surge, restarted empty",
        outcome.requests,
        told.len(),
        oversold,
        lost,
        recovery(&outcome, restarted),
    );
    eprintln!(
        "surge lasted {:?}; refusals {:?}",
        started.elapsed(),
        outcome.unavailable
    );
}

#[tokio::test]
async fn postgres_stopped_during_a_surge_and_started_again_half_writes_nothing_and_resumes() {
    let Some(pg) = PrivatePostgres::start().await else {
        return;
    };
    let prefix = jyt_testkit::fresh_redis_prefix();
    let database = pg.fresh_database("slotpgkill").await;
    let h = spawn_hospital_on(
        "pgkill",
        &prefix,
        database,
        &jyt_testkit::redis_url(),
        ALL_SEATS_COMMON,
    )
    .await;
    let city = Arc::new(FaultCity::spawn(h, &prefix, &[]).await);
    let h = &city.hospital;
    let slot = h.seed_visit_day(SURGE_SEATS).await.remove(0);
    let persons: Vec<Uuid> = city
        .cards
        .register_many(SURGE_PATIENTS)
        .await
        .iter()
        .map(|p| p.person_id)
        .collect();
    let probe = city.cards.register().await.person_id;
    eventually(Duration::from_secs(60), "the hospital to be ready", || async {
        (readyz(&h.base_url).await == 200).then_some(())
    })
    .await;

    let surge = tokio::spawn(surge(
        city.clone(),
        slot.clone(),
        persons,
        Duration::from_millis(40),
        Duration::from_secs(150),
    ));
    eventually(Duration::from_secs(60), "a third of the seats booked", || async {
        live_count(h, &slot)
            .await
            .filter(|n| *n >= i64::from(SURGE_SEATS / 3))
    })
    .await;

    pg.stop();
    let killed = Instant::now();
    let mut told = HashMap::new();
    let code = until_refused(&city, &slot, probe, &mut told).await;
    assert!(
        ["DATABASE_UNAVAILABLE", "HOSPITAL_UNAVAILABLE"].contains(&code.as_str()),
        "refused with {code}"
    );
    assert_ne!(readyz(&h.base_url).await, 200, "not ready without PostgreSQL");
    pg.restart().await;
    let restarted = Instant::now();
    eprintln!("PostgreSQL was down for {:?}", restarted - killed);

    let outcome = surge.await.unwrap();
    assert_surge_answers(&outcome, told.len());
    told.extend(outcome.booked.clone());
    let (oversold, lost) = check_invariants(h, &told).await;
    // The holds taken while PostgreSQL was down were given back: Redis
    // holds exactly the bookings PostgreSQL has, and every seat was sold.
    redis_agrees(h, &slot).await;
    assert_eq!(
        h.live_bookings(&slot).await,
        (i64::from(SURGE_SEATS), i64::from(SURGE_SEATS))
    );
    eventually(
        Duration::from_secs(60),
        "the hospital to be ready again",
        || async { (readyz(&h.base_url).await == 200).then_some(()) },
    )
    .await;
    report(
        "PostgreSQL stopped (immediate) mid-surge, started again",
        outcome.requests,
        told.len(),
        oversold,
        lost,
        recovery(&outcome, restarted),
    );
    eprintln!("refusals {:?}", outcome.unavailable);
}

/// A UUIDv7 minted `seconds_ago`: a booking id its (dead) process chose then.
fn booking_id_from(seconds_ago: u64) -> Uuid {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, now - seconds_ago, 0))
}

/// What a crash between the Lua hold and the PostgreSQL write leaves: the
/// hold script's effects in Redis (seat taken, patient's day counted, a
/// pending idempotency record) and no row.
async fn hold_without_writing(
    h: &TestHospital,
    slot: &SlotRef,
    patient: Uuid,
    booking_id: Uuid,
) -> HoldOutcome {
    let state = &h.state;
    let info = cache::segment_info(state, slot.id).await.unwrap();
    let keys = state.keys.segment(&info);
    let idem = state
        .keys
        .idempotency(patient, &"crashed-attempt".parse().unwrap());
    let patient_day = state.keys.patient_day(patient, info.visit_date);
    let policy = &state.settings.policy;
    let request = HoldRequest {
        patient,
        booking_id,
        channel: Channel::Kiosk,
        now: chrono::Utc::now().timestamp(),
        idempotency_key: &idem,
        idempotency_ttl_seconds: 30,
        patient_day: &patient_day,
        max_per_day: policy.max_per_person_per_day,
        max_per_department: policy.max_per_person_per_department_per_day,
        patient_day_ttl_seconds: 3 * 86_400,
        kind: slot_inventory::booking::hold::HoldKind::Book,
        // Not a lottery schedule: never recorded.
        lottery_entry: "",
        referral_key: &state.keys.referral(None),
        signed_pool: false,
    };
    state.scripts.hold(&state.redis, &keys, &request).await.unwrap()
}

#[tokio::test]
async fn a_hospital_killed_between_its_lua_hold_and_its_postgres_write_leaves_an_orphan_the_reconciler_frees()
{
    let city = TestCity::spawn_configured(&["orphan"], &[], ALL_SEATS_COMMON).await;
    let h = city.hospital(0);
    let slot = h.seed_visit_day(3).await.remove(0);
    cache::load_segment(&h.state, slot.id).await.unwrap();
    let (dead, young) = (city.patient().await, city.patient().await);

    // Two holds with no row: one whose process died a minute ago, one
    // still within the grace period (its write may yet come).
    let started = Instant::now();
    let orphan = booking_id_from(60);
    assert!(matches!(
        hold_without_writing(h, &slot, dead, orphan).await,
        HoldOutcome::Held { .. }
    ));
    let pending = booking_id_from(0);
    assert!(matches!(
        hold_without_writing(h, &slot, young, pending).await,
        HoldOutcome::Held { .. }
    ));
    assert_eq!(
        h.redis_segment(&slot).await.0,
        1,
        "two of three seats held in Redis"
    );
    assert_eq!(h.live_bookings(&slot).await, (0, 0), "and none in PostgreSQL");

    // The reconciler (also run by the sweeper every 15 s) frees the orphan
    // only: the young hold is left to its own process.
    eventually(Duration::from_secs(30), "the orphan hold to be freed", || async {
        cache::reconcile(&h.state).await.unwrap();
        let (_, holders) = h.redis_segment(&slot).await;
        (!holders.contains_key(&dead.to_string())).then_some(())
    })
    .await;
    let recovered = started.elapsed();
    let (free, holders) = h.redis_segment(&slot).await;
    assert_eq!(free, 2, "the orphan's seat is on sale again");
    assert!(holders[&young.to_string()].starts_with(&pending.to_string()));

    // The freed seat sells, and the dead attempt's patient (their day count
    // given back too) can book it.
    let mut told = HashMap::new();
    for (patient, key) in [(dead, "after-crash"), (city.patient().await, "other")] {
        let res = city.book(&slot, patient, "kiosk", key).await;
        assert_eq!(res.status(), 201);
        let b: serde_json::Value = res.json().await.unwrap();
        told.insert(
            patient,
            (
                b["booking_id"].as_str().unwrap().to_owned(),
                b["status"].as_str().unwrap().to_owned(),
            ),
        );
    }
    let res = city
        .book(&slot, city.patient().await, "kiosk", "one-too-many")
        .await;
    assert_eq!(
        problem(res).await["code"],
        "SLOT_SOLD_OUT",
        "the young hold still has its seat"
    );
    let (oversold, lost) = check_invariants(h, &told).await;
    let (_, mut holders) = h.redis_segment(&slot).await;
    holders.remove(&young.to_string());
    assert_eq!(holders, h.pg_holders(&slot).await);
    report(
        "hospital killed between Lua hold and PostgreSQL write",
        3,
        told.len(),
        oversold,
        lost,
        recovered,
    );
}

#[tokio::test]
async fn a_gateway_timeout_after_the_hospital_booked_is_retried_into_the_same_booking() {
    let city = TestCity::spawn_configured(
        &["slowh"],
        &[("HOSPITALS__SLOWH__TIMEOUT_MS", "300")],
        ALL_SEATS_COMMON,
    )
    .await;
    let h = city.hospital(0);
    let slot = h.seed_visit_day(2).await.remove(0);
    let patient = city.patient().await;
    // The hospital's commit takes 1.5 s: well past the gateway's 300 ms.
    h.sql(
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$;
         CREATE TRIGGER slow_insert BEFORE INSERT ON bookings
           FOR EACH ROW EXECUTE FUNCTION slow_insert();",
    )
    .await;
    let res = city.book(&slot, patient, "wechat", "slow-1").await;
    assert_eq!(res.status(), 503, "the gateway gave up");
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(problem(res).await["code"], "HOSPITAL_UNAVAILABLE");
    let gave_up = Instant::now();

    // The hospital booked anyway (its booking task is detached).
    eventually(Duration::from_secs(30), "the hospital to commit", || async {
        (h.live_bookings(&slot).await == (1, 1)).then_some(())
    })
    .await;
    h.sql("DROP TRIGGER slow_insert ON bookings;").await;

    let retry = city.book(&slot, patient, "wechat", "slow-1").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
    let b: serde_json::Value = retry.json().await.unwrap();
    let pg = h.pg_holders(&slot).await;
    let booked: BookingRef = b["booking_id"].as_str().unwrap().parse().unwrap();
    assert!(
        pg[&patient.to_string()].starts_with(&booked.id.to_string()),
        "the retry answers the booking made"
    );
    assert_eq!(h.live_bookings(&slot).await, (1, 1), "not a second one");
    let told = HashMap::from([(
        patient,
        (
            b["booking_id"].as_str().unwrap().to_owned(),
            b["status"].as_str().unwrap().to_owned(),
        ),
    )]);
    let (oversold, lost) = check_invariants(h, &told).await;
    report(
        "gateway→hospital timeout after the hospital booked",
        2,
        1,
        oversold,
        lost,
        gave_up.elapsed(),
    );
}

/// Hold expiry, the holder's cancellation, the waitlist's promotion and a
/// stranger's booking attempt, all at once on a full schedule's last seat
/// (the hospital's own sweepers running too): exactly one winner.
#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: split, it would read worse"
)]
async fn expiry_cancellation_and_waitlist_promotion_racing_on_the_last_seat_have_exactly_one_winner() {
    let visit = jyt_domain::time::today().checked_add_days(Days::new(5)).unwrap();
    let clock = Clock::manual(at(
        visit.checked_sub_days(Days::new(2)).unwrap(),
        NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
    ));
    let prefix = jyt_testkit::fresh_redis_prefix();
    let h = TestHospital::spawn_with("race", &prefix, ALL_SEATS_COMMON, clock.clone()).await;
    let schedules = slot_inventory::seed::seed_demo_day(&h.state, visit, 1)
        .await
        .unwrap();
    for s in &schedules {
        for seg in &s.segment_ids {
            cache::load_segment(&h.state, *seg).await.unwrap();
        }
    }
    let book = |slot: SlotRef, patient: Uuid, waitlist_entry: Option<Uuid>| {
        let state = h.state.clone();
        async move {
            let req = BookRequest {
                waitlist_entry,
                ..BookRequest::new(slot, patient, Channel::Kiosk)
            };
            service::book(state, req, Uuid::new_v4().to_string().parse().unwrap()).await
        }
    };

    // Rounds on the fee-charging schedules (holds to expire): each round's
    // schedule is full, its last seat held unpaid by `holder`.
    let mut told = HashMap::new();
    let started = Instant::now();
    let rounds = [0_usize, 1, 2, 3];
    let mut per_round = Vec::new();
    for &round in &rounds {
        let schedule = &schedules[round];
        let segments: Vec<SlotRef> = schedule
            .segment_ids
            .iter()
            .map(|s| SlotRef::new(h.id.clone(), *s))
            .collect();
        let last = segments.last().unwrap().clone();
        for seg in &segments[..segments.len() - 1] {
            let p = Uuid::new_v4();
            let b = book(seg.clone(), p, None).await.unwrap().booking;
            // Paid, so that only the last seat frees.
            let paid = ConfirmRequest {
                payment_reference: format!("tx-{p}"),
                payment_method: PaymentMethod::SelfPay,
                amount_fen: None,
            };
            lifecycle::confirm(&h.state, &b.booking_id, &paid).await.unwrap();
            told.insert(p, (b.booking_id.to_string(), "confirmed".to_owned()));
        }
        let holder = Uuid::new_v4();
        let held = book(last.clone(), holder, None).await.unwrap().booking;
        let join = |p| JoinRequest {
            patient_id: p,
            channel: Channel::Wechat,
            owner_app: None,
        };
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let (w1, _) = waitlist::join(&h.state, schedule.schedule_id, &join(first))
            .await
            .unwrap();
        let (w2, _) = waitlist::join(&h.state, schedule.schedule_id, &join(second))
            .await
            .unwrap();
        per_round.push((last, holder, held.booking_id, w1.entry_id, w2.entry_id, first));
    }

    // Every hold is now past its deadline; the racers start together.
    clock.advance(TimeDelta::minutes(11));
    let mut racers = Vec::new();
    for (last, holder, held, ..) in &per_round {
        let (state, held, holder) = (h.state.clone(), held.clone(), *holder);
        racers.push(tokio::spawn(async move {
            lifecycle::cancel(&state, &held, &CancelRequest { patient_id: holder })
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }));
        let state = h.state.clone();
        racers.push(tokio::spawn(async move {
            lifecycle::expire_holds(&state)
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }));
        let state = h.state.clone();
        racers.push(tokio::spawn(async move {
            waitlist::promote_all(&state)
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }));
        let stranger = book(last.clone(), Uuid::new_v4(), None);
        racers.push(tokio::spawn(async move {
            match stranger.await {
                Ok(_) => Err("a stranger took a seat kept for the waitlist"),
                Err(_) => Ok(()),
            }
        }));
    }
    for racer in racers {
        let result = racer.await.unwrap();
        assert!(
            !matches!(result, Err(c) if c.starts_with("a stranger")),
            "{result:?}"
        );
    }

    for (last, holder, held, w1, w2, first) in &per_round {
        // The seat went to the head of the line, once.
        let promoted = eventually(
            Duration::from_secs(30),
            "the head of the line to be promoted",
            || async {
                waitlist::promote_all(&h.state).await.unwrap();
                let entry = waitlist::get(&h.state, *w1).await.unwrap();
                (entry.status == "promoted").then_some(entry)
            },
        )
        .await;
        let second = waitlist::get(&h.state, *w2).await.unwrap();
        assert_eq!(second.status, "waiting", "one seat, one promotion");
        let client = h.state.pool.get().await.unwrap();
        let status: String = client
            .query_one("SELECT status FROM bookings WHERE id = $1", &[&held.id])
            .await
            .unwrap()
            .get(0);
        assert!(
            status == "cancelled" || status == "expired",
            "the hold ended once: {status}"
        );
        let freed: i64 = client
            .query_one(
                "SELECT count(*) FROM outbox WHERE event_type IN ('booking.cancelled', 'booking.expired')
                   AND payload::text LIKE '%' || $1 || '%'",
                &[&held.id.to_string()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(freed, 1, "one cancellation or one expiry, not both ({status})");
        let live = client
            .query(
                "SELECT patient_id FROM bookings WHERE segment_id = $1
                  AND status NOT IN ('cancelled', 'expired', 'stopped')",
                &[&last.id],
            )
            .await
            .unwrap();
        let winners: Vec<Uuid> = live.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            winners,
            vec![*first],
            "exactly one winner: the head of the line (holder {holder})"
        );
        let booking = promoted.booking_id.clone().unwrap();
        told.insert(*first, (booking.to_string(), "held".to_owned()));
        redis_agrees(&h, last).await;
    }
    let (oversold, lost) = check_invariants(&h, &told).await;
    report(
        "hold expiry × cancellation × waitlist promotion × a stranger, last seat (4 rounds)",
        per_round.len() * 4,
        per_round.len(),
        oversold,
        lost,
        started.elapsed(),
    );
}
