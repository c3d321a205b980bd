//! The interception rules as `iptables-restore` input: pure, so `--dry-run` prints
//! exactly what a real run applies.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The chain PREROUTING jumps to: inbound TCP to the inbound listener.
pub const INBOUND_CHAIN: &str = "PRESCALE_INBOUND";
/// The chain OUTPUT jumps to: the app's outgoing TCP to the outbound listener.
pub const OUTBOUND_CHAIN: &str = "PRESCALE_OUTBOUND";

/// A port or an inclusive range (`8080`, `8000-8100` or `8000:8100`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// A comma-separated list of ports and ranges; empty is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<PortRange>);

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `fd00::/8`, or an address meaning the
/// host alone).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Which table a rule set is for: `iptables` (IPv4) or `ip6tables` (IPv6).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A comma-separated list of networks; empty is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

/// What to intercept and what to leave alone.
#[derive(Clone, Debug)]
pub struct Plan {
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: Option<u32>,
    /// Never redirected inbound (the admin API must stay reachable for probes).
    pub admin_port: u16,
    /// Inbound destination ports to redirect; empty means every TCP port.
    pub inbound_ports: PortList,
    pub exclude_inbound_ports: PortList,
    /// Outbound destination ports to redirect; empty means every TCP port.
    pub outbound_ports: PortList,
    pub exclude_outbound_ports: PortList,
    pub exclude_outbound_cidrs: CidrList,
    pub inbound: bool,
    pub outbound: bool,
}

// === impl PortRange ===

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
                Ok(n) => Ok(n),
            }
        };
        let (first, last) = match s.split_once(['-', ':']) {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("port range {s:?} runs backwards"));
        }
        Ok(Self { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

// === impl PortList ===

impl FromStr for PortList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl PortList {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| (r.first..=r.last).contains(&port))
    }
}

// === impl Cidr ===

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.map(str::parse) {
            None => max,
            Some(Ok(p)) if p <= max => p,
            Some(_) => return Err(format!("{s:?}: the prefix length must be 0-{max}")),
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The network address, as iptables-save prints it (10.1.2.3/8 -> 10.0.0.0/8).
        let net = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        write!(f, "{net}/{}", self.prefix)
    }
}

// === impl CidrList ===

impl FromStr for CidrList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

// === impl Plan ===

impl Plan {
    /// Checks the plan makes sense before anything is applied.
    pub fn validate(&self) -> Result<(), String> {
        if self.inbound_port == 0 || self.outbound_port == 0 {
            return Err("--inbound-port and --outbound-port must be 1-65535".into());
        }
        if self.inbound && self.outbound && self.inbound_port == self.outbound_port {
            return Err("the inbound and outbound ports must differ".into());
        }
        if self.inbound && self.inbound_port == self.admin_port {
            return Err("the inbound port and the admin port must differ".into());
        }
        if self.proxy_uid == 0 {
            return Err(
                "--proxy-uid 0 would exempt every root process from interception; run the proxy as its own user"
                    .into(),
            );
        }
        if self.inbound && self.inbound_ports.contains(self.admin_port) {
            return Err(format!(
                "--inbound-ports includes the admin port {}; probes and scrapes must reach it directly",
                self.admin_port
            ));
        }
        if !self.inbound && !self.outbound {
            return Err("nothing to do: both inbound and outbound interception are off".into());
        }
        Ok(())
    }

    /// The rules for one chain (without its `-A CHAIN` prefix), in order.
    pub fn inbound_rules(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.inbound {
            return out;
        }
        out.push(format!(
            "-p tcp -m tcp --dport {} -m comment --comment \"prescale: admin port\" -j RETURN",
            self.admin_port
        ));
        for p in &self.exclude_inbound_ports.0 {
            out.push(format!(
                "-p tcp -m tcp --dport {p} -m comment --comment \"prescale: excluded inbound port\" -j RETURN"
            ));
        }
        let redirect = format!(
            "-m comment --comment \"prescale: to the inbound listener\" -j REDIRECT --to-ports {}",
            self.inbound_port
        );
        if self.inbound_ports.0.is_empty() {
            out.push(format!("-p tcp {redirect}"));
        } else {
            for p in &self.inbound_ports.0 {
                out.push(format!("-p tcp -m tcp --dport {p} {redirect}"));
            }
        }
        out
    }

