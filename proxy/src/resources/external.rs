//! Usage read by something outside this crate: the Kubernetes metrics API and
//! Prometheus readers live in `prescale-control` (they need its clients) and are
//! handed in by the binary through this trait, so the data plane never builds against
//! them.

use super::source::{SampleError, Usage};

/// A reader of the service's usage from a platform API. Called on the `resources`
/// thread, never on the data path; each read must end within its own timeout.
pub trait ExternalSource: Send {
    /// The `source` label and `/v1/resources` name (`kubernetes`, `prometheus`).
    fn name(&self) -> &'static str;
    /// Usage since the previous read (CPU seconds over the interval, memory now), or
    /// over the platform's own window (`Usage::window`).
    fn read(&mut self) -> Result<Usage, SampleError>;
}

/// Turns rates read from an API into the interval usage the sampler wants: CPU
/// seconds are the rate times the time since the previous read.
#[derive(Default)]
pub struct RateToUsage {
    last: Option<std::time::Instant>,
}

// === impl RateToUsage ===

impl RateToUsage {
    /// The usage for a CPU rate (cores) and memory level read now; the first read
    /// has no interval, so no CPU.
    pub fn usage(&mut self, cpu_cores: Option<f64>, memory_bytes: Option<f64>) -> Usage {
        let now = std::time::Instant::now();
        let dt = self.last.map(|t| now.duration_since(t).as_secs_f64());
        self.last = Some(now);
        Usage {
            cpu_seconds: dt.zip(cpu_cores).map(|(dt, c)| c * dt),
            memory_bytes,
            io_bytes: None,
            window: None,
        }
    }

    /// A failed read: the next one starts a fresh interval.
    pub fn reset(&mut self) {
        self.last = None;
    }
}
