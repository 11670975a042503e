//! The patients of a run: people registered at card-issuing with an
//! e-card each, through card-issuing's own library calls (the same code its
//! HTTP handlers run), once; later runs reuse them.

use std::str::FromStr;

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use jyt_domain::{Channel, IdempotencyKey};
use uuid::Uuid;

use crate::city::Cards;

/// Card numbers of at least `n` patients (exactly `n` returned), every one
/// in good standing: the no-shows and bars an earlier `peak-day` left in
/// this load test's own patient index are wiped, or they would refuse
/// patients of the next run (`PATIENT_BARRED`).
pub async fn ensure(cards: &Cards, n: usize) -> anyhow::Result<Vec<String>> {
    cards
        .state
        .pool
        .get()
        .await?
        .batch_execute("DELETE FROM bars; DELETE FROM no_shows;")
        .await
        .context("clearing the last run's no-shows")?;
    let mut have = existing(cards, n).await?;
    if have.len() < n {
        let missing = n - have.len();
        tracing::warn!(missing, "registering patients at card-issuing (once per machine)");
        let started = std::time::Instant::now();
        let results: Vec<anyhow::Result<String>> = futures::stream::iter(0..missing)
            .map(|_| register_one(cards, None))
            .buffer_unordered(8)
            .collect()
            .await;
        for r in results {
            r?;
        }
        tracing::warn!(
            missing,
            seconds = started.elapsed().as_secs_f64(),
            "patients registered"
        );
        have = existing(cards, n).await?;
    }
    anyhow::ensure!(have.len() >= n, "only {} patients with a card", have.len());
    Ok(have)
}

async fn existing(cards: &Cards, n: usize) -> anyhow::Result<Vec<String>> {
    let client = cards.state.pool.get().await?;
    let limit = i64::try_from(n)?;
    Ok(client
        .query(
            "SELECT card_number FROM cards WHERE status = 'active' AND kind = 'ecard'
              ORDER BY card_number LIMIT $1",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// People who share one phone number (a scalper's farm of identities),
/// registered anew for each run: their card numbers.
pub async fn register_sharing_phone(cards: &Cards, n: usize, phone: &str) -> anyhow::Result<Vec<String>> {
    futures::stream::iter(0..n)
        .map(|_| register_one(cards, Some(phone)))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Put `fen` on each card's prepaid balance, once per card (the top-up's
/// reference is the card's, so later runs replay it instead of adding).
pub async fn top_up(cards: &Cards, numbers: &[String], fen: i64) -> anyhow::Result<()> {
    let client = cards.state.pool.get().await?;
    let ids: Vec<uuid::Uuid> = client
        .query("SELECT id FROM cards WHERE card_number = ANY($1)", &[&numbers])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(ids)
        .map(|card| async move {
            let req = card_issuing::ledger::TopUpRequest {
                amount_fen: fen,
                channel: Channel::Kiosk,
                channel_ref: format!("lt-topup-{}", card.simple()),
            };
            card_issuing::ledger::top_up(&cards.state, card, &req, Utc::now())
                .await
                .context("topping up a prepaid card")?;
            Ok(())
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn register_one(cards: &Cards, phone: Option<&str>) -> anyhow::Result<String> {
    let state = &cards.state;
    for _ in 0..5 {
        let req = card_issuing::persons::RegisterRequest {
            name: "负载测试".to_owned(),
            id_number: random_id_number()?,
            phone: phone.map_or_else(
                || format!("139{:08}", Uuid::new_v4().as_u128() % 100_000_000),
                str::to_owned,
            ),
            insurance_number: None,
            enrolled_by_app: None,
        };
        let registered = card_issuing::persons::register(state, &req, Utc::now())
            .await
            .context("registering a patient")?;
        if !registered.created {
            continue; // the random ID number was taken: draw again
        }
        let person = registered.person.person_id;
        let issue = card_issuing::cards::IssueRequest {
            kind: card_issuing::cards::CardKind::Ecard,
            chip_serial: None,
            channel: Channel::Kiosk,
        };
        let key = IdempotencyKey::from_str(&format!("lt-card-{person}"))
            .map_err(|_| anyhow::anyhow!("bad idempotency key"))?;
        let (card, _) = card_issuing::cards::issue(state, person, &issue, &key, Utc::now())
            .await
            .context("issuing an e-card")?;
        return Ok(card.card_number);
    }
    anyhow::bail!("no free ID number after 5 draws")
}

/// A valid 18-character resident ID number (GB 11643 check character).
fn random_id_number() -> anyhow::Result<String> {
    let n = Uuid::new_v4().as_u128();
    let day = i64::try_from(n % 15_000)?;
    let birth = NaiveDate::from_ymd_opt(1950, 1, 1).context("date")? + chrono::Duration::days(day);
    let seq = (n >> 20) % 1000;
    let first17 = format!("110105{}{seq:03}", birth.format("%Y%m%d"));
    let check = card_issuing::identity::id_check_char(first17.as_bytes()).context("check character")?;
    Ok(format!("{first17}{}", char::from(check)))
}
