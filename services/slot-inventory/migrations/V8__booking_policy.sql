-- The hospital's booking policy, changed from the operators' console: one
-- row (created at start from the settings when missing) whose version every
-- replica watches, and the history of every change, for the audit trail.
CREATE TABLE booking_policy (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    policy     jsonb NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);

CREATE TABLE booking_policy_history (
    version            bigint PRIMARY KEY,
    before             jsonb NOT NULL,
    after              jsonb NOT NULL,
    changed_at         timestamptz NOT NULL,
    changed_by         text NOT NULL,
    schedules_affected integer NOT NULL
);
