-- 精准预约: one row per submission, from slot-inventory's `precise.*`
-- events (submitted, decided, seated), for the console's figures per
-- hospital and doctor: submitted, matched, rejected, seated, and the time
-- from submission to seat. Events may arrive in any order across
-- redeliveries, so each one fills only its own columns.
CREATE TABLE precise_submissions (
    hospital_id   text NOT NULL,
    submission_id text NOT NULL,
    doctor_id     text NOT NULL,
    channel       text NOT NULL DEFAULT '',
    submitted_at  timestamptz,
    -- 'matched' or 'rejected', once decided.
    decision      text CHECK (decision IN ('matched', 'rejected')),
    auto_matched  boolean NOT NULL DEFAULT false,
    decided_at    timestamptz,
    booking_id    text,
    seated_at     timestamptz,
    PRIMARY KEY (hospital_id, submission_id)
);
CREATE INDEX precise_submissions_by_doctor ON precise_submissions (hospital_id, doctor_id, submitted_at);
