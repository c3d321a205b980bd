//! Every metric the proxy exports: names, help texts, and pre-registered handles.
//!
//! Handles are looked up once (at startup or reload) and kept in the routing snapshot,
//! so the data path only touches atomics. Label values come from the config file
//! (listener and cluster names) or from fixed sets (status class, error kind): no
//! request-derived value ever becomes a label.

use metrics::{
    describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit,
};

pub const REQUESTS: &str = "prescale_requests_total";
pub const REQUEST_DURATION: &str = "prescale_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "prescale_requests_in_flight";
pub const REQUEST_BYTES: &str = "prescale_request_body_bytes_total";
pub const RESPONSE_BYTES: &str = "prescale_response_body_bytes_total";
pub const LOCAL_RESPONSES: &str = "prescale_local_responses_total";
pub const UPSTREAM_REQUESTS: &str = "prescale_upstream_requests_total";
pub const UPSTREAM_CONNECT_ERRORS: &str = "prescale_upstream_connect_errors_total";
pub const CONFIG_RELOADS: &str = "prescale_config_reloads_total";
pub const CONFIG_LAST_RELOAD_SUCCESS: &str =
    "prescale_config_last_reload_success_timestamp_seconds";
pub const CONFIG_RESTART_REQUIRED: &str = "prescale_config_restart_required";
pub const READY: &str = "prescale_ready";
pub const DRAINING: &str = "prescale_draining";
pub const ADMIN_CONTROL_EXPOSED: &str = "prescale_admin_control_exposed";
pub const BUILD_INFO: &str = "prescale_build_info";
pub const START_TIME: &str = "prescale_process_start_time_seconds";
pub const PROFILER_SAMPLES: &str = "prescale_profiler_samples_total";
pub const PROFILER_DROPPED: &str = "prescale_profiler_dropped_samples_total";
pub const FANOUT_UNTRACKED: &str = "prescale_profiler_fanout_untracked_total";
pub const SIGNATURE_REFITS: &str = "prescale_signature_refits_total";
pub const SIGNATURES: &str = "prescale_signatures";
pub const CLASSIFIER_ACCURACY: &str = "prescale_signature_classifier_accuracy_ratio";
pub const SIGNATURE_REQUESTS: &str = "prescale_signature_requests_total";
pub const SIGNATURE_WORK: &str = "prescale_signature_work_seconds_total";
pub const SIGNATURE_DEMAND: &str = "prescale_signature_demand_concurrency";
pub const SIGNATURE_SHARE: &str = "prescale_signature_share_ratio";
pub const SIGNATURE_FANOUT: &str = "prescale_signature_mean_fanout";
pub const SIGNATURE_SERVICE_TIME: &str = "prescale_signature_service_time_seconds";
pub const STORE_WRITES: &str = "prescale_store_writes_total";
pub const STORE_SET_ASIDE: &str = "prescale_store_set_aside_total";
pub const FORECAST_DEMAND: &str = "prescale_forecast_demand";
pub const FORECAST_ERROR: &str = "prescale_forecast_error_ratio";
pub const FORECAST_COVERAGE: &str = "prescale_forecast_interval_coverage_ratio";
pub const FORECAST_TOTAL_ERROR: &str = "prescale_forecast_total_error_concurrency";
pub const FORECAST_TOTAL_SOURCE: &str = "prescale_forecast_total_source";
pub const FORECAST_UPDATES_DROPPED: &str = "prescale_forecast_updates_dropped_total";
pub const DESIRED_REPLICAS: &str = "prescale_desired_replicas";
pub const DESIRED_REPLICAS_BY_RULE: &str = "prescale_desired_replicas_by_rule";
pub const DEMAND: &str = "prescale_demand_concurrency";
pub const SCALE_DECISIONS: &str = "prescale_scale_decisions_total";
pub const SIGNAL_SENDS: &str = "prescale_signal_sends_total";
pub const SIGNAL_LAST_SUCCESS: &str = "prescale_signal_last_success_timestamp_seconds";
pub const LEARNED_STARTUP: &str = "prescale_learned_startup_seconds";
pub const WARM_STARTS: &str = "prescale_forecast_warm_starts_total";
pub const WARM_START_POINTS: &str = "prescale_forecast_warm_start_points";
pub const ADMISSION_DECISIONS: &str = "prescale_admission_decisions_total";
pub const ADMISSION_LIMIT: &str = "prescale_admission_limit";
pub const ADMISSION_IN_FLIGHT: &str = "prescale_admission_in_flight";
pub const ADMISSION_CLUSTER_IN_FLIGHT: &str = "prescale_admission_cluster_in_flight";
pub const ADMISSION_QUEUED: &str = "prescale_admission_queued_total";
pub const ADMISSION_WAITING: &str = "prescale_admission_waiting";
pub const ADMISSION_OVERFLOWED: &str = "prescale_admission_overflowed_total";
pub const PRESHED_LEVEL: &str = "prescale_preshed_level";
pub const UPSTREAM_EJECTIONS: &str = "prescale_upstream_ejections_total";
pub const UPSTREAM_OVERFLOWS: &str = "prescale_upstream_overflow_requests_total";
pub const ANOMALIES: &str = "prescale_anomalies_total";
pub const ANOMALIES_ACTIVE: &str = "prescale_anomalies_active";
pub const ANOMALY_ACTIONS: &str = "prescale_anomaly_actions_total";
pub const ANOMALY_REFITS: &str = "prescale_anomaly_refits_total";
pub const ANOMALY_ALERT_SENDS: &str = "prescale_anomaly_alert_sends_total";
pub const REFUSED_DROPPED: &str = "prescale_profiler_refused_dropped_total";
pub const PROFILER_REFUSED: &str = "prescale_profiler_refused_requests_total";

