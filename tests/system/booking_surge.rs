//! The release-second race: many more patients than seats, all at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jyt_system_tests::{ALL_SEATS_COMMON, TestCity};
use tokio::sync::Barrier;
use uuid::Uuid;

const ATTEMPTS: usize = 2_000;

/// All seats in the common pool (the test is about the lock), and a wait
/// for a database connection as long as a loaded CI machine needs.
fn surge_hospital() -> Vec<(&'static str, &'static str)> {
    let mut settings = ALL_SEATS_COMMON.to_vec();
    settings.extend_from_slice(&[
        ("POSTGRES__WAIT_TIMEOUT_MS", "30000"),
        ("POSTGRES__STATEMENT_TIMEOUT_MS", "30000"),
    ]);
    settings
}
const SEATS: i32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_concurrent_attempts_for_fifty_seats_book_exactly_fifty() {
    // Every one of the 2,000 identities is cold (nobody opened the app
    // before the release second), and this machine has 2 cores for every
    // service and the clients: the gateway's calls to card-issuing and
    // Redis may queue for longer than production's timeouts allow.
    let city = Arc::new(
        TestCity::spawn_configured(
            &["surge"],
            &[
                ("CARD_ISSUING__TIMEOUT_MS", "30000"),
                ("REDIS__RESPONSE_TIMEOUT_MS", "10000"),
                // A loaded CI machine answers slowly: generous timeouts,
                // with the gateway's default bulkhead of 64 calls in flight.
                ("UPSTREAM__TIMEOUT_MS", "30000"),
                ("UPSTREAM__QUEUE_TIMEOUT_MS", "30000"),
            ],
            &surge_hospital(),
        )
        .await,
    );
    let h = city.hospital(0);
    let slots = h.seed_visit_day(SEATS).await;
    let slot = slots[0].clone();
    // Real-name booking: every patient has a card the gateway resolves.
    let patients: Vec<Uuid> = city
        .cards
        .register_many(ATTEMPTS)
        .await
        .into_iter()
        .map(|p| p.person_id)
        .collect();

    // Everyone presses "book" at the same instant.
    let barrier = Arc::new(Barrier::new(ATTEMPTS));
    let mut tasks = Vec::with_capacity(ATTEMPTS);
    for (i, &patient) in patients.iter().enumerate() {
        let city = city.clone();
        let barrier = barrier.clone();
        let slot = slot.clone();
        tasks.push(tokio::spawn(async move {
            let channel = ["wechat", "kiosk", "phone114"][i % 3];
            barrier.wait().await;
            let res = city.book(&slot, patient, channel, &format!("surge-{i}")).await;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            let body: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text:?}"));
            (patient, status, body)
        }));
    }
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    let mut winners: HashMap<String, String> = HashMap::new();
    let mut seats = HashSet::new();
    for t in tasks {
        let (patient, status, body) = t.await.unwrap();
        *by_status.entry(status).or_default() += 1;
        match status {
            201 => {
                winners.insert(
                    patient.to_string(),
                    body["booking_id"].as_str().unwrap().to_owned(),
                );
                assert!(
                    seats.insert(body["seat_number"].as_i64().unwrap()),
                    "seat handed out twice"
                );
            }
            409 => assert_eq!(body["code"], "SLOT_SOLD_OUT", "{body}"),
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(by_status.get(&201), Some(&(SEATS as usize)), "{by_status:?}");
    assert_eq!(
        by_status.get(&409),
        Some(&(ATTEMPTS - SEATS as usize)),
        "{by_status:?}"
    );
    assert_eq!(seats, (1..=i64::from(SEATS)).collect::<HashSet<_>>());

    // PostgreSQL holds exactly the winners, one seat each, nothing oversold.
    assert_eq!(h.live_bookings(&slot).await, (i64::from(SEATS), i64::from(SEATS)));
    assert!(h.oversold_segments().await.is_empty());
    let pg = h.pg_holders(&slot).await;
    let pg_bookings: HashMap<String, String> = pg
        .iter()
        .map(|(p, held)| (p.clone(), held.split('|').next().unwrap().to_owned()))
        .collect();
    let told: HashMap<String, String> = winners
        .iter()
        .map(|(p, b)| (p.clone(), b.trim_start_matches("surge-").to_owned()))
        .collect();
    assert_eq!(
        pg_bookings, told,
        "every patient told 'booked' is booked, and no one else"
    );

    // Redis agrees with PostgreSQL.
    let (free, holders) = h.redis_segment(&slot).await;
    assert_eq!(free, 0);
    assert_eq!(holders, pg);
}
