use chrono::{DateTime, Datelike, DurationRound, SecondsFormat, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize, Serializer, ser};

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

impl Timestamp {
    /// Its RFC 3339 text, digits into a fixed buffer rather than through chrono's formatter
    /// (which costs a few times more), when the buffer holds it: none for a year outside
    /// 0..=9999 or a leap second.
    fn text(&self) -> Option<[u8; 24]> {
        let t = self.0.naive_utc();
        let millis = t.nanosecond() / 1_000_000;
        let year = u32::try_from(t.year()).ok().filter(|_| millis < 1000)?;
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let fields = [
            (0, 4, year),
            (5, 2, t.month()),
            (8, 2, t.day()),
            (11, 2, t.hour()),
            (14, 2, t.minute()),
            (17, 2, t.second()),
            (20, 3, millis),
        ];
        for (at, width, mut value) in fields {
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
            if value != 0 {
                return None;
            }
        }
        Some(text)
    }

    fn chrono_text(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// Written straight into the output: a page of users holds hundreds of timestamps.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Some(text) => s.serialize_str(std::str::from_utf8(&text).map_err(ser::Error::custom)?),
            None => s.serialize_str(&self.chrono_text()),
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.text() {
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?),
            None => f.write_str(&self.chrono_text()),
        }
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

    #[test]
    fn serialises_as_its_text() {
        let t = Timestamp::parse("2024-02-29T23:59:59.999Z").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#""2024-02-29T23:59:59.999Z""#
        );
        let leap = Timestamp::from(DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap());
        assert_eq!(leap.to_string(), "2016-12-31T23:59:60.500Z");
    }

    proptest::proptest! {
        /// The digits written by hand, as text and as JSON, are chrono's RFC 3339, for any
        /// instant chrono holds (years far outside 0..=9999 and leap seconds fall back to
        /// chrono itself).
        #[test]
        fn prints_what_chrono_prints(secs in -400_000_000_000i64..400_000_000_000, nanos in 0u32..2_000_000_000) {
            if let Some(at) = DateTime::<Utc>::from_timestamp(secs, nanos) {
                let t = Timestamp::from(at);
                let chrono = t.0.to_rfc3339_opts(SecondsFormat::Millis, true);
                proptest::prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{chrono}\""));
                proptest::prop_assert_eq!(t.to_string(), chrono);
            }
        }
    }
}
