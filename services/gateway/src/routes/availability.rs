//! City-wide search, answered from the availability summaries that each
//! hospital's slot-inventory keeps in Redis, without calling any hospital:
//!
//! - `<prefix>:{h:<hospital>}:avail:<YYYY-MM-DD>`: hash
//!   `<department_external_id>|<clinic_level>` → remaining seats;
//! - `<prefix>:{h:<hospital>}:departments`: hash department id → name.
//!
//! Two reads per hospital in the registry, all in one pipeline.

use actix_web::{HttpResponse, get, web};
use chrono::NaiveDate;
use jyt_cache::redis;
use jyt_web::{Query, RequestError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

use crate::error::GatewayError;
use crate::state::GatewayState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClinicLevel {
    General,
    Expert,
    Special,
    Ct,
    Mri,
}

impl ClinicLevel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "general" => Self::General,
            "expert" => Self::Expert,
            "special" => Self::Special,
            "ct" => Self::Ct,
            "mri" => Self::Mri,
            _ => return None,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityQuery {
    /// Visit date, `YYYY-MM-DD`, Asia/Shanghai.
    pub date: NaiveDate,
    /// A department's id at the hospital, or part of its name (e.g. `心内`).
    #[serde(default)]
    pub department: Option<String>,
    /// Clinic level: general, expert, special, ct or mri.
    #[serde(default)]
    #[param(value_type = Option<ClinicLevel>)]
    pub level: Option<ClinicLevel>,
    #[serde(default)]
    pub district: Option<String>,
    /// Hospital level: tertiary, secondary or community.
    #[serde(default)]
    pub hospital_level: Option<String>,
    /// From 1.
    #[serde(default)]
    pub page: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Availability {
    pub hospital_id: String,
    pub hospital_name: String,
    pub district: String,
    pub hospital_level: String,
    pub department_id: String,
    pub department_name: String,
    pub clinic_level: ClinicLevel,
    pub remaining: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AvailabilityPage {
    pub date: NaiveDate,
    pub page: u32,
    pub page_size: usize,
    /// Matches over all pages.
    pub total: usize,
    /// With seats first, then by hospital, department and clinic level.
    pub results: Vec<Availability>,
}

#[utoipa::path(
    get, path = "/v1/availability", tag = "search",
    params(AvailabilityQuery),
    responses(
        (status = 200, description = "Remaining seats per hospital, department and clinic level", body = AvailabilityPage),
        (status = 400, description = "INVALID_FIELD", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "CACHE_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/v1/availability")]
#[tracing::instrument(skip_all)]
pub async fn search(
    state: web::Data<GatewayState>,
    query: Query<AvailabilityQuery>,
) -> Result<HttpResponse, GatewayError> {
    let q = query.0;
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return Err(RequestError::invalid("page", "pages are numbered from 1").into());
    }
    let mut hospitals: Vec<_> = state
        .upstreams
        .hospitals()
        .filter(|(_, r)| q.district.as_ref().is_none_or(|d| *d == r.district))
        .filter(|(_, r)| q.hospital_level.as_ref().is_none_or(|l| *l == r.level))
        .collect();
    hospitals.sort_by(|a, b| a.0.cmp(b.0));

    let mut pipe = redis::pipe();
    for (id, _) in &hospitals {
        let tag = format!("h:{id}");
        pipe.cmd("HGETALL")
            .arg(state.keys.tagged(&tag, &format!("avail:{}", q.date)));
        pipe.cmd("HGETALL").arg(state.keys.tagged(&tag, "departments"));
    }
    let mut conn = state.redis.clone();
    let replies: Vec<HashMap<String, String>> = if hospitals.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };

    let wanted_dept = q.department.as_deref().map(str::trim).filter(|d| !d.is_empty());
    let mut results = Vec::new();
    for ((id, route), pair) in hospitals.iter().zip(replies.chunks(2)) {
        let [avail, departments] = pair else { continue };
        for (field, remaining) in avail {
            // Fields not in the contract's shape are skipped, not fatal: a
            // newer writer may add kinds this reader does not know yet.
            let Some((dept, level)) = field.split_once('|') else {
                continue;
            };
            let Some(level) = ClinicLevel::parse(level) else {
                continue;
            };
            let Ok(remaining) = remaining.parse::<i64>() else {
                continue;
            };
            if q.level.is_some_and(|l| l != level) {
                continue;
            }
            let name = departments.get(dept).cloned().unwrap_or_else(|| dept.to_owned());
            if let Some(w) = wanted_dept
                && dept != w
                && !name.contains(w)
            {
                continue;
            }
            results.push(Availability {
                hospital_id: id.to_string(),
                hospital_name: route.name.clone(),
                district: route.district.clone(),
                hospital_level: route.level.clone(),
                department_id: dept.to_owned(),
                department_name: name,
                clinic_level: level,
                remaining: remaining.max(0),
            });
        }
    }
    results.sort_by(|a, b| {
        (
            a.remaining == 0,
            &a.hospital_id,
            &a.department_id,
            a.clinic_level as u8,
        )
            .cmp(&(
                b.remaining == 0,
                &b.hospital_id,
                &b.department_id,
                b.clinic_level as u8,
            ))
    });
    let page_size = state.settings.search.page_size;
    let total = results.len();
    let start = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(page_size);
    let results: Vec<_> = results.into_iter().skip(start).take(page_size).collect();
    Ok(HttpResponse::Ok().json(AvailabilityPage {
        date: q.date,
        page,
        page_size,
        total,
        results,
    }))
}
