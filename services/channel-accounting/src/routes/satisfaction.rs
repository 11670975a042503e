//! `GET /v1/console/satisfaction`: the 满意度 page's figures, JSON or CSV.
//!
//! Per hospital, department or doctor (`group=`), or per week
//! (`group=week`, the trend): surveys sent (visits completed through a
//! channel app), answered, the response rate, the mean of each score and
//! the share who would recommend. Filters as every report: `from`/`to`
//! (Asia/Shanghai days of the visit's completion; default the last 30
//! days), `hospital`, `channel`; a hospital operator sees their own
//! hospital only. Counts and means only: no patient, booking or comment
//! ever appears here.
//!
//! A member hospital reads its own figures through the gateway's federation
//! API; the gateway calls [`hospital_figures`] on the survey door, which
//! answers as that hospital's operator would be answered.

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{Duration, NaiveDate};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Pool;
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::auth::{Operator, Role};
use crate::error::AccountingError;
use crate::routes::audit::inert;
use crate::routes::query::{ReportQuery, Scope, csv_response, percent};

/// How many days the page covers when no range is asked for.
const DEFAULT_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SatisfactionQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub hospital: Option<String>,
    pub channel: Option<String>,
    pub group: Option<String>,
    pub format: Option<String>,
}

/// What the rows are per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Hospital,
    Department,
    Doctor,
    Week,
}

impl Group {
    fn parse(raw: Option<&str>) -> Result<Self, AccountingError> {
        match raw {
            None | Some("hospital") => Ok(Group::Hospital),
            Some("department") => Ok(Group::Department),
            Some("doctor") => Ok(Group::Doctor),
            Some("week") => Ok(Group::Week),
            Some(_) => Err(AccountingError::invalid(
                "group",
                "must be one of hospital, department, doctor, week",
            )),
        }
    }

    /// The selected key columns, in [`Row`]'s order (week, hospital,
    /// department id and name, doctor id and name), and the GROUP BY.
    /// Names of one id are taken from its latest survey.
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            Group::Hospital => (
                "NULL::date, s.hospital_id, NULL, NULL, NULL, NULL",
                "s.hospital_id",
            ),
            Group::Department => (
                "NULL::date, s.hospital_id, s.department_id,
                 (array_agg(s.department ORDER BY s.completed_at DESC))[1], NULL, NULL",
                "s.hospital_id, s.department_id",
            ),
            Group::Doctor => (
                "NULL::date, s.hospital_id, s.department_id,
                 (array_agg(s.department ORDER BY s.completed_at DESC))[1], s.doctor_id,
                 (array_agg(s.doctor ORDER BY s.completed_at DESC))[1]",
                "s.hospital_id, s.department_id, s.doctor_id",
            ),
            Group::Week => (
                "date_trunc('week', s.completed_day)::date, NULL, NULL, NULL, NULL, NULL",
                "1",
            ),
        }
    }
}

/// One line of figures. Sums are given beside the means so a reader (and
/// a test) can check them to the unit; means and rates are rounded to two
/// decimals for display.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The Monday of the week (`group=week`).
    pub week: Option<NaiveDate>,
    pub hospital_id: Option<String>,
    pub department_id: Option<String>,
    pub department: Option<String>,
    pub doctor_id: Option<String>,
    pub doctor: Option<String>,
    pub sent: i64,
    pub answered: i64,
    /// Closed without an answer.
    pub expired: i64,
    pub response_rate_percent: f64,
    pub overall_sum: i64,
    pub wait_time_sum: i64,
    pub explanation_sum: i64,
    pub would_recommend: i64,
    pub mean_overall: Option<f64>,
    pub mean_wait_time: Option<f64>,
    pub mean_explanation: Option<f64>,
    pub recommend_percent: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SatisfactionPage {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub hospital: Option<String>,
    pub group: Group,
    pub questions_version: i32,
    pub totals: Row,
    pub rows: Vec<Row>,
    /// Per week, oldest first, for the same filters.
    pub trend: Vec<Row>,
}

