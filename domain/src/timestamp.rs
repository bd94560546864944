use chrono::{DateTime, Datelike, DurationRound, SecondsFormat, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::Invalid;

/// A UTC instant with millisecond precision, written as RFC 3339 (`2024-01-01T00:00:00.000Z`).
/// Truncated on construction so that what is stored is exactly what is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Self::from(t.with_timezone(&Utc)))
            .map_err(|_| {
                Invalid::new("must be an RFC 3339 timestamp, e.g. 2024-01-01T10:00:00.000Z")
            })
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// Calls `f` with the text, RFC 3339 with milliseconds and `Z`, exactly as chrono's
    /// `to_rfc3339_opts` writes it, but on the stack for the four-digit years: every user
    /// shown carries two or three of these, and chrono's own takes a string and the
    /// formatting machinery each (4 % of a page of users).
    fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let t = self.0;
        let Ok(year) = u32::try_from(t.year()) else {
            return f(&t.to_rfc3339_opts(SecondsFormat::Millis, true));
        };
        // A leap second is the 60th second of its minute.
        let (second, nano) = match t.nanosecond().checked_sub(1_000_000_000) {
            Some(nano) => (t.second() + 1, nano),
            None => (t.second(), t.nanosecond()),
        };
        let mut text = *b"0000-00-00T00:00:00.000Z";
        for (at, width, value) in [
            (0, 4, year),
            (5, 2, t.month()),
            (8, 2, t.day()),
            (11, 2, t.hour()),
            (14, 2, t.minute()),
            (17, 2, second),
            (20, 3, nano / 1_000_000),
        ] {
            let mut rest = value;
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            if rest != 0 {
                return f(&t.to_rfc3339_opts(SecondsFormat::Millis, true));
            }
        }
        match std::str::from_utf8(&text) {
            Ok(text) => f(text),
            Err(_) => f(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t))
    }
}

impl TryFrom<String> for Timestamp {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Invalid> {
        Self::parse(&value)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_text(|text| f.write_str(text))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_text(|text| s.serialize_str(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_utc_with_millis() {
        let t = Timestamp::parse("2024-01-01T13:00:00.123456+03:00").unwrap();
        assert_eq!(t.to_string(), "2024-01-01T10:00:00.123Z");
        assert!(Timestamp::parse("yesterday").is_err());
    }

    proptest::proptest! {
        /// Written as chrono writes it, for any instant chrono holds (leap seconds and
        /// years past 9999 or before 0 included).
        #[test]
        fn written_as_chrono_writes_it(
            ms in DateTime::<Utc>::MIN_UTC.timestamp_millis()..=DateTime::<Utc>::MAX_UTC.timestamp_millis(),
            leap in proptest::bool::weighted(0.1),
        ) {
            let mut t = DateTime::from_timestamp_millis(ms).unwrap();
            if leap && t.second() == 59 {
                t = t.with_nanosecond(t.nanosecond() + 1_000_000_000).unwrap();
            }
            let t = Timestamp(t);
            let chrono = t.0.to_rfc3339_opts(SecondsFormat::Millis, true);
            proptest::prop_assert_eq!(t.to_string(), chrono.clone());
            proptest::prop_assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(chrono));
        }
    }

    #[test]
    fn edges_are_written_as_chrono_writes_them() {
        for text in [
            "0000-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00.000Z",
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), text);
        }
        for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let t = Timestamp::from(t);
            assert_eq!(
                t.to_string(),
                t.0.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }
}
