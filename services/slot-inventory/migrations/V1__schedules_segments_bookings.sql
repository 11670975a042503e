-- One hospital's slot inventory. PostgreSQL is the source of truth; Redis
-- holds a rebuildable copy of each segment's free seats for the surge path.

CREATE TABLE departments (
    id          uuid PRIMARY KEY,
    -- The hospital's own id for the department (its HIS code); the
    -- federation API upserts by it.
    external_id text NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 64),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100)
);

CREATE TABLE doctors (
    id            uuid PRIMARY KEY,
    external_id   text NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 64),
    department_id uuid NOT NULL REFERENCES departments (id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 100)
);

-- A doctor's clinic on one date and session (上午/下午/晚间) at one clinic
-- level, with its registration fee.
CREATE TABLE schedules (
    id            uuid PRIMARY KEY,
    external_id   text NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 64),
    doctor_id     uuid NOT NULL REFERENCES doctors (id),
    department_id uuid NOT NULL REFERENCES departments (id),
    visit_date    date NOT NULL,
    session       text NOT NULL CHECK (session IN ('morning', 'afternoon', 'evening')),
    clinic_level  text NOT NULL CHECK (clinic_level IN ('general', 'expert', 'special', 'ct', 'mri')),
    fee_fen       bigint NOT NULL CHECK (fee_fen BETWEEN 0 AND 10000000),
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'stopped')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_by_date ON schedules (visit_date, department_id);

-- A time segment (分时段) of a schedule: patients arrive within it.
CREATE TABLE segments (
    id          uuid PRIMARY KEY,
    schedule_id uuid NOT NULL REFERENCES schedules (id),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    capacity    integer NOT NULL CHECK (capacity BETWEEN 0 AND 10000),
    CHECK (ends_at > starts_at),
    UNIQUE (schedule_id, starts_at)
);

CREATE TABLE bookings (
    id              uuid PRIMARY KEY,
    segment_id      uuid NOT NULL REFERENCES segments (id),
    schedule_id     uuid NOT NULL REFERENCES schedules (id),
    patient_id      uuid NOT NULL,
    channel         text NOT NULL
        CHECK (channel IN ('wechat', 'kiosk', 'phone114', 'window', 'app', 'referral', 'clinic')),
    -- The seat taken from the segment's free list in Redis, 1..capacity.
    seat_no         integer NOT NULL CHECK (seat_no >= 1),
    status          text NOT NULL
        CHECK (status IN ('held', 'confirmed', 'checked_in', 'completed',
                          'cancelled', 'expired', 'stopped', 'no_show')),
    fee_fen         bigint NOT NULL CHECK (fee_fen >= 0),
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- A retried request finds the booking it made, never a second one.
    CONSTRAINT bookings_idempotency_uq UNIQUE (patient_id, idempotency_key)
);

-- The last word against overselling, whatever Redis says: a seat is held
-- by at most one live booking, and (in the insert) never above capacity.
CREATE UNIQUE INDEX bookings_seat_uq ON bookings (segment_id, seat_no)
    WHERE status NOT IN ('cancelled', 'expired', 'stopped');
-- One live booking per patient per segment.
CREATE UNIQUE INDEX bookings_patient_segment_uq ON bookings (segment_id, patient_id)
    WHERE status NOT IN ('cancelled', 'expired', 'stopped');
CREATE INDEX bookings_by_schedule ON bookings (schedule_id);

-- The transactional outbox (same shape in every service; see jyt-events).
CREATE TABLE outbox (
    seq          bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    aggregate_id text        NOT NULL,
    payload      jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
