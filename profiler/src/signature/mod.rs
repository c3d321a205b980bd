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
    let by_route = per_route
        .into_iter()
        .filter_map(|(route, votes)| {
            let total: u32 = votes.values().sum();
            let (id, n) = votes.into_iter().max_by_key(|(_, n)| *n)?;
            (f64::from(n) >= ROUTE_MAJORITY * f64::from(total)).then_some((route, id))
        })
        .collect();

    Some(Model {
        version: previous.version + 1,
        scaler,
        signatures: ids.into_iter().zip(clustering.centroids).collect(),
        by_route,
    })
}

#[cfg(test)]
mod tests;
