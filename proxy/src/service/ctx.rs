//! What one request learns on its way through the phases.

use crate::lifecycle::InFlight;
use crate::metrics::LocalReason;
use crate::profiling::RequestProfile;
use crate::routes::{Cluster, ListenerRoutes};
use prescale_policies::{Permit, TierId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state, created in `new_ctx` and carried through every phase.
pub struct RequestCtx {
    pub start: Instant,
    /// Keeps the request counted for drain until the context is dropped.
    _in_flight: InFlight,
    /// The listener's routes, loaded once per request from the current snapshot.
    pub routes: Option<Arc<ListenerRoutes>>,
    /// Where the request goes.
    pub target: Target,
    /// Upstream connection attempts so far.
    pub attempts: usize,
    /// The round-robin position of the first attempt; retries continue from it.
    pub rr_base: Option<usize>,
    /// Index of the endpoint of the current attempt in the target cluster, for passive
    /// health; cleared once a connect failure has been counted against it.
    pub endpoint: Option<usize>,
    /// Set when the proxy answers by itself; becomes the `x-prescale-error` header.
    pub local: Option<LocalReason>,
    /// Arrival features of a profiled (inbound, routed) request.
    pub profile: Option<RequestProfile>,
    /// The tier admission classified an inbound request into.
    pub tier: Option<TierId>,
    /// The admission slot, held until `logging` releases it with the upstream's
    /// latency; dropped (freeing the slot) if the request ends any other way.
    pub permit: Option<Permit>,
    /// When the permit was granted: the start of the latency sample, so a wait in the
    /// admission queue does not teach the limiter the upstream got slower.
    pub admitted: Option<Instant>,
    /// When the upstream's response header arrived: the end of the latency sample.
    pub responded: Option<Instant>,
    /// The request's `grpc-timeout`: bounds its waits on the upstream.
    pub grpc_timeout: Option<Duration>,
    /// Whether the request is gRPC: its response head may wait for its whole stream.
    pub grpc: bool,
}

/// The upstream chosen for a request.
#[derive(Default)]
pub enum Target {
    #[default]
    Unrouted,
    Cluster(Arc<Cluster>),
    /// The connection's SO_ORIGINAL_DST, with the given cluster's connection settings.
    OriginalDst(SocketAddr, Arc<Cluster>),
}

// === impl RequestCtx ===

impl RequestCtx {
    pub fn new(in_flight: InFlight) -> Self {
        Self {
            start: Instant::now(),
            _in_flight: in_flight,
            routes: None,
            target: Target::Unrouted,
            admitted: None,
            attempts: 0,
            rr_base: None,
            endpoint: None,
            local: None,
            profile: None,
            tier: None,
            permit: None,
            responded: None,
            grpc_timeout: None,
            grpc: false,
        }
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.target {
            Target::Unrouted => None,
            Target::Cluster(c) | Target::OriginalDst(_, c) => Some(c),
        }
    }
}
