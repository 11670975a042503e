//! The waitlist's SQL, apart from its rules (`waitlist.rs`), so that the
//! booking path and the cache loader read and mark entries without
//! depending on the promotion logic that books through them.

use chrono::{DateTime, NaiveDate, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::Error;
use jyt_domain::Channel;
use uuid::Uuid;

/// A schedule's bookability, with its row locked against concurrent joins.
pub struct ScheduleFill {
    pub open: bool,
    pub release_at: DateTime<Utc>,
    pub visit_date: NaiveDate,
    pub segments: Vec<SegmentFill>,
}

/// One segment of a schedule: its capacity and the (seat, pool) of each
/// live booking.
pub type SegmentFill = (i32, Vec<(i32, String)>);

pub async fn schedule_fill_for_update<C: GenericClient>(
    client: &C,
    schedule: Uuid,
) -> Result<Option<ScheduleFill>, Error> {
    let Some(row) = client
        .query_opt_cached(
            "SELECT status = 'open', release_at, visit_date FROM schedules WHERE id = $1 FOR UPDATE",
            &[&schedule],
        )
        .await?
    else {
        return Ok(None);
    };
    let rows = client
        .query_cached(
            "SELECT seg.id, seg.capacity, b.seat_no, b.pool FROM segments seg
                   LEFT JOIN bookings b ON b.segment_id = seg.id AND b.live
                  WHERE seg.schedule_id = $1 ORDER BY seg.id",
            &[&schedule],
        )
        .await?;
    let mut segments: Vec<(Uuid, SegmentFill)> = Vec::new();
    for r in &rows {
        let id: Uuid = r.get(0);
        if segments.last().is_none_or(|(last, _)| *last != id) {
            segments.push((id, (r.get(1), Vec::new())));
        }
        let booked: (Option<i32>, Option<String>) = (r.get(2), r.get(3));
        if let ((Some(seat), Some(pool)), Some((_, (_, live)))) = (booked, segments.last_mut()) {
            live.push((seat, pool));
        }
    }
    Ok(Some(ScheduleFill {
        open: row.get(0),
        release_at: row.get(1),
        visit_date: row.get(2),
        segments: segments.into_iter().map(|(_, fill)| fill).collect(),
    }))
}

pub async fn has_live_booking<C: GenericClient>(
    client: &C,
    schedule: Uuid,
    patient: Uuid,
) -> Result<bool, Error> {
    Ok(client
        .query_one_cached(
            // `live` (V17) is the one definition of a booking that keeps its
            // seat; a no-show keeps it too, but is no reason to refuse a wait.
            "SELECT EXISTS (SELECT 1 FROM bookings WHERE schedule_id = $1 AND patient_id = $2
                               AND live AND status <> 'no_show')",
            &[&schedule, &patient],
        )
        .await?
        .get(0))
}

/// Insert a waiting entry; `None` if the person already waits.
pub async fn insert<C: GenericClient>(
    client: &C,
    id: Uuid,
    schedule: Uuid,
    patient: Uuid,
    channel: &str,
    owner_app: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, Error> {
    Ok(client
        .query_opt_cached(
            "INSERT INTO waitlist_entries (id, schedule_id, patient_id, channel, created_at, owner_app)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (schedule_id, patient_id) WHERE status = 'waiting' DO NOTHING
             RETURNING id",
            &[&id, &schedule, &patient, &channel, &now, &owner_app],
        )
        .await?
        .map(|r| r.get(0)))
}

pub const ENTRY_COLUMNS: &str =
    "w.id, w.schedule_id, w.patient_id, w.channel, w.status, w.booking_id, w.created_at,
     CASE WHEN w.status = 'waiting' THEN
          (SELECT count(*) FROM waitlist_entries o
            WHERE o.schedule_id = w.schedule_id AND o.status = 'waiting'
              AND (o.created_at, o.id) <= (w.created_at, w.id))
     END, w.owner_app";

pub async fn entry<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<jyt_db::tokio_postgres::Row>, Error> {
    client
        .query_opt_cached(
            &format!("SELECT {ENTRY_COLUMNS} FROM waitlist_entries w WHERE w.id = $1"),
            &[&id],
        )
        .await
}

pub async fn waiting_entry_of<C: GenericClient>(
    client: &C,
    schedule: Uuid,
    patient: Uuid,
) -> Result<Option<Uuid>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT id FROM waitlist_entries WHERE schedule_id = $1 AND patient_id = $2 AND status = 'waiting'",
            &[&schedule, &patient],
        )
        .await?
        .map(|r| r.get(0)))
}

