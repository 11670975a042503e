-- The post-visit satisfaction survey (广东省中医患者满意度调查): one per
-- completed visit that a channel app booked, created from
-- `booking.completed`; its id is derived from the booking
-- (jyt_domain::survey::survey_id), so the gateway names it in the
-- invitation without asking us, and a second delivery of the event finds
-- the same row.
CREATE TABLE surveys (
    survey_id         uuid PRIMARY KEY,
    booking_id        text NOT NULL UNIQUE,
    hospital_id       text NOT NULL,
    -- The hospital's own ids (figures group by them) and the names shown.
    department_id     text NOT NULL,
    department        text NOT NULL,
    doctor_id         text NOT NULL,
    doctor            text NOT NULL,
    channel           text NOT NULL,
    -- The channel app the booking belongs to: the only one that may read
    -- or answer the survey (the gateway checks, with the patient's card).
    owner_app         text NOT NULL,
    -- Never shown to operators: the figures are counts and means only.
    patient_id        uuid NOT NULL,
    completed_at      timestamptz NOT NULL,
    -- Asia/Shanghai date of completed_at: the console's date filter and trend.
    completed_day     date NOT NULL,
    expires_at        timestamptz NOT NULL,
    questions_version integer NOT NULL
);
CREATE INDEX surveys_by_day ON surveys (completed_day, hospital_id);

-- At most one answer per survey: a repeat of the same answer is answered
-- with the stored one; a different one is refused (409), never merged.
CREATE TABLE survey_answers (
    survey_id         uuid PRIMARY KEY REFERENCES surveys (survey_id),
    answered_at       timestamptz NOT NULL,
    questions_version integer NOT NULL,
    overall           smallint NOT NULL CHECK (overall BETWEEN 1 AND 5),
    wait_time         smallint NOT NULL CHECK (wait_time BETWEEN 1 AND 5),
    explanation       smallint NOT NULL CHECK (explanation BETWEEN 1 AND 5),
    would_recommend   boolean NOT NULL,
    -- Free text typed by the patient; not shown on the console (it may
    -- name people), kept for the hospital's service centre.
    comment           text CHECK (char_length(comment) <= 500)
);
