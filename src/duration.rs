//! Durations as a user types them (`500ms`, `30s`, `5m`, `2h`, `1.5s`; a
//! bare number is seconds, as timeout(1) reads one), and back.

use std::time::Duration;

/// Parses `text`; the error says what is accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; use a number with ms, s, m or h, e.g. 500ms, 30s, 5m, 2h");
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// The shortest of the forms [`parse`] reads that says `d` exactly enough
/// for a message: `10s`, `1.5s`, `500ms`, `5m`, `2h`.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && d > Duration::ZERO {
        return format!("{}us", d.as_micros());
    }
    match ms {
        m if m % 3_600_000 == 0 && m > 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 && m > 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m if m < 1000 => format!("{m}ms"),
        _ => format!("{}s", d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_a_user_types() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "-1s", "1d", "1.2.3s", "ms", ".", "1e3s", "inf"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn shown_as_typed() {
        for text in ["10s", "500ms", "5m", "2h", "1.5s", "0s"] {
            assert_eq!(display(parse(text).unwrap()), text);
        }
    }
}