fn mean(sum: i64, n: i64) -> Option<f64> {
    (n > 0).then(|| (sum as f64 * 100.0 / n as f64).round() / 100.0)
}

impl Row {
    fn with_rates(mut self) -> Self {
        self.response_rate_percent = percent(self.answered, self.sent);
        self.mean_overall = mean(self.overall_sum, self.answered);
        self.mean_wait_time = mean(self.wait_time_sum, self.answered);
        self.mean_explanation = mean(self.explanation_sum, self.answered);
        self.recommend_percent = (self.answered > 0).then(|| percent(self.would_recommend, self.answered));
        self
    }
}

/// The figures of `scope`, one row per `group` (busiest first; weeks oldest
/// first).
async fn rows(pool: &Pool, scope: &Scope, group: Group) -> Result<Vec<Row>, AccountingError> {
    let client = pool.get().await?;
    let (keys, group_by) = group.sql();
    let order = if group == Group::Week {
        "1"
    } else {
        "7 DESC, 2, 3, 5"
    };
    // `keys`, `group_by` and `order` come from the fixed lists above.
    let sql = format!(
        "SELECT {keys},
                count(*), count(a.survey_id),
                count(*) FILTER (WHERE a.survey_id IS NULL AND s.expires_at <= now()),
                COALESCE(sum(a.overall), 0)::bigint, COALESCE(sum(a.wait_time), 0)::bigint,
                COALESCE(sum(a.explanation), 0)::bigint, count(*) FILTER (WHERE a.would_recommend)
           FROM surveys s LEFT JOIN survey_answers a ON a.survey_id = s.survey_id
          WHERE s.completed_day BETWEEN $1 AND $2
            AND ($3::text IS NULL OR s.hospital_id = $3)
            AND ($4::text IS NULL OR s.channel = $4)
          GROUP BY {group_by}
          ORDER BY {order}"
    );
    let found = client
        .query_cached(&sql, &[&scope.from, &scope.to, &scope.hospital, &scope.channel])
        .await?;
    Ok(found
        .iter()
        .map(|r| {
            Row {
                week: r.get(0),
                hospital_id: r.get(1),
                department_id: r.get(2),
                department: r.get(3),
                doctor_id: r.get(4),
                doctor: r.get(5),
                sent: r.get(6),
                answered: r.get(7),
                expired: r.get(8),
                overall_sum: r.get(9),
                wait_time_sum: r.get(10),
                explanation_sum: r.get(11),
                would_recommend: r.get(12),
                ..Row::default()
            }
            .with_rates()
        })
        .collect())
}

fn totals(rows: &[Row]) -> Row {
    rows.iter()
        .fold(Row::default(), |t, r| Row {
            sent: t.sent + r.sent,
            answered: t.answered + r.answered,
            expired: t.expired + r.expired,
            overall_sum: t.overall_sum + r.overall_sum,
            wait_time_sum: t.wait_time_sum + r.wait_time_sum,
            explanation_sum: t.explanation_sum + r.explanation_sum,
            would_recommend: t.would_recommend + r.would_recommend,
            ..Row::default()
        })
        .with_rates()
}

const CSV_HEADER: [&str; 17] = [
    "week",
    "hospital_id",
    "department_id",
    "department",
    "doctor_id",
    "doctor",
    "sent",
    "answered",
    "expired",
    "response_rate_percent",
    "mean_overall",
    "mean_wait_time",
    "mean_explanation",
    "recommend_percent",
    "overall_sum",
    "wait_time_sum",
    "explanation_sum",
];

fn csv_line(r: &Row) -> Vec<String> {
    let text = |v: &Option<String>| inert(v.as_deref().unwrap_or(""));
    let number = |v: Option<f64>| v.map(|m| format!("{m:.2}")).unwrap_or_default();
    vec![
        r.week.map(|w| w.to_string()).unwrap_or_default(),
        text(&r.hospital_id),
        text(&r.department_id),
        text(&r.department),
        text(&r.doctor_id),
        text(&r.doctor),
        r.sent.to_string(),
        r.answered.to_string(),
        r.expired.to_string(),
        format!("{:.2}", r.response_rate_percent),
        number(r.mean_overall),
        number(r.mean_wait_time),
        number(r.mean_explanation),
        number(r.recommend_percent),
        r.overall_sum.to_string(),
        r.wait_time_sum.to_string(),
        r.explanation_sum.to_string(),
    ]
}

