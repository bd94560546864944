//! Who is calling (contract section 1): API key by `Authorization: Bearer` or `x-api-key`,
//! the shared internal secret with `x-service-name`, an optional IP allow-list on top, and
//! local open mode when nothing is configured. Both edges use this one check.

use std::net::IpAddr;

use ipnet::IpNet;
use subtle::ConstantTimeEq;
use user_actors::metrics::{Transport, record_auth_failure};
use user_domain::{Caller, CoreError};

use crate::config::AuthConfig;

/// The credentials a request presented, however its transport carried them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    pub api_key: Option<&'a str>,
    pub internal_secret: Option<&'a str>,
    pub service_name: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// Reads the contract's headers through `header` (case-insensitive names).
    pub fn from_headers(header: impl Fn(&str) -> Option<&'a str>) -> Self {
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        Self {
            api_key: header("x-api-key")
                .map(str::trim)
                .or(bearer)
                .filter(|k| !k.is_empty()),
            internal_secret: header("x-internal-service")
                .map(str::trim)
                .filter(|s| !s.is_empty()),
            service_name: header("x-service-name")
                .map(str::trim)
                .filter(|s| !s.is_empty()),
        }
    }
}

mod gate;

use gate::FailureGate;

pub struct Authenticator {
    config: AuthConfig,
    gate: FailureGate,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        let gate = FailureGate::new(config.failures_per_address);
        Self { config, gate }
    }

    pub fn is_open(&self) -> bool {
        self.config.is_open()
    }

    /// What `/health/integrations` says about authentication: the mode and the callers'
    /// names, never a key.
    pub fn describe(&self) -> serde_json::Value {
        let callers: Vec<&str> = self
            .config
            .api_keys
            .iter()
            .map(|k| k.caller.as_str())
            .collect();
        serde_json::json!({
            "status": "ok",
            "mode": if self.is_open() { "local-open" } else { "authenticated" },
            "apiKeyCallers": callers,
            "internalSecret": self.config.internal_secret.is_some(),
            "ipAllowList": self.config.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    /// Identifies the caller. `peer` is the REST caller's address; RPC callers have none
    /// (the broker connection is the boundary there).
    pub fn authenticate(
        &self,
        creds: &Credentials<'_>,
        peer: Option<IpAddr>,
    ) -> Result<Caller, CoreError> {
        let peer = peer.map(|ip| ip.to_canonical());
        let transport = if peer.is_some() {
            Transport::Rest
        } else {
            Transport::Rpc
        };
        if let Some(ip) = peer {
            self.gate.check(ip).inspect_err(|_| {
                record_auth_failure(transport, "blocked");
            })?;
        }
        let result = self.check(creds, peer);
        if let (Err(e), Some(ip)) = (&result, peer) {
            self.gate.failed(ip);
            tracing::info!(%ip, error = %e, "authentication failed");
        }
        if let Err(e) = &result {
            record_auth_failure(transport, e.code().as_str());
        }
        result
    }

    fn check(&self, creds: &Credentials<'_>, peer: Option<IpAddr>) -> Result<Caller, CoreError> {
        let (name, own_key) = if self.config.is_open() {
            if peer.is_some_and(|ip| !ip.is_loopback()) {
                return Err(CoreError::Forbidden(
                    "local open mode serves loopback callers only; configure INTERNAL_API_KEYS"
                        .to_owned(),
                ));
            }
            (Caller::LOCAL.to_owned(), false)
        } else {
            self.identify(creds)?
        };
        let allowed = |ip: &IpAddr| {
            let nets = &self.config.allowed_ips;
            nets.is_empty() || nets.iter().any(|n: &IpNet| n.contains(ip))
        };
        if let Some(ip) = peer.filter(|ip| !allowed(ip)) {
            return Err(CoreError::Forbidden(format!("address {ip} is not allowed")));
        }
        // A name claimed with the shared secret never reads credentials: only a caller's
        // own key proves who it is.
        let can_read_credentials = own_key && self.config.credential_readers.contains(&name);
        Ok(Caller {
            name,
            can_read_credentials,
        })
    }

    /// The caller's name, and whether its own API key said so (rather than a name claimed
    /// with the shared secret). Names come only from the configuration: a closed set.
    fn identify(&self, creds: &Credentials<'_>) -> Result<(String, bool), CoreError> {
        if creds.api_key.is_none() && creds.internal_secret.is_none() {
            return Err(CoreError::Unauthenticated(
                "missing credentials: send an API key (Authorization: Bearer or x-api-key) or x-internal-service".to_owned(),
            ));
        }
        if let Some(presented) = creds.api_key {
            // Compare against every key, without an early exit, in constant time per key.
            let mut found = None;
            for k in &self.config.api_keys {
                if bool::from(k.key.as_bytes().ct_eq(presented.as_bytes())) {
                    found = Some(k.caller.clone());
                }
            }
            if let Some(caller) = found {
                return Ok((caller, true));
            }
        }
        if let (Some(presented), Some(secret)) =
            (creds.internal_secret, &self.config.internal_secret)
            && bool::from(secret.as_bytes().ct_eq(presented.as_bytes()))
        {
            let declared = creds
                .service_name
                .and_then(|n| self.config.service_names.get(n));
            let name = declared.map_or(Caller::INTERNAL, String::as_str);
            return Ok((name.to_owned(), false));
        }
        Err(CoreError::Unauthenticated("invalid credentials".to_owned()))
    }

    /// Every name a request can be counted under: the closed set of caller names.
    pub fn caller_names(&self) -> impl Iterator<Item = &str> {
        let c = &self.config;
        c.api_keys
            .iter()
            .map(|k| k.caller.as_str())
            .chain(c.service_names.iter().map(String::as_str))
            .chain([Caller::INTERNAL, Caller::LOCAL, Caller::ANONYMOUS])
    }
}

#[cfg(test)]
mod tests {
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
            failures_per_address: user_actors::limits::RateLimit {
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

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn api_keys_identify_callers() {
        let a = auth(&[("auth-service", "k1"), ("game-catalog", "k2")], None, &[]);
        let c = a.authenticate(&key("k1"), ip("10.1.2.3")).unwrap();
        assert_eq!(c.name, "auth-service");
        assert!(c.can_read_credentials);
        assert!(
            !a.authenticate(&key("k2"), None)
                .unwrap()
                .can_read_credentials
        );
        assert!(matches!(
            a.authenticate(&key("nope"), None),
            Err(CoreError::Unauthenticated(_))
        ));
        assert!(matches!(
            a.authenticate(&Credentials::default(), None),
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
        assert_eq!(
            a.authenticate(&creds, None).unwrap().name,
            "library-service"
        );
        let claims = |name| Credentials {
            internal_secret: Some("s3cret"),
            service_name: Some(name),
            ..Default::default()
        };
        // An undeclared name is not taken: the caller is `internal`.
        let long = "x".repeat(5000);
        for invented in ["payment-service-7", long.as_str(), ""] {
            assert_eq!(
                a.authenticate(&claims(invented), None).unwrap().name,
                "internal"
            );
        }
        // A declared name is, but never with the right to read credentials.
        let auth = a.authenticate(&claims("auth-service"), None).unwrap();
        assert_eq!(auth.name, "auth-service");
        assert!(
            !auth.can_read_credentials,
            "the secret cannot claim credential reads"
        );
        let creds = Credentials {
            internal_secret: Some("s3cret"),
            ..Default::default()
        };
        assert_eq!(a.authenticate(&creds, None).unwrap().name, "internal");
        let creds = Credentials {
            internal_secret: Some("wrong"),
            ..Default::default()
        };
        assert!(a.authenticate(&creds, None).is_err());
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

    #[tokio::test]
    async fn failed_authentications_are_limited_per_address() {
        let a = auth(&[("svc", "k")], None, &[]);
        let (attacker, other) = (ip("10.9.9.9"), ip("10.1.1.1"));
        for _ in 0..3 {
            assert!(matches!(
                a.authenticate(&key("guess"), attacker),
                Err(CoreError::Unauthenticated(_))
            ));
        }
        // Past the allowance, even the right key is refused from that address.
        match a.authenticate(&key("guess"), attacker) {
            Err(CoreError::Unauthenticated(_)) => {}
            other => panic!("the 4th failure is counted: {other:?}"),
        }
        assert!(matches!(
            a.authenticate(&key("k"), attacker),
            Err(CoreError::RateLimited { .. })
        ));
        assert_eq!(a.authenticate(&key("k"), other).unwrap().name, "svc");
        // RPC has no address to hold against anyone.
        for _ in 0..10 {
            assert!(a.authenticate(&key("guess"), None).is_err());
        }
        assert!(a.authenticate(&key("k"), None).is_ok());
    }
}
