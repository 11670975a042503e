//! Personal identifiers and their validation: the resident ID number (GB
//! 11643-1999, ISO 7064 MOD 11-2 check digit), mobile phone and medical
//! insurance numbers. Their `Debug` shows only the masked form, so a stray
//! `?value` in a log line cannot leak one.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// Why an ID number was refused; each has its own machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("must be 18 characters (17 digits and a digit or X), or a legacy 15-digit number")]
    Malformed,
    #[error("the birth date in the number is not a real past date")]
    BirthDate,
    #[error("the check digit does not match (GB 11643-1999)")]
    CheckDigit,
}

impl IdNumberError {
    pub fn code(self) -> &'static str {
        match self {
            IdNumberError::Malformed => "ID_NUMBER_MALFORMED",
            IdNumberError::BirthDate => "ID_NUMBER_BAD_BIRTH_DATE",
            IdNumberError::CheckDigit => "ID_NUMBER_BAD_CHECK_DIGIT",
        }
    }
}

pub use jyt_domain::id_number::id_check_char;

/// A validated, normalised 18-character resident ID number.
#[derive(Clone, PartialEq, Eq)]
pub struct ResidentId {
    number: String,
    birth_date: NaiveDate,
}

impl ResidentId {
    /// Validate against `today` (Asia/Shanghai) so a future birth date is refused.
    ///
    /// Legacy 15-digit numbers (issued before 1999, all to people born in the
    /// 1900s) are converted: "19" is put before the 2-digit year and the
    /// check digit computed, as the public-security rules for the 1999
    /// upgrade do. Converting rather than refusing lets old records and
    /// old cards be matched to the person's current 18-digit identity.
    pub fn parse(raw: &str, today: NaiveDate) -> Result<Self, IdNumberError> {
        let raw = raw.trim();
        let bytes = raw.as_bytes();
        let number = match bytes.len() {
            18 => {
                let (body, check) = bytes.split_at(17);
                if !body.iter().all(u8::is_ascii_digit) {
                    return Err(IdNumberError::Malformed);
                }
                let check = check[0].to_ascii_uppercase();
                if !(check.is_ascii_digit() || check == b'X') {
                    return Err(IdNumberError::Malformed);
                }
                if id_check_char(body) != Some(check) {
                    return Err(IdNumberError::CheckDigit);
                }
                let mut s = raw[..17].to_owned();
                s.push(char::from(check));
                s
            }
            15 => {
                if !bytes.iter().all(u8::is_ascii_digit) {
                    return Err(IdNumberError::Malformed);
                }
                let mut body = String::with_capacity(18);
                body.push_str(&raw[..6]);
                body.push_str("19");
                body.push_str(&raw[6..]);
                let check = id_check_char(body.as_bytes()).ok_or(IdNumberError::Malformed)?;
                body.push(char::from(check));
                body
            }
            _ => return Err(IdNumberError::Malformed),
        };
        if number.starts_with('0') || number.starts_with('9') {
            // No administrative division code starts with 0 or 9.
            return Err(IdNumberError::Malformed);
        }
        let birth_date =
            NaiveDate::parse_from_str(&number[6..14], "%Y%m%d").map_err(|_| IdNumberError::BirthDate)?;
        if birth_date > today || birth_date.year() < 1880 {
            return Err(IdNumberError::BirthDate);
        }
        Ok(Self { number, birth_date })
    }

    /// The full number; only for sealing, the blind index and audited reveals.
    pub fn expose(&self) -> &str {
        &self.number
    }

    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    pub fn masked(&self) -> String {
        mask_id_number(&self.number)
    }
}

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResidentId({})", self.masked())
    }
}

/// `110105194912310021` → `110105********0021`.
pub fn mask_id_number(n: &str) -> String {
    if n.len() < 10 || !n.is_ascii() {
        return "*".repeat(n.chars().count());
    }
    format!("{}{}{}", &n[..6], "*".repeat(n.len() - 10), &n[n.len() - 4..])
}

/// `13812345678` → `138****5678`.
pub fn mask_phone(p: &str) -> String {
    if p.len() != 11 || !p.is_ascii() {
        return "*".repeat(p.chars().count());
    }
    format!("{}****{}", &p[..3], &p[7..])
}

