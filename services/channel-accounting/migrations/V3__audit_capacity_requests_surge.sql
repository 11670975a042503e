-- The audit trail a regulator queries: one row per change of capacity, a
-- clinic stop, a policy change, a waiver or an appeal decision, with who
-- made it (the `actor` the event carries) and when. Rows are only ever
-- inserted (one per event id), never updated: this is provenance.
CREATE TABLE audit_trail (
    event_id    uuid PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    -- '' for a change that is not one hospital's (a city-wide waiver).
    hospital_id text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('capacity', 'stop', 'policy', 'waiver', 'appeal')),
    actor       text NOT NULL,
    schedule_id text,
    -- The public slot reference (`<hospital>-<segment uuid>`) a capacity
    -- change is about; stops and policies apply to every slot of their
    -- schedule or hospital, found through `audit_slots`.
    slot_id     text,
    -- The person a waiver or an appeal is about (card-issuing's id).
    person_id   text,
    summary     text NOT NULL,
    detail      jsonb NOT NULL
);
CREATE INDEX audit_trail_by_hospital ON audit_trail (hospital_id, occurred_at);
CREATE INDEX audit_trail_by_slot ON audit_trail (slot_id) WHERE slot_id IS NOT NULL;
CREATE INDEX audit_trail_by_schedule ON audit_trail (schedule_id) WHERE schedule_id IS NOT NULL;

-- Which schedule each slot belongs to, learnt from the events that name
-- both, so a slot's provenance includes its schedule's stop.
CREATE TABLE audit_slots (
    slot_id     text PRIMARY KEY,
    hospital_id text NOT NULL,
    schedule_id text NOT NULL
);

-- Waitlists that crossed their hospital's threshold and asked for 加号;
-- answered by the first capacity change on the schedule after the request.
CREATE TABLE capacity_requests (
    event_id      uuid PRIMARY KEY,
    hospital_id   text NOT NULL,
    schedule_id   text NOT NULL,
    -- The hospital's own ids of the schedule (doctor, date, session) and
    -- its segment ids, as the event carries them, to answer with 加号.
    schedule      jsonb NOT NULL,
    segment_ids   jsonb NOT NULL,
    waiting       bigint NOT NULL CHECK (waiting >= 0),
    requested_at  timestamptz NOT NULL,
    answered_at   timestamptz,
    answered_by   text,
    added_seats   integer
);
CREATE INDEX capacity_requests_open ON capacity_requests (hospital_id, requested_at)
    WHERE answered_at IS NULL;
CREATE INDEX capacity_requests_by_schedule ON capacity_requests (schedule_id);

-- The surge view: attempts, sold-out refusals and bookings per second,
-- hospital and channel (UTC second start).
CREATE TABLE traffic_second (
    second      timestamptz NOT NULL,
    hospital_id text   NOT NULL,
    channel     text   NOT NULL,
    attempts    bigint NOT NULL DEFAULT 0,
    sold_out    bigint NOT NULL DEFAULT 0,
    bookings    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (second, hospital_id, channel)
);
