//! Who may call: the API keys, the shared secret and the names it may claim, the address
//! allow-list (`INTERNAL_API_KEYS`, `INTERNAL_SERVICE_SECRET`, `INTERNAL_SERVICE_NAMES`,
//! `INTERNAL_ALLOWED_IPS`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ipnet::IpNet;
use user_core::limits::{DEFAULT_CALLER, RateLimit};

use super::{ConfigError, err, is_caller_name, list};

/// One entry of `INTERNAL_API_KEYS`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub caller: String,
    pub key: String,
    /// Written without `name=`; production refuses those.
    pub bare: bool,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}, …)", self.caller)
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub api_keys: Vec<ApiKey>,
    pub internal_secret: Option<String>,
    /// The names a holder of the shared secret may claim with `x-service-name`; never the
    /// name of an API key.
    pub service_names: BTreeSet<String>,
    pub allowed_ips: Vec<IpNet>,
    /// May read password hashes, when authenticated by their own API key.
    pub credential_readers: HashSet<String>,
    /// May call `users.export` besides the credential readers (`EXPORT_READERS`).
    pub export_readers: HashSet<String>,
    /// May call `users.history` (`AUDIT_READERS`).
    pub audit_readers: HashSet<String>,
    /// Different failed credentials allowed per source and window; past them, failures
    /// from that source are answered 429 (valid credentials never are).
    pub failures_per_address: RateLimit,
}

impl AuthConfig {
    /// No key and no secret: serve loopback callers only, as caller `local`.
    pub fn is_open(&self) -> bool {
        self.api_keys.is_empty() && self.internal_secret.is_none()
    }
}

/// `name=key`, or a bare key; a bare key `X-key` names caller `X`.
pub(super) fn parse_api_keys(s: &str) -> Result<Vec<ApiKey>, ConfigError> {
    let mut keys: Vec<ApiKey> = Vec::new();
    for (i, entry) in list(s).enumerate() {
        let (caller, key, bare) = match entry.split_once('=') {
            Some((name, key)) => (name.trim().to_owned(), key.trim().to_owned(), false),
            None => {
                let caller = entry.strip_suffix("-key").filter(|c| is_caller_name(c));
                (
                    caller.map_or_else(|| format!("api-key-{}", i + 1), str::to_owned),
                    entry.to_owned(),
                    true,
                )
            }
        };
        if !is_caller_name(&caller) {
            return Err(err(
                "INTERNAL_API_KEYS",
                format!(
                    "entry {}: the name is not letters, digits, - _ . up to 64",
                    i + 1
                ),
            ));
        }
        if caller.is_empty() || key.is_empty() {
            return Err(err(
                "INTERNAL_API_KEYS",
                format!("entry {} is empty on one side of '='", i + 1),
            ));
        }
        if keys.iter().any(|k| k.key == key) {
            return Err(err(
                "INTERNAL_API_KEYS",
                format!("entry {} repeats a key", i + 1),
            ));
        }
        keys.push(ApiKey { caller, key, bare });
    }
    Ok(keys)
}

/// IPs and CIDRs; a bare IP is a single-address network.
pub(super) fn parse_ips(s: &str) -> Result<Vec<IpNet>, ConfigError> {
    list(s)
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    err(
                        "INTERNAL_ALLOWED_IPS",
                        format!("'{entry}' is not an IP or CIDR"),
                    )
                })
        })
        .collect()
}

/// The names the shared secret may claim: `INTERNAL_SERVICE_NAMES`, else the callers named
/// in `RATE_LIMITS` that have no API key of their own. A name with its own key is proved by
/// that key only, so listing one is refused rather than silently opening it to the secret.
pub(super) fn parse_service_names(
    listed: Option<String>,
    rate_limits: &BTreeMap<String, RateLimit>,
    api_keys: &[ApiKey],
) -> Result<BTreeSet<String>, ConfigError> {
    let has_key = |n: &str| api_keys.iter().any(|k| k.caller == n);
    let Some(listed) = listed else {
        return Ok(rate_limits
            .keys()
            .filter(|n| *n != DEFAULT_CALLER && !has_key(n))
            .cloned()
            .collect());
    };
    let names: BTreeSet<String> = list(&listed).map(str::to_owned).collect();
    if let Some(bad) = names.iter().find(|n| !is_caller_name(n)) {
        return Err(err(
            "INTERNAL_SERVICE_NAMES",
            format!("'{bad}' is not a name (letters, digits, - _ . up to 64)"),
        ));
    }
    if let Some(keyed) = names.iter().find(|n| has_key(n)) {
        return Err(err(
            "INTERNAL_SERVICE_NAMES",
            format!(
                "'{keyed}' has its own key in INTERNAL_API_KEYS; a name is proved by its key or \
                 claimed with the shared secret, not both"
            ),
        ));
    }
    Ok(names)
}
