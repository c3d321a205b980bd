//! The Kubernetes scale signal: sets one Deployment's replicas through its `scale`
//! subresource with the `kube` client (in-cluster service account or a kubeconfig),
//! and learns the replica start-up time from its readiness.
//!
//! For each decision (single slot, latest wins, at most one delivery per
//! `min_interval`, on a thread of its own): GET the Deployment; LIST the namespace's
//! HorizontalPodAutoscalers and **refuse** when one targets the Deployment (an HPA
//! would undo every write; feed it `prescale_desired_replicas` instead); otherwise
//! PATCH `deployments/{name}/scale` with the merge patch `{"spec":{"replicas":N}}`
//! when `spec.replicas` differs. Transport errors, timeouts, 5xx and 429 are retried
//! with jittered backoff; other answers (403 without RBAC, 404) fail the delivery.
//!
//! After a scale-up the sender polls `status.readyReplicas` every `readiness_poll`
//! until it reaches the number asked for; each such wait is one observation of the
//! start-up time ([`StartupLearner`]), exported as `prescale_learned_startup_seconds`
//! and in `/v1/scale`.

use super::backoff::{self, Jitter};
use super::startup::{LearnedStartup, StartupLearner};
use super::{rfc3339, Decision, Outcome, Recent, SentSignal};
use crate::config::KubernetesConfig;
use crate::metrics as m;
use ::kube::api::{ListParams, Patch, PatchParams};
use ::kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use ::kube::{Api, Client, Config};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use metrics::{Counter, Gauge};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// HPAs read per LIST page, and pages read at most (a namespace with more HPAs than
/// this is not checked past it: the refusal is best effort beyond 5 000 HPAs).
const HPA_PAGE: u32 = 500;
const MAX_HPA_PAGES: usize = 10;

/// `latest` before any decision.
const NONE: u64 = u64::MAX;

/// Why the client could not be set up (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("not running in a cluster (set signals.kubernetes.kubeconfig): {0}")]
    InCluster(#[from] InClusterError),
    #[error("client: {0}")]
    Client(#[from] ::kube::Error),
}

/// Why one API call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("API answered {code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
}

/// What one attempt at a decision did.
#[derive(Debug, PartialEq)]
enum Applied {
    Patched { from: i32 },
    Unchanged,
    RefusedHpaOwned { hpa: String },
}

/// The Kubernetes sender's shared state.
pub struct KubeScaler {
    cfg: KubernetesConfig,
    /// The pending decision: the only queue there is.
    slot: Mutex<Option<Decision>>,
    notify: Notify,
    /// Desired replicas of the newest decision offered.
    latest: AtomicU64,
    recent: Arc<Recent>,
    learner: Mutex<StartupLearner>,
    /// The HPA last found owning the Deployment, so the refusal is logged once.
    owner: Mutex<Option<String>>,
    /// The monotonic clock the learner runs on.
    epoch: Instant,
    metrics: Metrics,
}

struct Metrics {
    ok: Counter,
    unchanged: Counter,
    refused: Counter,
    retry: Counter,
    failed: Counter,
    dropped: Counter,
    last_success: Gauge,
    learned: Gauge,
}

/// The typed endpoints used.
struct Apis {
    deployments: Api<Deployment>,
    hpas: Api<HorizontalPodAutoscaler>,
}

// === impl KubeScaler ===

