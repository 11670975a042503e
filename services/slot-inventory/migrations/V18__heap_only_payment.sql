-- A payment (held to confirmed) as a heap-only (HOT) update, as a
-- check-in became one in V17.
--
-- Two indexes still read what a payment changes:
--
-- bookings_payment_reference_uq (payment_reference): the one thing it
-- does is refuse a reference already used, so the references move to a
-- table of their own, written in the payment's statement. A reference
-- taken by another booking fails that statement as a whole (nothing is
-- written; the service answers 409 PAYMENT_REFERENCE_USED, where the
-- unique index's violation used to surface as a 503). No foreign key to
-- bookings: the row is only ever written by the statement that updates
-- the booking it names, and the key's check would lock that row again.
--
-- bookings_held (id) WHERE held: its one reader was the rebuild of
-- Redis' expiry index after Redis comes back empty (`open_holds`). The
-- rebuild restores the segments of today and later from PostgreSQL, and
-- it now reads the holds of the same days through the schedules
-- (schedules_by_date, bookings_by_schedule). A hold on an earlier day has
-- no segment in Redis to give back, and its deadline, which the payment
-- checks, has passed. One left unexpired (Redis lost while the hospital
-- was down past the visit day) stays `held` in PostgreSQL: it can never
-- be paid and holds no seat anyone can still book.
--
-- With both gone a payment changes no indexed column: its new version is
-- heap-only where its page has room (V17's fillfactor), and it writes no
-- entry in the booking's five remaining indexes.
CREATE TABLE payment_references (
    reference  text PRIMARY KEY,
    booking_id uuid NOT NULL
);
INSERT INTO payment_references (reference, booking_id)
    SELECT payment_reference, id FROM bookings WHERE payment_reference IS NOT NULL;

DROP INDEX bookings_payment_reference_uq;
DROP INDEX bookings_held;
