-- bookings_held was (hold_deadline) WHERE status = 'held'. A payment's
-- statement reads `id = $1 AND status = 'held' AND hold_deadline > $4`,
-- and on a bookings table without statistics (every hospital's first
-- release, before autovacuum's first analyze) the planner took this
-- index for it: a range over every open hold, filtered by id. In the
-- quarter peak-day each payment read about 770 index entries and their
-- rows; it was a fifth of PostgreSQL's CPU in the payments phase.
--
-- The only query that wants the open holds as such is the rebuild of
-- Redis' expiry index (`open_holds`), which reads them all, in no order.
-- Keyed by id, the index still serves that read, and any plan that
-- picks it for a payment reads one entry.
DROP INDEX IF EXISTS bookings_held;
CREATE INDEX bookings_held ON bookings (id) INCLUDE (hold_deadline) WHERE status = 'held';
