//! The shop as a child process (`prescale demo-app`): the sidecar's
//! `resources.source: process` then reads the shop's own CPU and memory from `/proc`,
//! and nothing of the demo's load generator or view.
//!
//! The child binds a loopback port, prints `listening <addr>` on stdout, and serves
//! until its stdin closes: when the demo ends, or dies without cleaning up, the pipe
//! closes and the shop exits by itself instead of lingering.

use super::upstream::Service;
use super::DemoError;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::Duration;

/// How long the child gets to say where it listens.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Arguments of the hidden `prescale demo-app` (started by `prescale demo` only).
#[derive(clap::Args, Debug)]
pub struct DemoAppArgs {
    /// The sidecar's outbound listener, where the checkout sends its payments calls.
    #[arg(long)]
    pub outbound: SocketAddr,
}

/// The shop's process, killed on drop.
pub struct AppProcess {
    child: Child,
    /// Held open: closing it tells the child to exit.
    stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
    /// Holds the child's pid: what `resources.pid_file` points at.
    pub pid_file: PathBuf,
}

// === impl AppProcess ===

impl AppProcess {
    /// Starts `<this binary> demo-app --outbound <outbound>`, waits for its address and
    /// writes its pid to `<dir>/app.pid`.
    pub async fn spawn(dir: &Path, outbound: SocketAddr) -> Result<Self, DemoError> {
        let exe =
            std::env::current_exe().map_err(|e| DemoError::io("finding the prescale binary", e))?;
        let mut child = Command::new(exe)
            .arg("demo-app")
            .arg("--outbound")
            .arg(outbound.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: the terminal's Ctrl-C is the demo's to handle.
            .process_group(0)
            .spawn()
            .map_err(|e| DemoError::io("starting the sample shop", e))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let first = tokio::time::timeout(
            START_LIMIT,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                if let Some(out) = stdout {
                    let mut r = BufReader::new(out);
                    let _ = r.read_line(&mut line);
                    // Drain the rest so the child never blocks on a full pipe.
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut r, &mut std::io::sink());
                    });
                }
                line
            }),
        )
        .await;
        let mut me = Self {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid_file: dir.join("app.pid"),
        };
        let line = match first {
            Ok(Ok(line)) => line,
            _ => {
                return Err(DemoError::io(
                    "starting the sample shop",
                    std::io::Error::other("it did not say where it listens"),
                ))
            }
        };
        me.addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                DemoError::io(
                    "starting the sample shop",
                    std::io::Error::other(format!("unexpected first line {:?}", line.trim())),
                )
            })?;
        std::fs::write(&me.pid_file, format!("{}\n", me.child.id()))
            .map_err(|e| DemoError::io(format!("writing {}", me.pid_file.display()), e))?;
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds the shop has used so far (`utime + stime` of `/proc/<pid>/stat`, all
    /// threads; USER_HZ = 100): the demo's own reading, to set the forecast against.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // Closing stdin ends it; a kill makes sure, and the wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `prescale demo-app`: serves the shop until stdin closes.
pub fn main(args: &DemoAppArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shop")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the shop's runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shop = match rt.block_on(Service::shop(args.outbound)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "listening {}", shop.addr)
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(out);
    // Blocks until the demo closes the pipe (or goes away).
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    drop(shop);
    rt.shutdown_timeout(Duration::from_millis(200));
    ExitCode::SUCCESS
}
