//! Reconciliation of one channel's day against its statement file.
//!
//! # The statement format
//! UTF-8 CSV (a leading BOM and CRLF or LF line ends are accepted), one
//! header line, then one line per transaction:
//!
//! ```text
//! trade_time,channel_transaction_id,platform_order_id,amount_fen,status,refund_fen
//! 2026-11-30 08:30:01,wx4200001,pumch-01a209ef-…,10000,paid,0
//! 2026-11-30 09:12:44,wx4200002,pumch-01a20a11-…,10000,refunded,10000
//! ```
//!
//! - `trade_time`: `YYYY-MM-DD HH:MM:SS` in Beijing time (or RFC 3339);
//! - `channel_transaction_id`: the channel's id, the platform's
//!   `payment_reference`; required;
//! - `platform_order_id`: our booking id (may be empty);
//! - `amount_fen`, `refund_fen`: integers in fen (¥1.00 = 100), `refund_fen`
//!   at most `amount_fen`;
//! - `status`: `paid` or `refunded` (WeChat's `SUCCESS` / `REFUND` too).
//!
//! Matching is by channel transaction id against the registration fees
//! confirmed that day on that channel with a payment reference (as the
//! gateway recorded it, `<app id>:<transaction id>`, or the transaction id
//! alone), paid through the channel (`self_pay`, `insurance`: a fee paid
//! from the prepaid card is card-issuing's, on no channel's statement); a booking
//! with any refund recorded is `refunded` with the refunds' sum. Every
//! mismatch is reported: `duplicate` (a transaction id seen on an earlier
//! line), `missing_on_platform`, `amount_differs` (the paid amount),
//! `status_differs` (paid/refunded, or the refunded amount), and
//! `missing_at_channel` (a platform payment on no line).

use jyt_db::Prepared;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use jyt_db::deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AccountingError;

pub const HEADER: [&str; 6] = [
    "trade_time",
    "channel_transaction_id",
    "platform_order_id",
    "amount_fen",
    "status",
    "refund_fen",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub line: u64,
    pub trade_time: DateTime<Utc>,
    pub transaction_id: String,
    pub order_id: String,
    pub amount_fen: i64,
    pub status: String,
    pub refund_fen: i64,
}

/// A platform payment, as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformPayment {
    pub booking_id: String,
    pub reference: String,
    pub amount_fen: i64,
    pub status: String,
    pub refund_fen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub kind: String,
    /// The statement line, when the mismatch has one.
    pub line: Option<i32>,
    pub channel_transaction_id: Option<String>,
    pub platform_order_id: Option<String>,
    pub channel_amount_fen: Option<i64>,
    pub platform_amount_fen: Option<i64>,
    pub channel_status: Option<String>,
    pub platform_status: Option<String>,
}

fn malformed(line: u64, reason: impl Into<String>) -> AccountingError {
    AccountingError::StatementMalformed {
        line,
        reason: reason.into(),
    }
}

/// Read a statement file, refusing it whole at its first bad line.
pub fn parse_statement(body: &[u8]) -> Result<Vec<StatementLine>, AccountingError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(malformed(
                1,
                format!("the file is empty; the header is `{}`", HEADER.join(",")),
            ));
        }
        Some(r) => r.map_err(|e| csv_error(body, &e))?,
    };
    let names: Vec<&str> = header.iter().map(str::trim).collect();
    if names != HEADER {
        return Err(malformed(1, format!("the header must be `{}`", HEADER.join(","))));
    }
    let mut lines = Vec::new();
    for record in records {
        let record = record.map_err(|e| csv_error(body, &e))?;
        let line = record.position().map_or(0, |p| line_at(body, p.byte()));
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() != HEADER.len() {
            return Err(malformed(
                line,
                format!("{} fields, expected {}", record.len(), HEADER.len()),
            ));
        }
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let trade_time = parse_time(field(0)).ok_or_else(|| {
            malformed(
                line,
                "`trade_time` must be YYYY-MM-DD HH:MM:SS (Beijing time) or RFC 3339",
            )
        })?;
        let transaction_id = field(1).to_owned();
        if transaction_id.is_empty() || transaction_id.len() > 128 {
            return Err(malformed(
                line,
                "`channel_transaction_id` must be 1 to 128 characters",
            ));
        }
        let order_id = field(2).to_owned();
        let amount_fen = parse_fen(field(3))
            .ok_or_else(|| malformed(line, "`amount_fen` must be a whole number of fen, 0 or more"))?;
        let status = match field(4).to_ascii_lowercase().as_str() {
            "paid" | "success" => "paid",
            "refunded" | "refund" => "refunded",
            _ => return Err(malformed(line, "`status` must be `paid` or `refunded`")),
        }
        .to_owned();
        let refund_fen = parse_fen(field(5))
            .ok_or_else(|| malformed(line, "`refund_fen` must be a whole number of fen, 0 or more"))?;
        if refund_fen > amount_fen {
            return Err(malformed(line, "`refund_fen` is larger than `amount_fen`"));
        }
        lines.push(StatementLine {
            line,
            trade_time,
            transaction_id,
            order_id,
            amount_fen,
            status,
            refund_fen,
        });
    }
    Ok(lines)
}

