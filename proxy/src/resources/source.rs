//! Reading what the local service uses: its processes in `/proc`, or its cgroup v2
//! directory. Each read returns usage since the previous successful read.
//!
//! Sources keep cumulative counters of their own and hand out differences, so a
//! restarted process or a pid reused by another program starts a new count instead
//! of producing a negative (or huge) interval.

use crate::config::{ResourceSource, ResourcesConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `USER_HZ`: the unit of `utime`/`stime` in `/proc/<pid>/stat`. The kernel fixes it
/// at 100 on every architecture it exports to user space through procfs.
const USER_HZ: f64 = 100.0;

/// Usage over one interval (deltas), or levels at its end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU seconds used since the previous read; None on the first read.
    pub cpu_seconds: Option<f64>,
    /// Resident memory (process) or working set (cgroup) now.
    pub memory_bytes: Option<f64>,
    /// Bytes read and written since the previous read (process: `rchar + wchar`,
    /// sockets included; cgroup: `io.stat` block I/O). None when not readable.
    pub io_bytes: Option<f64>,
    /// The platform's own window `cpu_seconds` covers, `(start, end)` in Unix ms,
    /// when the source reports one (metrics-server's `[timestamp − window,
    /// timestamp]`, two scrapes of a cAdvisor counter): the sampler pairs the CPU
    /// with the requests of that window instead of its own last tick. None: the CPU
    /// is over the interval since the previous read.
    pub window: Option<(u64, u64)>,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("pid file {path}: {reason}")]
    PidFile { path: String, reason: String },
    #[error("no process named {0:?}")]
    NoProcess(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unexpected content")]
    Parse { path: String },
    /// A platform API (metrics API, Prometheus) failed or answered nonsense.
    #[error("{0}")]
    External(String),
    /// `kubernetes` / `prometheus` configured, but the binary gave no reader.
    #[error("source {0} has no reader in this build")]
    NoReader(&'static str),
}

/// A configured source with the counters it last saw.
pub enum Source {
    Process {
        find: Find,
        /// (pid, start time) → cumulative (CPU seconds, I/O bytes).
        last: BTreeMap<(u32, u64), (f64, Option<f64>)>,
    },
    Cgroup {
        dir: PathBuf,
        last: Option<(f64, Option<f64>)>,
    },
    /// Read through a platform API by a reader the binary injected.
    External(Box<dyn super::external::ExternalSource>),
    /// `kubernetes` / `prometheus` without a reader: every read fails, counted.
    Missing(&'static str),
}

/// How the service's processes are found.
pub enum Find {
    PidFile(PathBuf),
    ExeName(String),
}

/// One process's counters.
struct ProcStat {
    start: u64,
    cpu_seconds: f64,
    rss_bytes: Option<f64>,
    io_bytes: Option<f64>,
}

// === impl Source ===

impl Source {
    /// The configured source; `external` is the reader the binary built for
    /// `kubernetes` and `prometheus`.
    pub fn new(
        cfg: &ResourcesConfig,
        external: Option<Box<dyn super::external::ExternalSource>>,
    ) -> Self {
        match cfg.source {
            ResourceSource::Kubernetes | ResourceSource::Prometheus => match external {
                Some(e) => Source::External(e),
                None => Source::Missing(cfg.source.name()),
            },
            ResourceSource::Process => Source::Process {
                find: match (&cfg.pid_file, &cfg.exe_name) {
                    (Some(p), _) => Find::PidFile(p.clone()),
                    (None, Some(n)) => Find::ExeName(n.clone()),
                    // Validation requires one of them; an empty name matches nothing
                    // and is reported as a failing source, never a panic.
                    (None, None) => Find::ExeName(String::new()),
                },
                last: BTreeMap::new(),
            },
            ResourceSource::Cgroup => Source::Cgroup {
                dir: cfg.path.clone().unwrap_or_default(),
                last: None,
            },
        }
    }

    /// The `source` label and `/v1/resources` name.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Process { .. } => "process",
            Source::Cgroup { .. } => "cgroup",
            Source::External(e) => e.name(),
            Source::Missing(name) => name,
        }
    }

    /// Reads once. A failure forgets the previous counters, so the next success
    /// starts a fresh interval rather than spanning the gap.
    pub fn read(&mut self) -> Result<Usage, SampleError> {
        let r = match self {
            Source::Process { find, last } => read_processes(find, last),
            Source::Cgroup { dir, last } => read_cgroup(dir, last),
            Source::External(e) => e.read(),
            Source::Missing(name) => Err(SampleError::NoReader(name)),
        };
        if r.is_err() {
            match self {
                Source::Process { last, .. } => last.clear(),
                Source::Cgroup { last, .. } => *last = None,
                // An external reader forgets its own interval on failure.
                Source::External(_) | Source::Missing(_) => {}
            }
        }
        r
    }
}

