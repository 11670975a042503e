//! The SQL of bookings, one small function per statement. Times come in as
//! parameters from the service's clock, never from `now()`, so tests can
//! drive time.

use jyt_db::Prepared;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::types::ToSql;
use jyt_db::tokio_postgres::{Error, Row};
use jyt_domain::time::local;
use jyt_domain::{BookingRef, BookingStatus, Channel, Fen, HospitalId, SlotRef};
use uuid::Uuid;

use super::Booking;
use super::waitlist_queries::SERVED_LINES;

const SELECT_BOOKING: &str = "
    SELECT b.id, b.segment_id, b.schedule_id, b.patient_id, b.channel, b.status, b.seat_no,
           b.fee_fen, b.created_at, b.idempotency_key, b.pool, b.visit_no, b.pickup_code,
           b.hold_deadline, b.payment_reference, b.payment_method, b.queue_no, b.referral_id,
           b.pickup_failures, b.owner_app, b.visit_date, b.segment_starts_at AS starts_at,
           b.segment_ends_at AS ends_at, b.department_name AS department,
           b.department_external_id AS department_id, b.doctor_name AS doctor,
           b.doctor_external_id AS doctor_id
      FROM bookings b";

/// A write and the read-back of what it wrote, in one statement: `ctes`
/// must include a CTE named `b` that returns the `bookings` row
/// (`RETURNING *`); the booking columns are read under that alias, as
/// [`get_booking`] reads them.
fn with_read_back(ctes: &str) -> String {
    format!("WITH {ctes} {}", read_back_of_b())
}

/// [`SELECT_BOOKING`] over the CTE `b` (a write's `RETURNING *`) instead
/// of the table.
fn read_back_of_b() -> String {
    SELECT_BOOKING.replacen("FROM bookings b", "FROM b", 1)
}

// The reads of [`SELECT_BOOKING`], each built once (they are prepared per
// connection by their text, and were formatted anew on every call).
static BOOKING_BY_ID: LazyLock<String> = LazyLock::new(|| format!("{SELECT_BOOKING} WHERE b.id = $1"));
static BOOKINGS_BY_ID: LazyLock<String> = LazyLock::new(|| format!("{SELECT_BOOKING} WHERE b.id = ANY($1)"));
static BOOKING_BY_ID_FOR_UPDATE: LazyLock<String> =
    LazyLock::new(|| format!("{SELECT_BOOKING} WHERE b.id = $1 FOR UPDATE OF b"));
static BOOKING_BY_IDEMPOTENCY_KEY: LazyLock<String> =
    LazyLock::new(|| format!("{SELECT_BOOKING} WHERE b.patient_id = $1 AND b.idempotency_key = $2"));
static PATIENT_BOOKINGS: LazyLock<String> = LazyLock::new(|| {
    format!("{SELECT_BOOKING} WHERE b.patient_id = $1 ORDER BY b.segment_starts_at DESC, b.id LIMIT $2")
});

/// A stored booking with what only the service needs to see.
#[derive(Debug, Clone)]
pub struct StoredBooking {
    pub booking: Booking,
    pub segment_id: Uuid,
    pub idempotency_key: String,
    pub payment_reference: Option<String>,
    pub department_id: String,
    /// The doctor's external (hospital) id: the survey's figures are per doctor.
    pub doctor_id: String,
    pub segment_starts_at: DateTime<Utc>,
    pub segment_ends_at: DateTime<Utc>,
    /// Wrong pick-up codes tried so far: check-in with a code locks at a
    /// limit, so the six digits cannot be guessed.
    pub pickup_failures: i16,
}

fn to_stored(hospital: &HospitalId, row: &Row) -> StoredBooking {
    let segment_id: Uuid = row.get("segment_id");
    let channel: String = row.get("channel");
    let status: String = row.get("status");
    let starts_at: DateTime<Utc> = row.get("starts_at");
    let ends_at: DateTime<Utc> = row.get("ends_at");
    StoredBooking {
        booking: Booking {
            booking_id: BookingRef::new(hospital.clone(), row.get("id")),
            hospital_id: hospital.clone(),
            slot_id: SlotRef::new(hospital.clone(), segment_id),
            schedule_id: row.get("schedule_id"),
            patient_id: row.get("patient_id"),
            // The CHECK constraints keep these columns to known values.
            channel: Channel::from_str(&channel).unwrap_or(Channel::Window),
            owner_app: row.get("owner_app"),
            status: BookingStatus::from_str(&status).unwrap_or(BookingStatus::Held),
            seat_number: row.get("seat_no"),
            visit_number: row.get("visit_no"),
            pool: row.get("pool"),
            pickup_code: row.get("pickup_code"),
            // The deadline is kept as history, but shown only while it binds.
            hold_deadline: row
                .get::<_, Option<DateTime<Utc>>>("hold_deadline")
                .filter(|_| status == "held")
                .map(local),
            payment_method: row.get("payment_method"),
            queue_number: row.get("queue_no"),
            referral_id: row.get("referral_id"),
            visit_date: row.get("visit_date"),
            segment_starts_at: local(starts_at),
            segment_ends_at: local(ends_at),
            department: row.get("department"),
            doctor: row.get("doctor"),
            fee_fen: Fen(row.get("fee_fen")),
            created_at: local(row.get("created_at")),
        },
        segment_id,
        idempotency_key: row.get("idempotency_key"),
        payment_reference: row.get("payment_reference"),
        department_id: row.get("department_id"),
        doctor_id: row.get("doctor_id"),
        segment_starts_at: starts_at,
        segment_ends_at: ends_at,
        pickup_failures: row.get("pickup_failures"),
    }
}

pub async fn get_booking<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
) -> Result<Option<StoredBooking>, Error> {
    Ok(client
        .query_opt_cached(&BOOKING_BY_ID, &[&id])
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// The bookings of these ids that exist, in no particular order.
pub async fn get_bookings<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    ids: &[Uuid],
) -> Result<Vec<StoredBooking>, Error> {
    Ok(client
        .query_cached(&BOOKINGS_BY_ID, &[&ids])
        .await?
        .iter()
        .map(|r| to_stored(hospital, r))
        .collect())
}

/// The same, locking the booking row for a state change.
pub async fn get_booking_for_update<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
) -> Result<Option<StoredBooking>, Error> {
    Ok(client
        .query_opt_cached(&BOOKING_BY_ID_FOR_UPDATE, &[&id])
        .await?
        .map(|r| to_stored(hospital, &r)))
}

