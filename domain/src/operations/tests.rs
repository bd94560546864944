use super::*;
use std::collections::HashSet;

#[test]
fn the_table_is_indexed_by_method_and_names_are_unique() {
    let mut names = HashSet::new();
    for (i, op) in OPERATIONS.iter().enumerate() {
        assert_eq!(op.method as usize, i, "{}", op.rpc);
        assert_eq!(Method::parse(op.rpc), Some(op.method));
        assert!(names.insert(op.rpc), "{} twice", op.rpc);
        assert!(op.rpc.starts_with("users."), "{}", op.rpc);
        assert!(!op.rest.is_empty(), "{} has no REST route", op.rpc);
        assert!(!op.doc.answers.is_empty(), "{} documents no answer", op.rpc);
    }
    assert_eq!(Method::parse("users.nope"), None);
}

#[test]
fn every_route_is_declared_once() {
    let mut routes = HashSet::new();
    for op in &OPERATIONS {
        for r in op.rest {
            assert!(
                routes.insert((r.verb, r.path)),
                "{} {}",
                r.verb.as_str(),
                r.path
            );
            assert!(r.path.starts_with("/api/"), "{}", r.path);
            // A body travels with PATCH and POST, never with GET or DELETE; a POST
            // without one is an action on what its path names.
            let body = matches!(r.input, Input::Body(_));
            match r.verb {
                Verb::Get | Verb::Delete => assert!(!body, "{}", r.path),
                Verb::Patch => assert!(body, "{}", r.path),
                Verb::Post => {}
            }
        }
    }
}
