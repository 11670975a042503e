-- Every booking insert pays for every index on bookings; at the release
-- second that is the write path's cost (issue 20: W toward I). Two
-- indexes no query needs go:
--
-- bookings_patient_day (patient_id, schedule_id): the queries by patient
-- (a waitlist join's "already booked in this schedule?", the PostgreSQL-
-- lock baseline's patient day, the owner's check) find the patient's few
-- rows through bookings_idempotency_uq (patient_id, idempotency_key),
-- whose leading column is the same.
--
-- bookings_awaiting_arrival (segment_id) WHERE status = 'confirmed': the
-- no-show sweep joins a segment's confirmed bookings, which
-- bookings_seat_uq (segment_id, seat_no) WHERE live already indexes
-- (confirmed is live).
DROP INDEX IF EXISTS bookings_patient_day;
DROP INDEX IF EXISTS bookings_awaiting_arrival;