/// Status classes used as label values; index 0 is "no response was written".
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why the proxy answered by itself instead of forwarding (a fixed set). The
/// discriminant is the index into `ALL` and into the per-reason counters.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LocalReason {
    BadRequest,
    HeaderTooLarge,
    BodyTooLarge,
    ClientTimeout,
    NoRoute,
    NoEndpoint,
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamReset,
    UpstreamProtocol,
    Internal,
    /// Admission shed the request (503: overload or pre-shedding).
    Shed,
    /// The request's source is over its rate limit (429).
    RateLimited,
}

/// Where a connection attempt to an upstream failed (a fixed set); the discriminant
/// is the index into `ALL`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnectErrorKind {
    Refused,
    Timeout,
    Tls,
    Other,
}

/// Per-listener handles.
#[derive(Clone)]
pub struct ListenerMetrics {
    requests: [Counter; 6],
    pub duration: Histogram,
    pub in_flight: Gauge,
    pub request_bytes: Counter,
    pub response_bytes: Counter,
    local: [Counter; LocalReason::ALL.len()],
}

/// Per-cluster handles.
#[derive(Clone)]
pub struct ClusterMetrics {
    requests: [Counter; 6],
    connect_errors: [Counter; 4],
    pub ejections: Counter,
    pub overflows: Counter,
}

