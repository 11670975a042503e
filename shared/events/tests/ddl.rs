//! The outbox table is defined once, in `jyt_events::OUTBOX_DDL`. Each
//! service's first migration must create exactly that table: migrations are
//! immutable once applied (refinery checks their checksums), so they keep a
//! copy, and this test is what keeps the copies from drifting apart. The
//! same for the change that lets the relay read the outbox by transaction
//! (`jyt_events::OUTBOX_RELAY_DDL`): each service has a migration that is
//! exactly that text.

/// The `CREATE TABLE outbox` statement and its index, whitespace-normalised.
fn outbox_statements(sql: &str) -> String {
    let start = sql.find("CREATE TABLE outbox").unwrap_or(sql.len());
    let rest = &sql[start..];
    let end = rest
        .find("outbox (seq) WHERE published_at IS NULL;")
        .map_or(rest.len(), |i| {
            i + "outbox (seq) WHERE published_at IS NULL;".len()
        });
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_services_outbox_is_the_shared_definition() {
    let shared = outbox_statements(jyt_events::OUTBOX_DDL);
    assert!(shared.starts_with("CREATE TABLE outbox"), "{shared}");
    for (service, migration) in [
        (
            "slot-inventory",
            include_str!("../../../services/slot-inventory/migrations/V1__schedules_segments_bookings.sql"),
        ),
        (
            "card-issuing",
            include_str!("../../../services/card-issuing/migrations/V1__persons_cards_ledger_standing.sql"),
        ),
    ] {
        assert_eq!(
            outbox_statements(migration),
            shared,
            "{service}'s outbox differs from OUTBOX_DDL"
        );
    }
}

#[test]
fn every_services_outbox_is_read_by_transaction_the_shared_way() {
    let shared = jyt_events::OUTBOX_RELAY_DDL;
    for (service, migration) in [
        (
            "slot-inventory",
            include_str!("../../../services/slot-inventory/migrations/V23__outbox_read_by_transaction.sql"),
        ),
        (
            "card-issuing",
            include_str!("../../../services/card-issuing/migrations/V5__outbox_read_by_transaction.sql"),
        ),
    ] {
        assert_eq!(
            migration, shared,
            "{service}'s relay migration differs from OUTBOX_RELAY_DDL"
        );
    }
}
