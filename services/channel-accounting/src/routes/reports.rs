//! `/v1/reports/*`: traffic per channel, the money ledger and the daily
//! settlement, as JSON or CSV (`?format=csv` or `Accept: text/csv`).

use jyt_db::Prepared;
use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::NaiveDate;
use jyt_db::deadpool_postgres::Pool;
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::auth::Operator;
use crate::error::AccountingError;
use crate::routes::query::{ReportQuery, Scope, csv_response, percent};
use crate::settings::FeeSettings;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelRow {
    pub day: NaiveDate,
    pub hospital_id: String,
    pub channel: String,
    pub attempts: i64,
    pub bookings: i64,
    pub sold_out: i64,
    pub cancellations: i64,
    pub expiries: i64,
    pub promotions: i64,
    pub check_ins: i64,
    pub no_shows: i64,
    pub stops: i64,
    pub waitlist_joins: i64,
    pub fees_fen: i64,
    pub refunds_fen: i64,
}

const CHANNEL_COLUMNS: [&str; 15] = [
    "day",
    "hospital_id",
    "channel",
    "attempts",
    "bookings",
    "sold_out",
    "cancellations",
    "expiries",
    "promotions",
    "check_ins",
    "no_shows",
    "stops",
    "waitlist_joins",
    "fees_fen",
    "refunds_fen",
];

impl ChannelRow {
    fn csv(&self) -> Vec<String> {
        let mut out = vec![
            self.day.to_string(),
            self.hospital_id.clone(),
            self.channel.clone(),
        ];
        out.extend(
            [
                self.attempts,
                self.bookings,
                self.sold_out,
                self.cancellations,
                self.expiries,
                self.promotions,
                self.check_ins,
                self.no_shows,
                self.stops,
                self.waitlist_joins,
                self.fees_fen,
                self.refunds_fen,
            ]
            .iter()
            .map(i64::to_string),
        );
        out
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelShare {
    pub channel: String,
    pub bookings: i64,
    /// Share of the range's bookings, in percent with two decimals.
    pub share_percent: f64,
}

/// Our split beside Beijing's 2016–2017 reference: WeChat 40.16 %, kiosk
/// 47.15 % (the 114 phone platform and in-clinic follow-up booking are
/// joined to kiosk pick-up), every other channel 12.69 %.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReferenceShare {
    pub group: String,
    pub channels: Vec<String>,
    pub bookings: i64,
    pub share_percent: f64,
    pub reference_percent: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub hospital: Option<String>,
    pub rows: Vec<ChannelRow>,
    pub split: Vec<ChannelShare>,
    pub reference_split: Vec<ReferenceShare>,
}

pub const REFERENCE_GROUPS: [(&str, &[&str], f64); 3] = [
    ("wechat", &["wechat"], 40.16),
    ("kiosk", &["kiosk", "phone114", "clinic"], 47.15),
    ("other", &["window", "app", "referral"], 12.69),
];

pub async fn channel_rows(pool: &Pool, scope: &Scope) -> Result<Vec<ChannelRow>, AccountingError> {
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT d.day, d.hospital_id, d.channel, d.attempts, d.bookings, d.sold_out, d.cancellations,
                    d.expiries, d.promotions, d.check_ins, d.no_shows, d.stops, d.waitlist_joins, d.fees_fen,
                    COALESCE(r.refunds_fen, 0)::bigint
               FROM channel_daily d
               LEFT JOIN (SELECT day, hospital_id, channel, sum(amount_fen) AS refunds_fen
                            FROM money_entries WHERE kind = 'refund' GROUP BY 1, 2, 3) r
                      USING (day, hospital_id, channel)
              WHERE d.day BETWEEN $1 AND $2
                AND ($3::text IS NULL OR d.hospital_id = $3)
                AND ($4::text IS NULL OR d.channel = $4)
              ORDER BY d.day, d.hospital_id, d.channel",
            &[&scope.from, &scope.to, &scope.hospital, &scope.channel],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ChannelRow {
            day: r.get(0),
            hospital_id: r.get(1),
            channel: r.get(2),
            attempts: r.get(3),
            bookings: r.get(4),
            sold_out: r.get(5),
            cancellations: r.get(6),
            expiries: r.get(7),
            promotions: r.get(8),
            check_ins: r.get(9),
            no_shows: r.get(10),
            stops: r.get(11),
            waitlist_joins: r.get(12),
            fees_fen: r.get(13),
            refunds_fen: r.get(14),
        })
        .collect())
}

