-- Referrals (转诊, the 医联体 green channel): a family doctor of a community
-- health centre refers a signed resident to this hospital's department.
-- This hospital (the target) keeps the record, because its booking script
-- checks it in Redis (`{h:<hospital>}:referral:<id>`) when the referral
-- pool is drawn; PostgreSQL is the truth Redis is rebuilt from.
CREATE TABLE referrals (
    id                 uuid PRIMARY KEY,
    patient_id         uuid NOT NULL,
    -- The community health centre and its doctor (the centre's own id).
    issuing_hospital   text NOT NULL CHECK (length(issuing_hospital) BETWEEN 1 AND 64),
    issuing_doctor     text NOT NULL CHECK (length(issuing_doctor) BETWEEN 1 AND 64),
    issuing_team       text NOT NULL CHECK (length(issuing_team) BETWEEN 1 AND 64),
    -- This hospital's department, by its own (published) id.
    department         text NOT NULL CHECK (length(department) BETWEEN 1 AND 64),
    diagnosis_code     text NOT NULL CHECK (length(diagnosis_code) BETWEEN 1 AND 32),
    reason             text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    issued_at          timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL CHECK (expires_at > issued_at),
    -- Revoked by the issuing centre before use.
    revoked_at         timestamptz,
    -- The issuing centre's request key: a retried issue answers the first.
    idempotency_key    text NOT NULL,
    CONSTRAINT referrals_idempotency_uq UNIQUE (issuing_hospital, idempotency_key)
);
CREATE INDEX referrals_live ON referrals (expires_at) WHERE revoked_at IS NULL;

-- A referral is used by the live booking that names it, and by one at
-- most: PostgreSQL refuses a second one even if Redis lies. A cancelled or
-- expired booking frees it again (its status leaves this index).
-- Bookings from before this migration carried free strings; they keep them
-- (no foreign key), but new ones name a referral row (checked on insert).
CREATE UNIQUE INDEX bookings_referral_uq ON bookings (referral_id)
    WHERE referral_id IS NOT NULL AND status NOT IN ('cancelled', 'expired', 'stopped');

-- The signed residents' pool (家庭医生签约) joins the booking pools.
ALTER TABLE bookings DROP CONSTRAINT IF EXISTS bookings_pool_check;
ALTER TABLE bookings ADD CONSTRAINT bookings_pool_check
    CHECK (pool IN ('wechat', 'kiosk', 'phone114', 'window', 'app', 'referral', 'clinic', 'signed', 'common'));