pub async fn waiting_count<C: GenericClient>(client: &C, schedule: Uuid) -> Result<i64, Error> {
    Ok(client
        .query_one_cached(
            "SELECT count(*) FROM waitlist_entries WHERE schedule_id = $1 AND status = 'waiting'",
            &[&schedule],
        )
        .await?
        .get(0))
}

/// One waiting patient, as a promotion pass reads the line.
#[derive(Debug, Clone)]
pub struct Waiter {
    pub entry: Uuid,
    /// The schedule whose line they joined.
    pub schedule: Uuid,
    pub patient: Uuid,
    pub channel: Channel,
    /// The channel app that made the entry; the booking is its too.
    pub owner_app: Option<String>,
}

/// The first `limit` patients waiting in any of `lines`, in the order
/// they joined.
pub async fn line<C: GenericClient>(client: &C, lines: &[Uuid], limit: i64) -> Result<Vec<Waiter>, Error> {
    Ok(client
        .query_cached(
            "SELECT id, schedule_id, patient_id, channel, owner_app FROM waitlist_entries
              WHERE schedule_id = ANY($1) AND status = 'waiting'
              ORDER BY created_at, id LIMIT $2",
            &[&lines, &limit],
        )
        .await?
        .iter()
        .map(|r| Waiter {
            entry: r.get(0),
            schedule: r.get(1),
            patient: r.get(2),
            // The CHECK constraint keeps the column to known channels.
            channel: r.get::<_, String>(3).parse().unwrap_or(Channel::Window),
            owner_app: r.get(4),
        })
        .collect())
}

