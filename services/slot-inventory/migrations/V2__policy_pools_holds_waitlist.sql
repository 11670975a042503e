-- The full booking life: release instants, channel pools, holds and
-- payment, visit and queue numbers, pick-up codes, waitlists.

-- When the schedule opens for booking; computed from the hospital's release
-- policy, and recomputed at start only for schedules not yet released (so a
-- policy change never closes what patients could already book).
ALTER TABLE schedules ADD COLUMN release_at timestamptz NOT NULL DEFAULT '-infinity';

ALTER TABLE bookings
    -- The channel pool (号源池) the seat was drawn from; it goes back there.
    ADD COLUMN pool              text NOT NULL DEFAULT 'common'
        CHECK (pool IN ('wechat', 'kiosk', 'phone114', 'window', 'app', 'referral', 'clinic', 'common')),
    -- 就诊序号: in booking order within the schedule.
    ADD COLUMN visit_no          integer NOT NULL DEFAULT 0,
    -- Shown to the patient, checked at 取号.
    ADD COLUMN pickup_code       text NOT NULL DEFAULT '',
    ADD COLUMN hold_deadline     timestamptz,
    ADD COLUMN payment_reference text,
    ADD COLUMN payment_method    text
        CHECK (payment_method IN ('self_pay', 'insurance', 'prepaid_card')),
    ADD COLUMN referral_id       text,
    ADD COLUMN paid_at           timestamptz,
    ADD COLUMN cancelled_at      timestamptz,
    ADD COLUMN checked_in_at     timestamptz,
    -- Order of arrival at check-in within the schedule.
    ADD COLUMN queue_no          integer;

CREATE UNIQUE INDEX bookings_payment_reference_uq ON bookings (payment_reference)
    WHERE payment_reference IS NOT NULL;
CREATE INDEX bookings_held ON bookings (hold_deadline) WHERE status = 'held';
CREATE INDEX bookings_awaiting_arrival ON bookings (segment_id) WHERE status = 'confirmed';
CREATE INDEX bookings_patient_day ON bookings (patient_id, schedule_id);

-- 候补: patients waiting for a full schedule, first come first served.
CREATE TABLE waitlist_entries (
    id          uuid PRIMARY KEY,
    schedule_id uuid NOT NULL REFERENCES schedules (id),
    patient_id  uuid NOT NULL,
    channel     text NOT NULL
        CHECK (channel IN ('wechat', 'kiosk', 'phone114', 'window', 'app', 'referral', 'clinic')),
    status      text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'promoted', 'left')),
    booking_id  uuid REFERENCES bookings (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- One place in a schedule's line per person.
CREATE UNIQUE INDEX waitlist_one_per_person ON waitlist_entries (schedule_id, patient_id)
    WHERE status = 'waiting';
CREATE INDEX waitlist_line ON waitlist_entries (schedule_id, created_at) WHERE status = 'waiting';
