//! The short admission queue: a request of a tier with `queue: true` that finds its
//! cluster full waits here for a slot instead of being refused, most important tier
//! first, with CoDel deadlines (see [`QueueConfig`](super::QueueConfig) and `Inner`).
//!
//! Why it exists: an upstream queues in arrival order, so a critical request admitted
//! over the limit waits behind every batch request already there. Holding the excess
//! here instead lets the next freed slot go to the most important waiter, and keeps the
//! upstream's own queue short for everyone.
//!
//! Lock-free while empty: a released permit reads one atomic and goes on. The lock is
//! taken only when something waits (overload), and holds at most `max_waiting` entries.
//! Slots are handed over by the releasing thread: it takes the slot *for* the best
//! waiter and wakes it with the permit, so a new arrival cannot steal it.

use super::decision::{Decision, Rejection};
use super::permit::Permit;
use super::{DecisionKind, Shared};
use crate::tiers::{TierId, MAX_TIERS};
use crate::Micros;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// One cluster's waiting requests.
#[derive(Debug, Default)]
pub(super) struct WaitQueue {
    /// Waiters now; read without the lock by every released permit.
    len: AtomicU32,
    /// Waiters by tier (changed under the lock, read without it by arrivals).
    by_tier: [AtomicU32; MAX_TIERS],
    inner: Mutex<Inner>,
}

/// CoDel's test for a standing queue: over each `interval`, the shortest wait of a
/// request that got a slot (0 if the queue was empty at some point). Above `target`,
/// the queue is standing: even the luckiest request waited, so it is overload, not a
/// burst; new waiters then get `target` and the newest is served first.
#[derive(Debug, Default)]
struct Inner {
    waiters: Vec<Arc<Waiter>>,
    next_seq: u64,
    /// The latest `now` seen by a queueing request: grants happen when a permit is
    /// dropped, which has no clock, so they read the time from here (under overload
    /// requests queue often, so it lags by an inter-arrival time at most).
    clock: Micros,
    window_start: Micros,
    /// Shortest wait in this window; `None`: nobody got a slot yet.
    window_min: Option<Micros>,
    /// Verdict of the last full window.
    standing: bool,
}

#[derive(Debug)]
struct Waiter {
    id: TierId,
    tier: usize,
    priority: u8,
    need: f64,
    seq: u64,
    since: Micros,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Waiting(Option<Waker>),
    Granted(Permit),
    Done,
}

