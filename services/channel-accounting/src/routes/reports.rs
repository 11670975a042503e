use actix_web::{HttpResponse, get, web};
use chrono::NaiveDate;
use jyt_db::deadpool_postgres::Pool;
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::error::AccountingError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateQuery {
    pub date: NaiveDate,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelRow {
    pub hospital_id: String,
    pub channel: String,
    pub bookings: i64,
    pub fees_fen: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelShare {
    pub channel: String,
    pub bookings: i64,
    /// Share of the day's bookings, in percent with two decimals.
    pub share_percent: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelReport {
    pub date: NaiveDate,
    pub rows: Vec<ChannelRow>,
    pub split: Vec<ChannelShare>,
}

/// Bookings and fees per channel and hospital for one day.
#[get("/v1/reports/channels")]
pub async fn channels(
    pool: web::Data<Pool>,
    query: Query<DateQuery>,
) -> Result<HttpResponse, AccountingError> {
    let date = query.0.date;
    let client = pool.get().await?;
    let rows: Vec<ChannelRow> = client
        .query(
            "SELECT hospital_id, channel, bookings, fees_fen FROM channel_daily
              WHERE day = $1 ORDER BY hospital_id, channel",
            &[&date],
        )
        .await?
        .iter()
        .map(|r| ChannelRow {
            hospital_id: r.get(0),
            channel: r.get(1),
            bookings: r.get(2),
            fees_fen: r.get(3),
        })
        .collect();
    let total: i64 = rows.iter().map(|r| r.bookings).sum();
    let mut split: Vec<ChannelShare> = Vec::new();
    for row in &rows {
        match split.iter_mut().find(|s| s.channel == row.channel) {
            Some(s) => s.bookings += row.bookings,
            None => split.push(ChannelShare {
                channel: row.channel.clone(),
                bookings: row.bookings,
                share_percent: 0.0,
            }),
        }
    }
    for s in &mut split {
        // Display only; the counts themselves are integers.
        s.share_percent = if total == 0 {
            0.0
        } else {
            (s.bookings as f64 * 10_000.0 / total as f64).round() / 100.0
        };
    }
    split.sort_by(|a, b| b.bookings.cmp(&a.bookings).then(a.channel.cmp(&b.channel)));
    Ok(HttpResponse::Ok().json(ChannelReport { date, rows, split }))
}
