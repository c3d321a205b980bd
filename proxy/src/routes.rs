//! The routing snapshot: clusters with resolved endpoints and each listener's routes,
//! built from a validated config and swapped whole (ArcSwap) on reload.

use crate::clock::Clock;
use crate::config::{ClusterConfig, Direction, DownstreamLimits, MeshConfig, Protocol};
use crate::health::PassiveHealth;
use crate::metrics::{ClusterMetrics, ListenerMetrics};
use crate::tiers::TierPolicy;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Everything the data path reads that a reload may change.
pub struct Snapshot {
    /// The one clock (carried over by every reload).
    pub clock: Clock,
    /// Bumped on every successful reload; shown in `/config` and logs.
    pub generation: u64,
    pub limits: DownstreamLimits,
    listeners: HashMap<String, Arc<ListenerRoutes>>,
    /// Every configured cluster by name (a reload carries their passive health over).
    clusters: HashMap<String, Arc<Cluster>>,
    /// Tiers and admission for inbound listeners; `None` without one.
    pub tiers: Option<Arc<TierPolicy>>,
}

/// Where one listener sends requests.
pub struct ListenerRoutes {
    pub direction: Direction,
    /// Inbound: the local service. Outbound: where unmatched requests go.
    pub default: Option<Arc<Cluster>>,
    /// Lower-cased `host` or `host:port` → cluster.
    by_authority: HashMap<String, Arc<Cluster>>,
    /// Connection settings towards original destinations; set when the listener
    /// forwards unmatched requests to the connection's original destination.
    pub passthrough: Option<Arc<Cluster>>,
    pub metrics: ListenerMetrics,
}

/// A cluster: its endpoints as ready-made peers, picked round-robin, skipping those
/// passive health has ejected.
pub struct Cluster {
    pub name: Arc<str>,
    endpoints: Vec<HttpPeer>,
    next: AtomicUsize,
    pub connect_retries: usize,
    config: ClusterConfig,
    ca: Option<Arc<[WrappedX509]>>,
    pub metrics: ClusterMetrics,
    /// Per-endpoint failure runs and ejections, when `passive_health` is configured.
    health: Option<PassiveHealth>,
    /// Takes the requests while no endpoint is left (set once, at build).
    overflow: OnceLock<Arc<Cluster>>,
}

/// A config that validated but cannot be turned into routes (e.g. DNS changed since).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct BuildError {
    /// `cluster <name>`, or the `policies.` config path at fault.
    what: String,
    reason: String,
}

// === impl Snapshot ===

impl Snapshot {
    /// The first snapshot; admission reads time from `clock`.
    pub fn build(cfg: &MeshConfig, generation: u64, clock: &Clock) -> Result<Self, BuildError> {
        Self::build_inner(cfg, generation, None, clock)
    }

