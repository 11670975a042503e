//! The platform card number: 16 digits whose last is the Luhn (mod 10)
//! check digit of the first 15. card-issuing mints numbers with it; the
//! gateway refuses a mistyped number before asking anyone.

/// The Luhn (mod 10) check digit for `digits`.
pub fn luhn_check_digit(digits: &str) -> Option<u8> {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        let mut d = u32::from(b - b'0');
        // The rightmost payload digit is doubled, since the check digit
        // will sit to its right.
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    u8::try_from((10 - sum % 10) % 10).ok()
}

/// A card number is 16 digits whose last is the Luhn digit of the rest.
pub fn card_number_valid(n: &str) -> bool {
    n.len() == 16
        && n.bytes().all(|b| b.is_ascii_digit())
        && luhn_check_digit(&n[..15]).map(|d| d + b'0') == n.as_bytes().last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_digit_catches_a_changed_digit() {
        assert!(card_number_valid("9110000000000008"));
        assert!(!card_number_valid("9110000000000005"));
        assert!(!card_number_valid("911000000000000"));
        assert!(!card_number_valid("911000000000000x"));
        assert_eq!(luhn_check_digit("7992739871"), Some(3));
    }
}
