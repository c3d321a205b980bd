//! The webhook signal: POSTs each scaling decision as JSON to a configured URL, with a
//! per-attempt timeout, jittered exponential retries and an idempotency key.
//!
//! The forecaster offers decisions into a single slot that the sender thread drains,
//! so a slow or dead receiver never queues anything: a newer decision replaces the
//! pending one, and a delivery still retrying gives up once the latest decision asks
//! for a different number (latest wins).

use super::backoff::{self, system_now};
use super::client::{Answer, Endpoint, ExchangeError};
use super::sender::{Attempt, Ended, OutcomeMetrics, Sender, Signal};
use super::{rfc3339, Decision, ForecastSummary, Outcome, Recent, SentSignal};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use prescale_policies::scale::ScaleReason;
use prescale_profiler::sample::Millis;
use prescale_proxy::config::{RetryPolicy, WebhookConfig};
use prescale_proxy::metrics as m;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The largest answer body read from a receiver; the body is not used, only bounded.
const MAX_ANSWER: usize = 64 * 1024;

/// The header carrying the idempotency key (also in the body).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The webhook sender: decisions offered to it are POSTed by the one [`Sender`].
pub type Webhook = Sender<WebhookSignal>;

/// The webhook signal: what one POST of a decision is.
pub struct WebhookSignal {
    cfg: WebhookConfig,
    endpoint: Endpoint,
    /// Content type and the configured headers (values marked sensitive).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Decisions in the same sync period share an idempotency key.
    bucket_ms: Millis,
    recent: Arc<Recent>,
}

/// A decision ready to POST.
pub struct Prepared {
    key: String,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
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

/// Starts the webhook sender on its own thread and runtime.
pub fn spawn(
    cfg: &WebhookConfig,
    sync_period: Duration,
    recent: Arc<Recent>,
) -> std::io::Result<Arc<Webhook>> {
    let me = Arc::new(new(cfg, sync_period, recent)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    me.spawn(rt, "signal-webhook".into())?;
    tracing::info!(signal = "webhook", target = %me.signal().endpoint.target(), service = %cfg.service,
        only_on_change = cfg.only_on_change, "scale signals go to a webhook");
    Ok(me)
}

/// The shared state, without a sender running.
fn new(
    cfg: &WebhookConfig,
    sync_period: Duration,
    recent: Arc<Recent>,
) -> std::io::Result<Webhook> {
    let endpoint = Endpoint::new(&cfg.url, cfg.ca_file.as_deref())
        .map_err(|e| std::io::Error::other(format!("signals.webhook: {e}")))?;
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    headers.extend(crate::signals::client::secret_headers(
        &cfg.headers,
        "signals.webhook",
    )?);
    let metrics = OutcomeMetrics::new(
        m::SIGNAL_SENDS,
        "signal",
        "webhook",
        &[Outcome::Ok, Outcome::Failed, Outcome::Dropped],
        Some(::metrics::gauge!(m::SIGNAL_LAST_SUCCESS, "signal" => "webhook")),
    );
    let signal = WebhookSignal {
        cfg: cfg.clone(),
        endpoint,
        headers,
        bucket_ms: (sync_period.as_millis() as Millis).max(1),
        recent,
    };
    Ok(Sender::new(signal, metrics))
}

// === impl WebhookSignal ===

impl Signal for WebhookSignal {
    type Item = Decision;
    type Prepared = Prepared;

    fn name(&self) -> &'static str {
        "webhook"
    }

    fn retry(&self) -> RetryPolicy {
        self.cfg.retry()
    }

    fn min_interval(&self) -> Duration {
        self.cfg.min_interval
    }

    fn ask(&self, d: &Decision) -> u64 {
        u64::from(d.desired)
    }

    /// The platform already has this number: nothing to send.
    fn wanted(&self, ask: u64, delivered: Option<u64>) -> bool {
        !(self.cfg.only_on_change && delivered == Some(ask))
    }

    fn prepare(&self, d: &Decision) -> Result<Prepared, String> {
        let key = self.key(d);
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
        let body = Bytes::from(serde_json::to_vec(&payload).map_err(|e| e.to_string())?);
        let mut headers = self.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&key) {
            headers.push((HeaderName::from_static(IDEMPOTENCY_KEY), v));
        }
        Ok(Prepared { key, body, headers })
    }

    async fn attempt(&self, p: &Prepared) -> Attempt {
        let result = self
            .endpoint
            .exchange(
                Method::POST,
                self.endpoint.path(),
                &p.headers,
                p.body.clone(),
                self.cfg.timeout,
                MAX_ANSWER,
            )
            .await;
        classify(result)
    }

