//! Search parameters and `Parameters` bodies. Everything a client sends is
//! checked here, before any query or write, and refused with a 400 naming
//! the parameter: unknown parameters and modifiers too (a filter we would
//! silently ignore could make an aggregator show the wrong slots).

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use jyt_domain::HospitalId;
use serde_json::Value;
use uuid::Uuid;

use super::DEPARTMENT_SYSTEM;
use super::outcome::FhirError;

/// `_count` when none is given, and its largest value.
pub const DEFAULT_COUNT: u32 = 50;
pub const MAX_COUNT: u32 = 500;
/// Deep enough for any real client; keeps OFFSET bounded.
pub const MAX_PAGE: u32 = 100_000;

/// Decode one `application/x-www-form-urlencoded` component, refusing
/// malformed escapes and bytes that are not UTF-8 (form_urlencoded would
/// replace them silently).
fn decode_component(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query string as (name, value) pairs in order; empty pairs dropped.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, FhirError> {
    let mut pairs = Vec::new();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let Some(name) = decode_component(k) else {
            return Err(FhirError::invalid(
                "query",
                "a parameter name is not valid percent-encoded UTF-8",
            ));
        };
        let Some(value) = decode_component(v) else {
            return Err(FhirError::invalid(
                name,
                "the value is not valid percent-encoded UTF-8",
            ));
        };
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Paging of a search: `_count` and 1-based `_page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub count: u32,
    pub page: u32,
}

impl Default for Paging {
    fn default() -> Self {
        Self {
            count: DEFAULT_COUNT,
            page: 1,
        }
    }
}

impl Paging {
    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.count)
    }
}

fn bounded(name: &str, value: &str, min: u32, max: u32) -> Result<u32, FhirError> {
    // Digits only: `+5`, `0x10` and `1e3` are not counts.
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FhirError::invalid(
            name,
            format!("must be a whole number from {min} to {max}"),
        ));
    }
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(FhirError::invalid(
            name,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

/// Handles the parameters every search takes (`_count`, `_page`,
/// `_format`); false for any other name.
pub fn common(paging: &mut Paging, name: &str, value: &str) -> Result<bool, FhirError> {
    match name {
        "_count" => paging.count = bounded(name, value, 1, MAX_COUNT)?,
        "_page" => paging.page = bounded(name, value, 1, MAX_PAGE)?,
        "_format" => {
            if !matches!(value, "json" | "application/fhir+json" | "application/json") {
                return Err(FhirError::invalid(name, "only json is served"));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A parameter name this search does not know, or a modifier.
pub fn unknown(name: &str, known: &str) -> FhirError {
    if name.contains(':') {
        FhirError::invalid(name, "search modifiers are not supported")
    } else {
        FhirError::invalid(name, format!("unknown search parameter; supported: {known}"))
    }
}

/// Refuse a second occurrence of a parameter that takes a comma list.
pub fn once<T>(slot: &Option<T>, name: &str) -> Result<(), FhirError> {
    if slot.is_some() {
        return Err(FhirError::invalid(
            name,
            "give it once, with alternatives separated by commas",
        ));
    }
    Ok(())
}

/// Half-open `[from, until)` bounds on an instant, narrowed by each `date`
/// or `start` parameter in turn (they combine with AND).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl TimeRange {
    fn at_least(&mut self, t: DateTime<Utc>) {
        self.from = Some(self.from.map_or(t, |f| f.max(t)));
    }

    fn before(&mut self, t: DateTime<Utc>) {
        self.until = Some(self.until.map_or(t, |u| u.min(t)));
    }

    /// Apply one date search value: `[prefix]value` with prefix eq (the
    /// default), ge, gt, le or lt.
    pub fn narrow(&mut self, name: &str, raw: &str) -> Result<(), FhirError> {
        let (prefix, value) = match raw.get(..2) {
            Some(p) if p.bytes().all(|b| b.is_ascii_lowercase()) => (p, &raw[2..]),
            _ => ("eq", raw),
        };
        let (low, high) = date_range(value).ok_or_else(|| {
            FhirError::invalid(
                name,
                "must be [eq|ge|gt|le|lt] followed by YYYY, YYYY-MM, YYYY-MM-DD or a dateTime such as 2026-12-08T09:00:00+08:00",
            )
        })?;
        match prefix {
            "eq" => {
                self.at_least(low);
                self.before(high);
            }
            "ge" => self.at_least(low),
            "gt" => self.at_least(high),
            "lt" => self.before(low),
            "le" => self.before(high),
            other => {
                return Err(FhirError::invalid(
                    name,
                    format!("prefix `{other}` is not supported; use eq, ge, gt, le or lt"),
                ));
            }
        }
        Ok(())
    }
}

fn local_midnight(d: NaiveDate) -> DateTime<Utc> {
    jyt_domain::time::at(d, NaiveTime::MIN)
}

/// The instants a FHIR date/dateTime value stands for, `[low, high)`: a
/// whole day, month or year in Asia/Shanghai for a partial date, the
/// smallest step (a microsecond) for a dateTime. A dateTime without a
/// zone is Beijing time, as FHIR asks of a server's local time.
pub fn date_range(value: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if !digits(0..4) {
        return None;
    }
    match b.len() {
        4 => {
            let year: i32 = value.parse().ok()?;
            let start = NaiveDate::from_ymd_opt(year, 1, 1)?;
            let end = NaiveDate::from_ymd_opt(year.checked_add(1)?, 1, 1)?;
            Some((local_midnight(start), local_midnight(end)))
        }
        7 if b[4] == b'-' && digits(5..7) => {
            let start = NaiveDate::parse_from_str(&format!("{value}-01"), "%Y-%m-%d").ok()?;
            let end = start.checked_add_months(Months::new(1))?;
            Some((local_midnight(start), local_midnight(end)))
        }
        10 if b[4] == b'-' && b[7] == b'-' && digits(5..7) && digits(8..10) => {
            let day = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
            let next = day.checked_add_days(Days::new(1))?;
            Some((local_midnight(day), local_midnight(next)))
        }
        n if n > 10 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' => {
            let t = instant(value)?;
            Some((t, t + TimeDelta::microseconds(1)))
        }
        _ => None,
    }
}

/// A dateTime with at least minutes; Beijing time when it has no zone.
fn instant(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc)).filter(|t| (1..=9999).contains(&t.year()));
    }
    if let Ok(t) = DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M%:z") {
        return Some(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M"))
        .ok()?;
    Some(jyt_domain::time::at(naive.date(), naive.time()))
}

/// `<hospital>-<uuid>` ids; other hospitals' ids are valid but never ours.
pub fn scoped_id(name: &str, raw: &str, hospital: &HospitalId) -> Result<Option<Uuid>, FhirError> {
    let parsed: jyt_domain::SlotRef = raw
        .parse()
        .map_err(|_| FhirError::invalid(name, "ids look like `<hospital>-<uuid>`"))?;
    Ok((parsed.hospital == *hospital).then_some(parsed.id))
}

/// A comma list of ids, each optionally `Type/`-prefixed; ids of other
/// hospitals match nothing.
pub fn id_list(
    name: &str,
    raw: &str,
    resource_type: &str,
    hospital: &HospitalId,
) -> Result<Vec<Uuid>, FhirError> {
    let mut ids = Vec::new();
    for item in raw.split(',') {
        let id = item
            .strip_prefix(resource_type)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(item);
        if let Some(id) = scoped_id(name, id, hospital)? {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// A department code list: `code` or `urn:jyt:department|code`.
pub fn department_codes(name: &str, raw: &str) -> Result<Vec<String>, FhirError> {
    raw.split(',')
        .map(|item| {
            let code = match item.split_once('|') {
                Some((system, code)) if system.is_empty() || system == DEPARTMENT_SYSTEM => code,
                Some(_) => {
                    return Err(FhirError::invalid(
                        name,
                        format!("departments are coded in `{DEPARTMENT_SYSTEM}`"),
                    ));
                }
                None => item,
            };
            if code.is_empty() || code.chars().count() > 64 || code.chars().any(char::is_control) {
                return Err(FhirError::invalid(
                    name,
                    "a department code is 1 to 64 characters",
                ));
            }
            Ok(code.to_owned())
        })
        .collect()
}

/// One entry of a `Parameters` body.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    /// The entry itself, holding its `value[x]`.
    pub entry: Value,
}

/// The entries of a `Parameters` resource, each name at most once and
/// only the names in `allowed`.
pub fn parameters(body: &[u8], allowed: &[&str]) -> Result<Vec<Param>, FhirError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        FhirError(crate::error::SlotError::Request(
            jyt_web::RequestError::MalformedJson {
                detail: e.to_string(),
            },
        ))
    })?;
    let Some(obj) = value.as_object() else {
        return Err(FhirError::invalid(
            "Parameters",
            "the body must be a Parameters resource",
        ));
    };
    if obj.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::invalid("resourceType", "must be `Parameters`"));
    }
    if let Some(extra) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "resourceType" | "id" | "meta" | "parameter"))
    {
        return Err(FhirError::invalid(extra.clone(), "not an element of Parameters"));
    }
    let entries = match obj.get("parameter") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(FhirError::invalid("Parameters.parameter", "must be an array")),
    };
    let mut out: Vec<Param> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| FhirError::invalid(format!("Parameters.parameter[{i}].name"), "is required"))?;
        if !allowed.contains(&name) {
            return Err(FhirError::invalid(
                name,
                format!("unknown parameter; expected {}", allowed.join(", ")),
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(FhirError::invalid(name, "given more than once"));
        }
        out.push(Param {
            name: name.to_owned(),
            entry: entry.clone(),
        });
    }
    Ok(out)
}

/// The parameter named `name`, if given.
pub fn find<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name == name)
}

impl Param {
    /// The only `value[x]` of this entry, as (type suffix, value).
    fn value(&self) -> Result<(&str, &Value), FhirError> {
        let obj = self
            .entry
            .as_object()
            .ok_or_else(|| FhirError::invalid(self.name.clone(), "must be an object"))?;
        let mut values = obj
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("value").map(|t| (t, v)));
        match (values.next(), values.next()) {
            (Some(v), None) => Ok(v),
            _ => Err(FhirError::invalid(
                self.name.clone(),
                "needs exactly one value[x]",
            )),
        }
    }

    fn invalid(&self, reason: &str) -> FhirError {
        FhirError::invalid(self.name.clone(), reason.to_owned())
    }

    /// `valueDateTime`, `valueInstant` or `valueDate`, as `[low, high)`.
    pub fn time(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), FhirError> {
        match self.value()? {
            ("DateTime" | "Instant" | "Date", Value::String(s)) => date_range(s)
                .ok_or_else(|| self.invalid("must be a date or dateTime such as 2026-12-08T09:00:00+08:00")),
            _ => Err(self.invalid("must be a valueDateTime, valueInstant or valueDate")),
        }
    }

    /// `valueString` or `valueCode`.
    pub fn text(&self, max: usize) -> Result<String, FhirError> {
        match self.value()? {
            ("String" | "Code", Value::String(s))
                if !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control) =>
            {
                Ok(s.clone())
            }
            _ => Err(self.invalid(&format!(
                "must be a valueString of 1 to {max} printable characters"
            ))),
        }
    }

    /// The `reference` of a `valueReference` (or, where `string_too`, a
    /// `valueString` holding one): the id after `<Type>/`.
    pub fn reference(&self, resource_type: &str, string_too: bool) -> Result<String, FhirError> {
        let raw = match self.value()? {
            ("Reference", Value::Object(r)) => r.get("reference").and_then(Value::as_str),
            ("String", Value::String(s)) if string_too => Some(s.as_str()),
            _ => None,
        };
        let raw =
            raw.ok_or_else(|| self.invalid(&format!("must be a valueReference to {resource_type}/<id>")))?;
        let id = raw
            .strip_prefix(resource_type)
            .and_then(|r| r.strip_prefix('/'))
            .or(if string_too { Some(raw) } else { None })
            .ok_or_else(|| self.invalid(&format!("must reference {resource_type}/<id>")))?;
        Ok(id.to_owned())
    }

    /// A department code: `valueCoding` (system `urn:jyt:department` or
    /// none), `valueCode` or `valueString`.
    pub fn department(&self) -> Result<String, FhirError> {
        let code = match self.value()? {
            ("Coding", Value::Object(c)) => {
                match c.get("system").and_then(Value::as_str) {
                    None => {}
                    Some(s) if s == DEPARTMENT_SYSTEM => {}
                    Some(_) => {
                        return Err(self.invalid(&format!("departments are coded in `{DEPARTMENT_SYSTEM}`")));
                    }
                }
                c.get("code").and_then(Value::as_str)
            }
            ("Code" | "String", Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        match code {
            Some(c) if !c.is_empty() && c.chars().count() <= 64 && !c.chars().any(char::is_control) => {
                Ok(c.to_owned())
            }
            _ => Err(self.invalid("must be a department code (valueCoding, valueCode or valueString)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_dates_are_whole_days_months_and_years_in_beijing() {
        let (low, high) = date_range("2026-12-08").unwrap();
        assert_eq!(low.to_rfc3339(), "2026-12-07T16:00:00+00:00");
        assert_eq!(high.to_rfc3339(), "2026-12-08T16:00:00+00:00");
        let (low, high) = date_range("2026-12").unwrap();
        assert_eq!(low.to_rfc3339(), "2026-11-30T16:00:00+00:00");
        assert_eq!(high.to_rfc3339(), "2026-12-31T16:00:00+00:00");
        assert!(date_range("2026").is_some());
        let (low, _) = date_range("2026-12-08T09:00:00+08:00").unwrap();
        assert_eq!(low.to_rfc3339(), "2026-12-08T01:00:00+00:00");
        let (low, _) = date_range("2026-12-08T09:00").unwrap();
        assert_eq!(low.to_rfc3339(), "2026-12-08T01:00:00+00:00");
        for bad in [
            "",
            "26-12-08",
            "2026-13-01",
            "2026-12-32",
            "2026-12-08T25:00",
            "20261208",
            "+2026",
            "2026-1-1",
        ] {
            assert!(date_range(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn prefixes_narrow_the_range() {
        let mut r = TimeRange::default();
        r.narrow("start", "ge2026-12-08").unwrap();
        r.narrow("start", "lt2026-12-09T00:00:00+08:00").unwrap();
        assert_eq!(r.from, date_range("2026-12-08").map(|d| d.0));
        assert_eq!(r.until, date_range("2026-12-09").map(|d| d.0));
        assert!(r.narrow("start", "ne2026-12-08").is_err());
        assert!(r.narrow("start", "xx2026").is_err());
    }

    #[test]
    fn escapes_must_be_utf8() {
        assert_eq!(parse_query("a=%E5%BF%83&b=x+y").unwrap()[0].1, "心");
        assert!(parse_query("a=%FF").is_err());
        assert!(parse_query("a=%F").is_err());
        assert!(parse_query("%ZZ=1").is_err());
    }
}