/// The channels of the patients waiting in `schedule`'s line.
pub async fn waiting_channels<C: GenericClient>(client: &C, schedule: Uuid) -> Result<Vec<Channel>, Error> {
    let lines = lines_served_by(client, schedule).await?;
    Ok(waiting_channels_in(client, &lines)
        .await?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

/// The lines whose patients a seat of `schedule` serves: its own, and for
/// a session published for the waitlist, those of every open session of
/// the doctor that day (see [`SERVED_LINES`]).
pub async fn lines_served_by<C: GenericClient>(client: &C, schedule: Uuid) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            &format!("SELECT x.id FROM schedules y {SERVED_LINES} WHERE y.id = $1"),
            &[&schedule],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Joins `x`, the lines a seat of schedule `y` serves: `y` itself, or for
/// a session published for the waitlist, every open session of the
/// doctor that day. The cache loader keeps seats back for them, the
/// promotion pass serves them, so both agree.
pub const SERVED_LINES: &str = "JOIN schedules x ON x.id = y.id
      OR (y.for_waitlist AND x.doctor_id = y.doctor_id AND x.visit_date = y.visit_date AND x.status = 'open')";

/// (line, channel) of everyone waiting in any of `lines`, once each.
pub async fn waiting_channels_in<C: GenericClient>(
    client: &C,
    lines: &[Uuid],
) -> Result<Vec<(Uuid, Channel)>, Error> {
    Ok(client
        .query_cached(
            "SELECT DISTINCT schedule_id, channel FROM waitlist_entries
              WHERE schedule_id = ANY($1) AND status = 'waiting'",
            &[&lines],
        )
        .await?
        .iter()
        .filter_map(|r| Some((r.get(0), r.get::<_, String>(1).parse().ok()?)))
        .collect())
}

/// The sessions served together with `schedule`, (id, published for
/// the waitlist): `schedule` alone, or, when a session of the same
/// doctor that day was published for the waitlist, every open session
/// of the doctor that day.
pub async fn group<C: GenericClient>(client: &C, schedule: Uuid) -> Result<Vec<(Uuid, bool)>, Error> {
    Ok(client
        .query_cached(
            "SELECT x.id, x.for_waitlist FROM schedules s
               JOIN schedules x ON x.id = s.id
                 OR (x.doctor_id = s.doctor_id AND x.visit_date = s.visit_date AND x.status = 'open'
                     AND EXISTS (SELECT 1 FROM schedules f
                                  WHERE f.doctor_id = s.doctor_id AND f.visit_date = s.visit_date
                                    AND f.status = 'open' AND f.for_waitlist))
              WHERE s.id = $1",
            &[&schedule],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// (schedule, segment) of every segment of `schedules` not ended at
/// `now` (nobody is handed a visit that is over), by start.
pub async fn segments_of<C: GenericClient>(
    client: &C,
    schedules: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, Uuid)>, Error> {
    Ok(client
        .query_cached(
            "SELECT schedule_id, id FROM segments WHERE schedule_id = ANY($1) AND ends_at > $2
              ORDER BY starts_at, id",
            &[&schedules, &now],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// SQL: whether anyone waits for a seat of the schedule `schedule` (an
/// SQL expression): in its own line, or, for a session published for the
/// waitlist, in the line of any open session of the doctor that day. A
/// statement that frees a seat reads it as it writes
/// (`queries::CANCEL_WITH_EVENTS`, `queries::EXPIRE_HOLDS_WITH_EVENTS`).
///
/// The lines of [`SERVED_LINES`], as two lookups: the schedule's own line
/// (an index-only probe of `waitlist_line`), then, only for a session
/// published for the waitlist, the doctor's open sessions' lines. One
/// join with `SERVED_LINES`' `OR` read every schedule of the visit date
/// for every seat (a bitmap scan of `schedules_by_date`).
pub fn line_waiting_for(schedule: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.schedule_id = {schedule} AND w.status = 'waiting')
          OR EXISTS (
            SELECT 1 FROM schedules y
              JOIN schedules x ON x.doctor_id = y.doctor_id AND x.visit_date = y.visit_date AND x.status = 'open'
              JOIN waitlist_entries w ON w.schedule_id = x.id AND w.status = 'waiting'
             WHERE y.id = {schedule} AND y.for_waitlist))"
    )
}

/// [`line_waiting_for`] the schedule `$1`.
static WAITING_FOR_SEATS_OF: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {}", line_waiting_for("$1")));

/// Whether anyone waits for a seat of `schedule` ([`line_waiting_for`]).
pub async fn waiting_for_seats_of<C: GenericClient>(client: &C, schedule: Uuid) -> Result<bool, Error> {
    Ok(client
        .query_one_cached(&WAITING_FOR_SEATS_OF, &[&schedule])
        .await?
        .get(0))
}

/// What a hospital needs to answer a capacity request: its own id of
/// the session and of the doctor, the date and session.
pub async fn schedule_for_hospital<C: GenericClient>(
    client: &C,
    schedule: Uuid,
) -> Result<serde_json::Value, Error> {
    let row = client
        .query_one_cached(
            "SELECT sch.external_id, d.external_id, sch.visit_date, sch.session
               FROM schedules sch JOIN doctors d ON d.id = sch.doctor_id WHERE sch.id = $1",
            &[&schedule],
        )
        .await?;
    Ok(serde_json::json!({
        "external_id": row.get::<_, String>(0),
        "doctor_external_id": row.get::<_, String>(1),
        "visit_date": row.get::<_, NaiveDate>(2),
        "session": row.get::<_, String>(3),
    }))
}

/// Schedules with someone waiting, visit date `from` or later.
pub async fn schedules_with_waiting<C: GenericClient>(
    client: &C,
    from: chrono::NaiveDate,
) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT DISTINCT w.schedule_id FROM waitlist_entries w
               JOIN schedules s ON s.id = w.schedule_id
              WHERE w.status = 'waiting' AND s.visit_date >= $1",
            &[&from],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub async fn segment_ids<C: GenericClient>(client: &C, schedule: Uuid) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT id FROM segments WHERE schedule_id = $1 ORDER BY starts_at",
            &[&schedule],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// In the promotion's own transaction: false if the entry is no longer
/// waiting (the patient left), which aborts the promotion.
pub async fn mark_promoted<C: GenericClient>(client: &C, entry: Uuid, booking: Uuid) -> Result<bool, Error> {
    Ok(client
        .execute_cached(
            "UPDATE waitlist_entries SET status = 'promoted', booking_id = $2
              WHERE id = $1 AND status = 'waiting'",
            &[&entry, &booking],
        )
        .await?
        == 1)
}

pub async fn mark_left<C: GenericClient>(client: &C, entry: Uuid) -> Result<bool, Error> {
    Ok(client
        .execute_cached(
            "UPDATE waitlist_entries SET status = 'left' WHERE id = $1 AND status = 'waiting'",
            &[&entry],
        )
        .await?
        == 1)
}
