//! Consumes slot-inventory's event stream with a Redis consumer group and
//! applies two kinds of events:
//! - `booking.no_show` to standing; the event id's primary key in
//!   `no_shows` makes a redelivery a no-op;
//! - `booking.refund_requested` of a fee paid from a prepaid card (the
//!   gateway's `prepaid_card` payment debited the card under the booking
//!   id): the fee is credited back to the card, idempotently under
//!   `refund:<booking_id>`, so a redelivery credits nothing twice. Other
//!   payment methods are the channel's to refund (the gateway sends it a
//!   signed instruction).
//!
//! Delivery is at least once. An entry is acknowledged only after its
//! transaction commits, so a crash in between means a redelivery, never a
//! loss. A refund that can never be applied (no such fee, an amount over
//! what was paid) is logged as an error and acknowledged rather than
//! blocking the events behind it.
//!
//! A batch is acknowledged in one `XACK`, with the stream's events of other
//! kinds, which are not parsed (`jyt_events::StreamConsumer::wanting`): the
//! stream carries every event of every booking, and acknowledging each on
//! its own was a Redis round trip per booking, payment and check-in of the
//! city.

use std::time::Duration;

use jyt_cache::RedisConn;
use jyt_events::StreamConsumer;

use crate::error::CardError;
use crate::ledger::{self, BookingRefund};
use crate::standing::{self, NoShowPayload};
use crate::state::AppState;

pub const NO_SHOW_EVENT: &str = "booking.no_show";
pub const REFUND_EVENT: &str = "booking.refund_requested";
/// The gateway's payment method for the card's prepaid balance.
pub const PREPAID_CARD: &str = "prepaid_card";

pub struct BookingEventConsumer {
    pub state: AppState,
    /// Its own connection: a blocking XREADGROUP would stall every other
    /// command multiplexed on a shared one.
    pub redis: RedisConn,
    pub stream: String,
}

impl BookingEventConsumer {
    /// The group's reader on slot-inventory's stream, as the settings say.
    /// It hands out only the two kinds applied here; the stream's other
    /// events (every booking's, payment's and check-in's) are acknowledged
    /// with each batch, unparsed.
    fn stream_consumer(&self) -> StreamConsumer {
        let rules = &self.state.settings.standing;
        let mut consumer = StreamConsumer::new(
            self.redis.clone(),
            self.stream.clone(),
            rules.consumer_group.clone(),
            rules.consumer_name.clone(),
        )
        .wanting(&[NO_SHOW_EVENT, REFUND_EVENT]);
        consumer.batch_size = rules.batch_size;
        consumer.block_ms = usize::try_from(rules.block_ms).unwrap_or(500);
        consumer.claim_idle_ms = rules.claim_idle_ms;
        consumer
    }

