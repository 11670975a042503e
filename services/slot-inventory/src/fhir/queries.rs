//! The SQL of the FHIR read models, one small function per statement.
//! Filters are fixed parameters (`$n IS NULL OR ...`) so every search runs
//! the same prepared statement; seats are counted in PostgreSQL, the source
//! of truth, in the snapshot the caller reads in.

use chrono::{DateTime, NaiveDate, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::{Error, Row};
use uuid::Uuid;

/// Which slots a search wants.
#[derive(Debug, Clone, Default)]
pub struct SlotFilter {
    pub ids: Option<Vec<Uuid>>,
    pub schedules: Option<Vec<Uuid>>,
    /// FHIR statuses: free, busy, busy-tentative, busy-unavailable.
    pub statuses: Option<Vec<String>>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub departments: Option<Vec<String>>,
    pub doctors: Option<Vec<Uuid>>,
    /// Visit dates from this one on (the bulk feed: today and later).
    pub from_date: Option<NaiveDate>,
}

/// One time segment as a Slot sees it.
#[derive(Debug, Clone)]
pub struct SlotRow {
    pub segment_id: Uuid,
    pub schedule_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub clinic_level: String,
    pub department_code: String,
    pub department_name: String,
    pub doctor_id: Uuid,
    pub doctor_name: String,
    /// Seats not taken by a live booking (0 when closed).
    pub seats_left: i64,
    /// free, busy, busy-tentative or busy-unavailable.
    pub status: String,
}

/// The FHIR status is decided here, once, so that the `status` filter and
/// the paging agree with what is shown: a clinic stopped (停诊) or not yet
/// released cannot be booked (busy-unavailable); a seat left is free; a
/// full segment is busy-tentative while a hold on it may still expire,
/// else busy.
const SLOTS: &str = "
    WITH slots AS (
        SELECT seg.id AS segment_id, seg.schedule_id, seg.starts_at, seg.ends_at,
               sch.clinic_level, dep.external_id AS department_code, dep.name AS department_name,
               doc.id AS doctor_id, doc.name AS doctor_name,
               CASE WHEN sch.status <> 'open' OR sch.release_at > $1 THEN 0
                    ELSE greatest(seg.capacity - b.live, 0) END AS seats_left,
               CASE WHEN sch.status <> 'open' OR sch.release_at > $1 THEN 'busy-unavailable'
                    WHEN seg.capacity > b.live THEN 'free'
                    WHEN b.held > 0 THEN 'busy-tentative'
                    ELSE 'busy' END AS status
          FROM segments seg
          JOIN schedules sch ON sch.id = seg.schedule_id
          JOIN departments dep ON dep.id = sch.department_id
          JOIN doctors doc ON doc.id = sch.doctor_id
          CROSS JOIN LATERAL (
              SELECT count(*) AS live, count(*) FILTER (WHERE bk.held) AS held
                FROM bookings bk WHERE bk.segment_id = seg.id AND bk.live) b
         WHERE ($2::uuid[] IS NULL OR seg.id = ANY($2))
           AND ($3::uuid[] IS NULL OR seg.schedule_id = ANY($3))
           AND ($4::timestamptz IS NULL OR seg.starts_at >= $4)
           AND ($5::timestamptz IS NULL OR seg.starts_at < $5)
           AND ($6::text[] IS NULL OR dep.external_id = ANY($6))
           AND ($7::uuid[] IS NULL OR doc.id = ANY($7))
           AND ($8::date IS NULL OR sch.visit_date >= $8))
    SELECT * FROM slots WHERE ($9::text[] IS NULL OR status = ANY($9))";

fn slots_sql(tail: &str) -> String {
    format!("{SLOTS} {tail}")
}

fn to_slot(r: &Row) -> SlotRow {
    SlotRow {
        segment_id: r.get("segment_id"),
        schedule_id: r.get("schedule_id"),
        starts_at: r.get("starts_at"),
        ends_at: r.get("ends_at"),
        clinic_level: r.get("clinic_level"),
        department_code: r.get("department_code"),
        department_name: r.get("department_name"),
        doctor_id: r.get("doctor_id"),
        doctor_name: r.get("doctor_name"),
        seats_left: r.get("seats_left"),
        status: r.get("status"),
    }
}

/// A page of slots in start order (then id, so pages never overlap);
/// `limit` `None` for all of them.
pub async fn slots<C: GenericClient>(
    client: &C,
    f: &SlotFilter,
    now: DateTime<Utc>,
    limit: Option<i64>,
    offset: i64,
) -> Result<Vec<SlotRow>, Error> {
    let sql = slots_sql("ORDER BY starts_at, segment_id LIMIT $10 OFFSET $11");
    Ok(client
        .query_cached(
            &sql,
            &[
                &now,
                &f.ids,
                &f.schedules,
                &f.from,
                &f.until,
                &f.departments,
                &f.doctors,
                &f.from_date,
                &f.statuses,
                &limit,
                &offset,
            ],
        )
        .await?
        .iter()
        .map(to_slot)
        .collect())
}

pub async fn count_slots<C: GenericClient>(
    client: &C,
    f: &SlotFilter,
    now: DateTime<Utc>,
) -> Result<i64, Error> {
    let sql = format!("SELECT count(*) FROM ({}) matched", slots_sql(""));
    Ok(client
        .query_one_cached(
            &sql,
            &[
                &now,
                &f.ids,
                &f.schedules,
                &f.from,
                &f.until,
                &f.departments,
                &f.doctors,
                &f.from_date,
                &f.statuses,
            ],
        )
        .await?
        .get(0))
}

/// Which schedules a search wants.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFilter {
    pub ids: Option<Vec<Uuid>>,
    pub departments: Option<Vec<String>>,
    pub doctors: Option<Vec<Uuid>>,
    /// Bounds on the schedule's first segment's start.
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub from_date: Option<NaiveDate>,
}