/// Registers help texts and units, so `/metrics` passes `promtool check metrics`.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        "Requests received, by listener and response status class."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request header to the end of the response, by listener."
    );
    describe_gauge!(
        REQUESTS_IN_FLIGHT,
        "Requests being served now, by listener."
    );
    describe_counter!(
        REQUEST_BYTES,
        Unit::Bytes,
        "Request body bytes read from clients, by listener."
    );
    describe_counter!(
        RESPONSE_BYTES,
        Unit::Bytes,
        "Response body bytes written to clients, by listener."
    );
    describe_counter!(
        LOCAL_RESPONSES,
        "Responses the proxy generated itself instead of forwarding, by listener and reason."
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Requests forwarded to a cluster, by response status class."
    );
    describe_counter!(
        UPSTREAM_CONNECT_ERRORS,
        "Failed connection attempts to a cluster's endpoints, by kind."
    );
    describe_counter!(CONFIG_RELOADS, "Config reload attempts, by result.");
    describe_gauge!(
        CONFIG_LAST_RELOAD_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful config load."
    );
    describe_gauge!(
        CONFIG_RESTART_REQUIRED,
        "1 when the file on disk has changes that only a restart applies."
    );
    describe_gauge!(
        READY,
        "1 when every listener is bound and the proxy is not draining."
    );
    describe_gauge!(DRAINING, "1 while the proxy drains before exiting.");
    describe_gauge!(
        ADMIN_CONTROL_EXPOSED,
        "1 when the admin API listens beyond loopback and control endpoints have no token."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    describe_gauge!(START_TIME, Unit::Seconds, "Unix time the process started.");
    describe_counter!(PROFILER_SAMPLES, "Requests handed to the profiler.");
    describe_counter!(
        PROFILER_DROPPED,
        "Samples dropped because the profiler queue was full."
    );
    describe_counter!(
        FANOUT_UNTRACKED,
        "Inbound requests whose fanout could not be tracked (table full)."
    );
    describe_counter!(
        SIGNATURE_REFITS,
        "Times the load signatures were re-fitted."
    );
    describe_gauge!(SIGNATURES, "Load signatures in the current model.");
    describe_gauge!(
        CLASSIFIER_ACCURACY,
        "Share of arrival-time signature guesses confirmed at completion, since the last re-fit."
    );
    describe_counter!(
        SIGNATURE_REQUESTS,
        "Finished requests by load signature (0: not yet classified)."
    );
    describe_counter!(
        SIGNATURE_WORK,
        Unit::Seconds,
        "Total service time by load signature, in whole seconds."
    );
    describe_gauge!(
        SIGNATURE_DEMAND,
        "Busy concurrency (Little's law) by signature over the last complete 10 s."
    );
    describe_gauge!(SIGNATURE_SHARE, "Share of recent requests by signature.");
    describe_gauge!(
        SIGNATURE_FANOUT,
        "Mean downstream calls per request by signature."
    );
    describe_gauge!(
        SIGNATURE_SERVICE_TIME,
        Unit::Seconds,
        "Service time quantiles by signature."
    );
    describe_counter!(
        STORE_WRITES,
        "Writes of series to the embedded store, by result."
    );
    describe_counter!(
        STORE_SET_ASIDE,
        "Unreadable store files renamed aside at startup."
    );
    describe_gauge!(FORECAST_DEMAND, "Forecast demand (busy concurrency) by series (total or signature id), q (0.5 is the point, the others the interval bounds) and horizon.");
    describe_gauge!(FORECAST_ERROR, "Forecast MAE relative to seasonal-naive at the longest horizon (below 1 is better), by series.");
    describe_gauge!(
        FORECAST_COVERAGE,
        "Share of recent actuals inside the forecast interval, by series."
    );
    describe_gauge!(
        FORECAST_TOTAL_SOURCE,
        "1 for the source the total is planned with at each horizon (direct, bottom_up or combined), 0 for the others."
    );
    describe_gauge!(
        FORECAST_TOTAL_ERROR,
        "Mean absolute error of each source's forecast of the total (busy concurrency) over its scoring window, by source (direct, bottom_up, combined, planned) and horizon."
    );
    describe_counter!(
        FORECAST_UPDATES_DROPPED,
        "Series updates dropped because the forecaster fell behind."
    );
    describe_gauge!(
        DESIRED_REPLICAS,
        "Replicas the service should have by the end of the lead time."
    );
    describe_gauge!(
        DESIRED_REPLICAS_BY_RULE,
        "Replicas asked for by the forecast (predictive) and by current demand (reactive)."
    );
    describe_gauge!(
        DEMAND,
        "Total demand (busy concurrency) over the last complete 10 s."
    );
    describe_counter!(SCALE_DECISIONS, "Scaling decisions, by reason.");
    describe_counter!(
        SIGNAL_SENDS,
        "Scale signal deliveries by signal and outcome (ok, failed, dropped; kubernetes also unchanged and refused_hpa_owned), and retried attempts (retry)."
    );
    describe_gauge!(
        SIGNAL_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the last scale signal the receiver accepted (0: none yet), by signal."
    );
    describe_gauge!(
        LEARNED_STARTUP,
        Unit::Seconds,
        "Replica start-up time learned from the Deployment's readiness: median of recent scale-ups, from request to readyReplicas reaching it."
    );
    describe_counter!(
        WARM_STARTS,
        "Forecast warm starts from Prometheus, by result (loaded, empty, failed)."
    );
    describe_gauge!(
        WARM_START_POINTS,
        "Forecast steps with data loaded from Prometheus at warm start."
    );
    describe_counter!(
        ADMISSION_DECISIONS,
        "Admission decisions by tier, decision (admitted, rejected, shadow_rejected) and reason (none, overload, rate_limited, pre_shed, anomaly)."
    );
    describe_gauge!(
        ADMISSION_LIMIT,
        "Adaptive concurrency limit admission enforces, by upstream cluster."
    );
    describe_gauge!(
        ADMISSION_IN_FLIGHT,
        "Admitted requests holding a slot, by cluster and tier."
    );
    describe_gauge!(
        ADMISSION_CLUSTER_IN_FLIGHT,
        "Admitted requests holding a slot, by cluster (shadow-admitted ones excluded)."
    );
    describe_counter!(
        ADMISSION_QUEUED,
        "Requests admitted after waiting in the admission queue, by tier (also counted as admitted)."
    );
    describe_counter!(
        ADMISSION_OVERFLOWED,
        "Requests given a slot on their tier cluster's overflow cluster because their own was at its limit, by tier (also counted as admitted)."
    );
    describe_gauge!(
        ADMISSION_WAITING,
        "Requests waiting in the admission queue for a slot, by cluster."
    );
    describe_counter!(
        UPSTREAM_EJECTIONS,
        "Endpoints ejected by passive health after consecutive failures, by cluster."
    );
    describe_counter!(
        UPSTREAM_OVERFLOWS,
        "Requests sent to a cluster's overflow cluster because it had no endpoint left, by cluster."
    );
    describe_gauge!(
        PRESHED_LEVEL,
        "Share of sheddable tiers' room withheld ahead of a forecast shortfall, in [0, 1]."
    );
    describe_counter!(
        ANOMALIES,
        "Anomalies raised, by kind (rate, change_point, new_signature, share_shift, cost_drift, source_rate, source_mix)."
    );
    describe_gauge!(ANOMALIES_ACTIVE, "Anomalies active now, by kind.");
    describe_counter!(
        ANOMALY_ACTIONS,
        "Remediation actions taken on anomalous sources, by anomaly kind, action (demote, rate_limit, reject) and mode (shadow, enforce)."
    );
    describe_counter!(
        ANOMALY_REFITS,
        "Forecasters restarted after a confirmed level shift in their series."
    );
    describe_counter!(
        ANOMALY_ALERT_SENDS,
        "Alert batches sent, by sink (alertmanager, webhook) and outcome (ok, retry, failed)."
    );
    describe_counter!(
        REFUSED_DROPPED,
        "Refused requests left out of demand and of their source's rate because the hand-off queue was full."
    );
    describe_counter!(
        PROFILER_REFUSED,
        "Requests admission refused that were counted as demand (at their expected service time) in the signature series."
    );
}

