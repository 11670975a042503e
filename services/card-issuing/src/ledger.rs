//! The prepaid balance as a double-entry ledger. Every transaction's
//! entries sum to zero. Card accounts keep a running balance, read and
//! written under a row lock (`FOR UPDATE`), so concurrent debits on one
//! card queue up instead of overspending; a CHECK constraint refuses a
//! negative card balance whatever the code does. System accounts (one
//! clearing and one fee account per channel) keep no running balance —
//! theirs is the sum of their entries — so they never become a hot row
//! that every payment in the city waits on.
//!
//! Each operation is idempotent under its reference: the channel's
//! transaction reference for a top-up, the booking for a fee or refund,
//! the card for a transfer or cash-out (unique per kind in PostgreSQL).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::{GenericClient, Transaction};
use jyt_domain::{Channel, time};
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cards::CardStatus;
use crate::error::CardError;
use crate::state::AppState;

/// Largest single top-up, fee or refund: 100,000 yuan.
const MAX_AMOUNT_FEN: i64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    TopUp,
    Fee,
    Refund,
    Transfer,
    CashOut,
}

impl TxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::TopUp => "top_up",
            TxKind::Fee => "fee",
            TxKind::Refund => "refund",
            TxKind::Transfer => "transfer",
            TxKind::CashOut => "cash_out",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    pub amount_fen: i64,
    pub channel: Channel,
    /// The channel's own transaction id (WeChat Pay, kiosk cash box, ...).
    pub channel_ref: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub amount_fen: i64,
    pub channel: Channel,
    /// The booking the fee is for; one fee per reference.
    pub reference: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    pub amount_fen: i64,
    /// This refund's own reference (e.g. the cancellation).
    pub reference: String,
    /// The reference of the fee payment being refunded.
    pub refund_of: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerTransaction {
    pub transaction_id: Uuid,
    pub kind: String,
    pub reference: String,
    pub card_id: Uuid,
    pub channel: String,
    pub amount_fen: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PostingView {
    #[serde(flatten)]
    pub transaction: LedgerTransaction,
    /// The card's balance after this request (now, for a replay).
    pub balance_fen: i64,
}

#[derive(Debug)]
pub struct Posted {
    pub view: PostingView,
    /// False when the reference had already been posted.
    pub created: bool,
}

fn check_amount(amount: i64) -> Result<(), RequestError> {
    if !(1..=MAX_AMOUNT_FEN).contains(&amount) {
        return Err(RequestError::invalid(
            "amount_fen",
            format!("must be between 1 and {MAX_AMOUNT_FEN} fen"),
        ));
    }
    Ok(())
}

fn check_reference(field: &str, r: &str) -> Result<(), RequestError> {
    if !(1..=100).contains(&r.len()) || !r.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::invalid(
            field,
            "must be 1 to 100 visible ASCII characters",
        ));
    }
    Ok(())
}

/// A card's account, locked for this transaction.
pub struct LockedAccount {
    pub account_id: Uuid,
    pub balance: i64,
    pub status: CardStatus,
    /// The card's holder, for the movement's event (read with the lock:
    /// one round trip fewer than asking after the posting).
    pub person_id: Uuid,
}

pub async fn lock_card_account(tx: &Transaction<'_>, card_id: Uuid) -> Result<LockedAccount, CardError> {
    let row = tx
        .query_opt_cached(
            "SELECT a.id, a.balance, c.status, c.person_id FROM accounts a JOIN cards c ON c.id = a.card_id
              WHERE a.card_id = $1 FOR UPDATE OF a, c",
            &[&card_id],
        )
        .await?
        .ok_or(CardError::CardNotFound)?;
    Ok(LockedAccount {
        account_id: row.get(0),
        balance: row.get(1),
        status: CardStatus::parse(row.get(2)),
        person_id: row.get(3),
    })
}

