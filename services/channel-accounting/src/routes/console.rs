//! The operators' console: one page and its script, embedded in the
//! binary (no build step, nothing from a CDN), and the one JSON document it
//! polls, `GET /v1/console/overview?date=&hospital=`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{Duration, NaiveDate, NaiveTime};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Pool;
use jyt_domain::time::{at, local};
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::auth::{Operator, Role};
use crate::error::AccountingError;
use crate::reconcile;
use crate::routes::query::{ReportQuery, percent};
use crate::routes::reports::{ChannelShare, ReferenceShare, channel_rows, split};

const PAGE: &str = include_str!("../../static/console.html");
const SCRIPT: &str = include_str!("../../static/console.js");
const STYLE: &str = include_str!("../../static/console.css");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

#[get("/console")]
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

#[get("/console/console.js")]
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[get("/console/console.css")]
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub attempts: i64,
    pub bookings: i64,
    pub sold_out: i64,
    pub cancellations: i64,
    pub expiries: i64,
    pub promotions: i64,
    pub check_ins: i64,
    pub no_shows: i64,
    pub fees_fen: i64,
    pub refunds_fen: i64,
    /// No-shows among the visits that were due: no_shows / (check_ins + no_shows).
    pub no_show_rate_percent: f64,
    pub waitlist_depth: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HospitalLine {
    pub hospital_id: String,
    pub attempts: i64,
    pub bookings: i64,
    pub sold_out: i64,
    pub cancellations: i64,
    pub check_ins: i64,
    pub no_shows: i64,
    pub no_show_rate_percent: f64,
    pub waitlist_depth: i64,
    pub fees_fen: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MinutePoint {
    /// Beijing wall-clock minute, `HH:MM`.
    pub minute: String,
    pub bookings: i64,
    pub attempts: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Overview {
    pub date: NaiveDate,
    pub operator: String,
    pub role: String,
    pub hospital: Option<String>,
    pub totals: Totals,
    pub split: Vec<ChannelShare>,
    pub reference_split: Vec<ReferenceShare>,
    pub minutes: Vec<MinutePoint>,
    /// Sorted by bookings, most first.
    pub hospitals: Vec<HospitalLine>,
    /// The events carry no segment capacity, so the console shows bookings
    /// per hospital instead of a fill rate; this says so on the page.
    pub fill_rate_note: String,
    /// Statements of the day (city operators only).
    pub reconciliation: Option<Vec<reconcile::StatementReport>>,
}

#[get("/v1/console/overview")]
pub async fn overview(
    req: HttpRequest,
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, AccountingError> {
    let scope = query.0.scope(&req, &operator)?;
    if scope.from != scope.to {
        return Err(AccountingError::invalid(
            "to",
            "the console shows one day: use `date`",
        ));
    }
    let date = scope.from;
    let rows = channel_rows(&pool, &scope).await?;
    let (split, reference_split) = split(&rows);
    let mut hospitals: Vec<HospitalLine> = Vec::new();
    let mut totals = Totals::default();
    for r in &rows {
        let idx = match hospitals.iter().position(|h| h.hospital_id == r.hospital_id) {
            Some(i) => i,
            None => {
                hospitals.push(HospitalLine {
                    hospital_id: r.hospital_id.clone(),
                    ..HospitalLine::default()
                });
                hospitals.len() - 1
            }
        };
        let h = &mut hospitals[idx];
        h.attempts += r.attempts;
        h.bookings += r.bookings;
        h.sold_out += r.sold_out;
        h.cancellations += r.cancellations;
        h.check_ins += r.check_ins;
        h.no_shows += r.no_shows;
        h.fees_fen += r.fees_fen;
        totals.attempts += r.attempts;
        totals.bookings += r.bookings;
        totals.sold_out += r.sold_out;
        totals.cancellations += r.cancellations;
        totals.expiries += r.expiries;
        totals.promotions += r.promotions;
        totals.check_ins += r.check_ins;
        totals.no_shows += r.no_shows;
        totals.fees_fen += r.fees_fen;
        totals.refunds_fen += r.refunds_fen;
    }
    let client = pool.get().await?;
    // Waitlists are live figures (today's queues), not per day.
    for w in client
        .query_cached(
            "SELECT hospital_id, sum(waiting)::bigint FROM waitlist_depth
              WHERE $1::text IS NULL OR hospital_id = $1 GROUP BY 1",
            &[&scope.hospital],
        )
        .await?
    {
        let (id, waiting): (String, i64) = (w.get(0), w.get(1));
        totals.waitlist_depth += waiting;
        match hospitals.iter_mut().find(|h| h.hospital_id == id) {
            Some(h) => h.waitlist_depth = waiting,
            None => hospitals.push(HospitalLine {
                hospital_id: id,
                waitlist_depth: waiting,
                ..HospitalLine::default()
            }),
        }
    }
    for h in &mut hospitals {
        h.no_show_rate_percent = percent(h.no_shows, h.no_shows + h.check_ins);
    }
    totals.no_show_rate_percent = percent(totals.no_shows, totals.no_shows + totals.check_ins);
    hospitals.sort_by(|a, b| {
        b.bookings
            .cmp(&a.bookings)
            .then(a.hospital_id.cmp(&b.hospital_id))
    });

    let start = at(date, NaiveTime::MIN);
    let minutes = client
        .query_cached(
            "SELECT minute, sum(bookings)::bigint, sum(attempts)::bigint FROM traffic_minute
              WHERE minute >= $1 AND minute < $2 AND ($3::text IS NULL OR hospital_id = $3)
                AND ($4::text IS NULL OR channel = $4)
              GROUP BY 1 ORDER BY 1",
            &[
                &start,
                &(start + Duration::days(1)),
                &scope.hospital,
                &scope.channel,
            ],
        )
        .await?
        .iter()
        .map(|r| MinutePoint {
            minute: local(r.get(0)).format("%H:%M").to_string(),
            bookings: r.get(1),
            attempts: r.get(2),
        })
        .collect();
    let reconciliation = match operator.role {
        Role::City => Some(reconcile::statements(&pool, date, scope.channel.as_deref()).await?),
        Role::Hospital(_) => None,
    };
    Ok(HttpResponse::Ok().json(Overview {
        date,
        operator: operator.login.clone(),
        role: operator.role_name().to_owned(),
        hospital: scope.hospital,
        totals,
        split,
        reference_split,
        minutes,
        hospitals,
        fill_rate_note:
            "Booking events carry no segment capacity, so this shows bookings per hospital, not a fill rate."
                .to_owned(),
        reconciliation,
    }))
}
