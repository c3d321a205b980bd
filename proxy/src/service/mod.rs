//! The data path: our `ProxyHttp` implementation, one instance per listener.
//!
//! Read top-down, the phases are the life of a request: limits and routing in
//! `request_filter`, endpoint choice in `upstream_peer`, forwarding headers in
//! `upstream_request_filter`, failures in `fail_to_connect`/`fail_to_proxy`, and
//! accounting in `logging`. Decisions that belong to policies or the profiler are
//! called from here, never made here.

mod ctx;
mod errors;
mod forwarded;
mod strict;
mod te;
mod timeouts;

pub use self::ctx::{RequestCtx, Target};
pub use self::strict::MAX_METHOD_LEN;

use crate::clock::Clock;
use crate::config::Direction;
use crate::lifecycle::Lifecycle;
use crate::metrics::LocalReason;
use crate::profiling::{Profiling, RequestProfile};
use crate::routes::Snapshot;
use crate::tiers::{self, TierPolicy, Verdict};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use prescale_profiler::sample::Completion;
use std::sync::Arc;
use std::time::Instant;

/// Largest refused h2 body read before answering 413 (one default h2 window).
const LINGER_BODY_BYTES: u64 = 65_535;
/// Longest wait for it.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_millis(200);

/// The proxy logic of one listener.
pub struct Sidecar {
    listener: String,
    direction: Direction,
    tls: bool,
    snapshot: Arc<ArcSwap<Snapshot>>,
    lifecycle: Arc<Lifecycle>,
    profiling: Arc<Profiling>,
    /// Admission's and passive health's `now`.
    clock: Clock,
}

// === impl Sidecar ===

impl Sidecar {
    pub fn new(
        listener: String,
        direction: Direction,
        tls: bool,
        snapshot: Arc<ArcSwap<Snapshot>>,
        lifecycle: Arc<Lifecycle>,
        profiling: Arc<Profiling>,
        clock: Clock,
    ) -> Self {
        Self {
            listener,
            direction,
            tls,
            snapshot,
            lifecycle,
            profiling,
            clock,
        }
    }

    /// Chooses where the request goes; `None` means no route matches.
    fn route(&self, session: &Session, ctx: &RequestCtx) -> Option<Target> {
        let routes = ctx.routes.as_ref()?;
        if routes.direction == Direction::Inbound {
            return routes.default.clone().map(Target::Cluster);
        }
        if let Some(c) = authority(session.req_header()).and_then(|a| routes.route(a)) {
            return Some(Target::Cluster(c.clone()));
        }
        if let Some(passthrough) = &routes.passthrough {
            if let Some(dst) = original_dst(session) {
                return Some(Target::OriginalDst(dst, passthrough.clone()));
            }
        }
        routes.default.clone().map(Target::Cluster)
    }
}

