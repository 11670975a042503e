-- Hospitals' side of the platform: stopped clinics (停诊) with a reason,
-- visit completion, and a bookings feed a HIS can poll without missing or
-- repeating anything.

ALTER TABLE schedules
    ADD COLUMN stop_reason text CHECK (length(stop_reason) BETWEEN 1 AND 200),
    ADD COLUMN stopped_at  timestamptz;

ALTER TABLE bookings
    ADD COLUMN completed_at timestamptz,
    -- For an offer made after a stopped clinic: the booking it replaces.
    ADD COLUMN replaces_booking_id uuid REFERENCES bookings (id);

-- Feed positions. `seq` is taken at insert, but transactions commit out of
-- order, so a reader paging by `seq` could pass a row that commits later.
-- `feed_seq` is given by one sequencer transaction at a time (under an
-- advisory lock) to rows already committed: every row with a lower
-- position is visible before any with a higher one.
CREATE SEQUENCE outbox_feed_seq;
ALTER TABLE outbox ADD COLUMN feed_seq bigint UNIQUE;
CREATE INDEX outbox_unsequenced ON outbox (seq) WHERE feed_seq IS NULL;
