-- Every event applied, by id: a redelivered or replayed event is skipped.
CREATE TABLE processed_events (
    event_id     uuid PRIMARY KEY,
    event_type   text NOT NULL,
    stream       text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Per channel, hospital and day (Asia/Shanghai, by when the event happened).
CREATE TABLE channel_daily (
    day         date   NOT NULL,
    hospital_id text   NOT NULL,
    channel     text   NOT NULL,
    bookings    bigint NOT NULL DEFAULT 0 CHECK (bookings >= 0),
    fees_fen    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, hospital_id, channel)
);
