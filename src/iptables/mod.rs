//! `prescale init-iptables`: the interception init container's job (like
//! linkerd2-proxy-init). In the pod's network namespace it adds two chains to the nat
//! table: inbound TCP from PREROUTING is redirected to the inbound listener, and the
//! app's outgoing TCP from OUTPUT to the outbound listener, except traffic of the
//! proxy's own UID, pod-local and loopback traffic, and configured ports and networks.
//!
//! Runs are idempotent: the chains are declared (so flushed) and refilled in one
//! `iptables-restore --noflush` transaction, and the jumps to them are added only when
//! `iptables-save` does not show them already. `--dry-run` prints that transaction.
//! With `--ipv6` the same rules go into ip6tables too (with IPv6 loopback and
//! networks), for a proxy that also listens on `[::]`.

mod backend;
mod rules;

use backend::Backend;
pub use backend::Mode;
pub use rules::{CidrList, PortList};
use rules::{Family, Jumps, Plan};
use std::process::ExitCode;

/// Set up transparent interception in this network namespace (the init container).
#[derive(clap::Args, Debug, Clone)]
pub struct InitIptablesArgs {
    /// The inbound listener's port (inbound TCP is redirected there).
    #[arg(long, default_value_t = 4143)]
    pub inbound_port: u16,
    /// The outbound listener's port (the app's outgoing TCP is redirected there).
    #[arg(long, default_value_t = 4140)]
    pub outbound_port: u16,
    /// The UID the proxy runs as: its own connections are never redirected.
    #[arg(long, default_value_t = 2102)]
    pub proxy_uid: u32,
    /// Also exempt this GID (optional).
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// The admin port: never redirected, so probes and scrapes reach the admin API.
    #[arg(long, default_value_t = 9901)]
    pub admin_port: u16,
    /// Only redirect inbound connections to these ports (comma-separated ports and
    /// ranges) [default: every TCP port].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub inbound_ports: PortList,
    /// Inbound ports never redirected, e.g. `22,8000-8100` [default: none].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub exclude_inbound_ports: PortList,
    /// Only redirect outbound connections to these ports [default: every TCP port].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub outbound_ports: PortList,
    /// Outbound destination ports never redirected, e.g. `443,5432` (non-HTTP)
    /// [default: none].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub exclude_outbound_ports: PortList,
    /// Outbound destination networks never redirected, e.g.
    /// `10.96.0.1/32,169.254.0.0/16` [default: none].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub exclude_outbound_cidrs: CidrList,
    /// Leave inbound traffic alone.
    #[arg(long)]
    pub no_inbound: bool,
    /// Leave outbound traffic alone.
    #[arg(long)]
    pub no_outbound: bool,
    /// Also intercept IPv6 (ip6tables). The proxy must then listen on `[::]` on the
    /// same ports (`prescale inject` sets this when it does); without it IPv6 traffic
    /// is left alone.
    #[arg(long)]
    pub ipv6: bool,
    /// Which iptables back end to use.
    #[arg(long, value_enum, default_value = "auto")]
    pub iptables_mode: Mode,
    /// Print the rules as iptables-restore input and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("{0}")]
    Args(String),
    #[error("`{0}` is not installed or not on PATH (Debian/Ubuntu: apt-get install iptables)")]
    MissingBinary(String),
    #[error("must run as root with CAP_NET_ADMIN and CAP_NET_RAW (euid is {0}); in Kubernetes, the init container's securityContext must allow it")]
    NotRoot(String),
    #[error("not permitted: {0} (needs CAP_NET_ADMIN and CAP_NET_RAW)")]
    NotPermitted(String),
    #[error("{0}")]
    Run(String),
}

/// Exit 0 on success, 64 for bad arguments, 1 when applying failed.
pub fn main(args: &InitIptablesArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ IptablesError::Args(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(args: &InitIptablesArgs) -> Result<(), IptablesError> {
    let plan = Plan {
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        proxy_uid: args.proxy_uid,
        proxy_gid: args.proxy_gid,
        admin_port: args.admin_port,
        inbound_ports: args.inbound_ports.clone(),
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
        outbound_ports: args.outbound_ports.clone(),
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_outbound_cidrs: args.exclude_outbound_cidrs.clone(),
        inbound: !args.no_inbound,
        outbound: !args.no_outbound,
    };
    plan.validate().map_err(IptablesError::Args)?;
    let families: &[Family] = if args.ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    if args.dry_run {
        for family in families {
            print!("{}", plan.restore_input(Jumps::ALL, *family));
        }
        return Ok(());
    }
    let euid = effective_uid();
    if euid.as_deref() != Some("0") {
        return Err(IptablesError::NotRoot(
            euid.unwrap_or_else(|| "unknown".into()),
        ));
    }
    // Both back ends are found before either is changed, so a missing ip6tables
    // leaves no half-applied interception behind.
    let backends = families
        .iter()
        .map(|f| Backend::detect(args.iptables_mode, *f).map(|b| (*f, b)))
        .collect::<Result<Vec<_>, _>>()?;
    for (family, backend) in backends {
        apply(&plan, family, &backend)?;
    }
    Ok(())
}

/// Applies `plan` to `family`'s nat table and prints the rules that are in place.
fn apply(plan: &Plan, family: Family, backend: &Backend) -> Result<(), IptablesError> {
    tracing::info!(
        "{} back end: {:?} via {} ({})",
        family.program(),
        backend.flavour,
        backend.restore,
        backend.why
    );
    let before = backend.save_nat()?;
    let jumps = Jumps::missing_in(&before);
    let input = plan.restore_input(jumps, family);
    backend.restore(&input)?;
    let after = backend.save_nat()?;
    let ours: Vec<&str> = after.lines().filter(|l| l.contains("PRESCALE_")).collect();
    tracing::info!(
        "interception rules in place ({} lines in the {} nat table mention PRESCALE_)",
        ours.len(),
        family.program()
    );
    for l in ours {
        eprintln!("{l}");
    }
    Ok(())
}

/// The effective UID from /proc (no unsafe `geteuid` needed).
fn effective_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}
