//! The resident ID number's check character, shared by card-issuing (which
//! validates ID numbers) and the test suite's log scanner (which must
//! recognise a real one in a log line by the same rule).

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// ISO 7064 MOD 11-2 over the first 17 digits of a resident ID number
/// (GB 11643-1999). `None` if any is not a digit.
pub fn id_check_char(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (b, w) in first17.iter().zip(WEIGHTS) {
        if !b.is_ascii_digit() {
            return None;
        }
        sum += u32::from(b - b'0') * w;
    }
    CHECK_CHARS.get((sum % 11) as usize).copied()
}
