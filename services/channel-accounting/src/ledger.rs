//! Applying events: each in one transaction that first records its id, so a
//! redelivered or replayed event changes nothing.
//!
//! What each event does:
//! - `booking.confirmed`: one booking for its channel, hospital, day and
//!   minute (once per booking id, however many events carry it), and its
//!   registration fee into the money ledger; free visits are confirmed at
//!   once, so `booking.held` itself counts nothing.
//! - `booking.cancelled` / `expired` / `checked_in` / `no_show` / `stopped`
//!   / `promoted`: the matching counter (a promotion also shortens the
//!   schedule's waitlist by one).
//! - `booking.refund_requested`: a refund in the money ledger.
//! - `waitlist.joined`: a join, and the schedule's waitlist one longer;
//!   `waitlist.capacity_requested` carries the hospital's own count, which
//!   replaces ours.
//! - `attempts.tallied`: attempts and sold-out refusals per minute (losers
//!   never reach PostgreSQL, so the hospital tallies them in memory).
//! - `card.topped_up`: a prepaid top-up in the money ledger (hospital '').
//!   `card.fee_paid` and `card.refunded` are the card side of fees and
//!   refunds already counted from the booking events, so they count nothing.
//! - `booking.held`, and `booking.confirmed` of a free visit (confirmed at
//!   once): a seat taken in its second, for the surge view; `attempts.tallied`
//!   spreads its attempts over `traffic_second` by its `seconds`.
//! - `booking.completed`: the visit's satisfaction survey, once per
//!   booking (see [`crate::survey`]).
//! - capacity changes, stops, waivers, appeal decisions and capacity
//!   requests (and the sessions published for a waitlist that answer
//!   them): see [`crate::audit`].
//! - `precise.submitted` / `decided` / `seated` (精准预约): see
//!   [`crate::precise`].
//! - `draw.drawn`: a lottery draw for the console's draws page
//!   ([`crate::routes::draws`]); `draw.won`'s booking is counted by its
//!   `booking.held` / `booking.confirmed`.
//! - `signing.*` and `referral.*`: family doctor care, see
//!   [`crate::family_doctor`].

use chrono::{DateTime, NaiveDate, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::{GenericClient, Pool};
use jyt_domain::time::local;
use jyt_events::Envelope;
use serde_json::Value;

/// Apply one event; false when it had been applied before.
pub async fn apply(pool: &Pool, stream: &str, event: &Envelope) -> anyhow::Result<bool> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let first_time = tx
        .execute_cached(
            "INSERT INTO processed_events (event_id, event_type, stream) VALUES ($1, $2, $3)
             ON CONFLICT (event_id) DO NOTHING",
            &[&event.event_id, &event.event_type, &stream],
        )
        .await?
        == 1;
    if first_time {
        apply_effect(&tx, event).await?;
    }
    tx.commit().await?;
    Ok(first_time)
}

/// The counters of `channel_daily` an event can move.
#[derive(Debug, Clone, Copy)]
enum Counter {
    Cancellations,
    Expiries,
    Promotions,
    CheckIns,
    NoShows,
    Stops,
    WaitlistJoins,
}

impl Counter {
    fn column(self) -> &'static str {
        match self {
            Counter::Cancellations => "cancellations",
            Counter::Expiries => "expiries",
            Counter::Promotions => "promotions",
            Counter::CheckIns => "check_ins",
            Counter::NoShows => "no_shows",
            Counter::Stops => "stops",
            Counter::WaitlistJoins => "waitlist_joins",
        }
    }
}

struct Fields<'a>(&'a Value);

impl Fields<'_> {
    fn text(&self, field: &str) -> String {
        self.0.get(field).and_then(Value::as_str).unwrap_or("").to_owned()
    }
    fn int(&self, field: &str) -> i64 {
        self.0.get(field).and_then(Value::as_i64).unwrap_or(0)
    }
    fn detail(&self) -> Fields<'_> {
        Fields(self.0.get("detail").unwrap_or(&Value::Null))
    }
    fn opt_text(&self, field: &str) -> Option<String> {
        self.0
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

/// The minute an instant falls in (UTC minute start).
pub fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0).unwrap_or(t)
}

