//! What admission answers: a permit to forward, or a rejection with its reason.

use super::permit::Permit;
use super::queue::Ticket;
use crate::tiers::TierId;
use serde::Serialize;

/// The answer for one request.
#[derive(Debug)]
#[must_use]
pub enum Decision {
    /// Forward it; keep the permit until the upstream has answered.
    Admit(Permit),
    /// Answer it now with [`Rejection::status`] and `Retry-After`.
    Reject(Rejection),
    /// Its tier queues: await the ticket for a permit until [`Ticket::deadline`], then
    /// [`Ticket::expire`] it.
    Wait(Ticket),
}

/// A refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The request's tier.
    pub tier: TierId,
    /// Why: picks the status and names the reason in the response.
    pub reason: RejectReason,
    /// Value of the `Retry-After` header, in whole seconds (at least 1).
    pub retry_after_secs: u32,
}

/// Why a request was (or in shadow mode would have been) refused. A fixed set: usable
/// as a metric label and as the value of a response header naming the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Its cluster is at its concurrency limit for this tier: 503.
    Overload,
    /// Its source is over the per-source rate limit: 429.
    RateLimited,
    /// Pre-shedding ahead of a forecast shortfall: 503.
    PreShed,
    /// Its source is under an anomaly remediation (a runtime override that rejects or
    /// rate-limits it, see `sources::overrides`): 429.
    Anomaly,
}

// === impl Decision ===

impl Decision {
    /// The permit, if admitted.
    pub fn permit(self) -> Option<Permit> {
        match self {
            Decision::Admit(p) => Some(p),
            Decision::Reject(_) | Decision::Wait(_) => None,
        }
    }

    /// The rejection, if refused.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Decision::Admit(_) | Decision::Wait(_) => None,
            Decision::Reject(r) => Some(*r),
        }
    }
}

// === impl Rejection ===

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }
}

// === impl RejectReason ===

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; 4] = [
        Self::Overload,
        Self::RateLimited,
        Self::PreShed,
        Self::Anomaly,
    ];

    /// 503 for overload and pre-shedding, 429 for rate limits and anomaly remediation.
    pub fn status(self) -> u16 {
        match self {
            Self::RateLimited | Self::Anomaly => 429,
            Self::Overload | Self::PreShed => 503,
        }
    }

    /// Stable snake_case name (`overload`, `rate_limited`, `pre_shed`, `anomaly`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overload => "overload",
            Self::RateLimited => "rate_limited",
            Self::PreShed => "pre_shed",
            Self::Anomaly => "anomaly",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Overload => 0,
            Self::RateLimited => 1,
            Self::PreShed => 2,
            Self::Anomaly => 3,
        }
    }
}
