-- Family doctor care for the console (from card-issuing's `signing.*` and
-- slot-inventory's `referral.*` events): signings per community health
-- centre and team, and referrals from each centre by target hospital.

CREATE TABLE family_doctor_signings (
    signing_id    uuid PRIMARY KEY,
    hospital      text NOT NULL,
    team_id       text NOT NULL,
    team_name     text NOT NULL DEFAULT '',
    signed_at     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    ended_at      timestamptz
);
CREATE INDEX family_doctor_signings_by_team ON family_doctor_signings (hospital, team_id);

-- The latest capacity each team's events reported.
CREATE TABLE family_doctor_teams (
    hospital   text NOT NULL,
    team_id    text NOT NULL,
    team_name  text NOT NULL,
    capacity   integer NOT NULL,
    PRIMARY KEY (hospital, team_id)
);

CREATE TABLE referrals (
    referral_id      uuid PRIMARY KEY,
    issuing_hospital text NOT NULL,
    issuing_team     text NOT NULL,
    target_hospital  text NOT NULL,
    department       text NOT NULL,
    issued_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    -- Bookings that used it (a cancelled one frees it for another).
    uses             integer NOT NULL DEFAULT 0,
    last_used_at     timestamptz
);
CREATE INDEX referrals_by_centre ON referrals (issuing_hospital, target_hospital);
CREATE INDEX referrals_by_target ON referrals (target_hospital);
