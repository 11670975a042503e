-- card-issuing V2: patients' appeals against no-shows, the one-time codes a
-- 16+ family member confirms a binding with, and which channel app enrolled
-- a person (the gateway lets an app act for the patients it enrolled).

-- One appeal per no-show: a refused appeal is final, a retried submission
-- finds the first one.
CREATE TABLE appeals (
    id               uuid PRIMARY KEY,
    person_id        uuid NOT NULL,
    no_show_event_id uuid NOT NULL REFERENCES no_shows (event_id),
    hospital_id      text NOT NULL,
    booking_id       text NOT NULL,
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status           text NOT NULL CHECK (status IN ('pending', 'granted', 'refused')),
    -- Granted without an operator because the hospital caused the no-show.
    automatic        boolean NOT NULL DEFAULT false,
    -- What the hospital reported when the appeal was made:
    -- the clinic was stopped, or the hospital checked the patient in late.
    hospital_cause   text CHECK (hospital_cause IN ('clinic_stopped', 'late_check_in')),
    decided_by       text,
    decision_reason  text,
    created_at       timestamptz NOT NULL,
    decided_at       timestamptz,
    CONSTRAINT appeals_one_per_no_show UNIQUE (no_show_event_id),
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK (status = 'pending' OR (decided_by IS NOT NULL AND decision_reason IS NOT NULL))
);
CREATE INDEX appeals_queue ON appeals (status, created_at DESC);
CREATE INDEX appeals_by_hospital ON appeals (hospital_id, created_at DESC);
CREATE INDEX appeals_by_person ON appeals (person_id, created_at DESC);

-- A holder asks to bind a member aged 16 or over; the member confirms with
-- a one-time code sent to their own channel app. Only the code's keyed hash
-- is kept. The binding is made when the right code arrives in time.
CREATE TABLE family_verifications (
    id             uuid PRIMARY KEY,
    holder_id      uuid NOT NULL REFERENCES persons (id),
    member_id      uuid NOT NULL REFERENCES persons (id),
    relationship   text NOT NULL CHECK (length(relationship) BETWEEN 1 AND 32),
    code_hash      bytea NOT NULL,
    expires_at     timestamptz NOT NULL,
    attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    status         text NOT NULL CHECK (status IN ('pending', 'confirmed', 'locked')),
    binding_id     uuid REFERENCES family_bindings (id),
    created_at     timestamptz NOT NULL,
    CHECK (holder_id <> member_id),
    CHECK ((status = 'confirmed') = (binding_id IS NOT NULL))
);
CREATE INDEX family_verifications_by_holder ON family_verifications (holder_id, created_at);

-- The channel app that registered the person through the gateway; NULL for
-- persons registered at a desk or before V2.
ALTER TABLE persons ADD COLUMN enrolled_by_app text
    CHECK (enrolled_by_app IS NULL OR length(enrolled_by_app) BETWEEN 1 AND 64);
