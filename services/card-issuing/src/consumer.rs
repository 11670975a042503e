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

use std::time::{Duration, Instant};

use jyt_cache::RedisConn;
use jyt_cache::redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
};
use jyt_cache::redis::{self, AsyncCommands};
use jyt_events::envelope_from_fields;

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
    /// Create the group (from the stream's start, so events written before
    /// our first start are not skipped); an existing group is fine.
    pub async fn ensure_group(&self) -> redis::RedisResult<()> {
        let group = &self.state.settings.standing.consumer_group;
        let mut conn = self.redis.clone();
        match conn
            .xgroup_create_mkstream::<_, _, _, ()>(&self.stream, group, "0")
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Read and apply one batch. `pending` re-reads entries delivered to us
    /// but not acknowledged (after a restart or a failed apply).
    pub async fn poll_once(&self, pending: bool) -> Result<usize, anyhow::Error> {
        let rules = &self.state.settings.standing;
        let mut opts = StreamReadOptions::default()
            .group(&rules.consumer_group, &rules.consumer_name)
            .count(rules.batch_size);
        if !pending {
            opts = opts.block(usize::try_from(rules.block_ms).unwrap_or(500));
        }
        let id = if pending { "0" } else { ">" };
        let mut conn = self.redis.clone();
        if pending {
            // Take over entries another consumer (a replica that died)
            // was given but never acknowledged; they then show up in our
            // own pending list, read just below.
            let _: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    &self.stream,
                    &rules.consumer_group,
                    &rules.consumer_name,
                    rules.claim_idle_ms,
                    "0-0",
                    StreamAutoClaimOptions::default()
                        .count(rules.batch_size)
                        .with_justid(),
                )
                .await?;
        }
        let reply: Option<StreamReadReply> = conn.xread_options(&[&self.stream], &[id], &opts).await?;
        let Some(reply) = reply else { return Ok(0) };
        let mut handled = 0;
        for key in reply.keys {
            for entry in key.ids {
                self.apply(&entry.map).await?;
                let _: i64 = conn
                    .xack(&self.stream, &rules.consumer_group, &[&entry.id])
                    .await?;
                handled += 1;
            }
        }
        Ok(handled)
    }

    async fn apply(
        &self,
        fields: &std::collections::HashMap<String, redis::Value>,
    ) -> Result<(), anyhow::Error> {
        let Some(envelope) = envelope_from_fields(fields) else {
            // Unreadable entries would be redelivered forever; log and move on.
            tracing::warn!("skipping a stream entry without a readable envelope");
            return Ok(());
        };
        match envelope.event_type.as_str() {
            NO_SHOW_EVENT => self.no_show(&envelope).await,
            REFUND_EVENT => self.refund(&envelope).await,
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
        let mut pending = true;
        // Checked again after any error: a flushed Redis loses the group.
        let mut group_ready = false;
        let mut backoff = Duration::from_millis(100);
        let claim_every = Duration::from_millis(self.state.settings.standing.claim_idle_ms);
        let mut last_claim = Instant::now();
        loop {
            if last_claim.elapsed() >= claim_every {
                pending = true;
                last_claim = Instant::now();
            }
            let wait = if group_ready {
                self.poll_once(pending).await
            } else {
                self.ensure_group().await.map(|()| 0).map_err(anyhow::Error::from)
            };
            let pause = match wait {
                Ok(n) => {
                    if group_ready {
                        backoff = Duration::from_millis(100);
                        // Pending entries are drained first, then new ones.
                        if pending && n == 0 {
                            pending = false;
                        }
                    }
                    group_ready = true;
                    Duration::ZERO
                }
                Err(e) => {
                    group_ready = false;
                    tracing::warn!(error = %format!("{e:#}"), stream = %self.stream, "booking event consumer failed; will retry");
                    pending = true;
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