/// The card's account, locked, and what was already posted under
/// (`kind`, `reference`), in one round trip where there were two.
///
/// The posting is read in the statement's snapshot, taken before the lock
/// was waited for, so one that a concurrent delivery of the same request
/// committed meanwhile is not seen here. Nothing goes wrong for it: the
/// posting then meets it (`ON CONFLICT`, [`post`]) and answers it, and a
/// refusal looks again first ([`refuse_unless_posted`]), so a request
/// delivered twice still gets its first answer.
async fn lock_for_posting(
    tx: &Transaction<'_>,
    card_id: Uuid,
    kind: TxKind,
    reference: &str,
) -> Result<(LockedAccount, Option<LedgerTransaction>), CardError> {
    let row = tx
        .query_opt_cached(
            "SELECT a.id, a.balance, c.status, c.person_id,
                    t.id, t.kind, t.reference, t.card_id, t.channel, t.amount, t.created_at
               FROM accounts a JOIN cards c ON c.id = a.card_id
               LEFT JOIN ledger_transactions t ON t.kind = $2 AND t.reference = $3
              WHERE a.card_id = $1
                FOR UPDATE OF a, c",
            &[&card_id, &kind.as_str(), &reference],
        )
        .await?
        .ok_or(CardError::CardNotFound)?;
    let account = LockedAccount {
        account_id: row.get(0),
        balance: row.get(1),
        status: CardStatus::parse(row.get(2)),
        person_id: row.get(3),
    };
    let posted = row
        .get::<_, Option<Uuid>>(4)
        .map(|transaction_id| LedgerTransaction {
            transaction_id,
            kind: row.get(5),
            reference: row.get(6),
            card_id: row.get(7),
            channel: row.get(8),
            amount_fen: row.get(9),
            created_at: row.get(10),
        });
    Ok((account, posted))
}

/// What was posted under (`kind`, `reference`), as committed now.
async fn posted_under(
    tx: &Transaction<'_>,
    kind: TxKind,
    reference: &str,
) -> Result<Option<LedgerTransaction>, CardError> {
    Ok(tx
        .query_opt_cached(
            &format!("{SELECT_TX} WHERE kind = $1 AND reference = $2"),
            &[&kind.as_str(), &reference],
        )
        .await?
        .as_ref()
        .map(tx_view))
}

/// Refuse a posting with `refusal`, unless a concurrent delivery of the
/// same request posted it while this one waited for the card's lock:
/// then `replay` answers it as that one was answered.
async fn refuse_unless_posted(
    tx: &Transaction<'_>,
    kind: TxKind,
    reference: &str,
    refusal: CardError,
    replay: impl FnOnce(LedgerTransaction) -> Result<Posted, CardError>,
) -> Result<Posted, CardError> {
    match posted_under(tx, kind, reference).await? {
        Some(earlier) => replay(earlier),
        None => Err(refusal),
    }
}

pub async fn create_card_account<C: GenericClient>(client: &C, card_id: Uuid) -> Result<Uuid, CardError> {
    let id = Uuid::now_v7();
    client
        .execute_cached(
            "INSERT INTO accounts (id, kind, card_id) VALUES ($1, 'card', $2)",
            &[&id, &card_id],
        )
        .await?;
    Ok(id)
}

/// The channels' clearing and fee accounts this process has met: their
/// ids never change once created (no account is ever deleted), so a
/// payment need not read them again (one round trip of a prepaid
/// payment's seven, loadtest/README.md, 2026-12-06 20:23).
#[derive(Default)]
pub struct SystemAccounts {
    /// By kind, then channel: looked up by `&str`, with no key to build.
    known:
        std::sync::RwLock<std::collections::HashMap<&'static str, std::collections::HashMap<String, Uuid>>>,
}

impl SystemAccounts {
    /// [`system_account`], remembered once it is seen committed.
    async fn id(&self, tx: &Transaction<'_>, kind: &'static str, channel: &str) -> Result<Uuid, CardError> {
        let remembered = self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kind)
            .and_then(|channels| channels.get(channel))
            .copied();
        if let Some(id) = remembered {
            return Ok(id);
        }
        let (id, committed) = system_account_seen(tx, kind, channel).await?;
        // One this transaction created is not remembered: the transaction
        // may still roll back, leaving an id that names nothing.
        if committed {
            self.known
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(kind)
                .or_default()
                .insert(channel.to_owned(), id);
        }
        Ok(id)
    }
}

/// A channel's clearing or fee account, created on first use. A plain
/// read when it exists: no lock, so channels never serialise payments.
async fn system_account(tx: &Transaction<'_>, kind: &str, channel: &str) -> Result<Uuid, CardError> {
    system_account_seen(tx, kind, channel).await.map(|(id, _)| id)
}

