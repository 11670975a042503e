-- A booking carries the facts of its visit: the date, its segment's start
-- and end, its department and doctor (name and the hospital's own id). Every
-- statement that wrote a booking read it back joined to `segments`,
-- `schedules`, `departments` and `doctors`, and built its event from that
-- read-back, so each payment, check-in, cancellation and booking did four
-- more index lookups, and planned and started four more relations, than its
-- write needed. `pgbench` on a copy of the schema (a payment: the update,
-- the payment reference, the event, the read-back; 4 clients, synchronous
-- commit off so the CPU shows): 8,290–9,380 payments a second without the
-- joins against 5,330–6,550 with them (loadtest/README.md, 2026-12-06).
--
-- The facts are copied when the booking is inserted (from the rows the
-- insert already joins) and kept current by the triggers below when the
-- catalogue changes: a doctor or department renamed, a schedule given
-- another doctor (替诊), department or date, a segment's times moved. A
-- change that changes nothing (the federation's republish of the same
-- catalogue) fires nothing.
--
-- A booking being written while its catalogue row changes read the row
-- before the change: the trigger first takes `bookings` in SHARE ROW
-- EXCLUSIVE mode, which waits for every booking write in flight and holds
-- off new ones until the change commits, and then updates with a snapshot
-- that sees the writes it waited for. Catalogue changes are rare; a
-- booking write waits for one, never the other way round.
ALTER TABLE bookings
    ADD COLUMN visit_date             date,
    ADD COLUMN segment_starts_at      timestamptz,
    ADD COLUMN segment_ends_at        timestamptz,
    ADD COLUMN department_name        text,
    ADD COLUMN department_external_id text,
    ADD COLUMN doctor_name            text,
    ADD COLUMN doctor_external_id     text;

UPDATE bookings b
   SET visit_date = sch.visit_date,
       segment_starts_at = seg.starts_at,
       segment_ends_at = seg.ends_at,
       department_name = dep.name,
       department_external_id = dep.external_id,
       doctor_name = doc.name,
       doctor_external_id = doc.external_id
  FROM segments seg, schedules sch, departments dep, doctors doc
 WHERE seg.id = b.segment_id AND sch.id = b.schedule_id
   AND dep.id = sch.department_id AND doc.id = sch.doctor_id;

ALTER TABLE bookings
    ALTER COLUMN visit_date SET NOT NULL,
    ALTER COLUMN segment_starts_at SET NOT NULL,
    ALTER COLUMN segment_ends_at SET NOT NULL,
    ALTER COLUMN department_name SET NOT NULL,
    ALTER COLUMN department_external_id SET NOT NULL,
    ALTER COLUMN doctor_name SET NOT NULL,
    ALTER COLUMN doctor_external_id SET NOT NULL;

CREATE FUNCTION bookings_follow_segment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE bookings IN SHARE ROW EXCLUSIVE MODE;
    UPDATE bookings SET segment_starts_at = NEW.starts_at, segment_ends_at = NEW.ends_at
     WHERE schedule_id = NEW.schedule_id AND segment_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER bookings_follow_segment AFTER UPDATE OF starts_at, ends_at ON segments
    FOR EACH ROW
    WHEN (OLD.starts_at IS DISTINCT FROM NEW.starts_at OR OLD.ends_at IS DISTINCT FROM NEW.ends_at)
    EXECUTE FUNCTION bookings_follow_segment();

CREATE FUNCTION bookings_follow_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE bookings IN SHARE ROW EXCLUSIVE MODE;
    UPDATE bookings b
       SET visit_date = NEW.visit_date,
           department_name = dep.name, department_external_id = dep.external_id,
           doctor_name = doc.name, doctor_external_id = doc.external_id
      FROM departments dep, doctors doc
     WHERE dep.id = NEW.department_id AND doc.id = NEW.doctor_id AND b.schedule_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER bookings_follow_schedule AFTER UPDATE OF visit_date, doctor_id, department_id ON schedules
    FOR EACH ROW
    WHEN (OLD.visit_date IS DISTINCT FROM NEW.visit_date OR OLD.doctor_id IS DISTINCT FROM NEW.doctor_id
          OR OLD.department_id IS DISTINCT FROM NEW.department_id)
    EXECUTE FUNCTION bookings_follow_schedule();

CREATE FUNCTION bookings_follow_department() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE bookings IN SHARE ROW EXCLUSIVE MODE;
    UPDATE bookings b SET department_name = NEW.name, department_external_id = NEW.external_id
      FROM schedules s
     WHERE s.department_id = NEW.id AND b.schedule_id = s.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER bookings_follow_department AFTER UPDATE OF name, external_id ON departments
    FOR EACH ROW
    WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.external_id IS DISTINCT FROM NEW.external_id)
    EXECUTE FUNCTION bookings_follow_department();

CREATE FUNCTION bookings_follow_doctor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE bookings IN SHARE ROW EXCLUSIVE MODE;
    UPDATE bookings b SET doctor_name = NEW.name, doctor_external_id = NEW.external_id
      FROM schedules s
     WHERE s.doctor_id = NEW.id AND b.schedule_id = s.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER bookings_follow_doctor AFTER UPDATE OF name, external_id ON doctors
    FOR EACH ROW
    WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.external_id IS DISTINCT FROM NEW.external_id)
    EXECUTE FUNCTION bookings_follow_doctor();
