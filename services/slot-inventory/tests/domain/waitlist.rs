//! 候补: a full schedule's line, served first come first served whenever a
//! seat frees, atomically, before anyone else can take it.

use jyt_domain::{BookingStatus, Channel};
use slot_inventory::booking::lifecycle::{self, CancelRequest};
use slot_inventory::booking::waitlist::{self, JoinRequest};
use slot_inventory::schedule::capacity::{self, CapacityChange};
use uuid::Uuid;

use crate::helpers::{ALL_COMMON, Hospital, beijing, code, sched};

fn join(patient: Uuid) -> JoinRequest {
    JoinRequest {
        patient_id: patient,
        channel: Channel::Wechat,
        owner_app: None,
    }
}

/// Every seat of the schedule's seven one-seat segments sold at the kiosk,
/// each to a new patient: (patient, booking), by segment.
async fn sell_out(h: &Hospital, schedule: usize) -> Vec<(Uuid, slot_inventory::booking::Booking)> {
    let mut holders = Vec::new();
    for segment in 0..7 {
        let patient = Uuid::new_v4();
        let b = h
            .book(&h.segment(schedule, segment), patient, Channel::Kiosk)
            .await
            .unwrap();
        holders.push((patient, b));
    }
    holders
}

#[tokio::test]
async fn freed_and_added_seats_go_to_the_waitlist_in_order_before_anyone_else() {
    // One seat per segment, all common: CT's morning has 7 seats.
    let settings: Vec<_> = ALL_COMMON
        .iter()
        .copied()
        .chain([("POLICY__WAITLIST_CAPACITY_REQUEST_THRESHOLD", "1")])
        .collect();
    let h = Hospital::start(beijing(3, 9, 0), 1, &settings).await;
    let schedule = h.schedules[sched::CT_AM].schedule_id;
    let early = Uuid::new_v4();
    let not_full = waitlist::join(&h.state, schedule, &join(early)).await;
    assert_eq!(code(&not_full.unwrap_err()), "SEATS_AVAILABLE");

    let holders = sell_out(&h, sched::CT_AM).await;
    let booked = waitlist::join(&h.state, schedule, &join(holders[0].0)).await;
    assert_eq!(code(&booked.unwrap_err()), "SCHEDULE_ALREADY_BOOKED");

    let (first, created) = waitlist::join(&h.state, schedule, &join(early)).await.unwrap();
    assert!(created);
    assert_eq!(first.position, Some(1));
    let (again, created) = waitlist::join(&h.state, schedule, &join(early)).await.unwrap();
    assert!(!created, "one place per person");
    assert_eq!(again.entry_id, first.entry_id);
    let second_patient = Uuid::new_v4();
    let (second, _) = waitlist::join(&h.state, schedule, &join(second_patient))
        .await
        .unwrap();
    assert_eq!(second.position, Some(2));

    // A cancellation frees segment 3's seat: it goes to the head of the line.
    let (p3, b3) = &holders[3];
    lifecycle::cancel(&h.state, &b3.booking_id, &CancelRequest { patient_id: *p3 })
        .await
        .unwrap();
    h.passes_done().await;
    let promoted = waitlist::get(&h.state, first.entry_id).await.unwrap();
    assert_eq!(promoted.status, "promoted");
    let booking = h.booking(promoted.booking_id.as_ref().unwrap()).await;
    assert_eq!(booking.patient_id, early);
    assert_eq!(booking.slot_id, h.segment(sched::CT_AM, 3));
    assert_eq!(
        booking.status,
        BookingStatus::Confirmed,
        "CT is free: no hold to pay"
    );
    assert_eq!(
        waitlist::get(&h.state, second.entry_id).await.unwrap().position,
        Some(1)
    );

    // Adding a seat: the next in line gets it, not a walk-in.
    let slot = h.segment(sched::CT_AM, 6);
    let promoted = capacity::set_segment_capacity(&h.state, slot.id, &CapacityChange { capacity: 2 })
        .await
        .unwrap();
    assert_eq!(promoted, 1);
    let second = waitlist::get(&h.state, second.entry_id).await.unwrap();
    assert_eq!(second.status, "promoted");
    assert_eq!(h.booking(second.booking_id.as_ref().unwrap()).await.slot_id, slot);

    // With the line empty, the next freed seat is on open sale.
    let (p0, b0) = &holders[0];
    lifecycle::cancel(&h.state, &b0.booking_id, &CancelRequest { patient_id: *p0 })
        .await
        .unwrap();
    h.passes_done().await;
    h.book(&h.segment(sched::CT_AM, 0), Uuid::new_v4(), Channel::App)
        .await
        .unwrap();

    let events = h.event_types().await;
    let count = |t: &str| events.iter().filter(|e| *e == t).count();
    assert_eq!(count("waitlist.joined"), 2);
    assert_eq!(
        count("waitlist.capacity_requested"),
        1,
        "the line passed its threshold once"
    );
    assert_eq!(count("booking.promoted"), 2);
}

