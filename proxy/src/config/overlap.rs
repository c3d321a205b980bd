//! Listening addresses that would collide when bound: the same port and family, and
//! the same address or a wildcard on either side.
//!
//! Linux refuses the second of two such sockets (pingora then retries for ever while
//! the first socket takes the other's traffic), so the config is refused instead.
//! IPv6 follows how the sockets are bound: listeners set `IPV6_V6ONLY` (so `[::]:P`
//! sits beside `0.0.0.0:P`), the admin API does not (`[::]` also takes IPv4, and an
//! IPv4-mapped address is that IPv4 address).

use super::Invalid;
use std::net::{IpAddr, SocketAddr};

/// One socket the config asks for.
pub(crate) struct Bind {
    /// Its config path, e.g. `listeners[1].address`.
    pub path: String,
    pub addr: SocketAddr,
    /// IPv6 sockets only: whether IPv4 is taken too (no `IPV6_V6ONLY`).
    pub dual_stack: bool,
}

/// The first pair of sockets that collide, as an error at the later one that names
/// the earlier one too.
pub(crate) fn check(binds: &[Bind]) -> Result<(), Invalid> {
    for (i, later) in binds.iter().enumerate() {
        for earlier in binds.iter().take(i) {
            if let Some(why) = collision(earlier, later) {
                return Err(Invalid::pair(
                    later.path.clone(),
                    earlier.path.clone(),
                    format!(
                        "{} collides with {} {}: {why}",
                        later.addr, earlier.path, earlier.addr
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Why `a` and `b` cannot both be bound, if they cannot.
fn collision(a: &Bind, b: &Bind) -> Option<String> {
    // Port 0 asks the kernel for a fresh port each time.
    if a.addr.port() != b.addr.port() || a.addr.port() == 0 {
        return None;
    }
    for x in covered(a) {
        for y in covered(b) {
            if x == y {
                return Some("the same address and port".into());
            }
            if x.is_ipv4() == y.is_ipv4() && (x.is_unspecified() || y.is_unspecified()) {
                let family = if x.is_ipv4() { "IPv4" } else { "IPv6" };
                return Some(format!(
                    "a wildcard address takes port {} on every {family} address",
                    a.addr.port()
                ));
            }
        }
    }
    None
}

/// The addresses a socket takes: an IPv6 socket without `IPV6_V6ONLY` also takes
/// IPv4 (all of it for `[::]`, one address for an IPv4-mapped one).
fn covered(b: &Bind) -> Vec<IpAddr> {
    match b.addr.ip() {
        IpAddr::V4(v4) => vec![IpAddr::V4(v4)],
        IpAddr::V6(v6) if !b.dual_stack => vec![IpAddr::V6(v6)],
        IpAddr::V6(v6) if v6.is_unspecified() => {
            vec![IpAddr::V6(v6), IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)]
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => vec![IpAddr::V4(v4)],
            None => vec![IpAddr::V6(v6)],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(addr: &str, dual_stack: bool) -> Bind {
        Bind {
            path: addr.into(),
            addr: addr.parse().unwrap(),
            dual_stack,
        }
    }

    fn collide(a: (&str, bool), b: (&str, bool)) -> bool {
        check(&[bind(a.0, a.1), bind(b.0, b.1)]).is_err()
    }

    #[test]
    fn wildcards_collide_with_any_address_of_their_family_on_the_port() {
        assert!(collide(("127.0.0.1:80", false), ("0.0.0.0:80", false)));
        assert!(collide(("0.0.0.0:80", false), ("10.0.0.1:80", false)));
        assert!(collide(("127.0.0.1:80", false), ("127.0.0.1:80", false)));
        assert!(!collide(("127.0.0.1:80", false), ("0.0.0.0:81", false)));
        assert!(!collide(("127.0.0.1:80", false), ("127.0.0.2:80", false)));
        assert!(!collide(("0.0.0.0:0", false), ("0.0.0.0:0", false)));
        // IPV6_V6ONLY listeners: IPv6 and IPv4 wildcards sit side by side.
        assert!(!collide(("[::]:80", false), ("0.0.0.0:80", false)));
        assert!(collide(("[::]:80", false), ("[::1]:80", false)));
        // A dual-stack socket (the admin API) takes IPv4 too.
        assert!(collide(("[::]:80", true), ("0.0.0.0:80", false)));
        assert!(collide(("127.0.0.1:80", false), ("[::]:80", true)));
        assert!(collide(
            ("[::ffff:127.0.0.1]:80", true),
            ("127.0.0.1:80", false)
        ));
        assert!(!collide(
            ("[::ffff:127.0.0.1]:80", true),
            ("127.0.0.2:80", false)
        ));
        assert!(!collide(("[::1]:80", true), ("0.0.0.0:80", false)));
    }

    #[test]
    fn the_error_is_at_the_later_socket_and_names_the_earlier() {
        let e = check(&[
            bind("127.0.0.1:4143", false),
            bind("0.0.0.0:9901", false),
            bind("0.0.0.0:4143", false),
        ])
        .unwrap_err();
        assert_eq!(e.path, "0.0.0.0:4143");
        assert_eq!(e.also.as_deref(), Some("127.0.0.1:4143"));
        assert!(e.reason.contains("wildcard"), "{}", e.reason);
    }
}
