//! A replica pool in trace time: replicas are requested, become ready after a start-up
//! delay, and are removed newest-first (pending ones before ready ones, as a
//! Deployment's scale-down removes unready pods first).

use std::collections::VecDeque;

/// Seconds since the start of the trace.
pub type Sec = u64;

#[derive(Clone, Debug)]
pub struct Pool {
    ready: u32,
    /// Ready-at times of requested replicas still starting, oldest request first.
    pending: VecDeque<Sec>,
    start_delay: Sec,
    /// Extra start-up delay spread over [0, jitter] deterministically per replica.
    jitter: Sec,
    requests: u64,
    /// Actions taken: (time, +1 up / -1 down).
    last_action: Option<(Sec, i8)>,
    pub actions: u64,
    pub reversals: u64,
}

/// An action opposite to the previous one within this window counts as a reversal.
pub const REVERSAL_WINDOW: Sec = 600;

impl Pool {
    /// A pool that starts with `ready` replicas already serving.
    pub fn new(ready: u32, start_delay: Sec, jitter: Sec) -> Self {
        Self {
            ready,
            pending: VecDeque::new(),
            start_delay,
            jitter,
            requests: 0,
            last_action: None,
            actions: 0,
            reversals: 0,
        }
    }

    pub fn ready(&self) -> u32 {
        self.ready
    }

    /// Replicas that exist (ready or starting): what replica-hours are billed on.
    pub fn requested(&self) -> u32 {
        self.ready + self.pending.len() as u32
    }

    /// Replicas that finished starting by `now` become ready.
    pub fn advance(&mut self, now: Sec) {
        // Jitter makes ready times non-monotone in request order: scan them all.
        let before = self.pending.len();
        self.pending.retain(|at| *at > now);
        self.ready += (before - self.pending.len()) as u32;
    }

    /// Moves the pool to `desired` replicas; returns whether anything changed.
    pub fn scale_to(&mut self, desired: u32, now: Sec) -> bool {
        let current = self.requested();
        if desired == current {
            return false;
        }
        let direction: i8 = if desired > current { 1 } else { -1 };
        if desired > current {
            for _ in current..desired {
                self.requests += 1;
                let jitter = if self.jitter == 0 {
                    0
                } else {
                    // A fixed, well-mixed sequence: the same run gives the same answer.
                    self.requests.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (self.jitter + 1)
                };
                self.pending.push_back(now + self.start_delay + jitter);
            }
        } else {
            let mut remove = current - desired;
            while remove > 0 && self.pending.pop_back().is_some() {
                remove -= 1;
            }
            self.ready -= remove.min(self.ready);
        }
        self.actions += 1;
        if let Some((at, dir)) = self.last_action {
            if dir != direction && now.saturating_sub(at) <= REVERSAL_WINDOW {
                self.reversals += 1;
            }
        }
        self.last_action = Some((now, direction));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_become_ready_after_the_start_delay() {
        let mut p = Pool::new(2, 120, 0);
        assert!(p.scale_to(5, 10));
        assert_eq!((p.ready(), p.requested()), (2, 5));
        p.advance(129);
        assert_eq!(p.ready(), 2);
        p.advance(130);
        assert_eq!(p.ready(), 5);
    }

    #[test]
    fn scale_down_removes_starting_replicas_first() {
        let mut p = Pool::new(3, 60, 0);
        p.scale_to(6, 0);
        p.scale_to(4, 1);
        assert_eq!((p.ready(), p.requested()), (3, 4));
        p.scale_to(1, 2);
        assert_eq!((p.ready(), p.requested()), (1, 1));
        assert_eq!(p.actions, 3);
        // up then down within the window: one reversal; down then down: none.
        assert_eq!(p.reversals, 1);
        assert!(!p.scale_to(1, 3));
    }

    #[test]
    fn jitter_spreads_ready_times_within_bounds() {
        let mut p = Pool::new(0, 100, 50);
        p.scale_to(20, 0);
        p.advance(99);
        assert_eq!(p.ready(), 0);
        p.advance(150);
        assert_eq!(p.ready(), 20);
    }
}