/// [`system_account`], and whether it existed before this transaction
/// looked (`false`: this transaction may have created it).
async fn system_account_seen(
    tx: &Transaction<'_>,
    kind: &str,
    channel: &str,
) -> Result<(Uuid, bool), CardError> {
    let find = "SELECT id FROM accounts WHERE kind = $1 AND channel = $2";
    if let Some(row) = tx.query_opt_cached(find, &[&kind, &channel]).await? {
        return Ok((row.get(0), true));
    }
    tx.execute_cached(
        "INSERT INTO accounts (id, kind, channel) VALUES ($1, $2, $3) ON CONFLICT (kind, channel) DO NOTHING",
        &[&Uuid::now_v7(), &kind, &channel],
    )
    .await?;
    Ok((tx.query_one_cached(find, &[&kind, &channel]).await?.get(0), false))
}

const SELECT_TX: &str =
    "SELECT id, kind, reference, card_id, channel, amount, refund_of, created_at FROM ledger_transactions";

fn tx_view(row: &jyt_db::tokio_postgres::Row) -> LedgerTransaction {
    LedgerTransaction {
        transaction_id: row.get("id"),
        kind: row.get("kind"),
        reference: row.get("reference"),
        card_id: row.get("card_id"),
        channel: row.get("channel"),
        amount_fen: row.get("amount"),
        created_at: row.get("created_at"),
    }
}

struct NewTx<'a> {
    kind: TxKind,
    reference: &'a str,
    card_id: Uuid,
    channel: &'a str,
    amount: i64,
    refund_of: Option<Uuid>,
    /// (account, signed amount); must sum to zero.
    entries: Vec<(Uuid, i64)>,
    /// The card account whose running balance changes, and by how much.
    card_delta: Option<(Uuid, i64)>,
    /// The movement's event, written by the posting's own statement.
    event: Option<TxEvent<'a>>,
}

/// A movement's event (`card.topped_up`, `card.fee_paid`,
/// `card.refunded`): its payload is known before the posting, so the
/// posting's statement writes it ([`POST_TRANSACTION`]'s `ev`), a round
/// trip fewer than appending it after (a prepaid payment's five were
/// four; loadtest/README.md, 2026-12-06 23:07).
struct TxEvent<'a> {
    event_type: &'static str,
    person_id: Uuid,
    /// The card's balance once the movement is posted.
    balance_fen: i64,
    /// Fields about what the movement was for (the booking of a refund),
    /// never replacing the ledger's own.
    extra: Option<&'a serde_json::Value>,
}