pub async fn get_booking_by_idempotency_key<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    patient: Uuid,
    key: &str,
) -> Result<Option<StoredBooking>, Error> {
    Ok(client
        .query_opt_cached(&BOOKING_BY_IDEMPOTENCY_KEY, &[&patient, &key])
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// The row to insert for a won hold.
#[derive(Debug, Clone)]
pub struct NewBooking<'a> {
    pub id: Uuid,
    pub segment_id: Uuid,
    pub patient_id: Uuid,
    pub channel: Channel,
    pub seat_no: i32,
    pub pool: &'a str,
    pub visit_no: i32,
    pub pickup_code: &'a str,
    pub idempotency_key: &'a str,
    pub referral_id: Option<&'a str>,
    /// The channel app the booking belongs to (`booking::owner`).
    pub owner_app: Option<&'a str>,
    /// Used only if the visit has a fee: then the booking is `held` until
    /// paid; a free visit is `confirmed` at once.
    pub hold_deadline: DateTime<Utc>,
}

/// The visit a booking carries (V21), as [`INSERT_BOOKING`] and
/// [`INSERT_BOOKINGS_WITH_EVENTS`] copy it at the insert: its columns
/// (`visit_columns!`), their values from the catalogue rows the insert
/// reads (`visit_from_catalogue!`, over `seg` and `sch`) and the joins
/// that reach the department and the doctor (`catalogue_joins!`). Macros,
/// not consts, so the statements stay `concat!`ed literals.
macro_rules! visit_columns {
    () => {
        "visit_date, segment_starts_at, segment_ends_at, department_name,
         department_external_id, doctor_name, doctor_external_id"
    };
}
macro_rules! visit_from_catalogue {
    () => {
        "sch.visit_date, seg.starts_at, seg.ends_at, dep.name, dep.external_id, doc.name,
         doc.external_id"
    };
}
macro_rules! catalogue_joins {
    () => {
        "
      JOIN departments dep ON dep.id = sch.department_id
      JOIN doctors doc ON doc.id = sch.doctor_id"
    };
}

/// The insert of a won hold: a row only if the seat is within the
/// segment's capacity and the schedule is open. Unique indexes refuse a
/// taken seat. A parameter written to a column of a domain's type is cast
/// to the domain's base type, which the driver binds (V24).
const INSERT_BOOKING: &str = concat!(
    "
    INSERT INTO bookings (id, segment_id, schedule_id, patient_id, channel, seat_no, status,
                          fee_fen, idempotency_key, pool, visit_no, pickup_code, hold_deadline,
                          referral_id, owner_app, ",
    visit_columns!(),
    ")
    SELECT $1, seg.id, seg.schedule_id, $3, $4::text, $5::int4,
           CASE WHEN sch.fee_fen > 0 THEN 'held' ELSE 'confirmed' END,
           sch.fee_fen, $6, $7::text, $8, $9,
           CASE WHEN sch.fee_fen > 0 THEN $10::timestamptz END, $11, $12::text, ",
    visit_from_catalogue!(),
    "
      FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id",
    catalogue_joins!(),
    "
     WHERE seg.id = $2 AND $5 <= seg.capacity AND sch.status = 'open'"
);

/// [`INSERT_BOOKING`]'s parameters, in order.
fn insert_params<'a>(b: &'a NewBooking<'a>, channel: &'a &'a str) -> [&'a (dyn ToSql + Sync); 12] {
    [
        &b.id,
        &b.segment_id,
        &b.patient_id,
        channel,
        &b.seat_no,
        &b.idempotency_key,
        &b.pool,
        &b.visit_no,
        &b.pickup_code,
        &b.hold_deadline,
        &b.referral_id,
        &b.owner_app,
    ]
}

/// Insert a booking, unless its seat is beyond the segment's capacity or its
/// schedule is stopped; `None` then. Unique indexes refuse a taken seat.
pub async fn insert_booking<C: GenericClient>(client: &C, b: &NewBooking<'_>) -> Result<Option<Uuid>, Error> {
    // Prepared once per connection (the surge's winners each insert one).
    let insert = client.prepare_cached(&INSERT_BOOKING_RETURNING_ID).await?;
    let channel = b.channel.as_str();
    let row = client.query_opt(&insert, &insert_params(b, &channel)).await?;
    Ok(row.map(|r| r.get(0)))
}

/// [`INSERT_BOOKING`] answering the new row's id (built once, not per booking).
static INSERT_BOOKING_RETURNING_ID: LazyLock<String> =
    LazyLock::new(|| format!("{INSERT_BOOKING} RETURNING id"));

/// A won hold for a plain booking (no referral, waitlist, offer or draw:
/// those are written statement by statement) and its `booking.held` or
/// `booking.confirmed` event, owned: [`INSERT_BOOKINGS_WITH_EVENTS`]
/// writes many at once.
#[derive(Debug, Clone)]
pub struct BookingToWrite {
    pub id: Uuid,
    pub segment_id: Uuid,
    pub patient_id: Uuid,
    pub channel: Channel,
    pub seat_no: i32,
    pub pool: String,
    pub visit_no: i32,
    pub pickup_code: String,
    pub idempotency_key: String,
    pub owner_app: Option<String>,
    /// Used only if the visit has a fee (as [`NewBooking::hold_deadline`]).
    pub hold_deadline: DateTime<Utc>,
    pub event_id: Uuid,
    /// The event's aggregate: the booking's public reference.
    pub aggregate_id: String,
    /// What `events::payload` makes of the booking, except what only the
    /// database knows at the insert (merged in by the statement).
    pub payload: serde_json::Value,
}

impl BookingToWrite {
    /// `b`, owned, with its event. `b` names no referral: a referral's
    /// booking is written statement by statement.
    pub fn new(b: &NewBooking<'_>, event_id: Uuid, aggregate_id: String, payload: serde_json::Value) -> Self {
        debug_assert!(b.referral_id.is_none(), "a referral's booking is not batched");
        Self {
            id: b.id,
            segment_id: b.segment_id,
            patient_id: b.patient_id,
            channel: b.channel,
            seat_no: b.seat_no,
            pool: b.pool.to_owned(),
            visit_no: b.visit_no,
            pickup_code: b.pickup_code.to_owned(),
            idempotency_key: b.idempotency_key.to_owned(),
            owner_app: b.owner_app.map(str::to_owned),
            hold_deadline: b.hold_deadline,
            event_id,
            aggregate_id,
            payload,
        }
    }

    /// The row as [`INSERT_BOOKING`]'s parameters take it.
    fn as_new(&self) -> NewBooking<'_> {
        NewBooking {
            id: self.id,
            segment_id: self.segment_id,
            patient_id: self.patient_id,
            channel: self.channel,
            seat_no: self.seat_no,
            pool: &self.pool,
            visit_no: self.visit_no,
            pickup_code: &self.pickup_code,
            idempotency_key: &self.idempotency_key,
            referral_id: None,
            owner_app: self.owner_app.as_deref(),
            hold_deadline: self.hold_deadline,
        }
    }
}

/// [`INSERT_BOOKING`] answering the stored booking (read back as
/// [`get_booking`] reads it), with the new booking's event appended to
/// the outbox in the same statement: one round trip and one (implicit)
/// transaction. The event is `booking.held` or `booking.confirmed`, by
/// the status the insert gave. Its payload ($15) is what
/// `events::payload` makes of the booking, except what only the database
/// knows at the insert: the status, the fee, and the department's and
/// doctor's names, which are merged in here, and the hold's deadline,
/// kept only if the insert made a hold. Nothing is appended when
/// nothing is inserted. Params 13 and 14: the event's id and aggregate id.
/// A booking written alone takes this form: the array form
/// ([`INSERT_BOOKINGS_WITH_EVENTS`]) cost a quarter more for one row in
/// the load test's day (0.46 against 0.36 ms a statement).
pub static INSERT_BOOKING_WITH_EVENT: LazyLock<String> = LazyLock::new(|| {
    with_read_back(&format!(
        "b AS ({INSERT_BOOKING} RETURNING *),
         o AS (
            INSERT INTO outbox (event_id, event_type, aggregate_id, payload)
            SELECT $13, CASE WHEN b.status = 'held' THEN 'booking.held' ELSE 'booking.confirmed' END, $14,
                   $15::jsonb || jsonb_build_object('status', b.status, 'fee_fen', b.fee_fen,
                                                    'department', b.department_name,
                                                    'doctor', b.doctor_name,
                                                    'hold_deadline',
                                                    CASE WHEN b.status = 'held' THEN $15::jsonb -> 'hold_deadline' END)
              FROM b)"
    ))
});