    /// Builds the snapshot for a reload: tier admission takes over what `previous`
    /// learned (limits, counters, pre-shed level), and clusters their endpoints'
    /// passive health.
    pub fn build_after(
        cfg: &MeshConfig,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Self, BuildError> {
        let clock = previous.map_or_else(Clock::system, |p| p.clock.clone());
        Self::build_inner(cfg, generation, previous, &clock)
    }

    fn build_inner(
        cfg: &MeshConfig,
        generation: u64,
        previous: Option<&Snapshot>,
        clock: &Clock,
    ) -> Result<Self, BuildError> {
        let mut clusters = HashMap::new();
        for c in &cfg.clusters {
            let cluster = Cluster::new(c)?;
            if let Some(old) = previous.and_then(|p| p.clusters.get(&c.name)) {
                cluster.inherit_health(old);
            }
            clusters.insert(c.name.clone(), Arc::new(cluster));
        }
        // Validated: overflow targets exist and do not overflow themselves.
        for c in &cfg.clusters {
            let from = clusters.get(&c.name);
            let to = c.overflow.as_ref().and_then(|o| clusters.get(o));
            if let (Some(from), Some(to)) = (from, to) {
                let _ = from.overflow.set(to.clone());
            }
        }
        let get = |name: &Option<String>| name.as_ref().and_then(|n| clusters.get(n).cloned());
        let mut listeners = HashMap::new();
        for l in &cfg.listeners {
            let by_authority = l
                .routes
                .iter()
                .filter_map(|r| {
                    let c = clusters.get(&r.cluster)?.clone();
                    Some((r.authority.to_ascii_lowercase(), c))
                })
                .collect();
            let default = get(&l.cluster);
            let passthrough = match (&default, l.original_dst) {
                (_, false) => None,
                (Some(c), true) => Some(c.clone()),
                // Plain HTTP/1.1 with default timeouts when the listener names no cluster.
                (None, true) => Some(Arc::new(Cluster::new(&ClusterConfig::named(format!(
                    "{}-passthrough",
                    l.name
                )))?)),
            };
            let routes = ListenerRoutes {
                direction: l.direction,
                default,
                by_authority,
                passthrough,
                metrics: ListenerMetrics::new(&l.name),
            };
            listeners.insert(l.name.clone(), Arc::new(routes));
        }
        let old_tiers = previous.and_then(|p| p.tiers.as_deref());
        let tiers = TierPolicy::build(cfg, &clusters, old_tiers, clock)
            .map_err(|e| BuildError {
                what: format!("policies.{}", e.field),
                reason: e.reason,
            })?
            .map(Arc::new);
        Ok(Self {
            clock: clock.clone(),
            generation,
            limits: cfg.limits.clone(),
            listeners,
            clusters,
            tiers,
        })
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerRoutes>> {
        self.listeners.get(name)
    }
}

// === impl ListenerRoutes ===

impl ListenerRoutes {
    /// The cluster for an authority (`host` or `host:port`), if a route names it.
    pub fn route(&self, authority: &str) -> Option<&Arc<Cluster>> {
        if self.by_authority.is_empty() {
            return None;
        }
        // Authorities are case-insensitive; most clients already send lower case, so only
        // allocate when they did not.
        let lowered;
        let key = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        self.by_authority.get(key).or_else(|| {
            let host = key.rsplit_once(':').map(|(h, _)| h)?;
            self.by_authority.get(host)
        })
    }
}

// === impl Cluster ===

impl Cluster {
    fn new(cfg: &ClusterConfig) -> Result<Self, BuildError> {
        let err = |reason: String| BuildError {
            what: format!("cluster {}", cfg.name),
            reason,
        };
        let ca = match cfg.tls.as_ref().and_then(|t| t.ca.as_ref()) {
            Some(path) => {
                let certs = crate::tls::ca_certs(path).map_err(|e| err(e.to_string()))?;
                let wrapped: Vec<WrappedX509> = certs
                    .into_iter()
                    .map(|c| WrappedX509::new(c.to_vec(), parse_x509))
                    .collect();
                Some(Arc::from(wrapped))
            }
            None => None,
        };
        let mut cluster = Self {
            name: Arc::from(cfg.name.as_str()),
            endpoints: Vec::new(),
            next: AtomicUsize::new(0),
            connect_retries: cfg.connect_retries,
            config: cfg.clone(),
            ca,
            metrics: ClusterMetrics::new(&cfg.name),
            health: None,
            overflow: OnceLock::new(),
        };
        let resolved = cfg.resolve().map_err(err)?;
        cluster.endpoints = resolved
            .into_iter()
            .map(|(host, addr)| cluster.peer(addr, &host))
            .collect();
        cluster.health = cfg
            .passive_health
            .as_ref()
            .map(|h| PassiveHealth::new(h, cluster.endpoints.len()));
        Ok(cluster)
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Carries passive health over a reload: an endpoint at the same address keeps its
    /// failure run and ejection, so a reload does not send traffic straight back to an
    /// endpoint ejected a second before.
    fn inherit_health(&self, old: &Cluster) {
        let (Some(health), Some(old_health)) = (&self.health, &old.health) else {
            return;
        };
        for (i, peer) in self.endpoints.iter().enumerate() {
            let same = old
                .endpoints
                .iter()
                .position(|p| p._address == peer._address);
            if let Some(j) = same {
                health.inherit(i, old_health, j);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// The endpoint for a request's `attempt` (1-based) and its index: the first
    /// attempt takes the next endpoint round-robin and records it in `base`; a retry
    /// takes the endpoint after its previous try, so retries walk the cluster instead
    /// of advancing the shared counter again (which would send every request to a dead
    /// endpoint first when there are two). Ejected endpoints are skipped; if all are
    /// ejected, `None` when there is an overflow cluster to go to, else the endpoint
    /// anyway. `None` when the cluster has no endpoints.
    pub fn pick(
        &self,
        base: &mut Option<usize>,
        attempt: usize,
        now: u64,
    ) -> Option<(usize, Box<HttpPeer>)> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = *base.get_or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed));
        let first = start.wrapping_add(attempt.saturating_sub(1)) % n;
        let i = match &self.health {
            None => first,
            Some(h) => match (0..n)
                .map(|k| (first + k) % n)
                .find(|i| !h.is_ejected(*i, now))
            {
                Some(i) => i,
                None if self.overflow().is_some() => return None,
                None => first,
            },
        };
        self.endpoints.get(i).map(|p| (i, Box::new(p.clone())))
    }

    /// The cluster that takes this one's requests when it has no endpoint left.
    pub fn overflow(&self) -> Option<&Arc<Cluster>> {
        self.overflow.get()
    }

    /// Whether a request should go to the overflow cluster instead: there is one, and
    /// every endpoint here is ejected (or there are none).
    pub fn should_overflow(&self, now: u64) -> bool {
        self.overflow().is_some()
            && (self.endpoints.is_empty()
                || self.health.as_ref().is_some_and(|h| !h.any_healthy(now)))
    }

    /// Passive health: endpoint `i` failed. Counts an ejection if it caused one.
    pub fn endpoint_failed(&self, i: usize, now: u64) {
        if let Some(h) = &self.health {
            if h.failure(i, now) {
                self.metrics.ejections.increment(1);
                tracing::warn!(cluster = %self.name, endpoint = i, ejected = h.ejected(now), "endpoint ejected after consecutive failures");
            }
        }
    }

    /// Passive health: endpoint `i` answered.
    pub fn endpoint_ok(&self, i: usize) {
        if let Some(h) = &self.health {
            h.success(i);
        }
    }

    /// The upstream timeouts of this cluster.
    pub fn timeouts(&self) -> &crate::config::Timeouts {
        &self.config.timeouts
    }

    /// A peer for an address outside the endpoint list (an original destination),
    /// with this cluster's protocol and timeouts.
    pub fn peer_for(&self, addr: SocketAddr) -> Box<HttpPeer> {
        Box::new(self.peer(addr, &addr.ip().to_string()))
    }

    fn peer(&self, addr: SocketAddr, host: &str) -> HttpPeer {
        let cfg = &self.config;
        let sni = cfg
            .tls
            .as_ref()
            .and_then(|t| t.sni.clone())
            .unwrap_or_else(|| host.to_string());
        let mut peer = HttpPeer::new(addr, cfg.tls.is_some(), sni);
        let o = &mut peer.options;
        let t = &cfg.timeouts;
        o.connection_timeout = Some(t.connect);
        // Covers TCP and the TLS handshake together.
        o.total_connection_timeout = Some(t.connect * 2);
        o.read_timeout = Some(t.response_header);
        o.write_timeout = Some(t.write);
        o.idle_timeout = Some(t.idle);
        o.max_h2_streams = cfg.max_h2_streams;
        o.alpn = match cfg.protocol {
            Protocol::H1 => ALPN::H1,
            // Without TLS, pingora speaks h2 with prior knowledge (h2c).
            Protocol::H2 | Protocol::H2c => ALPN::H2,
        };
        o.ca = self.ca.clone();
        peer
    }
}
