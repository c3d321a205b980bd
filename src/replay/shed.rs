//! Admission on the pool model: per tier, the requests that would have been shed at
//! the ready capacity of each second, without and with pre-shedding.
//!
//! A fluid model, not the live admission (no adaptive limit, queue or latency): each
//! second, ready replicas × capacity is handed out in order of protection — tiers that
//! are not sheddable first (they are refused only at the hard limit), then sheddable
//! ones by priority (lower first) — and what does not fit is shed. With pre-shedding
//! at level L (the engine's, held from one decision to the next), the sheddable tiers
//! together may use only (1 − L) of the room the others leave: "sheddable tiers keep
//! 1 − level of their room". Tiers come from `policies.tiers` (`--config`; else the default, one tier);
//! request logs are classified by the tier rules (method, path, client address), a
//! request-count series is all the default tier.

use super::pool::Sec;
use prescale_policies::{PoliciesConfig, RequestParts, TierTable};
use serde::Serialize;

/// The tiers and the demand mix over them.
pub struct Tiers {
    table: TierTable,
    /// Tier indices in order of protection.
    order: Vec<usize>,
    /// Requests per tier per Unix minute from `first_minute` (empty: all the default
    /// tier).
    mix: Vec<Vec<f64>>,
    first_minute: Option<u64>,
    /// Unix seconds of trace second 0.
    start_unix: u64,
    /// Seconds per demand window, and each window's tier shares (see `finish`).
    window: u64,
    shares: Vec<Vec<f64>>,
}

/// One tier's line of the shed table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TierShed {
    pub tier: String,
    pub priority: u8,
    pub sheddable: bool,
    pub requests: f64,
    /// Shed at ready capacity, without pre-shedding.
    pub shed: f64,
    /// Shed with the engine's pre-shed level (predictive policy only).
    pub shed_with_preshed: Option<f64>,
}

impl Tiers {
    pub fn new(policies: &PoliciesConfig) -> Result<Self, prescale_policies::PoliciesConfigError> {
        let table = TierTable::new(policies)?;
        let mut order: Vec<(bool, u8, usize)> = table
            .iter()
            .map(|(id, t)| (t.sheddable, t.priority, id.index()))
            .collect();
        order.sort();
        Ok(Self {
            order: order.into_iter().map(|(_, _, i)| i).collect(),
            table,
            mix: Vec::new(),
            first_minute: None,
            start_unix: 0,
            window: 60,
            shares: Vec::new(),
        })
    }

    /// Once the trace is read: its start (Unix seconds), its length and the demand
    /// window (`--resolution`). Each window's tier shares pool the minutes that start
    /// in it (at least the one holding it), as demand pools arrivals: a sparse log's
    /// empty minute is not all the default tier.
    pub fn finish(&mut self, start_unix: u64, seconds: u64, window: u64) {
        self.start_unix = start_unix;
        self.window = window.max(1);
        let Some(first) = self.first_minute else {
            return;
        };
        let n = self.table.len();
        self.shares = (0..seconds.div_ceil(self.window))
            .map(|k| {
                let from = (start_unix + k * self.window) / 60;
                let to = ((start_unix + (k + 1) * self.window).saturating_sub(1) / 60).max(from);
                let mut sum = vec![0.0; n];
                for m in from..=to {
                    let row = m.checked_sub(first).and_then(|i| self.mix.get(i as usize));
                    for (x, c) in sum.iter_mut().zip(row.into_iter().flatten()) {
                        *x += c;
                    }
                }
                let total: f64 = sum.iter().sum();
                if total > 0.0 {
                    sum.iter_mut().for_each(|x| *x /= total);
                }
                sum
            })
            .collect();
    }

    /// Counts one request of a log at Unix time `ts`.
    pub fn classify(&mut self, ts: f64, method: &str, path: &str, source: Option<&str>) {
        if !(ts.is_finite() && ts >= 0.0) {
            return;
        }
        let unix_minute = ts as u64 / 60;
        let first = *self.first_minute.get_or_insert(unix_minute);
        // Requests out of order before the first are few (reordering is bounded).
        let Some(minute) = unix_minute.checked_sub(first) else {
            return;
        };
        let path = path.split('?').next().unwrap_or(path);
        let req = RequestParts {
            method,
            path,
            client_ip: source.and_then(|s| s.parse().ok()),
            ..RequestParts::default()
        };
        let tier = self.table.classify(&req).tier.index();
        let minute = minute as usize;
        if self.mix.len() <= minute {
            self.mix.resize(minute + 1, vec![0.0; self.table.len()]);
        }
        if let Some(n) = self.mix.get_mut(minute).and_then(|m| m.get_mut(tier)) {
            *n += 1.0;
        }
    }

    /// Share of each tier in the demand window holding trace second `t` (all the
    /// default tier when nothing is known).
    fn shares(&self, t: Sec) -> Vec<f64> {
        match self.shares.get((t / self.window) as usize) {
            Some(s) if s.iter().sum::<f64>() > 0.0 => s.clone(),
            _ => {
                let mut s = vec![0.0; self.table.len()];
                if let Some(x) = s.get_mut(self.table.default_tier().index()) {
                    *x = 1.0;
                }
                s
            }
        }
    }

