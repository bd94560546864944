//! Parameter shapes that arrive both as JSON (RPC, REST bodies) and as query-string text.

use serde::{Deserialize, Deserializer};

/// A boolean that also reads `"true"`/`"false"`/`"1"`/`"0"`, as a query string carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("must be a boolean"))? {
            Raw::Bool(b) => Ok(Flag(b)),
            Raw::Text(t) => match t.as_str() {
                "true" | "1" => Ok(Flag(true)),
                "false" | "0" | "" => Ok(Flag(false)),
                _ => Err(serde::de::Error::custom("must be true or false")),
            },
        }
    }
}

/// A list of strings: a JSON array, or a comma-separated string as a query string carries it.
/// Pieces are trimmed and kept even when empty, so that `ids=a,,b` reports its empty id
/// rather than answering for fewer ids than it names (a `fields` list ignores empty names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Many(Vec<String>),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("must be an array of strings or a comma-separated string")
        })? {
            Raw::Many(v) => Ok(List(v)),
            Raw::Text(t) => Ok(List(
                t.split(',').map(str::trim).map(str::to_owned).collect(),
            )),
        }
    }
}

/// A whole number that also reads from text (`"20"`), as a query string carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        let bad = || serde::de::Error::custom("must be a whole number");
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Number(n) => Ok(Count(n)),
            Raw::Text(t) => t.trim().parse().map(Count).map_err(|_| bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_and_lists_read_both_forms() {
        assert_eq!(
            serde_json::from_value::<Flag>(json!("true")).unwrap(),
            Flag(true)
        );
        assert_eq!(
            serde_json::from_value::<Flag>(json!(false)).unwrap(),
            Flag(false)
        );
        assert!(serde_json::from_value::<Flag>(json!("yes")).is_err());
        assert!(serde_json::from_value::<Flag>(json!(1)).is_err());
        assert_eq!(
            serde_json::from_value::<List>(json!("a, b,,c")).unwrap(),
            List(vec!["a".into(), "b".into(), "".into(), "c".into()])
        );
        assert_eq!(
            serde_json::from_value::<List>(json!(["a"])).unwrap(),
            List(vec!["a".into()])
        );
        assert!(serde_json::from_value::<List>(json!([1])).is_err());
        assert_eq!(
            serde_json::from_value::<Count>(json!(" 20")).unwrap(),
            Count(20)
        );
        assert_eq!(serde_json::from_value::<Count>(json!(7)).unwrap(), Count(7));
        for bad in [json!(-1), json!("x"), json!(1.5), json!("99999999999")] {
            assert!(serde_json::from_value::<Count>(bad).is_err());
        }
    }
}
