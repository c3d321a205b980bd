//! Runtime per-source overrides, the lever anomaly remediation pulls: demote one source
//! to a sheddable tier, rate-limit it or reject it, until an expiry. A bounded table
//! the hot path reads without a lock in O(1); written rarely, off the data path.
//!
//! Sources are keyed by [`SourceOverrides::identity_hash`], a hash of the identity the
//! proxy admits by (mTLS peer, vouched header or client address) under a per-process
//! random key: the proxy records the same hash in its profiler samples, so an anomaly
//! about `source:<hash>` names exactly the requests an override applies to, and a
//! client cannot pick an identity that collides with someone else's.
//!
//! Layout: [`MAX_OVERRIDES`] slots in sets of [`WAYS`]; a source lives in the set its
//! hash picks. A slot is a key word and a state word (kind, tier, a tag of the key and
//! the expiry packed in 64 bits), so a reader sees an override whole or not at all. A
//! reader that loads a key while a writer recycles that slot for another source may, for
//! one request, read the newcomer's state: the tag (10 bits of the key) rejects all but
//! 1 in 1024 of those.

use super::table::Gcra;
use super::WAYS;
use crate::tiers::TierId;
use crate::Micros;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Mutex;

/// Sources overridden at once, at most; fewer when their hashes crowd one set of
/// [`WAYS`] slots (then [`SourceOverrides::set`] refuses with [`OverridesFull`]).
pub const MAX_OVERRIDES: usize = 64;

const SETS: usize = MAX_OVERRIDES / WAYS;

/// What an override does to every request of its source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceOverride {
    /// Admit its requests as this tier instead of their own, when this tier is less
    /// important (a higher `priority` number); never a promotion.
    Demote(TierId),
    /// At most `rps` requests per second (a burst of one second's worth); beyond it,
    /// 429 with reason `anomaly`.
    RateLimit { rps: f64 },
    /// Refuse every request: 429 with reason `anomaly`.
    Reject,
}

/// What the hot path must do for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrideEffect {
    /// Admit it as this tier (the caller checks it is a demotion).
    Demote(TierId),
    /// Refuse it; `wait` µs until a rate-limited source conforms again (0: rejected).
    Refuse { wait: Micros },
}

/// No slot left in the set of this source's hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no free source override slot ({MAX_OVERRIDES} in all, {WAYS} per hash set)")]
pub struct OverridesFull(());

/// One override as `GET /v1/tiers` (and the remediation log) shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverrideEntry {
    pub source: u64,
    pub action: SourceOverride,
    pub until: Micros,
}

/// The table. Readers never block; writers serialise on a mutex.
#[derive(Debug)]
pub struct SourceOverrides {
    hasher: RandomState,
    slots: Box<[Slot]>,
    /// Slots holding a key (expired ones too, until cleared or reused): 0 lets the hot
    /// path skip hashing altogether.
    used: AtomicU64,
    write: Mutex<()>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The source's hash, never 0; 0 marks a free slot.
    key: AtomicU64,
    /// Packed kind, tier, key tag and expiry; 0: no override.
    state: AtomicU64,
    /// `RateLimit` rate, as f64 bits.
    rps: AtomicU64,
    /// GCRA theoretical arrival time of a rate-limited source, in µs.
    tat: AtomicU64,
}

const KIND_DEMOTE: u64 = 1;
const KIND_RATE: u64 = 2;
const KIND_REJECT: u64 = 3;
const TAG_BITS: u32 = 10;
/// Expiries beyond 2^48 µs (about 8.9 years of the caller's clock) are capped there.
const UNTIL_MAX: u64 = (1 << 48) - 1;

// === impl SourceOverrides ===

