-- The booking row's value rules as the columns' own types: no CHECK
-- constraint is left on bookings.
--
-- V16 moved the rules' IN-lists into domains, but kept each as a table
-- CHECK that casts the column to its domain. PostgreSQL still reads every
-- CHECK of a table back from its stored node text and compiles it on every
-- INSERT and UPDATE statement, whatever the statement changes: the eight
-- of bookings were 8 % of PostgreSQL's CPU in a peak day's payments phase,
-- half of it in `stringToNode` (loadtest/README.md, 2026-12-07 09:31). A
-- column of a domain's type is checked only when a statement assigns it,
-- against the constraint compiled once per connection in the type cache.
--
-- So the columns take the domains' types, and the three numeric rules
-- become domains too. The services bind text and integers: a statement
-- that assigns a parameter to one of these columns casts it to the base
-- type (`$3::text`), since the driver binds a Rust string to `text`, never
-- to a domain over it. A value outside a rule fails the assignment with the
-- domain's check_violation (23514), as the CHECKs did.
--
-- `status` is read by the generated `live` and `held`, and PostgreSQL does
-- not change the type of a column a generated column reads: both are
-- dropped (and with `live` the three partial indexes on it), the types
-- changed, and both added again, which rewrites the table (as V17 did: on a
-- hospital's years of bookings, a maintenance window). The indexes come
-- back under the same names, which the booking path tells a taken seat
-- from a second booking of the segment by.
CREATE DOMAIN booking_seat_no AS integer CHECK (VALUE >= 1);
CREATE DOMAIN booking_fee_fen AS bigint CHECK (VALUE >= 0);
CREATE DOMAIN booking_pickup_failures AS smallint CHECK (VALUE >= 0);

ALTER TABLE bookings
    DROP CONSTRAINT bookings_channel_check,
    DROP CONSTRAINT bookings_status_check,
    DROP CONSTRAINT bookings_pool_check,
    DROP CONSTRAINT bookings_payment_method_check,
    DROP CONSTRAINT bookings_owner_app_check,
    DROP CONSTRAINT bookings_seat_no_check,
    DROP CONSTRAINT bookings_fee_fen_check,
    DROP CONSTRAINT bookings_pickup_failures_check,
    DROP COLUMN live,
    DROP COLUMN held;

ALTER TABLE bookings
    ALTER COLUMN channel TYPE booking_channel,
    ALTER COLUMN status TYPE booking_status,
    ALTER COLUMN pool TYPE booking_pool,
    ALTER COLUMN payment_method TYPE booking_payment_method,
    ALTER COLUMN owner_app TYPE booking_owner_app,
    ALTER COLUMN seat_no TYPE booking_seat_no,
    ALTER COLUMN fee_fen TYPE booking_fee_fen,
    ALTER COLUMN pickup_failures TYPE booking_pickup_failures,
    ADD COLUMN live boolean NOT NULL
        GENERATED ALWAYS AS (status NOT IN ('cancelled', 'expired', 'stopped')) STORED,
    ADD COLUMN held boolean NOT NULL
        GENERATED ALWAYS AS (status = 'held') STORED;

CREATE UNIQUE INDEX bookings_seat_uq ON bookings (segment_id, seat_no) WHERE live;
CREATE UNIQUE INDEX bookings_patient_segment_uq ON bookings (segment_id, patient_id) WHERE live;
CREATE UNIQUE INDEX bookings_referral_uq ON bookings (referral_id) WHERE referral_id IS NOT NULL AND live;