/// Increments one counter of a fixed array; indexes come from enums and status classes
/// whose ranges match the arrays, so a miss would be a bug worth ignoring, not a panic.
fn bump(counters: &[Counter], i: usize) {
    if let Some(c) = counters.get(i) {
        c.increment(1);
    }
}

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

// === impl LocalReason ===

impl LocalReason {
    pub const ALL: [LocalReason; 13] = [
        Self::BadRequest,
        Self::HeaderTooLarge,
        Self::BodyTooLarge,
        Self::ClientTimeout,
        Self::NoRoute,
        Self::NoEndpoint,
        Self::UpstreamConnect,
        Self::UpstreamTimeout,
        Self::UpstreamReset,
        Self::UpstreamProtocol,
        Self::Internal,
        Self::Shed,
        Self::RateLimited,
    ];

    /// The label value, also sent to clients in `x-prescale-error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::HeaderTooLarge => "header_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::ClientTimeout => "client_timeout",
            Self::NoRoute => "no_route",
            Self::NoEndpoint => "no_endpoint",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamReset => "upstream_reset",
            Self::UpstreamProtocol => "upstream_protocol",
            Self::Internal => "internal",
            Self::Shed => "shed",
            Self::RateLimited => "rate_limited",
        }
    }
}

// === impl ConnectErrorKind ===

