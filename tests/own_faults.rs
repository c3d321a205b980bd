//! The proxy's own faults through the real binary: its store's disk fills up under it,
//! or is read-only at start (profiling degrades, counted and logged; proxying does not
//! notice; the store is retried and recovers), and its
//! config file becomes unreadable at reload (refused; the running config stays).
//!
//! A read-only remount *under* the running proxy cannot be staged: Linux refuses to
//! remount read-only while redb holds the file open for writing (EBUSY); only the
//! kernel itself does it, after I/O errors. Write failures at runtime are staged with
//! a full disk, which takes the same path (flush fails, store closed, reopened).
//!
//! The store tests mount a small tmpfs (root only): without root they print why and
//! pass, except under CI=true, where CI runs as root and they must run.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn start(yaml: String, admin: SocketAddr) -> Proxy {
    tokio::task::spawn_blocking(move || Proxy::start(&yaml, admin))
        .await
        .unwrap()
}

/// A tmpfs of `size` mounted on a fresh temp dir; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(test: &str, size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Self { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        require::unmet(test, &format!("cannot mount a tmpfs ({why}); run as root"));
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts read-only (which binds root too, unlike file modes).
    fn read_only(&self) {
        self.remount("remount,ro");
    }

    /// Remounts read-write again.
    fn read_write(&self) {
        self.remount("remount,rw");
    }

    fn remount(&self, options: &str) {
        let st = Command::new("mount")
            .args(["-o", options])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -o {options}");
    }

    /// Fills the remaining space with a file; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        // Bounded by the tmpfs size.
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn store_config(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    store: &Path,
) -> String {
    format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: local}}\nclusters:\n  - {{name: local, endpoints: [\"{upstream}\"]}}\nprofiler: {{tick: 200ms, store: {{path: \"{}\", flush_interval: 1s}}}}\n",
        store.display()
    )
}

/// `n` GETs through the proxy with curl; every one must answer 200.
fn requests_ok(listen: SocketAddr, n: usize, tag: &str) {
    for i in 0..n {
        let (code, out) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{listen}/{tag}/{i}"),
        ]);
        assert_eq!((code, out.as_str()), (0, "200"), "{tag} {i}");
    }
}

fn counter(proxy: &Proxy, labels: &str) -> f64 {
    proxy
        .metric("prescale_store_writes_total", labels)
        .unwrap_or(0.0)
}

/// Polls until `f` holds, at most `limit`.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

