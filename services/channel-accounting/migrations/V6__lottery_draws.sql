-- The hospitals' lottery draws (fair release, 抽签放号), one row per
-- `draw.drawn` event, for the console's draws page: what a regulator
-- first looks at (entrants, seats, winners, the seed) before opening the
-- hospital's full record through the relay.
CREATE TABLE lottery_draws (
    draw_id     uuid PRIMARY KEY,
    hospital_id text NOT NULL,
    schedule_id text NOT NULL,
    algorithm   text NOT NULL,
    -- The 256-bit seed, hex: published so anyone can recompute the order.
    seed        text NOT NULL,
    entrants    integer NOT NULL CHECK (entrants >= 0),
    seats       integer NOT NULL,
    winners     integer NOT NULL CHECK (winners >= 0),
    started_at  timestamptz NOT NULL,
    drawn_at    timestamptz NOT NULL
);
CREATE INDEX lottery_draws_by_hospital ON lottery_draws (hospital_id, drawn_at);
