//! Which iptables to drive (nf_tables or legacy) and running its save/restore tools.
//!
//! Both back ends may be installed while the node's rules live in only one of them
//! (kube-proxy, the CNI plugin): rules added to the other one would still be evaluated
//! by the kernel, but in an order nobody can see. Like linkerd2-proxy-init and Istio,
//! `auto` picks the back end that already holds rules, and the default flavour of
//! `iptables` when neither (or both equally) does.

use super::rules::Family;
use super::IptablesError;
use std::io::Write;
use std::process::{Command, Stdio};

/// Which iptables back end.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The back end that already holds rules; else what `iptables --version` reports.
    Auto,
    /// iptables-nft (nf_tables kernel API).
    Nft,
    /// iptables-legacy (x_tables kernel API).
    Legacy,
}

/// The chosen back end: its flavour and its save/restore programs.
#[derive(Clone, Debug)]
pub struct Backend {
    pub flavour: Mode,
    pub save: String,
    pub restore: String,
    /// Why this one (for the log).
    pub why: String,
}

// === impl Mode ===

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Nft => "nf_tables",
            Mode::Legacy => "legacy",
        }
    }
}

// === impl Backend ===

impl Backend {
    /// Picks the back end for `mode` and `family`; fails when no usable iptables (or
    /// ip6tables) is installed.
    pub fn detect(mode: Mode, family: Family) -> Result<Self, IptablesError> {
        let default = default_flavour();
        let prog = family.program();
        let explicit = |flavour: Mode, why: String| -> Result<Self, IptablesError> {
            match Self::tools_for(flavour, default, family) {
                Some((save, restore)) => Ok(Self {
                    flavour,
                    save,
                    restore,
                    why,
                }),
                None => Err(IptablesError::MissingBinary(format!(
                    "{prog}-{}-restore (or {prog}-restore reporting ({}))",
                    if flavour == Mode::Nft {
                        "nft"
                    } else {
                        "legacy"
                    },
                    flavour.name()
                ))),
            }
        };
        match mode {
            Mode::Nft | Mode::Legacy => explicit(mode, "chosen with --iptables-mode".into()),
            Mode::Auto => {
                let nft = Self::tools_for(Mode::Nft, default, family).map(|t| (Mode::Nft, t));
                let legacy =
                    Self::tools_for(Mode::Legacy, default, family).map(|t| (Mode::Legacy, t));
                match (nft, legacy) {
                    (None, None) => Err(IptablesError::MissingBinary(format!(
                        "{prog}-restore (install the iptables package)"
                    ))),
                    (Some((flavour, _)), None) | (None, Some((flavour, _))) => explicit(
                        flavour,
                        format!("the only back end installed is {}", flavour.name()),
                    ),
                    (Some((_, nft_tools)), Some((_, legacy_tools))) => {
                        let n = count_rules(&nft_tools.0);
                        let l = count_rules(&legacy_tools.0);
                        let counts = format!("{n} nf_tables rules, {l} legacy rules");
                        if l > n {
                            explicit(Mode::Legacy, format!("{counts}: using the one in use"))
                        } else if n > l {
                            explicit(Mode::Nft, format!("{counts}: using the one in use"))
                        } else {
                            let flavour = default.unwrap_or(Mode::Nft);
                            explicit(
                                flavour,
                                format!("{counts}: using iptables' default ({})", flavour.name()),
                            )
                        }
                    }
                }
            }
        }
    }

    /// The save/restore programs of one flavour, if installed: the flavour-named ones
    /// (`iptables-nft-save`, `ip6tables-nft-save`), or the plain ones when `iptables`
    /// itself is that flavour.
    fn tools_for(flavour: Mode, default: Option<Mode>, family: Family) -> Option<(String, String)> {
        let tag = if flavour == Mode::Nft {
            "nft"
        } else {
            "legacy"
        };
        let prog = family.program();
        let (save, restore) = (
            format!("{prog}-{tag}-save"),
            format!("{prog}-{tag}-restore"),
        );
        if runs(&restore) && runs(&save) {
            return Some((save, restore));
        }
        let (save, restore) = (format!("{prog}-save"), format!("{prog}-restore"));
        if default == Some(flavour) && runs(&restore) && runs(&save) {
            return Some((save, restore));
        }
        None
    }

    /// `iptables-save -t nat` (or `ip6tables-save`).
    pub fn save_nat(&self) -> Result<String, IptablesError> {
        let out = Command::new(&self.save)
            .args(["-t", "nat"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error(&self.save, e))?;
        if !out.status.success() {
            return Err(failed(&self.save, &out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iptables-restore --noflush` with `input` on stdin: atomic per table.
    pub fn restore(&self, input: &str) -> Result<(), IptablesError> {
        let mut cmd = Command::new(&self.restore);
        cmd.arg("--noflush");
        if self.flavour == Mode::Legacy {
            // x_tables has one lock per host: wait for it rather than fail.
            cmd.arg("--wait=10");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(&self.restore, e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| IptablesError::Run(format!("{}: {e}", self.restore)))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| IptablesError::Run(format!("{}: {e}", self.restore)))?;
        if !out.status.success() {
            return Err(failed(&self.restore, &out.stderr));
        }
        Ok(())
    }
}

/// What `iptables --version` says it is: `iptables v1.8.9 (nf_tables)` or `(legacy)`;
/// versions before 1.8 say neither and are legacy.
fn default_flavour() -> Option<Mode> {
    let out = Command::new("iptables")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("nf_tables") {
        Some(Mode::Nft)
    } else if text.starts_with("iptables") {
        Some(Mode::Legacy)
    } else {
        None
    }
}

/// Whether a program exists and starts (`--version`).
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Rules (`-A` lines) in every table of one back end; 0 when it cannot be read.
fn count_rules(save: &str) -> usize {
    Command::new(save)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count()
        })
        .unwrap_or(0)
}

fn spawn_error(program: &str, e: std::io::Error) -> IptablesError {
    if e.kind() == std::io::ErrorKind::NotFound {
        IptablesError::MissingBinary(program.to_string())
    } else {
        IptablesError::Run(format!("{program}: {e}"))
    }
}

fn failed(program: &str, stderr: &[u8]) -> IptablesError {
    let text = String::from_utf8_lossy(stderr).trim().to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("operation not permitted") {
        IptablesError::NotPermitted(format!("{program}: {text}"))
    } else {
        IptablesError::Run(format!("{program} failed: {text}"))
    }
}
