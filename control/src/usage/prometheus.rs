//! `resources.source: prometheus`: this pod's app container usage from the cAdvisor
//! series Prometheus scrapes from the kubelet, with two instant queries per read:
//!
//! - `container_cpu_usage_seconds_total{namespace,pod,container}[rate_window]`: the
//!   counter's raw samples; the last two give the CPU seconds between their own
//!   timestamps, which the sampler pairs with the requests of that same window;
//! - `sum(container_memory_working_set_bytes{namespace,pod,container})`
//!
//! over the one-shot client warm start uses (same header handling: values are
//! secrets, never logged). Not `rate()`: a rate averaged over `rate_window`, paired
//! with the sidecar's last tick, attributed part of each phase's CPU to its
//! neighbours and learnt costs up to half too low.

use crate::signals::client::{encode_query_value, secret_headers, Endpoint};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use prescale_proxy::config::{ResourcesConfig, Secret};
use prescale_proxy::resources::{ExternalSource, SampleError, Usage};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Answers larger than this are refused (two one-number vectors are tiny).
const MAX_ANSWER: usize = 1 << 20;

/// The cAdvisor reader, on a runtime of its own (the sampler thread has none).
pub struct Cadvisor {
    rt: tokio::runtime::Runtime,
    endpoint: Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    cpu_query: String,
    memory_query: String,
    timeout: Duration,
}

// === impl Cadvisor ===

impl Cadvisor {
    /// `inherited`: warm start's headers, used when none are set here.
    pub fn new(
        cfg: &ResourcesConfig,
        pod: String,
        inherited: Option<BTreeMap<String, Secret>>,
    ) -> std::io::Result<Self> {
        let url = cfg.prometheus_url.clone().unwrap_or_default();
        let endpoint = Endpoint::new(&url, None)
            .map_err(|e| std::io::Error::other(format!("resources: {e}")))?;
        let headers = secret_headers(inherited.as_ref().unwrap_or(&cfg.headers), "resources")?;
        let selector = format!(
            "namespace=\"{}\",pod=\"{pod}\",container=\"{}\"",
            cfg.namespace.as_deref().unwrap_or_default(),
            cfg.container
        );
        let cpu_query = format!(
            "container_cpu_usage_seconds_total{{{selector}}}[{}s]",
            cfg.rate_window.as_secs().max(1)
        );
        let memory_query = format!("sum(container_memory_working_set_bytes{{{selector}}})");
        tracing::info!(source = "prometheus", target = %endpoint.target(), query = %cpu_query,
            "resource usage read from cAdvisor series in Prometheus");
        Ok(Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            endpoint,
            headers,
            cpu_query,
            memory_query,
            timeout: cfg.timeout,
        })
    }

    /// One instant query's single value; None when no series matched.
    fn query(&self, promql: &str) -> Result<Option<f64>, String> {
        let (status, body) = self.get(promql)?;
        instant_value(status, &body)
    }

    /// One instant query's answer.
    fn get(&self, promql: &str) -> Result<(u16, Bytes), String> {
        let path = format!(
            "{}/api/v1/query?query={}",
            self.endpoint.path().trim_end_matches('/'),
            encode_query_value(promql)
        );
        let answer = self
            .rt
            .block_on(self.endpoint.exchange(
                Method::GET,
                &path,
                &self.headers,
                Bytes::new(),
                self.timeout,
                MAX_ANSWER,
            ))
            .map_err(|e| format!("prometheus: {e}"))?;
        Ok((answer.status.as_u16(), answer.body))
    }
}

impl ExternalSource for Cadvisor {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn read(&mut self) -> Result<Usage, SampleError> {
        let read = self.get(&self.cpu_query).and_then(|(status, body)| {
            let pair = last_two_samples(status, &body)?.ok_or_else(|| {
                format!(
                    "fewer than two samples for {} (rate_window under two scrape intervals?)",
                    self.cpu_query
                )
            })?;
            Ok((pair, self.query(&self.memory_query)?))
        });
        let (((t0, v0), (t1, v1)), memory) = read.map_err(SampleError::External)?;
        // A counter that went back is a restarted container: no interval this time.
        let cpu = (v1 >= v0 && t1 > t0).then_some(v1 - v0);
        Ok(Usage {
            cpu_seconds: cpu,
            memory_bytes: memory,
            io_bytes: None,
            window: cpu.map(|_| (t0, t1)),
        })
    }
}

/// A sample: Unix ms and value.
pub type Sample = (u64, f64);

/// The last two samples of the series sampled last in a range-vector answer
/// (`metric[window]`); None with no series of two samples.
pub fn last_two_samples(status: u16, body: &[u8]) -> Result<Option<(Sample, Sample)>, String> {
    let v = success(status, body)?;
    let sample = |p: &Value| -> Option<Sample> {
        let t = p.get(0)?.as_f64()?;
        let x = p.get(1)?.as_str()?.parse::<f64>().ok()?;
        (t.is_finite() && t >= 0.0 && x.is_finite()).then(|| ((t * 1000.0).round() as u64, x))
    };
    let series = v
        .pointer("/data/result")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(series
        .iter()
        .filter_map(|s| {
            let values = s.get("values")?.as_array()?;
            let n = values.len().checked_sub(2)?;
            Some((sample(values.get(n)?)?, sample(values.get(n + 1)?)?))
        })
        .max_by_key(|(_, (t, _))| *t))
}

/// The body of a successful answer.
fn success(status: u16, body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        let text = String::from_utf8_lossy(body.get(..200).unwrap_or(body)).into_owned();
        format!("prometheus answered {status}: {text}")
    })?;
    if status != 200 || v.get("status").and_then(Value::as_str) != Some("success") {
        let error = v.get("error").and_then(Value::as_str).unwrap_or("");
        return Err(format!("prometheus answered {status}: {error}"));
    }
    Ok(v)
}

/// The value of a one-series instant vector answer (`sum(...)` gives one or none).
pub fn instant_value(status: u16, body: &[u8]) -> Result<Option<f64>, String> {
    let v = success(status, body)?;
    let Some(first) = v.pointer("/data/result/0") else {
        return Ok(None);
    };
    first
        .pointer("/value/1")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .map(Some)
        .ok_or_else(|| "prometheus: no finite value in the answer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_answers_give_their_value_or_none() {
        let ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]}]}}"#;
        assert_eq!(instant_value(200, ok), Ok(Some(0.25)));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(instant_value(200, empty), Ok(None));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(instant_value(400, bad).unwrap_err().contains("parse error"));
        assert!(instant_value(502, b"Bad Gateway")
            .unwrap_err()
            .contains("502"));
    }

    #[test]
    fn range_answers_give_the_newest_series_last_two_samples() {
        // An old container's series (restarted) and the live one.
        let ok = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"id":"old"},"values":[[1700000000,"5"],[1700000001,"6"]]},
            {"metric":{"id":"new"},"values":[[1700000001.5,"0.5"],[1700000002.5,"0.75"],[1700000003.5,"1.25"]]}]}}"#;
        assert_eq!(
            last_two_samples(200, ok),
            Ok(Some(((1_700_000_002_500, 0.75), (1_700_000_003_500, 1.25))))
        );
        let one = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"5"]]}]}}"#;
        assert_eq!(last_two_samples(200, one), Ok(None));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(last_two_samples(400, bad).is_err());
    }
}
