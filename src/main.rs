//! The `prescale` binary: command line, logging, and the hand-off to the proxy.
#![forbid(unsafe_code)]
// The package allows it for tests and benches (Cargo.toml); the binary keeps the ban.
#![warn(clippy::disallowed_methods)]

mod default_config;
#[allow(
    clippy::disallowed_methods,
    reason = "the demo's load generator and timers pace real traffic on the wall clock"
)]
mod demo;
mod forecast_cmd;
mod inject;
mod iptables;
mod plot;
mod replay;
mod series_csv;
#[cfg(test)]
#[path = "../tests/support/require.rs"]
mod test_require;

use clap::{Parser, Subcommand};
use prescale_proxy::MeshConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// sysexits' EX_USAGE: the operator handed us something unusable.
const EXIT_BAD_CONFIG: u8 = 64;

/// With `--features mimalloc`, mimalloc instead of glibc's malloc: less CPU per request
/// (the data path allocates and frees per request), more memory (docs/performance.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A service-mesh sidecar that profiles requests, forecasts demand and pre-scales.
#[derive(Parser)]
#[command(name = "prescale", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        /// The mesh config file (YAML). Without it, the built-in default config (the
        /// example deploy/examples/sidecar.yaml, compiled in) is used.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// DEMO ONLY, never in production: one wall second counts as N seconds for
        /// series, forecasts, scaling, start-up time and timers (`prescale demo` uses it).
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        time_scale: u64,
        /// DEMO ONLY, with --time-scale: the series time to start at (RFC 3339, UTC).
        #[arg(long, value_name = "TIME", requires = "time_scale",
              value_parser = humantime::parse_rfc3339)]
        time_start: Option<std::time::SystemTime>,
    },
    /// Validate a config file and exit: 0 when valid, 64 with file:line:column otherwise.
    Check {
        /// The mesh config file (YAML) to validate.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Evaluate the sidecar's forecaster on a `timestamp,value` CSV (rolling origin).
    Forecast(forecast_cmd::ForecastArgs),
    /// What-if: replay an access log or request-count series against scaling policies
    /// (prescale, the Kubernetes HPA, a perfect-foresight oracle, a static peak fleet).
    Replay(replay::ReplayArgs),
    /// Run the whole product locally for about a minute: a sample service, the sidecar
    /// in front of it, a compressed day of traffic and a live view of what it learns.
    Demo(demo::DemoArgs),
    /// The demo's sample shop in a process of its own (started by `prescale demo`).
    #[command(hide = true)]
    DemoApp(demo::app::DemoAppArgs),
    /// Add the prescale sidecar to Kubernetes workloads (Deployment, StatefulSet,
    /// DaemonSet, Pod, ...) read from a file or stdin; --uninject removes it.
    Inject(inject::InjectArgs),
    /// Set up transparent interception with iptables in this network namespace (the
    /// injected init container runs this); --dry-run prints the rules.
    InitIptables(iptables::InitIptablesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { config } => match MeshConfig::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} listeners, {} clusters)",
                    config.display(),
                    cfg.listeners.len(),
                    cfg.clusters.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Forecast(args) => match forecast_cmd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Demo(args) => demo::run(&args),
        Command::DemoApp(args) => demo::app::main(&args),
        Command::Inject(args) => inject::main(&args),
        Command::InitIptables(args) => iptables::main(&args),
        Command::Replay(args) => match replay::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Run {
            config,
            time_scale,
            time_start,
        } => {
            let clock = if time_scale > 1 || time_start.is_some() {
                scaled_clock(time_scale, time_start)
            } else {
                prescale_proxy::clock::Clock::system()
            };
            run(config, clock)
        }
    }
}

/// `prescale run`: the config file given, else the built-in default (said in the first
/// log line, so nobody mistakes the example's ports for their own config).
fn run(config: Option<PathBuf>, clock: prescale_proxy::clock::Clock) -> ExitCode {
    let source = match config {
        Some(path) => prescale_proxy::ConfigSource::File(path),
        None => {
            tracing::info!(
                config = default_config::NAME,
                "no --config given: running with the built-in default config \
                 (deploy/examples/sidecar.yaml as of this build)"
            );
            default_config::source()
        }
    };
    let cfg = match source.load() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match prescale_proxy::run(source, cfg, clock, prescale_control::start) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run --time-scale`: the scaled series clock, said first.
fn scaled_clock(factor: u64, start: Option<std::time::SystemTime>) -> prescale_proxy::clock::Clock {
    let start_ms = start
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(prescale_proxy::clock::system_ms, |d| d.as_millis() as u64);
    let clock = prescale_proxy::clock::Clock::scaled_from(start_ms, factor as f64);
    tracing::warn!(
        time_scale = clock.scale(),
        series_start_ms = start_ms,
        "DEMO ONLY: --time-scale in force; one wall second counts as {} s for series, \
         forecasts, scaling and timers. Never run production traffic like this.",
        clock.scale()
    );
    clock
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`, pingora's chatter at warn).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
