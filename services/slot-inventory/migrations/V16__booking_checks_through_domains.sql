-- The same rules for a booking's channel, status, pool, payment method and
-- owner app, checked through domains.
--
-- PostgreSQL keeps a table's CHECK constraints as stored node text and
-- reads them back, and plans them, on every INSERT and UPDATE statement of
-- the table. The four IN-lists and the regex below were about a tenth of
-- PostgreSQL's CPU in the surge's W (durable bookings) and cost every
-- payment, check-in and cancellation the same again: measured on this
-- machine, 100,000 one-row inserts took 1.1-1.6 s with the channel's
-- IN-list and 0.34-0.38 s with no check (loadtest/README.md, 2026-12-05).
-- A domain's constraints are compiled once per connection (the type
-- cache); a check that casts the column to the domain reads back only the
-- cast (0.62-0.64 s in the same measurement).
--
-- The columns stay text: a statement's parameter written to a domain
-- column takes the domain's type, which the services' driver does not
-- bind a Rust string to. A cast of NULL is NULL, and a CHECK passes on
-- NULL, so the nullable columns stay nullable; a value outside the domain
-- fails the cast with the domain's check_violation (23514), as before.
CREATE DOMAIN booking_channel AS text
    CHECK (VALUE IN ('wechat', 'kiosk', 'phone114', 'window', 'app', 'referral', 'clinic'));
CREATE DOMAIN booking_status AS text
    CHECK (VALUE IN ('held', 'confirmed', 'checked_in', 'completed',
                     'cancelled', 'expired', 'stopped', 'no_show'));
CREATE DOMAIN booking_pool AS text
    CHECK (VALUE IN ('wechat', 'kiosk', 'phone114', 'window', 'app', 'referral', 'clinic',
                     'signed', 'common'));
CREATE DOMAIN booking_payment_method AS text
    CHECK (VALUE IN ('self_pay', 'insurance', 'prepaid_card'));
CREATE DOMAIN booking_owner_app AS text
    CHECK (VALUE ~ '^[a-z0-9]{2,32}$');

ALTER TABLE bookings
    DROP CONSTRAINT bookings_channel_check,
    DROP CONSTRAINT bookings_status_check,
    DROP CONSTRAINT bookings_pool_check,
    DROP CONSTRAINT bookings_payment_method_check,
    DROP CONSTRAINT bookings_owner_app_check,
    ADD CONSTRAINT bookings_channel_check CHECK (channel::booking_channel = channel),
    ADD CONSTRAINT bookings_status_check CHECK (status::booking_status = status),
    ADD CONSTRAINT bookings_pool_check CHECK (pool::booking_pool = pool),
    ADD CONSTRAINT bookings_payment_method_check
        CHECK (payment_method::booking_payment_method = payment_method),
    ADD CONSTRAINT bookings_owner_app_check CHECK (owner_app::booking_owner_app = owner_app);
