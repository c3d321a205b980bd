//! Readiness, in-flight accounting and the drain that ends the process.
//!
//! SIGTERM and `POST /shutdown` take the same path: `/ready` turns 503, the listeners
//! stop accepting (pingora's graceful terminate), in-flight requests finish, and the
//! process exits 0 as soon as none are left, or when the grace period ends.

use crate::metrics;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Process-wide serving state, shared by the data path, the admin API and signals.
#[derive(Default)]
pub struct Lifecycle {
    bound: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    drain_requested: Notify,
}

/// Held by each request from header to end of logging; dropping it ends the request.
pub struct InFlight(Arc<Lifecycle>);

/// Turns SIGTERM, SIGINT and admin shutdown requests into pingora's shutdown kinds.
pub struct DrainSignal(pub Arc<Lifecycle>);

// === impl Lifecycle ===

impl Lifecycle {
    pub fn is_ready(&self) -> bool {
        self.bound.load(Ordering::Acquire) && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Starts draining; returns false if a drain had already begun.
    pub fn begin_drain(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::AcqRel);
        if first {
            ::metrics::gauge!(metrics::DRAINING).set(1.0);
            ::metrics::gauge!(metrics::READY).set(0.0);
            self.drain_requested.notify_one();
        }
        first
    }

    /// Waits until this process listens on every address, then marks the proxy ready.
    /// Returns the first address still not ours when `limit` ran out.
    pub fn await_bound(&self, addrs: &[SocketAddr], limit: Duration) -> Result<(), SocketAddr> {
        let deadline = Instant::now() + limit;
        for addr in addrs {
            while !is_bound(*addr) {
                if Instant::now() > deadline {
                    return Err(*addr);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.bound.store(true, Ordering::Release);
        if !self.is_draining() {
            ::metrics::gauge!(metrics::READY).set(1.0);
        }
        Ok(())
    }

    /// Blocks until a drain starts and then ends: no request in flight, or `grace` spent.
    /// The caller exits the process afterwards.
    pub fn await_drained(&self, grace: Duration) {
        while !self.is_draining() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let start = Instant::now();
        // pingora stops its accept loops right after the signal; give requests already
        // accepted a moment to register before trusting a zero count.
        std::thread::sleep(Duration::from_millis(200));
        loop {
            let n = self.in_flight();
            if n == 0 {
                tracing::info!(elapsed = ?start.elapsed(), "drained: no request in flight");
                return;
            }
            if start.elapsed() >= grace {
                tracing::warn!(in_flight = n, "grace period ended with requests in flight");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether this process listens on `addr`; where /proc cannot tell (not Linux), a
/// TCP connect is the best evidence left.
fn is_bound(addr: SocketAddr) -> bool {
    match crate::bound::listening_here(addr) {
        Ok(yes) => yes,
        Err(_) => TcpStream::connect_timeout(&probe_addr(addr), Duration::from_millis(200)).is_ok(),
    }
}

/// Listeners on a wildcard address are probed on loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    }
}

// === impl InFlight ===

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl DrainSignal ===

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!(
                "cannot install signal handlers; only POST /shutdown can stop the proxy"
            );
            self.0.drain_requested.notified().await;
            return ShutdownSignal::GracefulTerminate;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                self.0.begin_drain();
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                ShutdownSignal::FastShutdown
            }
            _ = self.0.drain_requested.notified() => {
                tracing::info!("shutdown requested: draining");
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}