#[async_trait]
impl ProxyHttp for Sidecar {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.lifecycle.enter())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        // The head is parsed: its deadline (`limits.header_timeout`) is met.
        crate::guard::mark_busy(session.as_downstream().stream());
        // HTTP/1.1 pipelining (RFC 9112 §9.3.2): pingora 0.9 reads the next request's
        // bytes with this one's but, unless told otherwise, drops them and closes after
        // answering with `keep-alive`, so pipelined requests were accepted and lost.
        // Enabled, it hands them to the next session on the connection, which answers
        // them one after another, in order. (Ignored for h2.)
        session.as_downstream_mut().set_pipelining_enabled(true);
        let snapshot = self.snapshot.load();
        ctx.routes = snapshot.listener(&self.listener).cloned();
        if let Some(routes) = &ctx.routes {
            routes.metrics.in_flight.increment(1.0);
        }
        let limits = &snapshot.limits;
        // pingora turns keep-alive off for requests read after a shutdown began; keep it
        // off, so clients stop reusing a connection that is about to close.
        if self.lifecycle.is_draining() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(limits.keepalive_timeout.as_secs()));
        }
        // A client may stall between body chunks; bound each wait.
        session.set_read_timeout(Some(limits.body_read_timeout));
        ctx.grpc_timeout = timeouts::grpc_timeout(session.req_header());
        ctx.grpc = timeouts::is_grpc(session.req_header());

        if let Some(why) = strict::violation(session.req_header(), session.is_http2()) {
            tracing::debug!(why, "request refused");
            // `respond` closes the connection after a 400: what follows is untrusted.
            return self
                .answer(session, ctx, 400, LocalReason::BadRequest)
                .await;
        }
        let req = session.req_header();
        let too_large = req.headers.len() > limits.max_request_headers
            || forwarded::header_bytes(req) > limits.max_request_header_bytes;
        if too_large {
            return self
                .answer(session, ctx, 431, LocalReason::HeaderTooLarge)
                .await;
        }
        if let (Some(max), Some(len)) = (limits.max_request_body_bytes, content_length(req)) {
            if len > max {
                // An h2 client may still be uploading when the answer comes; the stream
                // is then reset, and a client that sees the reset first reports a
                // framing error instead of our 413. A small body is read and dropped
                // first (at most one h2 window, for at most LINGER_TIME); a large one
                // is cut at once.
                if session.is_http2() && len <= LINGER_BODY_BYTES {
                    let _ = tokio::time::timeout(LINGER_TIME, session.drain_request_body()).await;
                }
                return self
                    .answer(session, ctx, 413, LocalReason::BodyTooLarge)
                    .await;
            }
        }
        match self.route(session, ctx) {
            Some(target) => {
                ctx.target = target;
                // Inbound requests are the load we profile; outbound ones are the
                // service's calls, counted as fanout of the inbound request they serve.
                let req = session.req_header();
                match self.direction {
                    Direction::Inbound => {
                        let client = session
                            .client_addr()
                            .and_then(PingoraAddr::as_inet)
                            .map(|a| a.ip());
                        ctx.profile = self.profiling.arrive(req);
                        if let Some(policy) = &snapshot.tiers {
                            return self.admit(session, ctx, policy, client).await;
                        }
                    }
                    Direction::Outbound => self.profiling.outbound_call(req),
                }
                Ok(false)
            }
            None => self.answer(session, ctx, 404, LocalReason::NoRoute).await,
        }
    }

    /// Enforces `max_request_body_bytes` on bodies without a content-length (chunked
    /// HTTP/1.1, h2 DATA frames), which `request_filter` cannot see in advance.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // After a 101 the bytes are the upgraded protocol's, not a request body.
        if session.was_upgraded() {
            return Ok(());
        }
        let max = self.snapshot.load().limits.max_request_body_bytes;
        if max.is_some_and(|max| session.body_bytes_read() as u64 > max) {
            ctx.local = Some(LocalReason::BodyTooLarge);
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body over max_request_body_bytes",
            );
        }
        Ok(())
    }

    /// During a drain every response says `connection: close`, including those of
    /// requests that were already in flight when it began: the connection is closed
    /// after them, and a client told so does not send its next request into the close.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.responded.get_or_insert_with(Instant::now);
        if self.lifecycle.is_draining() {
            session.set_keepalive(None);
        }
        // An upgraded connection (WebSocket) is a stream: the client may be silent for
        // as long as the upstream, not just `body_read_timeout`.
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(c) = ctx.cluster() {
                session.set_read_timeout(timeouts::stream_idle(c.timeouts(), None));
            }
        }
        Ok(())
    }

    /// After the response head, upstream reads wait up to the stream idle timeout
    /// (not `response_header`): bodies, trailers and upgraded connections live as long
    /// as bytes keep coming.
    fn upstream_body_read_timeout(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
    ) -> Option<Option<std::time::Duration>> {
        let c = ctx.cluster()?;
        Some(timeouts::stream_idle(c.timeouts(), ctx.grpc_timeout))
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        let now = self.clock.now_micros();
        let peer = match &ctx.target {
            Target::Cluster(c) => match c.pick(&mut ctx.rr_base, ctx.attempts, now) {
                Some((i, peer)) => {
                    ctx.endpoint = Some(i);
                    Some(peer)
                }
                // No endpoint left: the overflow cluster, if there is one, takes over.
                None => match c.overflow().cloned() {
                    Some(overflow) => {
                        c.metrics.overflows.increment(1);
                        ctx.rr_base = None;
                        let picked = overflow.pick(&mut ctx.rr_base, 1, now);
                        ctx.endpoint = picked.as_ref().map(|(i, _)| *i);
                        ctx.target = Target::Cluster(overflow);
                        picked.map(|(_, peer)| peer)
                    }
                    None => None,
                },
            },
            Target::OriginalDst(dst, c) => Some(c.peer_for(*dst)),
            Target::Unrouted => None,
        };
        let mut peer = peer.ok_or_else(|| {
            ctx.local = Some(LocalReason::NoEndpoint);
            Error::explain(ErrorType::HTTPStatus(503), "no endpoint available")
        })?;
        if let Some(c) = ctx.cluster() {
            peer.options.read_timeout =
                timeouts::response_header(c.timeouts(), ctx.grpc_timeout, ctx.grpc);
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let client = session
            .client_addr()
            .and_then(PingoraAddr::as_inet)
            .map(|a| a.ip());
        // Only a verified certificate names the client: never a client-sent header.
        let _ = upstream_request.remove_header(crate::peer_identity::HEADER);
        if let Some(peer) = crate::peer_identity::of(session) {
            upstream_request.insert_header(crate::peer_identity::HEADER, peer)?;
        }
        te::forward_to_h2(session.req_header(), upstream_request)?;
        forwarded::append(upstream_request, client, self.tls)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let now = self.clock.now_micros();
        let endpoint = ctx.endpoint.take();
        if let Some(c) = ctx.cluster() {
            c.metrics.connect_error(errors::connect_kind(&e));
            if let Some(i) = endpoint {
                c.endpoint_failed(i, now);
            }
            // Nothing was sent, so another endpoint (or the overflow cluster, once
            // this one has none left) is safe for any method.
            let elsewhere = c.len() > 1 || c.should_overflow(now);
            if elsewhere && ctx.attempts <= c.connect_retries {
                e.set_retry(true);
            }
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, reason) = errors::classify(e);
        let reason = ctx.local.unwrap_or(reason);
        if status > 0 && session.response_written().is_none() {
            // The connection is not reused (below); say so instead of `keep-alive`.
            session.set_keepalive(None);
            ctx.local = Some(reason);
            if let Some(r) = &ctx.routes {
                r.metrics.local(reason);
            }
            if let Err(err) = errors::respond(session, status, reason).await {
                tracing::debug!(%err, "could not write error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // A kept-alive connection's next head gets its own deadline.
        crate::guard::mark_idle(session.as_downstream().stream());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(permit) = ctx.permit.take() {
            let client_gone = e.is_some_and(|e| matches!(e.esource(), ErrorSource::Downstream));
            let began = ctx.admitted.unwrap_or(ctx.start);
            let latency = ctx.responded.unwrap_or_else(Instant::now) - began;
            let outcome = tiers::outcome(status, ctx.local, client_gone);
            permit.release(latency, outcome, self.clock.now_micros());
        }
        let Some(routes) = &ctx.routes else { return };
        let m = &routes.metrics;
        m.in_flight.decrement(1.0);
        m.request(status);
        m.duration.record(ctx.start.elapsed().as_secs_f64());
        m.request_bytes.increment(session.body_bytes_read() as u64);
        m.response_bytes.increment(session.body_bytes_sent() as u64);
        if let Some(p) = ctx.profile.take() {
            let completion = Completion {
                request_bytes: session.body_bytes_read() as u64,
                response_bytes: session.body_bytes_sent() as u64,
                // In series time: `--time-scale` stretches it with the clock.
                service_time_us: u64::try_from(self.clock.series(ctx.start.elapsed()).as_micros())
                    .unwrap_or(u64::MAX),
                status,
                fanout: 0,
            };
            self.profiling.complete(p, completion);
        }
        // Passive health learns from every answer (connect failures were counted in
        // `fail_to_connect`).
        if let (Some(c), Some(i)) = (ctx.cluster(), ctx.endpoint) {
            match ctx.local {
                None if matches!(status, 502..=504) => {
                    c.endpoint_failed(i, self.clock.now_micros())
                }
                None if status > 0 => c.endpoint_ok(i),
                Some(
                    LocalReason::UpstreamTimeout
                    | LocalReason::UpstreamReset
                    | LocalReason::UpstreamProtocol,
                ) => c.endpoint_failed(i, self.clock.now_micros()),
                _ => {}
            }
        }
        // Only count the cluster for answers that came from it.
        if ctx.local.is_none() {
            if let Some(c) = ctx.cluster() {
                c.metrics.response(status);
            }
        }
    }
}

impl Sidecar {
    /// Tier admission for an inbound request: the permit goes into the context and the
    /// tier's own cluster (if any) becomes the target; a refusal is answered here.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        policy: &TierPolicy,
        client: Option<std::net::IpAddr>,
    ) -> pingora::Result<bool> {
        let cost = ctx
            .profile
            .as_ref()
            .and_then(RequestProfile::guess)
            .and_then(|sig| self.profiling.expected_service_time(sig));
        let (mut verdict, source) = policy.admit(session, client, cost);
        if let Some(p) = &mut ctx.profile {
            p.set_source(source);
        }
        loop {
            match verdict {
                // A queueing tier at the limit: wait (bounded by the ticket's deadline)
                // for a slot, then admit or refuse.
                Verdict::Wait(ticket) => verdict = policy.wait(ticket).await,
                Verdict::Admit {
                    tier,
                    permit,
                    cluster,
                } => {
                    if let Some(p) = &mut ctx.profile {
                        p.set_tier(u8::try_from(tier.index()).unwrap_or(u8::MAX));
                    }
                    if let Some(c) = cluster {
                        ctx.target = Target::Cluster(c);
                    }
                    ctx.tier = Some(tier);
                    ctx.permit = Some(permit);
                    ctx.admitted = Some(Instant::now());
                    return Ok(false);
                }
                Verdict::Reject(r) => {
                    // Not served, so no sample (its service time is unknown); it still
                    // counts towards its source's rate, and towards demand when it was
                    // refused for want of capacity.
                    if let Some(p) = ctx.profile.take() {
                        let demand = matches!(
                            r.reason,
                            prescale_policies::RejectReason::Overload
                                | prescale_policies::RejectReason::PreShed
                        );
                        self.profiling.shed(p, demand);
                    }
                    ctx.tier = Some(r.tier);
                    let reason = errors::reject(session, &r, policy.tier_name(r.tier)).await?;
                    ctx.local = Some(reason);
                    if let Some(routes) = &ctx.routes {
                        routes.metrics.local(reason);
                    }
                    return Ok(true);
                }
            }
        }
    }

    /// Answers locally and tells pingora the request is done.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        reason: LocalReason,
    ) -> pingora::Result<bool> {
        ctx.local = Some(reason);
        if let Some(r) = &ctx.routes {
            r.metrics.local(reason);
        }
        errors::respond(session, status, reason).await?;
        Ok(true)
    }
}

/// The request's authority: `:authority`/absolute-form first, then `Host`.
fn authority(req: &RequestHeader) -> Option<&str> {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())
}

fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// SO_ORIGINAL_DST of the downstream connection, if it was redirected here.
fn original_dst(session: &Session) -> Option<std::net::SocketAddr> {
    let digest = session.digest()?.socket_digest.as_ref()?;
    let dst = digest.original_dst()?.as_inet().copied()?;
    let local = digest.local_addr().and_then(PingoraAddr::as_inet).copied();
    // Without a REDIRECT the original destination is the listener itself; forwarding
    // there would loop.
    (Some(dst) != local).then_some(dst)
}
