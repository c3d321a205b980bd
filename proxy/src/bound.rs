//! Whether this process itself listens on an address, read from /proc.
//!
//! A TCP connect is not proof: with `127.0.0.1:P` unbound, a connect lands on
//! whoever holds `0.0.0.0:P` (another listener of ours, or another process). So
//! readiness looks for a LISTEN socket with exactly the address in the network
//! namespace's socket table (`/proc/self/net/tcp{,6}`) whose inode is one of this
//! process's file descriptors.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's TCP_LISTEN state in the `st` column.
const LISTEN: &str = "0A";

/// Whether a socket of this process listens on exactly `addr`. An error means /proc
/// could not be read (not Linux, or no procfs mounted).
pub fn listening_here(addr: SocketAddr) -> std::io::Result<bool> {
    let table = if addr.is_ipv4() { "tcp" } else { "tcp6" };
    let text = std::fs::read_to_string(format!("/proc/self/net/{table}"))?;
    let inodes = listening_inodes(&text, addr);
    if inodes.is_empty() {
        return Ok(false);
    }
    Ok(own_socket_inodes()?.iter().any(|i| inodes.contains(i)))
}

/// Inodes of the LISTEN rows of a `/proc/net/tcp{,6}` table bound to `addr`.
fn listening_inodes(table: &str, addr: SocketAddr) -> HashSet<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            (*state == LISTEN && parse_local(local)? == addr)
                .then(|| inode.parse().ok())
                .flatten()
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints
/// each 32-bit word of the address as a number in host byte order, so the bytes
/// come back with `to_ne_bytes`.
fn parse_local(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The inodes of this process's sockets (`/proc/self/fd/N -> socket:[inode]`).
fn own_socket_inodes() -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        // A descriptor closed while we read is simply not ours any more.
        let Ok(link) = entry.and_then(|e| std::fs::read_link(e.path())) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            out.push(inode);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn local_addresses_parse_in_both_families() {
        let v4 = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            parse_local(&format!("{v4:08X}:1F90")),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        assert_eq!(
            parse_local(&format!("000000000000000000000000{one:08X}:0050")),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_local("zz:1"), None);
    }

    #[test]
    fn own_listeners_are_found_and_others_are_not() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listening_here(addr).unwrap());
        drop(l);
        assert!(!listening_here(addr).unwrap());
    }

    /// The failure this module exists for: another process on `0.0.0.0:P` answers a
    /// connect to `127.0.0.1:P`, which nobody here listens on. The other process is
    /// this test binary again, running [`hold_a_wildcard_listener`].
    #[test]
    fn a_wildcard_listener_of_another_process_is_not_ours() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "bound::tests::hold_a_wildcard_listener",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let port: u16 = lines
            .by_ref()
            .map_while(Result::ok)
            // libtest may print the test's name on the same line first.
            .find_map(|l| l.split("HOLDING ").nth(1)?.trim().parse().ok())
            .expect("the holder prints its port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
            "a connect is answered by the other process"
        );
        assert!(!listening_here(addr).unwrap());
        assert!(!listening_here(SocketAddr::from(([0, 0, 0, 0], port))).unwrap());
        assert!(start.elapsed() < Duration::from_secs(5));
        // Closing its stdin ends the holder; its report is read to the end.
        drop(child.stdin.take());
        lines.for_each(drop);
        assert!(child.wait().unwrap().success());
    }

    const HOLD: &str = "PRESCALE_TEST_HOLD_LISTENER";

    /// Not a test of its own: the second process of the test above. Listens on
    /// `0.0.0.0:0`, prints the port, and holds it until stdin closes.
    #[test]
    #[ignore = "run by a_wildcard_listener_of_another_process_is_not_ours"]
    fn hold_a_wildcard_listener() {
        if std::env::var_os(HOLD).is_none() {
            return;
        }
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        println!("HOLDING {}", l.local_addr().unwrap().port());
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    }
}
