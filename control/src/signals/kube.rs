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

use super::sender::{Attempt, Ended, OutcomeMetrics, Sender, Signal};
use super::startup::{LearnedStartup, StartupLearner};
use super::{rfc3339, Decision, Outcome, Recent, SentSignal};
use ::kube::api::{ListParams, Patch, PatchParams};
use ::kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use ::kube::{Api, Client, Config};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use metrics::Gauge;
use prescale_proxy::config::{KubernetesConfig, RetryPolicy};
use prescale_proxy::metrics as m;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// HPAs read per LIST page, and pages read at most (a namespace with more HPAs than
/// this is not checked past it: the refusal is best effort beyond 5 000 HPAs).
const HPA_PAGE: u32 = 500;
const MAX_HPA_PAGES: usize = 10;

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

/// The Kubernetes sender: decisions offered to it are applied by the one [`Sender`].
pub type KubeScaler = Sender<KubeSignal>;

/// The Kubernetes scale signal: what applying one decision is, and the start-up
/// time learned from the readiness that follows.
pub struct KubeSignal {
    cfg: KubernetesConfig,
    /// None only in unit tests, which never deliver.
    apis: Option<Apis>,
    recent: Arc<Recent>,
    learner: Mutex<StartupLearner>,
    /// The HPA last found owning the Deployment, so the refusal is logged once.
    owner: Mutex<Option<String>>,
    /// When readiness is next read while a scale-up becomes ready (None: now).
    next_poll: Mutex<Option<Instant>>,
    /// The monotonic clock the learner runs on.
    epoch: Instant,
    learned: Gauge,
}

/// The typed endpoints used.
struct Apis {
    deployments: Api<Deployment>,
    hpas: Api<HorizontalPodAutoscaler>,
}

/// Builds the client (reading the kubeconfig or the service account now, so a bad
/// one is a startup error) and starts the sender on its own thread and runtime.
pub fn spawn(cfg: &KubernetesConfig, recent: Arc<Recent>) -> std::io::Result<Arc<KubeScaler>> {
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
    let me = Arc::new(new(cfg, Some(apis), recent));
    me.spawn(rt, "signal-kubernetes".into())?;
    tracing::info!(signal = "kubernetes", namespace = %cfg.namespace, deployment = %cfg.deployment,
        kubeconfig = ?cfg.kubeconfig, dry_run = cfg.dry_run,
        "scale signals go to the Kubernetes scale subresource");
    Ok(me)
}

fn new(cfg: &KubernetesConfig, apis: Option<Apis>, recent: Arc<Recent>) -> KubeScaler {
    let metrics = OutcomeMetrics::new(
        m::SIGNAL_SENDS,
        "signal",
        "kubernetes",
        &Outcome::ALL[..5],
        Some(::metrics::gauge!(m::SIGNAL_LAST_SUCCESS, "signal" => "kubernetes")),
    );
    let signal = KubeSignal {
        cfg: cfg.clone(),
        apis,
        recent,
        learner: Mutex::new(StartupLearner::default()),
        owner: Mutex::new(None),
        next_poll: Mutex::new(None),
        epoch: Instant::now(),
        learned: ::metrics::gauge!(m::LEARNED_STARTUP),
    };
    Sender::new(signal, metrics)
}

// === impl KubeSignal ===

impl Signal for KubeSignal {
    type Item = Decision;
    type Prepared = u32;

    fn name(&self) -> &'static str {
        "kubernetes"
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

    fn prepare(&self, d: &Decision) -> Result<u32, String> {
        Ok(d.desired)
    }

