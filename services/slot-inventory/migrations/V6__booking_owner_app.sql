-- Which channel app a booking belongs to, kept with the booking so it
-- survives the gateway's Redis: the app that made it (the gateway names the
-- acting app in its `Jyt-App` header), or, for a booking the platform made
-- for the patient, the app of the patient's channel (a waitlist promotion:
-- the app that made the waitlist entry; a priority offer after 停诊: the app
-- that made the stopped booking; an in-clinic follow-up: see
-- `booking::owner`). NULL: no channel app (a hospital window). App ids are
-- the gateway's (`channel_apps.<id>`: 2 to 32 of a-z and 0-9). Nullable
-- without a default: no table rewrite on a live hospital.
ALTER TABLE bookings
    ADD COLUMN owner_app text CHECK (owner_app ~ '^[a-z0-9]{2,32}$');

-- A waiting patient's app, handed on to the booking a promotion makes.
ALTER TABLE waitlist_entries
    ADD COLUMN owner_app text CHECK (owner_app ~ '^[a-z0-9]{2,32}$');
