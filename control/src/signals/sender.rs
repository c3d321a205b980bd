//! The one sender every outbound signal runs on: a latest-wins slot, a rate limit,
//! jittered retries that honour `Retry-After`, giving up on a delivery once a newer
//! item asks for something else, and outcome metrics.
//!
//! A signal (webhook, Kubernetes scale, Alertmanager, anomaly webhook, or a new one)
//! is one [`Signal`] impl: how to prepare an item, how one attempt goes, and what to
//! record when a delivery ends. The sender owns the loop, so retry and latest-wins
//! behave the same for all of them.

use super::backoff::{self, Jitter};
use super::Outcome;
use metrics::{Counter, Gauge};
use prescale_proxy::config::RetryPolicy;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// `latest` and `delivered` before anything was.
const NONE: u64 = u64::MAX;

/// How one attempt went.
#[derive(Debug)]
pub enum Attempt {
    /// The delivery ended (delivered, refused, unchanged...).
    Done {
        outcome: Outcome,
        status: Option<u16>,
        error: Option<String>,
    },
    /// Worth another attempt; the receiver may have said when.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// How a delivery ended, for [`Signal::finish`].
#[derive(Clone, Debug)]
pub struct Ended {
    pub outcome: Outcome,
    pub attempts: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One kind of outbound signal.
pub trait Signal: Send + Sync + 'static {
    /// What is offered (a scaling decision, "alerts changed").
    type Item: Send + 'static;
    /// An item made ready to send once per delivery (a body, a batch).
    type Prepared: Send;

    /// The name logs carry.
    fn name(&self) -> &'static str;
    fn retry(&self) -> RetryPolicy;
    /// At least this long between the starts of two deliveries.
    fn min_interval(&self) -> Duration;
    /// What an item asks for: items asking the same coalesce, and a delivery is
    /// abandoned once the latest item asks for something else.
    fn ask(&self, item: &Self::Item) -> u64;
    /// Whether an offered item needs sending, given what was last delivered.
    fn wanted(&self, _ask: u64, _delivered: Option<u64>) -> bool {
        true
    }
    fn prepare(&self, item: &Self::Item) -> Result<Self::Prepared, String>;
    fn attempt(&self, prepared: &Self::Prepared) -> impl Future<Output = Attempt>;
    /// Logs and records how a delivery ended (`prepared` is None for an item dropped
    /// before it was prepared).
    fn finish(&self, item: &Self::Item, prepared: Option<Self::Prepared>, ended: &Ended);
    /// When background work besides deliveries is next due, given when the last
    /// delivery started (a readiness poll, a resend).
    fn chore_due(&self, _last_start: Option<Instant>) -> Option<Instant> {
        None
    }
    /// Does that work; may hand back an item to deliver.
    fn chore(&self) -> impl Future<Output = Option<Self::Item>> {
        async { None }
    }
}

/// Counters per outcome (plus `retry`) and the last-success gauge.
pub struct OutcomeMetrics {
    counters: [Counter; Outcome::ALL.len()],
    retry: Counter,
    last_success: Option<Gauge>,
}

/// The sender's shared state; [`Sender::offer`] never blocks.
pub struct Sender<S: Signal> {
    signal: S,
    /// The pending item: the only queue there is.
    slot: Mutex<Option<S::Item>>,
    notify: Notify,
    /// What the newest item offered asks for, and the last delivered.
    latest: AtomicU64,
    delivered: AtomicU64,
    metrics: OutcomeMetrics,
}

// === impl OutcomeMetrics ===

impl OutcomeMetrics {
    /// `metric{label=value, outcome=...}` for each of `outcomes` and `retry`, all at 0
    /// from the start so dashboards see the series.
    pub fn new(
        metric: &'static str,
        label: &'static str,
        value: &'static str,
        outcomes: &[Outcome],
        last_success: Option<Gauge>,
    ) -> Self {
        let handle = |outcome: &'static str| {
            let c = ::metrics::counter!(metric, label => value, "outcome" => outcome);
            c.increment(0);
            c
        };
        let counters = Outcome::ALL.map(|o| {
            if outcomes.contains(&o) {
                handle(o.as_str())
            } else {
                Counter::noop()
            }
        });
        Self {
            counters,
            retry: handle("retry"),
            last_success,
        }
    }

    fn ended(&self, outcome: Outcome) {
        if let Some(c) = self.counters.get(outcome as usize) {
            c.increment(1);
        }
        if matches!(outcome, Outcome::Ok | Outcome::Unchanged) {
            if let Some(g) = &self.last_success {
                g.set(prescale_proxy::reload::unix_now());
            }
        }
    }
}

// === impl Sender ===

impl<S: Signal> Sender<S> {
    pub fn new(signal: S, metrics: OutcomeMetrics) -> Self {
        Self {
            signal,
            slot: Mutex::new(None),
            notify: Notify::new(),
            latest: AtomicU64::new(NONE),
            delivered: AtomicU64::new(NONE),
            metrics,
        }
    }

