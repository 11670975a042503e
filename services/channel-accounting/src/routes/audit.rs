//! `GET /v1/console/audit`: the audit trail a regulator queries, JSON or
//! CSV (`format=csv` or `Accept: text/csv`). Filters: a date range
//! (Asia/Shanghai days), hospital, kind, actor, and `slot` for one slot's
//! provenance: its capacity changes, its schedule's stop and its
//! hospital's policy changes, oldest first.

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use jyt_db::Prepared;
use jyt_db::deadpool_postgres::Pool;
use jyt_domain::SlotRef;
use jyt_domain::time::{at, local};
use jyt_web::Query;
use serde::{Deserialize, Serialize};

use crate::audit::KINDS;
use crate::auth::Operator;
use crate::error::AccountingError;
use crate::routes::query::{MAX_DAYS, csv_response};

/// Rows one JSON answer carries at most; the CSV export carries up to
/// [`MAX_CSV_ROWS`].
pub const MAX_LIMIT: i64 = 1_000;
pub const MAX_CSV_ROWS: i64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub hospital: Option<String>,
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub slot: Option<String>,
    pub limit: Option<i64>,
    pub format: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    pub event_id: uuid::Uuid,
    pub occurred_at: DateTime<Utc>,
    pub hospital_id: String,
    pub kind: String,
    pub actor: String,
    pub schedule_id: Option<String>,
    pub slot_id: Option<String>,
    pub person_id: Option<String>,
    pub summary: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditPage {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub hospital: Option<String>,
    pub slot: Option<String>,
    pub entries: Vec<AuditEntry>,
    /// More rows matched than `limit`: narrow the query or export CSV.
    pub truncated: bool,
}

/// The checked query.
struct Filter {
    from: NaiveDate,
    to: NaiveDate,
    hospital: Option<String>,
    kind: Option<String>,
    actor: Option<String>,
    slot: Option<String>,
    slot_hospital: Option<String>,
    limit: i64,
    csv: bool,
}