    async fn attempt(&self, desired: &u32) -> Attempt {
        let Some(apis) = &self.apis else {
            return Attempt::Retry {
                status: None,
                error: "no Kubernetes client".into(),
                retry_after: None,
            };
        };
        let done = |outcome, error| Attempt::Done {
            outcome,
            status: None,
            error,
        };
        let error = match self.apply(apis, *desired).await {
            Ok(Applied::Patched { from }) => {
                tracing::info!(signal = "kubernetes", namespace = %self.cfg.namespace,
                    deployment = %self.cfg.deployment, from, to = desired,
                    dry_run = self.cfg.dry_run, "scaled the deployment");
                return done(Outcome::Ok, None);
            }
            Ok(Applied::Unchanged) => return done(Outcome::Unchanged, None),
            Ok(Applied::RefusedHpaOwned { hpa }) => {
                let why = format!(
                    "HorizontalPodAutoscaler {hpa} targets deployment {}; prescale does not write its scale",
                    self.cfg.deployment
                );
                return done(Outcome::RefusedHpaOwned, Some(why));
            }
            Err(e) => e,
        };
        let status = match &error {
            CallError::Api { code, .. } => Some(*code),
            _ => None,
        };
        if retryable(&error) {
            Attempt::Retry {
                status,
                error: error.to_string(),
                retry_after: None,
            }
        } else {
            Attempt::Done {
                outcome: Outcome::Failed,
                status,
                error: Some(error.to_string()),
            }
        }
    }

    /// Logs and records how a decision's delivery ended.
    fn finish(&self, d: &Decision, _: Option<u32>, e: &Ended) {
        if e.outcome == Outcome::Failed {
            tracing::error!(signal = "kubernetes", deployment = %self.cfg.deployment,
                desired = d.desired, attempts = e.attempts, status = e.status,
                error = e.error.as_deref().unwrap_or(""), "scale signal failed");
        }
        self.recent.push(SentSignal {
            signal: "kubernetes",
            at: rfc3339(prescale_proxy::signals::now_ms()),
            decided_at: rfc3339(d.at),
            desired_replicas: d.desired,
            outcome: e.outcome,
            attempts: e.attempts,
            status: e.status,
            error: e.error.clone(),
            idempotency_key: String::new(),
        });
    }

    /// While a scale-up is becoming ready, readiness is read every `readiness_poll`.
    fn chore_due(&self, _: Option<Instant>) -> Option<Instant> {
        let waiting = self
            .learner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting();
        let next = *self.next_poll.lock().unwrap_or_else(|p| p.into_inner());
        // Never polled: due since start. (`Instant::now()` here would always be a
        // little later than the sender's own `now`, so the poll would never be due and
        // the sender would spin.)
        waiting.then(|| next.unwrap_or(self.epoch))
    }

    async fn chore(&self) -> Option<Decision> {
        *self.next_poll.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + self.cfg.readiness_poll);
        if let Some(apis) = &self.apis {
            self.poll_readiness(apis).await;
        }
        None
    }
}

impl KubeSignal {
    /// The start-up time learned so far, if any.
    pub fn learned(&self) -> Option<LearnedStartup> {
        self.learner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .estimate()
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
            self.learned.set(e.seconds);
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
        call(self.cfg.timeout, fut).await
    }

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Reads the kubeconfig (or the in-cluster service account) and builds the client,
/// with the configured timeout on connect, read and write.
async fn connect(cfg: &KubernetesConfig) -> Result<Client, SetupError> {
    client(cfg.kubeconfig.as_deref(), cfg.timeout).await
}

/// A client from `kubeconfig` (or the in-cluster service account) with `timeout` on
/// connect, read and write; shared by the signals that talk to the API server.
pub(crate) async fn client(
    kubeconfig: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<Client, SetupError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::incluster()?,
    };
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Ok(Client::try_from(config)?)
}

/// Runs one API call under `timeout`, its error as a [`CallError`].
pub(crate) async fn call<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, ::kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(CallError::Timeout(timeout)),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(::kube::Error::Api(status))) => Err(CallError::Api {
            code: status.code,
            reason: status.reason,
            message: status.message,
        }),
        Ok(Err(e)) => Err(CallError::Transport(e.to_string())),
    }
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
pub(crate) fn retryable(e: &CallError) -> bool {
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
        let k = new(&cfg, None, recent.clone());
        let d = |desired| Decision {
            desired,
            previous: None,
            reason: prescale_policies::scale::ScaleReason::Forecast,
            lead_time_seconds: 135.0,
            forecast: None,
            current_demand: 1.0,
            at: 1_000,
            resources: Default::default(),
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
        assert_eq!(k.pending(), Some(3));
        assert!(k.signal().learned().is_none());
    }
}
