use serde::Serialize;
use serde_json::{Map, Value};

/// What a write changed: the dotted paths of the changed leaves, and the values before and
/// after, restricted to those leaves (the `data` of the *_UPDATED / *_CHANGED events).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Changes {
    pub changed: Vec<String>,
    pub previous: Value,
    pub current: Value,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

/// Compares two documents leaf by leaf. Objects are walked; anything else (arrays included)
/// is a leaf. A key missing on one side counts as `null` there. Paths come out sorted, and
/// `previous`/`current` list their keys in that same order.
pub fn diff(previous: &Value, current: &Value) -> Changes {
    let mut leaves = Vec::new();
    walk(previous, current, &mut Vec::new(), &mut leaves);
    leaves.sort_by(|a, b| a.0.cmp(&b.0));
    let mut changes = Changes {
        changed: Vec::with_capacity(leaves.len()),
        previous: Value::Object(Map::new()),
        current: Value::Object(Map::new()),
    };
    for (path, before, after) in leaves {
        insert_at(&mut changes.previous, &path, before.clone());
        insert_at(&mut changes.current, &path, after.clone());
        changes.changed.push(path.join("."));
    }
    changes
}

/// A changed leaf: its path, its value before and after.
type Leaf<'a> = (Vec<&'a str>, &'a Value, &'a Value);

fn walk<'a>(prev: &'a Value, cur: &'a Value, path: &mut Vec<&'a str>, out: &mut Vec<Leaf<'a>>) {
    match (prev, cur) {
        (Value::Object(p), Value::Object(c)) => {
            let keys = c.keys().chain(p.keys().filter(|k| !c.contains_key(*k)));
            for key in keys {
                path.push(key);
                walk(
                    p.get(key).unwrap_or(&Value::Null),
                    c.get(key).unwrap_or(&Value::Null),
                    path,
                    out,
                );
                path.pop();
            }
        }
        (p, c) if p == c => {}
        (p, c) => out.push((path.clone(), p, c)),
    }
}

fn insert_at(node: &mut Value, path: &[&str], value: Value) {
    match path.split_first() {
        None => *node = value,
        Some((first, rest)) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            if let Value::Object(m) = node {
                insert_at(m.entry(*first).or_insert(Value::Null), rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn the_seed_example() {
        let prev = json!({"language": "ru", "theme": "auto",
                          "gameSettings": {"autoDownload": false, "cloudSave": true}});
        let cur = json!({"language": "en", "theme": "auto",
                         "gameSettings": {"autoDownload": true, "cloudSave": true}});
        let d = diff(&prev, &cur);
        assert_eq!(d.changed, vec!["gameSettings.autoDownload", "language"]);
        assert_eq!(
            d.previous,
            json!({"gameSettings": {"autoDownload": false}, "language": "ru"})
        );
        assert_eq!(
            d.current,
            json!({"gameSettings": {"autoDownload": true}, "language": "en"})
        );
    }

    #[test]
    fn no_change_is_empty() {
        let v = json!({"a": {"b": [1, 2]}, "c": null});
        assert!(diff(&v, &v).is_empty());
    }

    #[test]
    fn object_replaced_by_null_is_one_leaf() {
        let d = diff(
            &json!({"billingInfo": {"currency": "RUB"}}),
            &json!({"billingInfo": null}),
        );
        assert_eq!(d.changed, vec!["billingInfo"]);
        assert_eq!(d.previous, json!({"billingInfo": {"currency": "RUB"}}));
        assert_eq!(d.current, json!({"billingInfo": null}));
    }

    #[test]
    fn arrays_are_leaves() {
        let d = diff(
            &json!({"p": {"g": ["a"]}}),
            &json!({"p": {"g": ["a", "b"]}}),
        );
        assert_eq!(d.changed, vec!["p.g"]);
        assert_eq!(d.current, json!({"p": {"g": ["a", "b"]}}));
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..4).prop_map(Value::from),
            "[ab]{0,2}".prop_map(Value::String),
        ]
    }

    fn doc() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop::collection::btree_map("[abc]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    /// Looks a dotted path up, treating a missing key as null.
    fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
        path.split('.')
            .try_fold(v, |node, k| node.get(k))
            .unwrap_or(&Value::Null)
    }

    proptest! {
        #[test]
        fn every_changed_path_differs_and_records_both_sides(a in doc(), b in doc()) {
            // The service diffs objects (whole documents), never bare values.
            prop_assume!(a.is_object() && b.is_object());
            let d = diff(&a, &b);
            for p in &d.changed {
                prop_assert_ne!(at(&a, p), at(&b, p));
                prop_assert_eq!(at(&d.previous, p), at(&a, p));
                prop_assert_eq!(at(&d.current, p), at(&b, p));
            }
        }

        #[test]
        fn empty_exactly_when_documents_agree(a in doc(), b in doc()) {
            prop_assume!(a.is_object() && b.is_object());
            let d = diff(&a, &b);
            prop_assert_eq!(d.is_empty(), strip_nulls(&a) == strip_nulls(&b));
        }
    }

    /// Missing and null are the same to the diff.
    fn strip_nulls(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip_nulls(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}