/// A schedule (one doctor's clinic session) as a Schedule sees it.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub schedule_id: Uuid,
    pub open: bool,
    pub session: String,
    pub clinic_level: String,
    pub stop_reason: Option<String>,
    pub department_code: String,
    pub department_name: String,
    pub doctor_id: Uuid,
    pub doctor_name: String,
    pub doctor_title: String,
    /// First segment's start and last one's end (the visit date's
    /// midnights when it has no segments).
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

const SCHEDULES: &str = "
    WITH sched AS (
        SELECT sch.id AS schedule_id, sch.status = 'open' AS open, sch.session, sch.clinic_level,
               sch.stop_reason, dep.external_id AS department_code, dep.name AS department_name,
               doc.id AS doctor_id, doc.name AS doctor_name, doc.title AS doctor_title,
               coalesce((SELECT min(starts_at) FROM segments WHERE schedule_id = sch.id),
                        sch.visit_date::timestamp AT TIME ZONE 'Asia/Shanghai') AS starts_at,
               coalesce((SELECT max(ends_at) FROM segments WHERE schedule_id = sch.id),
                        (sch.visit_date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai') AS ends_at
          FROM schedules sch
          JOIN departments dep ON dep.id = sch.department_id
          JOIN doctors doc ON doc.id = sch.doctor_id
         WHERE ($1::uuid[] IS NULL OR sch.id = ANY($1))
           AND ($2::text[] IS NULL OR dep.external_id = ANY($2))
           AND ($3::uuid[] IS NULL OR doc.id = ANY($3))
           AND ($4::date IS NULL OR sch.visit_date >= $4))
    SELECT * FROM sched
     WHERE ($5::timestamptz IS NULL OR starts_at >= $5) AND ($6::timestamptz IS NULL OR starts_at < $6)";

fn to_schedule(r: &Row) -> ScheduleRow {
    ScheduleRow {
        schedule_id: r.get("schedule_id"),
        open: r.get("open"),
        session: r.get("session"),
        clinic_level: r.get("clinic_level"),
        stop_reason: r.get("stop_reason"),
        department_code: r.get("department_code"),
        department_name: r.get("department_name"),
        doctor_id: r.get("doctor_id"),
        doctor_name: r.get("doctor_name"),
        doctor_title: r.get("doctor_title"),
        starts_at: r.get("starts_at"),
        ends_at: r.get("ends_at"),
    }
}

pub async fn schedules<C: GenericClient>(
    client: &C,
    f: &ScheduleFilter,
    limit: Option<i64>,
    offset: i64,
) -> Result<Vec<ScheduleRow>, Error> {
    let sql = format!("{SCHEDULES} ORDER BY starts_at, schedule_id LIMIT $7 OFFSET $8");
    Ok(client
        .query_cached(
            &sql,
            &[
                &f.ids,
                &f.departments,
                &f.doctors,
                &f.from_date,
                &f.from,
                &f.until,
                &limit,
                &offset,
            ],
        )
        .await?
        .iter()
        .map(to_schedule)
        .collect())
}

pub async fn count_schedules<C: GenericClient>(client: &C, f: &ScheduleFilter) -> Result<i64, Error> {
    let sql = format!("SELECT count(*) FROM ({SCHEDULES}) matched");
    Ok(client
        .query_one_cached(
            &sql,
            &[
                &f.ids,
                &f.departments,
                &f.doctors,
                &f.from_date,
                &f.from,
                &f.until,
            ],
        )
        .await?
        .get(0))
}

/// What an Appointment shows of its schedule besides the booking itself.
#[derive(Debug, Clone)]
pub struct ScheduleContext {
    pub doctor_id: Uuid,
    pub doctor_name: String,
    pub department_code: String,
    pub department_name: String,
    pub clinic_level: String,
    pub stop_reason: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

pub async fn schedule_context<C: GenericClient>(
    client: &C,
    schedule: Uuid,
) -> Result<Option<ScheduleContext>, Error> {
    Ok(schedules(
        client,
        &ScheduleFilter {
            ids: Some(vec![schedule]),
            ..Default::default()
        },
        Some(1),
        0,
    )
    .await?
    .into_iter()
    .next()
    .map(|s| ScheduleContext {
        doctor_id: s.doctor_id,
        doctor_name: s.doctor_name,
        department_code: s.department_code,
        department_name: s.department_name,
        clinic_level: s.clinic_level,
        stop_reason: s.stop_reason,
        starts_at: s.starts_at,
        ends_at: s.ends_at,
    }))
}

/// A waitlist entry: (schedule, patient, status, promoted booking, joined).
pub async fn waitlist_entry<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<(Uuid, Uuid, String, Option<Uuid>, DateTime<Utc>)>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT schedule_id, patient_id, status, booking_id, created_at FROM waitlist_entries WHERE id = $1",
            &[&id],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))))
}

