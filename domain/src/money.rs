use serde::{Deserialize, Serialize, Serializer};

use super::Invalid;

/// An exact amount of money in minor units (kopecks, cents). Parsed from a decimal string or a
/// JSON number with at most two decimal places and printed as `"1234.50"`; arithmetic is on
/// integers, so no float ever touches a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Amount(i64);

/// Written straight into the output, as its text (every user shown holds a total).
impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text(&mut [0; Self::TEXT]))
    }
}

impl Amount {
    /// Large enough for any real payment, small enough that sums of millions cannot overflow.
    pub const MAX_PAYMENT_MINOR: i64 = 10_000_000_000_000;

    pub fn from_minor(minor: i64) -> Self {
        Self(minor)
    }

    pub fn minor(&self) -> i64 {
        self.0
    }

    /// The longest text: a sign, 17 digits of units, a point and two of cents.
    const TEXT: usize = 21;

    /// `-1234.50`: digits into `buf` from its end rather than through a formatter.
    fn text<'a>(&self, buf: &'a mut [u8; Self::TEXT]) -> &'a str {
        let mut rest = self.0.unsigned_abs();
        let mut at = buf.len();
        let mut put = |byte: u8| {
            at -= 1;
            buf[at] = byte;
        };
        for place in 0.. {
            if place == 2 {
                put(b'.');
            }
            put(b'0' + (rest % 10) as u8);
            rest /= 10;
            if place >= 2 && rest == 0 {
                break;
            }
        }
        if self.0 < 0 {
            put(b'-');
        }
        std::str::from_utf8(&buf[at..]).unwrap_or_default()
    }

    /// A payment amount: strictly positive and below [`Self::MAX_PAYMENT_MINOR`].
    pub fn parse_payment(s: &str) -> Result<Self, Invalid> {
        match Self::parse_minor(s) {
            Some(minor) if minor > 0 && minor <= Self::MAX_PAYMENT_MINOR => Ok(Self(minor)),
            _ => Err(Invalid::new(
                "must be a positive decimal amount with at most 2 decimal places, e.g. \"199.99\"",
            )),
        }
    }

    /// A running total as the service prints it: zero or more.
    pub fn parse_total(s: &str) -> Result<Self, Invalid> {
        Self::parse_minor(s)
            .map(Self)
            .ok_or_else(|| Invalid::new("must be a decimal amount of zero or more, e.g. \"0.00\""))
    }

    /// Plain decimal text with at most two decimal places, in minor units.
    fn parse_minor(s: &str) -> Option<i64> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty()
            || frac.len() > 2
            || (s.contains('.') && frac.is_empty())
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let frac: i64 = format!("{frac:0<2}").parse().ok()?;
        whole.checked_mul(100)?.checked_add(frac)
    }

    /// For fields that hold a total rather than a payment (`#[serde(deserialize_with)]`).
    pub fn deserialize_total<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_total(&s).map_err(serde::de::Error::custom)
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl TryFrom<serde_json::Value> for Amount {
    type Error = Invalid;
    fn try_from(v: serde_json::Value) -> Result<Self, Invalid> {
        match v {
            serde_json::Value::String(s) => Self::parse_payment(&s),
            // serde_json prints a number as the shortest text that reads back the same, which
            // for an amount like 199.99 is the text the caller wrote.
            serde_json::Value::Number(n) => Self::parse_payment(&n.to_string()),
            _ => Err(Invalid::new("must be a decimal string or a number")),
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text(&mut [0; Self::TEXT]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn parses_decimal_text_and_numbers() {
        assert_eq!(Amount::parse_payment("199.99").unwrap().minor(), 19999);
        assert_eq!(Amount::parse_payment("5").unwrap().minor(), 500);
        assert_eq!(Amount::parse_payment("0.1").unwrap().minor(), 10);
        assert_eq!(Amount::try_from(json!(0.1)).unwrap().minor(), 10);
        assert_eq!(Amount::try_from(json!(199.99)).unwrap().minor(), 19999);
        for bad in [
            "0", "0.00", "-1", "1.", ".5", "1.234", "1e3", "abc", "", "1,5",
        ] {
            assert!(Amount::parse_payment(bad).is_err(), "{bad} accepted");
        }
        assert!(Amount::try_from(json!(true)).is_err());
        assert_eq!(Amount::parse_total("0.00").unwrap().minor(), 0);
        assert_eq!(
            Amount::parse_total("12345678901234567.89").unwrap().minor(),
            1234567890123456789
        );
        for bad in ["-1.00", "1.234", "99999999999999999999", ""] {
            assert!(Amount::parse_total(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sums_are_exact() {
        let tenth = Amount::parse_payment("0.10").unwrap();
        let mut sum = Amount::default();
        for _ in 0..3 {
            sum = sum.checked_add(tenth).unwrap();
        }
        assert_eq!(sum.to_string(), "0.30");
    }

    #[test]
    fn text_at_the_edges() {
        for (minor, text) in [
            (0, "0.00"),
            (5, "0.05"),
            (-5, "-0.05"),
            (100, "1.00"),
            (-123_456, "-1234.56"),
            (i64::MAX, "92233720368547758.07"),
            (i64::MIN, "-92233720368547758.08"),
        ] {
            assert_eq!(Amount::from_minor(minor).to_string(), text);
        }
    }

    proptest! {
        #[test]
        fn text_round_trips(minor in 1i64..=Amount::MAX_PAYMENT_MINOR) {
            let a = Amount::from_minor(minor);
            prop_assert_eq!(Amount::parse_payment(&a.to_string()).unwrap(), a);
        }

        /// The digits written by hand, as text and as JSON, are the formatter's.
        #[test]
        fn text_is_units_point_cents(minor in proptest::num::i64::ANY) {
            let a = Amount::from_minor(minor);
            let (sign, abs) = (if minor < 0 { "-" } else { "" }, minor.unsigned_abs());
            let expected = format!("{sign}{}.{:02}", abs / 100, abs % 100);
            prop_assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{expected}\""));
            prop_assert_eq!(a.to_string(), expected);
        }
    }
}
