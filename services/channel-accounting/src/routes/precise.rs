//! `GET /v1/console/precise?date=|from=&to=&hospital=&channel=&format=`:
//! 精准预约 per hospital and doctor over the submissions of the dates
//! (Asia/Shanghai): how many were submitted, matched (by the expert's rule
//! or by the hospital), rejected, and seated (加号 added), and the time
//! from submission to seat (median and 90th percentile, seconds). A
//! hospital operator sees only their hospital. JSON or CSV.

use actix_web::{HttpRequest, HttpResponse, get, web};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Pool;
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::auth::Operator;
use crate::error::AccountingError;
use crate::routes::query::{ReportQuery, csv_response};

#[derive(Debug, Serialize, Deserialize)]
pub struct PreciseRow {
    pub hospital_id: String,
    pub doctor_id: String,
    pub submitted: i64,
    pub matched: i64,
    pub auto_matched: i64,
    pub rejected: i64,
    /// Submissions given their 加号 seat.
    pub seated: i64,
    pub median_seconds_to_seat: Option<f64>,
    pub p90_seconds_to_seat: Option<f64>,
}

const COLUMNS: [&str; 9] = [
    "hospital_id",
    "doctor_id",
    "submitted",
    "matched",
    "auto_matched",
    "rejected",
    "seated",
    "median_seconds_to_seat",
    "p90_seconds_to_seat",
];

impl PreciseRow {
    fn csv(&self) -> Vec<String> {
        let secs = |s: Option<f64>| s.map_or_else(String::new, |v| format!("{v:.3}"));
        vec![
            self.hospital_id.clone(),
            self.doctor_id.clone(),
            self.submitted.to_string(),
            self.matched.to_string(),
            self.auto_matched.to_string(),
            self.rejected.to_string(),
            self.seated.to_string(),
            secs(self.median_seconds_to_seat),
            secs(self.p90_seconds_to_seat),
        ]
    }
}

#[get("/v1/console/precise")]
pub async fn figures(
    req: HttpRequest,
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, AccountingError> {
    let scope = query.0.scope(&req, &operator)?;
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT hospital_id, doctor_id, count(*),
                    count(*) FILTER (WHERE decision = 'matched'),
                    count(*) FILTER (WHERE decision = 'matched' AND auto_matched),
                    count(*) FILTER (WHERE decision = 'rejected'),
                    count(*) FILTER (WHERE seated_at IS NOT NULL),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM seated_at - submitted_at))
                        FILTER (WHERE seated_at IS NOT NULL),
                    percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM seated_at - submitted_at))
                        FILTER (WHERE seated_at IS NOT NULL)
               FROM precise_submissions
              WHERE submitted_at IS NOT NULL
                AND (submitted_at AT TIME ZONE 'Asia/Shanghai')::date BETWEEN $1 AND $2
                AND ($3::text IS NULL OR hospital_id = $3)
                AND ($4::text IS NULL OR channel = $4)
              GROUP BY hospital_id, doctor_id
              ORDER BY hospital_id, doctor_id",
            &[&scope.from, &scope.to, &scope.hospital, &scope.channel],
        )
        .await?;
    let rows: Vec<PreciseRow> = rows
        .iter()
        .map(|r| PreciseRow {
            hospital_id: r.get(0),
            doctor_id: r.get(1),
            submitted: r.get(2),
            matched: r.get(3),
            auto_matched: r.get(4),
            rejected: r.get(5),
            seated: r.get(6),
            median_seconds_to_seat: r.get(7),
            p90_seconds_to_seat: r.get(8),
        })
        .collect();
    if scope.csv {
        let lines: Vec<Vec<String>> = rows.iter().map(PreciseRow::csv).collect();
        return csv_response(&format!("precise-{}-{}", scope.from, scope.to), &COLUMNS, &lines);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": scope.from,
        "to": scope.to,
        "hospital": scope.hospital,
        "rows": rows,
    })))
}
