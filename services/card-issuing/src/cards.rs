//! Platform cards: physical cards (16-digit number with a Luhn check digit,
//! chip serial) and e-cards (a virtual card shown as a short-lived signed
//! QR token). Lifecycle: active → lost → replaced (a new card takes the
//! balance and the history), or → cancelled (the balance is paid out).

use chrono::{DateTime, Duration, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::{GenericClient, Transaction};
use jyt_db::tokio_postgres::Row;
use jyt_domain::{Channel, IdempotencyKey};
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ecard::{sign_ecard_token, verify_ecard_token};
use crate::error::CardError;
use crate::ledger;
use crate::persons::{self, PersonView};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardStatus {
    Active,
    Lost,
    Replaced,
    Cancelled,
}

impl CardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Lost => "lost",
            CardStatus::Replaced => "replaced",
            CardStatus::Cancelled => "cancelled",
        }
    }

    /// From the database, whose CHECK constraint allows only these four.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => CardStatus::Active,
            "lost" => CardStatus::Lost,
            "replaced" => CardStatus::Replaced,
            _ => CardStatus::Cancelled,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    Physical,
    Ecard,
}

impl CardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CardKind::Physical => "physical",
            CardKind::Ecard => "ecard",
        }
    }
}

pub use jyt_domain::card_number::{card_number_valid, luhn_check_digit};

/// Prefix, then random digits, then the Luhn digit: 16 digits.
fn new_card_number(prefix: &str) -> String {
    let random = Uuid::new_v4().as_u128();
    let width = 15usize.saturating_sub(prefix.len());
    let digits = format!("{random:039}");
    let mut n = format!("{prefix}{}", &digits[digits.len() - width..]);
    if let Some(c) = luhn_check_digit(&n) {
        n.push(char::from(b'0' + c));
    }
    n
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub kind: CardKind,
    /// Required for a physical card: the chip's serial (8 to 32 hex digits).
    #[serde(default)]
    pub chip_serial: Option<String>,
    pub channel: Channel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    #[serde(default)]
    pub chip_serial: Option<String>,
    pub channel: Channel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// The channel that pays the balance out.
    pub channel: Channel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub ecard_token: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CardView {
    pub card_id: Uuid,
    pub person_id: Uuid,
    pub kind: CardKind,
    pub card_number: String,
    pub chip_serial: Option<String>,
    pub status: CardStatus,
    pub replaces_card_id: Option<Uuid>,
    pub balance_fen: i64,
    /// The channel the card was issued through: the gateway mints its
    /// e-card QR tokens for that channel's apps (or at a kiosk or window).
    pub channel: String,
    pub issued_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct ResolvedCard {
    pub card_id: Uuid,
    pub kind: CardKind,
    pub person: PersonView,
    /// The holder's bar, as `GET /v1/persons/{id}/standing` tells it: the
    /// gateway resolves a card on a patient's first booking of the day and
    /// needs the standing right after, so it is answered here and not
    /// asked for in a second call.
    pub standing: ResolvedStanding,
}

/// The part of a person's standing the booking path needs.
#[derive(Debug, Serialize)]
pub struct ResolvedStanding {
    pub barred: bool,
    pub barred_until: Option<DateTime<Utc>>,
}

impl ResolvedStanding {
    fn from_bar(barred_until: Option<DateTime<Utc>>) -> Self {
        Self {
            barred: barred_until.is_some(),
            barred_until,
        }
    }
}

/// At most this many card numbers in one [`resolve_many`]: a batch's time
/// in flight bounds the wait of the first number in it.
pub const RESOLVE_MANY_MAX: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveManyRequest {
    pub card_numbers: Vec<String>,
}

/// [`resolve_many`]'s answer: one entry per number asked, in its order.
#[derive(Debug, Serialize)]
pub struct ResolvedMany {
    pub cards: Vec<ResolvedNumber>,
}

/// One number's answer: its card, holder and the holder's bar, or the
/// code the one-card resolve refuses it with (`CARD_NOT_FOUND`,
/// `CARD_LOST`, `CARD_REPLACED`, `CARD_CANCELLED`). Only what the gateway's
/// booking path needs: no personal details, so nothing is decrypted.
#[derive(Debug, Serialize)]
pub struct ResolvedNumber {
    pub card_number: String,
    #[serde(flatten)]
    pub answer: NumberAnswer,
}

/// A number's card found in use, or why not: never a mix of the two.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum NumberAnswer {
    Found {
        card_id: Uuid,
        person_id: Uuid,
        standing: ResolvedStanding,
    },
    Refused {
        code: &'static str,
    },
}

#[derive(Debug, Serialize)]
pub struct EcardToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Cancelled {
    pub card: CardView,
    pub refunded_fen: i64,
}

const SELECT_CARD: &str = "SELECT c.id, c.person_id, c.kind, c.card_number, c.chip_serial, c.status,
        c.replaces_card_id, c.issue_key, c.channel, c.issued_at, a.balance
   FROM cards c JOIN accounts a ON a.card_id = c.id";

/// A card number's card and its holder's row (as `persons::view` reads it).
static RESOLVE_CARD_NUMBER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} , c.id AS card_id, c.kind AS card_kind, c.status AS card_status,
              {} AS barred_until
           FROM cards c JOIN persons p ON p.id = c.person_id WHERE c.card_number = $1",
        persons::SELECT_PERSON_COLUMNS,
        crate::standing::bar_in_force("p.id", "$2"),
    )
});