/// The 1-based line a record starting at `byte` is on. csv reports where
/// it started reading, which may be the end of the previous line (a CRLF's
/// `\n`), and counts a CRLF as two line ends, so count here.
fn line_at(body: &[u8], byte: u64) -> u64 {
    let mut end = usize::try_from(byte).unwrap_or(usize::MAX).min(body.len());
    while end < body.len() && matches!(body[end], b'\r' | b'\n') {
        end += 1;
    }
    body[..end].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn csv_error(body: &[u8], e: &csv::Error) -> AccountingError {
    let line = e.position().map_or(0, |p| line_at(body, p.byte()));
    let reason = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "the line is not valid UTF-8".to_owned(),
        _ => e.to_string(),
    };
    malformed(line, reason)
}

fn parse_fen(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(jyt_domain::time::at(t.date(), t.time()))
}

/// Every mismatch between a statement and the platform's payments.
pub fn reconcile(lines: &[StatementLine], platform: &[PlatformPayment]) -> Vec<Mismatch> {
    let exact: HashMap<&str, &PlatformPayment> = platform.iter().map(|p| (p.reference.as_str(), p)).collect();
    // The gateway records a channel's transaction id under the app that
    // sent it (`<app id>:<transaction id>`, so two apps' ids cannot
    // collide); the channel's statement has its own id alone.
    let unscoped: HashMap<&str, &PlatformPayment> = platform
        .iter()
        .filter_map(|p| p.reference.split_once(':').map(|(_, tx)| (tx, p)))
        .collect();
    let by_reference = |tx: &str| exact.get(tx).or_else(|| unscoped.get(tx)).copied();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut matched: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    for l in lines {
        let base = Mismatch {
            kind: String::new(),
            line: i32::try_from(l.line).ok(),
            channel_transaction_id: Some(l.transaction_id.clone()),
            platform_order_id: (!l.order_id.is_empty()).then(|| l.order_id.clone()),
            channel_amount_fen: Some(l.amount_fen),
            platform_amount_fen: None,
            channel_status: Some(l.status.clone()),
            platform_status: None,
        };
        let kind = |kind: &str, p: Option<&PlatformPayment>| Mismatch {
            kind: kind.to_owned(),
            platform_amount_fen: p.map(|p| p.amount_fen),
            platform_status: p.map(|p| p.status.clone()),
            platform_order_id: p
                .map(|p| p.booking_id.clone())
                .or_else(|| base.platform_order_id.clone()),
            ..base.clone()
        };
        if !seen.insert(l.transaction_id.as_str()) {
            out.push(kind("duplicate", by_reference(l.transaction_id.as_str())));
            continue;
        }
        let Some(p) = by_reference(l.transaction_id.as_str()) else {
            out.push(kind("missing_on_platform", None));
            continue;
        };
        matched.insert(p.reference.as_str());
        if p.amount_fen != l.amount_fen {
            out.push(kind("amount_differs", Some(p)));
        }
        if p.status != l.status || p.refund_fen != l.refund_fen {
            out.push(kind("status_differs", Some(p)));
        }
    }
    for p in platform {
        if !matched.contains(p.reference.as_str()) {
            out.push(Mismatch {
                kind: "missing_at_channel".to_owned(),
                line: None,
                channel_transaction_id: Some(p.reference.clone()),
                platform_order_id: Some(p.booking_id.clone()),
                channel_amount_fen: None,
                platform_amount_fen: Some(p.amount_fen),
                channel_status: None,
                platform_status: Some(p.status.clone()),
            });
        }
    }
    out
}