/// A request waiting for a slot. Await it for the [`Permit`]; at
/// [`deadline`](Self::deadline) call [`expire`](Self::expire). Dropping it leaves the
/// queue (a client that went away); a slot granted meanwhile is freed.
#[derive(Debug)]
#[must_use = "dropping a ticket leaves the queue"]
pub struct Ticket {
    shared: Arc<Shared>,
    cluster: usize,
    waiter: Arc<Waiter>,
    deadline: Micros,
    /// The answer if the wait ends without a slot.
    rejection: Rejection,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent data here (every
    // critical section below is a few field updates); keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl WaitQueue ===

impl WaitQueue {
    /// Requests waiting now.
    pub(super) fn waiting(&self) -> u32 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether anything waits (one load: the check every released permit makes).
    pub(super) fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    /// Counts a waiter of `tier` in (`1`) or out (`-1`); call with the lock held.
    fn add(&self, tier: usize, delta: i32) {
        let f = |a: &AtomicU32| {
            if delta > 0 {
                a.fetch_add(1, Ordering::SeqCst);
            } else {
                a.fetch_sub(1, Ordering::SeqCst);
            }
        };
        f(&self.len);
        if let Some(a) = self.by_tier.get(tier) {
            f(a);
        }
    }
}

// === impl Shared (queueing) ===

impl Shared {
    /// Queues a refused request of a queueing tier: `None` when the queue is full. If a
    /// slot was freed while it got here, admits it at once instead.
    pub(super) fn enqueue(
        self: &Arc<Self>,
        tier: usize,
        cluster: usize,
        need: f64,
        rejection: Rejection,
        now: Micros,
    ) -> Option<Decision> {
        let c = self.clusters.get(cluster)?;
        let priority = self.plans.get(tier)?.priority;
        let mut q = lock(&c.queue.inner);
        if q.waiters.len() >= self.queue.max_waiting as usize {
            return None;
        }
        q.clock = q.clock.max(now);
        let standing = q.roll(now, &self.queue);
        let wait = match self.queue.burst_wait {
            Some(bound) => bound,
            None if standing => self.queue.target,
            None => self.queue.interval,
        };
        let waiter = Arc::new(Waiter {
            id: rejection.tier,
            tier,
            priority,
            need,
            seq: q.next_seq,
            since: now,
            state: Mutex::new(State::Waiting(None)),
        });
        q.next_seq += 1;
        q.waiters.push(waiter.clone());
        c.queue.add(tier, 1);
        // Pairs with the fence in `Permit::leave`: either that release sees this waiter
        // and serves the queue, or the retry below sees its freed slot.
        fence(Ordering::SeqCst);
        self.serve_locked(cluster, &mut q);
        drop(q);
        Some(Decision::Wait(Ticket {
            shared: self.clone(),
            cluster,
            waiter,
            deadline: now.saturating_add(wait),
            rejection,
        }))
    }

    /// Hands freed slots of `cluster` to its waiters, best first, while slots last.
    pub(super) fn serve(self: &Arc<Self>, cluster: usize) {
        let Some(c) = self.clusters.get(cluster) else {
            return;
        };
        let mut q = lock(&c.queue.inner);
        self.serve_locked(cluster, &mut q);
    }

    fn serve_locked(self: &Arc<Self>, cluster: usize, q: &mut Inner) {
        let Some(c) = self.clusters.get(cluster) else {
            return;
        };
        while let Some(i) = q.best(self.queue.burst_wait.is_none()) {
            let Some(w) = q.waiters.get(i).cloned() else {
                return;
            };
            let Some(plan) = self.plans.get(w.tier) else {
                return;
            };
            let Some(inflight) = self.take(w.tier, plan, w.need, false) else {
                return;
            };
            q.waiters.swap_remove(i);
            c.queue.add(w.tier, -1);
            q.served(w.since);
            self.counters.count(w.tier, DecisionKind::Admitted, None);
            self.counters.count_queued(w.tier);
            let permit = Permit::new(self.clone(), w.id, cluster, inflight, None);
            let mut state = lock(&w.state);
            if let State::Waiting(waker) = &mut *state {
                let waker = waker.take();
                *state = State::Granted(permit);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
    }

    /// Whether a request of `priority` arriving on `cluster` must leave the next slot
    /// to a waiter: one of a more important tier waits, or (`queues`: it would wait
    /// itself) one of the same tier level, which came first.
    /// No lock: one load when nothing waits, else one per tier.
    pub(super) fn queued_ahead(&self, cluster: usize, priority: u8, queues: bool) -> bool {
        let Some(c) = self.clusters.get(cluster) else {
            return false;
        };
        if c.queue.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.plans.iter().zip(&c.queue.by_tier).any(|(plan, n)| {
            (plan.priority < priority || (queues && plan.priority == priority))
                && n.load(Ordering::Relaxed) > 0
        })
    }
}

// === impl Inner ===

impl Inner {
    /// Closes the window if `interval` has passed; returns whether the queue stands.
    fn roll(&mut self, now: Micros, cfg: &super::QueueSettings) -> bool {
        if self.waiters.is_empty() {
            // Empty: nothing stands, and this window starts clean.
            self.window_min = Some(0);
        }
        if now.saturating_sub(self.window_start) >= cfg.interval {
            // Nobody got a slot for a whole interval while some waited: standing.
            self.standing = self.window_min.is_none_or(|m| m > cfg.target);
            self.window_start = now;
            self.window_min = None;
        }
        self.standing
    }

    /// A waiter that came at `since` got a slot now.
    fn served(&mut self, since: Micros) {
        let waited = self.clock.saturating_sub(since);
        self.window_min = Some(self.window_min.map_or(waited, |m| m.min(waited)));
        if self.waiters.is_empty() {
            self.window_min = Some(0);
        }
    }

    /// The waiter to serve next: most important tier first; within a tier the oldest,
    /// or the newest while the queue is standing (adaptive LIFO: under sustained
    /// overload the freshest request is the one whose client still waits).
    /// Without a latency objective (`codel` false) always the oldest: a burst's
    /// requests all get their turn within the bound.
    fn best(&self, codel: bool) -> Option<usize> {
        let lifo = codel && self.standing;
        self.waiters
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| {
                let order = if lifo { u64::MAX - w.seq } else { w.seq };
                (w.priority, order)
            })
            .map(|(i, _)| i)
    }
}

// === impl Ticket ===

impl Ticket {
    /// When to give up (same clock as `now`), set by the CoDel rule at arrival.
    pub fn deadline(&self) -> Micros {
        self.deadline
    }

    /// The request's tier.
    pub fn tier(&self) -> TierId {
        self.rejection.tier
    }

    /// Ends the wait: the permit if a slot came in the meantime, else the refusal (now
    /// counted, with the reason the request was first refused for).
    pub fn expire(self) -> Result<Permit, Rejection> {
        match self.leave() {
            Some(permit) => Ok(permit),
            None => {
                let r = self.rejection;
                self.shared
                    .counters
                    .count(r.tier.index(), DecisionKind::Rejected, Some(r.reason));
                Err(r)
            }
        }
    }

    /// Leaves the queue; returns the permit if one was granted and not yet taken.
    fn leave(&self) -> Option<Permit> {
        if let Some(c) = self.shared.clusters.get(self.cluster) {
            let mut q = lock(&c.queue.inner);
            if let Some(i) = q.waiters.iter().position(|w| Arc::ptr_eq(w, &self.waiter)) {
                q.waiters.swap_remove(i);
                c.queue.add(self.waiter.tier, -1);
                if q.waiters.is_empty() {
                    q.window_min = Some(0);
                }
            }
        }
        let mut state = lock(&self.waiter.state);
        match std::mem::replace(&mut *state, State::Done) {
            State::Granted(p) => Some(p),
            State::Waiting(_) | State::Done => None,
        }
    }
}

impl Future for Ticket {
    type Output = Permit;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let mut state = lock(&self.waiter.state);
        match std::mem::replace(&mut *state, State::Done) {
            State::Granted(p) => Poll::Ready(p),
            State::Waiting(_) => {
                *state = State::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            // Polled after completion: never woken again.
            State::Done => Poll::Pending,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Outside every lock: dropping a permit may serve the queue.
        drop(self.leave());
    }
}
