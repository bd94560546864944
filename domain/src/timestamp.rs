use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::Invalid;

/// A UTC instant with millisecond precision, written as RFC 3339 (`2024-01-01T00:00:00.000Z`).
/// Truncated on construction so that what is stored is exactly what is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.to_string()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
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
}
