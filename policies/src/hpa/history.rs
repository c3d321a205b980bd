//! What the HPA remembers between syncs: its unstabilised recommendations and the scale
//! events it made, each timestamped (upstream: `timestampedRecommendation`,
//! `timestampedScaleEvent`).
//!
//! Timing convention, used by every window and period here: a record counts while its
//! age is *less than* the window. Upstream compares `time.Now()` stamps taken at slightly
//! different moments of a sync, and its resyncs land a little after the period (the
//! queue re-adds a key only once it is processed), so a record from exactly one window
//! ago has always aged past the window by the time it is read. Stamping a sync with one
//! `now` and excluding age == window reproduces that for a driver that steps exactly
//! 15 s. Upstream's legacy `stabilizeRecommendation` literally keeps a record aged
//! exactly the window (`!Before(cutoff)`); a real controller never observes that age.

use super::Millis;
use std::collections::VecDeque;

/// Most records either history holds. Upstream's lists are bounded only by how often it
/// syncs: at 15 s and the API's longest window (3600 s) that is 241 recommendations, and
/// at its longest period (1800 s) 121 events per direction. 4096 leaves room for a driver
/// syncing every second. At the bound the oldest record is dropped, which upstream never
/// does; only a driver syncing many times a second can get there.
pub const HISTORY_CAP: usize = 4096;

/// Unstabilised recommendations, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recommendations {
    /// `(stamp, replicas)`, oldest first.
    records: VecDeque<(Millis, i64)>,
    /// Upstream seeds the list once, on the first sync (`recordInitialRecommendation`),
    /// and tells "first" by the list being nil; ours can empty out, so we keep a flag.
    seeded: bool,
}

/// One direction's scale events (`scaleUpEvents` or `scaleDownEvents`).
#[derive(Clone, Debug, Default)]
pub(crate) struct ScaleEvents {
    /// `(stamp, replicas changed)`, in upstream's slot order (not time order).
    slots: Vec<(Millis, i64)>,
}

// === impl Recommendations ===

impl Recommendations {
    /// `recordInitialRecommendation`: on the very first sync, remember the current count,
    /// so a freshly started HPA cannot scale down before a full window has passed.
    pub fn seed(&mut self, now: Millis, current: i64) {
        if !self.seeded {
            self.seeded = true;
            self.push(now, current);
        }
    }

    /// Drops records at least `horizon` old: no window can count them again.
    ///
    /// Upstream instead overwrites one record older than every window per sync (the last
    /// such slot found). Which dead record it overwrites never changes a result, so
    /// dropping them all is equivalent.
    pub fn forget_older_than(&mut self, now: Millis, horizon: Millis) {
        while let Some(&(stamp, _)) = self.records.front() {
            if now.saturating_sub(stamp) < horizon {
                break;
            }
            self.records.pop_front();
        }
    }

    /// Records younger than `window`.
    pub fn within(&self, now: Millis, window: Millis) -> impl Iterator<Item = i64> + '_ {
        self.records
            .iter()
            .filter(move |&&(stamp, _)| now.saturating_sub(stamp) < window)
            .map(|&(_, replicas)| replicas)
    }

    pub fn push(&mut self, now: Millis, replicas: i64) {
        if self.records.len() >= HISTORY_CAP {
            self.records.pop_front();
        }
        self.records.push_back((now, replicas));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

// === impl ScaleEvents ===

impl ScaleEvents {
    /// `getReplicasChangePerPeriod`: replicas changed by events younger than `period`.
    ///
    /// Like upstream, this counts an event whatever its `outdated` mark: a scale-up event
    /// past the scale-up policies' longest period still moves the scale-down limit while a
    /// scale-down policy's longer period covers it, until a new event recycles its slot.
    pub fn changed_within(&self, now: Millis, period: Millis) -> i64 {
        self.slots
            .iter()
            .filter(|&&(stamp, _)| now.saturating_sub(stamp) < period)
            .map(|&(_, change)| change)
            .sum()
    }

    /// `storeScaleEvent`: reuse the last slot whose event is at least `longest_period` old
    /// (`markScaleEventsOutdated`), else append.
    ///
    /// The recycling is kept exactly because which slot is reused changes the counts above
    /// when the other direction has longer periods. The list grows only when every event in
    /// it is younger than `longest_period`, so it holds at most one more event than the
    /// syncs in one such period.
    pub fn store(&mut self, now: Millis, longest_period: Millis, change: i64) {
        let outdated = self
            .slots
            .iter()
            .rposition(|&(stamp, _)| now.saturating_sub(stamp) >= longest_period);
        let slot = match outdated {
            Some(i) => self.slots.get_mut(i),
            None if self.slots.len() >= HISTORY_CAP => {
                // At the bound: overwrite the oldest event (see `HISTORY_CAP`).
                self.slots.iter_mut().min_by_key(|(stamp, _)| *stamp)
            }
            None => None,
        };
        match slot {
            Some(slot) => *slot = (now, change),
            None => self.slots.push((now, change)),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }
}