fn read_processes(
    find: &Find,
    last: &mut BTreeMap<(u32, u64), (f64, Option<f64>)>,
) -> Result<Usage, SampleError> {
    let pids = match find {
        Find::PidFile(path) => vec![pid_from_file(path)?],
        Find::ExeName(name) => {
            let pids = pids_named(name)?;
            if pids.is_empty() {
                return Err(SampleError::NoProcess(name.clone()));
            }
            pids
        }
    };
    let mut now = BTreeMap::new();
    let (mut memory, mut any_memory) = (0.0, false);
    for pid in pids {
        // A process of the set may exit between the listing and the read: with a name,
        // skip it; a pid file names the one process that must be there.
        let stat = match read_proc(pid) {
            Ok(s) => s,
            Err(_) if matches!(find, Find::ExeName(_)) => continue,
            Err(e) => return Err(e),
        };
        if let Some(rss) = stat.rss_bytes {
            memory += rss;
            any_memory = true;
        }
        now.insert((pid, stat.start), (stat.cpu_seconds, stat.io_bytes));
    }
    if now.is_empty() {
        if let Find::ExeName(name) = find {
            return Err(SampleError::NoProcess(name.clone()));
        }
    }
    // Only processes seen both times contribute: a new one has no interval yet.
    let mut cpu: Option<f64> = None;
    let mut io: Option<f64> = None;
    for (key, (c, i)) in &now {
        if let Some((c0, i0)) = last.get(key) {
            *cpu.get_or_insert(0.0) += (c - c0).max(0.0);
            if let (Some(i), Some(i0)) = (i, i0) {
                *io.get_or_insert(0.0) += (i - i0).max(0.0);
            }
        }
    }
    *last = now;
    Ok(Usage {
        cpu_seconds: cpu,
        memory_bytes: any_memory.then_some(memory),
        io_bytes: io,
        window: None,
    })
}

fn pid_from_file(path: &Path) -> Result<u32, SampleError> {
    let err = |reason: String| SampleError::PidFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    text.trim()
        .parse()
        .map_err(|_| err(format!("{:?} is not a pid", text.trim())))
}

/// Every pid whose `comm` is `name`. One directory listing and one small read per
/// process.
fn pids_named(name: &str) -> Result<Vec<u32>, SampleError> {
    let dir = std::fs::read_dir("/proc").map_err(|source| SampleError::Read {
        path: "/proc".into(),
        source,
    })?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end_matches('\n') == name)
        })
        .collect())
}

fn read_proc(pid: u32) -> Result<ProcStat, SampleError> {
    let path = format!("/proc/{pid}/stat");
    let text = read(&path)?;
    let parse = || SampleError::Parse { path: path.clone() };
    // `comm` (in parentheses) may hold spaces and parentheses: fields follow the last ')'.
    let rest = text.rsplit_once(')').ok_or_else(parse)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so field N is at index N − 3.
    let field = |n: usize| -> Result<u64, SampleError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(parse)
    };
    let cpu_ticks = field(14)? + field(15)?;
    let start = field(22)?;
    let rss_bytes = read(&format!("/proc/{pid}/status")).ok().and_then(|s| {
        let kib: f64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib * 1024.0)
    });
    // Needs the same user (or CAP_SYS_PTRACE): without it, no I/O, still CPU.
    let io_bytes = read(&format!("/proc/{pid}/io")).ok().and_then(|s| {
        let value = |key: &str| -> Option<f64> {
            s.lines()
                .find_map(|l| l.strip_prefix(key))?
                .trim()
                .parse()
                .ok()
        };
        Some(value("rchar:")? + value("wchar:")?)
    });
    Ok(ProcStat {
        start,
        cpu_seconds: cpu_ticks as f64 / USER_HZ,
        rss_bytes,
        io_bytes,
    })
}

fn read_cgroup(dir: &Path, last: &mut Option<(f64, Option<f64>)>) -> Result<Usage, SampleError> {
    let cpu_path = dir.join("cpu.stat");
    let cpu_text = read(&cpu_path.display().to_string())?;
    let usage_usec: f64 = cpu_text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| SampleError::Parse {
            path: cpu_path.display().to_string(),
        })?;
    let cpu = usage_usec / 1e6;
    // Working set as cAdvisor counts it: usage less inactive file cache, which the
    // kernel reclaims before it would OOM-kill.
    let memory = read(&dir.join("memory.current").display().to_string())
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|current| {
            let inactive = read(&dir.join("memory.stat").display().to_string())
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("inactive_file "))?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0);
            (current - inactive).max(0.0)
        });
    let io = read(&dir.join("io.stat").display().to_string())
        .ok()
        .map(|s| {
            s.split_whitespace()
                .filter_map(|kv| {
                    let v = kv
                        .strip_prefix("rbytes=")
                        .or_else(|| kv.strip_prefix("wbytes="))?;
                    v.parse::<f64>().ok()
                })
                .sum::<f64>()
        });
    let prev = last.replace((cpu, io));
    Ok(Usage {
        cpu_seconds: prev.map(|(c0, _)| (cpu - c0).max(0.0)),
        memory_bytes: memory,
        io_bytes: match (prev, io) {
            (Some((_, Some(i0))), Some(i)) => Some((i - i0).max(0.0)),
            _ => None,
        },
        window: None,
    })
}