/// The platform's payments for one channel and day.
pub async fn platform_payments(
    pool: &Pool,
    channel: &str,
    day: NaiveDate,
) -> Result<Vec<PlatformPayment>, AccountingError> {
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT f.booking_id, f.reference, f.amount_fen,
                    COALESCE((SELECT sum(r.amount_fen) FROM money_entries r
                               WHERE r.kind = 'refund' AND r.booking_id = f.booking_id), 0)::bigint
               FROM money_entries f
              WHERE f.kind = 'fee' AND f.channel = $1 AND f.day = $2
                AND f.reference IS NOT NULL AND f.booking_id IS NOT NULL
                -- Paid from the platform card's prepaid balance: never on
                -- the channel's statement (card-issuing's ledger holds it).
                AND f.payment_method <> 'prepaid_card'
              ORDER BY f.occurred_at, f.reference",
            &[&channel, &day],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let refund_fen: i64 = r.get(3);
            PlatformPayment {
                booking_id: r.get(0),
                reference: r.get(1),
                amount_fen: r.get(2),
                status: if refund_fen > 0 { "refunded" } else { "paid" }.to_owned(),
                refund_fen,
            }
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatementReport {
    pub statement_id: Uuid,
    pub channel: String,
    pub date: NaiveDate,
    pub lines: i32,
    pub matched: i32,
    pub imported_by: String,
    pub imported_at: DateTime<Utc>,
    pub mismatches: Vec<Mismatch>,
}

