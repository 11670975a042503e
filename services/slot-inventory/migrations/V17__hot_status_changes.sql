-- A booking's status changes that keep its seat (a check-in, a no-show,
-- a visit's completion) as heap-only (HOT) updates.
--
-- PostgreSQL writes an update as HOT, a new version on the same page and
-- no new index entry, only if no column that an index reads has changed,
-- and the columns in a partial index's predicate count. `status` was in
-- the predicates of the seat, patient-per-segment, referral and held
-- indexes, so every status change wrote a new entry in every index of
-- bookings (primary key, idempotency key, seat, patient per segment,
-- schedule, payment reference: six for a paid booking's check-in), which
-- later bottom-up deletions and vacuum clean up (loadtest/README.md,
-- 2026-12-05 23:00).
--
-- The predicates now read two columns PostgreSQL derives from the status
-- on every write: `live` (not released: the booking holds its seat) and
-- `held` (waiting for its payment). A check-in changes neither, so it is
-- HOT where its page has room; a payment (held to confirmed) and a
-- release (live to released) still write their entries. A query that
-- wants one of these indexes says `live` or `held`: the planner matches a
-- partial index by its predicate, not by the status list behind it.
--
-- Room on the page: a booking is written once and changed two or three
-- times (paid, checked in), so each page keeps a fifth free for its rows'
-- next versions. Set first: adding the stored generated columns rewrites
-- the table (under an exclusive lock: on a hospital's years of bookings, a
-- maintenance window), and the rewrite fills its pages to the new factor.
ALTER TABLE bookings SET (fillfactor = 80);
ALTER TABLE bookings
    ADD COLUMN live boolean NOT NULL
        GENERATED ALWAYS AS (status NOT IN ('cancelled', 'expired', 'stopped')) STORED,
    ADD COLUMN held boolean NOT NULL
        GENERATED ALWAYS AS (status = 'held') STORED;

-- The same names: the booking path tells a taken seat from a second
-- booking of the segment by the unique index's name.
DROP INDEX bookings_seat_uq;
CREATE UNIQUE INDEX bookings_seat_uq ON bookings (segment_id, seat_no) WHERE live;
DROP INDEX bookings_patient_segment_uq;
CREATE UNIQUE INDEX bookings_patient_segment_uq ON bookings (segment_id, patient_id) WHERE live;
DROP INDEX bookings_referral_uq;
CREATE UNIQUE INDEX bookings_referral_uq ON bookings (referral_id) WHERE referral_id IS NOT NULL AND live;
DROP INDEX bookings_held;
CREATE INDEX bookings_held ON bookings (id) INCLUDE (hold_deadline) WHERE held;