/// What the bulk feed's ETag is made of, read in the snapshot the files
/// are built from.
#[derive(Debug, Clone)]
pub struct FeedVersion {
    /// Bumped with every change of schedules, segments, doctors, departments.
    pub catalog: i64,
    /// The last booking change given a feed position.
    pub feed_position: i64,
    /// Booking changes committed but not yet given a position.
    pub unsequenced: Vec<i64>,
    /// The latest release instant already passed.
    pub released: Option<DateTime<Utc>>,
    /// When the newest of these changes happened.
    pub changed_at: DateTime<Utc>,
}

pub async fn feed_version<C: GenericClient>(client: &C, now: DateTime<Utc>) -> Result<FeedVersion, Error> {
    let r = client
        .query_one_cached(
            "SELECT c.n, c.changed_at,
                    (SELECT coalesce(max(feed_seq), 0) FROM outbox),
                    (SELECT coalesce(array_agg(seq ORDER BY seq), '{}') FROM outbox WHERE feed_seq IS NULL),
                    (SELECT max(occurred_at) FROM outbox
                      WHERE feed_seq IS NULL OR feed_seq = (SELECT max(feed_seq) FROM outbox)),
                    (SELECT max(release_at) FROM schedules
                      WHERE release_at <= $1 AND release_at > '-infinity')
               FROM catalog_version c WHERE c.id = 1",
            &[&now],
        )
        .await?;
    let catalog_at: DateTime<Utc> = r.get(1);
    let booking_at: Option<DateTime<Utc>> = r.get(4);
    let released: Option<DateTime<Utc>> = r.get(5);
    let changed_at = [Some(catalog_at), booking_at, released]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(catalog_at);
    Ok(FeedVersion {
        catalog: r.get(0),
        feed_position: r.get(2),
        unsequenced: r.get(3),
        released,
        changed_at,
    })
}
