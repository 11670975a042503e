-- The FHIR bulk feed's ETag must change whenever a Slot or Schedule would
-- read differently. Booking changes already leave an outbox row (counted
-- through the feed's positions); what is left is the catalogue itself:
-- schedules (停诊, release instants), segments (加号), doctors and
-- departments, which the federation API changes without events. They bump
-- one counter, in the same transaction, so a reader's snapshot sees the
-- counter and the rows change together.
CREATE TABLE catalog_version (
    id         integer PRIMARY KEY CHECK (id = 1),
    n          bigint NOT NULL,
    changed_at timestamptz NOT NULL
);
INSERT INTO catalog_version (id, n, changed_at) VALUES (1, 0, now());

-- Deferred to commit, and once per transaction: the counter's row lock is
-- then always the last lock a transaction takes (a publish and a 停诊 of
-- the same schedule cannot deadlock on it), and a publish of thousands of
-- segments writes it once. Bookings are not counted here: the surge path
-- must never queue on one row.
CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('jyt.catalog_bumped', true), '') <> 'yes' THEN
        PERFORM set_config('jyt.catalog_bumped', 'yes', true);
        UPDATE catalog_version SET n = n + 1, changed_at = now() WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER schedules_catalog_version
    AFTER INSERT OR UPDATE OR DELETE ON schedules
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER segments_catalog_version
    AFTER INSERT OR UPDATE OR DELETE ON segments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER doctors_catalog_version
    AFTER INSERT OR UPDATE OR DELETE ON doctors
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER departments_catalog_version
    AFTER INSERT OR UPDATE OR DELETE ON departments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();

-- The latest release instant already passed is part of the ETag (a Slot
-- turns bookable at its release without any write).
CREATE INDEX schedules_release_at ON schedules (release_at);
