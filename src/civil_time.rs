//! UTC calendar time without a date crate: seconds since the epoch to and
//! from `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 in lease and run records, the
//! mtime of a formula's filters) and a compact form for file names. The day
//! arithmetic is Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (proleptic Gregorian calendar).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// An instant split into its UTC calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

impl Civil {
    /// `days` since 1970-01-01 plus `secs` (0..86_400) into that day.
    fn new(days: i64, secs: i64) -> Civil {
        let (year, month, day) = civil_from_days(days);
        Civil { year, month, day, hour: secs / 3600, minute: secs / 60 % 60, second: secs % 60 }
    }

    /// Seconds since the epoch, negative before 1970.
    fn at(secs: i64) -> Civil {
        Civil::new(secs.div_euclid(86_400), secs.rem_euclid(86_400))
    }

    /// `20261128T175346Z`: sorts by time and needs no quoting in a file name.
    fn compact(&self) -> String {
        let Civil { year, month, day, hour, minute, second } = self;
        format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z")
    }
}

impl fmt::Display for Civil {
    /// `2026-11-28T17:53:46Z`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Civil { year, month, day, hour, minute, second } = self;
        write!(f, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day counted from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses exactly `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds): one spelling,
/// so a formula's text says exactly which instant it means.
pub fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[r];
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    // Rejects 2010-02-30 and friends: the date must survive a round trip.
    if civil_from_days(days) != (y, mo, d) {
        return None;
    }
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Formats seconds as `YYYY-MM-DDTHH:MM:SSZ` (`@SECONDS` outside years
/// 0-9999, which that form cannot spell and `parse_utc` would not read).
pub fn format_utc(secs: i64) -> String {
    let civil = Civil::at(secs);
    if !(0..=9999).contains(&civil.year) {
        return format!("@{secs}");
    }
    civil.to_string()
}

/// Splits unsigned seconds since the epoch (`u64 / 86_400` always fits an
/// i64, so the casts are exact).
fn civil_u64(secs: u64) -> Civil {
    Civil::new((secs / 86_400) as i64, (secs % 86_400) as i64)
}

fn now_secs() -> u64 {
    // A clock before 1970 is a broken clock; 0 keeps records readable.
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `2026-11-28T17:53:46Z`
pub(crate) fn rfc3339(secs: u64) -> String {
    civil_u64(secs).to_string()
}

pub(crate) fn rfc3339_now() -> String {
    rfc3339(now_secs())
}

/// `20261128T175346Z`: sorts by time and needs no quoting in a file name.
pub(crate) fn stamp_now() -> String {
    civil_u64(now_secs()).compact()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_737_226), "2026-12-31T17:13:46Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(civil_u64(1_798_737_226).compact(), "20261231T171346Z");
    }

    #[test]
    fn utc_text_round_trips() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_utc("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(parse_utc("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_utc("2010-01-01 00:00:00Z"), None);
        assert_eq!(parse_utc("2010-01-01T00:00:00+01:00"), None);
        for secs in [-86_401, 0, 951_782_400, 1_709_210_096, 4_102_444_800] {
            assert_eq!(parse_utc(&format_utc(secs)), Some(secs));
        }
        assert_eq!(format_utc(253_402_300_800), "@253402300800");
        assert_eq!(format_utc(4_107_542_399), rfc3339(4_107_542_399));
    }
}
