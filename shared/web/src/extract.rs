//! Extractors whose errors say which field is wrong. actix's own `Json` and
//! `Query` answer in plain text and often without the field's name; a
//! kiosk developer reading our 400 should not have to guess.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures::StreamExt;
use futures::future::{LocalBoxFuture, Ready, ready};
use jyt_domain::IdempotencyKey;
use serde::de::DeserializeOwned;

use crate::problem::RequestError;

/// The largest body a service accepts; set from `http.max_body_bytes` as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body, refused with a field-naming [`RequestError`].
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = RequestError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<BodyLimit>().map_or(64 * 1024, |l| l.0);
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let essence = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            })
            .unwrap_or(false);
        let declared_len = declared_length(req.headers());
        let payload = payload.take();
        Box::pin(async move {
            if !is_json {
                return Err(RequestError::UnsupportedMediaType);
            }
            let body = read_limited(payload, declared_len, limit).await?;
            parse_json(&body).map(Json)
        })
    }
}

/// The declared `Content-Length`, if it is a number.
pub fn declared_length(headers: &header::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// A request body of at most `limit` bytes, read once for every service:
/// refused with `413 BODY_TOO_LARGE` as soon as the declared length or the
/// bytes received pass the limit, so an oversized body is never buffered
/// whole; a broken payload is `400` naming `body`.
pub async fn read_limited<S, E>(
    mut payload: S,
    declared: Option<usize>,
    limit: usize,
) -> Result<web::Bytes, RequestError>
where
    S: futures::Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit) {
        return Err(RequestError::BodyTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| RequestError::invalid("body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(RequestError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parse JSON, naming the field at fault (`slot_id`, `segments[2].capacity`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            RequestError::MalformedJson {
                detail: inner.to_string(),
            }
        } else {
            field_error(&path, &inner.to_string())
        }
    })?;
    de.end().map_err(|e| RequestError::MalformedJson {
        detail: e.to_string(),
    })?;
    Ok(value)
}

/// serde reports a missing or unknown field at the parent's path with the
/// name in backticks; put the name into the path so clients see the field.
fn field_error(path: &str, message: &str) -> RequestError {
    // Drop serde_json's " at line 1 column 42" suffix: positions mean
    // nothing to a client that built the body from an object.
    let message = message.split(" at line ").next().unwrap_or(message);
    // serde quotes the offending value in backticks ("invalid type: integer
    // `110105...`"); a value may be personal data, so answers and logs name
    // its kind only.
    let message = if message.starts_with("invalid type: ") || message.starts_with("invalid value: ") {
        redact_backticked(message)
    } else {
        message.to_owned()
    };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let path = path.trim_start_matches('.');
    let field = match named {
        // serde_path_to_error already put an unknown field's name in the path.
        Some(name) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
        Some(name) if path.is_empty() => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None => path.to_owned(),
    };
    let field = if field.is_empty() {
        "body".to_owned()
    } else {
        field
    };
    RequestError::InvalidField {
        field,
        reason: message,
    }
}

fn redact_backticked(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '`' {
            inside = !inside;
            if !inside {
                out.push_str("(redacted)");
            }
        } else if !inside {
            out.push(c);
        }
    }
    out.replace("  ", " ")
}

/// Query parameters, refused with a field-naming [`RequestError`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = RequestError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(req.query_string().as_bytes()));
        ready(
            serde_path_to_error::deserialize(de)
                .map(Query)
                .map_err(|err| field_error(&err.path().to_string(), &err.into_inner().to_string())),
        )
    }
}

/// The required `Idempotency-Key` header of every write.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub IdempotencyKey);

pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

impl FromRequest for IdempotencyKeyHeader {
    type Error = RequestError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.headers().get(IDEMPOTENCY_KEY) {
            None => Err(RequestError::MissingHeader {
                header: IDEMPOTENCY_KEY,
            }),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.parse::<IdempotencyKey>().ok())
                .map(IdempotencyKeyHeader)
                .ok_or_else(|| {
                    RequestError::invalid(IDEMPOTENCY_KEY, "must be 1 to 128 visible ASCII characters")
                }),
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields are only deserialised")]
    struct Body {
        slot_id: String,
        count: u32,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[expect(dead_code, reason = "fields are only deserialised")]
    struct Inner {
        capacity: u16,
    }

    fn field_of(body: &str) -> String {
        match parse_json::<Body>(body.as_bytes()) {
            Err(RequestError::InvalidField { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"count": 1}"#), "slot_id");
        assert_eq!(field_of(r#"{"slot_id": "a", "count": -1}"#), "count");
        assert_eq!(field_of(r#"{"slot_id": "a", "count": 1, "extra": 1}"#), "extra");
        assert_eq!(
            field_of(r#"{"slot_id": "a", "count": 1, "inner": {"capacity": 70000}}"#),
            "inner.capacity"
        );
        assert_eq!(
            field_of(r#"{"slot_id": "a", "count": 1, "inner": {}}"#),
            "inner.capacity"
        );
    }

    #[test]
    fn offending_values_are_not_echoed() {
        match parse_json::<Body>(br#"{"slot_id": 110105199001011234, "count": 1}"#) {
            Err(RequestError::InvalidField { field, reason }) => {
                assert_eq!(field, "slot_id");
                assert!(!reason.contains("110105"), "{reason}");
                assert!(reason.contains("integer"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for body in [
            "{",
            "",
            "{\"slot_id\": \"\u{0}",
            "{\"slot_id\": \"a\", \"count\": 1} x",
            "\u{feff}{}",
        ] {
            assert!(
                matches!(
                    parse_json::<Body>(body.as_bytes()),
                    Err(RequestError::MalformedJson { .. })
                ),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse_json::<Body>(&[b'{', 0xff, 0xfe, b'}']),
            Err(RequestError::MalformedJson { .. })
        ));
    }
}
