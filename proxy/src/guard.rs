//! Connection guards in front of pingora's HTTP app: a cap on open connections per
//! listener, and a deadline on request heads.
//!
//! pingora 0.9 bounds each *read* of a request head (60 s, or the keep-alive timeout),
//! not the head as a whole, so a client sending one byte a second (slowloris) would
//! hold its connection for as long as it likes; and with h2c on, a connection that
//! never sends the 24 bytes of the h2 preface waits in pingora's peek with no bound at
//! all. Nor does pingora cap connections. [`Guarded`] wraps the app of one listener:
//! it counts the connection (refusing it above `limits.max_connections`) and hands
//! pingora a [`GuardedStream`] whose reads fail once a head overruns
//! `limits.header_timeout`, after a best-effort `408` (`x-prescale-error:
//! client_timeout`).
//!
//! Which bytes are a head: the stream starts `Idle`; the first byte read makes it
//! `Head`; the data path marks it `Busy` when a request's head has been parsed
//! ([`mark_busy`]) and `Idle` again once the request is done ([`mark_idle`]). The
//! deadline runs from accept for a connection's first request (as nginx's
//! `client_header_timeout`), and from the first byte for later ones (the idle wait
//! between requests is pingora's keep-alive timeout). HTTP/2 connections (ALPN `h2`,
//! or the h2c preface) are marked `Off` once detected: h2 frames its own requests, and
//! idle h2 connections are closed by the listener's `h2_idle_timeout`.
//!
//! Both limits are read from the routing snapshot at accept, so a reload applies to
//! new connections.

use crate::routes::Snapshot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use pingora::protocols::{SocketDigest, TimingDigest};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Open downstream connections, by listener.
pub const CONNECTIONS_OPEN: &str = "prescale_connections_open";
/// Connections the proxy closed on its own, by listener and reason (`limit`,
/// `header_timeout`).
pub const CONNECTIONS_CLOSED: &str = "prescale_connections_closed_total";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the proxy sends a client whose request head overran the deadline.
const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 28\r\nx-prescale-error: client_timeout\r\nconnection: close\r\n\r\n408 Request Timeout: header\n";

/// What the proxy sends a client whose request line breaks RFC 9112 (see
/// [`request_line_ok`]).
const BAD_REQUEST_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 28\r\nx-prescale-error: bad_request\r\nconnection: close\r\n\r\n400 Bad Request: bad_request\n";

/// Longest request line inspected; a longer one is left to pingora's head limits.
const MAX_LINE: usize = 8192;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const OFF: u8 = 3;

pub fn describe() {
    ::metrics::describe_gauge!(
        CONNECTIONS_OPEN,
        "Open downstream connections, by listener."
    );
    ::metrics::describe_counter!(
        CONNECTIONS_CLOSED,
        "Downstream connections the proxy closed on its own, by listener and reason \
         (limit: over limits.max_connections; header_timeout: a request head slower than \
         limits.header_timeout; bad_request: a malformed request line)."
    );
}

/// One listener's app behind the connection cap and the head deadline.
pub struct Guarded<A> {
    inner: Arc<A>,
    listener: String,
    snapshot: Arc<ArcSwap<Snapshot>>,
    open: Arc<AtomicUsize>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, listener: String, snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Self {
            inner: Arc::new(inner),
            listener,
            snapshot,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (max, timeout) = {
            let snapshot = self.snapshot.load();
            (
                snapshot.limits.max_connections,
                snapshot.limits.header_timeout,
            )
        };
        let Some(_slot) = Slot::take(&self.open, max, &self.listener) else {
            ::metrics::counter!(CONNECTIONS_CLOSED, "listener" => self.listener.clone(), "reason" => "limit")
                .increment(1);
            tracing::debug!(listener = %self.listener, max, "connection refused: limits.max_connections");
            // Dropping the stream closes it before a byte is read.
            return None;
        };
        let stream: Stream = Box::new(GuardedStream::new(stream, timeout, &self.listener));
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// One counted connection; uncounted on drop.
struct Slot {
    open: Arc<AtomicUsize>,
    listener: String,
}

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize, listener: &str) -> Option<Self> {
        let before = open.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        ::metrics::gauge!(CONNECTIONS_OPEN, "listener" => listener.to_string()).increment(1.0);
        Some(Self {
            open: open.clone(),
            listener: listener.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        ::metrics::gauge!(CONNECTIONS_OPEN, "listener" => std::mem::take(&mut self.listener))
            .decrement(1.0);
    }
}

/// Marks the downstream connection of an HTTP/1 request as serving a parsed request:
/// its head deadline no longer applies.
pub fn mark_busy(stream: Option<&Stream>) {
    set_state(stream, BUSY);
}

/// Marks the downstream connection of an HTTP/1 request as between requests: the next
/// head's deadline starts at its first byte.
pub fn mark_idle(stream: Option<&Stream>) {
    set_state(stream, IDLE);
}

fn set_state(stream: Option<&Stream>, to: u8) {
    let guarded = stream.and_then(|s| (**s).as_any().downcast_ref::<GuardedStream>());
    if let Some(g) = guarded {
        // `Off` (HTTP/2) is final.
        let _ = g
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != OFF).then_some(to)
            });
    }
}

