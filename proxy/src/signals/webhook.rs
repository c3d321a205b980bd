//! The webhook signal: POSTs each scaling decision as JSON to a configured URL, with a
//! per-attempt timeout, jittered exponential retries and an idempotency key.
//!
//! The forecaster offers decisions into a single slot that the sender thread drains,
//! so a slow or dead receiver never queues anything: a newer decision replaces the
//! pending one, and a delivery still retrying gives up once the latest decision asks
//! for a different number (latest wins).

use super::backoff::{self, Jitter};
use super::client::{Answer, Endpoint, ExchangeError};
use super::{rfc3339, Decision, ForecastSummary, Outcome, Recent, SentSignal};
use crate::config::WebhookConfig;
use crate::metrics as m;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use metrics::{Counter, Gauge};
use prescale_policies::scale::ScaleReason;
use prescale_profiler::sample::Millis;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The largest answer body read from a receiver; the body is not used, only bounded.
const MAX_ANSWER: usize = 64 * 1024;

/// `delivered` before anything was.
const NONE: u64 = u64::MAX;

/// The header carrying the idempotency key (also in the body).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The webhook sender's shared state.
pub struct Webhook {
    cfg: WebhookConfig,
    endpoint: Endpoint,
    /// Content type and the configured headers (values marked sensitive).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Decisions in the same sync period share an idempotency key.
    bucket_ms: Millis,
    /// The pending decision: the only queue there is.
    slot: Mutex<Option<Decision>>,
    notify: Notify,
    /// Desired replicas of the newest decision offered, and of the last delivered.
    latest: AtomicU64,
    delivered: AtomicU64,
    recent: Arc<Recent>,
    metrics: Metrics,
}

struct Metrics {
    ok: Counter,
    retry: Counter,
    failed: Counter,
    dropped: Counter,
    last_success: Gauge,
}

/// The JSON body.
#[derive(Serialize)]
struct Payload<'a> {
    service: &'a str,
    desired_replicas: u32,
    previous: Option<u32>,
    reason: ScaleReason,
    lead_time_seconds: f64,
    forecast: Option<&'a ForecastSummary>,
    current_demand: f64,
    at: String,
    idempotency_key: &'a str,
}

// === impl Webhook ===

impl Webhook {
    /// Starts the sender on its own thread and runtime.
    pub fn spawn(
        cfg: &WebhookConfig,
        sync_period: Duration,
        recent: Arc<Recent>,
    ) -> std::io::Result<Arc<Self>> {
        let me = Arc::new(Self::new(cfg, sync_period, recent)?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let sender = me.clone();
        std::thread::Builder::new()
            .name("signal-webhook".into())
            .spawn(move || rt.block_on(sender.run()))?;
        tracing::info!(signal = "webhook", target = %me.endpoint.target(), service = %cfg.service,
            only_on_change = cfg.only_on_change, "scale signals go to a webhook");
        Ok(me)
    }

    /// The shared state, without a sender running.
    fn new(
        cfg: &WebhookConfig,
        sync_period: Duration,
        recent: Arc<Recent>,
    ) -> std::io::Result<Self> {
        let endpoint = Endpoint::new(&cfg.url, cfg.ca_file.as_deref())
            .map_err(|e| std::io::Error::other(format!("signals.webhook: {e}")))?;
        let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        headers.extend(crate::signals::client::secret_headers(
            &cfg.headers,
            "signals.webhook",
        )?);
        let handle = |outcome: &'static str| {
            let c =
                ::metrics::counter!(m::SIGNAL_SENDS, "signal" => "webhook", "outcome" => outcome);
            c.increment(0);
            c
        };
        Ok(Self {
            cfg: cfg.clone(),
            endpoint,
            headers,
            bucket_ms: (sync_period.as_millis() as Millis).max(1),
            slot: Mutex::new(None),
            notify: Notify::new(),
            latest: AtomicU64::new(NONE),
            delivered: AtomicU64::new(NONE),
            recent,
            metrics: Metrics {
                ok: handle("ok"),
                retry: handle("retry"),
                failed: handle("failed"),
                dropped: handle("dropped"),
                last_success: ::metrics::gauge!(m::SIGNAL_LAST_SUCCESS, "signal" => "webhook"),
            },
        })
    }