/// Many card numbers at once, in their order: each number's card, its
/// holder and the holder's bar, or no card (`card_id` NULL).
static RESOLVE_CARD_NUMBERS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT c.id AS card_id, c.person_id, c.status AS card_status, {} AS barred_until
           FROM unnest($1::text[]) WITH ORDINALITY AS n(number, ord)
           LEFT JOIN cards c ON c.card_number = n.number
          ORDER BY n.ord",
        crate::standing::bar_in_force("c.person_id", "$2"),
    )
});

/// The bar in force on one person (the e-card resolve's third read).
static BAR_IN_FORCE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {}", crate::standing::bar_in_force("$1", "$2")));

fn card_kind(kind: &str) -> CardKind {
    if kind == "physical" {
        CardKind::Physical
    } else {
        CardKind::Ecard
    }
}

fn card_view(row: &Row) -> CardView {
    CardView {
        card_id: row.get("id"),
        person_id: row.get("person_id"),
        kind: card_kind(row.get("kind")),
        card_number: row.get("card_number"),
        chip_serial: row.get("chip_serial"),
        status: CardStatus::parse(row.get("status")),
        replaces_card_id: row.get("replaces_card_id"),
        balance_fen: row.get("balance"),
        channel: row.get("channel"),
        issued_at: row.get("issued_at"),
    }
}

pub async fn get<C: GenericClient>(client: &C, card_id: Uuid) -> Result<CardView, CardError> {
    let row = client
        .query_opt_cached(&format!("{SELECT_CARD} WHERE c.id = $1"), &[&card_id])
        .await?
        .ok_or(CardError::CardNotFound)?;
    Ok(card_view(&row))
}

/// Every card of a person, the newest first (lost, replaced and cancelled
/// ones too: a patient sees what became of each).
pub async fn of_person<C: GenericClient>(client: &C, person_id: Uuid) -> Result<Vec<CardView>, CardError> {
    let rows = client
        .query_cached(
            &format!("{SELECT_CARD} WHERE c.person_id = $1 ORDER BY c.issued_at DESC, c.id"),
            &[&person_id],
        )
        .await?;
    Ok(rows.iter().map(card_view).collect())
}

