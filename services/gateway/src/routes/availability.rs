//! City-wide search, answered from the availability summaries that each
//! hospital's slot-inventory keeps in Redis (read and cached per date by
//! [`crate::summaries`]), without calling any hospital.

use actix_web::{HttpResponse, get, web};
use chrono::NaiveDate;
use jyt_web::{Query, RequestError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::GatewayError;
use crate::state::{Caller, GatewayState};

pub use crate::summaries::ClinicLevel;

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
#[get("/availability")]
#[tracing::instrument(skip_all)]
pub async fn search(
    _caller: Caller,
    state: web::Data<GatewayState>,
    query: Query<AvailabilityQuery>,
) -> Result<HttpResponse, GatewayError> {
    let q = query.0;
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return Err(RequestError::invalid("page", "pages are numbered from 1").into());
    }
    let snapshot = state.summaries.for_date(q.date).await?;
    let wanted_dept = q.department.as_deref().map(str::trim).filter(|d| !d.is_empty());
    let mut results = Vec::new();
    for s in &snapshot.summaries {
        // The registry decides what a hospital is called and where it is;
        // a hospital removed from it since the snapshot is left out.
        let Ok(route) = state.upstreams.route(&s.hospital) else {
            continue;
        };
        if q.district.as_ref().is_some_and(|d| *d != route.district)
            || q.hospital_level.as_ref().is_some_and(|l| *l != route.level)
            || q.level.is_some_and(|l| l != s.clinic_level)
        {
            continue;
        }
        if let Some(w) = wanted_dept
            && s.department_id != w
            && !s.department_name.contains(w)
        {
            continue;
        }
        results.push(Availability {
            hospital_id: s.hospital.to_string(),
            hospital_name: route.name.clone(),
            district: route.district.clone(),
            hospital_level: route.level.clone(),
            department_id: s.department_id.clone(),
            department_name: s.department_name.clone(),
            clinic_level: s.clinic_level,
            remaining: s.remaining,
        });
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