    /// Read and apply one batch, then acknowledge it in one `XACK`: what
    /// was applied (and the entries of other kinds). An entry whose apply
    /// fails is not acknowledged, nor is anything after it; [`Self::run`]
    /// then reads our pending entries again first.
    async fn step(&self, consumer: &mut StreamConsumer) -> Result<usize, anyhow::Error> {
        let entries = consumer.next_batch().await?;
        let mut done = Vec::with_capacity(entries.len());
        let mut failed = None;
        for entry in entries {
            match &entry.envelope {
                Some(envelope) => {
                    if let Err(e) = self.apply(envelope).await {
                        failed = Some(e);
                        break;
                    }
                }
                // Unreadable entries would be redelivered forever; log and move on.
                None => {
                    tracing::warn!(entry = %entry.id, "skipping a stream entry without a readable envelope")
                }
            }
            done.push(entry.id);
        }
        consumer.ack(&done).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(done.len()),
        }
    }

    async fn apply(&self, envelope: &jyt_events::Envelope) -> Result<(), anyhow::Error> {
        match envelope.event_type.as_str() {
            NO_SHOW_EVENT => self.no_show(envelope).await,
            REFUND_EVENT => self.refund(envelope).await,
            _ => Ok(()),
        }
    }

    async fn no_show(&self, envelope: &jyt_events::Envelope) -> Result<(), anyhow::Error> {
        let payload: NoShowPayload = match serde_json::from_value(envelope.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(event = %envelope.event_id, error = %e, "skipping a malformed no-show event");
                return Ok(());
            }
        };
        let applied = standing::record_no_show(&self.state, envelope.event_id, &payload, chrono::Utc::now())
            .await
            .map_err(|e| anyhow::anyhow!("recording no-show {}: {e}", envelope.event_id))?;
        tracing::debug!(event = %envelope.event_id, applied, "no-show event handled");
        Ok(())
    }

    /// Credit a prepaid-card fee back (see the module's doc).
    async fn refund(&self, envelope: &jyt_events::Envelope) -> Result<(), anyhow::Error> {
        let p = &envelope.payload;
        let detail = &p["detail"];
        let method = detail["payment_method"]
            .as_str()
            .or_else(|| p["payment_method"].as_str())
            .unwrap_or("");
        if method != PREPAID_CARD {
            return Ok(());
        }
        let booking = p["booking_id"].as_str().unwrap_or(&envelope.aggregate_id);
        let amount = detail["amount_fen"]
            .as_i64()
            .filter(|a| *a > 0)
            .or_else(|| p["fee_fen"].as_i64())
            .unwrap_or(0);
        if amount <= 0 {
            tracing::debug!(event = %envelope.event_id, "a refund of nothing: nothing to credit");
            return Ok(());
        }
        // What the gateway needs to tell the patient's channel, carried
        // into `card.refunded`.
        let context = serde_json::json!({
            "booking_id": booking,
            "hospital_id": p["hospital_id"],
            "patient_id": p["patient_id"],
            "owner_app": p["owner_app"],
            "refund_event_id": envelope.event_id,
            "payment_method": PREPAID_CARD,
            "reason": detail["reason"],
        });
        match ledger::refund_booking(&self.state, booking, amount, &context, chrono::Utc::now()).await {
            Ok(BookingRefund::Credited(posted)) => {
                tracing::info!(
                    event = %envelope.event_id,
                    booking,
                    amount_fen = amount,
                    first_time = posted.created,
                    "booking fee refunded to the card"
                );
                Ok(())
            }
            Ok(BookingRefund::NoCardPayment) => {
                tracing::error!(
                    event = %envelope.event_id,
                    booking,
                    "a prepaid-card refund was requested for a booking no card paid; nothing credited"
                );
                Ok(())
            }
            // Never appliable however often it is read again.
            Err(
                e @ (CardError::RefundExceedsPayment { .. }
                | CardError::ReferenceReused(_)
                | CardError::PaymentNotFound(_)
                | CardError::CardNotFound
                | CardError::Request(_)),
            ) => {
                tracing::error!(event = %envelope.event_id, booking, error = %e, "booking refund cannot be applied");
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("refunding booking {booking}: {e}")),
        }
    }

    /// Run until `shutdown` resolves; on errors back off and retry the
    /// unacknowledged entries.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut consumer = self.stream_consumer();
        // Checked again after any error: a flushed Redis loses the group.
        let mut group_ready = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = if group_ready {
                self.step(&mut consumer).await
            } else {
                consumer
                    .ensure_group()
                    .await
                    .map(|()| 0)
                    .map_err(anyhow::Error::from)
            };
            let pause = match wait {
                Ok(_) => {
                    group_ready = true;
                    backoff = Duration::from_millis(100);
                    Duration::ZERO
                }
                Err(e) => {
                    group_ready = false;
                    tracing::warn!(error = %format!("{e:#}"), stream = %self.stream, "booking event consumer failed; will retry");
                    consumer.reread_pending();
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}
