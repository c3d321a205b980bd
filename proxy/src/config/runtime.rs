//! The `runtime:`, `drain:` and `limits:` sections: threads, shutdown and downstream bounds.

use super::Invalid;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Worker threads and process-wide settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads shared by every listener; 0 means one per available core, at
    /// most [`AUTO_MAX_THREADS`].
    pub worker_threads: usize,
}

/// The most threads `worker_threads: 0` picks. A sidecar's CPU is paid beside every
/// pod, and one thread is the cheapest per request (docs/performance.md); Linkerd's
/// proxy likewise runs on one or two cores. More only when configured.
pub const AUTO_MAX_THREADS: usize = 2;

/// How the process stops on SIGTERM or `POST /shutdown`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// In-flight requests get at most this long to finish; the process exits as soon as
    /// none are left. The default stays under Kubernetes' 30 s termination grace.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

/// Bounds on what a downstream client may send.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamLimits {
    /// Request line plus headers, in bytes; beyond it the answer is 431.
    pub max_request_header_bytes: usize,
    /// Number of request headers; beyond it the answer is 431.
    pub max_request_headers: usize,
    /// Declared or streamed request body size; beyond it the answer is 413. None: unbounded
    /// (bodies stream, so memory stays bounded either way).
    pub max_request_body_bytes: Option<u64>,
    /// How long a client may pause while sending a request body; then 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long an idle HTTP/1.1 keep-alive connection is kept (and an idle HTTP/2
    /// connection with no stream open).
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Longest time a request head may take: from the connection's accept (first
    /// request) or the head's first byte (later requests on a kept-alive connection) to
    /// its end. Slow heads (slowloris) get 408 and a closed connection.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Open downstream connections per listener; beyond it new connections are closed
    /// at once, before a byte is read.
    pub max_connections: usize,
}

// === impl RuntimeConfig ===

impl RuntimeConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.worker_threads > 256 {
            return Err(Invalid::new("worker_threads", "must be at most 256"));
        }
        Ok(())
    }

    /// The thread count of the listeners' shared runtime.
    pub fn threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get().min(AUTO_MAX_THREADS))
    }
}

// === impl DrainConfig ===

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(25),
        }
    }
}

impl DrainConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.grace_period > Duration::from_secs(3600) {
            return Err(Invalid::new("grace_period", "must be at most 1h"));
        }
        Ok(())
    }
}

// === impl DownstreamLimits ===

impl Default for DownstreamLimits {
    fn default() -> Self {
        Self {
            // Envoy's default is 60 KiB; most servers refuse well before pingora's 1 MiB.
            max_request_header_bytes: 64 * 1024,
            max_request_headers: 100,
            max_request_body_bytes: None,
            body_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            // HAProxy's usual `timeout http-request`; nginx uses 60 s.
            header_timeout: Duration::from_secs(10),
            // HAProxy-like; an idle connection costs pingora tens of KiB (docs/reliability.md).
            max_connections: 4096,
        }
    }
}

impl DownstreamLimits {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        // pingora refuses anything over 1 MiB of headers or 256 headers with a 400 before
        // we see it, so larger limits would be a promise we cannot keep.
        if !(1024..=1024 * 1024).contains(&self.max_request_header_bytes) {
            return Err(Invalid::new(
                "max_request_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if !(1..=256).contains(&self.max_request_headers) {
            return Err(Invalid::new(
                "max_request_headers",
                "must be between 1 and 256",
            ));
        }
        bounded("body_read_timeout", self.body_read_timeout)?;
        bounded("keepalive_timeout", self.keepalive_timeout)?;
        bounded("header_timeout", self.header_timeout)?;
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(Invalid::new(
                "max_connections",
                "must be between 1 and 1000000",
            ));
        }
        Ok(())
    }
}

/// Every timeout is positive and at most an hour: never unbounded, never zero.
pub(crate) fn bounded(field: &str, d: Duration) -> Result<(), Invalid> {
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(Invalid::new(
            field,
            format!("must be more than 0 and at most 1h, got {d:?}"),
        ));
    }
    Ok(())
}
