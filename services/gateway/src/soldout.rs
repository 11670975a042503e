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
//! - `sold|<slot id>|<channel>|<merge_at>` when an attempt through that
//!   channel before the merge time found nothing on offer for it (its
//!   channel's pool and common empty) while other pools still had seats:
//!   the mark holds for that channel only, and only until `merge_at` (unix
//!   seconds), when any pool's seat may go to anyone. Without it a segment
//!   with a pool nobody books through (referral, say) is never marked, and
//!   every loser of a busy day hops to the hospital;
//! - `free|<slot id>` after any script put a seat back or on offer
//!   (cancellation, expiry, a failed write, seats kept for a waitlist put
//!   on sale, a reload after 加号 or a capacity change): it clears every
//!   mark of the segment.
//!
//! Both are published from inside the scripts on the segment's own Redis
//! slot, so one subscriber receives them in the order they happened and the
//! last one received is the truth: no mark can outlive the seat coming back
//! by more than the push's delivery (well under the 100 ms the platform
//! promises; `tests/system/sold_out_marks.rs` measures it). Marks are
//! believed only while the subscription is up: when it drops, every mark is
//! forgotten (the hospitals answer again) until it is back.
//!
//! Marks are forgotten when they can no longer matter (a channel's after
//! its merge time) or have stood for [`WHOLE_MARK_SECONDS`] (the segment
//! may be days past): a replica runs for weeks, and forgetting a mark is
//! always safe, since the next attempt asks the hospital, whose script
//! publishes the mark again if it still holds. One pass over the set at
//! most every [`PRUNE_EVERY_SECONDS`], when a message comes.
//!
//! A channel's mark is trusted against this replica's clock: the gateway
//! and the hospitals share the city's time (NTP), and a mark believed a
//! moment past the merge costs a patient one retry at worst.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use jyt_cache::redis;
use jyt_domain::{Channel, SlotRef};
use prometheus::{IntCounter, Registry};

/// How long a whole-segment mark is kept after its last `sold` message.
pub const WHOLE_MARK_SECONDS: i64 = 3600;
/// How often, at most, the set is pruned of marks that no longer matter.
pub const PRUNE_EVERY_SECONDS: i64 = 60;

/// What is known sold out of one segment.
#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    /// No seat of any pool is left: when the last `sold` message of the
    /// whole segment came (unix s).
    whole_since: Option<i64>,
    /// Channels ([`channel_bit`]) with nothing on offer before `merge_at`.
    channels: u16,
    /// The segment's merge time (unix seconds): channel marks end there.
    merge_at: i64,
}

/// A channel's bit in [`Marks::channels`]: one per variant, matched
/// exhaustively so a new channel cannot share another's bit.
fn channel_bit(channel: Channel) -> u16 {
    1 << match channel {
        Channel::Wechat => 0,
        Channel::Kiosk => 1,
        Channel::Phone114 => 2,
        Channel::Window => 3,
        Channel::App => 4,
        Channel::Referral => 5,
        Channel::Clinic => 6,
    }
}

impl Marks {
    /// Drop what no longer matters at `now`; whether anything is left.
    fn keep(&mut self, now: i64) -> bool {
        if self.whole_since.is_some_and(|at| now - at >= WHOLE_MARK_SECONDS) {
            self.whole_since = None;
        }
        if now >= self.merge_at {
            self.channels = 0;
        }
        self.whole_since.is_some() || self.channels != 0
    }
}

/// The marks by segment, and when they are next pruned.
#[derive(Debug, Default)]
struct MarkTable {
    by_slot: HashMap<SlotRef, Marks>,
    next_prune: i64,
}

/// A replica's sold-out set.
#[derive(Debug)]
pub struct SoldOut {
    marks: RwLock<MarkTable>,
    /// Marks are believed only while the subscription is up.
    subscribed: AtomicBool,
    /// Attempts answered here without a hop: `/metrics`'
    /// `jyt_gateway_sold_out_answers_total`, so operators (and the load
    /// test) see how many losers stopped at the gateway.
    answered: IntCounter,
}

