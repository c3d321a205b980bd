//! A recorded-contract fake Kubernetes API server, shared by the tests of the signals
//! that talk to one (`tests/kube_scale.rs`, `tests/kube_resize.rs`): no cluster runs
//! here. The server records every request, answers 401 without the bearer token, and
//! hands the rest to the test's [`Cluster`], which answers with the JSON shapes a real
//! API server sends (each test's doc says which). The sidecar finds it through a
//! generated kubeconfig, as `kubectl config view --raw` writes one.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the fake API server got.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: Bytes,
}

/// The fake cluster's state and how it answers an authorised request.
pub trait Cluster: Send + 'static {
    /// Status code and JSON body for `req`.
    fn answer(&mut self, req: &Recorded) -> (u16, Value);
}

/// A `v1` Status body, as the API server sends with every error.
pub fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "details": {}, "code": code}),
    )
}

/// The fake API server: answers from `cluster`, records every request.
pub struct FakeApi<C> {
    pub addr: SocketAddr,
    pub cluster: Arc<Mutex<C>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    token: String,
    namespace: String,
    task: tokio::task::JoinHandle<()>,
}

impl<C: Cluster> FakeApi<C> {
    /// Serves `cluster` on a loopback port; requests must carry `Bearer {token}`.
    pub async fn start(cluster: C, token: &str, namespace: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster = Arc::new(Mutex::new(cluster));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (state, log, bearer) = (cluster.clone(), requests.clone(), format!("Bearer {token}"));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, log, bearer) = (state.clone(), log.clone(), bearer.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (state, log, bearer) = (state.clone(), log.clone(), bearer.clone());
                        async move { Ok::<_, hyper::Error>(answer(&state, &log, &bearer, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            cluster,
            requests,
            token: token.to_string(),
            namespace: namespace.to_string(),
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn patches(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect()
    }

    /// The PATCHes once there are `n`, or those there are after `limit`.
    pub async fn wait_for_patches(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.patches();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A kubeconfig pointing at this server, as `kubectl config view --raw` writes it.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n    insecure-skip-tls-verify: true\nusers:\n- name: prescale\n  user:\n    token: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: prescale\n    namespace: {}\ncurrent-context: fake\npreferences: {{}}\n",
                self.addr, self.token, self.namespace
            ),
        )
        .unwrap();
        path
    }
}

impl<C> Drop for FakeApi<C> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer<C: Cluster>(
    state: &Mutex<C>,
    log: &Mutex<Vec<Recorded>>,
    bearer: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let authorization = header("authorization");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        at,
        method,
        path,
        query,
        content_type,
        authorization,
        body,
    };
    log.lock().unwrap().push(recorded.clone());
    let (code, value) = if recorded.authorization.as_deref() != Some(bearer) {
        status(401, "Unauthorized", "Unauthorized")
    } else {
        state.lock().unwrap().answer(&recorded)
    };
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}
