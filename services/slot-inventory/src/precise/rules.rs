//! What a profile and a submission may hold (each refusal names its
//! field), and the expert's matching rule. Pure: no I/O.

use jyt_web::RequestError;

use super::{AutoMatch, DocumentRef};

/// At most this many entries in any list field.
pub const MAX_ITEMS: usize = 20;
/// The longest free text (prior treatment, a profile's note).
pub const MAX_TEXT: usize = 500;

/// An ICD-10 code: a letter and two digits, then optionally a dot and 1
/// to 4 letters or digits (`C34.1`). With `prefix`, the letter and one or
/// two digits are enough (`C3` covers C30 to C39).
pub fn icd10(code: &str, prefix: bool) -> bool {
    let b = code.as_bytes();
    let digits = b.iter().skip(1).take_while(|c| c.is_ascii_digit()).count();
    if b.is_empty() || !b[0].is_ascii_uppercase() {
        return false;
    }
    let rest = &b[1 + digits..];
    let head_ok = digits == 2 || (prefix && digits == 1 && rest.is_empty());
    head_ok
        && (rest.is_empty()
            || (rest[0] == b'.'
                && (2..=5).contains(&rest.len())
                && rest[1..]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())))
}

/// A vocabulary key: lower-case snake case, 1 to 40 characters.
pub fn key(k: &str) -> bool {
    (1..=40).contains(&k.len())
        && k.as_bytes()[0].is_ascii_lowercase()
        && k.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Each entry of `items` checked by `ok`, at most [`MAX_ITEMS`], no
/// repeats; the refusal names `field[i]`.
pub fn list(
    field: &str,
    items: &[String],
    ok: impl Fn(&str) -> bool,
    what: &str,
) -> Result<(), RequestError> {
    if items.len() > MAX_ITEMS {
        return Err(RequestError::invalid(
            field,
            format!("at most {MAX_ITEMS} entries"),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if !ok(item) {
            return Err(RequestError::invalid(
                format!("{field}[{i}]"),
                format!("must be {what}"),
            ));
        }
        if items[..i].contains(item) {
            return Err(RequestError::invalid(format!("{field}[{i}]"), "is repeated"));
        }
    }
    Ok(())
}

/// Free text of at most [`MAX_TEXT`] characters, no control characters
/// but line breaks.
pub fn text(field: &str, value: &str) -> Result<(), RequestError> {
    if value.chars().count() > MAX_TEXT || value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(RequestError::invalid(
            field,
            format!("must be at most {MAX_TEXT} printable characters"),
        ));
    }
    Ok(())
}

/// A document reference: a kind key and the app's id of the document
/// (1 to 64 visible ASCII characters).
pub fn documents(docs: &[DocumentRef]) -> Result<(), RequestError> {
    if docs.len() > MAX_ITEMS {
        return Err(RequestError::invalid(
            "documents",
            format!("at most {MAX_ITEMS} entries"),
        ));
    }
    for (i, d) in docs.iter().enumerate() {
        if !key(&d.kind) {
            return Err(RequestError::invalid(
                format!("documents[{i}].kind"),
                "must be a lower-case snake_case key of 1 to 40 characters",
            ));
        }
        if !(1..=64).contains(&d.id.len()) || !d.id.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(RequestError::invalid(
                format!("documents[{i}].id"),
                "must be 1 to 64 visible ASCII characters: a reference, not the document",
            ));
        }
    }
    Ok(())
}

/// The facts of a submission the rule reads.
pub struct Facts<'a> {
    pub diagnosis_codes: &'a [String],
    pub findings: &'a [String],
    pub age_years: i32,
    pub document_kinds: Vec<&'a str>,
}

/// The profile's side of the rule.
pub struct Wanted<'a> {
    pub conditions: &'a [String],
    pub findings: &'a [String],
    pub min_age: Option<i32>,
    pub max_age: Option<i32>,
    pub required_documents: &'a [String],
    pub auto_match: AutoMatch,
}

/// Whether the expert's rule matches the submission by itself: the age in
/// range and every required document referenced, and then a diagnosis
/// under a wanted condition (`condition`), and a wanted finding too
/// (`condition_and_finding`). `review` never matches by itself; nor does
/// anything else that fails: such a submission waits for the hospital.
pub fn auto_matches(wanted: &Wanted<'_>, facts: &Facts<'_>) -> bool {
    let age = wanted.min_age.is_none_or(|min| facts.age_years >= min)
        && wanted.max_age.is_none_or(|max| facts.age_years <= max);
    let documents = wanted
        .required_documents
        .iter()
        .all(|kind| facts.document_kinds.contains(&kind.as_str()));
    let condition = facts
        .diagnosis_codes
        .iter()
        .any(|code| wanted.conditions.iter().any(|p| code.starts_with(p.as_str())));
    let finding = facts.findings.iter().any(|f| wanted.findings.contains(f));
    age && documents
        && match wanted.auto_match {
            AutoMatch::Review => false,
            AutoMatch::Condition => condition,
            AutoMatch::ConditionAndFinding => condition && finding,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn icd10_codes_and_prefixes() {
        for ok in ["C34", "C34.1", "I25.10", "Z99.8XA"] {
            assert!(icd10(ok, false), "{ok}");
        }
        for bad in ["c34", "C3", "C345", "C34.", "C34.123456", "34", "", "C34 1"] {
            assert!(!icd10(bad, false), "{bad}");
        }
        assert!(icd10("C3", true));
        assert!(!icd10("C", true));
    }

    #[test]
    fn the_rule_needs_age_documents_and_what_the_expert_asked_for() {
        let conditions = strings(&["C34"]);
        let findings = strings(&["ct_nodule_over_8mm"]);
        let docs = strings(&["ct_report"]);
        let mut wanted = Wanted {
            conditions: &conditions,
            findings: &findings,
            min_age: Some(18),
            max_age: Some(80),
            required_documents: &docs,
            auto_match: AutoMatch::ConditionAndFinding,
        };
        let codes = strings(&["C34.1"]);
        let seen = strings(&["ct_nodule_over_8mm"]);
        let facts = Facts {
            diagnosis_codes: &codes,
            findings: &seen,
            age_years: 60,
            document_kinds: vec!["ct_report"],
        };
        assert!(auto_matches(&wanted, &facts));
        let none: Vec<String> = Vec::new();
        let no_finding = Facts {
            findings: &none,
            document_kinds: vec!["ct_report"],
            ..facts
        };
        assert!(!auto_matches(&wanted, &no_finding));
        wanted.auto_match = AutoMatch::Condition;
        assert!(auto_matches(&wanted, &no_finding));
        let too_young = Facts {
            age_years: 12,
            document_kinds: vec!["ct_report"],
            ..no_finding
        };
        assert!(!auto_matches(&wanted, &too_young));
        let no_report = Facts {
            age_years: 60,
            document_kinds: vec![],
            ..too_young
        };
        assert!(!auto_matches(&wanted, &no_report));
        wanted.auto_match = AutoMatch::Review;
        let all = Facts {
            document_kinds: vec!["ct_report"],
            ..no_report
        };
        assert!(!auto_matches(&wanted, &all));
    }
}