async fn apply_effect<C: GenericClient>(client: &C, event: &Envelope) -> anyhow::Result<()> {
    let day = local(event.occurred_at).date_naive();
    let p = Fields(&event.payload);
    let hospital = p.text("hospital_id");
    let channel = p.text("channel");
    let counter = |c: Counter| bump(client, day, &hospital, &channel, c);
    if crate::audit::apply(client, event).await?
        || crate::precise::apply(client, event).await?
        || crate::family_doctor::apply(client, event).await?
    {
        return Ok(());
    }
    match event.event_type.as_str() {
        "booking.confirmed" => confirmed(client, event, day, &p).await?,
        "booking.held" => seat_taken(client, event.occurred_at, &hospital, &channel).await?,
        "draw.drawn" => crate::routes::draws::record(client, event).await?,
        "booking.cancelled" => counter(Counter::Cancellations).await?,
        "booking.expired" => counter(Counter::Expiries).await?,
        "booking.checked_in" => {
            counter(Counter::CheckIns).await?;
            // A late check-in: the hospital recorded the arrival after the
            // booking was marked a no-show, so the patient came after all
            // and that no-show is taken back (on the check-in's day, as a
            // late arrival is recorded the same day in practice).
            if p.detail().0.get("late").and_then(Value::as_bool) == Some(true) {
                unbump_no_show(client, day, &hospital, &channel).await?;
            }
        }
        "booking.no_show" => counter(Counter::NoShows).await?,
        "booking.completed" => crate::survey::create(client, event).await?,
        "booking.stopped" => counter(Counter::Stops).await?,
        "booking.promoted" => {
            counter(Counter::Promotions).await?;
            client
                .execute_cached(
                    "UPDATE waitlist_depth SET waiting = GREATEST(waiting - 1, 0), updated_at = $3
                      WHERE hospital_id = $1 AND schedule_id = $2",
                    &[&hospital, &p.text("schedule_id"), &event.occurred_at],
                )
                .await?;
        }
        "booking.refund_requested" => {
            let d = p.detail();
            let amount = match d.int("amount_fen") {
                0 => p.int("fee_fen"),
                n => n,
            };
            let method = d
                .opt_text("payment_method")
                .unwrap_or_else(|| p.text("payment_method"));
            money(
                client,
                event,
                "refund",
                day,
                (&hospital, &channel, &method),
                amount,
                p.opt_text("booking_id"),
                d.opt_text("payment_reference"),
            )
            .await?;
        }
        "waitlist.joined" => {
            counter(Counter::WaitlistJoins).await?;
            client
                .execute_cached(
                    "INSERT INTO waitlist_depth (hospital_id, schedule_id, waiting, updated_at)
                     VALUES ($1, $2, GREATEST($3::bigint, 1), $4)
                     ON CONFLICT (hospital_id, schedule_id) DO UPDATE
                        SET waiting = waitlist_depth.waiting + 1, updated_at = EXCLUDED.updated_at",
                    &[
                        &hospital,
                        &p.text("schedule_id"),
                        &p.int("position"),
                        &event.occurred_at,
                    ],
                )
                .await?;
        }
        "waitlist.capacity_requested" => {
            client
                .execute_cached(
                    "INSERT INTO waitlist_depth (hospital_id, schedule_id, waiting, updated_at)
                     VALUES ($1, $2, GREATEST($3::bigint, 0), $4)
                     ON CONFLICT (hospital_id, schedule_id) DO UPDATE
                        SET waiting = EXCLUDED.waiting, updated_at = EXCLUDED.updated_at",
                    &[
                        &hospital,
                        &p.text("schedule_id"),
                        &p.int("waiting"),
                        &event.occurred_at,
                    ],
                )
                .await?;
        }
        "attempts.tallied" => {
            let minute = p
                .opt_text("minute")
                .and_then(|m| DateTime::parse_from_rfc3339(&m).ok())
                .map_or(event.occurred_at, |m| m.with_timezone(&Utc));
            let minute = minute_of(minute);
            let day = local(minute).date_naive();
            let (attempts, sold_out) = (p.int("attempts").max(0), p.int("sold_out").max(0));
            client
                .execute_cached(
                    "INSERT INTO channel_daily (day, hospital_id, channel, attempts, sold_out)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (day, hospital_id, channel) DO UPDATE
                        SET attempts = channel_daily.attempts + EXCLUDED.attempts,
                            sold_out = channel_daily.sold_out + EXCLUDED.sold_out",
                    &[&day, &hospital, &channel, &attempts, &sold_out],
                )
                .await?;
            client
                .execute_cached(
                    "INSERT INTO traffic_minute (minute, hospital_id, channel, attempts, sold_out)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (minute, hospital_id, channel) DO UPDATE
                        SET attempts = traffic_minute.attempts + EXCLUDED.attempts,
                            sold_out = traffic_minute.sold_out + EXCLUDED.sold_out",
                    &[&minute, &hospital, &channel, &attempts, &sold_out],
                )
                .await?;
            seconds(client, minute, &hospital, &channel, p.0.get("seconds")).await?;
        }
        "card.topped_up" => {
            money(
                client,
                event,
                "topup",
                day,
                ("", &channel, "prepaid_card"),
                p.int("amount_fen"),
                None,
                p.opt_text("reference"),
            )
            .await?;
        }
        other => tracing::debug!(event_type = other, "event not counted"),
    }
    Ok(())
}

