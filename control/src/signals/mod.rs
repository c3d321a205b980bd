//! The platform senders: after each scaling decision, tell the platform how many
//! replicas to have — on threads of their own, never queueing more than the latest
//! decision. Each is one [`sender::Signal`] on the one [`sender::Sender`] (KEDA is
//! served, not sent: it answers KEDA's polls with the latest decision). The resize
//! signal sends this pod's container size, planned at each decision.

pub mod backoff;
pub mod client;
pub mod keda;
pub mod kube;
pub mod node;
pub mod resize;
pub mod sender;
pub mod webhook;

pub use prescale_proxy::signals::{
    rfc3339, startup, Decision, ForecastSummary, Outcome, Recent, SentSignal,
};

use prescale_policies::scale::ScalingConfig;
use prescale_proxy::config::SignalsConfig;
use prescale_proxy::signals::DecisionSink;
use std::sync::Arc;

/// The signal senders configured.
pub struct Signals {
    webhook: Option<Arc<webhook::Webhook>>,
    keda: Option<Arc<keda::Keda>>,
    kubernetes: Option<Arc<self::kube::KubeScaler>>,
    resize: Option<Arc<resize::Resizing>>,
    recent: Arc<Recent>,
}

// === impl Signals ===

impl Signals {
    /// Starts a sender thread for each configured signal (and the KEDA scaler's
    /// server). Fails only on a config the sender cannot use (e.g. an unreadable
    /// `ca_file` or kubeconfig, or a KEDA address already in use).
    pub fn start(cfg: &SignalsConfig, scaling: &ScalingConfig) -> std::io::Result<Arc<Self>> {
        let recent = Arc::new(Recent::default());
        let webhook = match &cfg.webhook {
            Some(w) => Some(webhook::spawn(w, scaling.sync_period, recent.clone())?),
            None => None,
        };
        let keda = match &cfg.keda {
            Some(k) => Some(keda::Keda::spawn(k, scaling)?),
            None => None,
        };
        let kubernetes = match &cfg.kubernetes {
            Some(k) => Some(self::kube::spawn(k, recent.clone())?),
            None => None,
        };
        let resize = match &cfg.resize {
            Some(r) => Some(resize::spawn(r)?),
            None => None,
        };
        Ok(Arc::new(Self {
            webhook,
            keda,
            kubernetes,
            resize,
            recent,
        }))
    }
}

impl DecisionSink for Signals {
    fn publish(&self, d: &Decision) {
        if let Some(w) = &self.webhook {
            w.offer(d.clone());
        }
        if let Some(k) = &self.keda {
            k.offer(d);
        }
        if let Some(k) = &self.kubernetes {
            k.offer(d.clone());
        }
        // The resize plan is made here, at each decision, against the pod last read.
        if let Some(r) = &self.resize {
            resize::decide(r, d);
        }
    }

    fn learned_startup(&self) -> Option<startup::LearnedStartup> {
        self.kubernetes.as_ref().and_then(|k| k.signal().learned())
    }

    fn resize_status(&self) -> Option<prescale_proxy::signals::ResizeStatus> {
        self.resize.as_ref().map(|r| r.signal().status())
    }

    fn recent(&self) -> Vec<SentSignal> {
        self.recent.list()
    }
}
