//! Who is calling (contract section 1): API key by `Authorization: Bearer` or `x-api-key`,
//! the shared internal secret with `x-service-name`, an optional IP allow-list on top, and
//! local open mode when nothing is configured. Both edges use this one check.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use user_core::metrics::record_auth_failure;
use user_domain::call::Rights;
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

    /// Whether the request presented a key or a secret at all.
    pub fn presented(&self) -> bool {
        self.api_key.is_some() || self.internal_secret.is_some()
    }
}

mod gate;
mod source;

use gate::{FailureGate, Verdict};
pub use source::Source;

/// How long a REST failure past the limit waits before its 401/403: a guesser is slowed,
/// while a client that only reads the status (a fuzzer, a misconfigured service) still gets
/// the answer its credentials deserve, never a 429 it would take for a rate limit.
const TARPIT: Duration = Duration::from_millis(200);
/// REST failures held in the tarpit at once, from every source together; past them a
/// failure over the limit is answered 429 at once, so a flood holds nothing.
const TARPIT_SLOTS: usize = 64;

pub struct Authenticator {
    config: AuthConfig,
    gate: FailureGate,
    tarpit: Semaphore,
}

/// A refusal that waited in the tarpit says why it was slow.
fn slowed(e: CoreError) -> CoreError {
    const WHY: &str = " (answered slowly: this source is over AUTH_FAILURES_PER_ADDRESS)";
    match e {
        CoreError::Unauthenticated(m) => CoreError::Unauthenticated(m + WHY),
        CoreError::Forbidden(m) => CoreError::Forbidden(m + WHY),
        other => other,
    }
}

/// Why a request did not authenticate, and whether its source is over the limit.
struct Refusal {
    error: CoreError,
    /// Over `AUTH_FAILURES_PER_ADDRESS`: the `Retry-After` of a 429.
    blocked: Option<u64>,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        let gate = FailureGate::new(config.failures_per_address);
        Self {
            config,
            gate,
            tarpit: Semaphore::new(TARPIT_SLOTS),
        }
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

    /// Whether a reader of `/health/integrations` sees its figures (callers, allow-list,
    /// secret settings, cache and connection figures): an address in `INTERNAL_ALLOWED_IPS`,
    /// a loopback reader in local open mode, or valid credentials (a failure is counted as
    /// any other; a reader that presents none is not a failure: health needs none).
    pub fn may_see_details(&self, creds: &Credentials<'_>, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        if self.config.allowed_ips.iter().any(|n| n.contains(&peer)) {
            return true;
        }
        if self.is_open() {
            return peer.is_loopback();
        }
        creds.presented() && self.judge(creds, Source::Address(peer)).is_ok()
    }

    /// Identifies an RPC caller. A failure is counted against its [`Source`]; past the limit
    /// it is answered 429 at once (a held delivery would hold a prefetch slot). Valid
    /// credentials are never refused for their source's failures, and cost the gate nothing.
    pub fn authenticate(
        &self,
        creds: &Credentials<'_>,
        source: Source<'_>,
    ) -> Result<Caller, CoreError> {
        self.judge(creds, source).map_err(|r| match r.blocked {
            Some(retry_after_secs) => CoreError::RateLimited { retry_after_secs },
            None => r.error,
        })
    }

    /// Identifies a REST caller, as [`Self::authenticate`] does, except that a failure past
    /// the limit waits [`TARPIT`] and then gets its own 401/403; only when the tarpit is full
    /// is it answered 429 at once.
    pub async fn authenticate_slowly(
        &self,
        creds: &Credentials<'_>,
        source: Source<'_>,
    ) -> Result<Caller, CoreError> {
        let refusal = match self.judge(creds, source) {
            Ok(caller) => return Ok(caller),
            Err(r) => r,
        };
        let Some(retry_after_secs) = refusal.blocked else {
            return Err(refusal.error);
        };
        match self.tarpit.try_acquire() {
            Ok(_held) => {
                tokio::time::sleep(TARPIT).await;
                Err(slowed(refusal.error))
            }
            Err(_) => Err(CoreError::RateLimited { retry_after_secs }),
        }
    }

    fn judge(&self, creds: &Credentials<'_>, source: Source<'_>) -> Result<Caller, Refusal> {
        let e = match self.check(creds, source.address()) {
            Ok(caller) => return Ok(caller),
            Err(e) => e,
        };
        let transport = source.transport();
        let key = source.key();
        let presented = (creds.api_key, creds.internal_secret);
        match self
            .gate
            .failed(key.clone(), self.gate.fingerprint(presented))
        {
            Verdict::Counted => {
                tracing::info!(source = %key, error = %e, "authentication failed");
                record_auth_failure(transport, e.code().as_str());
                Err(Refusal {
                    error: e,
                    blocked: None,
                })
            }
            Verdict::Blocked {
                retry_after_secs,
                first,
            } => {
                if first {
                    tracing::warn!(
                        source = %key,
                        retry_after_secs,
                        "failed authentications over AUTH_FAILURES_PER_ADDRESS: further failures are slowed (REST) or get 429 (RPC)"
                    );
                }
                record_auth_failure(transport, "blocked");
                Err(Refusal {
                    error: e,
                    blocked: Some(retry_after_secs),
                })
            }
        }
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
        let named = |list: &std::collections::HashSet<String>| own_key && list.contains(&name);
        let rights = Rights {
            read_credentials: named(&self.config.credential_readers),
            export: named(&self.config.export_readers),
            audit: named(&self.config.audit_readers),
        };
        Ok(Caller { name, rights })
    }

    /// The caller's name, and whether its own API key said so (rather than a name claimed
    /// with the shared secret). Names come only from the configuration: a closed set.
    fn identify(&self, creds: &Credentials<'_>) -> Result<(String, bool), CoreError> {
        if !creds.presented() {
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
            // A name with its own key is proved by that key only: the secret cannot spend
            // its rate limit or replay its request keys.
            let claimed = creds.service_name;
            if let Some(k) = self
                .config
                .api_keys
                .iter()
                .find(|k| Some(k.caller.as_str()) == claimed)
            {
                return Err(CoreError::Forbidden(format!(
                    "'{}' has its own API key: the shared secret cannot claim it",
                    k.caller
                )));
            }
            let declared = claimed.and_then(|n| self.config.service_names.get(n));
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
mod tests;
