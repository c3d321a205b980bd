//! Tier policies at the edge: classify each inbound request, admit or shed it, and
//! route it to its tier's cluster. The decisions are `prescale-policies`'; this module
//! only feeds them the request and the clock, and turns their answers into traffic.
//!
//! One [`TierPolicy`] serves every inbound listener: a sidecar protects one service,
//! so all inbound listeners share its concurrency limit (the policies' "route's own
//! cluster") and the limit of each tier cluster. Outbound listeners carry the
//! service's own calls and are not admitted. The policy lives in the routing
//! [`Snapshot`], so a reload swaps tiers, limits and routes together; learned limits
//! and counters carry over (`Admission::reconfigure`).
//!
//! Source identity, in order: the verified mTLS client's name (listeners with
//! `client_ca`; see `peer_identity`), the `profiler.source_header` value when the peer is in
//! `policies.tiers.trusted_sources`, else the client address. A client can forge none
//! of these: a header from an untrusted peer is ignored like the tier header. The same
//! identity, hashed by `Admission::identity_hash`, is the source the profiler records
//! and per-source anomalies name, so remediation hits exactly the source detected.

mod export;
mod preshed;
mod request;

pub use self::export::{export, tiers_json, Exported};
pub use self::preshed::{admission_state, apply as apply_preshed};