impl KubeScaler {
    /// Builds the client (reading the kubeconfig or the service account now, so a bad
    /// one is a startup error) and starts the sender on its own thread and runtime.
    pub fn spawn(cfg: &KubernetesConfig, recent: Arc<Recent>) -> std::io::Result<Arc<Self>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The client spawns its request buffer on this runtime, which the thread runs.
        let client = rt
            .block_on(connect(cfg))
            .map_err(|e| std::io::Error::other(format!("signals.kubernetes: {e}")))?;
        let apis = Apis {
            deployments: Api::namespaced(client.clone(), &cfg.namespace),
            hpas: Api::namespaced(client, &cfg.namespace),
        };
        let me = Arc::new(Self::new(cfg, recent));
        let sender = me.clone();
        std::thread::Builder::new()
            .name("signal-kubernetes".into())
            .spawn(move || rt.block_on(sender.run(apis)))?;
        tracing::info!(signal = "kubernetes", namespace = %cfg.namespace, deployment = %cfg.deployment,
            kubeconfig = ?cfg.kubeconfig, dry_run = cfg.dry_run,
            "scale signals go to the Kubernetes scale subresource");
        Ok(me)
    }

    fn new(cfg: &KubernetesConfig, recent: Arc<Recent>) -> Self {
        let handle = |outcome: &'static str| {
            let c = ::metrics::counter!(m::SIGNAL_SENDS, "signal" => "kubernetes", "outcome" => outcome);
            c.increment(0);
            c
        };
        Self {
            cfg: cfg.clone(),
            slot: Mutex::new(None),
            notify: Notify::new(),
            latest: AtomicU64::new(NONE),
            recent,
            learner: Mutex::new(StartupLearner::default()),
            owner: Mutex::new(None),
            epoch: Instant::now(),
            metrics: Metrics {
                ok: handle(Outcome::Ok.as_str()),
                unchanged: handle(Outcome::Unchanged.as_str()),
                refused: handle(Outcome::RefusedHpaOwned.as_str()),
                retry: handle("retry"),
                failed: handle(Outcome::Failed.as_str()),
                dropped: handle(Outcome::Dropped.as_str()),
                last_success: ::metrics::gauge!(m::SIGNAL_LAST_SUCCESS, "signal" => "kubernetes"),
                learned: ::metrics::gauge!(m::LEARNED_STARTUP),
            },
        }
    }

    /// Takes the newest decision; never blocks on the API server.
    pub fn offer(&self, d: Decision) {
        self.latest.store(u64::from(d.desired), Ordering::Release);
        let replaced = self
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(d.clone());
        if let Some(old) = replaced.filter(|old| old.desired != d.desired) {
            let why = "replaced by a newer decision before it was sent".to_string();
            self.finish(&old, Outcome::Dropped, 0, None, Some(why));
        }
        self.notify.notify_one();
    }

    /// The start-up time learned so far, if any.
    pub fn learned(&self) -> Option<LearnedStartup> {
        self.learner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .estimate()
    }

    async fn run(self: Arc<Self>, apis: Apis) {
        let mut jitter = Jitter::seeded();
        let mut next_send = Instant::now();
        let mut next_poll = Instant::now();
        loop {
            let now = Instant::now();
            let pending = self
                .slot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            let waiting = self
                .learner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .waiting();
            if pending && now >= next_send {
                let next = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(d) = next {
                    next_send = now + self.cfg.min_interval;
                    self.deliver(&apis, d, &mut jitter).await;
                }
                continue;
            }
            if waiting && now >= next_poll {
                next_poll = now + self.cfg.readiness_poll;
                self.poll_readiness(&apis).await;
                continue;
            }
            let wake = [pending.then_some(next_send), waiting.then_some(next_poll)]
                .into_iter()
                .flatten()
                .min();
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.notify.notified() => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Applies one decision until it is applied, refused, out of retries, or
    /// superseded.
    async fn deliver(&self, apis: &Apis, d: Decision, jitter: &mut Jitter) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.apply(apis, d.desired).await {
                Ok(Applied::Patched { from }) => {
                    tracing::info!(signal = "kubernetes", namespace = %self.cfg.namespace,
                        deployment = %self.cfg.deployment, from, to = d.desired,
                        dry_run = self.cfg.dry_run, "scaled the deployment");
                    return self.finish(&d, Outcome::Ok, attempt, None, None);
                }
                Ok(Applied::Unchanged) => {
                    return self.finish(&d, Outcome::Unchanged, attempt, None, None);
                }
                Ok(Applied::RefusedHpaOwned { hpa }) => {
                    let why = format!(
                        "HorizontalPodAutoscaler {hpa} targets deployment {}; prescale does not write its scale",
                        self.cfg.deployment
                    );
                    return self.finish(&d, Outcome::RefusedHpaOwned, attempt, None, Some(why));
                }
                Err(e) => e,
            };
            let status = match &error {
                CallError::Api { code, .. } => Some(*code),
                _ => None,
            };
            if !retryable(&error) || attempt > self.cfg.retries {
                return self.finish(
                    &d,
                    Outcome::Failed,
                    attempt,
                    status,
                    Some(error.to_string()),
                );
            }
            self.metrics.retry.increment(1);
            let wait = backoff::delay(
                attempt,
                self.cfg.backoff,
                self.cfg.max_backoff,
                jitter.next_unit(),
            );
            tracing::warn!(signal = "kubernetes", deployment = %self.cfg.deployment,
                desired = d.desired, attempt, status, %error, retry_in = ?wait,
                "scale not applied; retrying");
            if !self.wait_unless_superseded(d.desired, wait).await {
                let why = Some("a newer decision replaced it while retrying".to_string());
                return self.finish(&d, Outcome::Dropped, attempt, status, why);
            }
        }
    }

    /// One attempt: read the Deployment, check for an owning HPA, patch if needed.
    async fn apply(&self, apis: &Apis, desired: u32) -> Result<Applied, CallError> {
        let name = self.cfg.deployment.as_str();
        let dep = self.call(apis.deployments.get(name)).await?;
        let (spec, ready) = replicas(&dep);
        self.observe_ready(ready);
        let owner = self.owning_hpa(apis).await?;
        self.note_owner(owner.as_deref());
        if let Some(hpa) = owner {
            return Ok(Applied::RefusedHpaOwned { hpa });
        }
        let target = i32::try_from(desired).unwrap_or(i32::MAX);
        if spec == target {
            return Ok(Applied::Unchanged);
        }
        let params = PatchParams {
            field_manager: Some(self.cfg.field_manager.clone()),
            dry_run: self.cfg.dry_run,
            ..PatchParams::default()
        };
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": target } }));
        self.call(apis.deployments.patch_scale(name, &params, &patch))
            .await?;
        if !self.cfg.dry_run {
            let at = self.mono_ms();
            self.learner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .requested(desired, u32::try_from(ready).unwrap_or(0), at);
        }
        Ok(Applied::Patched { from: spec })
    }

    /// The first HPA in the namespace whose `scaleTargetRef` is the Deployment.
    async fn owning_hpa(&self, apis: &Apis) -> Result<Option<String>, CallError> {
        let mut params = ListParams::default().limit(HPA_PAGE);
        for _ in 0..MAX_HPA_PAGES {
            let page = self.call(apis.hpas.list(&params)).await?;
            if let Some(hpa) = owner_of(&page.items, &self.cfg.deployment) {
                return Ok(Some(hpa));
            }
            match page.metadata.continue_.as_deref() {
                Some(token) if !token.is_empty() => {
                    params = ListParams::default().limit(HPA_PAGE).continue_token(token);
                }
                _ => break,
            }
        }
        Ok(None)
    }

    /// Logs a change of owner once: the refusal loudly, the release quietly.
    fn note_owner(&self, owner: Option<&str>) {
        let mut last = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == owner {
            return;
        }
        match owner {
            Some(hpa) => tracing::error!(signal = "kubernetes", namespace = %self.cfg.namespace,
                deployment = %self.cfg.deployment, hpa,
                "REFUSING to scale: HorizontalPodAutoscaler {hpa} targets this deployment and would undo every write; \
                 prescale leaves it alone (feed the HPA prescale_desired_replicas instead, see docs/scaling.md)"),
            None => tracing::info!(signal = "kubernetes", deployment = %self.cfg.deployment,
                "no HorizontalPodAutoscaler targets the deployment any more; scaling it"),
        }
        *last = owner.map(str::to_string);
    }

    /// Reads readiness while a scale-up is becoming ready.
    async fn poll_readiness(&self, apis: &Apis) {
        match self.call(apis.deployments.get(&self.cfg.deployment)).await {
            Ok(dep) => self.observe_ready(replicas(&dep).1),
            Err(e) => {
                tracing::debug!(signal = "kubernetes", error = %e, "readiness poll failed");
            }
        }
    }

    fn observe_ready(&self, ready: i32) {
        let at = self.mono_ms();
        let mut learner = self.learner.lock().unwrap_or_else(|p| p.into_inner());
        if learner.observe(u32::try_from(ready).unwrap_or(0), at) == 0 {
            return;
        }
        if let Some(e) = learner.estimate() {
            self.metrics.learned.set(e.seconds);
            tracing::info!(signal = "kubernetes", deployment = %self.cfg.deployment,
                observed_seconds = e.last_seconds, learned_seconds = e.seconds,
                observations = e.observations, "replica start-up time observed");
        }
    }

    /// Runs one API call under the configured timeout.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, ::kube::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.cfg.timeout, fut).await {
            Err(_) => Err(CallError::Timeout(self.cfg.timeout)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(::kube::Error::Api(status))) => Err(CallError::Api {
                code: status.code,
                reason: status.reason,
                message: status.message,
            }),
            Ok(Err(e)) => Err(CallError::Transport(e.to_string())),
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

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts, logs and records how a decision's delivery ended.
    fn finish(
        &self,
        d: &Decision,
        outcome: Outcome,
        attempts: u32,
        status: Option<u16>,
        error: Option<String>,
    ) {
        match outcome {
            Outcome::Ok | Outcome::Unchanged => {
                if outcome == Outcome::Ok {
                    self.metrics.ok.increment(1);
                } else {
                    self.metrics.unchanged.increment(1);
                }
                self.metrics.last_success.set(crate::reload::unix_now());
            }
            Outcome::RefusedHpaOwned => self.metrics.refused.increment(1),
            Outcome::Failed => {
                self.metrics.failed.increment(1);
                tracing::error!(signal = "kubernetes", deployment = %self.cfg.deployment,
                    desired = d.desired, attempts, status,
                    error = error.as_deref().unwrap_or(""), "scale signal failed");
            }
            Outcome::Dropped => self.metrics.dropped.increment(1),
        }
        self.recent.push(SentSignal {
            signal: "kubernetes",
            at: rfc3339(super::now_ms()),
            decided_at: rfc3339(d.at),
            desired_replicas: d.desired,
            outcome,
            attempts,
            status,
            error,
            idempotency_key: String::new(),
        });
    }
}

