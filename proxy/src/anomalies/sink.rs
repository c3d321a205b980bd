//! Where alerts go, as the anomaly handler sees it: the [`AlertSink`] trait the
//! senders (in `prescale-control`) implement, and what a delivery reports.

use prescale_profiler::anomaly::{Anomaly, AnomalyKind};
use prescale_profiler::sample::Millis;
use serde::Serialize;

/// An alert receiver. Never blocks the thread that raises anomalies.
pub trait AlertSink: Send + Sync {
    /// A new anomaly, with its severity bucket fixed now.
    fn raise(&self, a: &Anomaly, severity: &'static str);
    /// An active anomaly confirmed again.
    fn update(&self, a: &Anomaly);
    /// The anomaly ended at `at`.
    fn resolve(&self, kind: AnomalyKind, subject: &str, at: Millis);
    /// The last deliveries, newest first.
    fn recent(&self) -> Vec<Delivery>;
}

/// Where alerts go, and in which form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sink {
    /// `POST <url>/api/v2/alerts` with the alert list.
    Alertmanager,
    /// `POST <url>` with Alertmanager's webhook payload.
    Webhook,
}

/// One batch's delivery, for `GET /v1/anomalies`.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// When the delivery ended (RFC 3339).
    pub at: String,
    pub sink: Sink,
    pub firing: usize,
    pub resolved: usize,
    pub ok: bool,
    pub attempts: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
}

// === impl Sink ===

impl Sink {
    /// Its name in config paths, metric labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Sink::Alertmanager => "alertmanager",
            Sink::Webhook => "webhook",
        }
    }
}