/// Run [`INSERT_BOOKING_WITH_EVENT`] for one booking.
async fn insert_booking_with_event<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    row: &BookingToWrite,
) -> Result<Option<StoredBooking>, Error> {
    let b = row.as_new();
    let channel = b.channel.as_str();
    let [p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12] = insert_params(&b, &channel);
    Ok(client
        .query_opt_cached(
            &INSERT_BOOKING_WITH_EVENT,
            &[
                p1,
                p2,
                p3,
                p4,
                p5,
                p6,
                p7,
                p8,
                p9,
                p10,
                p11,
                p12,
                &row.event_id,
                &row.aggregate_id,
                &row.payload,
            ],
        )
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// Bookings and their events, any number in one statement: one round
/// trip and one (implicit) transaction, so one commit for a whole batch
/// of the surge's winners (`booking::writer`, issue 20: W against I).
/// Each row is [`INSERT_BOOKING`]'s: inserted only if its seat is within
/// its segment's capacity and its schedule is open; unique indexes refuse
/// a taken seat, and then nothing of the batch is written. Each inserted
/// booking's event is appended to the outbox in the same statement:
/// `booking.held` or `booking.confirmed` by the status the insert gave,
/// its payload merged with the status, the fee, and the department's and
/// doctor's names. Answers the stored bookings (read back as
/// [`get_booking`] reads them), in no particular order.
pub static INSERT_BOOKINGS_WITH_EVENTS: LazyLock<String> = LazyLock::new(|| {
    with_read_back(concat!(
        "i AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int4[], $6::text[],
                                 $7::text[], $8::int4[], $9::text[], $10::timestamptz[], $11::text[],
                                 $12::uuid[], $13::text[], $14::jsonb[])
                AS i (id, segment_id, patient_id, channel, seat_no, idempotency_key, pool, visit_no,
                      pickup_code, hold_deadline, owner_app, event_id, aggregate_id, payload)),
         b AS (
            INSERT INTO bookings (id, segment_id, schedule_id, patient_id, channel, seat_no, status,
                                  fee_fen, idempotency_key, pool, visit_no, pickup_code, hold_deadline,
                                  owner_app, ",
        visit_columns!(),
        ")
            SELECT i.id, seg.id, seg.schedule_id, i.patient_id, i.channel, i.seat_no,
                   CASE WHEN sch.fee_fen > 0 THEN 'held' ELSE 'confirmed' END,
                   sch.fee_fen, i.idempotency_key, i.pool, i.visit_no, i.pickup_code,
                   CASE WHEN sch.fee_fen > 0 THEN i.hold_deadline END, i.owner_app, ",
        visit_from_catalogue!(),
        "
              FROM i JOIN segments seg ON seg.id = i.segment_id
                     JOIN schedules sch ON sch.id = seg.schedule_id",
        catalogue_joins!(),
        "
             WHERE i.seat_no <= seg.capacity AND sch.status = 'open'
            RETURNING *),
         o AS (
            INSERT INTO outbox (event_id, event_type, aggregate_id, payload)
            SELECT i.event_id, CASE WHEN b.status = 'held' THEN 'booking.held' ELSE 'booking.confirmed' END,
                   i.aggregate_id,
                   i.payload || jsonb_build_object('status', b.status, 'fee_fen', b.fee_fen,
                                                   'department', b.department_name,
                                                   'doctor', b.doctor_name,
                                                   'hold_deadline',
                                                   CASE WHEN b.status = 'held' THEN i.payload -> 'hold_deadline' END)
              FROM b JOIN i ON i.id = b.id)",
    ))
});

/// Write `rows` and their events in one statement: the stored bookings,
/// without those whose seat is beyond their segment's capacity or whose
/// schedule is stopped (and then without their events). One row takes
/// [`INSERT_BOOKING_WITH_EVENT`], more [`INSERT_BOOKINGS_WITH_EVENTS`].
pub async fn insert_bookings_with_events<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    rows: &[BookingToWrite],
) -> Result<Vec<StoredBooking>, Error> {
    if let [row] = rows {
        return Ok(insert_booking_with_event(client, hospital, row)
            .await?
            .into_iter()
            .collect());
    }
    let column = |f: fn(&BookingToWrite) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let segments: Vec<Uuid> = rows.iter().map(|r| r.segment_id).collect();
    let patients: Vec<Uuid> = rows.iter().map(|r| r.patient_id).collect();
    let channels = column(|r| r.channel.as_str());
    let seats: Vec<i32> = rows.iter().map(|r| r.seat_no).collect();
    let keys = column(|r| &r.idempotency_key);
    let pools = column(|r| &r.pool);
    let visit_nos: Vec<i32> = rows.iter().map(|r| r.visit_no).collect();
    let codes = column(|r| &r.pickup_code);
    let deadlines: Vec<DateTime<Utc>> = rows.iter().map(|r| r.hold_deadline).collect();
    let owner_apps: Vec<Option<&str>> = rows.iter().map(|r| r.owner_app.as_deref()).collect();
    let event_ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let aggregates = column(|r| &r.aggregate_id);
    let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.payload).collect();
    Ok(client
        .query_cached(
            &INSERT_BOOKINGS_WITH_EVENTS,
            &[
                &ids,
                &segments,
                &patients,
                &channels,
                &seats,
                &keys,
                &pools,
                &visit_nos,
                &codes,
                &deadlines,
                &owner_apps,
                &event_ids,
                &aggregates,
                &payloads,
            ],
        )
        .await?
        .iter()
        .map(|r| to_stored(hospital, r))
        .collect())
}

/// Facts about a segment that never change once it exists: cached in the
/// service so the surge path can name its Redis keys without PostgreSQL.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub segment_id: Uuid,
    pub schedule_id: Uuid,
    /// The department's external (hospital) id.
    pub department: String,
    pub department_name: String,
    pub clinic_level: String,
    pub visit_date: NaiveDate,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

pub async fn segment_info<C: GenericClient>(client: &C, segment: Uuid) -> Result<Option<SegmentInfo>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT seg.id, seg.schedule_id, dep.external_id, dep.name, sch.clinic_level, sch.visit_date,
                    seg.starts_at, seg.ends_at
               FROM segments seg
               JOIN schedules sch ON sch.id = seg.schedule_id
               JOIN departments dep ON dep.id = sch.department_id
              WHERE seg.id = $1",
            &[&segment],
        )
        .await?
        .map(|r| SegmentInfo {
            segment_id: r.get(0),
            schedule_id: r.get(1),
            department: r.get(2),
            department_name: r.get(3),
            clinic_level: r.get(4),
            visit_date: r.get(5),
            starts_at: r.get(6),
            ends_at: r.get(7),
        }))
}

/// What Redis needs to rebuild one segment.
#[derive(Debug, Clone)]
pub struct SegmentState {
    pub capacity: i32,
    pub open: bool,
    pub release_at: DateTime<Utc>,
    /// (seat, patient, booking, pool) of every live booking.
    pub live: Vec<(i32, Uuid, Uuid, String)>,
    pub highest_visit_no: i32,
    /// Patients waiting for a seat of the schedule: in its own line, and
    /// for a session published for the waitlist, in the lines it serves.
    pub waiting: i64,
    /// A lottery schedule not drawn yet: first-come attempts are entries
    /// until `lottery_closes_at`, then refused until the draw is done.
    pub lottery_pending: bool,
    pub lottery_closes_at: DateTime<Utc>,
}