    /// Share of demand in sheddable tiers in the last complete minute before `t` (what
    /// the live admission estimates from its own counts).
    pub fn sheddable_fraction(&self, t: Sec) -> f64 {
        let shares = self.shares(t.saturating_sub(self.window));
        self.table
            .iter()
            .filter(|(_, tier)| tier.sheddable)
            .map(|(id, _)| shares.get(id.index()).copied().unwrap_or(0.0))
            .sum()
    }

    /// An empty table to account one policy's run into.
    pub fn ledger(&self) -> Vec<TierShed> {
        self.table
            .iter()
            .map(|(_, t)| TierShed {
                tier: t.name.clone(),
                priority: t.priority,
                sheddable: t.sheddable,
                ..TierShed::default()
            })
            .collect()
    }

    /// Accounts second `t`: `demand` req/s against `capacity` req/s, and, when given,
    /// the pre-shed level in force.
    pub fn account(
        &self,
        ledger: &mut [TierShed],
        t: Sec,
        demand: f64,
        capacity: f64,
        preshed: Option<f64>,
    ) {
        let shares = self.shares(t);
        let without = self.shed(&shares, demand, capacity, 0.0);
        let with = preshed.map(|l| self.shed(&shares, demand, capacity, l));
        for (i, line) in ledger.iter_mut().enumerate() {
            line.requests += demand * shares.get(i).copied().unwrap_or(0.0);
            line.shed += without.get(i).copied().unwrap_or(0.0);
            if let Some(with) = &with {
                *line.shed_with_preshed.get_or_insert(0.0) += with.get(i).copied().unwrap_or(0.0);
            }
        }
    }

    /// Requests shed per tier in one second.
    fn shed(&self, shares: &[f64], demand: f64, capacity: f64, level: f64) -> Vec<f64> {
        let mut out = vec![0.0; shares.len()];
        let mut room = capacity.max(0.0);
        let mut reduced = false;
        for &i in &self.order {
            let d = demand * shares.get(i).copied().unwrap_or(0.0);
            let sheddable = self.table.iter().nth(i).is_some_and(|(_, t)| t.sheddable);
            // `order` puts every tier that is not sheddable first: at the first
            // sheddable one, what is left is the sheddable tiers' room.
            if sheddable && !reduced {
                room *= 1.0 - level.clamp(0.0, 1.0);
                reduced = true;
            }
            let admitted = d.min(room);
            room -= admitted;
            if let Some(o) = out.get_mut(i) {
                *o = d - admitted;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Tiers {
        let yaml = "tiers:\n  default: batch\n  list:\n    - {name: checkout, priority: 0, sheddable: false, match: {path_prefix: [/checkout]}}\n    - {name: browse, priority: 1, match: {path_prefix: [/browse]}}\n    - {name: batch, priority: 2}\n";
        let cfg: PoliciesConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut t = Tiers::new(&cfg).unwrap();
        // Minute 0: 2 checkout, 4 browse, 4 batch requests.
        for (n, path) in [(2, "/checkout/pay"), (4, "/browse?q=1"), (4, "/report")] {
            for _ in 0..n {
                t.classify(1_700_000_045.0, "GET", path, Some("10.0.0.1"));
            }
        }
        t.finish(1_700_000_040, 3600, 60);
        t
    }

    #[test]
    fn overload_is_shed_least_important_first_and_preshed_keeps_room_back() {
        let t = tiers();
        let mut ledger = t.ledger();
        // 10 req/s against 7: 3 shed, all from batch (the least important).
        t.account(&mut ledger, 0, 10.0, 7.0, Some(0.5));
        let shed: Vec<f64> = ledger.iter().map(|l| l.shed).collect();
        assert_eq!(shed, vec![0.0, 0.0, 3.0]);
        // Pre-shed at 0.5: checkout takes 2 of 7; the sheddable tiers keep half of
        // the 5 left: browse takes 2.5 of its 4, nothing is left for batch.
        let with: Vec<f64> = ledger
            .iter()
            .map(|l| l.shed_with_preshed.unwrap())
            .collect();
        assert_eq!(with, vec![0.0, 1.5, 4.0]);
        let requests: Vec<f64> = ledger.iter().map(|l| l.requests).collect();
        assert_eq!(requests, vec![2.0, 4.0, 4.0]);
        assert!((t.sheddable_fraction(60) - 0.8).abs() < 1e-12);
        // Over a 5-minute demand window the one minute with requests sets the mix.
        let mut pooled = tiers();
        pooled.finish(1_700_000_040, 3600, 300);
        assert!((pooled.sheddable_fraction(400) - 0.8).abs() < 1e-12);
        // A minute without requests is all the default tier (batch, sheddable).
        assert_eq!(t.sheddable_fraction(600), 1.0);
    }

    #[test]
    fn a_tier_that_is_not_sheddable_is_refused_only_past_the_capacity() {
        let t = tiers();
        let mut ledger = t.ledger();
        t.account(&mut ledger, 0, 10.0, 1.0, Some(1.0));
        assert_eq!(ledger[0].shed, 1.0, "checkout: 2 against 1");
        assert_eq!(ledger[0].shed_with_preshed, Some(1.0));
        assert_eq!(ledger[1].shed_with_preshed, Some(4.0));
    }
}
