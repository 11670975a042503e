//! Applying events: each in one transaction that first records its id, so a
//! redelivered event changes nothing.

use jyt_db::deadpool_postgres::{GenericClient, Pool};
use jyt_domain::time::local;
use jyt_events::Envelope;

/// Apply one event; false when it had been applied before.
pub async fn apply(pool: &Pool, stream: &str, event: &Envelope) -> anyhow::Result<bool> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let first_time = tx
        .execute(
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

async fn apply_effect<C: GenericClient>(client: &C, event: &Envelope) -> anyhow::Result<()> {
    let day = local(event.occurred_at).date_naive();
    let text = |field: &str| {
        event
            .payload
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    match event.event_type.as_str() {
        "booking.confirmed" => {
            let fee = event.payload.get("fee_fen").and_then(|v| v.as_i64()).unwrap_or(0);
            client
                .execute(
                    "INSERT INTO channel_daily (day, hospital_id, channel, bookings, fees_fen)
                     VALUES ($1, $2, $3, 1, $4)
                     ON CONFLICT (day, hospital_id, channel) DO UPDATE
                        SET bookings = channel_daily.bookings + 1,
                            fees_fen = channel_daily.fees_fen + EXCLUDED.fees_fen",
                    &[&day, &text("hospital_id"), &text("channel"), &fee],
                )
                .await?;
        }
        // Events this service does not count yet are recorded as seen.
        other => tracing::debug!(event_type = other, "event not counted"),
    }
    Ok(())
}