pub async fn segment_state<C: GenericClient>(
    client: &C,
    segment: Uuid,
) -> Result<Option<SegmentState>, Error> {
    let Some(row) = client
        .query_opt_cached(
            &format!(
                "SELECT seg.capacity, sch.status = 'open' AS open, sch.release_at,
                        (SELECT coalesce(max(visit_no), 0) FROM bookings b WHERE b.schedule_id = sch.id),
                        (SELECT count(*) FROM schedules y {SERVED_LINES}
                           JOIN waitlist_entries w ON w.schedule_id = x.id AND w.status = 'waiting'
                          WHERE y.id = sch.id),
                        sch.release_mode = 'lottery' AND NOT EXISTS
                            (SELECT 1 FROM lottery_draws d WHERE d.schedule_id = sch.id AND d.status = 'drawn'),
                        sch.release_at + make_interval(secs => coalesce(sch.lottery_window_seconds, 0))
                   FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id
                  WHERE seg.id = $1"
            ),
            &[&segment],
        )
        .await?
    else {
        return Ok(None);
    };
    let live = client
        .query_cached(
            "SELECT seat_no, patient_id, id, pool FROM bookings
                  WHERE segment_id = $1 AND live ORDER BY seat_no",
            &[&segment],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Ok(Some(SegmentState {
        capacity: row.get(0),
        open: row.get(1),
        release_at: row.get(2),
        live,
        highest_visit_no: row.get(3),
        waiting: row.get(4),
        lottery_pending: row.get(5),
        lottery_closes_at: row.get(6),
    }))
}

/// Segments whose visit date is `from` or later: the ones Redis must know.
pub async fn current_segment_ids<C: GenericClient>(client: &C, from: NaiveDate) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT seg.id FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id
              WHERE sch.visit_date >= $1",
            &[&from],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Unpaid holds of the visit days from `from` on, with their deadlines (to
/// rebuild the expiry index with the segments of the same days). Found
/// through the days' schedules: no index lists the holds as such, so that
/// a payment, which ends one, writes no index entry (V18).
pub async fn open_holds<C: GenericClient>(
    client: &C,
    from: NaiveDate,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, Error> {
    Ok(client
        .query_cached(
            "SELECT b.id, b.hold_deadline FROM schedules sch JOIN bookings b ON b.schedule_id = sch.id
              WHERE sch.visit_date >= $1 AND b.held AND b.hold_deadline IS NOT NULL",
            &[&from],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// [`transition`]'s statement: the update and the read-back in one.
static TRANSITION_RETURNING: LazyLock<String> = LazyLock::new(|| {
    with_read_back(
        "b AS (
            UPDATE bookings SET status = $3::text, updated_at = $4,
                   cancelled_at = CASE WHEN $3::text = 'cancelled' THEN $4 ELSE cancelled_at END
             WHERE id = $1 AND status = ANY($2)
            RETURNING *)",
    )
});

/// Move a booking to a new status if it is in one of `from`; the booking
/// as it is now, or `None` if it was not in such a status.
pub async fn transition<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
    from: &[&str],
    to: &str,
    now: DateTime<Utc>,
) -> Result<Option<StoredBooking>, Error> {
    let from: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
    Ok(client
        .query_opt_cached(&TRANSITION_RETURNING, &[&id, &from, &to, &now])
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// A `timestamptz` column as chrono's serde writes a
/// `DateTime<FixedOffset>` at Shanghai's +08:00 (`jyt_domain::time::local`):
/// fractional seconds only when there are some, in three digits or six.
fn rfc3339_shanghai(column: &str) -> String {
    let micros = format!("(extract(microseconds FROM {column})::bigint % 1000000)");
    format!(
        "to_char(({column} AT TIME ZONE 'UTC') + interval '8 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS')
         || CASE WHEN {micros} = 0 THEN ''
                 WHEN {micros} % 1000 = 0 THEN '.' || lpad(({micros} / 1000)::text, 3, '0')
                 ELSE '.' || lpad({micros}::text, 6, '0') END
         || '+08:00'"
    )
}

/// A `booking.*` event's payload built by PostgreSQL from a read-back row
/// named `rb` ([`SELECT_BOOKING`]'s columns), as [`super::events::payload`]
/// builds it in Rust from the same booking (a test holds the two equal):
/// a write whose event carries the row it changes is then one statement,
/// not `BEGIN`, the write, the event and `COMMIT`. `hospital` and `detail`
/// are SQL expressions (the hospital's id as text, a `jsonb`).
fn event_payload(hospital: &str, detail: &str) -> String {
    format!(
        "jsonb_build_object(
            'schema', 1,
            'booking_id', {hospital} || '-' || rb.id,
            'hospital_id', {hospital},
            'slot_id', {hospital} || '-' || rb.segment_id,
            'schedule_id', rb.schedule_id,
            'patient_id', rb.patient_id,
            'channel', rb.channel,
            'owner_app', rb.owner_app,
            'pool', rb.pool,
            'status', rb.status,
            'fee_fen', rb.fee_fen,
            'payment_method', rb.payment_method,
            'visit_date', rb.visit_date,
            'visit_number', rb.visit_no,
            'segment_starts_at', {starts},
            'hold_deadline', CASE WHEN rb.status = 'held' THEN {deadline} END,
            'department', rb.department,
            'doctor', rb.doctor,
            'detail', {detail})",
        starts = rfc3339_shanghai("rb.starts_at"),
        deadline = rfc3339_shanghai("rb.hold_deadline")
    )
}

/// [`with_read_back`] with the booking's event: `ctes` (a CTE `b`
/// returning the changed `bookings` row, as there), the read-back `rb`,
/// and the outbox row of the event (`event` the SQL of its id, its type
/// and the hospital's id as text; `detail` a `jsonb` expression) whose
/// payload is [`event_payload`] of the read-back. One statement: the write,
/// its event and what the caller is answered commit together, without
/// `BEGIN` or `COMMIT`.
fn with_read_back_and_event(ctes: &str, event: [&str; 3], detail: &str) -> String {
    format!("{} SELECT * FROM rb", written_with_event(ctes, event, detail))
}

/// The CTEs of [`with_read_back_and_event`], for a statement that answers
/// more than the read-back ([`returning_line_waiting`]).
fn written_with_event(ctes: &str, event: [&str; 3], detail: &str) -> String {
    let [id, kind, hospital] = event;
    written_with_events(
        ctes,
        hospital,
        &[EventSql {
            id,
            kind,
            detail,
            only_if: None,
        }],
    )
}

/// One event a write statement adds to the outbox for each booking it
/// wrote: the SQL of its id and type, its payload's `detail` (a `jsonb`
/// expression over the read-back `rb`), and when it is written (a
/// condition over `rb`; `None`: always).
struct EventSql<'a> {
    id: &'a str,
    kind: &'a str,
    detail: &'a str,
    only_if: Option<&'a str>,
}

/// `ctes` (a CTE `b` returning the changed `bookings` rows), the
/// read-back `rb`, and the outbox rows of `events` for each booking, in
/// their order, each payload [`event_payload`] of the read-back (the
/// hospital's id as `hospital`, SQL text). One event written always is
/// the usual case (every booking write); several, or one with a
/// condition, go through a `VALUES` list per booking (a cancellation's
/// `booking.cancelled`, then `booking.refund_requested` when it was paid).
fn written_with_events(ctes: &str, hospital: &str, events: &[EventSql<'_>]) -> String {
    let read_back = read_back_of_b();
    let rows = match events {
        [
            EventSql {
                id,
                kind,
                detail,
                only_if: None,
            },
        ] => format!(
            "SELECT {id}, {kind}, {hospital} || '-' || rb.id, {payload} FROM rb",
            payload = event_payload(hospital, detail)
        ),
        _ => {
            let values: Vec<String> = events
                .iter()
                .enumerate()
                .map(|(ord, e)| {
                    format!(
                        "({ord}, {id}, {kind}, {payload}, {written})",
                        id = e.id,
                        kind = e.kind,
                        payload = event_payload(hospital, e.detail),
                        written = e.only_if.unwrap_or("true"),
                    )
                })
                .collect();
            format!(
                "SELECT e.event_id, e.event_type, {hospital} || '-' || rb.id, e.payload
                   FROM rb CROSS JOIN LATERAL (VALUES {}) AS e (ord, event_id, event_type, payload, written)
                  WHERE e.written
                  ORDER BY e.ord",
                values.join(",\n")
            )
        }
    };
    format!(
        "WITH {ctes},
         rb AS ({read_back}),
         o AS (
            INSERT INTO outbox (event_id, event_type, aggregate_id, payload)
            {rows})"
    )
}

/// The read-back `rb` of a statement that frees seats, each written
/// booking with whether anyone waits for a seat of its schedule
/// (`line_waiting`, [`super::waitlist_queries::line_waiting_for`]): the
/// statement learns where the seats go as it writes, where each seat
/// asked with a statement of its own (loadtest/README.md, 2026-12-06
/// 23:07). It reads the line as the statement began; a patient who joins
/// meanwhile is served by the sweeper's next promotion pass, as one who
/// joined just after the separate look was.
fn returning_line_waiting() -> String {
    format!(
        "SELECT rb.*, {} AS line_waiting FROM rb",
        super::waitlist_queries::line_waiting_for("rb.schedule_id")
    )
}

/// A freed booking and whether anyone waits for its seat (a row of a
/// statement answering [`returning_line_waiting`]).
#[derive(Debug, Clone)]
pub struct Freed {
    pub stored: StoredBooking,
    pub line_waiting: bool,
}

impl Freed {
    fn of(hospital: &HospitalId, row: &Row) -> Self {
        Self {
            stored: to_stored(hospital, row),
            line_waiting: row.get("line_waiting"),
        }
    }
}

/// A payment's confirmation, its reference taken, its read-back and its
/// event in one statement (so one transaction without `BEGIN` or
/// `COMMIT`): `$6` the event's id, `$7` its type, `$8` the hospital's id.
/// The update changes no indexed column (V18), so it is heap-only where
/// the page has room; a reference another booking took fails the whole
/// statement on `payment_references_pkey` ([`PAYMENT_REFERENCE_TAKEN`]).
pub static CONFIRM_PAYMENT_WITH_EVENT: LazyLock<String> = LazyLock::new(|| {
    with_read_back_and_event(
        "b AS (
            UPDATE bookings SET status = 'confirmed', payment_reference = $2, payment_method = $3::text,
                   paid_at = $4, updated_at = $4
             WHERE id = $1 AND status = 'held' AND hold_deadline > $4
               AND ($5::bigint IS NULL OR fee_fen = $5)
            RETURNING *),
         r AS (
            INSERT INTO payment_references (reference, booking_id) SELECT $2, b.id FROM b)",
        ["$6", "$7", "$8::text"],
        "jsonb_build_object('payment_reference', $2::text)",
    )
});

/// The unique violation of a payment whose reference another booking took.
pub const PAYMENT_REFERENCE_TAKEN: &str = "payment_references_pkey";

/// Record a payment and confirm a held booking whose hold has not expired
/// (and whose fee is `amount_fen`, when the channel says what it
/// collected), with its `booking.confirmed` event (`event_id`); the
/// confirmed booking, or `None` (and nothing written) if any of that is
/// not so.
pub async fn confirm_payment<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
    payment: (&str, &str),
    amount_fen: Option<i64>,
    now: DateTime<Utc>,
    event: (Uuid, &str),
) -> Result<Option<StoredBooking>, Error> {
    let (reference, method) = payment;
    let (event_id, event_type) = event;
    Ok(client
        .query_opt_cached(
            &CONFIRM_PAYMENT_WITH_EVENT,
            &[
                &id,
                &reference,
                &method,
                &now,
                &amount_fen,
                &event_id,
                &event_type,
                &hospital.as_str(),
            ],
        )
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// A payment to confirm, owned, as [`confirm_payment`] takes it:
/// [`CONFIRM_PAYMENTS_WITH_EVENTS`] confirms many at once
/// (`booking::writer`'s group commit).
#[derive(Debug, Clone)]
pub struct PaymentToConfirm {
    pub id: Uuid,
    pub reference: String,
    pub method: &'static str,
    /// The amount the channel collected, when it says.
    pub amount_fen: Option<i64>,
    pub now: DateTime<Utc>,
    pub event_id: Uuid,
}

/// [`CONFIRM_PAYMENT_WITH_EVENT`] for many payments in one statement, so
/// one commit for all: `$1`–`$6` the payments' columns as arrays (booking,
/// reference, method, amount or NULL, instant, event id), `$7` the event's
/// type, `$8` the hospital's id. Each booking is confirmed only on
/// [`CONFIRM_PAYMENT_WITH_EVENT`]'s conditions, with its own instant;
/// a booking named twice is confirmed by the first payment that names it
/// (the others match nothing, and their callers find out why as a payment
/// alone does). A reference another booking took, or two of the batch
/// taking one reference, fails the whole statement on
/// `payment_references_pkey`. `bookings.id = ANY($1)` says again what the
/// join with `p` says, for the planner: without it, a generic plan on a
/// table without statistics (autovacuum off, as in the load test) joined
/// `p` by hashing every held booking (a quarter day: 0.73 ms a statement
/// for 2.8 payments, against 0.20 ms for one alone).
pub static CONFIRM_PAYMENTS_WITH_EVENTS: LazyLock<String> = LazyLock::new(|| {
    with_read_back_and_event(
        "p AS (
            SELECT DISTINCT ON (id) *
              FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[], $6::uuid[])
                   WITH ORDINALITY AS p (id, reference, method, amount_fen, paid_at, event_id, ord)
             ORDER BY id, ord),
         b AS (
            UPDATE bookings SET status = 'confirmed', payment_reference = p.reference,
                   payment_method = p.method, paid_at = p.paid_at, updated_at = p.paid_at
              FROM p
             WHERE bookings.id = ANY($1) AND bookings.id = p.id
               AND bookings.status = 'held' AND bookings.hold_deadline > p.paid_at
               AND (p.amount_fen IS NULL OR bookings.fee_fen = p.amount_fen)
            RETURNING bookings.*),
         r AS (
            INSERT INTO payment_references (reference, booking_id) SELECT b.payment_reference, b.id FROM b)",
        ["(SELECT p.event_id FROM p WHERE p.id = rb.id)", "$7", "$8::text"],
        "jsonb_build_object('payment_reference', rb.payment_reference)",
    )
});

/// Confirm `payments` with their events in one statement: what each came
/// to, in their order: the confirmed booking, or `None` where the payment
/// matched nothing (not held, expired, another fee, or a booking an
/// earlier payment of the batch confirmed). One payment takes
/// [`CONFIRM_PAYMENT_WITH_EVENT`].
pub async fn confirm_payments<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    payments: &[PaymentToConfirm],
) -> Result<Vec<Option<StoredBooking>>, Error> {
    let event_type = super::events::EventKind::Confirmed.event_type();
    if let [p] = payments {
        let confirmed = confirm_payment(
            client,
            hospital,
            p.id,
            (&p.reference, p.method),
            p.amount_fen,
            p.now,
            (p.event_id, event_type),
        )
        .await?;
        return Ok(vec![confirmed]);
    }
    let ids: Vec<Uuid> = payments.iter().map(|p| p.id).collect();
    let references: Vec<&str> = payments.iter().map(|p| p.reference.as_str()).collect();
    let methods: Vec<&str> = payments.iter().map(|p| p.method).collect();
    let amounts: Vec<Option<i64>> = payments.iter().map(|p| p.amount_fen).collect();
    let instants: Vec<DateTime<Utc>> = payments.iter().map(|p| p.now).collect();
    let event_ids: Vec<Uuid> = payments.iter().map(|p| p.event_id).collect();
    // Its batches are small (3.5 payments on average in the load test's
    // day): see `query_cached_generic`.
    let confirmed = client
        .query_cached_generic(
            &CONFIRM_PAYMENTS_WITH_EVENTS,
            &[
                &ids,
                &references,
                &methods,
                &amounts,
                &instants,
                &event_ids,
                &event_type,
                &hospital.as_str(),
            ],
        )
        .await?;
    // Each confirmed booking answers the payment that confirmed it: the
    // first of the batch with its reference.
    Ok(answer_in_order(
        confirmed.iter().map(|r| to_stored(hospital, r)),
        payments,
        |p| p.id,
        |p, s| s.payment_reference.as_deref() == Some(p.reference.as_str()),
    ))
}

/// The check-in statement for bookings in `from`: the schedule's next queue
/// number (its counter row locked until the commit, so two arrivals never
/// share a number; V14), the booking's update and its read-back, in one.
fn check_in_returning(from: &str) -> String {
    with_read_back(&format!(
        "q AS (
            INSERT INTO schedule_queue_numbers AS n (schedule_id, last_no) VALUES ($2, 1)
            ON CONFLICT (schedule_id) DO UPDATE SET last_no = n.last_no + 1
            RETURNING last_no),
         b AS (
            UPDATE bookings SET status = 'checked_in', checked_in_at = $3, updated_at = $3,
                   queue_no = (SELECT last_no FROM q)
             WHERE id = $1 AND status = '{from}'
            RETURNING *)"
    ))
}

pub static CHECK_IN_CONFIRMED: LazyLock<String> = LazyLock::new(|| check_in_returning("confirmed"));
static CHECK_IN_NO_SHOW: LazyLock<String> = LazyLock::new(|| check_in_returning("no_show"));

/// A check-in's `booking.checked_in` event, appended only once the booking
/// is checked in: sent in the same pipelined transaction right after
/// [`check_in`], so a check-in that matched nothing leaves no event.
pub const APPEND_IF_CHECKED_IN: &str = "INSERT INTO outbox (event_id, event_type, aggregate_id, payload)
     SELECT $1, $2, $3, $4 FROM bookings WHERE id = $5 AND status = 'checked_in'";

/// Run [`APPEND_IF_CHECKED_IN`] with a new event id.
pub async fn append_if_checked_in<C: GenericClient>(
    client: &C,
    id: Uuid,
    aggregate_id: &str,
    payload: &serde_json::Value,
) -> Result<u64, Error> {
    client
        .execute_cached(
            APPEND_IF_CHECKED_IN,
            &[
                &Uuid::now_v7(),
                &super::events::EventKind::CheckedIn.event_type(),
                &aggregate_id,
                payload,
                &id,
            ],
        )
        .await
}

/// Check a confirmed booking in with the next queue number of its schedule.
/// The caller holds the booking's row lock and has seen it confirmed (a
/// number taken for a booking that is not would be a gap in the queue).
pub async fn check_in<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
    schedule: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<StoredBooking>, Error> {
    Ok(client
        .query_opt_cached(&CHECK_IN_CONFIRMED, &[&id, &schedule, &now])
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// A check-in in one statement when everything [`super::lifecycle::check_in`]
/// asks of it holds: the booking (`$1`, its row locked first, as the
/// transaction path locks it) is confirmed, its pick-up code is `$2`, it
/// is `$4`'s (anyone's when NULL), it has taken fewer than `$5` wrong
/// codes, and `$3` is within its check-in window (from `$6` minutes before
/// its segment starts to the segment's end). Then, as
/// [`CHECK_IN_CONFIRMED`]: the schedule's next queue number, the update
/// and its read-back; and the `booking.checked_in` event, built by
/// PostgreSQL from the row (`$7` its id, `$8` its type, `$9` the
/// hospital's id). Otherwise nothing is written, no number taken.
pub static CHECK_IN_IF_DUE: LazyLock<String> = LazyLock::new(|| {
    with_read_back_and_event(
        "due AS (
            SELECT b.id, b.schedule_id FROM bookings b
             WHERE b.id = $1 AND b.status = 'confirmed' AND b.pickup_code = $2
               AND ($4::uuid IS NULL OR b.patient_id = $4) AND b.pickup_failures < $5
               AND $3 >= b.segment_starts_at - make_interval(mins => $6) AND $3 <= b.segment_ends_at
               FOR UPDATE OF b),
         q AS (
            INSERT INTO schedule_queue_numbers AS n (schedule_id, last_no)
            SELECT schedule_id, 1 FROM due
            ON CONFLICT (schedule_id) DO UPDATE SET last_no = n.last_no + 1
            RETURNING last_no),
         b AS (
            UPDATE bookings SET status = 'checked_in', checked_in_at = $3, updated_at = $3,
                   queue_no = (SELECT last_no FROM q)
             WHERE id = (SELECT id FROM due)
            RETURNING *)",
        ["$7", "$8", "$9::text"],
        "'{}'::jsonb",
    )
});

/// A check-in to make, owned, as [`check_in_if_due`] takes it:
/// [`CHECK_INS_IF_DUE`] makes many at once (`booking::writer`'s group
/// commit).
#[derive(Debug, Clone)]
pub struct CheckInToMake {
    pub id: Uuid,
    pub pickup_code: String,
    pub patient: Option<Uuid>,
    pub now: DateTime<Utc>,
    pub event_id: Uuid,
}

/// [`CHECK_IN_IF_DUE`] for many check-ins in one statement, so one commit
/// for all: `$1`–`$5` the check-ins' columns as arrays (booking, pick-up
/// code, patient or NULL, instant, event id), `$6` the wrong codes that
/// lock check-in, `$7` the minutes the window opens before the segment,
/// `$8` the event's type, `$9` the hospital's id. Each booking is checked
/// in only on [`CHECK_IN_IF_DUE`]'s conditions, at its own instant; its
/// row is locked first, as there. The due bookings of a schedule take its
/// next numbers in the order their check-ins arrived: its counter moves
/// once, by their count, and the k-th of n due gets `last_no - n + k`.
/// A booking named twice is checked in by the first check-in that is due
/// (the others match nothing, and their callers find out why as a
/// check-in alone does).
pub static CHECK_INS_IF_DUE: LazyLock<String> = LazyLock::new(|| {
    with_read_back_and_event(
        "c AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[], $5::uuid[])
                   WITH ORDINALITY AS c (id, pickup_code, patient, at, event_id, ord)),
         locked AS (
            SELECT b.id, b.schedule_id, c.at, c.event_id, c.ord FROM c JOIN bookings b ON b.id = c.id
             WHERE b.id = ANY($1) AND b.status = 'confirmed' AND b.pickup_code = c.pickup_code
               AND (c.patient IS NULL OR b.patient_id = c.patient) AND b.pickup_failures < $6
               AND c.at >= b.segment_starts_at - make_interval(mins => $7) AND c.at <= b.segment_ends_at
               FOR UPDATE OF b),
         due AS (SELECT DISTINCT ON (id) * FROM locked ORDER BY id, ord),
         counts AS (SELECT schedule_id, count(*)::int AS n FROM due GROUP BY schedule_id),
         q AS (
            INSERT INTO schedule_queue_numbers AS n (schedule_id, last_no)
            SELECT schedule_id, n FROM counts
            ON CONFLICT (schedule_id) DO UPDATE SET last_no = n.last_no + excluded.last_no
            RETURNING schedule_id, last_no),
         numbered AS (
            SELECT due.id, due.at, due.event_id,
                   q.last_no - counts.n
                     + row_number() OVER (PARTITION BY due.schedule_id ORDER BY due.ord) AS queue_no
              FROM due JOIN q USING (schedule_id) JOIN counts USING (schedule_id)),
         b AS (
            UPDATE bookings SET status = 'checked_in', checked_in_at = numbered.at,
                   updated_at = numbered.at, queue_no = numbered.queue_no
              FROM numbered
             WHERE bookings.id = ANY($1) AND bookings.id = numbered.id
            RETURNING bookings.*)",
        [
            "(SELECT numbered.event_id FROM numbered WHERE numbered.id = rb.id)",
            "$8",
            "$9::text",
        ],
        "'{}'::jsonb",
    )
});

/// Make `check_ins` with their events in one statement: what each came
/// to, in their order: the checked-in booking, or `None` where the
/// check-in was not simply due (or an earlier check-in of the batch took
/// its booking). One check-in takes [`CHECK_IN_IF_DUE`].
pub async fn check_ins_if_due<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    check_ins: &[CheckInToMake],
    opens_minutes_before: i32,
) -> Result<Vec<Option<StoredBooking>>, Error> {
    if let [c] = check_ins {
        let asked = CheckInAsked {
            pickup_code: &c.pickup_code,
            patient: c.patient,
        };
        let checked_in = check_in_if_due(
            client,
            hospital,
            c.id,
            &asked,
            c.now,
            opens_minutes_before,
            c.event_id,
        )
        .await?;
        return Ok(vec![checked_in]);
    }
    let ids: Vec<Uuid> = check_ins.iter().map(|c| c.id).collect();
    let codes: Vec<&str> = check_ins.iter().map(|c| c.pickup_code.as_str()).collect();
    let patients: Vec<Option<Uuid>> = check_ins.iter().map(|c| c.patient).collect();
    let instants: Vec<DateTime<Utc>> = check_ins.iter().map(|c| c.now).collect();
    let event_ids: Vec<Uuid> = check_ins.iter().map(|c| c.event_id).collect();
    // Its batches are small (3.8 check-ins on average in the load test's
    // day): see `query_cached_generic`.
    let checked_in = client
        .query_cached_generic(
            &CHECK_INS_IF_DUE,
            &[
                &ids,
                &codes,
                &patients,
                &instants,
                &event_ids,
                &super::lifecycle::MAX_WRONG_PICKUP_CODES,
                &opens_minutes_before,
                &super::events::EventKind::CheckedIn.event_type(),
                &hospital.as_str(),
            ],
        )
        .await?;
    // Each checked-in booking answers the first check-in that was due:
    // its code, and its patient when it named one.
    Ok(answer_in_order(
        checked_in.iter().map(|r| to_stored(hospital, r)),
        check_ins,
        |c| c.id,
        |c, s| s.booking.pickup_code == c.pickup_code && c.patient.is_none_or(|p| p == s.booking.patient_id),
    ))
}

