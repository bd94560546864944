//! Parameter shapes that arrive both as JSON (RPC, REST bodies) and as query-string text.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
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
        // A visitor, not an untagged enum: that one buffers the input and, before it tries
        // the text, writes an error quoting all of it (a batch's ids, at every call).
        struct Pieces;
        impl<'de> Visitor<'de> for Pieces {
            type Value = List;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(LIST_SHAPE)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<List, E> {
                Ok(List(text.split(',').map(|p| p.trim().to_owned()).collect()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<List, A::Error> {
                let mut list = Vec::with_capacity(items.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = items.next_element()? {
                    list.push(item);
                }
                Ok(List(list))
            }
        }
        d.deserialize_any(Pieces)
            .map_err(|_| de::Error::custom(format!("must be {LIST_SHAPE}")))
    }
}

const LIST_SHAPE: &str = "an array of strings or a comma-separated string";

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