pub fn split(rows: &[ChannelRow]) -> (Vec<ChannelShare>, Vec<ReferenceShare>) {
    let mut by_channel: BTreeMap<&str, i64> = BTreeMap::new();
    for r in rows {
        *by_channel.entry(r.channel.as_str()).or_default() += r.bookings;
    }
    let total: i64 = by_channel.values().sum();
    let mut split: Vec<ChannelShare> = by_channel
        .iter()
        .filter(|(_, b)| **b > 0)
        .map(|(c, b)| ChannelShare {
            channel: (*c).to_owned(),
            bookings: *b,
            share_percent: percent(*b, total),
        })
        .collect();
    split.sort_by(|a, b| b.bookings.cmp(&a.bookings).then(a.channel.cmp(&b.channel)));
    let reference = REFERENCE_GROUPS
        .iter()
        .map(|(group, members, reference_percent)| {
            let bookings = members
                .iter()
                .map(|c| by_channel.get(c).copied().unwrap_or(0))
                .sum();
            ReferenceShare {
                group: (*group).to_owned(),
                channels: members.iter().map(|c| (*c).to_owned()).collect(),
                bookings,
                share_percent: percent(bookings, total),
                reference_percent: *reference_percent,
            }
        })
        .collect();
    (split, reference)
}

