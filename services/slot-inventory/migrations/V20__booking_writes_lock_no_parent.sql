-- A booking's foreign keys to its segment and schedule made every booking
-- write lock both parent rows (the foreign key's check is a
-- `SELECT ... FOR KEY SHARE` of each): a hospital's few dozen segments and
-- schedules, locked by every write in flight, so concurrent writes shared
-- those locks through multixacts, and a 加号 (`FOR UPDATE` of the
-- segment) waited for every booking write in flight on it. The checks
-- proved nothing the write does not already prove: a booking is inserted
-- only by joining its segment and that segment's schedule (the seat within
-- the capacity, the schedule open), and its schedule is the segment's.
--
-- What the keys also guarded, that a segment or schedule with bookings
-- disappears or changes its id, is guarded here instead: neither is ever
-- deleted, truncated or renumbered (a schedule is stopped, not deleted;
-- `federation::stop`). The triggers fire only on those, never on a
-- booking's write.
--
-- Measured with pgbench on a copy of the schema (13 schedules, 78
-- segments, a booking and its outbox event per statement, synchronous
-- commit on, three pairs): 7,130–7,340 against 6,440–6,640 single
-- bookings a second with 16 clients; 2,450–2,500 against 2,090–2,170
-- statements of 8 bookings with 4 clients (loadtest/README.md,
-- 2026-12-06).
CREATE FUNCTION refuse_catalog_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are never deleted or renumbered: bookings refer to them', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation', HINT = 'stop the schedule instead';
END
$$;

CREATE TRIGGER segments_kept BEFORE DELETE OR UPDATE OF id ON segments
    FOR EACH ROW EXECUTE FUNCTION refuse_catalog_removal();
CREATE TRIGGER segments_kept_whole BEFORE TRUNCATE ON segments
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_catalog_removal();
CREATE TRIGGER schedules_kept BEFORE DELETE OR UPDATE OF id ON schedules
    FOR EACH ROW EXECUTE FUNCTION refuse_catalog_removal();
CREATE TRIGGER schedules_kept_whole BEFORE TRUNCATE ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_catalog_removal();

ALTER TABLE bookings
    DROP CONSTRAINT bookings_segment_id_fkey,
    DROP CONSTRAINT bookings_schedule_id_fkey;