    /// The outbound chain's rules for `family`'s table: its loopback network, and only
    /// the excluded networks of that family.
    pub fn outbound_rules(&self, family: Family) -> Vec<String> {
        let mut out = Vec::new();
        if !self.outbound {
            return out;
        }
        // The proxy's own connections (to upstreams and original destinations) must
        // leave untouched, or they would come straight back to it.
        out.push(format!(
            "-m owner --uid-owner {} -m comment --comment \"prescale: traffic of the proxy\" -j RETURN",
            self.proxy_uid
        ));
        if let Some(gid) = self.proxy_gid {
            out.push(format!(
                "-m owner --gid-owner {gid} -m comment --comment \"prescale: traffic of the proxy\" -j RETURN"
            ));
        }
        out.push("-o lo -m comment --comment \"prescale: pod-local traffic\" -j RETURN".into());
        let loopback = match family {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        };
        out.push(format!(
            "-d {loopback} -m comment --comment \"prescale: loopback destination\" -j RETURN"
        ));
        for p in &self.exclude_outbound_ports.0 {
            out.push(format!(
                "-p tcp -m tcp --dport {p} -m comment --comment \"prescale: excluded outbound port\" -j RETURN"
            ));
        }
        for c in self
            .exclude_outbound_cidrs
            .0
            .iter()
            .filter(|c| c.family() == family)
        {
            out.push(format!(
                "-d {c} -m comment --comment \"prescale: excluded outbound network\" -j RETURN"
            ));
        }
        let redirect = format!(
            "-m comment --comment \"prescale: to the outbound listener\" -j REDIRECT --to-ports {}",
            self.outbound_port
        );
        if self.outbound_ports.0.is_empty() {
            out.push(format!("-p tcp {redirect}"));
        } else {
            for p in &self.outbound_ports.0 {
                out.push(format!("-p tcp -m tcp --dport {p} {redirect}"));
            }
        }
        out
    }

    /// `iptables-restore --noflush` (or, for IPv6, `ip6tables-restore`) input.
    /// Declaring a chain flushes it when it exists (so a second run replaces, never
    /// duplicates, its rules); the jumps from the built-in chains are added only when
    /// `jumps` says they are missing.
    pub fn restore_input(&self, jumps: Jumps, family: Family) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# prescale init-iptables {}: transparent interception ({})",
            env!("CARGO_PKG_VERSION"),
            family.restore_program()
        );
        s.push_str("*nat\n");
        if self.inbound {
            let _ = writeln!(s, ":{INBOUND_CHAIN} - [0:0]");
        }
        if self.outbound {
            let _ = writeln!(s, ":{OUTBOUND_CHAIN} - [0:0]");
        }
        for r in self.inbound_rules() {
            let _ = writeln!(s, "-A {INBOUND_CHAIN} {r}");
        }
        for r in self.outbound_rules(family) {
            let _ = writeln!(s, "-A {OUTBOUND_CHAIN} {r}");
        }
        if self.inbound && jumps.add_prerouting {
            let _ = writeln!(s, "-A PREROUTING -p tcp -j {INBOUND_CHAIN}");
        }
        if self.outbound && jumps.add_output {
            let _ = writeln!(s, "-A OUTPUT -p tcp -j {OUTBOUND_CHAIN}");
        }
        s.push_str("COMMIT\n");
        s
    }
}

// === impl Family ===

impl Family {
    /// The restore program of this family's default flavour.
    pub fn restore_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// `iptables` or `ip6tables`: the prefix of this family's programs.
    pub fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Which jumps from the built-in chains still have to be added.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Jumps {
    pub add_prerouting: bool,
    pub add_output: bool,
}

impl Jumps {
    pub const ALL: Jumps = Jumps {
        add_prerouting: true,
        add_output: true,
    };

    /// From `iptables-save -t nat` output: a jump already there is not added again.
    pub fn missing_in(save: &str) -> Self {
        let has = |chain: &str, target: &str| {
            save.lines().any(|l| {
                l.starts_with(&format!("-A {chain} "))
                    && l.trim_end().ends_with(&format!("-j {target}"))
            })
        };
        Jumps {
            add_prerouting: !has("PREROUTING", INBOUND_CHAIN),
            add_output: !has("OUTPUT", OUTBOUND_CHAIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            inbound_port: 4143,
            outbound_port: 4140,
            proxy_uid: 2102,
            proxy_gid: None,
            admin_port: 9901,
            inbound_ports: PortList::default(),
            exclude_inbound_ports: "22,8000-8010".parse().unwrap_or_default(),
            outbound_ports: PortList::default(),
            exclude_outbound_ports: "5432".parse().unwrap_or_default(),
            exclude_outbound_cidrs: "10.1.2.3/8,192.0.2.7".parse().unwrap_or_default(),
            inbound: true,
            outbound: true,
        }
    }

    #[test]
    fn parses_ports_ranges_and_networks() {
        let p: PortList = "80, 8000-8100,9000:9001,".parse().unwrap();
        let shown: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["80", "8000:8100", "9000:9001"]);
        assert_eq!("".parse::<PortList>().unwrap(), PortList::default());
        assert!("0".parse::<PortList>().is_err());
        assert!("70000".parse::<PortList>().is_err());
        assert!("90-80".parse::<PortList>().is_err());
        assert!("http".parse::<PortList>().is_err());
        let c: CidrList = "10.1.2.3/8, 192.0.2.7".parse().unwrap();
        let shown: Vec<String> = c.0.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32"]);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/129".parse::<Cidr>().unwrap_err().contains("0-128"));
        assert!("fd00::1/x".parse::<Cidr>().is_err());
        assert!("10.0.0".parse::<Cidr>().is_err());
        let v6: CidrList = "fd00:1:2::3/48, 2001:db8::7".parse().unwrap();
        let shown: Vec<String> = v6.0.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["fd00:1:2::/48", "2001:db8::7/128"]);
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn restore_input_excludes_admin_proxy_loopback_ports_and_networks() {
        let text = plan().restore_input(Jumps::ALL, Family::V4);
        let expected = "\
*nat
:PRESCALE_INBOUND - [0:0]
:PRESCALE_OUTBOUND - [0:0]
-A PRESCALE_INBOUND -p tcp -m tcp --dport 9901 -m comment --comment \"prescale: admin port\" -j RETURN
-A PRESCALE_INBOUND -p tcp -m tcp --dport 22 -m comment --comment \"prescale: excluded inbound port\" -j RETURN
-A PRESCALE_INBOUND -p tcp -m tcp --dport 8000:8010 -m comment --comment \"prescale: excluded inbound port\" -j RETURN
-A PRESCALE_INBOUND -p tcp -m comment --comment \"prescale: to the inbound listener\" -j REDIRECT --to-ports 4143
-A PRESCALE_OUTBOUND -m owner --uid-owner 2102 -m comment --comment \"prescale: traffic of the proxy\" -j RETURN
-A PRESCALE_OUTBOUND -o lo -m comment --comment \"prescale: pod-local traffic\" -j RETURN
-A PRESCALE_OUTBOUND -d 127.0.0.0/8 -m comment --comment \"prescale: loopback destination\" -j RETURN
-A PRESCALE_OUTBOUND -p tcp -m tcp --dport 5432 -m comment --comment \"prescale: excluded outbound port\" -j RETURN
-A PRESCALE_OUTBOUND -d 10.0.0.0/8 -m comment --comment \"prescale: excluded outbound network\" -j RETURN
-A PRESCALE_OUTBOUND -d 192.0.2.7/32 -m comment --comment \"prescale: excluded outbound network\" -j RETURN
-A PRESCALE_OUTBOUND -p tcp -m comment --comment \"prescale: to the outbound listener\" -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -j PRESCALE_INBOUND
-A OUTPUT -p tcp -j PRESCALE_OUTBOUND
COMMIT
";
        let body = text.split_once('\n').map_or("", |(_, rest)| rest);
        assert_eq!(body, expected);
    }

