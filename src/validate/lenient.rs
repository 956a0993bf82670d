//! The forms `--types lenient` takes besides the strict ones (SPEC §1, "Loose
//! producers"), as pure conversions: each gives the value the strict form would
//! have given, or nothing. Which rule the converted value must then pass is
//! `validate`'s business, the same in both modes.

use super::iso_date;
use crate::messages::Loose;
use crate::model::Phone;
use chrono::NaiveDate;

/// An integer field's value read from a number with a fraction or an exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Whole {
    Fits(u64),
    /// Negative, or beyond `u64`: a whole number no integer field takes.
    Beyond,
}

impl Whole {
    pub(super) fn fitting(self) -> Option<u64> {
        match self {
            Whole::Fits(n) => Some(n),
            Whole::Beyond => None,
        }
    }
}

/// `"3"`, `" 3 "`: the trimmed text when it is ASCII digits and nothing else.
pub(super) fn digits(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then_some(t)
}

/// The value of a JSON number (`text` already follows the grammar) when it is a
/// whole number: `3.0`, `3e0`, `30e-1`, `0.3e1`.
///
/// Judged on the decimal digits, never through a float, so that `3.0000000000000001`
/// is not taken for 3 and a 20-digit id is not rounded.
pub(super) fn whole(text: &str) -> Option<Whole> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, exponent_of(e)),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let trailing_zeros = digits.bytes().rev().take_while(|&b| b == b'0').count();
    let significant = digits[..digits.len() - trailing_zeros].trim_start_matches('0');
    if significant.is_empty() {
        return Some(Whole::Fits(0));
    }
    // The value is `significant` × 10^scale.
    let scale = exponent
        .saturating_sub(i64::try_from(frac.len()).unwrap_or(i64::MAX))
        .saturating_add(i64::try_from(trailing_zeros).unwrap_or(i64::MAX));
    if scale < 0 {
        return None;
    }
    // u64::MAX has 20 digits: anything longer cannot fit.
    let length = i64::try_from(significant.len())
        .unwrap_or(i64::MAX)
        .saturating_add(scale);
    if negative || length > 20 {
        return Some(Whole::Beyond);
    }
    let fits = significant.parse::<u64>().ok().and_then(|n| {
        let scale = u32::try_from(scale).ok()?;
        n.checked_mul(10u64.checked_pow(scale)?)
    });
    Some(fits.map_or(Whole::Beyond, Whole::Fits))
}

