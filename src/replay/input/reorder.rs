//! Puts slightly out-of-order log lines back in time order. Servers write a line when a
//! request ends but stamp it with its start, so lines run backwards by up to the longest
//! request; a min-heap holds records until nothing within the window can precede them.

use super::Record;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub(super) enum Placed {
    InOrder,
    /// Older than the newest record seen, but within the window: emitted in order.
    Reordered,
    /// More than the window behind the newest record seen: dropped.
    TooLate,
}

/// Records are held while they are within `window` seconds of the newest one, so memory
/// is the arrival rate times the window (60 s at 10k req/s is 600k records).
pub(super) struct Reorder {
    heap: BinaryHeap<Entry>,
    window: f64,
    newest: f64,
    seq: u64,
}

impl Reorder {
    pub(super) fn new(window: f64) -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            window,
            newest: f64::NEG_INFINITY,
            seq: 0,
        }
    }

    pub(super) fn push(&mut self, record: Record) -> Placed {
        let ts = record.ts();
        if ts < self.newest - self.window {
            return Placed::TooLate;
        }
        let placed = if ts < self.newest {
            Placed::Reordered
        } else {
            self.newest = ts;
            Placed::InOrder
        };
        // The sequence number keeps equal timestamps in file order.
        self.seq += 1;
        self.heap.push(Entry {
            ts,
            seq: self.seq,
            record,
        });
        placed
    }

    /// The oldest record, once it is more than the window behind the newest: anything
    /// that could still precede it would be dropped as too late.
    pub(super) fn pop_ready(&mut self) -> Option<Record> {
        let cutoff = self.newest - self.window;
        if self.heap.peek()?.ts < cutoff {
            self.heap.pop().map(|e| e.record)
        } else {
            None
        }
    }

    /// The oldest record regardless of the window, at end of input.
    pub(super) fn pop_any(&mut self) -> Option<Record> {
        self.heap.pop().map(|e| e.record)
    }
}

struct Entry {
    ts: f64,
    seq: u64,
    record: Record,
}

impl Ord for Entry {
    // Reversed, so that the max-heap pops the oldest (then first-read) entry.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .ts
            .total_cmp(&self.ts)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(ts: f64, n: f64) -> Record {
        Record::Count {
            ts,
            count: n,
            interval: 1.0,
        }
    }

    fn run(window: f64, input: &[f64]) -> (Vec<f64>, usize, usize) {
        let mut r = Reorder::new(window);
        let (mut out, mut reordered, mut late) = (Vec::new(), 0, 0);
        for (i, ts) in input.iter().enumerate() {
            match r.push(count(*ts, i as f64)) {
                Placed::InOrder => {}
                Placed::Reordered => reordered += 1,
                Placed::TooLate => late += 1,
            }
            while let Some(rec) = r.pop_ready() {
                out.push(rec.ts());
            }
        }
        while let Some(rec) = r.pop_any() {
            out.push(rec.ts());
        }
        (out, reordered, late)
    }

    #[test]
    fn emits_in_time_order_within_the_window() {
        let (out, reordered, late) = run(60.0, &[10.0, 5.0, 30.0, 20.0, 100.0, 45.0, 200.0]);
        assert_eq!(out, [5.0, 10.0, 20.0, 30.0, 45.0, 100.0, 200.0]);
        assert_eq!((reordered, late), (3, 0));
    }

    #[test]
    fn drops_what_is_further_behind_than_the_window() {
        let (out, reordered, late) = run(60.0, &[100.0, 200.0, 139.0, 141.0, 300.0]);
        assert_eq!(out, [100.0, 141.0, 200.0, 300.0]);
        assert_eq!((reordered, late), (1, 1));
    }

    #[test]
    fn equal_timestamps_keep_file_order() {
        let mut r = Reorder::new(0.0);
        for i in 0..5 {
            r.push(count(7.0, f64::from(i)));
        }
        let order: Vec<f64> = std::iter::from_fn(|| r.pop_any())
            .map(|rec| match rec {
                Record::Count { count, .. } => count,
                Record::Request(_) => -1.0,
            })
            .collect();
        assert_eq!(order, [0.0, 1.0, 2.0, 3.0, 4.0]);
    }
}
