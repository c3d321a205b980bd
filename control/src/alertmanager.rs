//! Alerts to an Alertmanager or a webhook: every active anomaly is a firing alert
//! (`alertname="PrescaleAnomaly"`, `kind`, `subject`, `severity`), sent when it is
//! raised and again every `resend_interval`, and sent once more with `endsAt` when it
//! clears. To an Alertmanager: the alert list to `/api/v2/alerts`; to a webhook
//! ([`Sink::Webhook`]): the body Alertmanager posts to its own webhook receivers, so
//! whatever consumes those consumes these.
//!
//! Like the scale signals, it runs on the one [`Sender`]: the item offered is "the
//! alerts changed", and each delivery drains shared state rather than a queue — the
//! set of firing alerts (bounded) and the resolved ones not yet delivered (bounded,
//! oldest dropped first). A slow or dead Alertmanager never holds up the threads that
//! raise anomalies; each batch is retried with jittered backoff, and whatever is still
//! firing goes out with the next batch anyway.

use crate::signals::backoff::{self, system_now};
use crate::signals::client::Endpoint;
use crate::signals::rfc3339;
use crate::signals::sender::{Attempt, Ended, OutcomeMetrics, Sender, Signal};
use crate::signals::Outcome;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use prescale_profiler::anomaly::{Anomaly, AnomalyKind, Direction};
use prescale_profiler::sample::Millis;
pub use prescale_proxy::anomalies::sink::{Delivery, Sink};
use prescale_proxy::anomalies::AlertSink;
use prescale_proxy::config::{AlertmanagerConfig, RetryPolicy};
use prescale_proxy::metrics as m;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Firing alerts kept; beyond it a newly raised anomaly is not alerted (and logged).
pub const MAX_FIRING: usize = 1024;
/// Resolved alerts waiting for delivery; beyond it the oldest are dropped.
pub const MAX_RESOLVED: usize = 1024;
/// Deliveries kept for `GET /v1/anomalies`.
const RECENT: usize = 8;
/// The answer body is not used, only bounded.
const MAX_ANSWER: usize = 64 * 1024;
/// The `alertname` label of every alert.
pub const ALERT_NAME: &str = "PrescaleAnomaly";

/// Alertmanager's webhook payload (`version: "4"`), one group per batch.
#[derive(Serialize)]
struct WebhookBody<'a> {
    version: &'static str,
    #[serde(rename = "groupKey")]
    group_key: &'static str,
    status: &'static str,
    receiver: &'static str,
    #[serde(rename = "groupLabels")]
    group_labels: BTreeMap<String, String>,
    #[serde(rename = "commonLabels")]
    common_labels: BTreeMap<String, String>,
    #[serde(rename = "commonAnnotations")]
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: &'static str,
    #[serde(rename = "truncatedAlerts")]
    truncated_alerts: u32,
    alerts: Vec<WebhookAlert<'a>>,
}

#[derive(Serialize)]
struct WebhookAlert<'a> {
    status: &'static str,
    #[serde(flatten)]
    alert: &'a Alert,
}

/// One alert receiver: the alert state, and the sender that delivers it.
pub struct Alertmanager {
    shared: Arc<Shared>,
    sender: Arc<Sender<AlertSignal>>,
}

/// The alert state, shared by the threads that raise anomalies and the sender.
pub struct Shared {
    sink: Sink,
    cfg: AlertmanagerConfig,
    endpoint: Endpoint,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    state: Mutex<State>,
}

/// The alert signal: one delivery is one batch of everything firing and resolved.
pub struct AlertSignal(Arc<Shared>);

/// One batch, drained from the state when its delivery starts.
pub struct Batch {
    body: Bytes,
    firing: usize,
    /// Put back for the next batch when this one fails (resolutions are sent once).
    resolved: Vec<Alert>,
}

#[derive(Default)]
struct State {
    firing: BTreeMap<(AnomalyKind, String), Alert>,
    resolved: VecDeque<Alert>,
    recent: VecDeque<Delivery>,
}

/// One alert in Alertmanager's `PostableAlert` form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// Set when resolved; for a firing alert, filled in at each send.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

// === impl Alertmanager ===

