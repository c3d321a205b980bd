//! Every listener on one set of worker threads.
//!
//! pingora gives each service its own tokio runtime, so a sidecar with an inbound and an
//! outbound listener ran two thread sets (each one per core by default), and a request
//! that crosses both (the service's call out while serving a call in) woke threads of
//! both. A sidecar's CPU is paid on every request of the pod it serves, so [`Listeners`]
//! starts all of them as one pingora service: one runtime, `runtime.worker_threads`
//! threads, shared. Each listener keeps its own app, address and connection guard.

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;

/// The listeners, started together on one runtime.
pub struct Listeners {
    services: Vec<Box<dyn Service>>,
    threads: usize,
}

impl Listeners {
    pub fn new(threads: usize) -> Self {
        Self {
            services: Vec::new(),
            threads,
        }
    }

    pub fn add(&mut self, service: impl Service + 'static) {
        self.services.push(Box::new(service));
    }
}

#[async_trait]
impl Service for Listeners {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let runs = self
            .services
            .iter_mut()
            .map(|s| s.start_service(fds.clone(), shutdown.clone(), listeners_per_fd));
        futures_util::future::join_all(runs).await;
    }

    fn name(&self) -> &str {
        "listeners"
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.services.iter().try_fold(Vec::new(), |mut all, s| {
            all.extend(s.listen_addresses()?);
            Some(all)
        })
    }
}
