use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::error::CoreError;
use crate::quote::{QUOTE_CHARS, cut};
use crate::{BillingInfo, BillingStats, Preferences, PrivacySettings};

const TOP_LEVEL: [&str; 14] = [
    "id",
    "email",
    "name",
    "avatarUrl",
    "isActive",
    "lastLoginAt",
    "lastLoginIp",
    "createdAt",
    "updatedAt",
    "preferences",
    "privacySettings",
    "billingInfo",
    "billingStats",
    "metadata",
];

/// Every path `fields` may name: the top-level fields and every path into the structured
/// sub-objects. `metadata` is free-form, so only the whole of it can be projected.
pub fn allowed_paths() -> &'static BTreeSet<String> {
    static ALLOWED: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
        let mut out: BTreeSet<String> = TOP_LEVEL.iter().map(|s| s.to_string()).collect();
        let nested = [
            ("preferences", serde_json::to_value(Preferences::default())),
            (
                "privacySettings",
                serde_json::to_value(PrivacySettings::default()),
            ),
            ("billingInfo", serde_json::to_value(BillingInfo::default())),
            (
                "billingStats",
                serde_json::to_value(BillingStats::default()),
            ),
        ];
        for (name, value) in nested {
            if let Ok(value) = value {
                collect_paths(name, &value, &mut out);
            }
        }
        out
    });
    &ALLOWED
}

fn collect_paths(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
    if let Value::Object(m) = value {
        for (k, v) in m {
            let path = format!("{prefix}.{k}");
            collect_paths(&path, v, out);
            out.insert(path);
        }
    }
}

/// How many unknown names an error names.
const SHOWN_UNKNOWN: usize = 5;

/// A validated `fields` list: which parts of a user to return. `id` is always returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Sorted and without paths that a shorter one already covers.
    paths: Vec<String>,
}