/// Requests counted in `GET /v1/series` (the in-memory series).
fn series_requests(proxy: &Proxy) -> u64 {
    let Some((200, body)) = admin_get(proxy.admin, "/v1/series") else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["minutes"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|b| b["total"]["requests"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_disk_degrades_profiling_only_and_recovers() {
    let Some(fs) = Tmpfs::mount(
        "a_full_store_disk_degrades_profiling_only_and_recovers",
        "2m",
    ) else {
        return;
    };
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let store = fs.path().join("series.redb");
    let proxy = start(store_config(admin, listen, upstream.addr, &store), admin).await;
    requests_ok(listen, 5, "before");
    assert!(
        eventually(Duration::from_secs(5), || counter(
            &proxy,
            "result=\"success\""
        ) >= 1.0)
        .await,
        "no successful flush before the disk filled:\n{}",
        proxy.logs()
    );

    let filler = fs.fill();
    let t = Instant::now();
    requests_ok(listen, 30, "full");
    let failed = eventually(Duration::from_secs(5), || {
        counter(&proxy, "result=\"failure\"") >= 2.0
    })
    .await;
    assert!(
        failed,
        "flushes to a full disk not counted as failures:\n{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    assert!(
        logs.contains("store flush failed") && logs.contains("No space left on device"),
        "{logs}"
    );
    // Proxying does not notice, and the in-memory series keep counting.
    requests_ok(listen, 30, "still-full");
    assert!(
        eventually(Duration::from_secs(5), || series_requests(&proxy) == 65).await,
        "series count {} of 65",
        series_requests(&proxy)
    );
    eprintln!("full for {:?}", t.elapsed());

    // Space comes back: the store is reopened and written again, with nothing set aside.
    std::fs::remove_file(&filler).unwrap();
    let successes = counter(&proxy, "result=\"success\"");
    assert!(
        eventually(Duration::from_secs(10), || counter(
            &proxy,
            "result=\"success\""
        ) > successes)
        .await,
        "the store never recovered:\n{}",
        proxy.logs()
    );
    assert!(proxy.logs().contains("store reopened"), "{}", proxy.logs());
    let entries: Vec<String> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        vec!["series.redb".to_string()],
        "left behind: {entries:?}"
    );
    assert_eq!(proxy.metric("prescale_store_set_aside_total", ""), None);
    requests_ok(listen, 5, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_at_start_degrades_profiling_only_and_is_retried() {
    let Some(fs) = Tmpfs::mount(
        "a_read_only_store_at_start_degrades_profiling_only_and_is_retried",
        "1m",
    ) else {
        return;
    };
    fs.read_only();
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let store = fs.path().join("series.redb");
    let proxy = start(store_config(admin, listen, upstream.addr, &store), admin).await;
    requests_ok(listen, 20, "ro");
    let logs = proxy.logs();
    assert!(
        logs.contains("store unavailable; series stay in memory only")
            && logs.contains("Read-only file system"),
        "{logs}"
    );
    assert!(counter(&proxy, "result=\"failure\"") >= 1.0);
    assert!(
        eventually(Duration::from_secs(5), || series_requests(&proxy) == 20).await,
        "series count {} of 20",
        series_requests(&proxy)
    );
    assert_eq!(upstream.hits(), 20);

    // The volume becomes writable (mounted late, say): the store is opened at the next
    // flush and what was counted in memory meanwhile is written, without a restart.
    fs.read_write();
    assert!(
        eventually(Duration::from_secs(10), || counter(
            &proxy,
            "result=\"success\""
        ) >= 1.0)
        .await,
        "the store was never retried:\n{}",
        proxy.logs()
    );
    assert!(proxy.logs().contains("store reopened"), "{}", proxy.logs());
    assert!(std::fs::metadata(&store).is_ok_and(|m| m.len() > 0));
    requests_ok(listen, 5, "rw");
}

// === config file unreadable at reload =============================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_config_at_reload_keeps_the_running_one() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let proxy = start(inbound_config(admin, listen, upstream.addr, ""), admin).await;
    let file = proxy.config.display().to_string();
    let failures = || {
        proxy
            .metric("prescale_config_reloads_total", "result=\"failure\"")
            .unwrap_or(0.0)
    };

    // Not UTF-8: refused with the file named.
    std::fs::write(&proxy.config, b"admin:\n  address: \xff\xfe\n").unwrap();
    let (status, body) = admin_request(admin, "POST", "/reload").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&file), "{body}");
    assert_eq!(failures(), 1.0);

    // A directory where the file was (a botched ConfigMap mount), by POST and SIGHUP.
    std::fs::remove_file(&proxy.config).unwrap();
    std::fs::create_dir(&proxy.config).unwrap();
    let (status, body) = admin_request(admin, "POST", "/reload").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&format!("{file}: cannot read")), "{body}");
    proxy.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || failures() == 3.0).await,
        "SIGHUP failure not counted: {}",
        failures()
    );

    // An empty file: refused, not taken as "no listeners".
    std::fs::remove_dir(&proxy.config).unwrap();
    std::fs::write(&proxy.config, "").unwrap();
    let (status, body) = admin_request(admin, "POST", "/reload").unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(failures(), 4.0);

    // Through all of it the first config serves.
    requests_ok(listen, 3, "kept");
    let (_, cfg) = admin_get(admin, "/config").unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["generation"], 1);
    assert_eq!(admin_get(admin, "/ready").map(|r| r.0), Some(200));
}