impl Default for SourceOverrides {
    fn default() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl SourceOverrides {
    /// An empty table whose source hashes use `hasher` (kept across config reloads so
    /// hashes stay stable for the process's life).
    pub fn with_hasher(hasher: RandomState) -> Self {
        Self {
            hasher,
            slots: std::iter::repeat_with(Slot::default)
                .take(MAX_OVERRIDES)
                .collect(),
            used: AtomicU64::new(0),
            write: Mutex::new(()),
        }
    }

    pub(crate) fn hasher(&self) -> &RandomState {
        &self.hasher
    }

    /// The hash that keys `source` here (never 0). O(length of `source`).
    pub fn identity_hash(&self, source: &str) -> u64 {
        self.hasher.hash_one(source) | 1
    }

    /// What to do with a request of `source` at `now`, if it is overridden. O(1): a
    /// load when the table is empty, else a hash and at most [`WAYS`] slots.
    pub fn effect(&self, source: &str, now: Micros) -> Option<OverrideEffect> {
        if self.used.load(Acquire) == 0 {
            return None;
        }
        let key = self.identity_hash(source);
        let slot = self
            .bucket(key)
            .iter()
            .find(|s| s.key.load(Acquire) == key)?;
        let (kind, tier) = decode(slot.state.load(Acquire), key, now)?;
        match kind {
            KIND_DEMOTE => TierId::from_index(tier).map(OverrideEffect::Demote),
            KIND_REJECT => Some(OverrideEffect::Refuse { wait: 0 }),
            KIND_RATE => {
                let rps = f64::from_bits(slot.rps.load(Acquire));
                let gcra = Gcra {
                    interval: 1e6 / rps.max(1e-3),
                    burst: rps.max(1.0),
                };
                gcra.take(&slot.tat, 1.0, now)
                    .err()
                    .map(|wait| OverrideEffect::Refuse { wait })
            }
            _ => None,
        }
    }

    /// Overrides `source` (an [`identity_hash`](Self::identity_hash)) with `action`
    /// until `until`, replacing any override it had. A slot whose override expired
    /// before `now` is reused.
    pub fn set(
        &self,
        source: u64,
        action: SourceOverride,
        now: Micros,
        until: Micros,
    ) -> Result<(), OverridesFull> {
        let key = source | 1;
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let set = self.bucket(key);
        let (kind, tier, rps) = match action {
            SourceOverride::Demote(t) => (KIND_DEMOTE, t.index(), 0.0),
            SourceOverride::RateLimit { rps } => (KIND_RATE, 0, rps),
            SourceOverride::Reject => (KIND_REJECT, 0, 0.0),
        };
        let state = encode(kind, tier, key, until);
        if let Some(slot) = set.iter().find(|s| s.key.load(Relaxed) == key) {
            let was = decode(slot.state.load(Relaxed), key, now).map(|(k, _)| k);
            let old_rps = f64::from_bits(slot.rps.load(Relaxed));
            if was != Some(KIND_RATE) || old_rps != rps {
                slot.tat.store(0, Relaxed);
            }
            slot.rps.store(rps.to_bits(), Release);
            slot.state.store(state, Release);
            return Ok(());
        }
        let free = set.iter().find(|s| s.key.load(Relaxed) == 0);
        let slot = match free {
            Some(s) => {
                self.used.fetch_add(1, Release);
                s
            }
            None => set
                .iter()
                .find(|s| decode(s.state.load(Relaxed), s.key.load(Relaxed), now).is_none())
                .ok_or(OverridesFull(()))?,
        };
        // Retire the old tenant's state before the key changes hands.
        slot.state.store(0, Release);
        slot.rps.store(rps.to_bits(), Release);
        slot.tat.store(0, Release);
        slot.key.store(key, Release);
        slot.state.store(state, Release);
        Ok(())
    }

    /// Ends the override of `source`; false if it had none.
    pub fn clear(&self, source: u64) -> bool {
        let key = source | 1;
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = self.bucket(key).iter().find(|s| s.key.load(Relaxed) == key) else {
            return false;
        };
        slot.state.store(0, Release);
        slot.key.store(0, Release);
        self.used.fetch_sub(1, Release);
        true
    }

    /// Overrides in force at `now` (allocates; not for the hot path).
    pub fn list(&self, now: Micros) -> Vec<OverrideEntry> {
        self.slots
            .iter()
            .filter_map(|s| {
                let key = s.key.load(Acquire);
                let state = s.state.load(Acquire);
                let (kind, tier) = decode(state, key, now)?;
                let action = match kind {
                    KIND_DEMOTE => SourceOverride::Demote(TierId::from_index(tier)?),
                    KIND_RATE => SourceOverride::RateLimit {
                        rps: f64::from_bits(s.rps.load(Acquire)),
                    },
                    _ => SourceOverride::Reject,
                };
                Some(OverrideEntry {
                    source: key,
                    action,
                    until: state >> 16,
                })
            })
            .collect()
    }

    /// Copies the overrides of `old` in force at `now` (a config reload), demotions
    /// re-targeted through `tier` (old id → new id; `None` drops them). Both tables must
    /// share a hasher (see [`with_hasher`](Self::with_hasher)).
    pub fn inherit(
        &self,
        old: &SourceOverrides,
        now: Micros,
        tier: impl Fn(TierId) -> Option<TierId>,
    ) {
        for e in old.list(now) {
            let action = match e.action {
                SourceOverride::Demote(t) => match tier(t) {
                    Some(t) => SourceOverride::Demote(t),
                    None => continue,
                },
                other => other,
            };
            // The same number of slots in the same sets: it always fits.
            let _ = self.set(e.source, action, now, e.until);
        }
    }

    fn bucket(&self, key: u64) -> &[Slot] {
        let start = ((key >> 1) % SETS as u64) as usize * WAYS;
        self.slots.get(start..start + WAYS).unwrap_or(&[])
    }
}

/// `kind` (2 bits) | `tier` (4 bits) | tag of `key` (10 bits) | `until` (48 bits).
fn encode(kind: u64, tier: usize, key: u64, until: Micros) -> u64 {
    kind | ((tier as u64 & 0xf) << 2) | (tag(key) << 6) | (until.min(UNTIL_MAX) << 16)
}

/// The kind and tier of a state word that belongs to `key` and has not expired at
/// `now`.
fn decode(state: u64, key: u64, now: Micros) -> Option<(u64, usize)> {
    let kind = state & 0b11;
    let ok = kind != 0 && (state >> 6) & ((1 << TAG_BITS) - 1) == tag(key) && state >> 16 > now;
    ok.then_some((kind, ((state >> 2) & 0xf) as usize))
}

fn tag(key: u64) -> u64 {
    (key >> 40) & ((1 << TAG_BITS) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    fn tier(i: usize) -> TierId {
        TierId::from_index(i).unwrap()
    }

    #[test]
    fn an_override_applies_to_its_source_only_until_it_expires_or_is_cleared() {
        let t = SourceOverrides::default();
        // Empty: nothing is even hashed.
        assert_eq!(t.effect("10.0.0.7", 0), None);
        let bad = t.identity_hash("10.0.0.7");
        assert_ne!(bad, 0);
        assert_eq!(bad, t.identity_hash("10.0.0.7"), "stable within a table");

        t.set(bad, SourceOverride::Demote(tier(2)), 0, 60 * S)
            .unwrap();
        assert_eq!(
            t.effect("10.0.0.7", S),
            Some(OverrideEffect::Demote(tier(2)))
        );
        // Another source is untouched.
        assert_eq!(t.effect("10.0.0.8", S), None);
        // Expired: ignored, though still in its slot until reused or cleared.
        assert_eq!(t.effect("10.0.0.7", 61 * S), None);
        assert!(t.list(61 * S).is_empty());

        // Replaced by a rejection, then cleared.
        t.set(bad, SourceOverride::Reject, 61 * S, 120 * S).unwrap();
        assert_eq!(
            t.effect("10.0.0.7", 62 * S),
            Some(OverrideEffect::Refuse { wait: 0 })
        );
        let listed = t.list(62 * S);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].action, SourceOverride::Reject);
        assert_eq!(listed[0].until, 120 * S);
        assert!(t.clear(bad));
        assert!(!t.clear(bad));
        assert_eq!(t.effect("10.0.0.7", 62 * S), None);
    }