/// A release of cancellations: seven at once on one schedule with seven
/// waiting. Their passes run one at a time (`waitlist::PassesInFlight`):
/// a seat freed while the schedule's pass runs asks it for one more round
/// instead of walking the line beside it. Every seat still reaches the
/// line (no sweeper runs here), each waiter gets one, in order.
#[tokio::test]
async fn cancellations_released_together_serve_the_whole_line_once_each() {
    let h = Hospital::start(beijing(3, 9, 0), 1, ALL_COMMON).await;
    let schedule = h.schedules[sched::CT_AM].schedule_id;
    let holders = sell_out(&h, sched::CT_AM).await;
    let mut entries = Vec::new();
    for _ in 0..7 {
        let (entry, _) = waitlist::join(&h.state, schedule, &join(Uuid::new_v4()))
            .await
            .unwrap();
        entries.push(entry.entry_id);
    }

    let requests: Vec<_> = holders
        .iter()
        .map(|(patient, b)| (b.booking_id.clone(), CancelRequest { patient_id: *patient }))
        .collect();
    let cancellations = requests
        .iter()
        .map(|(booking, req)| lifecycle::cancel(&h.state, booking, req));
    for cancelled in futures::future::join_all(cancellations).await {
        cancelled.unwrap();
    }

    // The last rounds may run in a task of their own after the answers.
    let promoted = jyt_testkit::eventually(
        std::time::Duration::from_secs(10),
        "every waiter promoted",
        || async {
            let mut bookings = Vec::new();
            for entry in &entries {
                let e = waitlist::get(&h.state, *entry).await.unwrap();
                if e.status != "promoted" {
                    return None;
                }
                bookings.push(e.booking_id.unwrap());
            }
            (!h.state.waitlist_passes.is_running(schedule)).then_some(bookings)
        },
    )
    .await;
    let mut seats = std::collections::HashSet::new();
    for booking in &promoted {
        let b = h.booking(booking).await;
        assert_eq!(b.status, BookingStatus::Confirmed);
        assert!(
            seats.insert(b.slot_id.clone()),
            "one waiter a seat: {}",
            b.slot_id
        );
    }
    assert_eq!(seats.len(), 7, "every freed seat went to the line");
    let events = h.event_types().await;
    assert_eq!(
        events.iter().filter(|e| *e == "booking.promoted").count(),
        7,
        "each waiter promoted once"
    );
}

#[tokio::test]
async fn a_seat_kept_for_the_waitlist_is_not_sold_to_others_meanwhile() {
    let h = Hospital::start(beijing(3, 9, 0), 1, ALL_COMMON).await;
    let schedule = h.schedules[sched::ENDO_AM].schedule_id;
    let holders = sell_out(&h, sched::ENDO_AM).await;
    // The waiting patient already has two bookings today elsewhere: when
    // their turn comes they may not hold a third, and leave the line.
    let busy = Uuid::new_v4();
    h.book(&h.segment(sched::CARDIO_EXPERT_AM, 0), busy, Channel::Wechat)
        .await
        .unwrap();
    h.book(&h.segment(sched::PEDS_EXPERT_AM, 0), busy, Channel::Wechat)
        .await
        .unwrap();
    let (busy_entry, _) = waitlist::join(&h.state, schedule, &join(busy)).await.unwrap();
    let (next_entry, _) = waitlist::join(&h.state, schedule, &join(Uuid::new_v4()))
        .await
        .unwrap();

    let (p, b) = &holders[0];
    lifecycle::cancel(&h.state, &b.booking_id, &CancelRequest { patient_id: *p })
        .await
        .unwrap();
    // Kept for the line from the cancellation on, before its pass runs
    // (in a task) as after.
    let walk_in = h
        .book(&h.segment(sched::ENDO_AM, 0), Uuid::new_v4(), Channel::Window)
        .await;
    assert_eq!(code(&walk_in.unwrap_err()), "SLOT_SOLD_OUT");
    h.passes_done().await;
    assert_eq!(
        waitlist::get(&h.state, busy_entry.entry_id).await.unwrap().status,
        "left"
    );
    let next = waitlist::get(&h.state, next_entry.entry_id).await.unwrap();
    assert_eq!(next.status, "promoted");
    let held = h.booking(next.booking_id.as_ref().unwrap()).await;
    assert_eq!(
        held.status,
        BookingStatus::Held,
        "endocrinology has a fee: a hold to pay"
    );
    // Nobody else could take it.
    let walk_in = h
        .book(&h.segment(sched::ENDO_AM, 0), Uuid::new_v4(), Channel::Window)
        .await;
    assert_eq!(code(&walk_in.unwrap_err()), "SLOT_SOLD_OUT");
}