/// Store a reconciled statement, replacing an earlier one for the same
/// channel and day, in one transaction.
pub async fn store(
    pool: &Pool,
    channel: &str,
    day: NaiveDate,
    lines: &[StatementLine],
    mismatches: Vec<Mismatch>,
    imported_by: &str,
) -> Result<StatementReport, AccountingError> {
    let with_issue: HashSet<i32> = mismatches.iter().filter_map(|m| m.line).collect();
    let line_count = i32::try_from(lines.len()).unwrap_or(i32::MAX);
    let matched = line_count - i32::try_from(with_issue.len()).unwrap_or(0);
    let id = Uuid::now_v7();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute_cached(
        "DELETE FROM statements WHERE channel = $1 AND day = $2",
        &[&channel, &day],
    )
    .await?;
    let imported_at: DateTime<Utc> = tx
        .query_one_cached(
            "INSERT INTO statements (id, channel, day, lines, matched, imported_by)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING imported_at",
            &[&id, &channel, &day, &line_count, &matched, &imported_by],
        )
        .await?
        .get(0);
    for (seq, m) in (0_i32..).zip(&mismatches) {
        tx.execute_cached(
            "INSERT INTO statement_mismatches (statement_id, seq, kind, line, channel_transaction_id,
                 platform_order_id, channel_amount_fen, platform_amount_fen, channel_status, platform_status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &id,
                &seq,
                &m.kind,
                &m.line,
                &m.channel_transaction_id,
                &m.platform_order_id,
                &m.channel_amount_fen,
                &m.platform_amount_fen,
                &m.channel_status,
                &m.platform_status,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(StatementReport {
        statement_id: id,
        channel: channel.to_owned(),
        date: day,
        lines: line_count,
        matched,
        imported_by: imported_by.to_owned(),
        imported_at,
        mismatches,
    })
}

/// The statements imported for a day (optionally one channel), with their mismatches.
pub async fn statements(
    pool: &Pool,
    day: NaiveDate,
    channel: Option<&str>,
) -> Result<Vec<StatementReport>, AccountingError> {
    let client = pool.get().await?;
    let heads = client
        .query_cached(
            "SELECT id, channel, day, lines, matched, imported_by, imported_at FROM statements
              WHERE day = $1 AND ($2::text IS NULL OR channel = $2) ORDER BY channel",
            &[&day, &channel],
        )
        .await?;
    let mut out = Vec::with_capacity(heads.len());
    for h in heads {
        let id: Uuid = h.get(0);
        let mismatches = client
            .query_cached(
                "SELECT kind, line, channel_transaction_id, platform_order_id, channel_amount_fen,
                        platform_amount_fen, channel_status, platform_status
                   FROM statement_mismatches WHERE statement_id = $1 ORDER BY seq",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| Mismatch {
                kind: r.get(0),
                line: r.get(1),
                channel_transaction_id: r.get(2),
                platform_order_id: r.get(3),
                channel_amount_fen: r.get(4),
                platform_amount_fen: r.get(5),
                channel_status: r.get(6),
                platform_status: r.get(7),
            })
            .collect();
        out.push(StatementReport {
            statement_id: id,
            channel: h.get(1),
            date: h.get(2),
            lines: h.get(3),
            matched: h.get(4),
            imported_by: h.get(5),
            imported_at: h.get(6),
            mismatches,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "trade_time,channel_transaction_id,platform_order_id,amount_fen,status,refund_fen";

    fn line_of(body: &str) -> (u64, String) {
        match parse_statement(body.as_bytes()) {
            Err(AccountingError::StatementMalformed { line, reason }) => (line, reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bom_and_crlf_are_accepted() {
        let body = format!(
            "\u{feff}{HEAD}\r\n2026-11-30 08:30:01,wx1,pumch-1,10000,paid,0\r\n2026-11-30 08:31:01,wx2,,500,REFUND,500\r\n"
        );
        let lines = parse_statement(body.as_bytes()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].transaction_id, "wx1");
        assert_eq!(lines[0].trade_time.to_rfc3339(), "2026-11-30T00:30:01+00:00");
        assert_eq!(lines[1].status, "refunded");
        assert_eq!(lines[1].line, 3);
    }

    #[test]
    fn malformed_files_name_the_line_and_reason() {
        assert_eq!(line_of("").0, 1);
        assert_eq!(line_of("a,b\n").0, 1);
        let (line, reason) = line_of(&format!(
            "{HEAD}\n2026-11-30 08:30:01,wx1,o,100,paid,0\n2026-11-30 08:30:01,wx2,o,1.5,paid,0\n"
        ));
        assert_eq!(line, 3);
        assert!(reason.contains("amount_fen"), "{reason}");
        let (line, reason) = line_of(&format!("{HEAD}\nyesterday,wx1,o,100,paid,0\n"));
        assert_eq!((line, reason.contains("trade_time")), (2, true));
        let (line, reason) = line_of(&format!("{HEAD}\n2026-11-30 08:30:01,wx1,o,100,lost,0\n"));
        assert_eq!((line, reason.contains("status")), (2, true));
        assert_eq!(line_of(&format!("{HEAD}\n2026-11-30 08:30:01,wx1,o,100\n")).0, 2);
        assert_eq!(
            line_of(&format!("{HEAD}\n2026-11-30 08:30:01,wx1,o,100,paid,101\n")).0,
            2
        );
    }

    #[test]
    fn every_kind_of_mismatch_is_found() {
        let pay = |r: &str, amount, refund| PlatformPayment {
            booking_id: format!("b-{r}"),
            reference: r.to_owned(),
            amount_fen: amount,
            status: if refund > 0 { "refunded" } else { "paid" }.to_owned(),
            refund_fen: refund,
        };
        let platform = vec![
            pay("ok", 100, 0),
            pay("amt", 100, 0),
            pay("st", 100, 100),
            pay("gone", 100, 0),
        ];
        let body = format!(
            "{HEAD}\n2026-11-30 08:00:00,ok,b-ok,100,paid,0\n2026-11-30 08:00:00,amt,b-amt,90,paid,0\n\
             2026-11-30 08:00:00,st,b-st,100,paid,100\n2026-11-30 08:00:00,new,,100,paid,0\n\
             2026-11-30 08:00:00,ok,b-ok,100,paid,0\n"
        );
        let lines = parse_statement(body.as_bytes()).unwrap();
        let kinds: Vec<(String, Option<i32>)> = reconcile(&lines, &platform)
            .into_iter()
            .map(|m| (m.kind, m.line))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("amount_differs".to_owned(), Some(3)),
                ("status_differs".to_owned(), Some(4)),
                ("missing_on_platform".to_owned(), Some(5)),
                ("duplicate".to_owned(), Some(6)),
                ("missing_at_channel".to_owned(), None),
            ]
        );
    }

    #[test]
    fn a_channel_lists_its_own_transaction_id_which_the_gateway_scoped_by_app() {
        let platform = vec![PlatformPayment {
            booking_id: "pumch-b1".into(),
            reference: "wxmini:4200001".into(),
            amount_fen: 5_000,
            status: "refunded".into(),
            refund_fen: 5_000,
        }];
        let body = format!("{HEAD}\n2026-11-30 08:00:00,4200001,pumch-b1,5000,refunded,5000\n");
        let lines = parse_statement(body.as_bytes()).unwrap();
        assert!(reconcile(&lines, &platform).is_empty());
        let scoped = format!("{HEAD}\n2026-11-30 08:00:00,wxmini:4200001,pumch-b1,5000,refunded,5000\n");
        assert!(reconcile(&parse_statement(scoped.as_bytes()).unwrap(), &platform).is_empty());
    }
}