impl TxEvent<'_> {
    fn payload(&self, transaction_id: Uuid, new: &NewTx<'_>) -> serde_json::Value {
        let mut payload = serde_json::json!({
            "transaction_id": transaction_id,
            "card_id": new.card_id,
            "person_id": self.person_id,
            "channel": new.channel,
            "amount_fen": new.amount,
            "reference": new.reference,
            "balance_fen": self.balance_fen,
        });
        if let (Some(serde_json::Value::Object(extra)), Some(out)) = (self.extra, payload.as_object_mut()) {
            for (k, v) in extra {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        payload
    }
}

/// The transaction, its entries and the card's running balance in one
/// statement (one round trip where a movement took four: peak-day's 8,283
/// prepaid debits were half of its payments phase's statements,
/// loadtest/README.md, 2026-12-06 14:48). When its (kind, reference) was
/// posted before, `t` is empty and nothing is written: the entries and the
/// balance join `t` (the caller then rolls back anyway, answering with the
/// posting it met; the join keeps the statement right on its own,
/// `a_payment_meeting_an_uncommitted_one_of_its_reference_posts_nothing`
/// reaches that path). The entries' foreign key
/// to `t`'s row is checked at the statement's end, when the row is there.
/// `$9`/`$10`: the entries' accounts and signed amounts; `$11`/`$12`: the
/// card account whose balance moves and by how much (NULL: none);
/// `$13`–`$15`: the event's id, type and payload (NULL id: no event),
/// written to the outbox only with `t`'s row, as the entries are.
const POST_TRANSACTION: &str = "WITH t AS (
        INSERT INTO ledger_transactions (id, kind, reference, card_id, channel, amount, refund_of, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (kind, reference) DO NOTHING
        RETURNING id, kind, reference, card_id, channel, amount, refund_of, created_at),
     e AS (
        INSERT INTO ledger_entries (transaction_id, account_id, amount)
        SELECT t.id, x.account_id, x.amount
          FROM t, unnest($9::uuid[], $10::int8[]) WITH ORDINALITY AS x (account_id, amount, ord)
         ORDER BY x.ord),
     b AS (
        UPDATE accounts SET balance = balance + $12
         WHERE id = $11 AND EXISTS (SELECT 1 FROM t)),
     ev AS (
        INSERT INTO outbox (event_id, event_type, aggregate_id, payload)
        SELECT $13::uuid, $14::text, t.card_id::text, $15::jsonb FROM t WHERE $13::uuid IS NOT NULL)
     SELECT * FROM t";

/// Insert a transaction and its entries, or find the one already posted
/// under the same kind and reference (`Err(existing)`).
async fn post(
    tx: &Transaction<'_>,
    new: NewTx<'_>,
    now: DateTime<Utc>,
) -> Result<Result<LedgerTransaction, LedgerTransaction>, CardError> {
    let sum: i64 = new.entries.iter().map(|(_, a)| a).sum();
    if sum != 0 {
        return Err(CardError::Unexpected(anyhow::anyhow!(
            "unbalanced ledger transaction"
        )));
    }
    let id = Uuid::now_v7();
    let accounts: Vec<Uuid> = new.entries.iter().map(|(account, _)| *account).collect();
    let amounts: Vec<i64> = new.entries.iter().map(|(_, amount)| *amount).collect();
    let (card_account, delta) = new.card_delta.unzip();
    let event_id = new.event.as_ref().map(|_| Uuid::now_v7());
    let event_type = new.event.as_ref().map(|e| e.event_type);
    let payload = new.event.as_ref().map(|e| e.payload(id, &new));
    let inserted = tx
        .query_opt_cached(
            POST_TRANSACTION,
            &[
                &id,
                &new.kind.as_str(),
                &new.reference,
                &new.card_id,
                &new.channel,
                &new.amount,
                &new.refund_of,
                &now,
                &accounts,
                &amounts,
                &card_account,
                &delta,
                &event_id,
                &event_type,
                &payload,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        let earlier = posted_under(tx, new.kind, new.reference).await?.ok_or_else(|| {
            CardError::Unexpected(anyhow::anyhow!(
                "a posting met its reference's, which is not there"
            ))
        })?;
        return Ok(Err(earlier));
    };
    Ok(Ok(tx_view(&row)))
}

/// A replay answers like the first request if it asks for the same thing.
fn replayed(
    existing: LedgerTransaction,
    card_id: Uuid,
    amount: i64,
    balance: i64,
    reference: &str,
) -> Result<Posted, CardError> {
    if existing.card_id != card_id || existing.amount_fen != amount {
        return Err(CardError::ReferenceReused(reference.to_owned()));
    }
    Ok(Posted {
        view: PostingView {
            transaction: existing,
            balance_fen: balance,
        },
        created: false,
    })
}

/// Commit a movement posted with its event (see [`TxEvent`]) and wake the
/// relay.
async fn finish(
    state: &AppState,
    tx: Transaction<'_>,
    posted: LedgerTransaction,
    balance: i64,
) -> Result<Posted, CardError> {
    tx.commit().await?;
    state.relay.wake();
    Ok(Posted {
        view: PostingView {
            transaction: posted,
            balance_fen: balance,
        },
        created: true,
    })
}

fn require_active(status: CardStatus) -> Result<(), CardError> {
    if status == CardStatus::Active {
        Ok(())
    } else {
        Err(CardError::CardUnusable(status))
    }
}

pub async fn top_up(
    state: &AppState,
    card_id: Uuid,
    req: &TopUpRequest,
    now: DateTime<Utc>,
) -> Result<Posted, CardError> {
    check_amount(req.amount_fen)?;
    check_reference("channel_ref", &req.channel_ref)?;
    // A channel's references are its own: scope them so two channels'
    // ids can never collide.
    let reference = format!("{}:{}", req.channel, req.channel_ref);
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // The replay is checked before the status, so a retried top-up of a
    // card lost since still gets its first answer.
    let (account, earlier) = lock_for_posting(&tx, card_id, TxKind::TopUp, &reference).await?;
    let replay = |t| replayed(t, card_id, req.amount_fen, account.balance, &req.channel_ref);
    if let Some(earlier) = earlier {
        return replay(earlier);
    }
    if let Err(refusal) = require_active(account.status) {
        return refuse_unless_posted(&tx, TxKind::TopUp, &reference, refusal, replay).await;
    }
    let clearing = state
        .system_accounts
        .id(&tx, "channel_clearing", req.channel.as_str())
        .await?;
    let new = NewTx {
        kind: TxKind::TopUp,
        reference: &reference,
        card_id,
        channel: req.channel.as_str(),
        amount: req.amount_fen,
        refund_of: None,
        entries: vec![(account.account_id, req.amount_fen), (clearing, -req.amount_fen)],
        card_delta: Some((account.account_id, req.amount_fen)),
        event: Some(TxEvent {
            event_type: "card.topped_up",
            person_id: account.person_id,
            balance_fen: account.balance + req.amount_fen,
            extra: None,
        }),
    };
    match post(&tx, new, now).await? {
        Ok(posted) => finish(state, tx, posted, account.balance + req.amount_fen).await,
        Err(existing) => replay(existing),
    }
}

pub async fn pay_fee(
    state: &AppState,
    card_id: Uuid,
    req: &PaymentRequest,
    now: DateTime<Utc>,
) -> Result<Posted, CardError> {
    check_amount(req.amount_fen)?;
    check_reference("reference", &req.reference)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // The lock that makes concurrent debits queue: each sees the balance
    // the previous one left.
    let (account, earlier) = lock_for_posting(&tx, card_id, TxKind::Fee, &req.reference).await?;
    let replay = |t| replayed(t, card_id, req.amount_fen, account.balance, &req.reference);
    if let Some(earlier) = earlier {
        return replay(earlier);
    }
    let refusal = require_active(account.status).err().or_else(|| {
        (account.balance < req.amount_fen).then_some(CardError::InsufficientBalance {
            balance_fen: account.balance,
        })
    });
    if let Some(refusal) = refusal {
        return refuse_unless_posted(&tx, TxKind::Fee, &req.reference, refusal, replay).await;
    }
    let income = state
        .system_accounts
        .id(&tx, "fee_income", req.channel.as_str())
        .await?;
    let new = NewTx {
        kind: TxKind::Fee,
        reference: &req.reference,
        card_id,
        channel: req.channel.as_str(),
        amount: req.amount_fen,
        refund_of: None,
        entries: vec![(account.account_id, -req.amount_fen), (income, req.amount_fen)],
        card_delta: Some((account.account_id, -req.amount_fen)),
        event: Some(TxEvent {
            event_type: "card.fee_paid",
            person_id: account.person_id,
            balance_fen: account.balance - req.amount_fen,
            extra: None,
        }),
    };
    match post(&tx, new, now).await? {
        Ok(posted) => finish(state, tx, posted, account.balance - req.amount_fen).await,
        Err(existing) => replay(existing),
    }
}

/// What was already refunded of a fee ($1: its transaction id), read by
/// `ledger_transactions_refunds_of` (card-issuing V4), not by a walk over
/// every refund.
pub const REFUNDED_OF_FEE: &str = "SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_transactions WHERE kind = 'refund' AND refund_of = $1";

/// The card and every card it replaced, newest first: a fee paid from a
/// card since replaced is refunded to its replacement.
const CARD_CHAIN: &str = "WITH RECURSIVE chain(id) AS (
        SELECT $1::uuid
        UNION ALL
        SELECT c.replaces_card_id FROM cards c JOIN chain ON c.id = chain.id
         WHERE c.replaces_card_id IS NOT NULL)";

pub async fn refund(
    state: &AppState,
    card_id: Uuid,
    req: &RefundRequest,
    now: DateTime<Utc>,
) -> Result<Posted, CardError> {
    post_refund(state, card_id, req, now, RefundOf::Request).await
}

/// Who asks for a refund, which decides two things.
enum RefundOf<'a> {
    /// A caller of `/v1/cards/{id}/refunds`: the card must be active.
    Request,
    /// slot-inventory's `booking.refund_requested`: the money is the
    /// patient's whatever became of the card since (a lost card's balance
    /// moves to its replacement; a cancelled one's stays visible for an
    /// operator to pay out), and `card.refunded` names the booking.
    Booking(&'a serde_json::Value),
}

async fn post_refund(
    state: &AppState,
    card_id: Uuid,
    req: &RefundRequest,
    now: DateTime<Utc>,
    of: RefundOf<'_>,
) -> Result<Posted, CardError> {
    check_amount(req.amount_fen)?;
    check_reference("reference", &req.reference)?;
    check_reference("refund_of", &req.refund_of)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let (account, earlier) = lock_for_posting(&tx, card_id, TxKind::Refund, &req.reference).await?;
    let replay = |t| replayed(t, card_id, req.amount_fen, account.balance, &req.reference);
    if let Some(earlier) = earlier {
        return replay(earlier);
    }
    let (fee_id, channel) = match refundable(&tx, card_id, req, &of, account.status).await {
        Ok(fee) => fee,
        Err(
            refusal @ (CardError::CardUnusable(_)
            | CardError::PaymentNotFound(_)
            | CardError::RefundExceedsPayment { .. }),
        ) => return refuse_unless_posted(&tx, TxKind::Refund, &req.reference, refusal, replay).await,
        Err(e) => return Err(e),
    };
    let income = state.system_accounts.id(&tx, "fee_income", &channel).await?;
    let new = NewTx {
        kind: TxKind::Refund,
        reference: &req.reference,
        card_id,
        channel: &channel,
        amount: req.amount_fen,
        refund_of: Some(fee_id),
        entries: vec![(income, -req.amount_fen), (account.account_id, req.amount_fen)],
        card_delta: Some((account.account_id, req.amount_fen)),
        event: Some(TxEvent {
            event_type: "card.refunded",
            person_id: account.person_id,
            balance_fen: account.balance + req.amount_fen,
            extra: match of {
                RefundOf::Booking(context) => Some(context),
                RefundOf::Request => None,
            },
        }),
    };
    match post(&tx, new, now).await? {
        Ok(posted) => finish(state, tx, posted, account.balance + req.amount_fen).await,
        Err(existing) => replay(existing),
    }
}

/// The fee a refund gives back (its transaction and channel), or why it
/// may not: a card no longer active asking itself, a fee not paid from
/// this card or one it replaced, or more than is left of it.
async fn refundable(
    tx: &Transaction<'_>,
    card_id: Uuid,
    req: &RefundRequest,
    of: &RefundOf<'_>,
    status: CardStatus,
) -> Result<(Uuid, String), CardError> {
    match of {
        RefundOf::Request => require_active(status)?,
        RefundOf::Booking(_) if status != CardStatus::Active => tracing::warn!(
            card = %card_id,
            status = status.as_str(),
            "a booking's fee is refunded to a card that is no longer active"
        ),
        RefundOf::Booking(_) => {}
    }
    let fee = tx
        .query_opt_cached(
            &format!(
                "{CARD_CHAIN} SELECT t.id, t.amount, t.channel FROM ledger_transactions t
                  WHERE t.kind = 'fee' AND t.reference = $2 AND t.card_id IN (SELECT id FROM chain)"
            ),
            &[&card_id, &req.refund_of],
        )
        .await?
        .ok_or_else(|| CardError::PaymentNotFound(req.refund_of.clone()))?;
    let (fee_id, fee_amount, channel): (Uuid, i64, String) = (fee.get(0), fee.get(1), fee.get(2));
    let refunded: i64 = tx.query_one_cached(REFUNDED_OF_FEE, &[&fee_id]).await?.get(0);
    if refunded + req.amount_fen > fee_amount {
        return Err(CardError::RefundExceedsPayment {
            remaining_fen: fee_amount - refunded,
        });
    }
    Ok((fee_id, channel))
}

/// The ledger reference of the refund of a booking's card fee. The
/// gateway uses the same one when the hospital refuses a payment it has
/// already debited, so the two paths can never both credit a fee.
pub fn booking_refund_reference(booking_id: &str) -> String {
    format!("refund:{booking_id}")
}

/// What became of a requested booking refund.
#[derive(Debug)]
pub enum BookingRefund {
    /// Credited now (`created`) or already before (a redelivered event).
    Credited(Posted),
    /// No card fee was taken under this booking: nothing to give back here.
    NoCardPayment,
}

/// Credit back a booking's fee that the gateway debited from a card (the
/// debit's reference is the booking id), to the card that paid it or the
/// one that replaced it. Idempotent under `refund:<booking_id>`: a
/// redelivered event credits nothing twice. `context` (booking, hospital,
/// owning channel app) is carried into the `card.refunded` event.
pub async fn refund_booking(
    state: &AppState,
    booking_id: &str,
    amount_fen: i64,
    context: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<BookingRefund, CardError> {
    let card = {
        let client = state.pool.get().await?;
        let paid_by = client
            .query_opt_cached(
                "SELECT card_id FROM ledger_transactions WHERE kind = 'fee' AND reference = $1",
                &[&booking_id],
            )
            .await?;
        let Some(paid_by) = paid_by else {
            return Ok(BookingRefund::NoCardPayment);
        };
        // The newest card of the chain that replaced the paying one.
        client
            .query_one_cached(
                "WITH RECURSIVE successors(id, depth) AS (
                    SELECT $1::uuid, 0
                    UNION ALL
                    SELECT c.id, s.depth + 1 FROM cards c JOIN successors s ON c.replaces_card_id = s.id)
                 SELECT id FROM successors ORDER BY depth DESC LIMIT 1",
                &[&paid_by.get::<_, Uuid>(0)],
            )
            .await?
            .get::<_, Uuid>(0)
    };
    let req = RefundRequest {
        amount_fen,
        reference: booking_refund_reference(booking_id),
        refund_of: booking_id.to_owned(),
    };
    post_refund(state, card, &req, now, RefundOf::Booking(context))
        .await
        .map(BookingRefund::Credited)
}

/// Move a replaced card's whole balance to its replacement (inside the
/// replacement's transaction; both accounts are locked by the caller).
pub async fn transfer_balance(
    tx: &Transaction<'_>,
    from: &LockedAccount,
    from_card: Uuid,
    to_account: Uuid,
    channel: Channel,
    now: DateTime<Utc>,
) -> Result<i64, CardError> {
    if from.balance == 0 {
        return Ok(0);
    }
    let reference = from_card.to_string();
    let new = NewTx {
        kind: TxKind::Transfer,
        reference: &reference,
        card_id: from_card,
        channel: channel.as_str(),
        amount: from.balance,
        refund_of: None,
        entries: vec![(from.account_id, -from.balance), (to_account, from.balance)],
        card_delta: Some((from.account_id, -from.balance)),
        event: None,
    };
    post(tx, new, now)
        .await?
        .map_err(|_| CardError::Unexpected(anyhow::anyhow!("card transferred twice")))?;
    tx.execute_cached(
        "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
        &[&to_account, &from.balance],
    )
    .await?;
    Ok(from.balance)
}

/// Pay a cancelled card's balance back out through `channel`.
pub async fn cash_out(
    tx: &Transaction<'_>,
    from: &LockedAccount,
    card_id: Uuid,
    channel: Channel,
    now: DateTime<Utc>,
) -> Result<i64, CardError> {
    if from.balance == 0 {
        return Ok(0);
    }
    let clearing = system_account(tx, "channel_clearing", channel.as_str()).await?;
    let reference = card_id.to_string();
    let new = NewTx {
        kind: TxKind::CashOut,
        reference: &reference,
        card_id,
        channel: channel.as_str(),
        amount: from.balance,
        refund_of: None,
        entries: vec![(from.account_id, -from.balance), (clearing, from.balance)],
        card_delta: Some((from.account_id, -from.balance)),
        event: None,
    };
    post(tx, new, now)
        .await?
        .map_err(|_| CardError::Unexpected(anyhow::anyhow!("card cashed out twice")))?;
    Ok(from.balance)
}

#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub transaction_id: Uuid,
    pub kind: String,
    pub reference: String,
    pub card_id: Uuid,
    pub channel: String,
    /// Signed, from the card's side: positive credits it.
    pub amount_fen: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct History {
    pub card_id: Uuid,
    pub balance_fen: i64,
    /// This card's entries and those of every card it replaced, oldest first.
    pub entries: Vec<HistoryEntry>,
}

pub async fn history(state: &AppState, card_id: Uuid) -> Result<History, CardError> {
    let client = state.pool.get().await?;
    let balance: i64 = client
        .query_opt_cached("SELECT balance FROM accounts WHERE card_id = $1", &[&card_id])
        .await?
        .ok_or(CardError::CardNotFound)?
        .get(0);
    let rows = client
        .query_cached(
            &format!(
                "{CARD_CHAIN}
                 SELECT t.id, t.kind, t.reference, a.card_id, t.channel, e.amount, t.created_at
                   FROM ledger_entries e
                   JOIN accounts a ON a.id = e.account_id
                   JOIN ledger_transactions t ON t.id = e.transaction_id
                  WHERE a.card_id IN (SELECT id FROM chain)
                  ORDER BY e.id"
            ),
            &[&card_id],
        )
        .await?;
    Ok(History {
        card_id,
        balance_fen: balance,
        entries: rows
            .iter()
            .map(|r| HistoryEntry {
                transaction_id: r.get(0),
                kind: r.get(1),
                reference: r.get(2),
                card_id: r.get(3),
                channel: r.get(4),
                amount_fen: r.get(5),
                created_at: r.get(6),
            })
            .collect(),
    })
}

#[derive(Debug, Serialize)]
pub struct ChannelDay {
    pub channel: String,
    pub top_ups_fen: i64,
    pub top_up_count: i64,
    pub fees_fen: i64,
    pub fee_count: i64,
    pub refunds_fen: i64,
    pub refund_count: i64,
    pub cash_outs_fen: i64,
    pub cash_out_count: i64,
    /// Money into card balances through this channel that day.
    pub net_to_cards_fen: i64,
    /// What the platform holds for this channel at the day's end
    /// (top-ups less cash-outs, all time), and its fee income less refunds.
    pub clearing_balance_fen: i64,
    pub fee_income_balance_fen: i64,
}

#[derive(Debug, Serialize)]
pub struct DailyReport {
    pub date: NaiveDate,
    pub channels: Vec<ChannelDay>,
    /// Sum of every entry ever posted up to the day's end; always 0.
    pub ledger_sum_fen: i64,
}

/// Per channel, one Asia/Shanghai calendar day, for channel-accounting.
pub async fn daily_report(state: &AppState, date: NaiveDate) -> Result<DailyReport, CardError> {
    let start = time::at(date, NaiveTime::MIN);
    let end = time::at(date.succ_opt().unwrap_or(date), NaiveTime::MIN);
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(
            "WITH day AS (
                SELECT channel,
                       SUM(amount) FILTER (WHERE kind = 'top_up')   AS top_ups,
                       COUNT(*)    FILTER (WHERE kind = 'top_up')   AS top_up_n,
                       SUM(amount) FILTER (WHERE kind = 'fee')      AS fees,
                       COUNT(*)    FILTER (WHERE kind = 'fee')      AS fee_n,
                       SUM(amount) FILTER (WHERE kind = 'refund')   AS refunds,
                       COUNT(*)    FILTER (WHERE kind = 'refund')   AS refund_n,
                       SUM(amount) FILTER (WHERE kind = 'cash_out') AS cash_outs,
                       COUNT(*)    FILTER (WHERE kind = 'cash_out') AS cash_out_n
                  FROM ledger_transactions
                 WHERE created_at >= $1 AND created_at < $2 AND kind <> 'transfer'
                 GROUP BY channel),
             balances AS (
                SELECT a.channel,
                       SUM(e.amount) FILTER (WHERE a.kind = 'channel_clearing') AS clearing,
                       SUM(e.amount) FILTER (WHERE a.kind = 'fee_income')       AS income
                  FROM ledger_entries e
                  JOIN accounts a ON a.id = e.account_id
                  JOIN ledger_transactions t ON t.id = e.transaction_id
                 WHERE a.kind <> 'card' AND t.created_at < $2
                 GROUP BY a.channel)
             SELECT COALESCE(d.channel, b.channel),
                    COALESCE(d.top_ups, 0)::bigint, COALESCE(d.top_up_n, 0)::bigint,
                    COALESCE(d.fees, 0)::bigint, COALESCE(d.fee_n, 0)::bigint,
                    COALESCE(d.refunds, 0)::bigint, COALESCE(d.refund_n, 0)::bigint,
                    COALESCE(d.cash_outs, 0)::bigint, COALESCE(d.cash_out_n, 0)::bigint,
                    COALESCE(b.clearing, 0)::bigint, COALESCE(b.income, 0)::bigint
               FROM day d FULL JOIN balances b ON b.channel = d.channel
              ORDER BY 1",
            &[&start, &end],
        )
        .await?;
    let ledger_sum: i64 = client
        .query_one_cached(
            "SELECT COALESCE(SUM(e.amount), 0)::bigint FROM ledger_entries e
               JOIN ledger_transactions t ON t.id = e.transaction_id WHERE t.created_at < $1",
            &[&end],
        )
        .await?
        .get(0);
    let channels = rows
        .iter()
        .map(|r| {
            let (top_ups, fees, refunds, cash_outs): (i64, i64, i64, i64) =
                (r.get(1), r.get(3), r.get(5), r.get(7));
            ChannelDay {
                channel: r.get(0),
                top_ups_fen: top_ups,
                top_up_count: r.get(2),
                fees_fen: fees,
                fee_count: r.get(4),
                refunds_fen: refunds,
                refund_count: r.get(6),
                cash_outs_fen: cash_outs,
                cash_out_count: r.get(8),
                net_to_cards_fen: top_ups - fees + refunds - cash_outs,
                // Stored from the ledger's side (a top-up debits clearing);
                // shown as what the platform holds, hence negated.
                clearing_balance_fen: -r.get::<_, i64>(9),
                fee_income_balance_fen: r.get(10),
            }
        })
        .collect();
    Ok(DailyReport {
        date,
        channels,
        ledger_sum_fen: ledger_sum,
    })
}