    /// Takes the newest decision; never blocks on the receiver.
    pub fn offer(&self, d: Decision) {
        let desired = u64::from(d.desired);
        self.latest.store(desired, Ordering::Release);
        // The platform already has this number: nothing to send, and anything pending
        // is stale.
        let unchanged =
            self.cfg.only_on_change && self.delivered.load(Ordering::Acquire) == desired;
        let replaced = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            if unchanged {
                slot.take()
            } else {
                slot.replace(d.clone())
            }
        };
        // Replacing a decision for the same number merely coalesces.
        if let Some(old) = replaced.filter(|old| old.desired != d.desired) {
            let key = self.key(&old);
            self.finish(
                &old,
                &key,
                Outcome::Dropped,
                0,
                None,
                Some("replaced by a newer decision before it was sent".into()),
            );
        }
        self.notify.notify_one();
    }

    async fn run(self: Arc<Self>) {
        let mut jitter = Jitter::seeded();
        let mut last_start: Option<Instant> = None;
        loop {
            // Rate limit first: the pending decision may still be replaced meanwhile.
            if let Some(last) = last_start {
                tokio::time::sleep_until(last + self.cfg.min_interval).await;
            }
            let next = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(d) = next else {
                self.notify.notified().await;
                continue;
            };
            if self.cfg.only_on_change
                && self.delivered.load(Ordering::Acquire) == u64::from(d.desired)
            {
                continue;
            }
            last_start = Some(Instant::now());
            self.deliver(d, &mut jitter).await;
        }
    }

    /// Sends one decision until it is delivered, refused, out of retries, or
    /// superseded.
    async fn deliver(&self, d: Decision, jitter: &mut Jitter) {
        let key = self.key(&d);
        let payload = Payload {
            service: &self.cfg.service,
            desired_replicas: d.desired,
            previous: d.previous,
            reason: d.reason,
            lead_time_seconds: d.lead_time_seconds,
            forecast: d.forecast.as_ref(),
            current_demand: d.current_demand,
            at: rfc3339(d.at),
            idempotency_key: &key,
        };
        let body = match serde_json::to_vec(&payload) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return self.finish(&d, &key, Outcome::Failed, 0, None, Some(e.to_string()));
            }
        };
        let mut headers = self.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&key) {
            headers.push((HeaderName::from_static(IDEMPOTENCY_KEY), v));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .endpoint
                .exchange(
                    Method::POST,
                    self.endpoint.path(),
                    &headers,
                    body.clone(),
                    self.cfg.timeout,
                    MAX_ANSWER,
                )
                .await;
            let (status, error, asked_wait) = match classify(result) {
                Attempt::Delivered(status) => {
                    return self.finish(&d, &key, Outcome::Ok, attempt, Some(status), None);
                }
                Attempt::Refused(status) => {
                    let error = format!("receiver refused it with status {status}");
                    return self.finish(
                        &d,
                        &key,
                        Outcome::Failed,
                        attempt,
                        Some(status),
                        Some(error),
                    );
                }
                Attempt::Retry {
                    status,
                    error,
                    retry_after,
                } => (status, error, retry_after),
            };
            if attempt > self.cfg.retries {
                return self.finish(&d, &key, Outcome::Failed, attempt, status, Some(error));
            }
            let wait = asked_wait.unwrap_or_else(|| {
                backoff::delay(
                    attempt,
                    self.cfg.backoff,
                    self.cfg.max_backoff,
                    jitter.next_unit(),
                )
            });
            self.metrics.retry.increment(1);
            tracing::warn!(signal = "webhook", target = %self.endpoint.target(), desired = d.desired,
                attempt, status, %error, retry_in = ?wait, idempotency_key = %key,
                "scale signal not delivered; retrying");
            if !self.wait_unless_superseded(d.desired, wait).await {
                let error = Some("a newer decision replaced it while retrying".to_string());
                return self.finish(&d, &key, Outcome::Dropped, attempt, status, error);
            }
        }
    }

    /// Sleeps `wait`; false as soon as the latest decision asks for another number.
    async fn wait_unless_superseded(&self, desired: u32, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let current = || self.latest.load(Ordering::Acquire) == u64::from(desired);
        while current() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return current(),
                // A permit taken here is not lost: `run` checks the slot after every
                // delivery before it waits again.
                _ = self.notify.notified() => {}
            }
        }
        false
    }

    /// Counts, logs and records how a decision's delivery ended.
    fn finish(
        &self,
        d: &Decision,
        key: &str,
        outcome: Outcome,
        attempts: u32,
        status: Option<u16>,
        error: Option<String>,
    ) {
        let target = self.endpoint.target();
        match outcome {
            Outcome::Ok => {
                self.metrics.ok.increment(1);
                self.metrics.last_success.set(crate::reload::unix_now());
                self.delivered
                    .store(u64::from(d.desired), Ordering::Release);
                tracing::info!(signal = "webhook", %target, desired = d.desired, attempts, status,
                    idempotency_key = %key, "scale signal delivered");
            }
            Outcome::Failed => {
                self.metrics.failed.increment(1);
                tracing::error!(signal = "webhook", %target, desired = d.desired, attempts, status,
                    error = error.as_deref().unwrap_or(""), idempotency_key = %key,
                    "scale signal failed");
            }
            Outcome::Dropped => {
                self.metrics.dropped.increment(1);
                tracing::info!(signal = "webhook", %target, desired = d.desired, attempts,
                    reason = error.as_deref().unwrap_or(""), idempotency_key = %key,
                    "scale signal dropped");
            }
            // Kubernetes-only outcomes; a webhook delivery never ends so.
            Outcome::Unchanged | Outcome::RefusedHpaOwned => {}
        }
        self.recent.push(SentSignal {
            signal: "webhook",
            at: rfc3339(super::now_ms()),
            decided_at: rfc3339(d.at),
            desired_replicas: d.desired,
            outcome,
            attempts,
            status,
            error,
            idempotency_key: key.to_string(),
        });
    }

    fn key(&self, d: &Decision) -> String {
        idempotency_key(&self.cfg.service, d.desired, d.at, self.bucket_ms)
    }
}