impl Alertmanager {
    /// Starts the sender on its own thread and runtime.
    pub fn spawn(cfg: &AlertmanagerConfig, sink: Sink) -> std::io::Result<Arc<Self>> {
        let me = Arc::new(Self::new(cfg, sink)?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        me.sender.spawn(rt, format!("alerts-{}", sink.name()))?;
        tracing::info!(target = %me.shared.endpoint.target(), path = %me.shared.path, sink = sink.name(),
            "anomaly alerts are sent");
        Ok(me)
    }

    fn new(cfg: &AlertmanagerConfig, sink: Sink) -> std::io::Result<Self> {
        let name = sink.name();
        let endpoint = Endpoint::new(&cfg.url, cfg.ca_file.as_deref())
            .map_err(|e| std::io::Error::other(format!("anomalies.{name}: {e}")))?;
        let base = endpoint.path().trim_end_matches('/');
        let path = match sink {
            Sink::Webhook if base.is_empty() => "/".to_string(),
            Sink::Webhook => endpoint.path().to_string(),
            Sink::Alertmanager if base.ends_with("/api/v2/alerts") => base.to_string(),
            Sink::Alertmanager => format!("{base}/api/v2/alerts"),
        };
        let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        headers.extend(crate::signals::client::secret_headers(
            &cfg.headers,
            &format!("anomalies.{}", sink.name()),
        )?);
        let shared = Arc::new(Shared {
            sink,
            cfg: cfg.clone(),
            endpoint,
            path,
            headers,
            state: Mutex::new(State::default()),
        });
        let metrics = OutcomeMetrics::new(
            m::ANOMALY_ALERT_SENDS,
            "sink",
            name,
            &[Outcome::Ok, Outcome::Failed],
            None,
        );
        let sender = Arc::new(Sender::new(AlertSignal(shared.clone()), metrics));
        Ok(Self { shared, sender })
    }
}

impl AlertSink for Alertmanager {
    /// A new anomaly: fires an alert with the severity bucket fixed now (labels name an
    /// alert, so they must not change while it lasts).
    fn raise(&self, a: &Anomaly, severity: &'static str) {
        if self.shared.raise(a, severity) {
            self.sender.offer(());
        }
    }

    /// An active anomaly confirmed again: its annotations follow (sent with the next
    /// batch; no extra send).
    fn update(&self, a: &Anomaly) {
        self.shared.update(a);
    }

    /// The anomaly ended at `at`: the alert is sent once more, resolved.
    fn resolve(&self, kind: AnomalyKind, subject: &str, at: Millis) {
        if self.shared.resolve(kind, subject, at) {
            self.sender.offer(());
        }
    }

    /// The last deliveries, newest first.
    fn recent(&self) -> Vec<Delivery> {
        self.shared.recent()
    }
}

// === impl Shared ===

impl Shared {
    /// A new anomaly: fires an alert with the severity bucket fixed now (labels name an
    /// alert, so they must not change while it lasts).
    fn raise(&self, a: &Anomaly, severity: &'static str) -> bool {
        let alert = self.alert(a, severity);
        let mut st = self.lock();
        let key = (a.kind, a.subject.clone());
        if st.firing.len() >= MAX_FIRING && !st.firing.contains_key(&key) {
            tracing::warn!(kind = a.kind.as_str(), subject = %a.subject, max = MAX_FIRING,
                "too many firing alerts; this anomaly is not alerted");
            return false;
        }
        st.firing.insert(key, alert);
        true
    }

    /// An active anomaly confirmed again: its annotations follow (sent with the next
    /// batch; no extra send).
    fn update(&self, a: &Anomaly) {
        let mut st = self.lock();
        if let Some(alert) = st.firing.get_mut(&(a.kind, a.subject.clone())) {
            let severity = alert.labels.get("severity").cloned().unwrap_or_default();
            alert.annotations = annotations(a, &severity);
        }
    }

    /// The anomaly ended at `at`: the alert is sent once more, resolved.
    fn resolve(&self, kind: AnomalyKind, subject: &str, at: Millis) -> bool {
        let mut st = self.lock();
        let Some(mut alert) = st.firing.remove(&(kind, subject.to_string())) else {
            return false;
        };
        alert.ends_at = Some(rfc3339(at));
        if st.resolved.len() >= MAX_RESOLVED {
            st.resolved.pop_front();
        }
        st.resolved.push_back(alert);
        true
    }

