-- Traffic: every counter the console and the reports show, per channel,
-- hospital and day (Asia/Shanghai, by when the event happened).
ALTER TABLE channel_daily
    ADD COLUMN attempts      bigint NOT NULL DEFAULT 0,
    ADD COLUMN sold_out      bigint NOT NULL DEFAULT 0,
    ADD COLUMN cancellations bigint NOT NULL DEFAULT 0,
    ADD COLUMN expiries      bigint NOT NULL DEFAULT 0,
    ADD COLUMN promotions    bigint NOT NULL DEFAULT 0,
    ADD COLUMN check_ins     bigint NOT NULL DEFAULT 0,
    ADD COLUMN no_shows      bigint NOT NULL DEFAULT 0,
    ADD COLUMN stops         bigint NOT NULL DEFAULT 0,
    ADD COLUMN waitlist_joins bigint NOT NULL DEFAULT 0;

-- A booking counts once, however many `booking.confirmed` events carry it
-- (each event id is applied once; this guards the booking itself).
CREATE TABLE counted_bookings (
    booking_id   text PRIMARY KEY,
    hospital_id  text NOT NULL,
    channel      text NOT NULL,
    confirmed_at timestamptz NOT NULL
);

-- Bookings and attempts per minute (UTC minute start), for the live chart.
CREATE TABLE traffic_minute (
    minute      timestamptz NOT NULL,
    hospital_id text   NOT NULL,
    channel     text   NOT NULL,
    bookings    bigint NOT NULL DEFAULT 0,
    attempts    bigint NOT NULL DEFAULT 0,
    sold_out    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, hospital_id, channel)
);

-- Waitlist depth per schedule, as last reported by the hospital.
CREATE TABLE waitlist_depth (
    hospital_id text NOT NULL,
    schedule_id text NOT NULL,
    waiting     bigint NOT NULL CHECK (waiting >= 0),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (hospital_id, schedule_id)
);

-- Money, one row per event that moves it, in integer fen. `hospital_id` is
-- '' for prepaid top-ups (the card is city-wide). `reference` is the
-- channel's transaction id when there is one.
CREATE TABLE money_entries (
    event_id       uuid PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('fee', 'refund', 'topup')),
    day            date NOT NULL,
    occurred_at    timestamptz NOT NULL,
    hospital_id    text NOT NULL,
    channel        text NOT NULL,
    payment_method text NOT NULL,
    amount_fen     bigint NOT NULL CHECK (amount_fen >= 0),
    booking_id     text,
    reference      text
);
CREATE INDEX money_entries_by_day ON money_entries (day, hospital_id, channel);
CREATE INDEX money_entries_by_booking ON money_entries (booking_id) WHERE booking_id IS NOT NULL;

-- Imported channel statements; a new import for the same channel and day
-- replaces the previous one (in one transaction).
CREATE TABLE statements (
    id          uuid PRIMARY KEY,
    channel     text NOT NULL,
    day         date NOT NULL,
    lines       integer NOT NULL,
    matched     integer NOT NULL,
    imported_by text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, day)
);

CREATE TABLE statement_mismatches (
    statement_id           uuid NOT NULL REFERENCES statements (id) ON DELETE CASCADE,
    seq                    integer NOT NULL,
    kind                   text NOT NULL CHECK (kind IN ('missing_on_platform', 'missing_at_channel',
                                 'amount_differs', 'status_differs', 'duplicate')),
    line                   integer,
    channel_transaction_id text,
    platform_order_id      text,
    channel_amount_fen     bigint,
    platform_amount_fen    bigint,
    channel_status         text,
    platform_status        text,
    PRIMARY KEY (statement_id, seq)
);

-- Operators: seeded from settings at start; passwords as Argon2 PHC strings.
CREATE TABLE operators (
    login         text PRIMARY KEY,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('city', 'hospital')),
    hospital_id   text,
    CHECK ((role = 'hospital') = (hospital_id IS NOT NULL))
);

-- Sessions: only the SHA-256 of the opaque token is stored.
CREATE TABLE operator_sessions (
    token_sha256 bytea PRIMARY KEY,
    login        text NOT NULL REFERENCES operators (login) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);
