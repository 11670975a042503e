-- Family doctor signing (家庭医生签约, the Haizhu 580 model): community
-- health centres (member hospitals) register their family doctor teams
-- through the federation API; residents sign with one team online.

CREATE TABLE family_doctor_teams (
    id          uuid PRIMARY KEY,
    -- The community health centre, and its own id for the team.
    hospital    text NOT NULL CHECK (length(hospital) BETWEEN 1 AND 64),
    external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 64),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The centre's own doctor ids (as it publishes its schedules).
    doctor_ids  text[] NOT NULL CHECK (cardinality(doctor_ids) BETWEEN 1 AND 64),
    -- Residents the team may have signed at once.
    capacity    integer NOT NULL CHECK (capacity BETWEEN 0 AND 100000),
    updated_at  timestamptz NOT NULL,
    UNIQUE (hospital, external_id)
);

-- One signing is a year-long term: active while not ended and before
-- `expires_at`. One active signing per person, and at most `capacity`
-- active per team, are checked with the person's and the team's rows
-- locked (see src/family_doctor.rs); ended and expired rows stay.
CREATE TABLE family_doctor_signings (
    id                 uuid PRIMARY KEY,
    person_id          uuid NOT NULL REFERENCES persons (id),
    team_id            uuid NOT NULL REFERENCES family_doctor_teams (id),
    signed_at          timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL CHECK (expires_at > signed_at),
    -- 签名认证: the SHA-256 of the resident's signature trace as the app
    -- captured it (the trace itself stays with the app), and its size.
    signature_sha256   text NOT NULL CHECK (signature_sha256 ~ '^[0-9a-f]{64}$'),
    signature_bytes    integer NOT NULL CHECK (signature_bytes > 0),
    signed_through_app text,
    ended_at           timestamptz,
    ended_by           text,
    CHECK (ended_at IS NULL OR ended_at >= signed_at)
);
CREATE INDEX family_doctor_signings_of_person ON family_doctor_signings (person_id, signed_at DESC);
CREATE INDEX family_doctor_signings_open ON family_doctor_signings (team_id, expires_at)
    WHERE ended_at IS NULL;