use self::request::{IpText, TierRequest};
use crate::clock::Clock;
use crate::config::{Direction, MeshConfig};
use crate::metrics::LocalReason;
use crate::routes::{Cluster, Snapshot};
use arc_swap::ArcSwap;
use pingora::proxy::Session;
use prescale_policies::admission::PreShedConfig;
use prescale_policies::{
    Admission, AdmissionConfig, Decision, Outcome, Permit, PoliciesConfig, PoliciesConfigError,
    Rejection, SourcesConfig, Ticket, TierId, TiersConfig, Topology,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Tiers and admission for the inbound listeners of one config.
pub struct TierPolicy {
    pub admission: Admission,
    /// Tier clusters and their overflow clusters by name: where a permit's slot is.
    routes_to: HashMap<String, Arc<Cluster>>,
    /// Name of the route's own cluster (the first inbound listener's), for labels.
    pub route_cluster: String,
    /// `profiler.source_header`, honoured from trusted peers only.
    source_header: Option<String>,
    /// Pre-shedding settings, read by the forecaster at each sync.
    pub preshed: PreShedConfig,
    /// False when the config sets no policy at all: then everything is admitted and
    /// only counted, so a plain proxy config never sheds.
    pub enforcing: bool,
    /// Admission's `now` (monotonic microseconds).
    pub clock: Clock,
}

/// What admission made of one request.
pub enum Verdict {
    /// Forward it, holding the permit until the upstream has answered.
    Admit {
        tier: TierId,
        permit: Permit,
        /// The tier's own cluster, when it has one.
        cluster: Option<Arc<Cluster>>,
    },
    /// Answer it now.
    Reject(Rejection),
    /// Its tier queues: wait for the ticket (see [`TierPolicy::wait`]).
    Wait(Ticket),
}

/// The live tier policy, for threads that outlive reloads (the forecaster).
#[derive(Clone)]
pub struct LiveTiers(Arc<ArcSwap<Snapshot>>);

// === impl TierPolicy ===

impl TierPolicy {
    /// The policy for `cfg` (validated), or `None` when no listener is inbound.
    /// `previous` hands over learned limits and counters on reload.
    pub fn build(
        cfg: &MeshConfig,
        clusters: &HashMap<String, Arc<Cluster>>,
        previous: Option<&TierPolicy>,
        clock: &Clock,
    ) -> Result<Option<Self>, PoliciesConfigError> {
        let Some(inbound) = cfg
            .listeners
            .iter()
            .find(|l| l.direction == Direction::Inbound)
        else {
            return Ok(None);
        };
        let p = &cfg.policies;
        let enforcing = p.shadow
            || p.tiers != TiersConfig::default()
            || p.sources != SourcesConfig::default()
            || p.admission != AdmissionConfig::default();
        let mut policies: PoliciesConfig = p.clone();
        if !enforcing {
            policies.admission.enabled = false;
        }
        let now = clock.now_micros();
        // A tier cluster with `overflow` lends the tier a free slot there when it is
        // full (and takes all its requests while it has no endpoint, see `routes`).
        let route_cluster = inbound.cluster.as_deref();
        let topology = Topology {
            route: route_cluster.map(str::to_string),
            overflow: cfg
                .clusters
                .iter()
                .filter_map(|c| {
                    let to = c.overflow.as_deref()?;
                    let to = (Some(to) != route_cluster).then(|| to.to_string());
                    Some((c.name.clone(), to))
                })
                .collect(),
        };
        let admission = match previous {
            Some(old) => old
                .admission
                .reconfigure_with_topology(&policies, now, &topology)?,
            None => Admission::with_topology(&policies, now, &topology)?,
        };
        let routes_to = admission
            .tiers()
            .iter()
            .filter_map(|(_, t)| t.cluster.as_deref())
            .chain(topology.overflow.values().filter_map(Option::as_deref))
            .filter_map(|n| Some((n.to_string(), clusters.get(n)?.clone())))
            .collect();
        Ok(Some(Self {
            admission,
            routes_to,
            route_cluster: inbound.cluster.clone().unwrap_or_else(|| "route".into()),
            source_header: cfg
                .profiler
                .source_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            preshed: p.admission.preshed.clone(),
            enforcing,
            clock: clock.clone(),
        }))
    }

    /// Classifies the request, strips a tier header it may not carry, and asks
    /// admission. `cost` is the expected service time of its signature, if guessed.
    /// Also returns the source's identity hash (0: none), which the profiler records so
    /// that per-source anomalies and their remediation name the same source. No lock;
    /// allocates only to build a route template when a tier matches on one.
    pub fn admit(
        &self,
        session: &mut Session,
        client: Option<IpAddr>,
        cost: Option<f64>,
    ) -> (Verdict, u64) {
        let (strip, decision, source_hash) = {
            let peer = crate::peer_identity::of(session);
            self.decide(session.req_header(), peer, client, cost)
        };
        if strip {
            // A client must not promote itself here, nor to the service behind us.
            session
                .req_header_mut()
                .remove_header(self.admission.tiers().header());
        }
        (self.verdict(decision), source_hash)
    }

    /// [`admit`](Self::admit) for a request head outside pingora (the hyper data-path
    /// prototype, `examples/hyper_dataplane.rs`): `peer` is the verified mTLS identity,
    /// if any. Strips the tier header the same way.
    pub fn admit_parts(
        &self,
        req: &mut http::request::Parts,
        peer: Option<&str>,
        client: Option<IpAddr>,
        cost: Option<f64>,
    ) -> (Verdict, u64) {
        let (strip, decision, source_hash) = self.decide(req, peer, client, cost);
        if strip {
            req.headers.remove(self.admission.tiers().header());
        }
        (self.verdict(decision), source_hash)
    }

    /// Classification and admission's decision, whether the tier header must be
    /// stripped, and the source's identity hash.
    fn decide(
        &self,
        req: &http::request::Parts,
        peer: Option<&str>,
        client: Option<IpAddr>,
        cost: Option<f64>,
    ) -> (bool, Decision, u64) {
        let table = self.admission.tiers();
        let ip_text = client.map(IpText::new);
        let vouched = self
            .source_header
            .as_deref()
            .filter(|_| table.trusts(peer, client))
            .and_then(|h| req.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let source = peer.or(vouched).or(ip_text.as_ref().map(IpText::as_str));
        let view = TierRequest::new(req, source, client);
        let class = table.classify(&view);
        let now = self.clock.now_micros();
        // A tier cluster whose endpoints are all ejected sends to its overflow
        // cluster (`upstream_peer`): hold the slot there, not on the idle one.
        let home_down: std::cell::Cell<Option<&Arc<Cluster>>> = std::cell::Cell::new(None);
        let down = |name: &str| {
            let c = self.routes_to.get(name).filter(|c| c.should_overflow(now));
            home_down.set(c);
            c.is_some()
        };
        let decision = self
            .admission
            .try_acquire_unless_down(class.tier, cost, source, now, down);
        // Sent to the overflow cluster because its own had no endpoint left: counted
        // as `upstream_peer` counts the requests it moves for the same reason.
        if let (Decision::Admit(p), Some(home)) = (&decision, home_down.get()) {
            if p.cluster() != Some(&*home.name) {
                home.metrics.overflows.increment(1);
            }
        }
        let source_hash = source.map_or(0, |s| self.admission.identity_hash(s));
        (class.strip_header, decision, source_hash)
    }

    fn verdict(&self, decision: Decision) -> Verdict {
        match decision {
            Decision::Admit(permit) => self.admitted(permit),
            Decision::Reject(r) => Verdict::Reject(r),
            Decision::Wait(t) => Verdict::Wait(t),
        }
    }

    /// Waits for a queued request's slot until its deadline; then admits or refuses.
    pub async fn wait(&self, mut ticket: Ticket) -> Verdict {
        let left = ticket.deadline().saturating_sub(self.clock.now_micros());
        let waited =
            tokio::time::timeout(std::time::Duration::from_micros(left), &mut ticket).await;
        match waited.map_or_else(|_| ticket.expire(), Ok) {
            Ok(permit) => self.admitted(permit),
            Err(r) => Verdict::Reject(r),
        }
    }

    fn admitted(&self, permit: Permit) -> Verdict {
        // The permit's tier (a source under remediation may have been demoted) and the
        // cluster its slot is on (its tier's, or that one's overflow).
        Verdict::Admit {
            tier: permit.tier(),
            cluster: permit
                .cluster()
                .and_then(|n| self.routes_to.get(n))
                .cloned(),
            permit,
        }
    }

    /// The name of `tier`, for the shed header.
    pub fn tier_name(&self, tier: TierId) -> &str {
        self.admission
            .tiers()
            .get(tier)
            .map_or("unknown", |t| t.name.as_str())
    }
}

// === impl LiveTiers ===

impl LiveTiers {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Self(snapshot)
    }

    /// The policy in force now.
    pub fn load(&self) -> Option<Arc<TierPolicy>> {
        self.0.load().tiers.clone()
    }
}

/// What the limiter learns from how a request ended: upstream timeouts, refused
/// connections, 503 and 429 are overload; a client that left or a request that never
/// reached the upstream teaches nothing.
pub fn outcome(status: u16, local: Option<LocalReason>, client_gone: bool) -> Outcome {
    match local {
        Some(LocalReason::UpstreamTimeout | LocalReason::UpstreamConnect) => Outcome::Overloaded,
        Some(_) => Outcome::Ignored,
        None if client_gone || status == 0 => Outcome::Ignored,
        None if matches!(status, 503 | 429) => Outcome::Overloaded,
        None => Outcome::Success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_signals_teach_the_limiter_and_client_aborts_do_not() {
        assert_eq!(outcome(200, None, false), Outcome::Success);
        assert_eq!(outcome(404, None, false), Outcome::Success);
        // The service itself says it is overloaded.
        assert_eq!(outcome(503, None, false), Outcome::Overloaded);
        assert_eq!(outcome(429, None, false), Outcome::Overloaded);
        // The proxy saw a timeout or a refused connection.
        let timeout = Some(LocalReason::UpstreamTimeout);
        assert_eq!(outcome(504, timeout, false), Outcome::Overloaded);
        let refused = Some(LocalReason::UpstreamConnect);
        assert_eq!(outcome(502, refused, false), Outcome::Overloaded);
        // The client left, or nothing reached the upstream.
        assert_eq!(outcome(200, None, true), Outcome::Ignored);
        assert_eq!(outcome(0, None, false), Outcome::Ignored);
        let no_endpoint = Some(LocalReason::NoEndpoint);
        assert_eq!(outcome(503, no_endpoint, false), Outcome::Ignored);
    }
}