async fn confirmed<C: GenericClient>(
    client: &C,
    event: &Envelope,
    day: NaiveDate,
    p: &Fields<'_>,
) -> anyhow::Result<()> {
    let booking_id = p
        .opt_text("booking_id")
        .unwrap_or_else(|| event.aggregate_id.clone());
    let (hospital, channel) = (p.text("hospital_id"), p.text("channel"));
    let first = client
        .execute_cached(
            "INSERT INTO counted_bookings (booking_id, hospital_id, channel, confirmed_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (booking_id) DO NOTHING",
            &[&booking_id, &hospital, &channel, &event.occurred_at],
        )
        .await?
        == 1;
    if !first {
        tracing::debug!(booking = %booking_id, "booking already counted");
        return Ok(());
    }
    let fee = p.int("fee_fen").max(0);
    client
        .execute_cached(
            "INSERT INTO channel_daily (day, hospital_id, channel, bookings, fees_fen)
             VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (day, hospital_id, channel) DO UPDATE
                SET bookings = channel_daily.bookings + 1,
                    fees_fen = channel_daily.fees_fen + EXCLUDED.fees_fen",
            &[&day, &hospital, &channel, &fee],
        )
        .await?;
    client
        .execute_cached(
            "INSERT INTO traffic_minute (minute, hospital_id, channel, bookings) VALUES ($1, $2, $3, 1)
             ON CONFLICT (minute, hospital_id, channel) DO UPDATE
                SET bookings = traffic_minute.bookings + 1",
            &[&minute_of(event.occurred_at), &hospital, &channel],
        )
        .await?;
    if fee == 0 {
        // Free visits are confirmed at once: the seat was taken now. (Paid
        // ones were counted when held.)
        seat_taken(client, event.occurred_at, &hospital, &channel).await?;
    }
    if fee > 0 {
        money(
            client,
            event,
            "fee",
            day,
            (&hospital, &channel, &p.text("payment_method")),
            fee,
            Some(booking_id),
            p.detail().opt_text("payment_reference"),
        )
        .await?;
    }
    Ok(())
}

/// The second an instant falls in (UTC).
pub fn second_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