/// What one attempt's result means for the delivery.
enum Attempt {
    Delivered(u16),
    /// A 4xx other than 429: sending the same body again would be refused again.
    Refused(u16),
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

fn classify(result: Result<Answer, ExchangeError>) -> Attempt {
    match result {
        Ok(a) if a.status.is_success() => Attempt::Delivered(a.status.as_u16()),
        Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS || a.status.is_server_error() => {
            Attempt::Retry {
                status: Some(a.status.as_u16()),
                error: format!("receiver answered {}", a.status),
                retry_after: backoff::retry_after(&a.headers, SystemTime::now()),
            }
        }
        // 1xx/3xx are not an acceptance either; a redirect is not followed (the URL
        // is the config's to fix).
        Ok(a) => Attempt::Refused(a.status.as_u16()),
        Err(e) => Attempt::Retry {
            status: None,
            error: e.to_string(),
            retry_after: None,
        },
    }
}

/// The same for every attempt of one decision, and for any decision asking the same
/// number of replicas for the same service in the same time bucket (a sync period),
/// so a receiver can drop duplicates. 128 bits of two FNV-1a hashes, in hex.
pub fn idempotency_key(service: &str, desired: u32, at: Millis, bucket_ms: Millis) -> String {
    let bucket = at / bucket_ms.max(1);
    let mut bytes = Vec::with_capacity(service.len() + 13);
    bytes.extend_from_slice(service.as_bytes());
    bytes.push(0xff); // not valid UTF-8: cannot be part of a service name
    bytes.extend_from_slice(&desired.to_le_bytes());
    bytes.extend_from_slice(&bucket.to_le_bytes());
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_within_a_bucket_and_differs_otherwise() {
        let k = |service, desired, at| idempotency_key(service, desired, at, 15_000);
        let base = k("checkout", 4, 1_700_000_010_000);
        assert_eq!(base.len(), 32);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        // Same decision, recomputed (or retried): same key.
        assert_eq!(base, k("checkout", 4, 1_700_000_010_000));
        // Later in the same sync period: still the same decision.
        assert_eq!(base, k("checkout", 4, 1_700_000_024_999));
        // Another number, service or period: another key.
        assert_ne!(base, k("checkout", 5, 1_700_000_010_000));
        assert_ne!(base, k("checkouts", 4, 1_700_000_010_000));
        assert_ne!(base, k("checkout", 4, 1_700_000_025_000));
        // Pinned: receivers store keys, so a release must not change them.
        assert_eq!(base, "80efe07620f0f6a3800e5140150e10b8");
    }

    fn decision(desired: u32, at: Millis) -> Decision {
        Decision {
            desired,
            previous: None,
            reason: ScaleReason::Forecast,
            lead_time_seconds: 135.0,
            forecast: None,
            current_demand: 1.0,
            at,
        }
    }

    fn webhook(only_on_change: bool) -> (Webhook, Arc<Recent>) {
        let cfg: WebhookConfig = serde_yaml_ng::from_str(&format!(
            "{{url: 'http://127.0.0.1:9/scale', service: s, only_on_change: {only_on_change}}}"
        ))
        .unwrap();
        let recent = Arc::new(Recent::default());
        let hook = Webhook::new(&cfg, Duration::from_secs(15), recent.clone()).unwrap();
        (hook, recent)
    }

    fn pending(w: &Webhook) -> Option<u32> {
        w.slot.lock().unwrap().as_ref().map(|d| d.desired)
    }

    #[test]
    fn the_slot_keeps_only_the_latest_decision() {
        // No sender runs: nothing leaves the slot but what `offer` does.
        let (w, recent) = webhook(true);
        w.offer(decision(2, 1_000));
        assert_eq!(pending(&w), Some(2));
        // The same number again merely coalesces: nothing is dropped.
        w.offer(decision(2, 16_000));
        assert!(recent.list().is_empty());
        // Another number replaces it; the replaced one was never sent: dropped.
        w.offer(decision(3, 31_000));
        assert_eq!(pending(&w), Some(3));
        let list = recent.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].outcome, Outcome::Dropped);
        assert_eq!((list[0].desired_replicas, list[0].attempts), (2, 0));
        // A thousand decisions later, still one pending and a bounded record.
        for i in 0..1000 {
            w.offer(decision(4 + i % 2, 46_000 + u64::from(i) * 15_000));
        }
        assert_eq!(pending(&w), Some(5));
        assert_eq!(recent.list().len(), crate::signals::RECENT);
    }

    #[test]
    fn only_changes_from_the_delivered_number_are_queued() {
        let (w, recent) = webhook(true);
        w.delivered.store(3, Ordering::Release);
        // The platform has 3: nothing to send.
        w.offer(decision(3, 1_000));
        assert_eq!(pending(&w), None);
        w.offer(decision(4, 16_000));
        assert_eq!(pending(&w), Some(4));
        // Back to 3 before 4 went out: 4 is stale (dropped), and 3 is already there.
        w.offer(decision(3, 31_000));
        assert_eq!(pending(&w), None);
        assert_eq!(recent.list()[0].outcome, Outcome::Dropped);

        // Without only_on_change every decision is queued (heartbeats).
        let (w, _) = webhook(false);
        w.delivered.store(3, Ordering::Release);
        w.offer(decision(3, 1_000));
        assert_eq!(pending(&w), Some(3));
    }

    #[test]
    fn answers_are_classified_for_retry() {
        let answer = |code: u16, retry_after: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(v) = retry_after {
                headers.insert(http::header::RETRY_AFTER, v.parse().unwrap());
            }
            Ok(Answer {
                status: StatusCode::from_u16(code).unwrap(),
                headers,
                body: Bytes::new(),
            })
        };
        assert!(matches!(
            classify(answer(200, None)),
            Attempt::Delivered(200)
        ));
        assert!(matches!(
            classify(answer(202, None)),
            Attempt::Delivered(202)
        ));
        assert!(matches!(classify(answer(400, None)), Attempt::Refused(400)));
        assert!(matches!(classify(answer(404, None)), Attempt::Refused(404)));
        assert!(matches!(classify(answer(302, None)), Attempt::Refused(302)));
        assert!(matches!(
            classify(answer(503, None)),
            Attempt::Retry {
                status: Some(503),
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify(answer(429, Some("2"))),
            Attempt::Retry { status: Some(429), retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        let timeout = Err(ExchangeError::Timeout(Duration::from_secs(1)));
        assert!(matches!(
            classify(timeout),
            Attempt::Retry { status: None, .. }
        ));
    }
}
