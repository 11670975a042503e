-- 取号 guessing: a pick-up code is six digits, so without a limit anyone
-- holding a booking id could try them all at a kiosk. Wrong codes are
-- counted on the booking row itself (locked FOR UPDATE by the check-in, so
-- concurrent guesses are counted one by one) and committed even though the
-- request fails; at the limit, check-in with a code is refused for the rest
-- of the booking's segment (the hospital's desk can still check the patient
-- in). A constant default: no table rewrite on a live hospital.
ALTER TABLE bookings
    ADD COLUMN pickup_failures smallint NOT NULL DEFAULT 0 CHECK (pickup_failures >= 0);
