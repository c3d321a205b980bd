//! A bounded heavy-hitters counter (Space-Saving, Metwally et al. 2005): the top K
//! keys of an unbounded stream in O(K) memory. Hostile cardinality (a million distinct
//! paths) only churns the tail; it never grows the table.

use std::collections::HashMap;

/// Counts at most `cap` keys; a newcomer replaces the smallest entry and inherits its
/// count (so counts are upper bounds, exact for keys that never left).
pub struct TopK<K> {
    cap: usize,
    counts: HashMap<K, u64>,
    /// Total of everything added, kept and evicted alike.
    total: u64,
}

// === impl TopK ===

impl<K: std::hash::Hash + Eq + Clone> TopK<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            counts: HashMap::with_capacity(cap.max(1)),
            total: 0,
        }
    }

    /// Adds `n` to `key`; returns the key evicted to make room, if any.
    pub fn add(&mut self, key: K, n: u64) -> Option<K> {
        self.total += n;
        if let Some(c) = self.counts.get_mut(&key) {
            *c += n;
            return None;
        }
        if self.counts.len() < self.cap {
            self.counts.insert(key, n);
            return None;
        }
        let (victim, floor) = self
            .counts
            .iter()
            .min_by_key(|(_, c)| **c)
            .map(|(k, c)| (k.clone(), *c))?;
        self.counts.remove(&victim);
        self.counts.insert(key, floor + n);
        Some(victim)
    }

    pub fn get(&self, key: &K) -> Option<u64> {
        self.counts.get(key).copied()
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The `n` largest entries, largest first.
    pub fn top(&self, n: usize) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64)> = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_heavy_hitters_within_its_cap_under_a_flood_of_new_keys() {
        let mut t = TopK::new(8);
        for round in 0..1000u64 {
            // Two heavy keys among a stream of keys seen once.
            t.add(u64::MAX, 5);
            t.add(u64::MAX - 1, 3);
            t.add(round, 1);
        }
        assert_eq!(t.len(), 8);
        assert_eq!(t.total(), 9000);
        let top = t.top(2);
        assert_eq!(top[0].0, u64::MAX);
        assert_eq!(top[1].0, u64::MAX - 1);
        assert_eq!(t.get(&u64::MAX), Some(5000));
    }
}