async fn seat_taken<C: GenericClient>(
    client: &C,
    at: DateTime<Utc>,
    hospital: &str,
    channel: &str,
) -> anyhow::Result<()> {
    client
        .execute_cached(
            "INSERT INTO traffic_second (second, hospital_id, channel, bookings) VALUES ($1, $2, $3, 1)
             ON CONFLICT (second, hospital_id, channel) DO UPDATE
                SET bookings = traffic_second.bookings + 1",
            &[&second_of(at), &hospital, &channel],
        )
        .await?;
    Ok(())
}

/// A tallied minute's `seconds`: `[second of the minute, attempts,
/// sold-out]` for each second that had attempts. Malformed entries are
/// skipped; the minute's totals are kept either way.
async fn seconds<C: GenericClient>(
    client: &C,
    minute: DateTime<Utc>,
    hospital: &str,
    channel: &str,
    seconds: Option<&Value>,
) -> anyhow::Result<()> {
    for entry in seconds.and_then(Value::as_array).into_iter().flatten() {
        let Some([s, attempts, sold_out]) = entry
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
            .and_then(|v| <[i64; 3]>::try_from(v).ok())
        else {
            continue;
        };
        if !(0..60).contains(&s) {
            continue;
        }
        client
            .execute_cached(
                "INSERT INTO traffic_second (second, hospital_id, channel, attempts, sold_out)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (second, hospital_id, channel) DO UPDATE
                    SET attempts = traffic_second.attempts + EXCLUDED.attempts,
                        sold_out = traffic_second.sold_out + EXCLUDED.sold_out",
                &[
                    &(minute + chrono::Duration::seconds(s)),
                    &hospital,
                    &channel,
                    &attempts.max(0),
                    &sold_out.max(0),
                ],
            )
            .await?;
    }
    Ok(())
}

async fn bump<C: GenericClient>(
    client: &C,
    day: NaiveDate,
    hospital: &str,
    channel: &str,
    counter: Counter,
) -> anyhow::Result<()> {
    let column = counter.column();
    // `column` comes from a fixed list, never from input.
    let sql = format!(
        "INSERT INTO channel_daily (day, hospital_id, channel, {column}) VALUES ($1, $2, $3, 1)
         ON CONFLICT (day, hospital_id, channel) DO UPDATE SET {column} = channel_daily.{column} + 1"
    );
    client.execute_cached(&sql, &[&day, &hospital, &channel]).await?;
    Ok(())
}

/// Take back one no-show of a day (never below zero).
async fn unbump_no_show<C: GenericClient>(
    client: &C,
    day: NaiveDate,
    hospital: &str,
    channel: &str,
) -> anyhow::Result<()> {
    client
        .execute_cached(
            "UPDATE channel_daily SET no_shows = GREATEST(no_shows - 1, 0)
              WHERE day = $1 AND hospital_id = $2 AND channel = $3",
            &[&day, &hospital, &channel],
        )
        .await?;
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one ledger row's columns")]
async fn money<C: GenericClient>(
    client: &C,
    event: &Envelope,
    kind: &str,
    day: NaiveDate,
    (hospital, channel, method): (&str, &str, &str),
    amount_fen: i64,
    booking_id: Option<String>,
    reference: Option<String>,
) -> anyhow::Result<()> {
    if amount_fen <= 0 {
        tracing::warn!(event = %event.event_id, kind, "money event without a positive amount ignored");
        return Ok(());
    }
    let method = if method.is_empty() { "self_pay" } else { method };
    client
        .execute_cached(
            "INSERT INTO money_entries (event_id, kind, day, occurred_at, hospital_id, channel,
                                        payment_method, amount_fen, booking_id, reference)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &event.event_id,
                &kind,
                &day,
                &event.occurred_at,
                &hospital,
                &channel,
                &method,
                &amount_fen,
                &booking_id,
                &reference,
            ],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_start_on_the_minute() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T00:30:59.900Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(minute_of(t).to_rfc3339(), "2026-11-30T00:30:00+00:00");
    }
}