/// A downstream stream with a deadline on request heads.
pub struct GuardedStream {
    inner: Stream,
    state: AtomicU8,
    timeout: Duration,
    /// The first request's deadline: accept + timeout.
    first: Option<Instant>,
    /// The deadline of the head being read, if one is being read.
    deadline: Option<Instant>,
    /// The timer for `deadline`, registered only when a read of a head has to wait
    /// (most heads arrive whole in one read) and then reused, reset, for later heads:
    /// no allocation or timer registration per request.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Set once the deadline passed: every later read fails at once.
    expired: bool,
    /// Bytes the h2c peek read, handed out by the next reads.
    replay: Vec<u8>,
    /// The connection's first request line, while it is incomplete: pingora
    /// percent-encodes spaces and control characters in a target instead of refusing
    /// it, so the raw line is checked here. `None` once checked. Later requests are
    /// not checked: their bytes may continue a pipelined head pingora already read.
    line: Option<Vec<u8>>,
    listener: String,
}

/// Whether `line` (ending in LF) is `method SP request-target SP HTTP-version`, with
/// a token method of at most 32 characters and a target of visible ASCII only
/// (RFC 9112 3: no whitespace or control characters inside it).
fn request_line_ok(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    !method.is_empty()
        && method.len() <= crate::service::MAX_METHOD_LEN
        && method.iter().all(token)
        && !target.is_empty()
        && target.iter().all(|b| (0x21..0x7f).contains(b))
        && version.starts_with(b"HTTP/")
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl GuardedStream {
    fn new(inner: Stream, timeout: Duration, listener: &str) -> Self {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        let first = Instant::now() + timeout;
        Self {
            inner,
            state: AtomicU8::new(if h2 { OFF } else { IDLE }),
            timeout,
            first: Some(first),
            deadline: None,
            sleep: None,
            expired: false,
            replay: Vec::new(),
            line: None,
            listener: listener.to_string(),
        }
    }

    /// Feeds bytes of a head to the request-line check; an error (after a best-effort
    /// 400) if the line is malformed.
    fn check_line(&mut self, mut bytes: &[u8], cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let Some(line) = self.line.as_mut() else {
                return Ok(());
            };
            let end = bytes.iter().position(|&b| b == b'\n');
            let take = end.map_or(bytes.len(), |e| e + 1);
            line.extend_from_slice(bytes.get(..take).unwrap_or_default());
            bytes = bytes.get(take..).unwrap_or_default();
            if end.is_none() {
                if line.len() > MAX_LINE {
                    self.line = None;
                }
                return Ok(());
            }
            // RFC 9112 2.2: empty lines before the request line are ignored.
            if line.as_slice() == b"\r\n" || line.as_slice() == b"\n" {
                line.clear();
                continue;
            }
            let ok = request_line_ok(line);
            self.line = None;
            if ok {
                return Ok(());
            }
            break;
        }
        self.expired = true;
        self.sleep = None;
        self.deadline = None;
        ::metrics::counter!(CONNECTIONS_CLOSED, "listener" => self.listener.clone(), "reason" => "bad_request")
            .increment(1);
        if let Poll::Ready(Ok(_)) = Pin::new(&mut self.inner).poll_write(cx, BAD_REQUEST_RESPONSE) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed request line (RFC 9112 3)",
        ))
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> io::Error {
        if !self.expired {
            self.expired = true;
            self.sleep = None;
            ::metrics::counter!(CONNECTIONS_CLOSED, "listener" => self.listener.clone(), "reason" => "header_timeout")
                .increment(1);
            // Best effort: a head has started, so an HTTP/1 answer is in order; a
            // short write or a full buffer just means the client sees the close.
            if self.state.load(Ordering::Acquire) == HEAD {
                let inner = Pin::new(&mut self.inner);
                if let Poll::Ready(Ok(_)) = inner.poll_write(cx, TIMEOUT_RESPONSE) {
                    let _ = Pin::new(&mut self.inner).poll_flush(cx);
                }
            }
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("request head not complete within {:?}", self.timeout),
        )
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            // The peeked bytes: the start of the first head (or the h2 preface).
            let n = this.replay.len().min(buf.remaining());
            let bytes: Vec<u8> = this.replay.drain(..n).collect();
            buf.put_slice(&bytes);
            let began = this
                .state
                .compare_exchange(IDLE, HEAD, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            // The peeked bytes are the connection's first: a request line starts here.
            if began {
                this.line = Some(Vec::new());
            }
            if let Some(at) = this.first.take() {
                this.deadline = Some(at);
            }
            if this.state.load(Ordering::Acquire) == HEAD {
                if let Err(e) = this.check_line(&bytes, cx) {
                    return Poll::Ready(Err(e));
                }
            }
            return Poll::Ready(Ok(()));
        }
        let state = this.state.load(Ordering::Acquire);
        if state == BUSY || state == OFF {
            // A registered timer left behind wakes the task once, harmlessly; dropping
            // it would cost an allocation for the next head that has to wait.
            this.deadline = None;
            this.first = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let overdue = state == HEAD && this.deadline.is_some_and(|d| Instant::now() >= d);
        if this.expired || (state == HEAD && overdue) {
            return Poll::Ready(Err(this.timed_out(cx)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if state == IDLE && buf.filled().len() > before {
                    // A head starts: the first request keeps its deadline from accept.
                    let _ = this.state.compare_exchange(
                        IDLE,
                        HEAD,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    // Only a connection's first read surely starts at a request line:
                    // later ones may continue a pipelined head pingora already holds.
                    if this.first.is_some() {
                        this.line = Some(Vec::new());
                    }
                    let at = this
                        .first
                        .take()
                        .unwrap_or_else(|| Instant::now() + this.timeout);
                    this.deadline = Some(at);
                }
                if this.line.is_some() {
                    let fresh = buf.filled().get(before..).unwrap_or_default().to_vec();
                    if let Err(e) = this.check_line(&fresh, cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Idle between requests: pingora's keep-alive timeout applies.
                if state == IDLE && this.first.is_none() {
                    return Poll::Pending;
                }
                let at = match (this.deadline, this.first) {
                    (Some(at), _) | (None, Some(at)) => at,
                    (None, None) => Instant::now() + this.timeout,
                };
                this.deadline = Some(at);
                let sleep = match this.sleep.as_mut() {
                    Some(s) => {
                        if s.deadline() != at {
                            s.as_mut().reset(at);
                        }
                        s
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(this.timed_out(cx))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for GuardedStream {
    /// pingora peeks 24 bytes for the h2c preface, with no time bound, so an HTTP/1.0
    /// request shorter than that (`GET / HTTP/1.0\r\n\r\n`) would wait forever for
    /// bytes that never come. This peek stops at the first byte that differs from the
    /// preface (the rest of `buf` stays zero, so pingora picks HTTP/1), and at the first
    /// request's deadline. What it read is replayed to the next reads.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        let want = buf.len().min(H2_PREFACE.len());
        let deadline = self.first;
        let read = async {
            let mut chunk = [0u8; 24];
            while self.replay.len() < want && H2_PREFACE.starts_with(&self.replay) {
                let room = want.saturating_sub(self.replay.len()).min(chunk.len());
                let n = self
                    .inner
                    .read(chunk.get_mut(..room).unwrap_or_default())
                    .await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                self.replay
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Ok(())
        };
        let result = match deadline {
            Some(at) => tokio::time::timeout_at(at, read).await.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within limits.header_timeout",
                ))
            }),
            None => read.await,
        };
        if let Err(e) = result {
            if e.kind() == io::ErrorKind::TimedOut {
                self.expired = true;
                ::metrics::counter!(CONNECTIONS_CLOSED, "listener" => self.listener.clone(), "reason" => "header_timeout")
                    .increment(1);
            }
            return Err(e);
        }
        let n = self.replay.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.replay.get(..n)) {
            dst.copy_from_slice(src);
        }
        if self.replay.as_slice() == H2_PREFACE {
            self.state.store(OFF, Ordering::Release);
            self.sleep = None;
            self.deadline = None;
            self.first = None;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::request_line_ok;

    #[test]
    fn request_lines() {
        for ok in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"GET /a%20b?q=1 HTTP/1.1\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n",
            b"GET http://a/x HTTP/1.0\r\n",
        ] {
            assert!(request_line_ok(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"GET /a b HTTP/1.1\r\n"[..],
            b"GET /a\0b HTTP/1.1\r\n",
            b"GET /a\tb HTTP/1.1\r\n",
            b"GET /\x7f HTTP/1.1\r\n",
            b"GET /\xff HTTP/1.1\r\n",
            b"G(T / HTTP/1.1\r\n",
            b" / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET /\r\n",
            b"GET / FTP/1.1\r\n",
        ] {
            assert!(!request_line_ok(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("{} / HTTP/1.1\r\n", "A".repeat(33));
        assert!(!request_line_ok(long.as_bytes()));
    }
}
