-- The relay reads the outbox by transaction instead of marking each event
-- published (jyt_events::OutboxRelay). Each event carries the id of the
-- transaction that wrote it; the relay remembers the snapshot up to which
-- it has put events on the stream (`relayed`), and each time takes the
-- events a newer snapshot (`target`) sees and `relayed` did not, in `seq`
-- order. Every event of a transaction that was running when `relayed` was
-- taken is still ahead: a snapshot does not see its own running
-- transactions, so no commit order can slip an event past the relay.
--
-- Why: the mark (`published_at`) wrote every event twice, and not as a
-- heap-only update, since `published_at` was in the relay's partial index:
-- a second row version with new entries in every index (peak-day's quarter
-- day: about 1.6 s of 13.9 s of statement time; loadtest/README.md,
-- 2026-12-07). Now an event is written once, and the relay writes one row
-- per batch.
ALTER TABLE outbox ADD COLUMN xid xid8;
-- Events not relayed yet when this runs go out under this transaction's
-- id, which the first `relayed` below does not see. Events already
-- published keep no id: the relay never reads them again.
UPDATE outbox SET xid = pg_current_xact_id() WHERE published_at IS NULL;
ALTER TABLE outbox ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
-- Drops outbox_unpublished with it.
ALTER TABLE outbox DROP COLUMN published_at;
-- Finds a new target's first event (the relay then reads by `seq`).
CREATE INDEX outbox_by_xact ON outbox (xid) WHERE xid IS NOT NULL;

-- The relay's one row: `relayed`, and while a target larger than one batch
-- is being drained, that target and the last `seq` put on the stream.
CREATE TABLE outbox_relay (
    only_row  boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    relayed   pg_snapshot NOT NULL,
    target    pg_snapshot,
    after_seq bigint,
    CHECK ((target IS NULL) = (after_seq IS NULL))
);
-- A snapshot that sees every transaction before this one and none after.
INSERT INTO outbox_relay (relayed)
SELECT (x || ':' || x || ':')::pg_snapshot FROM (SELECT pg_current_xact_id()::text AS x) AS this_transaction;