fn check(q: AuditQuery, req: &HttpRequest, operator: &Operator) -> Result<Filter, AccountingError> {
    let today = jyt_domain::time::today();
    let to = q.to.unwrap_or(today);
    let from = q.from.unwrap_or(to - Duration::days(30));
    if to < from {
        return Err(AccountingError::invalid("to", "must not be before `from`"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(AccountingError::invalid(
            "to",
            format!("a query covers at most {MAX_DAYS} days"),
        ));
    }
    if let Some(k) = &q.kind
        && !KINDS.contains(&k.as_str())
    {
        return Err(AccountingError::invalid(
            "kind",
            "must be one of capacity, stop, policy, waiver, appeal",
        ));
    }
    if let Some(a) = &q.actor
        && (a.trim().is_empty() || a.len() > 128)
    {
        return Err(AccountingError::invalid("actor", "must be 1 to 128 characters"));
    }
    if let Some(h) = &q.hospital
        && (h.is_empty() || h.len() > 64)
    {
        return Err(AccountingError::invalid("hospital", "must be a hospital id"));
    }
    // A slot names its hospital: a hospital operator asking for another
    // hospital's slot is refused like asking for that hospital.
    let slot = match &q.slot {
        Some(raw) => {
            let slot: SlotRef = raw
                .trim()
                .parse()
                .map_err(|_| AccountingError::invalid("slot", "must be a slot id `<hospital>-<uuid>`"))?;
            operator.hospital_scope(Some(&slot.hospital.to_string()))?;
            Some(slot)
        }
        None => None,
    };
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return Err(AccountingError::invalid("format", "must be `json` or `csv`")),
        None => req
            .headers()
            .get(actix_web::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv")),
    };
    let limit = match q.limit {
        None => 200,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(AccountingError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
    };
    Ok(Filter {
        from,
        to,
        hospital: operator.hospital_scope(q.hospital.as_deref())?,
        kind: q.kind,
        actor: q.actor.map(|a| a.trim().to_owned()),
        slot_hospital: slot.as_ref().map(|s| s.hospital.to_string()),
        slot: slot.map(|s| s.to_string()),
        limit: if csv { MAX_CSV_ROWS } else { limit },
        csv,
    })
}

/// The rows a filter selects, oldest first, at most `limit + 1` (to tell
/// whether there were more).
async fn entries(pool: &Pool, f: &Filter) -> Result<Vec<AuditEntry>, AccountingError> {
    let client = pool.get().await?;
    let start = at(f.from, NaiveTime::MIN);
    let end = at(f.to, NaiveTime::MIN) + Duration::days(1);
    let rows = client
        .query_cached(
            "SELECT a.event_id, a.occurred_at, a.hospital_id, a.kind, a.actor, a.schedule_id, a.slot_id,
                    a.person_id, a.summary, a.detail
               FROM audit_trail a
              WHERE a.occurred_at >= $1 AND a.occurred_at < $2
                AND ($3::text IS NULL OR a.hospital_id = $3)
                AND ($4::text IS NULL OR a.kind = $4)
                AND ($5::text IS NULL OR a.actor = $5)
                AND ($6::text IS NULL
                     OR a.slot_id = $6
                     OR (a.kind = 'stop' AND a.schedule_id =
                           (SELECT s.schedule_id FROM audit_slots s WHERE s.slot_id = $6))
                     OR (a.kind = 'policy' AND a.hospital_id = $8))
              ORDER BY a.occurred_at, a.event_id
              LIMIT $7",
            &[
                &start,
                &end,
                &f.hospital,
                &f.kind,
                &f.actor,
                &f.slot,
                &(f.limit + 1),
                &f.slot_hospital,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            event_id: r.get(0),
            occurred_at: r.get(1),
            hospital_id: r.get(2),
            kind: r.get(3),
            actor: r.get(4),
            schedule_id: r.get(5),
            slot_id: r.get(6),
            person_id: r.get(7),
            summary: r.get(8),
            detail: r.get(9),
        })
        .collect())
}

/// A cell as a spreadsheet will not run it: text starting with `=`, `+`,
/// `-`, `@` or a tab is a formula to Excel, so it gets a leading `'`
/// (OWASP's CSV injection advice). Actors and reasons are typed by people.
pub fn inert(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

#[get("/v1/console/audit")]
pub async fn trail(
    req: HttpRequest,
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<AuditQuery>,
) -> Result<HttpResponse, AccountingError> {
    let f = check(query.0, &req, &operator)?;
    let mut rows = entries(&pool, &f).await?;
    let truncated = i64::try_from(rows.len()).unwrap_or(i64::MAX) > f.limit;
    rows.truncate(usize::try_from(f.limit).unwrap_or(usize::MAX));
    if f.csv {
        if truncated {
            return Err(AccountingError::invalid(
                "from",
                format!("more than {MAX_CSV_ROWS} rows: export a shorter range"),
            ));
        }
        let lines: Vec<Vec<String>> = rows
            .iter()
            .map(|e| {
                vec![
                    e.occurred_at.to_rfc3339(),
                    local(e.occurred_at).format("%Y-%m-%d %H:%M:%S").to_string(),
                    inert(&e.hospital_id),
                    e.kind.clone(),
                    inert(&e.actor),
                    inert(e.slot_id.as_deref().unwrap_or("")),
                    inert(e.schedule_id.as_deref().unwrap_or("")),
                    inert(e.person_id.as_deref().unwrap_or("")),
                    inert(&e.summary),
                    e.event_id.to_string(),
                ]
            })
            .collect();
        return csv_response(
            &format!("audit-{}-{}", f.from, f.to),
            &[
                "occurred_at_utc",
                "occurred_at_beijing",
                "hospital_id",
                "kind",
                "actor",
                "slot_id",
                "schedule_id",
                "person_id",
                "summary",
                "event_id",
            ],
            &lines,
        );
    }
    Ok(HttpResponse::Ok().json(AuditPage {
        from: f.from,
        to: f.to,
        hospital: f.hospital,
        slot: f.slot,
        entries: rows,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn formulas_are_made_inert() {
        assert_eq!(inert("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("+1"), "'+1");
        assert_eq!(inert("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(inert("gateway/operator:ops"), "gateway/operator:ops");
    }
}