    #[test]
    fn a_rate_limited_source_gets_its_rate_and_no_more() {
        let t = SourceOverrides::default();
        let src = t.identity_hash("scraper");
        t.set(src, SourceOverride::RateLimit { rps: 2.0 }, 0, 3600 * S)
            .unwrap();
        // A burst of two (one second's worth), then one every 500 ms.
        assert_eq!(t.effect("scraper", 10 * S), None);
        assert_eq!(t.effect("scraper", 10 * S), None);
        assert_eq!(
            t.effect("scraper", 10 * S),
            Some(OverrideEffect::Refuse { wait: 500_000 })
        );
        assert_eq!(t.effect("scraper", 10 * S + 500_000), None);
        // Refreshing the same limit keeps its bucket; a new rate starts a fresh one.
        t.set(
            src,
            SourceOverride::RateLimit { rps: 2.0 },
            10 * S,
            3600 * S,
        )
        .unwrap();
        assert!(t.effect("scraper", 10 * S + 500_000).is_some());
        t.set(
            src,
            SourceOverride::RateLimit { rps: 4.0 },
            10 * S,
            3600 * S,
        )
        .unwrap();
        assert_eq!(t.effect("scraper", 10 * S + 500_000), None);
    }

    #[test]
    fn the_table_is_bounded_and_reuses_expired_slots() {
        let t = SourceOverrides::default();
        let mut placed = 0;
        let mut refused = 0;
        for i in 0..10 * MAX_OVERRIDES {
            let h = t.identity_hash(&format!("client-{i}"));
            match t.set(h, SourceOverride::Reject, 0, 10 * S) {
                Ok(()) => placed += 1,
                Err(OverridesFull(())) => refused += 1,
            }
        }
        // Every slot filled, and not one more.
        assert_eq!(placed, MAX_OVERRIDES);
        assert_eq!(refused, 9 * MAX_OVERRIDES);
        assert_eq!(t.list(0).len(), MAX_OVERRIDES);
        // Once they expire, newcomers take their slots.
        let h = t.identity_hash("late");
        t.set(h, SourceOverride::Reject, 11 * S, 20 * S).unwrap();
        assert_eq!(
            t.effect("late", 12 * S),
            Some(OverrideEffect::Refuse { wait: 0 })
        );
        assert_eq!(t.list(12 * S).len(), 1);
    }

    #[test]
    fn a_reload_keeps_overrides_with_demotions_retargeted_by_the_caller() {
        let old = SourceOverrides::default();
        let (a, b) = (old.identity_hash("a"), old.identity_hash("b"));
        old.set(a, SourceOverride::Demote(tier(1)), 0, 10 * S)
            .unwrap();
        old.set(b, SourceOverride::Demote(tier(3)), 0, 10 * S)
            .unwrap();
        let new = SourceOverrides::with_hasher(old.hasher().clone());
        // Tier 1 is now at index 0; tier 3 is gone.
        new.inherit(&old, S, |t| (t.index() == 1).then(|| tier(0)));
        assert_eq!(new.identity_hash("a"), a);
        assert_eq!(new.effect("a", S), Some(OverrideEffect::Demote(tier(0))));
        assert_eq!(new.effect("b", S), None);
    }
}