/// A batch's answers, one per asked row in their order: the written
/// booking of the row's id to the first row that `wrote_it` says it
/// answers, `None` to every other (`booking::writer`'s group commits).
pub fn answer_in_order<T>(
    written: impl IntoIterator<Item = StoredBooking>,
    asked: &[T],
    id: impl Fn(&T) -> Uuid,
    wrote_it: impl Fn(&T, &StoredBooking) -> bool,
) -> Vec<Option<StoredBooking>> {
    let mut by_id: std::collections::HashMap<Uuid, StoredBooking> = written
        .into_iter()
        .map(|stored| (stored.booking.booking_id.id, stored))
        .collect();
    asked
        .iter()
        .map(|a| match by_id.get(&id(a)) {
            Some(s) if wrote_it(a, s) => by_id.remove(&id(a)),
            _ => None,
        })
        .collect()
}

/// What a check-in presents: the pick-up code and, when the channel knows,
/// the patient.
pub struct CheckInAsked<'a> {
    pub pickup_code: &'a str,
    pub patient: Option<Uuid>,
}

/// Run [`CHECK_IN_IF_DUE`]: the checked-in booking, or `None` when the
/// check-in is not simply due (the caller finds out why).
pub async fn check_in_if_due<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
    asked: &CheckInAsked<'_>,
    now: DateTime<Utc>,
    opens_minutes_before: i32,
    event_id: Uuid,
) -> Result<Option<StoredBooking>, Error> {
    Ok(client
        .query_opt_cached(
            &CHECK_IN_IF_DUE,
            &[
                &id,
                &asked.pickup_code,
                &now,
                &asked.patient,
                &super::lifecycle::MAX_WRONG_PICKUP_CODES,
                &opens_minutes_before,
                &event_id,
                &super::events::EventKind::CheckedIn.event_type(),
                &hospital.as_str(),
            ],
        )
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// Count one wrong pick-up code; answers the count with it. The booking
/// row is already locked by the caller, so concurrent guesses add up.
/// `updated_at` is left alone: the booking itself did not change.
pub async fn count_wrong_pickup_code<C: GenericClient>(client: &C, id: Uuid) -> Result<i16, Error> {
    Ok(client
        .query_one_cached(
            "UPDATE bookings SET pickup_failures = pickup_failures + 1 WHERE id = $1
             RETURNING pickup_failures",
            &[&id],
        )
        .await?
        .get(0))
}

/// One patient's bookings at this hospital, the latest visit first.
pub async fn patient_bookings<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    patient: Uuid,
    limit: i64,
) -> Result<Vec<StoredBooking>, Error> {
    Ok(client
        .query_cached(&PATIENT_BOOKINGS, &[&patient, &limit])
        .await?
        .iter()
        .map(|r| to_stored(hospital, r))
        .collect())
}

/// What the hospital did to a booking a patient missed: its schedule's
/// status (`stopped` after 停诊) and when it was checked in, if ever.
pub async fn booking_outcome<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<(String, String, Option<DateTime<Utc>>, DateTime<Utc>)>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT b.status, sch.status, b.checked_in_at, b.segment_ends_at
               FROM bookings b JOIN schedules sch ON sch.id = b.schedule_id
              WHERE b.id = $1",
            &[&id],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
}