fn chip_serial_for(kind: CardKind, raw: Option<&str>) -> Result<Option<String>, RequestError> {
    match (kind, raw) {
        (CardKind::Ecard, None) => Ok(None),
        (CardKind::Ecard, Some(_)) => Err(RequestError::invalid("chip_serial", "e-cards have no chip")),
        (CardKind::Physical, None) => Err(RequestError::invalid(
            "chip_serial",
            "required for a physical card",
        )),
        (CardKind::Physical, Some(s)) => {
            let s = s.trim().to_ascii_uppercase();
            if (8..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(s))
            } else {
                Err(RequestError::invalid(
                    "chip_serial",
                    "must be 8 to 32 hexadecimal digits",
                ))
            }
        }
    }
}

struct NewCard<'a> {
    person_id: Uuid,
    kind: CardKind,
    chip_serial: Option<&'a str>,
    replaces: Option<Uuid>,
    issue_key: &'a str,
    channel: Channel,
}

/// Insert a card and its account. Card numbers are random: a collision is
/// retried with a new number rather than aborting the transaction.
async fn insert_card(
    tx: &Transaction<'_>,
    state: &AppState,
    card: NewCard<'_>,
    now: DateTime<Utc>,
) -> Result<(CardView, Uuid), CardError> {
    let NewCard {
        person_id,
        kind,
        chip_serial,
        replaces,
        issue_key,
        channel,
    } = card;
    if let Some(chip) = chip_serial
        && tx
            .query_opt_cached("SELECT 1 FROM cards WHERE chip_serial = $1", &[&chip])
            .await?
            .is_some()
    {
        return Err(CardError::ChipSerialInUse);
    }
    for _ in 0..5 {
        let card_id = Uuid::now_v7();
        let number = new_card_number(&state.settings.cards.number_prefix);
        let inserted = tx
            .execute_cached(
                "INSERT INTO cards (id, person_id, kind, card_number, chip_serial, status, replaces_card_id,
                                    issue_key, channel, issued_at)
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9)
                 ON CONFLICT (card_number) DO NOTHING",
                &[
                    &card_id,
                    &person_id,
                    &kind.as_str(),
                    &number,
                    &chip_serial,
                    &replaces,
                    &issue_key,
                    &channel.as_str(),
                    &now,
                ],
            )
            .await
            .map_err(|e| match jyt_db::unique_violation(&e) {
                Some("cards_chip_serial_uq") => CardError::ChipSerialInUse,
                Some("cards_one_live_per_kind_uq") => CardError::CardAlreadyIssued(kind.as_str()),
                _ => e.into(),
            })?;
        if inserted == 1 {
            let account = ledger::create_card_account(tx, card_id).await?;
            return Ok((get(tx, card_id).await?, account));
        }
    }
    Err(CardError::Unexpected(anyhow::anyhow!(
        "no free card number after 5 tries"
    )))
}

/// Issue a card to a person; a retry with the same Idempotency-Key gets the same card.
pub async fn issue(
    state: &AppState,
    person_id: Uuid,
    req: &IssueRequest,
    key: &IdempotencyKey,
    now: DateTime<Utc>,
) -> Result<(CardView, bool), CardError> {
    let chip = chip_serial_for(req.kind, req.chip_serial.as_deref())?;
    // Namespaced apart from replacements' natural keys (`replace:<card>`).
    let issue_key = format!("issue:{}", key.as_str());
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // Serialises issuing per person, so a retry racing its original finds it.
    tx.query_opt_cached("SELECT 1 FROM persons WHERE id = $1 FOR UPDATE", &[&person_id])
        .await?
        .ok_or(CardError::PersonNotFound(person_id))?;
    if let Some(row) = tx
        .query_opt_cached(
            &format!("{SELECT_CARD} WHERE c.person_id = $1 AND c.issue_key = $2"),
            &[&person_id, &issue_key],
        )
        .await?
    {
        let card = card_view(&row);
        if card.kind != req.kind || card.chip_serial != chip {
            return Err(CardError::IdempotencyKeyReused);
        }
        return Ok((card, false));
    }
    let live = tx
        .query_opt_cached(
            "SELECT 1 FROM cards WHERE person_id = $1 AND kind = $2 AND status IN ('active', 'lost')",
            &[&person_id, &req.kind.as_str()],
        )
        .await?;
    if live.is_some() {
        return Err(CardError::CardAlreadyIssued(req.kind.as_str()));
    }
    let new = NewCard {
        person_id,
        kind: req.kind,
        chip_serial: chip.as_deref(),
        replaces: None,
        issue_key: &issue_key,
        channel: req.channel,
    };
    let (card, _) = insert_card(&tx, state, new, now).await?;
    jyt_events::append(
        &tx,
        "card.issued",
        &card.card_id.to_string(),
        &serde_json::json!({
            "card_id": card.card_id, "person_id": person_id,
            "kind": req.kind, "channel": req.channel,
        }),
    )
    .await?;
    tx.commit().await?;
    state.relay.wake();
    Ok((card, true))
}