/// Traffic per channel, hospital and day, with each channel's share.
#[get("/v1/reports/channels")]
pub async fn channels(
    req: HttpRequest,
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, AccountingError> {
    let scope = query.0.scope(&req, &operator)?;
    let rows = channel_rows(&pool, &scope).await?;
    if scope.csv {
        let lines: Vec<Vec<String>> = rows.iter().map(ChannelRow::csv).collect();
        return csv_response(
            &format!("channels-{}-{}", scope.from, scope.to),
            &CHANNEL_COLUMNS,
            &lines,
        );
    }
    let (split, reference_split) = split(&rows);
    Ok(HttpResponse::Ok().json(ChannelReport {
        from: scope.from,
        to: scope.to,
        hospital: scope.hospital,
        rows,
        split,
        reference_split,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MoneyRow {
    pub day: NaiveDate,
    /// '' for prepaid top-ups, which belong to no hospital.
    pub hospital_id: String,
    pub channel: String,
    pub payment_method: String,
    pub fees_fen: i64,
    pub fee_count: i64,
    pub refunds_fen: i64,
    pub refund_count: i64,
    pub topups_fen: i64,
    pub topup_count: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MoneyReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub rows: Vec<MoneyRow>,
    pub total_fees_fen: i64,
    pub total_refunds_fen: i64,
    pub total_topups_fen: i64,
}

/// The money ledger summed per day, hospital, channel and payment method.
#[get("/v1/reports/money")]
pub async fn money(
    req: HttpRequest,
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, AccountingError> {
    let scope = query.0.scope(&req, &operator)?;
    let client = pool.get().await?;
    let rows: Vec<MoneyRow> = client
        .query_cached(
            "SELECT day, hospital_id, channel, payment_method,
                    COALESCE(sum(amount_fen) FILTER (WHERE kind = 'fee'), 0)::bigint,
                    count(*) FILTER (WHERE kind = 'fee'),
                    COALESCE(sum(amount_fen) FILTER (WHERE kind = 'refund'), 0)::bigint,
                    count(*) FILTER (WHERE kind = 'refund'),
                    COALESCE(sum(amount_fen) FILTER (WHERE kind = 'topup'), 0)::bigint,
                    count(*) FILTER (WHERE kind = 'topup')
               FROM money_entries
              WHERE day BETWEEN $1 AND $2
                AND ($3::text IS NULL OR hospital_id = $3)
                AND ($4::text IS NULL OR channel = $4)
              GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            &[&scope.from, &scope.to, &scope.hospital, &scope.channel],
        )
        .await?
        .iter()
        .map(|r| MoneyRow {
            day: r.get(0),
            hospital_id: r.get(1),
            channel: r.get(2),
            payment_method: r.get(3),
            fees_fen: r.get(4),
            fee_count: r.get(5),
            refunds_fen: r.get(6),
            refund_count: r.get(7),
            topups_fen: r.get(8),
            topup_count: r.get(9),
        })
        .collect();
    if scope.csv {
        let lines: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.day.to_string(),
                    r.hospital_id.clone(),
                    r.channel.clone(),
                    r.payment_method.clone(),
                    r.fees_fen.to_string(),
                    r.fee_count.to_string(),
                    r.refunds_fen.to_string(),
                    r.refund_count.to_string(),
                    r.topups_fen.to_string(),
                    r.topup_count.to_string(),
                ]
            })
            .collect();
        return csv_response(
            &format!("money-{}-{}", scope.from, scope.to),
            &[
                "day",
                "hospital_id",
                "channel",
                "payment_method",
                "fees_fen",
                "fee_count",
                "refunds_fen",
                "refund_count",
                "topups_fen",
                "topup_count",
            ],
            &lines,
        );
    }
    Ok(HttpResponse::Ok().json(MoneyReport {
        from: scope.from,
        to: scope.to,
        total_fees_fen: rows.iter().map(|r| r.fees_fen).sum(),
        total_refunds_fen: rows.iter().map(|r| r.refunds_fen).sum(),
        total_topups_fen: rows.iter().map(|r| r.topups_fen).sum(),
        rows,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SettlementChannel {
    pub channel: String,
    pub fees_fen: i64,
    pub refunds_fen: i64,
    pub rate_bp: i64,
    pub service_fee_fen: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SettlementRow {
    pub day: NaiveDate,
    pub hospital_id: String,
    pub fees_fen: i64,
    pub refunds_fen: i64,
    /// Channels' service fees on what they collected net of refunds.
    pub service_fee_fen: i64,
    /// What the hospital is owed: fees − refunds − service fees.
    pub payable_fen: i64,
    pub channels: Vec<SettlementChannel>,
}

/// `amount × bp / 10000`, rounded half up, in integer arithmetic.
pub fn service_fee(amount_fen: i64, rate_bp: i64) -> i64 {
    if amount_fen <= 0 {
        return 0;
    }
    (amount_fen * rate_bp + 5_000) / 10_000
}

/// Daily settlement per hospital: fees, refunds, channel service fees, payable.
#[get("/v1/reports/settlement")]
pub async fn settlement(
    req: HttpRequest,
    pool: web::Data<Pool>,
    fees: web::Data<FeeSettings>,
    operator: Operator,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, AccountingError> {
    let scope = query.0.scope(&req, &operator)?;
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT day, hospital_id, channel,
                    COALESCE(sum(amount_fen) FILTER (WHERE kind = 'fee'), 0)::bigint,
                    COALESCE(sum(amount_fen) FILTER (WHERE kind = 'refund'), 0)::bigint
               FROM money_entries
              WHERE kind IN ('fee', 'refund') AND day BETWEEN $1 AND $2
                AND ($3::text IS NULL OR hospital_id = $3)
                AND ($4::text IS NULL OR channel = $4)
              GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[&scope.from, &scope.to, &scope.hospital, &scope.channel],
        )
        .await?;
    let mut out: Vec<SettlementRow> = Vec::new();
    for r in &rows {
        let (day, hospital_id, channel): (NaiveDate, String, String) = (r.get(0), r.get(1), r.get(2));
        let (fees_fen, refunds_fen): (i64, i64) = (r.get(3), r.get(4));
        let rate_bp = fees.rate_bp(&channel);
        let line = SettlementChannel {
            service_fee_fen: service_fee(fees_fen - refunds_fen, rate_bp),
            channel,
            fees_fen,
            refunds_fen,
            rate_bp,
        };
        let row = match out.last_mut() {
            Some(last) if last.day == day && last.hospital_id == hospital_id => last,
            _ => {
                out.push(SettlementRow {
                    day,
                    hospital_id,
                    fees_fen: 0,
                    refunds_fen: 0,
                    service_fee_fen: 0,
                    payable_fen: 0,
                    channels: Vec::new(),
                });
                let n = out.len() - 1;
                &mut out[n]
            }
        };
        row.fees_fen += line.fees_fen;
        row.refunds_fen += line.refunds_fen;
        row.service_fee_fen += line.service_fee_fen;
        row.payable_fen = row.fees_fen - row.refunds_fen - row.service_fee_fen;
        row.channels.push(line);
    }
    if scope.csv {
        let lines: Vec<Vec<String>> = out
            .iter()
            .map(|r| {
                vec![
                    r.day.to_string(),
                    r.hospital_id.clone(),
                    r.fees_fen.to_string(),
                    r.refunds_fen.to_string(),
                    r.service_fee_fen.to_string(),
                    r.payable_fen.to_string(),
                ]
            })
            .collect();
        return csv_response(
            &format!("settlement-{}-{}", scope.from, scope.to),
            &[
                "day",
                "hospital_id",
                "fees_fen",
                "refunds_fen",
                "service_fee_fen",
                "payable_fen",
            ],
            &lines,
        );
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": scope.from,
        "to": scope.to,
        "rows": out,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_fees_round_half_up_in_fen() {
        assert_eq!(service_fee(10_000, 60), 60);
        assert_eq!(service_fee(5_083, 60), 30); // 30.498 fen
        assert_eq!(service_fee(250, 60), 2); // 1.5 fen rounds up
        assert_eq!(service_fee(0, 60), 0);
        assert_eq!(service_fee(-100, 60), 0);
        assert_eq!(service_fee(25, 2_000), 5);
    }
}
