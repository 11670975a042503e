//! The consumer loop: read a batch, apply each event in its own transaction,
//! acknowledge what was applied. A failure leaves entries unacknowledged, so
//! they are read again (after a restart, first thing).

use std::time::Duration;

use jyt_db::deadpool_postgres::Pool;
use jyt_events::StreamConsumer;
use prometheus::{IntCounter, IntGaugeVec};

use crate::ledger;

#[derive(Clone)]
pub struct ConsumerMetrics {
    pub applied: IntCounter,
    pub lag: IntGaugeVec,
}

impl ConsumerMetrics {
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let applied = IntCounter::new("events_applied_total", "Events applied (first delivery only)")?;
        let lag = IntGaugeVec::new(
            prometheus::Opts::new(
                "consumer_lag_events",
                "Stream entries not yet delivered to our group",
            ),
            &["stream"],
        )?;
        registry.register(Box::new(applied.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        Ok(Self { applied, lag })
    }
}

pub async fn run(mut consumer: StreamConsumer, pool: Pool, metrics: ConsumerMetrics) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match step(&mut consumer, &pool, &metrics).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, stream = %consumer.stream, "event consumer failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn step(consumer: &mut StreamConsumer, pool: &Pool, metrics: &ConsumerMetrics) -> anyhow::Result<()> {
    consumer.ensure_group().await?;
    let entries = consumer.next_batch().await?;
    let mut done = Vec::with_capacity(entries.len());
    for entry in entries {
        match &entry.envelope {
            Some(event) => {
                if ledger::apply(pool, &consumer.stream, event).await? {
                    metrics.applied.inc();
                }
            }
            None => tracing::error!(entry = %entry.id, "unreadable stream entry skipped"),
        }
        done.push(entry.id);
    }
    consumer.ack(&done).await?;
    if let Some(lag) = consumer.lag().await? {
        metrics
            .lag
            .with_label_values(&[consumer.stream.as_str()])
            .set(lag);
    }
    Ok(())
}