async fn lock_card(tx: &Transaction<'_>, card_id: Uuid) -> Result<CardView, CardError> {
    let row = tx
        .query_opt_cached(
            &format!("{SELECT_CARD} WHERE c.id = $1 FOR UPDATE OF c, a"),
            &[&card_id],
        )
        .await?
        .ok_or(CardError::CardNotFound)?;
    Ok(card_view(&row))
}

/// Report a card lost: from the commit on, resolving it is refused.
pub async fn report_loss(state: &AppState, card_id: Uuid, now: DateTime<Utc>) -> Result<CardView, CardError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let card = lock_card(&tx, card_id).await?;
    match card.status {
        CardStatus::Lost => return Ok(card),
        CardStatus::Replaced | CardStatus::Cancelled => return Err(CardError::CardUnusable(card.status)),
        CardStatus::Active => {}
    }
    tx.execute_cached(
        "UPDATE cards SET status = 'lost', lost_at = $2 WHERE id = $1",
        &[&card_id, &now],
    )
    .await?;
    jyt_events::append(
        &tx,
        "card.reported_lost",
        &card_id.to_string(),
        &serde_json::json!({ "card_id": card_id, "person_id": card.person_id }),
    )
    .await?;
    let card = get(&tx, card_id).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(card)
}

/// Replace a lost (or damaged) card: a new number, the balance moved over,
/// the old card refused from then on. Replacing twice finds the first
/// replacement (the `replaces_card_id` column is unique).
pub async fn replace(
    state: &AppState,
    card_id: Uuid,
    req: &ReplaceRequest,
    now: DateTime<Utc>,
) -> Result<(CardView, bool), CardError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let old = lock_card(&tx, card_id).await?;
    match old.status {
        CardStatus::Replaced => {
            let row = tx
                .query_one_cached(
                    &format!("{SELECT_CARD} WHERE c.replaces_card_id = $1"),
                    &[&card_id],
                )
                .await?;
            return Ok((card_view(&row), false));
        }
        CardStatus::Cancelled => return Err(CardError::CardUnusable(CardStatus::Cancelled)),
        CardStatus::Active | CardStatus::Lost => {}
    }
    let chip = chip_serial_for(old.kind, req.chip_serial.as_deref())?;
    let from = ledger::lock_card_account(&tx, card_id).await?;
    // Retire the old card first: only one live card of a kind per person.
    tx.execute_cached(
        "UPDATE cards SET status = 'replaced', closed_at = $2 WHERE id = $1",
        &[&card_id, &now],
    )
    .await?;
    let issue_key = format!("replace:{card_id}");
    let new = NewCard {
        person_id: old.person_id,
        kind: old.kind,
        chip_serial: chip.as_deref(),
        replaces: Some(card_id),
        issue_key: &issue_key,
        channel: req.channel,
    };
    let (new_card, new_account) = insert_card(&tx, state, new, now).await?;
    let moved = ledger::transfer_balance(&tx, &from, card_id, new_account, req.channel, now).await?;
    jyt_events::append(
        &tx,
        "card.replaced",
        &card_id.to_string(),
        &serde_json::json!({
            "old_card_id": card_id, "new_card_id": new_card.card_id,
            "person_id": old.person_id, "transferred_fen": moved,
        }),
    )
    .await?;
    let new_card = get(&tx, new_card.card_id).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok((new_card, true))
}

