//! Load signatures: kinds of work, found by clustering request feature vectors.
//!
//! [`refit`] is pure and may take a while (it runs off the data path); [`Model`] is the
//! cheap, immutable result the data path consults.

pub mod features;
pub mod fit;
pub mod model;

pub use self::fit::FitParams;
pub use self::model::{Model, SignatureId};

use self::features::{Scaler, Vector};
use crate::sample::Sample;
use std::collections::HashMap;

/// A route is mapped to a signature when at least this share of its sampled requests
/// fell in that signature; otherwise its requests are classified by their features.
const ROUTE_MAJORITY: f64 = 0.6;

/// A route is settled (its finished requests assigned by route, not by features) when
/// at least this share of its sampled requests fell in one signature: one kind, up to
/// a rare outlier. A route whose requests split more (a cache hit and a miss) keeps
/// per-request assignment.
const SETTLED: f64 = 0.9;

/// New centroids within this distance (in standard deviations) of an old one inherit
/// its id.
const MATCH_RADIUS: f64 = 1.5;

/// Fits a new model on `samples`, keeping ids of signatures that did not move.
///
/// A new signature takes the smallest id (from 1) that no kept signature holds, so ids
/// stay within `1..=max_k`: they are metric label values and must stay bounded. A
/// retired id may thus return for a different kind of work later; `version` tells
/// models apart.
pub fn refit(samples: &[Sample], previous: &Model, params: &FitParams) -> Option<Model> {
    let raw: Vec<Vector> = samples.iter().map(features::of_sample).collect();
    let scaler = Scaler::fit(&raw);
    let points: Vec<Vector> = raw.iter().map(|v| scaler.apply(v)).collect();
    let clustering = fit::cluster(&points, params)?;

    // Old centroids re-expressed in the new scaler's space, so distances compare.
    let old: Vec<Vector> = previous
        .signatures
        .iter()
        .map(|(_, c)| scaler.apply(&previous.scaler.invert(c)))
        .collect();
    let matched = fit::match_centroids(&clustering.centroids, &old, MATCH_RADIUS);
    let k = clustering.centroids.len();

    // Route votes per new cluster, before ids exist.
    let mut cluster_routes: Vec<HashMap<u64, u32>> = vec![HashMap::new(); k];
    for (s, label) in samples.iter().zip(&clustering.labels) {
        if let Some(votes) = cluster_routes.get_mut(*label) {
            *votes.entry(s.arrival.shape.template_hash).or_default() += 1;
        }
    }

    let mut ids: Vec<Option<SignatureId>> = matched
        .iter()
        .map(|m| {
            m.and_then(|j| previous.signatures.get(j))
                .map(|(id, _)| *id)
        })
        .collect();
    let mut taken: Vec<SignatureId> = ids.iter().flatten().copied().collect();
    // A cluster whose centroid moved past the radius (a shift in the mix re-scales
    // every dimension, and service time drifts with load) is still the same kind of
    // work when its main route was that signature's: it keeps the id, so per-signature
    // series and costs do not swap between two kinds at a re-fit.
    for (id, votes) in ids.iter_mut().zip(&cluster_routes) {
        if id.is_some() {
            continue;
        }
        let inherited = votes
            .iter()
            .max_by_key(|(route, n)| (**n, std::cmp::Reverse(**route)))
            .and_then(|(route, _)| previous.by_route.get(route))
            .filter(|old| !taken.contains(old));
        if let Some(old) = inherited {
            *id = Some(*old);
            taken.push(*old);
        }
    }
    let ids: Vec<SignatureId> = ids
        .into_iter()
        .map(|k| {
            k.unwrap_or_else(|| {
                let id = (1..).find(|id| !taken.contains(id)).unwrap_or(1);
                taken.push(id);
                id
            })
        })
        .collect();

    let mut per_route: HashMap<u64, HashMap<SignatureId, u32>> = HashMap::new();
    for (votes, id) in cluster_routes.into_iter().zip(&ids) {
        for (route, n) in votes {
            *per_route.entry(route).or_default().entry(*id).or_default() += n;
        }
    }
    // Each route's main signature and the share of its requests that fell there.
    let main: Vec<(u64, SignatureId, f64)> = per_route
        .into_iter()
        .filter_map(|(route, votes)| {
            let total: u32 = votes.values().sum();
            let (id, n) = votes.into_iter().max_by_key(|(_, n)| *n)?;
            Some((route, id, f64::from(n) / f64::from(total.max(1))))
        })
        .collect();
    let with_share = |least: f64| -> HashMap<u64, SignatureId> {
        main.iter()
            .filter(|(_, _, share)| *share >= least)
            .map(|(route, id, _)| (*route, *id))
            .collect()
    };
    let by_route = with_share(ROUTE_MAJORITY);
    let settled = with_share(SETTLED);

    Some(Model {
        version: previous.version + 1,
        scaler,
        signatures: ids.into_iter().zip(clustering.centroids).collect(),
        by_route,
        settled,
    })
}

#[cfg(test)]
mod tests;
