//! What a process holds, from /proc: open file descriptors, threads, resident memory.
//! Used to assert that faults and floods leave nothing behind.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Open file descriptors of `pid` (sockets, files, epoll, pipes...).
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open sockets of `pid` (fds that are `socket:[...]`).
pub fn sockets(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false)
        })
        .count()
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> usize {
    status_field(pid, "Threads:").unwrap_or(0) as usize
}

/// Resident set size of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:").unwrap_or(0)
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` until it is at most `bound` or `limit` passes; returns its last value.
pub async fn settle(limit: Duration, bound: usize, f: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let v = f();
        if v <= bound || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