/// Cancel a card and pay its balance out through `channel`.
pub async fn cancel(
    state: &AppState,
    card_id: Uuid,
    req: &CancelRequest,
    now: DateTime<Utc>,
) -> Result<Cancelled, CardError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let card = lock_card(&tx, card_id).await?;
    match card.status {
        CardStatus::Cancelled => {
            let refunded: i64 = tx
                .query_opt_cached(
                    "SELECT amount FROM ledger_transactions WHERE kind = 'cash_out' AND reference = $1",
                    &[&card_id.to_string()],
                )
                .await?
                .map_or(0, |r| r.get(0));
            return Ok(Cancelled {
                card,
                refunded_fen: refunded,
            });
        }
        CardStatus::Replaced => return Err(CardError::CardUnusable(CardStatus::Replaced)),
        CardStatus::Active | CardStatus::Lost => {}
    }
    let account = ledger::lock_card_account(&tx, card_id).await?;
    let refunded = ledger::cash_out(&tx, &account, card_id, req.channel, now).await?;
    tx.execute_cached(
        "UPDATE cards SET status = 'cancelled', closed_at = $2 WHERE id = $1",
        &[&card_id, &now],
    )
    .await?;
    jyt_events::append(
        &tx,
        "card.cancelled",
        &card_id.to_string(),
        &serde_json::json!({
            "card_id": card_id, "person_id": card.person_id,
            "refunded_fen": refunded, "channel": req.channel,
        }),
    )
    .await?;
    let card = get(&tx, card_id).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(Cancelled {
        card,
        refunded_fen: refunded,
    })
}

/// A fresh QR token for an active e-card.
pub async fn ecard_token(
    state: &AppState,
    card_id: Uuid,
    now: DateTime<Utc>,
) -> Result<EcardToken, CardError> {
    let client = state.pool.get().await?;
    let card = get(&client, card_id).await?;
    if card.kind != CardKind::Ecard {
        return Err(CardError::NotAnEcard);
    }
    if card.status != CardStatus::Active {
        return Err(CardError::CardUnusable(card.status));
    }
    let ttl = i64::try_from(state.settings.ecard.ttl_seconds).unwrap_or(300);
    let expires_at = now + Duration::seconds(ttl);
    Ok(EcardToken {
        token: sign_ecard_token(&state.ecard_secret.0, card.person_id, card_id, expires_at),
        expires_at,
    })
}

