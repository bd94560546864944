use super::*;
use crate::config::ApiKey;

fn auth(keys: &[(&str, &str)], secret: Option<&str>, ips: &[&str]) -> Authenticator {
    Authenticator::new(AuthConfig {
        api_keys: keys
            .iter()
            .map(|(c, k)| ApiKey {
                caller: c.to_string(),
                key: k.to_string(),
                bare: false,
            })
            .collect(),
        internal_secret: secret.map(str::to_owned),
        service_names: ["library-service".to_owned(), "auth-service".to_owned()].into(),
        allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        credential_readers: ["auth-service".to_owned()].into(),
        export_readers: ["support-desk".to_owned()].into(),
        audit_readers: ["support-desk".to_owned()].into(),
        failures_per_address: user_core::limits::RateLimit {
            requests: 3,
            window: std::time::Duration::from_secs(60),
        },
    })
}

fn key(k: &str) -> Credentials<'_> {
    Credentials {
        api_key: Some(k),
        ..Default::default()
    }
}

fn ip(s: &str) -> Source<'static> {
    Source::Address(s.parse().unwrap())
}

const RPC: Source<'static> = Source::Broker { user_id: None };

#[test]
fn api_keys_identify_callers() {
    let keys = [
        ("auth-service", "k1"),
        ("game-catalog", "k2"),
        ("support-desk", "k3"),
    ];
    let a = auth(&keys, None, &[]);
    let c = a.authenticate(&key("k1"), ip("10.1.2.3")).unwrap();
    assert_eq!(c.name, "auth-service");
    let may = |k, p| a.authenticate(&key(k), RPC).unwrap().rights.allow(p);
    use user_domain::operations::Permission::{AuditReader, Caller, CredentialReader, Exporter};
    assert!(may("k1", CredentialReader) && may("k1", Exporter) && !may("k1", AuditReader));
    assert!(may("k2", Caller) && !may("k2", Exporter) && !may("k2", AuditReader));
    assert!(may("k3", Exporter) && may("k3", AuditReader) && !may("k3", CredentialReader));
    assert!(matches!(
        a.authenticate(&key("nope"), RPC),
        Err(CoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        a.authenticate(&Credentials::default(), RPC),
        Err(CoreError::Unauthenticated(_))
    ));
}

#[test]
fn internal_secret_takes_the_service_name() {
    let a = auth(&[], Some("s3cret"), &[]);
    let creds = Credentials {
        internal_secret: Some("s3cret"),
        service_name: Some("library-service"),
        ..Default::default()
    };
    assert_eq!(a.authenticate(&creds, RPC).unwrap().name, "library-service");
    let claims = |name| Credentials {
        internal_secret: Some("s3cret"),
        service_name: Some(name),
        ..Default::default()
    };
    // An undeclared name is not taken: the caller is `internal`.
    let long = "x".repeat(5000);
    for invented in ["payment-service-7", long.as_str(), ""] {
        assert_eq!(
            a.authenticate(&claims(invented), RPC).unwrap().name,
            "internal"
        );
    }
    // A declared name is, but never with the right to read credentials.
    let auth = a.authenticate(&claims("auth-service"), RPC).unwrap();
    assert_eq!(auth.name, "auth-service");
    assert_eq!(
        auth.rights,
        Rights::default(),
        "the secret cannot claim credential reads"
    );
    let creds = Credentials {
        internal_secret: Some("s3cret"),
        ..Default::default()
    };
    assert_eq!(a.authenticate(&creds, RPC).unwrap().name, "internal");
    let creds = Credentials {
        internal_secret: Some("wrong"),
        ..Default::default()
    };
    assert!(a.authenticate(&creds, RPC).is_err());
}

#[test]
fn allow_list_is_an_additional_requirement() {
    let a = auth(
        &[("svc", "k")],
        None,
        &["10.0.0.0/8", "2001:db8::/32", "127.0.0.1/32"],
    );
    assert!(a.authenticate(&key("k"), ip("10.20.30.40")).is_ok());
    assert!(a.authenticate(&key("k"), ip("2001:db8::7")).is_ok());
    assert!(
        a.authenticate(&key("k"), ip("::ffff:127.0.0.1")).is_ok(),
        "IPv4-mapped addresses count as IPv4"
    );
    assert!(matches!(
        a.authenticate(&key("k"), ip("192.168.1.1")),
        Err(CoreError::Forbidden(_))
    ));
    assert!(matches!(
        a.authenticate(&key("k"), ip("2001:db9::1")),
        Err(CoreError::Forbidden(_))
    ));
    assert!(matches!(
        a.authenticate(&key("bad"), ip("10.0.0.1")),
        Err(CoreError::Unauthenticated(_))
    ));
}

#[test]
fn open_mode_is_loopback_only() {
    let a = auth(&[], None, &[]);
    assert_eq!(
        a.authenticate(&Credentials::default(), ip("127.0.0.1"))
            .unwrap()
            .name,
        "local"
    );
    assert!(a.authenticate(&Credentials::default(), ip("::1")).is_ok());
    assert!(matches!(
        a.authenticate(&Credentials::default(), ip("10.0.0.1")),
        Err(CoreError::Forbidden(_))
    ));
}

#[test]
fn bearer_and_header_forms() {
    let h = |name: &str| match name {
        "authorization" => Some("Bearer  abc "),
        _ => None,
    };
    assert_eq!(Credentials::from_headers(h).api_key, Some("abc"));
    let h = |name: &str| (name == "authorization").then_some("Basic abc");
    assert_eq!(Credentials::from_headers(h).api_key, None);
}

#[test]
fn failures_past_the_limit_get_429_and_valid_credentials_are_still_served() {
    let a = auth(&[("svc", "k")], None, &[]);
    let (attacker, other) = (ip("10.9.9.9"), ip("10.1.1.1"));
    for n in 0..3 {
        assert!(matches!(
            a.authenticate(&key(&format!("guess-{n}")), attacker),
            Err(CoreError::Unauthenticated(_))
        ));
    }
    // A client retrying its one stale key is told what is wrong, not rate limited.
    for _ in 0..5 {
        assert!(matches!(
            a.authenticate(&key("guess-0"), attacker),
            Err(CoreError::Unauthenticated(_))
        ));
    }
    // A 4th different credential is past the allowance: 429, and so is any failure after.
    for guess in ["guess-3", "guess-0", ""] {
        assert!(
            matches!(
                a.authenticate(&key(guess), attacker),
                Err(CoreError::RateLimited {
                    retry_after_secs: 1..=60
                })
            ),
            "{guess}"
        );
    }
    // The right key from the same address is served, and another address is untouched.
    assert_eq!(a.authenticate(&key("k"), attacker).unwrap().name, "svc");
    assert!(matches!(
        a.authenticate(&key("guess-9"), other),
        Err(CoreError::Unauthenticated(_))
    ));
}

#[test]
fn ipv6_failures_count_per_64() {
    let a = auth(&[("svc", "k")], None, &[]);
    for n in 0..3 {
        let from = ip(&format!("2001:db8:7:7::{n}"));
        assert!(a.authenticate(&key(&format!("g{n}")), from).is_err());
    }
    let same_64 = ip("2001:db8:7:7:ffff::1");
    assert!(matches!(
        a.authenticate(&key("g3"), same_64),
        Err(CoreError::RateLimited { .. })
    ));
    assert!(a.authenticate(&key("k"), same_64).is_ok());
    assert!(matches!(
        a.authenticate(&key("g3"), ip("2001:db8:7:8::1")),
        Err(CoreError::Unauthenticated(_))
    ));
}

#[test]
fn rpc_failures_count_per_broker_user_or_together() {
    let a = auth(&[("svc", "k")], None, &[]);
    let alice = Source::Broker {
        user_id: Some("alice"),
    };
    for n in 0..3 {
        assert!(a.authenticate(&key(&format!("g{n}")), alice).is_err());
    }
    assert!(matches!(
        a.authenticate(&key("g3"), alice),
        Err(CoreError::RateLimited { .. })
    ));
    assert!(a.authenticate(&key("k"), alice).is_ok());
    // Messages that name no broker user share one source, apart from alice's.
    for n in 0..3 {
        assert!(matches!(
            a.authenticate(&key(&format!("g{n}")), RPC),
            Err(CoreError::Unauthenticated(_))
        ));
    }
    assert!(matches!(
        a.authenticate(&key("g3"), RPC),
        Err(CoreError::RateLimited { .. })
    ));
    assert!(a.authenticate(&key("k"), RPC).is_ok());
}

#[test]
fn a_key_holders_name_cannot_be_claimed_with_the_secret() {
    let a = auth(&[("game-catalog", "k")], Some("s3cret"), &[]);
    let claim = |name| Credentials {
        internal_secret: Some("s3cret"),
        service_name: Some(name),
        ..Default::default()
    };
    assert!(matches!(
        a.authenticate(&claim("game-catalog"), RPC),
        Err(CoreError::Forbidden(_))
    ));
    assert_eq!(
        a.authenticate(&claim("library-service"), RPC).unwrap().name,
        "library-service"
    );
    assert_eq!(a.authenticate(&key("k"), RPC).unwrap().name, "game-catalog");
}

#[test]
fn integration_details_go_to_authenticated_or_allowed_readers() {
    let none = Credentials::default();
    let peer = |s: &str| s.parse::<IpAddr>().unwrap();
    let a = auth(&[("svc", "k")], None, &["10.0.0.0/8"]);
    assert!(a.may_see_details(&none, peer("10.1.2.3")));
    assert!(a.may_see_details(&none, peer("::ffff:10.1.2.3")));
    assert!(!a.may_see_details(&none, peer("192.168.1.1")));
    assert!(
        !a.may_see_details(&key("k"), peer("192.168.1.1")),
        "not allowed"
    );
    let a = auth(&[("svc", "k")], None, &[]);
    assert!(!a.may_see_details(&none, peer("127.0.0.1")));
    assert!(!a.may_see_details(&key("wrong"), peer("127.0.0.1")));
    assert!(a.may_see_details(&key("k"), peer("127.0.0.1")));
    let open = auth(&[], None, &[]);
    assert!(open.may_see_details(&none, peer("::1")));
    assert!(!open.may_see_details(&none, peer("10.0.0.1")));
}