/// Default pool shares: a segment of 20 seats has wechat 8, kiosk 6,
/// phone114 2, window 1, app 1, referral 1 and common 1.
#[tokio::test]
async fn with_default_pools_a_patient_with_no_seat_of_their_own_joins_and_is_served_from_their_pools_only() {
    let h = Hospital::start(beijing(3, 9, 0), 20, &[]).await;
    // One segment of CT's morning (free: bookings are confirmed at once);
    // the other six have no seats.
    let schedule = h.schedules[sched::CT_AM].schedule_id;
    for segment in 1..7 {
        let slot = h.segment(sched::CT_AM, segment);
        capacity::set_segment_capacity(&h.state, slot.id, &CapacityChange { capacity: 0 })
            .await
            .unwrap();
    }
    let slot = h.segment(sched::CT_AM, 0);
    let mut sold: Vec<(Channel, Uuid, slot_inventory::booking::Booking)> = Vec::new();
    for (channel, n) in [
        (Channel::Wechat, 9),
        (Channel::Kiosk, 6),
        (Channel::Phone114, 2),
        (Channel::Window, 1),
        (Channel::App, 1),
    ] {
        for _ in 0..n {
            let patient = Uuid::new_v4();
            sold.push((channel, patient, h.book(&slot, patient, channel).await.unwrap()));
        }
    }
    let in_pool = |pool: &str| sold.iter().find(|(.., b)| b.pool == pool).unwrap().clone();
    assert_eq!(in_pool("common").0, Channel::Wechat, "WeChat's ninth took common");
    // Only the referral seat is left: nobody but a referral can book it
    // before the merge, so the WeChat and kiosk patients may wait.
    let err = h.book(&slot, Uuid::new_v4(), Channel::Wechat).await.unwrap_err();
    assert_eq!(code(&err), "SLOT_SOLD_OUT");
    let wechat_1 = Uuid::new_v4();
    let (w1, created) = waitlist::join(&h.state, schedule, &join(wechat_1)).await.unwrap();
    assert!(created);
    let kiosk_1 = Uuid::new_v4();
    let (k1, _) = waitlist::join(
        &h.state,
        schedule,
        &JoinRequest {
            patient_id: kiosk_1,
            channel: Channel::Kiosk,
            owner_app: None,
        },
    )
    .await
    .unwrap();
    assert_eq!((w1.position, k1.position), (Some(1), Some(2)));
    // The sweeper does not hand the unsold referral seat to the line.
    assert_eq!(waitlist::promote_all(&h.state).await.unwrap(), 0);
    assert_eq!(
        waitlist::get(&h.state, w1.entry_id).await.unwrap().status,
        "waiting"
    );
    h.assert_consistent(&slot).await;

    // A kiosk seat frees: the WeChat patient ahead may not take it before
    // the merge, the kiosk patient behind may, and is served.
    let (_, kiosk_patient, kiosk_booking) = in_pool("kiosk");
    lifecycle::cancel(
        &h.state,
        &kiosk_booking.booking_id,
        &CancelRequest {
            patient_id: kiosk_patient,
        },
    )
    .await
    .unwrap();
    h.passes_done().await;
    let k1 = waitlist::get(&h.state, k1.entry_id).await.unwrap();
    assert_eq!(k1.status, "promoted");
    let held = h.booking(k1.booking_id.as_ref().unwrap()).await;
    assert_eq!((held.patient_id, held.pool.as_str()), (kiosk_1, "kiosk"));
    assert_eq!(
        waitlist::get(&h.state, w1.entry_id).await.unwrap().position,
        Some(1)
    );

    // The common seat frees: the head of the line gets it.
    let (_, common_patient, common_booking) = in_pool("common");
    lifecycle::cancel(
        &h.state,
        &common_booking.booking_id,
        &CancelRequest {
            patient_id: common_patient,
        },
    )
    .await
    .unwrap();
    h.passes_done().await;
    let w1 = waitlist::get(&h.state, w1.entry_id).await.unwrap();
    assert_eq!(w1.status, "promoted");
    let held = h.booking(w1.booking_id.as_ref().unwrap()).await;
    assert_eq!((held.patient_id, held.pool.as_str()), (wechat_1, "common"));
    assert_eq!(held.status, BookingStatus::Confirmed);
    h.assert_consistent(&slot).await;

    // Another WeChat patient waits. A 114 seat frees: nobody waiting may
    // take it, so it is back on sale, not kept.
    let wechat_2 = Uuid::new_v4();
    let (w2, _) = waitlist::join(&h.state, schedule, &join(wechat_2)).await.unwrap();
    let (_, phone_patient, phone_booking) = in_pool("phone114");
    lifecycle::cancel(
        &h.state,
        &phone_booking.booking_id,
        &CancelRequest {
            patient_id: phone_patient,
        },
    )
    .await
    .unwrap();
    h.passes_done().await;
    assert_eq!(
        waitlist::get(&h.state, w2.entry_id).await.unwrap().status,
        "waiting"
    );
    let walk_in = h.book(&slot, Uuid::new_v4(), Channel::Phone114).await.unwrap();
    assert_eq!(walk_in.pool, "phone114");
    assert_eq!(waitlist::promote_all(&h.state).await.unwrap(), 0);
    assert_eq!(
        waitlist::get(&h.state, w2.entry_id).await.unwrap().status,
        "waiting"
    );

    // At the merge (D-1 15:00) unused shares open to every channel: the
    // sweeper's next pass hands the referral seat to the line.
    h.clock.set(beijing(1, 15, 0));
    assert_eq!(waitlist::promote_all(&h.state).await.unwrap(), 1);
    let w2 = waitlist::get(&h.state, w2.entry_id).await.unwrap();
    assert_eq!(w2.status, "promoted");
    let held = h.booking(w2.booking_id.as_ref().unwrap()).await;
    assert_eq!((held.patient_id, held.pool.as_str()), (wechat_2, "referral"));

    // Every seat sold once: 20 live bookings, Redis = PostgreSQL.
    assert_eq!(h.redis_free(&slot).await, 0);
    h.assert_consistent(&slot).await;
    let events = h.event_types().await;
    assert_eq!(events.iter().filter(|e| *e == "booking.promoted").count(), 3);
}

