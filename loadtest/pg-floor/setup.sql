-- The floor of a status change in PostgreSQL, away from our schema: a
-- 600,000-row table updated by primary key (heap-only: no indexed column
-- changes), with and without an outbox-like event insert, and the same
-- table with the booking table's kinds of rules (CHECKs through domains,
-- two stored generated columns) or with those rules as domain-typed
-- columns. See run.sh.
DROP TABLE IF EXISTS plain, with_checks, one_check, with_domains, events;
DROP DOMAIN IF EXISTS floor_status;
DROP DOMAIN IF EXISTS floor_channel;
CREATE DOMAIN floor_status AS text
    CHECK (VALUE IN ('held', 'confirmed', 'cancelled', 'expired', 'checked_in', 'no_show', 'stopped', 'completed'));
CREATE DOMAIN floor_channel AS text
    CHECK (VALUE IN ('wechat', 'kiosk', 'phone114', 'app', 'window', 'clinic', 'referral'));

CREATE TABLE plain (
    id bigint PRIMARY KEY, segment bigint NOT NULL, status text NOT NULL,
    c1 text NOT NULL DEFAULT 'wechat', c2 text NOT NULL DEFAULT 'kiosk', c3 text NOT NULL DEFAULT 'app',
    c4 text NOT NULL DEFAULT 'app', c5 text NOT NULL DEFAULT 'app',
    n1 bigint NOT NULL DEFAULT 1, n2 integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL, pad text NOT NULL
) WITH (fillfactor = 80);

-- As `bookings` since V16/V17: each rule a table CHECK through a domain,
-- and `live`/`held` stored generated columns.
CREATE TABLE with_checks (
    id bigint PRIMARY KEY, segment bigint NOT NULL,
    status text NOT NULL CHECK (status::floor_status::text = status),
    c1 text NOT NULL DEFAULT 'wechat' CHECK (c1::floor_channel::text = c1),
    c2 text NOT NULL DEFAULT 'kiosk' CHECK (c2::floor_channel::text = c2),
    c3 text NOT NULL DEFAULT 'app' CHECK (c3::floor_channel::text = c3),
    c4 text NOT NULL DEFAULT 'app' CHECK (c4::floor_channel::text = c4),
    c5 text NOT NULL DEFAULT 'app' CHECK (c5::floor_channel::text = c5),
    n1 bigint NOT NULL DEFAULT 1 CHECK (n1 >= 0), n2 integer NOT NULL DEFAULT 1 CHECK (n2 >= 1),
    live boolean GENERATED ALWAYS AS (status NOT IN ('cancelled', 'expired', 'stopped')) STORED,
    held boolean GENERATED ALWAYS AS (status = 'held') STORED,
    updated_at timestamptz NOT NULL, pad text NOT NULL
) WITH (fillfactor = 80);

-- The same rules and columns as with_checks, in one CHECK.
CREATE TABLE one_check (
    id bigint PRIMARY KEY, segment bigint NOT NULL, status text NOT NULL,
    c1 text NOT NULL DEFAULT 'wechat', c2 text NOT NULL DEFAULT 'kiosk', c3 text NOT NULL DEFAULT 'app',
    c4 text NOT NULL DEFAULT 'app', c5 text NOT NULL DEFAULT 'app',
    n1 bigint NOT NULL DEFAULT 1, n2 integer NOT NULL DEFAULT 1,
    live boolean GENERATED ALWAYS AS (status NOT IN ('cancelled', 'expired', 'stopped')) STORED,
    held boolean GENERATED ALWAYS AS (status = 'held') STORED,
    updated_at timestamptz NOT NULL, pad text NOT NULL,
    CHECK (status::floor_status::text = status AND c1::floor_channel::text = c1
        AND c2::floor_channel::text = c2 AND c3::floor_channel::text = c3
        AND c4::floor_channel::text = c4 AND c5::floor_channel::text = c5 AND n1 >= 0 AND n2 >= 1)
) WITH (fillfactor = 80);

-- The same rules as the columns' types: no table CHECK, nothing generated.
CREATE TABLE with_domains (
    id bigint PRIMARY KEY, segment bigint NOT NULL, status floor_status NOT NULL,
    c1 floor_channel NOT NULL DEFAULT 'wechat', c2 floor_channel NOT NULL DEFAULT 'kiosk',
    c3 floor_channel NOT NULL DEFAULT 'app', c4 floor_channel NOT NULL DEFAULT 'app',
    c5 floor_channel NOT NULL DEFAULT 'app',
    n1 bigint NOT NULL DEFAULT 1, n2 integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL, pad text NOT NULL
) WITH (fillfactor = 80);

INSERT INTO plain (id, segment, status, updated_at, pad)
    SELECT g, g / 12, 'held', now(), repeat('x', 300) FROM generate_series(1, 600000) g;
INSERT INTO with_checks (id, segment, status, updated_at, pad) SELECT id, segment, status, updated_at, pad FROM plain;
INSERT INTO one_check (id, segment, status, updated_at, pad) SELECT id, segment, status, updated_at, pad FROM plain;
INSERT INTO with_domains (id, segment, status, updated_at, pad) SELECT id, segment, status, updated_at, pad FROM plain;
CREATE INDEX plain_segment ON plain (segment);
CREATE INDEX with_checks_segment ON with_checks (segment);
CREATE INDEX one_check_segment ON one_check (segment);
CREATE INDEX with_domains_segment ON with_domains (segment);

-- The outbox's shape: a sequence key, and the writing transaction's id with
-- the index the relay finds a batch's first event by (V23; until then a
-- `published_at` and a partial index on the unpublished rows).
CREATE TABLE events (
    seq bigserial PRIMARY KEY, aggregate_id text NOT NULL, payload jsonb NOT NULL,
    xid xid8 DEFAULT pg_current_xact_id()
);
CREATE INDEX events_by_xact ON events (xid) WHERE xid IS NOT NULL;
VACUUM ANALYZE;
