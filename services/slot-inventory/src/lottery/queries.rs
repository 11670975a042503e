//! The lottery's SQL, one small function per statement.

use chrono::{DateTime, NaiveDate, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::GenericClient;
use jyt_db::tokio_postgres::{Error, Row};
use uuid::Uuid;

use super::entry::EntryRecord;

const ENTRY_COLUMNS: &str = "id, segment_id, channel, owner_app, referral_id, entered_at";

fn to_record(r: &Row) -> EntryRecord {
    let channel: String = r.get(2);
    EntryRecord {
        entry_id: r.get(0),
        segment_id: r.get(1),
        channel: channel.parse().unwrap_or(jyt_domain::Channel::Window),
        owner_app: r.get(3),
        referral_id: r.get(4),
        entered_at: r.get(5),
    }
}

/// Record an entry unless the patient has one: true if written.
pub async fn insert_entry<C: GenericClient>(
    client: &C,
    schedule: Uuid,
    patient: Uuid,
    e: &EntryRecord,
) -> Result<bool, Error> {
    let n = client
        .execute_cached(
            "INSERT INTO lottery_entries
                    (id, schedule_id, segment_id, patient_id, channel, owner_app, referral_id, entered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (schedule_id, patient_id) DO NOTHING",
            &[
                &e.entry_id,
                &schedule,
                &e.segment_id,
                &patient,
                &e.channel.as_str(),
                &e.owner_app,
                &e.referral_id,
                &e.entered_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

pub async fn entry_of<C: GenericClient>(
    client: &C,
    schedule: Uuid,
    patient: Uuid,
) -> Result<Option<EntryRecord>, Error> {
    Ok(client
        .query_opt_cached(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM lottery_entries WHERE schedule_id = $1 AND patient_id = $2"
            ),
            &[&schedule, &patient],
        )
        .await?
        .map(|r| to_record(&r)))
}

/// A schedule's entries: (patient, entry), by entry id.
pub async fn entries<C: GenericClient>(
    client: &C,
    schedule: Uuid,
) -> Result<Vec<(Uuid, EntryRecord)>, Error> {
    Ok(client
        .query_cached(
            &format!(
                "SELECT {ENTRY_COLUMNS}, patient_id FROM lottery_entries WHERE schedule_id = $1 ORDER BY id"
            ),
            &[&schedule],
        )
        .await?
        .iter()
        .map(|r| (r.get(6), to_record(r)))
        .collect())
}

/// Lottery schedules whose window has closed at `now` and that are not
/// drawn yet (visits from `today` on).
pub async fn due_draws<C: GenericClient>(
    client: &C,
    now: DateTime<Utc>,
    today: NaiveDate,
) -> Result<Vec<Uuid>, Error> {
    Ok(client
        .query_cached(
            "SELECT s.id FROM schedules s
              WHERE s.release_mode = 'lottery' AND s.visit_date >= $2
                AND s.release_at + make_interval(secs => s.lottery_window_seconds) <= $1
                AND NOT EXISTS (SELECT 1 FROM lottery_draws d WHERE d.schedule_id = s.id AND d.status = 'drawn')
              ORDER BY s.release_at, s.id",
            &[&now, &today],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The schedule's segments (id, free seats) in time order.
pub async fn segments_with_free_seats<C: GenericClient>(
    client: &C,
    schedule: Uuid,
) -> Result<Vec<(Uuid, i64)>, Error> {
    Ok(client
        .query_cached(
            "SELECT seg.id, seg.capacity - (SELECT count(*) FROM bookings b
                                                  WHERE b.segment_id = seg.id
                                                    AND b.live)
                   FROM segments seg WHERE seg.schedule_id = $1 ORDER BY seg.starts_at",
            &[&schedule],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1).max(0)))
        .collect())
}

/// Start a draw unless the schedule has one: true if this call did.
pub async fn insert_draw<C: GenericClient>(client: &C, draw: &NewDraw<'_>) -> Result<bool, Error> {
    let n = client
        .execute_cached(
            "INSERT INTO lottery_draws
                    (id, schedule_id, status, algorithm, seed, entrants, permutation, seats, started_at)
             VALUES ($1, $2, 'drawing', $3, $4, $5, $6, $7, $8)
             ON CONFLICT (schedule_id) DO NOTHING",
            &[
                &draw.id,
                &draw.schedule,
                &draw.algorithm,
                &draw.seed,
                &draw.entrants,
                &draw.permutation,
                &draw.seats,
                &draw.started_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

pub struct NewDraw<'a> {
    pub id: Uuid,
    pub schedule: Uuid,
    pub algorithm: &'a str,
    pub seed: &'a [u8],
    pub entrants: serde_json::Value,
    pub permutation: serde_json::Value,
    pub seats: i32,
    pub started_at: DateTime<Utc>,
}

/// A draw as stored.
#[derive(Debug, Clone)]
pub struct StoredDraw {
    pub id: Uuid,
    pub schedule_id: Uuid,
    pub status: String,
    pub algorithm: String,
    pub seed: Vec<u8>,
    pub entrants: Vec<Uuid>,
    pub permutation: Vec<usize>,
    pub seats: i32,
    pub outcomes: Option<serde_json::Value>,
    pub winners: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub drawn_at: Option<DateTime<Utc>>,
    pub drawn_by: Option<String>,
}

const DRAW_COLUMNS: &str = "id, schedule_id, status, algorithm, seed, entrants, permutation, seats, outcomes, \
                            winners, started_at, drawn_at, drawn_by";

fn to_draw(r: &Row) -> StoredDraw {
    let entrants: serde_json::Value = r.get(5);
    let permutation: serde_json::Value = r.get(6);
    StoredDraw {
        id: r.get(0),
        schedule_id: r.get(1),
        status: r.get(2),
        algorithm: r.get(3),
        seed: r.get(4),
        entrants: serde_json::from_value(entrants).unwrap_or_default(),
        permutation: serde_json::from_value(permutation).unwrap_or_default(),
        seats: r.get(7),
        outcomes: r.get(8),
        winners: r.get(9),
        started_at: r.get(10),
        drawn_at: r.get(11),
        drawn_by: r.get(12),
    }
}

/// The schedule's draw still `drawing`, locked for this transaction; none
/// when another replica holds it (or it is done).
pub async fn lock_pending_draw<C: GenericClient>(
    client: &C,
    schedule: Uuid,
) -> Result<Option<StoredDraw>, Error> {
    Ok(client
        .query_opt_cached(
            &format!(
                "SELECT {DRAW_COLUMNS} FROM lottery_draws
                  WHERE schedule_id = $1 AND status = 'drawing' FOR UPDATE SKIP LOCKED"
            ),
            &[&schedule],
        )
        .await?
        .map(|r| to_draw(&r)))
}

pub async fn draw_of_schedule<C: GenericClient>(
    client: &C,
    schedule: Uuid,
) -> Result<Option<StoredDraw>, Error> {
    Ok(client
        .query_opt_cached(
            &format!("SELECT {DRAW_COLUMNS} FROM lottery_draws WHERE schedule_id = $1"),
            &[&schedule],
        )
        .await?
        .map(|r| to_draw(&r)))
}

/// What one entrant got.
pub struct EntryOutcome {
    pub entry: Uuid,
    pub booking: Option<Uuid>,
    pub lost_reason: Option<String>,
}

pub async fn set_entry_outcome<C: GenericClient>(client: &C, o: &EntryOutcome) -> Result<(), Error> {
    let outcome = if o.booking.is_some() { "won" } else { "lost" };
    client
        .execute_cached(
            "UPDATE lottery_entries SET outcome = $2, booking_id = $3, lost_reason = $4 WHERE id = $1",
            &[&o.entry, &outcome, &o.booking, &o.lost_reason],
        )
        .await?;
    Ok(())
}

pub async fn finish_draw<C: GenericClient>(
    client: &C,
    draw: Uuid,
    outcomes: &serde_json::Value,
    winners: i32,
    at: DateTime<Utc>,
    by: &str,
) -> Result<(), Error> {
    client
        .execute_cached(
            "UPDATE lottery_draws SET status = 'drawn', outcomes = $2, winners = $3, drawn_at = $4, drawn_by = $5
              WHERE id = $1",
            &[&draw, outcomes, &winners, &at, &by],
        )
        .await?;
    Ok(())
}

/// An entry with its schedule, patient and outcome, for reads by id.
pub struct StoredEntry {
    pub schedule_id: Uuid,
    pub patient_id: Uuid,
    pub record: EntryRecord,
    pub outcome: Option<String>,
    pub booking_id: Option<Uuid>,
    pub lost_reason: Option<String>,
    pub closes_at: DateTime<Utc>,
}

pub async fn entry_by_id<C: GenericClient>(client: &C, id: Uuid) -> Result<Option<StoredEntry>, Error> {
    Ok(client
        .query_opt_cached(
            "SELECT e.id, e.segment_id, e.channel, e.owner_app, e.referral_id, e.entered_at,
                    e.schedule_id, e.patient_id, e.outcome, e.booking_id, e.lost_reason,
                    s.release_at + make_interval(secs => coalesce(s.lottery_window_seconds, 0))
               FROM lottery_entries e JOIN schedules s ON s.id = e.schedule_id
              WHERE e.id = $1",
            &[&id],
        )
        .await?
        .map(|r| StoredEntry {
            record: to_record(&r),
            schedule_id: r.get(6),
            patient_id: r.get(7),
            outcome: r.get(8),
            booking_id: r.get(9),
            lost_reason: r.get(10),
            closes_at: r.get(11),
        }))
}