    pub fn signal(&self) -> &S {
        &self.signal
    }

    /// Starts the sender loop on a thread of its own, on `rt`.
    pub fn spawn(
        self: &Arc<Self>,
        rt: tokio::runtime::Runtime,
        thread: String,
    ) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name(thread)
            .spawn(move || rt.block_on(me.run()))?;
        Ok(())
    }

    /// Takes the newest item; a pending one asking for something else was never sent:
    /// it ends `dropped`.
    pub fn offer(&self, item: S::Item) {
        let ask = self.signal.ask(&item);
        self.latest.store(ask, Ordering::Release);
        let delivered = self.delivered();
        let wanted = self.signal.wanted(ask, delivered);
        let replaced = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            if wanted {
                slot.replace(item)
            } else {
                // Already there: nothing to send, and anything pending is stale.
                slot.take()
            }
        };
        // Replacing an item asking the same merely coalesces.
        if let Some(old) = replaced.filter(|old| self.signal.ask(old) != ask) {
            let why = "replaced by a newer decision before it was sent".to_string();
            self.end(&old, None, Outcome::Dropped, 0, None, Some(why));
        }
        self.notify.notify_one();
    }

    /// What the last delivered item asked for.
    pub fn delivered(&self) -> Option<u64> {
        Some(self.delivered.load(Ordering::Acquire)).filter(|d| *d != NONE)
    }

    /// What the pending item asks for, if one is pending.
    pub fn pending(&self) -> Option<u64> {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|i| self.signal.ask(i))
    }

    #[cfg(test)]
    pub(crate) fn set_delivered(&self, ask: u64) {
        self.delivered.store(ask, Ordering::Release);
    }

    async fn run(self: Arc<Self>) {
        let mut jitter = Jitter::seeded();
        let mut last_start: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let next_send = last_start.map_or(now, |t| t + self.signal.min_interval());
            let pending = self.pending().is_some();
            if pending && now >= next_send {
                let next = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(item) = next {
                    // Checked again: it may have arrived before the last delivery ended.
                    if self.signal.wanted(self.signal.ask(&item), self.delivered()) {
                        last_start = Some(now);
                        self.deliver(item, &mut jitter).await;
                    }
                }
                continue;
            }
            let chore = self.signal.chore_due(last_start);
            if chore.is_some_and(|at| now >= at) {
                if let Some(item) = self.signal.chore().await {
                    self.offer(item);
                }
                continue;
            }
            let wake = [pending.then_some(next_send), chore]
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

    /// Sends one item until it is delivered, refused, out of retries, or superseded.
    async fn deliver(&self, item: S::Item, jitter: &mut Jitter) {
        let prepared = match self.signal.prepare(&item) {
            Ok(p) => p,
            Err(e) => return self.end(&item, None, Outcome::Failed, 0, None, Some(e)),
        };
        let ask = self.signal.ask(&item);
        let policy = self.signal.retry();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (status, error, asked_wait) = match self.signal.attempt(&prepared).await {
                Attempt::Done {
                    outcome,
                    status,
                    error,
                } => {
                    if matches!(outcome, Outcome::Ok | Outcome::Unchanged) {
                        self.delivered.store(ask, Ordering::Release);
                    }
                    return self.end(&item, Some(prepared), outcome, attempt, status, error);
                }
                Attempt::Retry {
                    status,
                    error,
                    retry_after,
                } => (status, error, retry_after),
            };
            if attempt > policy.retries {
                let p = Some(prepared);
                return self.end(&item, p, Outcome::Failed, attempt, status, Some(error));
            }
            let wait = asked_wait.unwrap_or_else(|| {
                backoff::delay(
                    attempt,
                    policy.backoff,
                    policy.max_backoff,
                    jitter.next_unit(),
                )
            });
            self.metrics.retry.increment(1);
            tracing::warn!(signal = self.signal.name(), attempt, status, %error, retry_in = ?wait,
                "not delivered; retrying");
            if !self.wait_unless_superseded(ask, wait).await {
                let why = Some("a newer decision replaced it while retrying".to_string());
                let p = Some(prepared);
                return self.end(&item, p, Outcome::Dropped, attempt, status, why);
            }
        }
    }

    /// Sleeps `wait`; false as soon as the latest item asks for something else.
    async fn wait_unless_superseded(&self, ask: u64, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let current = || self.latest.load(Ordering::Acquire) == ask;
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

    fn end(
        &self,
        item: &S::Item,
        prepared: Option<S::Prepared>,
        outcome: Outcome,
        attempts: u32,
        status: Option<u16>,
        error: Option<String>,
    ) {
        self.metrics.ended(outcome);
        let ended = Ended {
            outcome,
            attempts,
            status,
            error,
        };
        self.signal.finish(item, prepared, &ended);
    }
}