/// The counter's name on `/metrics` (after the registry's `jyt_` prefix).
const ANSWERED: &str = "gateway_sold_out_answers_total";
const ANSWERED_HELP: &str = "Booking attempts answered SLOT_SOLD_OUT by the gateway from a sold-out mark, without a hop to the hospital";

impl SoldOut {
    /// A set whose count of answers is registered on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let answered = IntCounter::new(ANSWERED, ANSWERED_HELP)?;
        registry.register(Box::new(answered.clone()))?;
        Ok(Self::with_counter(answered))
    }

    fn with_counter(answered: IntCounter) -> Self {
        Self {
            marks: RwLock::default(),
            subscribed: AtomicBool::new(false),
            answered,
        }
    }

    /// Whether `slot` is known sold out for an attempt through `channel`
    /// at `now` (unix seconds); false while unsubscribed.
    pub fn is_sold_out(&self, slot: &SlotRef, channel: Channel, now: i64) -> bool {
        self.subscribed.load(Ordering::Acquire)
            && self
                .marks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .by_slot
                .get(slot)
                .is_some_and(|m| {
                    m.whole_since.is_some() || (m.channels & channel_bit(channel) != 0 && now < m.merge_at)
                })
    }

    /// Count an attempt answered from the mark.
    pub fn answered_here(&self) {
        self.answered.inc();
    }

    /// How many segments are marked.
    pub fn len(&self) -> usize {
        self.marks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_slot
            .len()
    }

    /// Whether no segment is marked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply one message of the seats channel, received at `now` (unix
    /// seconds); anything else is ignored.
    pub fn apply(&self, message: &str, now: i64) {
        let mut parts = message.split('|');
        let (Some(what), Some(Ok(slot))) = (parts.next(), parts.next().map(str::parse::<SlotRef>)) else {
            return;
        };
        let for_channel = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => None,
            (Some(channel), Some(merge_at), None) => {
                match (channel.parse::<Channel>(), merge_at.parse::<i64>()) {
                    (Ok(channel), Ok(merge_at)) => Some((channel, merge_at)),
                    _ => return,
                }
            }
            _ => return,
        };
        let mut table = self
            .marks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now >= table.next_prune {
            table.by_slot.retain(|_, m| m.keep(now));
            table.next_prune = now + PRUNE_EVERY_SECONDS;
        }
        let marks = &mut table.by_slot;
        match (what, for_channel) {
            ("sold", None) => {
                let m = marks.entry(slot).or_default();
                m.whole_since = Some(now);
            }
            ("sold", Some((channel, merge_at))) => {
                let m = marks.entry(slot).or_default();
                // A segment's merge time is one; a reload that moved it
                // came with a "free" first, which cleared the old marks.
                m.merge_at = merge_at;
                m.channels |= channel_bit(channel);
            }
            ("free", None) => {
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
            .by_slot
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
                                    self.apply(&payload, chrono::Utc::now().timestamp());
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

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn the_last_message_of_a_segment_decides_and_nothing_counts_unsubscribed() {
        let set = SoldOut::new(&Registry::new()).unwrap();
        let slot: SlotRef = "pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        set.apply(&format!("sold|{slot}"), NOW);
        assert!(
            !set.is_sold_out(&slot, Channel::Wechat, NOW),
            "believed without a subscription"
        );
        set.subscribed.store(true, Ordering::Release);
        for channel in Channel::ALL {
            assert!(set.is_sold_out(&slot, channel, NOW));
            assert!(
                set.is_sold_out(&slot, channel, i64::MAX),
                "a whole mark has no merge time"
            );
        }
        set.apply(&format!("free|{slot}"), NOW);
        assert!(!set.is_sold_out(&slot, Channel::Wechat, NOW));
        set.apply(&format!("sold|{slot}"), NOW);
        set.apply("sold|not-a-slot", NOW);
        set.apply("nonsense", NOW);
        assert_eq!(set.len(), 1);
        set.forget_all();
        assert!(!set.is_sold_out(&slot, Channel::Wechat, NOW));
        assert!(set.is_empty());
    }

    #[test]
    fn a_channel_s_mark_holds_for_that_channel_until_the_merge_and_a_seat_back_clears_it() {
        let set = SoldOut::new(&Registry::new()).unwrap();
        set.subscribed.store(true, Ordering::Release);
        let slot: SlotRef = "pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        let merge_at = NOW + 3600;
        set.apply(&format!("sold|{slot}|wechat|{merge_at}"), NOW);
        assert!(set.is_sold_out(&slot, Channel::Wechat, NOW));
        assert!(set.is_sold_out(&slot, Channel::Wechat, merge_at - 1));
        assert!(
            !set.is_sold_out(&slot, Channel::Wechat, merge_at),
            "after the merge any pool's seat is the channel's too"
        );
        assert!(
            !set.is_sold_out(&slot, Channel::Kiosk, NOW),
            "another channel's pool may have seats"
        );

        set.apply(&format!("sold|{slot}|kiosk|{merge_at}"), NOW);
        assert!(set.is_sold_out(&slot, Channel::Kiosk, NOW));
        assert!(!set.is_sold_out(&slot, Channel::Phone114, NOW));
        // The last seat went: every channel, whatever the time.
        set.apply(&format!("sold|{slot}"), NOW);
        assert!(set.is_sold_out(&slot, Channel::Phone114, merge_at + 1));
        // A seat back clears both kinds.
        set.apply(&format!("free|{slot}"), NOW);
        for channel in Channel::ALL {
            assert!(!set.is_sold_out(&slot, channel, NOW));
        }
        assert!(set.is_empty());

        // Malformed channel marks are ignored, not read as whole marks.
        for bad in [
            format!("sold|{slot}|pigeon|{merge_at}"),
            format!("sold|{slot}|wechat|soon"),
            format!("sold|{slot}|wechat"),
            format!("sold|{slot}|wechat|{merge_at}|more"),
            format!("free|{slot}|wechat|{merge_at}"),
        ] {
            set.apply(&bad, NOW);
            assert!(set.is_empty(), "{bad} was believed");
        }
    }

    #[test]
    fn marks_that_can_no_longer_matter_are_forgotten_when_a_message_comes() {
        let set = SoldOut::new(&Registry::new()).unwrap();
        set.subscribed.store(true, Ordering::Release);
        let slot = |n: u32| -> SlotRef {
            format!("pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f{n:04x}")
                .parse()
                .unwrap()
        };
        let merge_at = NOW + 600;
        // Any message of another segment is the occasion to prune.
        let other = format!("free|{}", slot(9));
        set.apply(&format!("sold|{}", slot(1)), NOW);
        set.apply(&format!("sold|{}|wechat|{merge_at}", slot(2)), NOW);
        set.apply(&format!("sold|{}|kiosk|{merge_at}", slot(1)), NOW);
        assert_eq!(set.len(), 2);

        // Before the merge nothing goes.
        set.apply(&other, NOW + PRUNE_EVERY_SECONDS);
        assert_eq!(set.len(), 2);
        // After it the channel marks go; the whole mark stays, still believed.
        set.apply(&other, merge_at);
        assert_eq!(set.len(), 1);
        assert!(set.is_sold_out(&slot(1), Channel::Wechat, merge_at));
        assert!(
            !set.is_sold_out(&slot(2), Channel::Wechat, NOW),
            "pruned, not just expired"
        );
        // A whole mark refreshed by a later "sold" lives on from then.
        set.apply(&format!("sold|{}", slot(1)), NOW + 1800);
        set.apply(&other, NOW + WHOLE_MARK_SECONDS + PRUNE_EVERY_SECONDS);
        assert_eq!(set.len(), 1);
        set.apply(&other, NOW + 1800 + WHOLE_MARK_SECONDS);
        assert!(
            set.is_empty(),
            "an hour after its last sale the segment is asked about again"
        );
    }
}
