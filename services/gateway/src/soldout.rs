//! The segments this replica knows are sold out, so that at the release
//! second the losers are answered `409 SLOT_SOLD_OUT` here, after their
//! one admission round trip (`crate::limits`), without a hop to the
//! hospital.
//!
//! Fed by the hospitals' own scripts (slot-inventory's `hold.lua`,
//! `release.lua`, `load_segment.lua`, the segment's `forget`), which publish
//! on the city's seats channel ([`jyt_cache::hospital::seats_channel`]):
//!
//! - `sold|<slot id>` when a segment's free list is empty (its last seat
//!   went, or an attempt found it empty): no seat of any pool is left, so
//!   the mark holds for every channel whatever the merge time;
//! - `free|<slot id>` after any script put a seat back (cancellation,
//!   expiry, a failed write, a reload after 加号 or a capacity change).
//!
//! Both are published from inside the scripts on the segment's own Redis
//! slot, so one subscriber receives them in the order they happened and the
//! last one received is the truth: no mark can outlive the seat coming back
//! by more than the push's delivery (well under the 100 ms the platform
//! promises; `tests/system/sold_out_marks.rs` measures it). Marks are
//! believed only while the subscription is up: when it drops, every mark is
//! forgotten (the hospitals answer again) until it is back.
//!
//! A segment sold out for one channel only (its pool and common empty
//! before the merge, other pools not) is not marked: such attempts still go
//! to the hospital, whose script decides by pool.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use jyt_cache::redis;
use jyt_domain::SlotRef;

/// A replica's sold-out set.
#[derive(Debug, Default)]
pub struct SoldOut {
    marks: RwLock<HashSet<SlotRef>>,
    /// Marks are believed only while the subscription is up.
    subscribed: AtomicBool,
    /// Attempts answered here without a hop (for `/metrics`-style checks
    /// and the load test's report).
    answered: AtomicU64,
}

impl SoldOut {
    /// Whether `slot` is known sold out now (false while unsubscribed).
    pub fn is_sold_out(&self, slot: &SlotRef) -> bool {
        self.subscribed.load(Ordering::Acquire)
            && self
                .marks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(slot)
    }

    /// Count an attempt answered from the mark.
    pub fn answered_here(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// How many attempts were answered from a mark.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// How many segments are marked.
    pub fn len(&self) -> usize {
        self.marks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no segment is marked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply one message of the seats channel; anything else is ignored.
    pub fn apply(&self, message: &str) {
        let Some((what, slot)) = message.split_once('|') else {
            return;
        };
        let Ok(slot) = slot.parse::<SlotRef>() else {
            return;
        };
        let mut marks = self
            .marks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match what {
            "sold" => {
                marks.insert(slot);
            }
            "free" => {
                marks.remove(&slot);
            }
            _ => {}
        }
    }

    fn forget_all(&self) {
        self.subscribed.store(false, Ordering::Release);
        self.marks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Subscribe to the seats channel on `client` and keep the set by it,
    /// reconnecting after a drop (marks forgotten meanwhile).
    pub fn spawn(self: Arc<Self>, client: redis::Client, channel: String) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                        Ok(()) => {
                            backoff = Duration::from_millis(50);
                            // Start clean: anything marked before the drop
                            // may have been freed meanwhile.
                            self.forget_all();
                            self.subscribed.store(true, Ordering::Release);
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                if let Ok(payload) = msg.get_payload::<String>() {
                                    self.apply(&payload);
                                }
                            }
                            tracing::warn!(
                                "the seats channel's subscription dropped; sold-out marks forgotten"
                            );
                        }
                        Err(e) => tracing::warn!(error = %e, "could not subscribe to the seats channel"),
                    },
                    Err(e) => tracing::warn!(error = %e, "could not connect for the seats channel"),
                }
                self.forget_all();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_message_of_a_segment_decides_and_nothing_counts_unsubscribed() {
        let set = SoldOut::default();
        let slot: SlotRef = "pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        set.apply(&format!("sold|{slot}"));
        assert!(!set.is_sold_out(&slot), "believed without a subscription");
        set.subscribed.store(true, Ordering::Release);
        assert!(set.is_sold_out(&slot));
        set.apply(&format!("free|{slot}"));
        assert!(!set.is_sold_out(&slot));
        set.apply(&format!("sold|{slot}"));
        set.apply("sold|not-a-slot");
        set.apply("nonsense");
        assert_eq!(set.len(), 1);
        set.forget_all();
        assert!(!set.is_sold_out(&slot));
        assert!(set.is_empty());
    }
}