/// The hospital's late arrival of a booking already marked a no-show: it
/// is checked in after all (the no-show was the hospital's lateness). The
/// caller holds the booking's row lock and has seen it a no-show.
pub async fn late_check_in<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
    schedule: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<StoredBooking>, Error> {
    Ok(client
        .query_opt_cached(&CHECK_IN_NO_SHOW, &[&id, &schedule, &now])
        .await?
        .map(|r| to_stored(hospital, &r)))
}

/// A patient's cancellation in the usual case, in one statement (so one
/// transaction, without `BEGIN` or `COMMIT`): the booking `$1` of patient
/// `$2`, held or confirmed, of a visit on `$4` or later (the first visit
/// date whose cancellation deadline has not passed at `$3`), cancelled
/// with its `booking.cancelled` event (`$5`, type `$7`) and, when it was
/// paid, its `booking.refund_requested` (`$6`, type `$8`), in that order;
/// `$9` the hospital's id; answered with whether anyone waits for the
/// freed seat ([`returning_line_waiting`]). Nothing is written when any
/// of that is not so: the caller then reads the row, locked, to say why.
/// It was `BEGIN`, a locked read, the update, one or two events and
/// `COMMIT` (loadtest/README.md, 2026-12-06 20:23).
pub static CANCEL_WITH_EVENTS: LazyLock<String> = LazyLock::new(|| {
    let written = written_with_events(
        "b AS (
            UPDATE bookings SET status = 'cancelled', updated_at = $3, cancelled_at = $3
             WHERE id = $1 AND patient_id = $2 AND status IN ('held', 'confirmed') AND visit_date >= $4
            RETURNING *)",
        "$9::text",
        &[
            EventSql {
                id: "$5::uuid",
                kind: "$7::text",
                detail: "'{}'::jsonb",
                only_if: None,
            },
            EventSql {
                id: "$6::uuid",
                kind: "$8::text",
                detail: "jsonb_build_object('payment_reference', rb.payment_reference, 'amount_fen', rb.fee_fen)",
                only_if: Some("rb.payment_reference IS NOT NULL"),
            },
        ],
    );
    format!("{written} {}", returning_line_waiting())
});

