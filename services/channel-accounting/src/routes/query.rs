//! The query every report takes: a day or a date range, optionally one
//! hospital and one channel, JSON or CSV.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use chrono::NaiveDate;
use jyt_domain::Channel;
use serde::Deserialize;

use crate::auth::Operator;
use crate::error::AccountingError;

/// The longest range one report covers.
pub const MAX_DAYS: i64 = 366;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    pub date: Option<NaiveDate>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub hospital: Option<String>,
    pub channel: Option<String>,
    pub format: Option<String>,
}

/// A checked [`ReportQuery`], narrowed to what the operator may see.
#[derive(Debug, Clone)]
pub struct Scope {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub hospital: Option<String>,
    pub channel: Option<String>,
    pub csv: bool,
}

impl ReportQuery {
    pub fn scope(self, req: &HttpRequest, operator: &Operator) -> Result<Scope, AccountingError> {
        let (from, to) = match (self.date, self.from, self.to) {
            (Some(d), None, None) => (d, d),
            (Some(_), _, _) => {
                return Err(AccountingError::invalid(
                    "date",
                    "give either `date` or `from`/`to`, not both",
                ));
            }
            (None, Some(f), t) => (f, t.unwrap_or(f)),
            (None, None, Some(_)) => return Err(AccountingError::invalid("from", "is required with `to`")),
            (None, None, None) => (jyt_domain::time::today(), jyt_domain::time::today()),
        };
        if to < from {
            return Err(AccountingError::invalid("to", "must not be before `from`"));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(AccountingError::invalid(
                "to",
                format!("a report covers at most {MAX_DAYS} days"),
            ));
        }
        if let Some(c) = &self.channel {
            c.parse::<Channel>().map_err(|_| {
                AccountingError::invalid(
                    "channel",
                    "must be one of wechat, kiosk, phone114, window, app, referral, clinic",
                )
            })?;
        }
        if let Some(h) = &self.hospital
            && (h.is_empty() || h.len() > 64)
        {
            return Err(AccountingError::invalid("hospital", "must be a hospital id"));
        }
        let csv = match self.format.as_deref() {
            Some("csv") => true,
            Some("json") => false,
            Some(_) => return Err(AccountingError::invalid("format", "must be `json` or `csv`")),
            None => wants_csv(req),
        };
        Ok(Scope {
            from,
            to,
            hospital: operator.hospital_scope(self.hospital.as_deref())?,
            channel: self.channel,
            csv,
        })
    }
}

fn wants_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

/// A CSV download: header line, then rows, CRLF as RFC 4180 says.
pub fn csv_response(
    name: &str,
    header: &[&str],
    rows: &[Vec<String>],
) -> Result<HttpResponse, AccountingError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(header).map_err(anyhow::Error::from)?;
    for row in rows {
        writer.write_record(row).map_err(anyhow::Error::from)?;
    }
    let body = writer.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}.csv\""),
        ))
        .body(body))
}

/// A count as a share of a total, in percent with two decimals (display only).
pub fn percent(part: i64, total: i64) -> f64 {
    if total <= 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / total as f64).round() / 100.0
    }
}