    #[test]
    fn ipv6_rules_use_the_ipv6_loopback_and_only_ipv6_networks() {
        let mut p = plan();
        p.exclude_outbound_cidrs = "10.0.0.0/8,fd00::/8".parse().unwrap();
        let v6 = p.restore_input(Jumps::ALL, Family::V6);
        assert!(v6.starts_with("# prescale init-iptables"));
        assert!(v6
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("(ip6tables-restore)")));
        assert!(v6.contains("-A PRESCALE_OUTBOUND -d ::1/128 "));
        assert!(v6.contains("-A PRESCALE_OUTBOUND -d fd00::/8 "));
        assert!(
            !v6.contains("127.0.0.0/8") && !v6.contains("10.0.0.0/8"),
            "{v6}"
        );
        let v4 = p.restore_input(Jumps::ALL, Family::V4);
        assert!(!v4.contains("::1/128") && !v4.contains("fd00::/8"), "{v4}");
        assert!(v4.contains("-d 10.0.0.0/8 "));
        // Everything else is the same in both tables.
        let same = |t: &str| -> Vec<String> {
            t.lines()
                .skip(1)
                .filter(|l| !l.contains(" -d "))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(same(&v4), same(&v6));
    }

    #[test]
    fn present_jumps_are_not_added_again() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j PRESCALE_INBOUND\n-A OUTPUT -d 1.2.3.4/32 -j ACCEPT\nCOMMIT\n";
        let j = Jumps::missing_in(save);
        assert_eq!(
            j,
            Jumps {
                add_prerouting: false,
                add_output: true
            }
        );
        let text = plan().restore_input(j, Family::V4);
        assert!(!text.contains("-A PREROUTING"));
        assert!(text.contains("-A OUTPUT -p tcp -j PRESCALE_OUTBOUND"));
    }

    #[test]
    fn include_lists_redirect_only_those_ports() {
        let mut p = plan();
        p.inbound_ports = "8080".parse().unwrap();
        p.outbound_ports = "80,8080".parse().unwrap();
        let inbound = p.inbound_rules();
        assert_eq!(
            inbound.last().map(String::as_str),
            Some("-p tcp -m tcp --dport 8080 -m comment --comment \"prescale: to the inbound listener\" -j REDIRECT --to-ports 4143")
        );
        let redirects = p
            .outbound_rules(Family::V4)
            .iter()
            .filter(|r| r.contains("REDIRECT"))
            .count();
        assert_eq!(redirects, 2);
    }

    #[test]
    fn bad_plans_are_refused() {
        let mut p = plan();
        p.proxy_uid = 0;
        assert!(p.validate().is_err());
        let mut p = plan();
        p.outbound_port = 4143;
        assert!(p.validate().is_err());
        let mut p = plan();
        p.inbound_ports = "9000-9999".parse().unwrap();
        assert!(p.validate().unwrap_err().contains("admin port"));
        let mut p = plan();
        p.inbound = false;
        p.outbound = false;
        assert!(p.validate().is_err());
        assert!(plan().validate().is_ok());
    }
}