/// Everything but the last 4 characters starred.
pub fn mask_tail(s: &str) -> String {
    let n = s.chars().count();
    let keep = n.saturating_sub(4);
    s.chars()
        .enumerate()
        .map(|(i, c)| if i < keep { '*' } else { c })
        .collect()
}

/// A mainland mobile number: 11 digits, `1[3-9]…`. A leading `+86` or `86`
/// is dropped so one person's number has one spelling (and one blind index).
#[derive(Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Option<Self> {
        let s: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let s = s
            .strip_prefix("+86")
            .or_else(|| s.strip_prefix("0086"))
            .unwrap_or(&s);
        let s = if s.len() == 13 {
            s.strip_prefix("86").unwrap_or(s)
        } else {
            s
        };
        let b = s.as_bytes();
        let ok = b.len() == 11
            && b[0] == b'1'
            && (b'3'..=b'9').contains(&b[1])
            && b.iter().all(u8::is_ascii_digit);
        ok.then(|| Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

/// A medical insurance card number: 6 to 32 letters and digits.
#[derive(Clone, PartialEq, Eq)]
pub struct InsuranceNumber(String);

impl InsuranceNumber {
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim().to_ascii_uppercase();
        ((6..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(Self(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InsuranceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InsuranceNumber({})", mask_tail(&self.0))
    }
}

/// Whole years from `birth` to `on`.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> u32 {
    let mut years = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn published_example_numbers_validate() {
        // The standard's own example, and further checked numbers.
        for (n, birth) in [
            ("11010519491231002X", (1949, 12, 31)),
            ("11010519491231002x", (1949, 12, 31)),
            ("440524188001010014", (1880, 1, 1)),
            ("110105200001010016", (2000, 1, 1)),
        ] {
            let id = ResidentId::parse(n, today()).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(
                id.birth_date(),
                NaiveDate::from_ymd_opt(birth.0, birth.1, birth.2).unwrap()
            );
            assert_eq!(id.expose(), n.to_ascii_uppercase());
        }
    }

    #[test]
    fn invalid_numbers_are_refused_with_their_reason() {
        for (n, why) in [
            ("110105194912310021", IdNumberError::CheckDigit),
            ("11010519491231002Y", IdNumberError::Malformed),
            ("1101051949123100", IdNumberError::Malformed),
            ("11010519491231002XX", IdNumberError::Malformed),
            ("1101051949A231002X", IdNumberError::Malformed),
            ("", IdNumberError::Malformed),
            ("１１０１０５１９４９１２３１００２X", IdNumberError::Malformed),
            // 1949-02-30 does not exist; check digit computed to be valid.
            (&with_check("11010519490230002"), IdNumberError::BirthDate),
            // Born in the future.
            (&with_check("11010520991231002"), IdNumberError::BirthDate),
            (&with_check("01010519491231002"), IdNumberError::Malformed),
        ] {
            assert_eq!(ResidentId::parse(n, today()), Err(why), "{n}");
        }
    }

    fn with_check(first17: &str) -> String {
        let c = id_check_char(first17.as_bytes()).unwrap();
        format!("{first17}{}", char::from(c))
    }

    #[test]
    fn legacy_15_digit_numbers_are_converted() {
        let id = ResidentId::parse("110105491231002", today()).unwrap();
        assert_eq!(id.expose(), "11010519491231002X");
        assert!(ResidentId::parse("110105490230002", today()).is_err());
    }

    #[test]
    fn masks_keep_only_the_edges() {
        assert_eq!(mask_id_number("11010519491231002X"), "110105********002X");
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_tail("AB12345678"), "******5678");
    }

    #[test]
    fn debug_never_shows_the_whole_number() {
        let id = ResidentId::parse("11010519491231002X", today()).unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains("11010519491231002X"), "{shown}");
        let p = Phone::parse("+86 138-1234-5678").unwrap();
        assert_eq!(p.expose(), "13812345678");
        assert!(!format!("{p:?}").contains("13812345678"));
    }

    #[test]
    fn phones_are_checked() {
        for bad in ["12812345678", "1381234567", "138123456789", "abc"] {
            assert!(Phone::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn age_counts_whole_years() {
        let b = NaiveDate::from_ymd_opt(2010, 12, 1).unwrap();
        assert_eq!(age_on(b, NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()), 15);
        assert_eq!(age_on(b, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()), 16);
    }
}
