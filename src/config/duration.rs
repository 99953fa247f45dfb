//! Durations as the configuration writes them: `"30s"`, `"5m"`, `"1h"`, `"1h30m"`, `"2d"`.
//!
//! Written by hand rather than with `humantime` so that the accepted language is exactly what
//! SPEC.md section 3 documents, and so that a typo (`"5mn"`, `"30"`, `"5m5m"`) is an error
//! instead of a surprising value.

use std::time::Duration;

/// The units, largest first, with their length in seconds.
const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];

/// Parses a duration written as one or more `<number><unit>` groups, units `d`, `h`, `m`, `s`,
/// largest first and each at most once: `"30s"`, `"5m"`, `"1h"`, `"90s"`, `"1h30m"`. Zero
/// (`"0s"`) is accepted; whether it makes sense is the caller's business.
///
/// Returns a lowercase explanation of what is wrong otherwise.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut rest = text;
    let mut total: u64 = 0;
    // Index into UNITS of the smallest unit seen so far: the next one must be smaller.
    let mut previous_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "expected a number at \"{rest}\" (units are s, m, h and d)"
            ));
        }
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after_unit) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!("missing unit after {digits}: use s, m, h or d"));
        }
        let Some(unit_index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit \"{unit}\": use s, m, h or d"));
        };
        if previous_unit.is_some_and(|previous| unit_index <= previous) {
            return Err("units must go from largest to smallest, each at most once".to_owned());
        }
        previous_unit = Some(unit_index);
        let seconds = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[unit_index].1))
            .and_then(|s| total.checked_add(s));
        total = seconds.ok_or_else(|| "duration is too large".to_owned())?;
        rest = after_unit;
    }
    Ok(Duration::from_secs(total))
}

/// Returns `duration` as the configuration writes it, whole seconds, largest units first:
/// `"0s"`, `"90s"` as `"1m30s"`, `"7d"`. [`parse_duration`] reads it back.
pub fn format_duration(duration: Duration) -> String {
    let mut rest = duration.as_secs();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, seconds) in UNITS {
        if rest >= seconds {
            text.push_str(&format!("{}{unit}", rest / seconds));
            rest %= seconds;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse_duration(text).expect("valid duration").as_secs()
    }

    fn error(text: &str) -> String {
        parse_duration(text).expect_err("invalid duration")
    }

    #[test]
    fn single_units() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h"), 3600);
        assert_eq!(secs("2d"), 172_800);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("0s"), 0);
        assert_eq!(secs("007m"), 420);
    }

    #[test]
    fn several_units() {
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1d2h3m4s"), 93_784);
        assert_eq!(secs("1h5s"), 3605);
    }

    #[test]
    fn malformed() {
        assert_eq!(error(""), "empty duration");
        assert_eq!(error("30"), "missing unit after 30: use s, m, h or d");
        assert_eq!(error("5x"), "unknown unit \"x\": use s, m, h or d");
        assert_eq!(error("5ms"), "unknown unit \"ms\": use s, m, h or d");
        assert_eq!(error("5 m"), "unknown unit \" m\": use s, m, h or d");
        assert_eq!(
            error("m"),
            "expected a number at \"m\" (units are s, m, h and d)"
        );
        assert_eq!(
            error("-5m"),
            "expected a number at \"-5m\" (units are s, m, h and d)"
        );
        assert_eq!(error("1.5h"), "unknown unit \".\": use s, m, h or d");
        assert_eq!(
            error("30m1h"),
            "units must go from largest to smallest, each at most once"
        );
        assert_eq!(
            error("5m5m"),
            "units must go from largest to smallest, each at most once"
        );
        assert_eq!(error("99999999999999999999s"), "duration is too large");
        assert_eq!(error("999999999999999999d"), "duration is too large");
    }

    #[test]
    fn formatted_as_written() {
        let text = |secs| format_duration(Duration::from_secs(secs));
        assert_eq!(text(0), "0s");
        assert_eq!(text(1), "1s");
        assert_eq!(text(90), "1m30s");
        assert_eq!(text(3600), "1h");
        assert_eq!(text(604_800), "7d");
        assert_eq!(text(93_784), "1d2h3m4s");
        for secs in [0, 59, 61, 3599, 86_401, 604_800, u64::MAX] {
            assert_eq!(secs, self::secs(&text(secs)), "{}", text(secs));
        }
    }
}