/// An exponent's digits (the grammar guarantees them, with an optional sign); one too
/// long for an `i64` is as good as infinite either way.
fn exponent_of(text: &str) -> i64 {
    text.parse().unwrap_or(if text.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// `0` and `1` as JSON numbers, exactly as written: `1.0` is not among the forms.
pub(super) fn boolean_number(text: &str) -> Option<bool> {
    match text {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// `"0"`, `"1"`, `"true"`, `"false"`, trimmed like every string of a request.
pub(super) fn boolean_string(s: &str) -> Option<bool> {
    match s.trim() {
        "0" | "false" => Some(false),
        "1" | "true" => Some(true),
        _ => None,
    }
}

/// Whether a raw JSON array (`text` starts with `[`) holds nothing but whitespace.
pub(super) fn is_empty_array(text: &str) -> bool {
    text.trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inside| inside.trim().is_empty())
}

/// A date in any form lenient mode takes, and which loose form it was in (`None`:
/// the strict `YYYY-MM-DD`).
pub(super) fn date(s: &str) -> Option<(NaiveDate, Option<Loose>)> {
    let s = s.trim();
    if let Some(date) = iso_date(s) {
        return Some((date, None));
    }
    if let Some(date) = day_first(s) {
        return Some((date, Some(Loose::DayFirstDate)));
    }
    let (day, time) = (s.get(..10)?, s.get(10..)?);
    let time = time.strip_prefix([' ', 'T'])?;
    if !is_time(time.as_bytes()) {
        return None;
    }
    iso_date(day).map(|date| (date, Some(Loose::DateWithTime)))
}

/// `DD.MM.YYYY`, exactly two, two and four digits, and a day that exists.
fn day_first(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, &c)| {
            if i == 2 || i == 5 {
                c == b'.'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape {
        return None;
    }
    let (day, month, year) = (s.get(..2)?, s.get(3..5)?, s.get(6..)?);
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, day.parse().ok()?)
}

/// `HH:MM`, optionally `:SS` and a fraction of 1 to 9 digits, optionally a zone (`Z`,
/// `±HH:MM`, `±HHMM`). The schema's lenient date pattern spells out the same grammar.
fn is_time(b: &[u8]) -> bool {
    if !(two_digits(b, 0, 23) && b.get(2) == Some(&b':') && two_digits(b, 3, 59)) {
        return false;
    }
    let mut i = 5;
    if b.get(i) == Some(&b':') {
        if !two_digits(b, i + 1, 59) {
            return false;
        }
        i += 3;
        if b.get(i) == Some(&b'.') {
            let rest = b.get(i + 1..).unwrap_or_default();
            let fraction = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&fraction) {
                return false;
            }
            i += 1 + fraction;
        }
    }
    is_zone(b.get(i..).unwrap_or_default())
}

fn is_zone(z: &[u8]) -> bool {
    match z {
        [] | [b'Z' | b'z'] => true,
        [b'+' | b'-', offset @ ..] => {
            let minutes = if offset.get(2) == Some(&b':') { 3 } else { 2 };
            two_digits(offset, 0, 23)
                && two_digits(offset, minutes, 59)
                && offset.len() == minutes + 2
        }
        _ => false,
    }
}

/// Whether `b[at..at + 2]` are two digits making at most `max`.
fn two_digits(b: &[u8], at: usize, max: u8) -> bool {
    match b.get(at..at + 2) {
        Some([t, u]) if t.is_ascii_digit() && u.is_ascii_digit() => {
            (t - b'0') * 10 + (u - b'0') <= max
        }
        _ => false,
    }
}

/// A phone number in any form lenient mode takes, and which loose form it was in
/// (`None`: the strict form).
pub(super) fn phone(s: &str) -> Option<(Phone, Option<Loose>)> {
    if let Some(phone) = Phone::parse(s) {
        return Some((phone, None));
    }
    let t = s.trim();
    let (plus, form) = match t.strip_prefix("00") {
        Some(rest) => (format!("+{rest}"), Loose::DoubleZero),
        None => (t.to_owned(), Loose::UnicodeSpace),
    };
    let spaced: String = plus
        .chars()
        .map(|c| if is_space_separator(c) { ' ' } else { c })
        .collect();
    Phone::parse(&spaced).map(|phone| (phone, Some(form)))
}

/// Unicode's space separators (category Zs): the no-break space of a spreadsheet
/// export, the narrow one of a French locale. Not tabs or line breaks, which are no
/// separator in a phone number.
fn is_space_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{00A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_judged_on_their_digits() {
        for (text, n) in [
            ("3.0", 3),
            ("3e0", 3),
            ("30e-1", 3),
            ("0.3e1", 3),
            ("0.0", 0),
            ("-0.0", 0),
            ("1E2", 100),
            ("18446744073709551615.0", u64::MAX),
            ("1844674407370955161.5e1", u64::MAX),
        ] {
            assert_eq!(whole(text), Some(Whole::Fits(n)), "{text}");
        }
        for text in [
            "-1.0",
            "18446744073709551616.0",
            "1e20",
            "1e99999999999999999999",
        ] {
            assert_eq!(whole(text), Some(Whole::Beyond), "{text}");
        }
        for text in [
            "3.5",
            "3.0000000000000001",
            "1e-1",
            "25e-1",
            "1e-99999999999999999999",
        ] {
            assert_eq!(whole(text), None, "{text}");
        }
    }

    #[test]
    fn dates_in_each_form() {
        let day = NaiveDate::from_ymd_opt(2025, 12, 31);
        for (text, form) in [
            ("2025-12-31", None),
            (" 31.12.2025 ", Some(Loose::DayFirstDate)),
            ("2025-12-31 00:00:00", Some(Loose::DateWithTime)),
            ("2025-12-31T23:59", Some(Loose::DateWithTime)),
            ("2025-12-31T00:00:00.123Z", Some(Loose::DateWithTime)),
            ("2025-12-31T00:00:00+02:00", Some(Loose::DateWithTime)),
            ("2025-12-31 00:00:00-0530", Some(Loose::DateWithTime)),
        ] {
            assert_eq!(date(text), day.map(|d| (d, form)), "{text}");
        }
        for text in [
            "32.13.2025",
            "29.02.2025",
            "1.12.2025",
            "2025-12-31X",
            "2025-12-31T",
            "2025-12-31 24:00",
            "2025-12-31 00:60",
            "2025-12-31  00:00",
            "2025-12-31t00:00",
            "2025-12-31T00:00:00.",
            "2025-12-31T00:00:00.1234567890",
            "2025-12-31T00:00+24:00",
            "2025-12-31T00:00+02:0",
            "2025-12-31T00:00 Z",
            "31.12.2025 00:00",
            "2025-02-29 00:00",
        ] {
            assert_eq!(date(text), None, "{text}");
        }
        assert_eq!(
            date("29.02.2024").map(|(d, _)| d),
            NaiveDate::from_ymd_opt(2024, 2, 29)
        );
    }

    #[test]
    fn phones_with_00_and_unicode_spaces() {
        let e164 = |s: &str| Phone::parse(s).expect("a strict phone");
        assert_eq!(
            phone("00380631234567"),
            Some((e164("+380631234567"), Some(Loose::DoubleZero)))
        );
        assert_eq!(
            phone("+38\u{a0}063\u{202f}123-45-67"),
            Some((e164("+380631234567"), Some(Loose::UnicodeSpace)))
        );
        assert_eq!(
            phone("0038\u{a0}063 1234567"),
            Some((e164("+380631234567"), Some(Loose::DoubleZero)))
        );
        assert_eq!(phone("+380631234567"), Some((e164("+380631234567"), None)));
        for bad in [
            "0631234567",
            "00123456",
            "00+380631234567",
            "+38\t0631234567",
            "00",
        ] {
            assert_eq!(phone(bad), None, "{bad}");
        }
    }

    #[test]
    fn empty_arrays_and_booleans() {
        assert!(is_empty_array("[]") && is_empty_array("[ \n ]"));
        assert!(!is_empty_array("[1]") && !is_empty_array("[[]]"));
        assert_eq!(boolean_number("1"), Some(true));
        assert_eq!(boolean_number("1.0"), None);
        assert_eq!(boolean_string(" false "), Some(false));
        assert_eq!(boolean_string("yes"), None);
        assert_eq!(boolean_string("TRUE"), None);
        assert_eq!(digits(" 3 "), Some("3"));
        assert_eq!(digits("  "), None);
        assert_eq!(digits("3a"), None);
        assert_eq!(digits("-3"), None);
    }
}