#[cfg(test)]
mod tests {
    //! The loop itself, on a signal whose answers are scripted (the receivers behind
    //! the real signals are exercised by tests/signals.rs, kube_scale.rs, anomalies.rs).
    use super::*;
    use prescale_proxy::clock::Stopwatch;
    use std::collections::VecDeque;

    const MS: Duration = Duration::from_millis(1);

    /// Answers attempts from a script (then `Ok`), and records what happened when.
    struct Scripted {
        answers: Mutex<VecDeque<Attempt>>,
        min_interval: Duration,
        retries: u32,
        clock: Stopwatch,
        /// (item, when the attempt started)
        attempts: Mutex<Vec<(u64, Duration)>>,
        ended: Mutex<Vec<(u64, Outcome, u32)>>,
    }

    impl Signal for Arc<Scripted> {
        type Item = u64;
        type Prepared = u64;
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn retry(&self) -> RetryPolicy {
            RetryPolicy {
                timeout: 100 * MS,
                retries: self.retries,
                backoff: 10 * MS,
                max_backoff: 20 * MS,
            }
        }
        fn min_interval(&self) -> Duration {
            self.min_interval
        }
        fn ask(&self, item: &u64) -> u64 {
            *item
        }
        fn prepare(&self, item: &u64) -> Result<u64, String> {
            Ok(*item)
        }
        async fn attempt(&self, item: &u64) -> Attempt {
            self.attempts
                .lock()
                .unwrap()
                .push((*item, self.clock.elapsed()));
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Attempt::Done {
                    outcome: Outcome::Ok,
                    status: Some(200),
                    error: None,
                })
        }
        fn finish(&self, item: &u64, _: Option<u64>, e: &Ended) {
            self.ended
                .lock()
                .unwrap()
                .push((*item, e.outcome, e.attempts));
        }
    }

    fn start(
        script: Vec<Attempt>,
        min_interval: Duration,
        retries: u32,
    ) -> Arc<Sender<Arc<Scripted>>> {
        let signal = Arc::new(Scripted {
            answers: Mutex::new(script.into()),
            min_interval,
            retries,
            clock: Stopwatch::start(),
            attempts: Mutex::default(),
            ended: Mutex::default(),
        });
        let metrics = OutcomeMetrics::new(
            "prescale_test_sends_total",
            "signal",
            "scripted",
            &Outcome::ALL,
            None,
        );
        let sender = Arc::new(Sender::new(signal, metrics));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        sender.spawn(rt, "scripted".into()).unwrap();
        sender
    }

    /// Waits (at most 5 s) until `n` deliveries ended.
    fn ended(s: &Sender<Arc<Scripted>>, n: usize) -> Vec<(u64, Outcome, u32)> {
        let waited = Stopwatch::start();
        loop {
            let e = s.signal().ended.lock().unwrap().clone();
            if e.len() >= n || waited.elapsed() > Duration::from_secs(5) {
                return e;
            }
            std::thread::sleep(5 * MS);
        }
    }

    fn retry_after(wait: Option<Duration>) -> Attempt {
        Attempt::Retry {
            status: Some(503),
            error: "receiver answered 503".into(),
            retry_after: wait,
        }
    }

    #[test]
    fn a_retry_waits_as_long_as_the_receiver_asks_not_the_backoff() {
        let s = start(vec![retry_after(Some(300 * MS))], Duration::ZERO, 3);
        s.offer(3);
        assert_eq!(ended(&s, 1), [(3, Outcome::Ok, 2)]);
        let at = s.signal().attempts.lock().unwrap().clone();
        let gap = at[1].1 - at[0].1;
        // The backoff alone would have waited 5-10 ms.
        assert!(gap >= 300 * MS, "{gap:?}");
    }

    #[test]
    fn a_newer_different_decision_abandons_a_delivery_still_retrying() {
        let script = (0..8).map(|_| retry_after(Some(200 * MS))).collect();
        let s = start(script, Duration::ZERO, 5);
        s.offer(3);
        let waited = Stopwatch::start();
        while s.signal().attempts.lock().unwrap().is_empty()
            && waited.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(5 * MS);
        }
        s.offer(4);
        let e = ended(&s, 2);
        assert_eq!(e[0], (3, Outcome::Dropped, 1), "{e:?}");
        // The newer one is then tried until its retries run out.
        assert_eq!(e[1], (4, Outcome::Failed, 6), "{e:?}");
    }

    #[test]
    fn while_rate_limited_only_the_latest_decision_is_sent() {
        let s = start(Vec::new(), 400 * MS, 3);
        s.offer(1);
        assert_eq!(ended(&s, 1), [(1, Outcome::Ok, 1)]);
        s.offer(2);
        s.offer(3);
        let e = ended(&s, 3);
        assert_eq!(
            e[1..],
            [(2, Outcome::Dropped, 0), (3, Outcome::Ok, 1)],
            "{e:?}"
        );
        let at = s.signal().attempts.lock().unwrap().clone();
        assert_eq!(at.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 3]);
        assert!(at[1].1 - at[0].1 >= 400 * MS, "{at:?}");
    }
}
