//! A set of sources given as CIDRs, addresses or identities: who is trusted, who matches.

use std::collections::HashSet;
use std::net::IpAddr;

/// Compiled list of `10.0.0.0/8`, `192.0.2.7`, `::1/128` or `payments-app` entries.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceSet {
    nets: Vec<Cidr>,
    identities: HashSet<String>,
}

/// An address block; `net` has its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    prefix: u8,
}

// === impl SourceSet ===

impl SourceSet {
    /// Parses entries; an entry with a `/` must be a CIDR, one that parses as an address
    /// is a one-address block, anything else is an identity.
    pub(crate) fn parse(entries: &[String]) -> Result<Self, (usize, String)> {
        let mut set = Self::default();
        for (i, e) in entries.iter().enumerate() {
            let e = e.trim();
            if e.is_empty() || e.chars().any(char::is_whitespace) {
                return Err((i, format!("{e:?} is not a CIDR, address or identity")));
            }
            if let Some(cidr) = Cidr::parse(e).map_err(|r| (i, r))? {
                set.nets.push(cidr);
            } else {
                set.identities.insert(e.to_string());
            }
        }
        Ok(set)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.identities.is_empty()
    }

    /// Whether the request's identity or client address is in the set.
    pub(crate) fn contains(&self, identity: Option<&str>, ip: Option<IpAddr>) -> bool {
        if let Some(id) = identity {
            if !self.identities.is_empty() && self.identities.contains(id) {
                return true;
            }
        }
        match ip {
            Some(ip) => self.nets.iter().any(|n| n.contains(ip)),
            None => false,
        }
    }
}

// === impl Cidr ===

impl Cidr {
    /// `Ok(None)` when `s` is not address-like (an identity).
    fn parse(s: &str) -> Result<Option<Self>, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let prefix = p.parse::<u8>().map_err(|_| format!("{s:?}: bad prefix"))?;
                (a, Some(prefix))
            }
            None => (s, None),
        };
        let ip = match addr.parse::<IpAddr>() {
            Ok(ip) => ip.to_canonical(),
            Err(_) if prefix.is_some() => return Err(format!("{s:?}: bad CIDR address")),
            Err(_) => return Ok(None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        let net = match ip {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask4(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask6(prefix)).into()),
        };
        Ok(Some(Self { net, prefix }))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                (u32::from(n) ^ u32::from(a)) & mask4(self.prefix) == 0
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                (u128::from(n) ^ u128::from(a)) & mask6(self.prefix) == 0
            }
            _ => false,
        }
    }
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> SourceSet {
        SourceSet::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn cidrs_addresses_and_identities() {
        let s = set(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "2001:db8::/32",
            "ingress-gateway",
        ]);
        assert!(s.contains(None, ip("10.200.1.1")));
        assert!(!s.contains(None, ip("11.0.0.1")));
        assert!(s.contains(None, ip("192.0.2.7")));
        assert!(!s.contains(None, ip("192.0.2.8")));
        assert!(s.contains(None, ip("2001:db8:1::5")));
        // An IPv4-mapped IPv6 peer address is its IPv4 address.
        assert!(s.contains(None, ip("::ffff:10.1.2.3")));
        assert!(s.contains(Some("ingress-gateway"), None));
        assert!(!s.contains(Some("payments-app"), ip("11.0.0.1")));
        // /0 holds everything of its family, and nothing of the other.
        let all4 = set(&["0.0.0.0/0"]);
        assert!(all4.contains(None, ip("203.0.113.9")));
        assert!(!all4.contains(None, ip("2001:db8::1")));
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in ["10.0.0.0/33", "10.0.0/8", "::/129", "a b", "", "10.0.0.0/x"] {
            assert!(
                SourceSet::parse(&[bad.to_string()]).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }
}