impl Projection {
    /// Parses the names given as `fields`; `None` when the list is empty (no projection).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Option<Self>, CoreError> {
        let allowed = allowed_paths();
        let mut paths = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in names
            .iter()
            .map(|n| n.as_ref().trim())
            .filter(|n| !n.is_empty())
        {
            if allowed.contains(name) {
                paths.insert(name.to_owned());
            } else {
                unknown.push(name.to_owned());
            }
        }
        if !unknown.is_empty() {
            // A few names, each cut: the list is the caller's and may be long.
            let mut shown: Vec<String> = unknown
                .iter()
                .take(SHOWN_UNKNOWN)
                .map(|u| cut(u, QUOTE_CHARS).into_owned())
                .collect();
            if unknown.len() > SHOWN_UNKNOWN {
                shown.push(format!("and {} more", unknown.len() - SHOWN_UNKNOWN));
            }
            return Err(CoreError::invalid(
                "fields",
                format!(
                    "unknown field(s) {}; allowed: {}",
                    shown.join(", "),
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if paths.is_empty() {
            return Ok(None);
        }
        // BTreeSet order puts "a" before "a.b", so a covering path is always seen first.
        let mut kept: Vec<String> = Vec::with_capacity(paths.len());
        for p in paths {
            let covered = kept
                .iter()
                .any(|k| p.starts_with(k.as_str()) && p[k.len()..].starts_with('.'));
            if !covered {
                kept.push(p);
            }
        }
        Ok(Some(Self { paths: kept }))
    }

    /// Picks the projected paths out of a full user view. A path whose value (or parent) is
    /// null or absent comes out as null, so the shape of the answer is always the same.
    pub fn apply(&self, view: &Value) -> Value {
        let mut out = Map::new();
        out.insert(
            "id".to_owned(),
            view.get("id").cloned().unwrap_or(Value::Null),
        );
        for path in &self.paths {
            let keys: Vec<&str> = path.split('.').collect();
            let value = keys
                .iter()
                .try_fold(view, |node, k| node.get(*k))
                .cloned()
                .unwrap_or(Value::Null);
            insert(&mut out, &keys, value);
        }
        Value::Object(out)
    }
}

fn insert(map: &mut Map<String, Value>, keys: &[&str], value: Value) {
    match keys {
        [] => {}
        [last] => {
            map.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let child = map
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(child) = child {
                insert(child, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "u1", "email": "a@b.co", "name": "Ann", "avatarUrl": null,
            "preferences": {"language": "ru", "gameSettings": {"autoDownload": true, "preferredGenres": ["rpg"]}},
            "privacySettings": {"profileVisibility": "friends", "showOnlineStatus": true},
            "billingInfo": null
        })
    }

    #[test]
    fn dotted_paths_nest() {
        let p = Projection::parse(&[
            "name",
            "preferences.gameSettings",
            "privacySettings.profileVisibility",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            p.apply(&user()),
            json!({"id": "u1", "name": "Ann",
                   "preferences": {"gameSettings": {"autoDownload": true, "preferredGenres": ["rpg"]}},
                   "privacySettings": {"profileVisibility": "friends"}})
        );
    }

    #[test]
    fn nulls_are_present() {
        let p = Projection::parse(&["avatarUrl", "billingInfo.currency"])
            .unwrap()
            .unwrap();
        assert_eq!(
            p.apply(&user()),
            json!({"id": "u1", "avatarUrl": null, "billingInfo": {"currency": null}})
        );
    }

    #[test]
    fn a_whole_object_covers_its_parts() {
        let p = Projection::parse(&["preferences.language", "preferences"])
            .unwrap()
            .unwrap();
        assert_eq!(p.apply(&user())["preferences"], user()["preferences"]);
    }

    #[test]
    fn unknown_and_secret_paths_are_refused() {
        for bad in [
            "passwordHash",
            "nope",
            "preferences.nope",
            "metadata.x",
            "name.first",
        ] {
            let err = Projection::parse(&[bad]).unwrap_err();
            assert!(err.to_string().contains("allowed"), "{bad}: {err}");
        }
        assert_eq!(Projection::parse::<&str>(&[]).unwrap(), None);
        assert_eq!(Projection::parse(&["", " "]).unwrap(), None);
    }

    #[test]
    fn allowed_paths_cover_leaves() {
        let a = allowed_paths();
        for p in [
            "preferences.gameSettings.autoDownload",
            "privacySettings.showAchievements",
            "billingInfo.taxId",
            "billingStats.totalSpent",
            "preferences.downloadSettings.downloadPath",
        ] {
            assert!(a.contains(p), "{p}");
        }
        assert!(!a.contains("passwordHash"));
    }

    /// A view in which every allowed path is present.
    fn full_user() -> Value {
        let mut m = Map::new();
        let all = allowed_paths();
        for p in all {
            let is_leaf = !all
                .iter()
                .any(|q| q.starts_with(p.as_str()) && q[p.len()..].starts_with('.'));
            if is_leaf {
                insert(&mut m, &p.split('.').collect::<Vec<_>>(), json!("v"));
            }
        }
        Value::Object(m)
    }

    proptest! {
        #[test]
        fn projection_only_returns_what_was_asked(picks in prop::collection::vec(0usize..64, 0..6)) {
            let all: Vec<&String> = allowed_paths().iter().collect();
            let names: Vec<&str> = picks.iter().map(|i| all[i % all.len()].as_str()).collect();
            let Some(p) = Projection::parse(&names).unwrap() else { return Ok(()) };
            let out = p.apply(&full_user());
            for (key, _) in out.as_object().unwrap() {
                prop_assert!(key == "id" || names.iter().any(|n| n.split('.').next() == Some(key.as_str())));
            }
            for n in &names {
                let found = n.split('.').try_fold(&out, |node, k| node.get(k));
                prop_assert!(found.is_some(), "{} missing from {}", n, out);
            }
        }
    }
}