fn read(path: &str) -> Result<String, SampleError> {
    std::fs::read_to_string(path).map_err(|source| SampleError::Read {
        path: path.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn burn(d: Duration) {
        let end = Instant::now() + d;
        let mut x = 0u64;
        while Instant::now() < end {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn process_source_sees_this_process_burn_cpu() {
        let pid_file =
            std::env::temp_dir().join(format!("prescale-src-{}.pid", std::process::id()));
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let mut src = Source::Process {
            find: Find::PidFile(pid_file.clone()),
            last: BTreeMap::new(),
        };
        let first = src.read().unwrap();
        assert_eq!(
            first.cpu_seconds, None,
            "no interval before the second read"
        );
        assert!(first.memory_bytes.unwrap() > 1e6, "{first:?}");
        // This thread's time on CPU by the scheduler's own count (ns, another file):
        // the shared machine may give the spin less than its wall time.
        let on_cpu = || -> f64 {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            s.split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e9
        };
        let before = on_cpu();
        burn(Duration::from_millis(300));
        let burned = on_cpu() - before;
        let second = src.read().unwrap();
        let cpu = second.cpu_seconds.unwrap();
        // At least what this thread burned, less two 10 ms ticks of rounding.
        assert!(
            burned > 0.01 && cpu >= burned - 0.02,
            "burned {burned}: {second:?}"
        );
        std::fs::write(&pid_file, "not-a-pid\n").unwrap();
        assert!(matches!(src.read(), Err(SampleError::PidFile { .. })));
        std::fs::remove_file(&pid_file).unwrap();
        assert!(matches!(src.read(), Err(SampleError::PidFile { .. })));
    }

    #[test]
    fn exe_name_finds_processes_by_comm_and_sums_them() {
        // This test binary's own name, as the kernel truncates it.
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let mut src = Source::Process {
            find: Find::ExeName(comm.trim_end_matches('\n').to_string()),
            last: BTreeMap::new(),
        };
        let first = src.read().unwrap();
        assert!(first.memory_bytes.unwrap() > 1e6, "{first:?}");
        burn(Duration::from_millis(50));
        let second = src.read().unwrap();
        assert!(second.cpu_seconds.is_some(), "{second:?}");
    }

    #[test]
    fn a_missing_cgroup_or_process_name_is_an_error_not_a_zero() {
        let mut src = Source::Cgroup {
            dir: PathBuf::from("/nonexistent/cgroup"),
            last: None,
        };
        assert!(matches!(src.read(), Err(SampleError::Read { .. })));
        let mut src = Source::Process {
            find: Find::ExeName("no-such-exe-xq".into()),
            last: BTreeMap::new(),
        };
        assert!(matches!(src.read(), Err(SampleError::NoProcess(_))));
    }

    #[test]
    fn cgroup_files_are_parsed_into_deltas() {
        let dir = std::env::temp_dir().join(format!("prescale-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |usec: u64, current: u64| {
            std::fs::write(
                dir.join("cpu.stat"),
                format!("usage_usec {usec}\nuser_usec 1\n"),
            )
            .unwrap();
            std::fs::write(dir.join("memory.current"), format!("{current}\n")).unwrap();
            std::fs::write(dir.join("memory.stat"), "anon 5\ninactive_file 1000\n").unwrap();
            std::fs::write(
                dir.join("io.stat"),
                format!("8:0 rbytes={usec} wbytes=10 rios=1\n"),
            )
            .unwrap();
        };
        let mut src = Source::Cgroup {
            dir: dir.clone(),
            last: None,
        };
        write(1_000_000, 5000);
        let first = src.read().unwrap();
        assert_eq!(first.cpu_seconds, None);
        assert_eq!(first.memory_bytes, Some(4000.0));
        write(1_500_000, 9000);
        let second = src.read().unwrap();
        assert_eq!(second.cpu_seconds, Some(0.5));
        assert_eq!(second.memory_bytes, Some(8000.0));
        assert_eq!(second.io_bytes, Some(500_000.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
