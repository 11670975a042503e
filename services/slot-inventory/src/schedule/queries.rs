//! The SQL of schedules, one small function per statement.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::{Error, Row};
use uuid::Uuid;

use super::NewSchedule;
use crate::policy::Policy;

/// Ids of a stored schedule and its segments (in time order).
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    pub schedule_id: Uuid,
    pub segment_ids: Vec<Uuid>,
}

/// Create or update a schedule with its department, doctor and segments,
/// matched by the hospital's own ids. Run inside a transaction.
/// `release_at` is when the schedule opens under the current policy; an
/// existing schedule that is already open keeps its instant.
pub async fn upsert_schedule<C: GenericClient>(
    client: &C,
    s: &NewSchedule,
    release_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<StoredSchedule, Error> {
    let department_id: Uuid = client
        .query_one_cached(
            "INSERT INTO departments (id, external_id, name) VALUES ($1, $2, $3)
             ON CONFLICT (external_id) DO UPDATE SET name = EXCLUDED.name
             RETURNING id",
            &[&Uuid::now_v7(), &s.department.external_id, &s.department.name],
        )
        .await?
        .get(0);
    let doctor_id: Uuid = client
        .query_one_cached(
            "INSERT INTO doctors (id, external_id, department_id, name, title) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (external_id) DO UPDATE
                SET department_id = EXCLUDED.department_id, name = EXCLUDED.name, title = EXCLUDED.title
             RETURNING id",
            &[
                &Uuid::now_v7(),
                &s.doctor.external_id,
                &department_id,
                &s.doctor.name,
                &s.doctor.title,
            ],
        )
        .await?
        .get(0);
    let schedule_id: Uuid = client
        .query_one_cached(
            "INSERT INTO schedules (id, external_id, doctor_id, department_id, visit_date, session,
                                    clinic_level, fee_fen, release_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (external_id) DO UPDATE
                SET doctor_id = EXCLUDED.doctor_id, department_id = EXCLUDED.department_id,
                    visit_date = EXCLUDED.visit_date, session = EXCLUDED.session,
                    clinic_level = EXCLUDED.clinic_level, fee_fen = EXCLUDED.fee_fen,
                    release_at = CASE WHEN schedules.release_at > $10 THEN EXCLUDED.release_at
                                      ELSE schedules.release_at END
             RETURNING id",
            &[
                &Uuid::now_v7(),
                &s.external_id,
                &doctor_id,
                &department_id,
                &s.visit_date,
                &s.session.as_str(),
                &s.clinic_level.as_str(),
                &s.fee_fen,
                &release_at,
                &now,
            ],
        )
        .await?
        .get(0);
    for seg in &s.segments {
        client
            .execute_cached(
                "INSERT INTO segments (id, schedule_id, starts_at, ends_at, capacity)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (schedule_id, starts_at) DO UPDATE
                    SET ends_at = EXCLUDED.ends_at, capacity = EXCLUDED.capacity",
                &[
                    &Uuid::now_v7(),
                    &schedule_id,
                    &seg.starts_at,
                    &seg.ends_at,
                    &seg.capacity,
                ],
            )
            .await?;
    }
    let segment_ids = client
        .query_cached(
            "SELECT id FROM segments WHERE schedule_id = $1 ORDER BY starts_at",
            &[&schedule_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(StoredSchedule {
        schedule_id,
        segment_ids,
    })
}

/// Recompute the release instant of every schedule not yet released from
/// the current policy; released ones keep theirs (a policy change must never
/// close what patients could already book).
pub async fn apply_release_policy<C: GenericClient>(
    client: &C,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    let window = i32::try_from(policy.window_days).unwrap_or(7);
    let time: NaiveTime = policy.release_time;
    client
        .execute_cached(
            "UPDATE schedules
                SET release_at = ((visit_date - $1::int) + $2::time) AT TIME ZONE 'Asia/Shanghai'
              WHERE release_at > $3",
            &[&window, &time, &now],
        )
        .await
}

/// Every segment of a date with its schedule, doctor and department, and
/// how many live bookings it has, in display order.
pub async fn segments_on<C: GenericClient>(client: &C, date: NaiveDate) -> Result<Vec<Row>, Error> {
    client
        .query_cached(
            "SELECT sch.id AS schedule_id, sch.session, sch.clinic_level, sch.fee_fen, sch.status,
                        dep.external_id AS department_id, dep.name AS department_name,
                        doc.external_id AS doctor_id, doc.name AS doctor_name, doc.title AS doctor_title,
                        seg.id AS segment_id, seg.starts_at, seg.ends_at, seg.capacity,
                        (SELECT count(*) FROM bookings b
                          WHERE b.segment_id = seg.id AND b.live) AS live
                   FROM schedules sch
                   JOIN departments dep ON dep.id = sch.department_id
                   JOIN doctors doc ON doc.id = sch.doctor_id
                   JOIN segments seg ON seg.schedule_id = sch.id
                  WHERE sch.visit_date = $1
                  ORDER BY dep.external_id, doc.external_id, seg.starts_at",
            &[&date],
        )
        .await
}