impl ConnectErrorKind {
    const ALL: [ConnectErrorKind; 4] = [Self::Refused, Self::Timeout, Self::Tls, Self::Other];

    fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Other => "other",
        }
    }
}

// === impl ListenerMetrics ===

impl ListenerMetrics {
    pub fn new(listener: &str) -> Self {
        let l = listener.to_string();
        Self {
            requests: CLASSES.map(|c| {
                metrics::counter!(REQUESTS, "listener" => l.clone(), "code_class" => c)
            }),
            duration: metrics::histogram!(REQUEST_DURATION, "listener" => l.clone()),
            in_flight: metrics::gauge!(REQUESTS_IN_FLIGHT, "listener" => l.clone()),
            request_bytes: metrics::counter!(REQUEST_BYTES, "listener" => l.clone()),
            response_bytes: metrics::counter!(RESPONSE_BYTES, "listener" => l.clone()),
            local: LocalReason::ALL.map(|r| {
                metrics::counter!(LOCAL_RESPONSES, "listener" => l.clone(), "reason" => r.as_str())
            }),
        }
    }

    pub fn request(&self, status: u16) {
        bump(&self.requests, class_index(status));
    }

    pub fn local(&self, reason: LocalReason) {
        bump(&self.local, reason as usize);
    }
}

// === impl ClusterMetrics ===

impl ClusterMetrics {
    pub fn new(cluster: &str) -> Self {
        let c = cluster.to_string();
        Self {
            requests: CLASSES.map(|class| {
                metrics::counter!(UPSTREAM_REQUESTS, "cluster" => c.clone(), "code_class" => class)
            }),
            connect_errors: ConnectErrorKind::ALL.map(|k| {
                metrics::counter!(UPSTREAM_CONNECT_ERRORS, "cluster" => c.clone(), "kind" => k.as_str())
            }),
            ejections: metrics::counter!(UPSTREAM_EJECTIONS, "cluster" => c.clone()),
            overflows: metrics::counter!(UPSTREAM_OVERFLOWS, "cluster" => c.clone()),
        }
    }

    pub fn response(&self, status: u16) {
        bump(&self.requests, class_index(status));
    }

    pub fn connect_error(&self, kind: ConnectErrorKind) {
        bump(&self.connect_errors, kind as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_discriminants_index_their_counter_arrays() {
        // `bump` silently ignores an out-of-range index, so a reordered enum would lose
        // counts without failing anything else.
        for (i, r) in LocalReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        for (i, k) in ConnectErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
        assert_eq!(class_index(204), 2);
        assert_eq!(class_index(599), 5);
        assert_eq!(class_index(0), 0);
        assert_eq!(class_index(600), 0);
    }
}
