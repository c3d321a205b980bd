//! `resources.source: prometheus`: this pod's app container usage from the cAdvisor
//! series Prometheus scrapes from the kubelet, with two instant queries per read:
//!
//! - `sum(rate(container_cpu_usage_seconds_total{namespace,pod,container}[rate_window]))`
//! - `sum(container_memory_working_set_bytes{namespace,pod,container})`
//!
//! over the one-shot client warm start uses (same header handling: values are
//! secrets, never logged). The rate is over `rate_window`, so per tick the cost model
//! sees a smoothed, lagged CPU (docs/resources.md, Limits).

use crate::signals::client::{encode_query_value, secret_headers, Endpoint};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use prescale_proxy::config::{ResourcesConfig, Secret};
use prescale_proxy::resources::{ExternalSource, RateToUsage, SampleError, Usage};
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
    rate: RateToUsage,
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
            "sum(rate(container_cpu_usage_seconds_total{{{selector}}}[{}s]))",
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
            rate: RateToUsage::default(),
        })
    }

    /// One instant query's single value; None when no series matched.
    fn query(&self, promql: &str) -> Result<Option<f64>, String> {
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
        instant_value(answer.status.as_u16(), &answer.body)
    }
}

impl ExternalSource for Cadvisor {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn read(&mut self) -> Result<Usage, SampleError> {
        let read = self.query(&self.cpu_query).and_then(|cpu| {
            let cpu = cpu.ok_or_else(|| format!("no series for {}", self.cpu_query))?;
            Ok((cpu, self.query(&self.memory_query)?))
        });
        match read {
            Ok((cpu, memory)) => Ok(self.rate.usage(Some(cpu), memory)),
            Err(e) => {
                self.rate.reset();
                Err(SampleError::External(e))
            }
        }
    }
}

/// The value of a one-series instant vector answer (`sum(...)` gives one or none).
pub fn instant_value(status: u16, body: &[u8]) -> Result<Option<f64>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        let text = String::from_utf8_lossy(body.get(..200).unwrap_or(body)).into_owned();
        format!("prometheus answered {status}: {text}")
    })?;
    if status != 200 || v.get("status").and_then(Value::as_str) != Some("success") {
        let error = v.get("error").and_then(Value::as_str).unwrap_or("");
        return Err(format!("prometheus answered {status}: {error}"));
    }
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
}