/// A session published for the waitlist keeps its seats back for the
/// lines it serves from the moment it is loaded: before any promotion pass
/// runs, an ordinary booking gets only the seats beyond the line.
#[tokio::test]
async fn a_session_for_the_waitlist_keeps_its_seats_for_the_line_before_the_promotion_pass() {
    use slot_inventory::booking::cache::reload_segment;
    use slot_inventory::schedule::queries::upsert_schedule;
    use slot_inventory::schedule::{NewDepartment, NewDoctor, NewSchedule, NewSegment, Session};

    let h = Hospital::start(beijing(3, 9, 0), 1, ALL_COMMON).await;
    let morning = h.schedules[sched::ENDO_AM].schedule_id;
    for segment in 0..7 {
        h.book(
            &h.segment(sched::ENDO_AM, segment),
            Uuid::new_v4(),
            Channel::Kiosk,
        )
        .await
        .unwrap();
    }
    let waiting = [Uuid::new_v4(), Uuid::new_v4()];
    for patient in waiting {
        waitlist::join(&h.state, morning, &join(patient)).await.unwrap();
    }
    // The same doctor's evening session of 3 seats, for the waitlist,
    // written and loaded as a publish does, but no promotion pass yet.
    let mut client = h.state.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT d.external_id, d.name, d.title, dep.external_id, dep.name, s.visit_date, s.clinic_level,
                    (SELECT min(starts_at) FROM segments WHERE schedule_id = s.id)
               FROM schedules s JOIN doctors d ON d.id = s.doctor_id JOIN departments dep ON dep.id = s.department_id
              WHERE s.id = $1",
            &[&morning],
        )
        .await
        .unwrap();
    let starts: chrono::DateTime<chrono::Utc> = row.get(7);
    let level: String = row.get(6);
    let evening = NewSchedule {
        external_id: "endo-extra".into(),
        department: NewDepartment {
            external_id: row.get(3),
            name: row.get(4),
        },
        doctor: NewDoctor {
            external_id: row.get(0),
            name: row.get(1),
            title: row.get(2),
        },
        visit_date: row.get(5),
        session: Session::Evening,
        clinic_level: slot_inventory::schedule::ClinicLevel::parse(&level).unwrap(),
        fee_fen: 0,
        segments: vec![NewSegment {
            starts_at: starts + chrono::TimeDelta::hours(9),
            ends_at: starts + chrono::TimeDelta::hours(10),
            capacity: 3,
        }],
    };
    let tx = client.transaction().await.unwrap();
    let stored = upsert_schedule(&tx, &evening, beijing(7, 8, 0), h.state.clock.now())
        .await
        .unwrap();
    tx.execute(
        "UPDATE schedules SET for_waitlist = true WHERE id = $1",
        &[&stored.schedule_id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let segment = stored.segment_ids[0];
    reload_segment(&h.state, segment).await.unwrap();

    // Two of its three seats are the line's: one walk-in gets the third.
    let slot = jyt_domain::SlotRef::new(h.state.hospital.clone(), segment);
    let walk_in = Uuid::new_v4();
    let third = h.book(&slot, walk_in, Channel::Window).await.unwrap();
    let late = h.book(&slot, Uuid::new_v4(), Channel::Window).await;
    assert_eq!(code(&late.unwrap_err()), "SLOT_SOLD_OUT");
    // The pass serves the line from them, in order.
    assert_eq!(waitlist::promote(&h.state, morning).await.unwrap(), 2);
    h.assert_consistent(&slot).await;

    // A seat the walk-in frees in the evening goes to the morning's line
    // (the session serves the doctor's lines), as it is cancelled.
    let (next, _) = waitlist::join(&h.state, morning, &join(Uuid::new_v4()))
        .await
        .unwrap();
    lifecycle::cancel(
        &h.state,
        &third.booking_id,
        &CancelRequest { patient_id: walk_in },
    )
    .await
    .unwrap();
    h.passes_done().await;
    let next = waitlist::get(&h.state, next.entry_id).await.unwrap();
    assert_eq!(next.status, "promoted");
    assert_eq!(h.booking(next.booking_id.as_ref().unwrap()).await.slot_id, slot);
    h.assert_consistent(&slot).await;
}

/// A lapsed hold's seat goes to the head of its schedule's line in the
/// sweep that expires it, as a cancelled one does: the sweep's statement
/// answers whether anyone waits (`queries::EXPIRE_HOLDS_WITH_EVENTS`).
/// The seats nobody waits for go on open sale.
#[tokio::test]
async fn a_lapsed_holds_seat_goes_to_the_head_of_the_line_in_the_sweep_that_expires_it() {
    let h = Hospital::start(beijing(3, 9, 0), 1, ALL_COMMON).await;
    let schedule = h.schedules[sched::ENDO_AM].schedule_id;
    for segment in 0..7 {
        let held = h
            .book(
                &h.segment(sched::ENDO_AM, segment),
                Uuid::new_v4(),
                Channel::Kiosk,
            )
            .await
            .unwrap();
        assert_eq!(held.status, BookingStatus::Held, "endocrinology has a fee");
    }
    let waiter = Uuid::new_v4();
    let (entry, _) = waitlist::join(&h.state, schedule, &join(waiter)).await.unwrap();

    h.advance(11);
    assert_eq!(lifecycle::expire_holds(&h.state).await.unwrap(), 7);
    h.passes_done().await;
    let promoted = waitlist::get(&h.state, entry.entry_id).await.unwrap();
    assert_eq!(
        promoted.status, "promoted",
        "served by the sweep, not a later pass"
    );
    let booking = h.booking(promoted.booking_id.as_ref().unwrap()).await;
    assert_eq!(booking.patient_id, waiter);
    assert_eq!(booking.status, BookingStatus::Held);
    // The six other seats are on open sale again.
    let mut sold = 0;
    for segment in 0..7 {
        let slot = h.segment(sched::ENDO_AM, segment);
        if slot == booking.slot_id {
            continue;
        }
        h.book(&slot, Uuid::new_v4(), Channel::Window).await.unwrap();
        sold += 1;
        h.assert_consistent(&slot).await;
    }
    assert_eq!(sold, 6);
}
