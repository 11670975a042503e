-- A session a hospital publishes for the waitlist (in answer to
-- `waitlist.capacity_requested`): its seats serve, in order of joining,
-- the lines of the same doctor's other sessions that day, as seats of
-- those sessions would. A constant default: no table rewrite.
ALTER TABLE schedules ADD COLUMN for_waitlist boolean NOT NULL DEFAULT false;
