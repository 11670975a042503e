//! A booking carries the facts of its visit (V21): its date, its segment's
//! times, its department and doctor, copied when it is written so that no
//! write or read of a booking joins the catalogue. The copies follow the
//! catalogue when it changes, including for a booking whose write was in
//! flight while it changed.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use jyt_domain::{BookingRef, Channel};
use slot_inventory::booking::queries::insert_bookings_with_events;
use uuid::Uuid;

use crate::helpers::{ALL_COMMON, Hospital, beijing, sched, won};

/// The schedule's doctor and department ids.
async fn doctor_and_department(h: &Hospital, schedule: Uuid) -> (Uuid, Uuid) {
    let client = h.state.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT doctor_id, department_id FROM schedules WHERE id = $1",
            &[&schedule],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The row version of a booking: changes whenever the row is written.
async fn version(h: &Hospital, id: &BookingRef) -> String {
    let client = h.state.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT ctid::text || xmin::text FROM bookings WHERE id = $1",
            &[&id.id],
        )
        .await
        .unwrap()
        .get(0)
}

/// A renamed doctor and department, another doctor for the schedule (替诊)
/// and a moved segment end show in the booking as it is read, and in the
/// event of its next change; a republish that changes nothing does not
/// write the booking at all.
#[tokio::test]
async fn a_booking_reads_its_catalogue_as_it_is_now_and_a_change_of_nothing_writes_nothing() {
    let h = Hospital::start(beijing(2, 9, 0), 3, &[]).await;
    let booked = h.book_expert(Channel::Kiosk).await;
    let schedule = h.schedules[sched::CARDIO_EXPERT_AM].schedule_id;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let (doctor, department) = doctor_and_department(&h, schedule).await;
    let client = h.state.pool.get().await.unwrap();

    // What the federation's republish of an unchanged catalogue does.
    let before = version(&h, &booked.booking_id).await;
    client
        .execute(
            "UPDATE doctors SET name = name, external_id = external_id WHERE id = $1",
            &[&doctor],
        )
        .await
        .unwrap();
    client
        .execute("UPDATE departments SET name = name WHERE id = $1", &[&department])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE schedules SET doctor_id = doctor_id, visit_date = visit_date WHERE id = $1",
            &[&schedule],
        )
        .await
        .unwrap();
    client
        .execute("UPDATE segments SET ends_at = ends_at WHERE id = $1", &[&slot.id])
        .await
        .unwrap();
    assert_eq!(
        version(&h, &booked.booking_id).await,
        before,
        "nothing changed, nothing written"
    );

    client
        .execute("UPDATE doctors SET name = '王主任' WHERE id = $1", &[&doctor])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE departments SET name = '心血管内科' WHERE id = $1",
            &[&department],
        )
        .await
        .unwrap();
    let renamed = h.booking(&booked.booking_id).await;
    assert_eq!(renamed.doctor, "王主任");
    assert_eq!(renamed.department, "心血管内科");

    // 替诊: another doctor takes the schedule; the segment ends later.
    let substitute = Uuid::now_v7();
    client
        .execute(
            "INSERT INTO doctors (id, external_id, department_id, name, title)
             VALUES ($1, 'sub-1', $2, '李医生', '副主任医师')",
            &[&substitute, &department],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE schedules SET doctor_id = $2 WHERE id = $1",
            &[&schedule, &substitute],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE segments SET ends_at = ends_at + interval '10 minutes' WHERE id = $1",
            &[&slot.id],
        )
        .await
        .unwrap();
    let moved = h.booking(&booked.booking_id).await;
    assert_eq!(moved.doctor, "李医生");
    assert_eq!(moved.department, "心血管内科");
    assert_eq!(
        moved.segment_ends_at,
        booked.segment_ends_at + TimeDelta::minutes(10)
    );
    assert_eq!(moved.segment_starts_at, booked.segment_starts_at);
    assert_eq!(moved.visit_date, booked.visit_date);

    // The booking's next event is built from the row: it names them too.
    slot_inventory::booking::lifecycle::cancel(
        &h.state,
        &booked.booking_id,
        &slot_inventory::booking::lifecycle::CancelRequest {
            patient_id: booked.patient_id,
        },
    )
    .await
    .unwrap();
    let payload: serde_json::Value = client
        .query_one(
            "SELECT payload FROM outbox WHERE event_type = 'booking.cancelled'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["doctor"], "李医生");
    assert_eq!(payload["department"], "心血管内科");
}

/// A booking written while its doctor is renamed: the write read the old
/// name, and is not committed when the rename runs. The rename waits for it
/// (V21's triggers take `bookings` in SHARE ROW EXCLUSIVE mode first), then
/// renames it too. Without that lock the rename finished at once and the
/// booking kept the old name for good.
#[tokio::test]
async fn a_booking_written_while_its_doctor_is_renamed_carries_the_new_name() {
    let h = Hospital::start(beijing(2, 9, 0), 12, ALL_COMMON).await;
    let slot = h.segment(sched::CARDIO_EXPERT_AM, 0);
    let schedule = h.schedules[sched::CARDIO_EXPERT_AM].schedule_id;
    let (doctor, _) = doctor_and_department(&h, schedule).await;
    let rows = vec![won(&h, &slot, 1), won(&h, &slot, 2)];

    let mut writing = h.state.pool.get().await.unwrap();
    let tx = writing.transaction().await.unwrap();
    let written = insert_bookings_with_events(&tx, &h.state.hospital, &rows)
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    let old_name = written[0].booking.doctor.clone();
    assert_ne!(old_name, "赵主任");

    let renamer = h.state.pool.get().await.unwrap();
    let renamer_pid: i32 = renamer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let rename = tokio::spawn(async move {
        renamer
            .execute("UPDATE doctors SET name = '赵主任' WHERE id = $1", &[&doctor])
            .await
    });

    // The rename waits for the write in flight, on the bookings table.
    let watcher = h.state.pool.get().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: bool = watcher
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks
                                 WHERE pid = $1 AND NOT granted AND relation = 'bookings'::regclass)",
                &[&renamer_pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        assert!(
            !rename.is_finished(),
            "the rename did not wait for the booking write in flight"
        );
        assert!(
            Instant::now() < deadline,
            "the rename never reached the bookings lock"
        );
        tokio::task::yield_now().await;
    }

    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), rename)
        .await
        .expect("the rename finishes once the write is committed")
        .unwrap()
        .unwrap();
    for r in &rows {
        let b = h.booking(&BookingRef::new(h.state.hospital.clone(), r.id)).await;
        assert_eq!(b.doctor, "赵主任", "the booking written during the rename");
    }
}