#[get("/v1/console/satisfaction")]
pub async fn satisfaction(
    req: HttpRequest,
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<SatisfactionQuery>,
) -> Result<HttpResponse, AccountingError> {
    figures(&req, &pool, &operator, query.0).await
}

/// `GET /internal/v1/hospitals/{hospital}/satisfaction` (the survey door,
/// for the gateway's federation API): one hospital's figures, with the
/// same query, seen as that hospital's operator sees them.
#[get("/hospitals/{hospital}/satisfaction")]
pub async fn hospital_figures(
    req: HttpRequest,
    pool: web::Data<Pool>,
    path: web::Path<String>,
    query: Query<SatisfactionQuery>,
) -> Result<HttpResponse, AccountingError> {
    let hospital: jyt_domain::HospitalId = path
        .parse()
        .map_err(|e: jyt_domain::ParseError| AccountingError::invalid("hospital_id", e.to_string()))?;
    let member = Operator {
        login: format!("federation:{hospital}"),
        role: Role::Hospital(hospital.to_string()),
    };
    figures(&req, &pool, &member, query.0).await
}

async fn figures(
    req: &HttpRequest,
    pool: &Pool,
    operator: &Operator,
    q: SatisfactionQuery,
) -> Result<HttpResponse, AccountingError> {
    let group = Group::parse(q.group.as_deref())?;
    // No dates: the last DEFAULT_DAYS days up to today (a lone `from` would
    // read as that one day).
    let (from, to) = match (q.from, q.to) {
        (None, None) => {
            let today = jyt_domain::time::today();
            (Some(today - Duration::days(DEFAULT_DAYS - 1)), Some(today))
        }
        dates => dates,
    };
    let scope = ReportQuery {
        date: None,
        from,
        to,
        hospital: q.hospital,
        channel: q.channel,
        format: q.format,
    }
    .scope(req, operator)?;
    let lines = rows(pool, &scope, group).await?;
    if scope.csv {
        let body: Vec<Vec<String>> = lines.iter().map(csv_line).collect();
        let name = format!("satisfaction-{group:?}-{}-{}", scope.from, scope.to).to_lowercase();
        return csv_response(&name, &CSV_HEADER, &body);
    }
    let trend = if group == Group::Week {
        lines.clone()
    } else {
        rows(pool, &scope, Group::Week).await?
    };
    Ok(HttpResponse::Ok().json(SatisfactionPage {
        from: scope.from,
        to: scope.to,
        hospital: scope.hospital,
        group,
        questions_version: jyt_domain::survey::QUESTIONS_VERSION,
        totals: totals(&lines),
        rows: lines,
        trend,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_and_rates_come_from_the_sums() {
        let r = Row {
            sent: 3,
            answered: 2,
            overall_sum: 9,
            wait_time_sum: 5,
            explanation_sum: 7,
            would_recommend: 1,
            ..Row::default()
        }
        .with_rates();
        assert_eq!(r.response_rate_percent, 66.67);
        assert_eq!(r.mean_overall, Some(4.5));
        assert_eq!(r.mean_wait_time, Some(2.5));
        assert_eq!(r.recommend_percent, Some(50.0));
        let none = Row {
            sent: 4,
            ..Row::default()
        }
        .with_rates();
        assert_eq!((none.response_rate_percent, none.mean_overall), (0.0, None));
    }

    #[test]
    fn a_department_named_like_a_formula_is_made_inert_in_csv() {
        let r = Row {
            hospital_id: Some("pumch".into()),
            department: Some("=HYPERLINK(\"x\")".into()),
            ..Row::default()
        };
        assert_eq!(csv_line(&r)[3], "'=HYPERLINK(\"x\")");
    }
}