    /// Logs and records how a decision's delivery ended.
    fn finish(&self, d: &Decision, p: Option<Prepared>, e: &Ended) {
        let key = p.map_or_else(|| self.key(d), |p| p.key);
        let target = self.endpoint.target();
        let (attempts, status) = (e.attempts, e.status);
        match e.outcome {
            Outcome::Ok => {
                tracing::info!(signal = "webhook", %target, desired = d.desired, attempts, status,
                    idempotency_key = %key, "scale signal delivered");
            }
            Outcome::Failed => {
                tracing::error!(signal = "webhook", %target, desired = d.desired, attempts, status,
                    error = e.error.as_deref().unwrap_or(""), idempotency_key = %key,
                    "scale signal failed");
            }
            Outcome::Dropped => {
                tracing::info!(signal = "webhook", %target, desired = d.desired, attempts,
                    reason = e.error.as_deref().unwrap_or(""), idempotency_key = %key,
                    "scale signal dropped");
            }
            // Kubernetes-only outcomes; a webhook delivery never ends so.
            Outcome::Unchanged
            | Outcome::RefusedHpaOwned
            | Outcome::RefusedVpaOwned
            | Outcome::Infeasible
            | Outcome::Deferred => {}
        }
        self.recent.push(SentSignal {
            signal: "webhook",
            at: rfc3339(prescale_proxy::signals::now_ms()),
            decided_at: rfc3339(d.at),
            desired_replicas: d.desired,
            outcome: e.outcome,
            attempts,
            status,
            error: e.error.clone(),
            idempotency_key: key,
        });
    }
}

impl WebhookSignal {
    fn key(&self, d: &Decision) -> String {
        idempotency_key(&self.cfg.service, d.desired, d.at, self.bucket_ms)
    }
}

/// What one answer means for the delivery: 2xx delivered; 429 and 5xx retried
/// (honouring `Retry-After`); any other status refused, since the same body would be
/// refused again.
fn classify(result: Result<Answer, ExchangeError>) -> Attempt {
    match result {
        Ok(a) if a.status.is_success() => Attempt::Done {
            outcome: Outcome::Ok,
            status: Some(a.status.as_u16()),
            error: None,
        },
        Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS || a.status.is_server_error() => {
            Attempt::Retry {
                status: Some(a.status.as_u16()),
                error: format!("receiver answered {}", a.status),
                retry_after: backoff::retry_after(&a.headers, system_now()),
            }
        }
        // 1xx/3xx are not an acceptance either; a redirect is not followed (the URL
        // is the config's to fix).
        Ok(a) => Attempt::Done {
            outcome: Outcome::Failed,
            status: Some(a.status.as_u16()),
            error: Some(format!(
                "receiver refused it with status {}",
                a.status.as_u16()
            )),
        },
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
            resources: Default::default(),
        }
    }

    fn webhook(only_on_change: bool) -> (Webhook, Arc<Recent>) {
        let cfg: WebhookConfig = serde_yaml_ng::from_str(&format!(
            "{{url: 'http://127.0.0.1:9/scale', service: s, only_on_change: {only_on_change}}}"
        ))
        .unwrap();
        let recent = Arc::new(Recent::default());
        let hook = new(&cfg, Duration::from_secs(15), recent.clone()).unwrap();
        (hook, recent)
    }

    fn pending(w: &Webhook) -> Option<u32> {
        w.pending().map(|d| d as u32)
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
        assert_eq!(recent.list().len(), prescale_proxy::signals::RECENT);
    }

    #[test]
    fn only_changes_from_the_delivered_number_are_queued() {
        let (w, recent) = webhook(true);
        w.set_delivered(3);
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
        w.set_delivered(3);
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
            Attempt::Done {
                outcome: Outcome::Ok,
                status: Some(200),
                ..
            }
        ));
        assert!(matches!(
            classify(answer(202, None)),
            Attempt::Done {
                outcome: Outcome::Ok,
                status: Some(202),
                ..
            }
        ));
        assert!(matches!(
            classify(answer(400, None)),
            Attempt::Done {
                outcome: Outcome::Failed,
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(
            classify(answer(404, None)),
            Attempt::Done {
                outcome: Outcome::Failed,
                status: Some(404),
                ..
            }
        ));
        assert!(matches!(
            classify(answer(302, None)),
            Attempt::Done {
                outcome: Outcome::Failed,
                status: Some(302),
                ..
            }
        ));
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