/// [`CANCEL_WITH_EVENTS`]: the cancelled booking and whether its seat
/// has a line, or `None` (nothing written) when it is not so simple.
pub async fn cancel_with_events<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    id: Uuid,
    patient: Uuid,
    now: DateTime<Utc>,
    first_cancellable_visit: NaiveDate,
) -> Result<Option<Freed>, Error> {
    use super::events::EventKind;
    Ok(client
        .query_opt_cached(
            &CANCEL_WITH_EVENTS,
            &[
                &id,
                &patient,
                &now,
                &first_cancellable_visit,
                &Uuid::now_v7(),
                &Uuid::now_v7(),
                &EventKind::Cancelled.event_type(),
                &EventKind::RefundRequested.event_type(),
                &hospital.as_str(),
            ],
        )
        .await?
        .map(|r| Freed::of(hospital, &r)))
}

/// A sweep's bookings moved to `status` with their events, many in one
/// statement (so one transaction, without `BEGIN` or `COMMIT`): `$1` the
/// bookings, `$2` their events' ids in the same order, `$3` the instant,
/// `$4` the event's type, `$5` the hospital's id. Only a booking for which
/// `still_due` holds (over `bookings`' columns and `$3`) is moved: one
/// paid, cancelled or checked in meanwhile is not. The rows are locked in
/// id order first, so two sweeps over overlapping bookings (two replicas)
/// wait for each other instead of deadlocking. A sweep took `BEGIN`, a
/// locked read or none, the update, the event and `COMMIT` for each
/// booking (loadtest/README.md, 2026-12-06 20:23).
fn swept_with_events(status: &str, still_due: &str) -> String {
    written_with_event(
        &format!(
            "n AS (SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS n (id, event_id)),
             l AS (
                SELECT id FROM bookings
                 WHERE id = ANY($1) AND {still_due}
                 ORDER BY id
                   FOR UPDATE),
             b AS (
                UPDATE bookings SET status = '{status}', updated_at = $3
                 WHERE id IN (SELECT id FROM l) AND {still_due}
                RETURNING *)"
        ),
        ["(SELECT n.event_id FROM n WHERE n.id = rb.id)", "$4", "$5::text"],
        "'{}'::jsonb",
    )
}

