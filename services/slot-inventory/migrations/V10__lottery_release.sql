-- Fair release by lottery (抽签放号): a schedule may be released by a draw
-- instead of first come, first served. Requests in the first
-- `lottery_window_seconds` after the release instant become entries (one
-- per person); when the window closes one replica draws, in a seeded
-- permutation recorded here so a regulator can reproduce it.

ALTER TABLE schedules
    ADD COLUMN release_mode text NOT NULL DEFAULT 'first_come'
        CHECK (release_mode IN ('first_come', 'lottery')),
    -- Only for a lottery: how long after the release instant entries are taken.
    ADD COLUMN lottery_window_seconds integer
        CHECK (lottery_window_seconds BETWEEN 1 AND 300),
    ADD CONSTRAINT schedules_lottery_window_ck
        CHECK ((release_mode = 'lottery') = (lottery_window_seconds IS NOT NULL));

-- One entry per person per schedule. Redis decides the entry in the surge
-- (one Lua script, refusing after the window); the first press of each
-- person is written here at once, and the draw copies any entry Redis has
-- that this table lacks before it starts.
CREATE TABLE lottery_entries (
    id              uuid PRIMARY KEY,
    schedule_id     uuid NOT NULL REFERENCES schedules (id),
    -- The segment the patient asked for: tried first if they win.
    segment_id      uuid NOT NULL REFERENCES segments (id),
    patient_id      uuid NOT NULL,
    channel         text NOT NULL
        CHECK (channel IN ('wechat', 'kiosk', 'phone114', 'window', 'app', 'referral', 'clinic')),
    -- The channel app that entered: it owns the booking if the entry wins,
    -- and it alone is told the outcome.
    owner_app       text,
    referral_id     text,
    entered_at      timestamptz NOT NULL,
    -- Set by the draw, in the same transaction as its record.
    outcome         text CHECK (outcome IN ('won', 'lost')),
    booking_id      uuid REFERENCES bookings (id),
    -- Why an entry lost (a refusal's machine code, e.g. SLOT_SOLD_OUT).
    lost_reason     text,
    CONSTRAINT lottery_entries_one_per_person UNIQUE (schedule_id, patient_id)
);

-- The draw of one schedule: everything a regulator needs to reproduce it
-- (seed, entrants in canonical order, the permutation) and what each
-- entrant got. `drawing` while its holds are given, `drawn` once done; the
-- row lock on a `drawing` row (FOR UPDATE SKIP LOCKED) is what lets
-- exactly one replica draw.
CREATE TABLE lottery_draws (
    id           uuid PRIMARY KEY,
    schedule_id  uuid NOT NULL UNIQUE REFERENCES schedules (id),
    status       text NOT NULL CHECK (status IN ('drawing', 'drawn')),
    algorithm    text NOT NULL,
    seed         bytea NOT NULL CHECK (length(seed) = 32),
    -- Entry ids sorted ascending (the canonical order the permutation indexes).
    entrants     jsonb NOT NULL,
    -- entrants[permutation[k]] is the k-th entrant served.
    permutation  jsonb NOT NULL,
    -- Free seats of the schedule when the draw began.
    seats        integer NOT NULL,
    -- In draw order: {entry_id, patient_id, outcome, booking_id, reason}.
    outcomes     jsonb,
    winners      integer,
    started_at   timestamptz NOT NULL,
    drawn_at     timestamptz,
    drawn_by     text
);
CREATE INDEX lottery_draws_pending ON lottery_draws (schedule_id) WHERE status = 'drawing';
