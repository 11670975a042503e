use actix_web::{HttpResponse, get, web};
use chrono::NaiveDate;
use jyt_domain::HospitalId;
use jyt_web::{Query, RequestError};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::GatewayError;
use crate::state::{Caller, GatewayState};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HospitalView {
    #[schema(value_type = String)]
    pub hospital_id: HospitalId,
    pub name: String,
    pub district: String,
    pub level: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HospitalList {
    pub hospitals: Vec<HospitalView>,
}

/// Member hospitals.
#[utoipa::path(
    get, path = "/v1/hospitals", tag = "hospitals",
    responses(
        (status = 200, description = "Every member hospital", body = HospitalList),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "CACHE_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/hospitals")]
pub async fn list(_caller: Caller, state: web::Data<GatewayState>) -> HttpResponse {
    let mut hospitals: Vec<HospitalView> = state
        .upstreams
        .hospitals()
        .map(|(id, r)| HospitalView {
            hospital_id: id.clone(),
            name: r.name.clone(),
            district: r.district.clone(),
            level: r.level.clone(),
        })
        .collect();
    hospitals.sort_by(|a, b| a.hospital_id.cmp(&b.hospital_id));
    HttpResponse::Ok().json(HospitalList { hospitals })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DateQuery {
    /// Visit date, `YYYY-MM-DD`, Asia/Shanghai.
    pub date: NaiveDate,
}

/// One hospital's schedules of a date, with remaining seats per slot.
#[utoipa::path(
    get, path = "/v1/hospitals/{hospital_id}/schedules", tag = "hospitals",
    params(("hospital_id" = String, Path), DateQuery),
    responses(
        (status = 200, description = "The hospital's schedules of the day", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, CACHE_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/hospitals/{hospital_id}/schedules")]
pub async fn schedules(
    _caller: Caller,
    state: web::Data<GatewayState>,
    path: web::Path<String>,
    query: Query<DateQuery>,
) -> Result<HttpResponse, GatewayError> {
    let hospital: HospitalId = path
        .into_inner()
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("hospital_id", e.to_string()))?;
    state
        .upstreams
        .call(
            &hospital,
            reqwest::Method::GET,
            &format!("/v1/schedules?date={}", query.0.date),
            HeaderMap::new(),
            None,
        )
        .await
}