    /// The last deliveries, newest first.
    fn recent(&self) -> Vec<Delivery> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    fn alert(&self, a: &Anomaly, severity: &'static str) -> Alert {
        let mut labels: BTreeMap<String, String> = self.cfg.labels.clone();
        labels.insert("alertname".into(), ALERT_NAME.into());
        labels.insert("kind".into(), a.kind.as_str().into());
        labels.insert("subject".into(), a.subject.clone());
        labels.insert("severity".into(), severity.into());
        Alert {
            labels,
            annotations: annotations(a, severity),
            starts_at: rfc3339(a.since),
            ends_at: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl AlertSignal ===

impl Signal for AlertSignal {
    type Item = ();
    type Prepared = Batch;

    fn name(&self) -> &'static str {
        self.0.sink.name()
    }

    fn retry(&self) -> RetryPolicy {
        self.0.cfg.retry()
    }

    /// A change goes out at once; the resend interval paces the rest.
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// Every batch asks the same: a newer change never abandons a delivery.
    fn ask(&self, _: &()) -> u64 {
        0
    }

    /// Everything firing and every resolved alert not yet delivered.
    fn prepare(&self, _: &()) -> Result<Batch, String> {
        let me = &self.0;
        let ends = prescale_proxy::clock::system_ms()
            .saturating_add(4 * u64::try_from(me.cfg.resend_interval.as_millis()).unwrap_or(0));
        let (batch, firing, resolved) = {
            let mut st = me.lock();
            let resolved: Vec<Alert> = st.resolved.drain(..).collect();
            let mut batch: Vec<Alert> = st
                .firing
                .values()
                .cloned()
                .map(|mut a| {
                    a.ends_at = Some(rfc3339(ends));
                    a
                })
                .collect();
            let firing = batch.len();
            batch.extend(resolved.iter().cloned());
            (batch, firing, resolved)
        };
        let body = match me.sink {
            Sink::Alertmanager => serde_json::to_vec(&batch),
            Sink::Webhook => serde_json::to_vec(&webhook_body(&batch, firing)),
        };
        match body {
            Ok(b) => Ok(Batch {
                body: Bytes::from(b),
                firing,
                resolved,
            }),
            Err(e) => {
                tracing::error!(error = %e, "alert batch could not be encoded");
                Err(e.to_string())
            }
        }
    }

    async fn attempt(&self, batch: &Batch) -> Attempt {
        let me = &self.0;
        let result = me
            .endpoint
            .exchange(
                Method::POST,
                &me.path,
                &me.headers,
                batch.body.clone(),
                me.cfg.timeout,
                MAX_ANSWER,
            )
            .await;
        match result {
            Ok(a) if a.status.is_success() => Attempt::Done {
                outcome: Outcome::Ok,
                status: Some(a.status.as_u16()),
                error: None,
            },
            Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS || a.status.is_server_error() => {
                Attempt::Retry {
                    status: Some(a.status.as_u16()),
                    error: format!("{} answered {}", me.sink.name(), a.status),
                    retry_after: backoff::retry_after(&a.headers, system_now()),
                }
            }
            // A 4xx other than 429: the same body would be refused again.
            Ok(a) => {
                let why = String::from_utf8_lossy(&a.body)
                    .chars()
                    .take(200)
                    .collect::<String>();
                Attempt::Done {
                    outcome: Outcome::Failed,
                    status: Some(a.status.as_u16()),
                    error: Some(format!(
                        "{} refused the alerts ({}): {why}",
                        me.sink.name(),
                        a.status
                    )),
                }
            }
            Err(e) => Attempt::Retry {
                status: None,
                error: e.to_string(),
                retry_after: None,
            },
        }
    }

    fn finish(&self, _: &(), batch: Option<Batch>, e: &Ended) {
        let me = &self.0;
        let ok = e.outcome == Outcome::Ok;
        let (firing, resolved) = batch.map_or((0, Vec::new()), |b| (b.firing, b.resolved));
        let mut st = me.lock();
        if ok {
            tracing::debug!(target = %me.endpoint.target(), firing, resolved = resolved.len(),
                attempts = e.attempts, "anomaly alerts delivered");
        } else {
            tracing::error!(target = %me.endpoint.target(), firing, resolved = resolved.len(),
                attempts = e.attempts, status = e.status, error = e.error.as_deref().unwrap_or(""),
                "anomaly alerts failed");
            // Resolutions are sent once: keep them for the next batch (bounded).
            for a in resolved.iter().rev() {
                if st.resolved.len() >= MAX_RESOLVED {
                    break;
                }
                st.resolved.push_front(a.clone());
            }
        }
        if st.recent.len() == RECENT {
            st.recent.pop_front();
        }
        st.recent.push_back(Delivery {
            at: rfc3339(prescale_proxy::clock::system_ms()),
            sink: me.sink,
            firing,
            resolved: resolved.len(),
            ok,
            attempts: e.attempts,
            status: e.status,
            error: e.error.clone(),
        });
    }

    /// While anything is firing (or resolved and undelivered), it is sent again every
    /// `resend_interval`.
    fn chore_due(&self, last_start: Option<Instant>) -> Option<Instant> {
        let st = self.0.lock();
        let any = !st.firing.is_empty() || !st.resolved.is_empty();
        drop(st);
        any.then(|| last_start.map_or_else(Instant::now, |t| t + self.0.cfg.resend_interval))
    }

    async fn chore(&self) -> Option<()> {
        Some(())
    }
}

/// One batch as Alertmanager's webhook payload: the first `firing` alerts are firing,
/// the rest resolved; labels all alerts share are the common labels.
fn webhook_body(batch: &[Alert], firing: usize) -> WebhookBody<'_> {
    let mut common = batch.first().map(|a| a.labels.clone()).unwrap_or_default();
    for a in batch.iter().skip(1) {
        common.retain(|k, v| a.labels.get(k) == Some(v));
    }
    WebhookBody {
        version: "4",
        group_key: "prescale",
        status: if firing > 0 { "firing" } else { "resolved" },
        receiver: "prescale",
        group_labels: BTreeMap::from([("alertname".to_string(), ALERT_NAME.to_string())]),
        common_labels: common,
        common_annotations: BTreeMap::new(),
        external_url: "",
        truncated_alerts: 0,
        alerts: batch
            .iter()
            .enumerate()
            .map(|(i, alert)| WebhookAlert {
                status: if i < firing { "firing" } else { "resolved" },
                alert,
            })
            .collect(),
    }
}

/// What a person reads: a summary, and the evidence as JSON.
fn annotations(a: &Anomaly, severity: &str) -> BTreeMap<String, String> {
    let direction = match a.direction {
        Some(Direction::Above) => " (above)",
        Some(Direction::Below) => " (below)",
        None => "",
    };
    BTreeMap::from([
        (
            "summary".to_string(),
            format!(
                "{} anomaly on {}{direction}: severity {:.2} ({severity})",
                a.kind.as_str(),
                a.subject,
                a.severity
            ),
        ),
        (
            "evidence".to_string(),
            serde_json::to_string(&a.evidence).unwrap_or_default(),
        ),
        ("severity_value".to_string(), format!("{:.3}", a.severity)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use prescale_profiler::anomaly::Evidence;

    fn am() -> Alertmanager {
        let cfg: AlertmanagerConfig =
            serde_yaml_ng::from_str("{url: 'http://127.0.0.1:9/am/', labels: {service: checkout}}")
                .unwrap();
        Alertmanager::new(&cfg, Sink::Alertmanager).unwrap()
    }

    #[test]
    fn a_webhook_gets_alertmanagers_webhook_payload_at_its_own_path() {
        let cfg: AlertmanagerConfig = serde_yaml_ng::from_str(
            "{url: 'http://127.0.0.1:9/hooks/prescale', labels: {service: checkout}}",
        )
        .unwrap();
        let w = Alertmanager::new(&cfg, Sink::Webhook).unwrap();
        let w = &w.shared;
        assert_eq!(w.path, "/hooks/prescale");
        let firing = w.alert(&anomaly("source:00000000000000ab"), "critical");
        let mut resolved = w.alert(&anomaly("source:00000000000000cd"), "warning");
        resolved.ends_at = Some("2023-11-14T22:20:00.000Z".into());
        let batch = [firing, resolved];
        let json = serde_json::to_value(webhook_body(&batch, 1)).unwrap();
        assert_eq!(json["version"], "4");
        assert_eq!(json["status"], "firing");
        assert_eq!(json["groupLabels"]["alertname"], "PrescaleAnomaly");
        // Shared by both alerts; subject and severity differ, so they are not common.
        assert_eq!(json["commonLabels"]["service"], "checkout");
        assert_eq!(json["commonLabels"]["kind"], "source_rate");
        assert!(json["commonLabels"].get("subject").is_none(), "{json}");
        let alerts = json["alerts"].as_array().unwrap();
        assert_eq!(alerts[0]["status"], "firing");
        assert_eq!(alerts[0]["labels"]["subject"], "source:00000000000000ab");
        assert_eq!(alerts[1]["status"], "resolved");
        assert_eq!(alerts[1]["endsAt"], "2023-11-14T22:20:00.000Z");
        // Only resolutions left: the group is resolved.
        let json = serde_json::to_value(webhook_body(&batch[1..], 0)).unwrap();
        assert_eq!(json["status"], "resolved");
    }

    fn anomaly(subject: &str) -> Anomaly {
        Anomaly {
            kind: AnomalyKind::SourceRate,
            subject: subject.into(),
            since: 1_700_000_000_000,
            updated: 1_700_000_010_000,
            severity: 23.5,
            direction: Some(Direction::Above),
            evidence: Evidence::from([("rate", 47.0), ("baseline_rate", 2.0)]),
        }
    }

    #[test]
    fn alerts_carry_the_labels_alertmanager_groups_by_and_resolve_once() {
        let am = am();
        let a = &am.shared;
        assert_eq!(a.path, "/am/api/v2/alerts");
        am.raise(&anomaly("source:00000000000000ab"), "critical");
        let st = a.lock();
        let alert = st.firing.values().next().unwrap();
        let json = serde_json::to_value(alert).unwrap();
        assert_eq!(json["labels"]["alertname"], "PrescaleAnomaly");
        assert_eq!(json["labels"]["kind"], "source_rate");
        assert_eq!(json["labels"]["subject"], "source:00000000000000ab");
        assert_eq!(json["labels"]["severity"], "critical");
        assert_eq!(json["labels"]["service"], "checkout");
        assert_eq!(json["startsAt"], "2023-11-14T22:13:20.000Z");
        assert!(json.get("endsAt").is_none());
        let summary = json["annotations"]["summary"].as_str().unwrap();
        assert!(
            summary.contains("source_rate anomaly on source:00000000000000ab (above)"),
            "{summary}"
        );
        assert!(json["annotations"]["evidence"]
            .as_str()
            .unwrap()
            .contains("baseline_rate"));
        // A batch is due at once.
        assert_eq!(am.sender.pending(), Some(0));
        drop(st);

        // Resolved: out of the firing set, queued once with its end.
        am.resolve(
            AnomalyKind::SourceRate,
            "source:00000000000000ab",
            1_700_000_060_000,
        );
        am.resolve(
            AnomalyKind::SourceRate,
            "source:00000000000000ab",
            1_700_000_070_000,
        );
        let st = a.lock();
        assert!(st.firing.is_empty());
        assert_eq!(st.resolved.len(), 1);
        assert_eq!(
            st.resolved[0].ends_at.as_deref(),
            Some("2023-11-14T22:14:20.000Z")
        );
    }

    #[test]
    fn the_firing_and_resolved_sets_are_bounded() {
        let a = am();
        let st = |a: &Alertmanager| a.shared.lock().firing.len();
        for i in 0..(MAX_FIRING + 10) {
            a.raise(&anomaly(&format!("source:{i:016x}")), "warning");
        }
        assert_eq!(st(&a), MAX_FIRING);
        for i in 0..(MAX_FIRING + 10) {
            a.resolve(AnomalyKind::SourceRate, &format!("source:{i:016x}"), 1);
        }
        assert_eq!(a.shared.lock().resolved.len(), MAX_RESOLVED);
    }
}
