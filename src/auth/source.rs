//! Where a request came from, as far as the failed-authentication limit can tell.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use user_core::metrics::Transport;

/// The source a request's failed authentications are counted under.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A REST caller: the TCP peer address (no `X-Forwarded-For`).
    Address(IpAddr),
    /// An RPC message: no peer address reaches the service, only what the broker vouches
    /// for. `user_id` is the publisher's broker user when the message names it (RabbitMQ
    /// refuses a `user_id` that is not the publishing connection's user), so it cannot be
    /// forged; messages without one share one source. `x-service-name` is not a source: the
    /// sender picks it freely, so a guesser would just change it.
    Broker { user_id: Option<&'a str> },
}

impl Source<'_> {
    /// The REST peer, IPv4-mapped IPv6 read as IPv4; none over RPC.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Self::Address(ip) => Some(ip.to_canonical()),
            Self::Broker { .. } => None,
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            Self::Address(_) => Transport::Rest,
            Self::Broker { .. } => Transport::Rpc,
        }
    }

    /// The key failures are counted under: an IPv4 address, an IPv6 /64 (one host usually
    /// holds a whole /64, so counting single addresses would count nothing), a broker user,
    /// or the broker.
    pub(super) fn key(&self) -> Key {
        match self.address() {
            Some(IpAddr::V4(ip)) => Key::V4(ip),
            Some(IpAddr::V6(ip)) => {
                let [a, b, c, d, e, f, g, h, ..] = ip.octets();
                Key::V6Net(u64::from_be_bytes([a, b, c, d, e, f, g, h]))
            }
            None => match self {
                Self::Broker {
                    user_id: Some(user),
                } => Key::BrokerUser(Box::from(*user)),
                _ => Key::Broker,
            },
        }
    }
}

/// An owned [`Source`] key, grouped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Net(u64),
    BrokerUser(Box<str>),
    Broker,
    /// Every new source while the table is full of live ones.
    Overflow,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(ip) => write!(f, "{ip}"),
            Self::V6Net(net) => {
                let ip = std::net::Ipv6Addr::from(u128::from(*net) << 64);
                write!(f, "{ip}/64")
            }
            Self::BrokerUser(user) => write!(f, "broker user {user:?}"),
            Self::Broker => f.write_str("broker (no user_id)"),
            Self::Overflow => f.write_str("other sources"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> Key {
        Source::Address(ip.parse().unwrap()).key()
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_ipv4_by_address() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::9").to_string(), "2001:db8:1:2::/64");
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_eq!(
            key("::ffff:10.0.0.1"),
            key("10.0.0.1"),
            "IPv4-mapped is IPv4"
        );
        assert_eq!(key("::ffff:10.0.0.1").to_string(), "10.0.0.1");
    }

    #[test]
    fn rpc_sources_are_the_broker_user_or_the_broker() {
        let user = |u| Source::Broker { user_id: u }.key();
        assert_eq!(user(Some("svc")), Key::BrokerUser("svc".into()));
        assert_ne!(user(Some("svc")), user(Some("other")));
        assert_eq!(user(None), Key::Broker);
        assert!(Source::Broker { user_id: None }.address().is_none());
    }
}