/// Overdue arrivals marked no-shows: confirmed still (not checked in at
/// the desk meanwhile). A no-show's seat is past: nothing is given back.
pub static MARK_NO_SHOWS_WITH_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} SELECT * FROM rb",
        swept_with_events("no_show", "status = 'confirmed'")
    )
});

/// Lapsed holds expired: held still, and past their deadline (not paid
/// or cancelled meanwhile); each with whether its seat has a line
/// ([`returning_line_waiting`]).
pub static EXPIRE_HOLDS_WITH_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} {}",
        swept_with_events("expired", "status = 'held' AND hold_deadline <= $3"),
        returning_line_waiting()
    )
});

/// What a sweep moves, and so its statement and its event.
#[derive(Debug, Clone, Copy)]
enum Sweep {
    /// [`MARK_NO_SHOWS_WITH_EVENTS`], `booking.no_show`.
    NoShows,
    /// [`EXPIRE_HOLDS_WITH_EVENTS`], `booking.expired`.
    LapsedHolds,
}

impl Sweep {
    /// Run the sweep's statement over `due`, each booking moved with its
    /// event: the rows of the bookings moved.
    async fn run<C: GenericClient>(
        self,
        client: &C,
        hospital: &HospitalId,
        due: &[Uuid],
        now: DateTime<Utc>,
    ) -> Result<Vec<Row>, Error> {
        use super::events::EventKind;
        let (statement, kind): (&str, _) = match self {
            Sweep::NoShows => (&MARK_NO_SHOWS_WITH_EVENTS, EventKind::NoShow),
            Sweep::LapsedHolds => (&EXPIRE_HOLDS_WITH_EVENTS, EventKind::Expired),
        };
        let event_ids: Vec<Uuid> = due.iter().map(|_| Uuid::now_v7()).collect();
        client
            .query_cached(
                statement,
                &[&due, &event_ids, &now, &kind.event_type(), &hospital.as_str()],
            )
            .await
    }
}

/// [`MARK_NO_SHOWS_WITH_EVENTS`] over `due`: the bookings marked.
pub async fn mark_no_shows_with_events<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    due: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<StoredBooking>, Error> {
    let rows = Sweep::NoShows.run(client, hospital, due, now).await?;
    Ok(rows.iter().map(|r| to_stored(hospital, r)).collect())
}

/// [`EXPIRE_HOLDS_WITH_EVENTS`] over `due`: the holds expired, each with
/// whether its seat has a line.
pub async fn expire_holds_with_events<C: GenericClient>(
    client: &C,
    hospital: &HospitalId,
    due: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<Freed>, Error> {
    let rows = Sweep::LapsedHolds.run(client, hospital, due, now).await?;
    Ok(rows.iter().map(|r| Freed::of(hospital, r)).collect())
}

/// Confirmed bookings whose segment ended more than the grace period ago
/// (before `cutoff`); with `ended_since`, only segments that ended since
/// then (the index `segments_by_end` answers it without reading the rest).
/// `b.live`, which a confirmed booking is, names the predicate of the
/// indexes that find a segment's bookings (V17).
pub async fn overdue_arrivals<C: GenericClient>(
    client: &C,
    cutoff: DateTime<Utc>,
    ended_since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Uuid>, Error> {
    let rows = match ended_since {
        Some(since) => {
            // Planned on every call, not prepared: a generic plan does not
            // know the window is a day's, and the peak-day load measured
            // this statement at 3.4 ms a call with no row to find (every
            // confirmed booking read), against well under a millisecond
            // planned with the instants. It runs once a second.
            client
                .query(
                    "SELECT b.id FROM segments seg
                       JOIN bookings b ON b.segment_id = seg.id AND b.live AND b.status = 'confirmed'
                      WHERE seg.ends_at < $1 AND seg.ends_at >= $2
                      ORDER BY seg.ends_at LIMIT $3",
                    &[&cutoff, &since, &limit],
                )
                .await?
        }
        None => {
            client
                .query_cached(
                    "SELECT b.id FROM bookings b JOIN segments seg ON seg.id = b.segment_id
                      WHERE b.live AND b.status = 'confirmed' AND seg.ends_at < $1
                      ORDER BY seg.ends_at LIMIT $2",
                    &[&cutoff, &limit],
                )
                .await?
        }
    };
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Live bookings from `from` on, grouped as Redis keeps each patient's day:
/// (patient, visit date, department external id, schedule, count).
pub async fn patient_days<C: GenericClient>(
    client: &C,
    from: NaiveDate,
) -> Result<Vec<(Uuid, NaiveDate, String, Uuid, i64)>, Error> {
    Ok(client
        .query_cached(
            "SELECT b.patient_id, sch.visit_date, dep.external_id, b.schedule_id, count(*)
                   FROM bookings b
                   JOIN schedules sch ON sch.id = b.schedule_id
                   JOIN departments dep ON dep.id = sch.department_id
                  WHERE sch.visit_date >= $1 AND b.live
                  GROUP BY 1, 2, 3, 4",
            &[&from],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

/// Which of these bookings exist in PostgreSQL.
pub async fn existing_bookings<C: GenericClient>(client: &C, ids: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached("SELECT id FROM bookings WHERE id = ANY($1)", &[&ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