/// Reads the kubeconfig (or the in-cluster service account) and builds the client,
/// with the configured timeout on connect, read and write.
async fn connect(cfg: &KubernetesConfig) -> Result<Client, SetupError> {
    let mut config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::incluster()?,
    };
    config.connect_timeout = Some(cfg.timeout);
    config.read_timeout = Some(cfg.timeout);
    config.write_timeout = Some(cfg.timeout);
    Ok(Client::try_from(config)?)
}

/// `spec.replicas` (1 when unset, as the API server defaults it) and
/// `status.readyReplicas` (0 when unset).
fn replicas(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.replicas.unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (spec, ready)
}

/// The name of the first HPA targeting Deployment `name` (`apps/*` or no version).
fn owner_of(hpas: &[HorizontalPodAutoscaler], name: &str) -> Option<String> {
    hpas.iter().find_map(|h| {
        let target = &h.spec.scale_target_ref;
        let apps = target
            .api_version
            .as_deref()
            .is_none_or(|v| v.is_empty() || v.starts_with("apps/"));
        (target.kind == "Deployment" && target.name == name && apps)
            .then(|| h.metadata.name.clone().unwrap_or_default())
    })
}

/// Worth another attempt: the server or the way to it may recover.
fn retryable(e: &CallError) -> bool {
    match e {
        CallError::Api { code, .. } => *code == 429 || *code >= 500,
        CallError::Timeout(_) | CallError::Transport(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa_list(json: &str) -> Vec<HorizontalPodAutoscaler> {
        let list: ::kube::core::ObjectList<HorizontalPodAutoscaler> =
            serde_json::from_str(json).unwrap();
        list.items
    }

    #[test]
    fn an_hpa_owns_the_deployment_it_targets() {
        // As the API server lists them: items without apiVersion/kind.
        let items = hpa_list(
            r#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscalerList",
                "metadata":{"resourceVersion":"7"},
                "items":[
                  {"metadata":{"name":"other","namespace":"shop"},
                   "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"cart"},
                           "minReplicas":1,"maxReplicas":5}},
                  {"metadata":{"name":"sts","namespace":"shop"},
                   "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"StatefulSet","name":"checkout"},
                           "maxReplicas":5}},
                  {"metadata":{"name":"checkout-hpa","namespace":"shop"},
                   "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"checkout"},
                           "minReplicas":2,"maxReplicas":10,
                           "metrics":[{"type":"Resource","resource":{"name":"cpu",
                              "target":{"type":"Utilization","averageUtilization":70}}}]},
                   "status":{"currentReplicas":2,"desiredReplicas":2}}]}"#,
        );
        assert_eq!(
            owner_of(&items, "checkout").as_deref(),
            Some("checkout-hpa")
        );
        assert_eq!(owner_of(&items, "cart").as_deref(), Some("other"));
        assert_eq!(owner_of(&items, "payments"), None);
        assert_eq!(owner_of(&[], "checkout"), None);
    }

    #[test]
    fn replicas_default_as_the_api_server_does() {
        let d: Deployment = serde_json::from_str(
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"checkout"},
                "spec":{"selector":{"matchLabels":{"app":"checkout"}},
                        "template":{"metadata":{"labels":{"app":"checkout"}},
                                    "spec":{"containers":[{"name":"app","image":"checkout:1"}]}}},
                "status":{}}"#,
        )
        .unwrap();
        assert_eq!(replicas(&d), (1, 0));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let api = |code| CallError::Api {
            code,
            reason: String::new(),
            message: String::new(),
        };
        assert!(retryable(&api(500)));
        assert!(retryable(&api(503)));
        assert!(retryable(&api(429)));
        assert!(!retryable(&api(403)));
        assert!(!retryable(&api(404)));
        assert!(!retryable(&api(409)));
        assert!(retryable(&CallError::Timeout(Duration::from_secs(1))));
        assert!(retryable(&CallError::Transport(
            "connection refused".into()
        )));
    }

    #[test]
    fn the_slot_keeps_only_the_latest_decision() {
        let cfg: KubernetesConfig =
            serde_yaml_ng::from_str("{namespace: shop, deployment: checkout}").unwrap();
        let recent = Arc::new(Recent::default());
        let k = KubeScaler::new(&cfg, recent.clone());
        let d = |desired| Decision {
            desired,
            previous: None,
            reason: prescale_policies::scale::ScaleReason::Forecast,
            lead_time_seconds: 135.0,
            forecast: None,
            current_demand: 1.0,
            at: 1_000,
        };
        k.offer(d(2));
        k.offer(d(2));
        assert!(recent.list().is_empty(), "the same number coalesces");
        k.offer(d(3));
        let list = recent.list();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].signal, list[0].outcome),
            ("kubernetes", Outcome::Dropped)
        );
        assert_eq!(k.slot.lock().unwrap().as_ref().map(|d| d.desired), Some(3));
        assert!(k.learned().is_none());
    }
}
