-- card-issuing: the city's patient index, platform cards, family bindings,
-- the prepaid ledger and no-show standing. Personal identifiers are stored
-- only as AES-256-GCM ciphertext (with the id of the key that sealed them)
-- and as keyed HMAC blind indexes for lookup; never as plain text.

CREATE TABLE persons (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    -- Kept in clear because age rules (under-16 guardianship) need it and it
    -- does not identify a person on its own.
    birth_date          date NOT NULL,
    -- Which keyring key sealed the ciphertexts of this row; old keys stay
    -- in the keyring until every row sealed with them is re-encrypted.
    key_id              text NOT NULL,
    id_number_ct        bytea NOT NULL,
    phone_ct            bytea NOT NULL,
    insurance_ct        bytea,
    -- HMAC-SHA256 of the normalised 18-character ID number: one person, one
    -- identity, enforced here rather than by a read-then-insert.
    id_number_bidx      bytea NOT NULL,
    phone_bidx          bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT persons_id_number_bidx_uq UNIQUE (id_number_bidx)
);
CREATE INDEX persons_by_phone_bidx ON persons (phone_bidx);

-- Every read of unmasked personal data by an operator.
CREATE TABLE personal_data_audit (
    id          bigserial PRIMARY KEY,
    operator_id text NOT NULL,
    person_id   uuid NOT NULL REFERENCES persons (id),
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    fields      text[] NOT NULL,
    read_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX personal_data_audit_by_person ON personal_data_audit (person_id, read_at);

CREATE TABLE cards (
    id              uuid PRIMARY KEY,
    person_id       uuid NOT NULL REFERENCES persons (id),
    kind            text NOT NULL CHECK (kind IN ('physical', 'ecard')),
    -- 16 digits, the last a Luhn check digit, so a mistyped number at a
    -- window is caught before any lookup.
    card_number     text NOT NULL CHECK (card_number ~ '^[0-9]{16}$'),
    chip_serial     text CHECK (chip_serial ~ '^[0-9A-F]{8,32}$'),
    status          text NOT NULL CHECK (status IN ('active', 'lost', 'replaced', 'cancelled')),
    -- The card this one replaced; unique, so a lost card is replaced once
    -- and a retried replacement finds the first one.
    replaces_card_id uuid REFERENCES cards (id),
    issue_key       text NOT NULL,
    channel         text NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    lost_at         timestamptz,
    closed_at       timestamptz,
    CHECK ((kind = 'physical') = (chip_serial IS NOT NULL)),
    CONSTRAINT cards_number_uq UNIQUE (card_number),
    CONSTRAINT cards_chip_serial_uq UNIQUE (chip_serial),
    CONSTRAINT cards_replaces_uq UNIQUE (replaces_card_id),
    CONSTRAINT cards_issue_key_uq UNIQUE (person_id, issue_key)
);
-- One live card of each kind per person.
CREATE UNIQUE INDEX cards_one_live_per_kind_uq ON cards (person_id, kind)
    WHERE status IN ('active', 'lost');

-- 就诊人: a holder may book for the member while the binding is live.
-- Unbound rows are kept: they still count against the monthly limits.
CREATE TABLE family_bindings (
    id               uuid PRIMARY KEY,
    holder_id        uuid NOT NULL REFERENCES persons (id),
    member_id        uuid NOT NULL REFERENCES persons (id),
    relationship     text NOT NULL CHECK (length(relationship) BETWEEN 1 AND 32),
    proof_kind       text NOT NULL CHECK (proof_kind IN ('guardian_proof', 'member_verification')),
    proof_ref        text NOT NULL CHECK (length(proof_ref) BETWEEN 1 AND 128),
    bound_at         timestamptz NOT NULL,
    unbound_at       timestamptz,
    unbound_by       uuid,
    CHECK (holder_id <> member_id)
);
CREATE UNIQUE INDEX family_bindings_live_uq ON family_bindings (holder_id, member_id)
    WHERE unbound_at IS NULL;
CREATE INDEX family_bindings_by_holder ON family_bindings (holder_id, bound_at);
CREATE INDEX family_bindings_by_member ON family_bindings (member_id, bound_at);

-- Double-entry ledger. Card accounts never go negative; system accounts
-- (one clearing and one fee account per channel) may.
CREATE TABLE accounts (
    id         uuid PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('card', 'channel_clearing', 'fee_income')),
    card_id    uuid UNIQUE REFERENCES cards (id),
    channel    text,
    balance    bigint NOT NULL DEFAULT 0,
    CHECK ((kind = 'card') = (card_id IS NOT NULL)),
    CHECK (kind = 'card' OR channel IS NOT NULL),
    -- The last word against overspending, whatever the code above it does.
    CONSTRAINT accounts_card_not_negative CHECK (kind <> 'card' OR balance >= 0),
    CONSTRAINT accounts_system_uq UNIQUE (kind, channel)
);

CREATE TABLE ledger_transactions (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('top_up', 'fee', 'refund', 'transfer', 'cash_out')),
    -- The channel's transaction reference (top-up), the booking (fee,
    -- refund) or the card (transfer, cash-out): a retry finds the first.
    reference    text NOT NULL CHECK (length(reference) BETWEEN 1 AND 128),
    card_id      uuid NOT NULL REFERENCES cards (id),
    channel      text NOT NULL,
    amount       bigint NOT NULL CHECK (amount >= 0),
    -- A refund names the fee it gives back.
    refund_of    uuid REFERENCES ledger_transactions (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transactions_reference_uq UNIQUE (kind, reference)
);
CREATE INDEX ledger_transactions_by_day ON ledger_transactions (created_at, channel);

CREATE TABLE ledger_entries (
    id             bigserial PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES ledger_transactions (id),
    account_id     uuid NOT NULL REFERENCES accounts (id),
    -- Positive credits the account, negative debits it; each transaction's
    -- entries sum to zero.
    amount         bigint NOT NULL CHECK (amount <> 0)
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_by_transaction ON ledger_entries (transaction_id);

-- No-shows reported by slot-inventory; the event id makes a redelivered
-- event a no-op.
CREATE TABLE no_shows (
    event_id     uuid PRIMARY KEY,
    person_id    uuid NOT NULL,
    booking_id   text NOT NULL,
    hospital_id  text NOT NULL,
    visit_date   date NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    waived_at    timestamptz,
    waived_by    text,
    waive_reason text
);
CREATE INDEX no_shows_by_person ON no_shows (person_id, visit_date);

-- A bar on booking. Lifted bars stay for the record.
CREATE TABLE bars (
    id           uuid PRIMARY KEY,
    person_id    uuid NOT NULL,
    barred_at    timestamptz NOT NULL,
    barred_until timestamptz NOT NULL,
    -- The visit date of the no-show that crossed the threshold: the end of
    -- the rolling window a waiver is counted against.
    window_end   date NOT NULL,
    lifted_at    timestamptz,
    lifted_by    text,
    lift_reason  text
);
CREATE INDEX bars_by_person ON bars (person_id, barred_until);

-- The transactional outbox (same shape in every service; see jyt-events).
CREATE TABLE outbox (
    seq          bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    aggregate_id text        NOT NULL,
    payload      jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
