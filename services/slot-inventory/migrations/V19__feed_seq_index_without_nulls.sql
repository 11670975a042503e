-- `feed_seq UNIQUE` (V3) made a unique index over every outbox row, and a
-- b-tree indexes NULLs: each event got an entry at its insert (no feed
-- number yet) and another when the relay marked it published (a new row
-- version, not heap-only: `published_at` is in outbox_unpublished's
-- predicate). Neither entry served anything: the feed reads `feed_seq > $1`
-- and `max(feed_seq)`, which the planner answers from an index of the
-- numbered rows alone (a strict comparison implies NOT NULL). Measured
-- with pgbench, plain outbox inserts (4 clients, prepared): 49,600–50,500
-- against 45,700–47,500 a second (loadtest/README.md, 2026-12-06).
--
-- The same name, for whoever reads a violation. Built without
-- CONCURRENTLY (migrations run in a transaction): on a large outbox,
-- inserts wait for the build.
ALTER TABLE outbox DROP CONSTRAINT outbox_feed_seq_key;
CREATE UNIQUE INDEX outbox_feed_seq_key ON outbox (feed_seq) WHERE feed_seq IS NOT NULL;
