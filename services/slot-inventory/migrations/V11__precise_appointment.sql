-- 精准预约 (the 301 Hospital model): an expert's patient profile, and the
-- histories patients submit when the expert's clinic is sold out. A match
-- adds one seat (加号) to the expert's next session, held for the patient.

-- One profile per doctor, published by the hospital (federation API).
CREATE TABLE precise_profiles (
    doctor_id          uuid PRIMARY KEY REFERENCES doctors (id),
    -- ICD-10 codes or code prefixes the expert wants to see (`C34`, `I25.1`).
    conditions         text[] NOT NULL,
    -- Keys of the controlled vocabulary of findings (`ct_nodule`, ...).
    findings           text[] NOT NULL,
    min_age            integer CHECK (min_age BETWEEN 0 AND 150),
    max_age            integer CHECK (max_age BETWEEN 0 AND 150),
    -- Document kinds a submission must reference (`ct_report`, ...).
    required_documents text[] NOT NULL,
    -- The expert's rule: `review` (the hospital decides every one),
    -- `condition` (a wanted condition auto-matches), `condition_and_finding`
    -- (a wanted condition and a wanted finding). Age and documents always
    -- have to fit for an automatic match.
    auto_match         text NOT NULL CHECK (auto_match IN ('review', 'condition', 'condition_and_finding')),
    note               text NOT NULL DEFAULT '',
    updated_at         timestamptz NOT NULL,
    updated_by         text NOT NULL,
    CHECK (min_age IS NULL OR max_age IS NULL OR min_age <= max_age)
);

CREATE TABLE precise_submissions (
    id               uuid PRIMARY KEY,
    doctor_id        uuid NOT NULL REFERENCES doctors (id),
    patient_id       uuid NOT NULL,
    channel          text NOT NULL
        CHECK (channel IN ('wechat', 'kiosk', 'phone114', 'window', 'app')),
    -- The channel app that submitted: it reads the submission and the
    -- booking a match makes belongs to it.
    owner_app        text,
    diagnosis_codes  text[] NOT NULL,
    findings         text[] NOT NULL,
    age_years        integer NOT NULL CHECK (age_years BETWEEN 0 AND 150),
    symptom_days     integer NOT NULL CHECK (symptom_days BETWEEN 0 AND 36500),
    prior_treatment  text NOT NULL DEFAULT '',
    -- [{"kind": "ct_report", "id": "doc-123"}]: references, never contents.
    documents        jsonb NOT NULL,
    -- The dates whose sold-out clinics the patient asked about.
    window_from      date NOT NULL,
    window_to        date NOT NULL,
    -- pending → matched → seated, or pending → rejected.
    status           text NOT NULL CHECK (status IN ('pending', 'matched', 'rejected', 'seated')),
    auto_matched     boolean NOT NULL DEFAULT false,
    decided_by       text,
    decision_reason  text,
    decided_at       timestamptz,
    booking_id       uuid REFERENCES bookings (id),
    seated_at        timestamptz,
    submitted_at     timestamptz NOT NULL
);

-- One open submission per patient per doctor.
CREATE UNIQUE INDEX precise_submissions_open_uq ON precise_submissions (doctor_id, patient_id)
    WHERE status IN ('pending', 'matched');
-- Matched submissions waiting for the doctor's next session, oldest first.
CREATE INDEX precise_submissions_matched ON precise_submissions (doctor_id, decided_at)
    WHERE status = 'matched';
CREATE INDEX precise_submissions_status ON precise_submissions (status, submitted_at);
