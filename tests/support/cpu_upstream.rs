//! The CPU-burning Python upstream (`tests/support/cpu_upstream.py`) the resource tests
//! learn costs from, and a one-connection keep-alive client for it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `python3` is there for `test` (fails under `CI=true` when it is not).
pub fn python_usable(test: &str) -> bool {
    super::require::tools(test, &["python3"])
}

/// The Python upstream, killed on drop.
pub struct CpuUpstream {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// Where it wrote its pid (what `resources.pid_file` reads).
    pub pid_file: PathBuf,
}

impl CpuUpstream {
    /// Starts it on a free loopback port, writing its pid file into `dir`.
    pub fn start(dir: &Path) -> Self {
        let port = super::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let pid_file = dir.join("upstream.pid");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/cpu_upstream.py");
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&pid_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The pid file is created before its digits are written: wait until it parses.
        let read_pid = || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
        };
        let pid = loop {
            if TcpStream::connect(addr).is_ok() {
                if let Some(pid) = read_pid() {
                    break pid;
                }
            }
            assert!(Instant::now() < deadline, "upstream did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            pid,
            addr,
            pid_file,
        }
    }

    /// CPU seconds the upstream has used, as `/proc/<pid>/stat` shows them.
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.pid)
    }
}

impl Drop for CpuUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of `pid` in seconds, from `/proc/<pid>/stat`; 0 once it is gone.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// One keep-alive HTTP/1.1 GET on `reader`'s connection; the status code (the body is
/// read and dropped).
pub fn get(reader: &mut BufReader<TcpStream>, path: &str) -> u16 {
    write!(reader.get_mut(), "GET {path} HTTP/1.1\r\nhost: app\r\n\r\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status
}