/// Card number or e-card token → the person, for the gateway. Refused for
/// any card that is not active.
pub async fn resolve(
    state: &AppState,
    req: &ResolveRequest,
    now: DateTime<Utc>,
) -> Result<ResolvedCard, CardError> {
    let client = state.pool.get().await?;
    let card = match (&req.card_number, &req.ecard_token) {
        (Some(number), None) => {
            let number = number.trim();
            if !card_number_valid(number) {
                return Err(RequestError::invalid(
                    "card_number",
                    "must be 16 digits with a valid check digit",
                )
                .into());
            }
            // The card, its holder and the holder's bar in one statement:
            // every first booking of a patient's day asks this.
            let row = client
                .query_opt_cached(&RESOLVE_CARD_NUMBER, &[&number, &now])
                .await?
                .ok_or(CardError::CardNotFound)?;
            let status = CardStatus::parse(row.get("card_status"));
            if status != CardStatus::Active {
                return Err(CardError::CardUnusable(status));
            }
            return Ok(ResolvedCard {
                card_id: row.get("card_id"),
                kind: card_kind(row.get("card_kind")),
                person: persons::view(&state.keyring, &row)?,
                standing: ResolvedStanding::from_bar(row.get("barred_until")),
            });
        }
        (None, Some(token)) => {
            let claims = verify_ecard_token(&state.ecard_secret.0, token, now)?;
            let card = get(&client, claims.card_id).await?;
            if card.person_id != claims.person_id {
                return Err(CardError::EcardToken(crate::ecard::EcardTokenError::Invalid));
            }
            card
        }
        _ => {
            return Err(RequestError::invalid(
                "card_number",
                "give exactly one of card_number and ecard_token",
            )
            .into());
        }
    };
    if card.status != CardStatus::Active {
        return Err(CardError::CardUnusable(card.status));
    }
    // Both reads in one flight on the connection.
    let (person, bar) =
        futures::future::try_join(persons::get(&client, &state.keyring, card.person_id), async {
            let row = client
                .query_one_cached(&BAR_IN_FORCE, &[&card.person_id, &now])
                .await?;
            Ok::<_, CardError>(row.get::<_, Option<DateTime<Utc>>>(0))
        })
        .await?;
    Ok(ResolvedCard {
        card_id: card.card_id,
        kind: card.kind,
        person,
        standing: ResolvedStanding::from_bar(bar),
    })
}

/// Card numbers → holders, many in one statement: the gateway gathers the
/// first visits that arrive together (a release second brings thousands)
/// into one call instead of one call and one transaction each. A number
/// that is not a card, or a card that cannot be used, is answered with its
/// code in its place; the others are not held up by it.
pub async fn resolve_many(
    state: &AppState,
    req: &ResolveManyRequest,
    now: DateTime<Utc>,
) -> Result<ResolvedMany, CardError> {
    if req.card_numbers.is_empty() || req.card_numbers.len() > RESOLVE_MANY_MAX {
        return Err(RequestError::invalid(
            "card_numbers",
            format!("give 1 to {RESOLVE_MANY_MAX} card numbers"),
        )
        .into());
    }
    let numbers: Vec<&str> = req.card_numbers.iter().map(|n| n.trim()).collect();
    if let Some(i) = numbers.iter().position(|n| !card_number_valid(n)) {
        return Err(RequestError::invalid(
            format!("card_numbers[{i}]"),
            "must be 16 digits with a valid check digit",
        )
        .into());
    }
    let client = state.pool.get().await?;
    let rows = client
        .query_cached(&RESOLVE_CARD_NUMBERS, &[&numbers, &now])
        .await?;
    let cards = numbers
        .iter()
        .zip(&rows)
        .map(|(number, row)| ResolvedNumber {
            card_number: (*number).to_owned(),
            answer: match row.get::<_, Option<&str>>("card_status").map(CardStatus::parse) {
                None => NumberAnswer::Refused {
                    code: CardError::CardNotFound.code(),
                },
                Some(CardStatus::Active) => NumberAnswer::Found {
                    card_id: row.get("card_id"),
                    person_id: row.get("person_id"),
                    standing: ResolvedStanding::from_bar(row.get("barred_until")),
                },
                Some(status) => NumberAnswer::Refused {
                    code: CardError::CardUnusable(status).code(),
                },
            },
        })
        .collect();
    Ok(ResolvedMany { cards })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_matches_known_numbers() {
        // Well-known test card numbers.
        assert!(card_number_valid("4111111111111111"));
        assert!(card_number_valid("5500000000000004"));
        assert!(!card_number_valid("4111111111111112"));
        assert!(!card_number_valid("411111111111111"));
        assert!(!card_number_valid("41111111111111a1"));
        assert_eq!(luhn_check_digit("7992739871"), Some(3));
    }

    #[test]
    fn new_numbers_carry_prefix_and_check_digit() {
        for _ in 0..100 {
            let n = new_card_number("9110");
            assert!(n.starts_with("9110"), "{n}");
            assert!(card_number_valid(&n), "{n}");
        }
    }
}
