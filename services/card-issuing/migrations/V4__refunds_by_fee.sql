-- A refund sums what was already refunded of its fee
-- (`ledger::REFUNDED_OF_FEE`: kind = 'refund' AND refund_of = $1). No index
-- had refund_of, so PostgreSQL read it through ledger_transactions_reference_uq
-- (kind, reference): every refund ever made, for each new one. In
-- peak-day that was 300-400 index entries a refund and growing with the
-- ledger's history (a day's cancellations read 487,000 of them).
CREATE INDEX ledger_transactions_refunds_of ON ledger_transactions (refund_of) WHERE refund_of IS NOT NULL;
