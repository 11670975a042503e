//! The console's client of the gateway's operators' relay (`/ops/v1`):
//! each call carries a fresh internal token for audience `gateway-ops`
//! whose caller name is the acting operator and their hospital
//! ([`ActingOperator`]), so the gateway can check again what the operator
//! may touch. The gateway's answer (JSON or problem+json) is handed back
//! to the console as it came.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use jyt_signing::internal::{self, ActingOperator, GATEWAY_OPS};
use secrecy::ExposeSecret;

use crate::auth::{Operator, Role};
use crate::error::AccountingError;
use crate::settings::GatewayRelaySettings;

pub struct Relay {
    client: reqwest::Client,
    base: String,
    key: Vec<u8>,
    lifetime_seconds: i64,
}

impl Relay {
    /// `None` when no relay is configured.
    pub fn new(settings: &GatewayRelaySettings) -> anyhow::Result<Option<Self>> {
        if !settings.enabled() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()?;
        Ok(Some(Self {
            client,
            base: settings.url.trim_end_matches('/').to_owned(),
            key: settings.ops_key.expose_secret().as_bytes().to_vec(),
            lifetime_seconds: settings.token_lifetime_seconds,
        }))
    }

    fn token(&self, operator: &Operator) -> Result<String, AccountingError> {
        let acting = ActingOperator {
            login: operator.login.clone(),
            hospital: match &operator.role {
                Role::City => None,
                Role::Hospital(h) => Some(h.clone()),
            },
        };
        let caller = acting.caller().ok_or_else(|| {
            AccountingError::Internal(anyhow::anyhow!(
                "operator `{}` cannot be named in a token",
                operator.login
            ))
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(internal::mint(
            &self.key,
            &caller,
            GATEWAY_OPS,
            now + self.lifetime_seconds,
        ))
    }

    /// Call the relay for `operator`; the gateway's answer, as it came.
    pub async fn call(
        &self,
        operator: &Operator,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<HttpResponse, AccountingError> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(internal::HEADER, self.token(operator)?);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .map_err(|e| AccountingError::RelayUnavailable(e.to_string()))?;
        let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if status == StatusCode::UNAUTHORIZED {
            // Our token refused: a configuration fault, not the operator's.
            return Err(AccountingError::RelayUnavailable(
                "the gateway refused the console's relay token (check gateway.ops_key)".to_owned(),
            ));
        }
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| AccountingError::RelayUnavailable(e.to_string()))?;
        Ok(HttpResponse::build(status)
            .insert_header((actix_web::http::header::CONTENT_TYPE, content_type))
            .body(bytes))
    }
}
