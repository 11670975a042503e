//! `GET /v1/console/family-doctor?hospital=`: family doctor care per
//! community health centre (see `crate::family_doctor`). A hospital
//! operator sees their own hospital only: as a centre, its teams and the
//! referrals it issued; as a target, the referrals it received.

use actix_web::{HttpResponse, get, web};
use chrono::Utc;
use jyt_db::deadpool_postgres::Pool;
use jyt_web::Query;
use serde::Deserialize;

use crate::auth::Operator;
use crate::error::AccountingError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyDoctorQuery {
    pub hospital: Option<String>,
}

#[get("/v1/console/family-doctor")]
pub async fn view(
    pool: web::Data<Pool>,
    operator: Operator,
    query: Query<FamilyDoctorQuery>,
) -> Result<HttpResponse, AccountingError> {
    if let Some(h) = &query.0.hospital
        && (h.is_empty() || h.len() > 64)
    {
        return Err(AccountingError::invalid("hospital", "must be a hospital id"));
    }
    let hospital = operator.hospital_scope(query.0.hospital.as_deref())?;
    let client = pool.get().await?;
    let view = crate::family_doctor::view(&client, hospital.as_deref(), Utc::now()).await?;
    Ok(HttpResponse::Ok().json(view))
}
