-- A check-in's queue number was `max(queue_no) + 1` over the schedule's
-- bookings, under a `SELECT ... FOR UPDATE` of the schedule row taken in a
-- statement of its own (a statement's snapshot is taken before it waits,
-- so the lock had to come first). Each schedule's numbers are now counted
-- in a row of their own: one `INSERT ... ON CONFLICT DO UPDATE ...
-- RETURNING` takes the row lock and the next number together, and
-- PostgreSQL re-reads the row after waiting for a concurrent check-in, so
-- two arrivals still never share a number.
--
-- Not a column of `schedules`: every write to a schedule bumps the FHIR
-- catalogue's version (V4), which would put every check-in of the
-- hospital behind one row (measured: 1.5 ms a check-in in peak-day).
CREATE TABLE schedule_queue_numbers (
    schedule_id uuid    PRIMARY KEY REFERENCES schedules (id) ON DELETE CASCADE,
    last_no     integer NOT NULL
);

INSERT INTO schedule_queue_numbers (schedule_id, last_no)
SELECT schedule_id, max(queue_no) FROM bookings
 WHERE queue_no IS NOT NULL GROUP BY schedule_id;
