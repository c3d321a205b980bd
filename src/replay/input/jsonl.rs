//! JSON-lines access logs (nginx `escape=json`, Envoy/Istio, Logstash), one flat object
//! a line. Only the known keys are kept, borrowed from the line where JSON allows.
//!
//! Keys, best first when several are present:
//! - time: `time_iso8601`, `@timestamp`, `timestamp`, `time`, `start_time`, `time_local`,
//!   `msec`, `ts` — ISO 8601, CLF time, or an epoch number (unit told by magnitude).
//! - path: `path`, `request_uri`, the target in `request` (`"GET /x HTTP/1.1"`), `uri`.
//! - method: `method`, `request_method`, `http_method`, the method in `request`.
//! - status: `status`, `response_code`, `status_code` (absent: 0, as Envoy logs for no
//!   response).
//! - bytes: `bytes`, `body_bytes_sent`, `response_bytes`, `bytes_sent`.
//! - duration: `request_time` (seconds), `duration` (milliseconds, Envoy `%DURATION%`),
//!   `duration_ms`.
//! - upstream time: `upstream_response_time` (seconds; nginx's `0.1, 0.2 : 0.3` list of
//!   tries is summed), `upstream_service_time` (milliseconds, Envoy's
//!   `x-envoy-upstream-service-time`).
//! - source: `remote_addr`, `client_ip`, `client`, `downstream_remote_address` (a port is
//!   cut: `10.0.0.1:5342` and `[::1]:80` give `10.0.0.1` and `::1`).
//! - request bytes: `request_length`, `bytes_received`, `request_bytes`.
//!
//! `null`, `""` and `"-"` count as absent. Nested objects are ignored.

use super::{clf, snippet, time, Request};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

pub(super) fn parse(line: &[u8]) -> Result<Request, String> {
    let f: Fields<'_> = serde_json::from_slice(line).map_err(|e| format!("bad JSON: {e}"))?;
    f.into_request()
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

/// A known key and its rank among keys for the same field (0 is best).
#[derive(Clone, Copy)]
enum Key {
    Time(u8),
    Path(u8),
    Request,
    Method(u8),
    Status(u8),
    Bytes(u8),
    Duration(u8, Unit),
    Upstream(u8, Unit),
    Source(u8),
    RequestBytes(u8),
    Other,
}

/// Rank of the target taken from `request`, between `request_uri` and `uri` (nginx's
/// `$uri` is normalised and has lost the query).
const REQUEST_TARGET_RANK: u8 = 2;

const NO_TIME: &str =
    "no time field (time, timestamp, @timestamp, time_iso8601, start_time, time_local, msec)";

fn key(name: &str) -> Key {
    use Key::*;
    match name {
        "time_iso8601" => Time(0),
        "@timestamp" => Time(1),
        "timestamp" => Time(2),
        "time" => Time(3),
        "start_time" => Time(4),
        "time_local" => Time(5),
        "msec" => Time(6),
        "ts" => Time(7),
        "path" => Path(0),
        "request_uri" => Path(1),
        "uri" => Path(3),
        "request" => Request,
        "method" => Method(0),
        "request_method" => Method(1),
        "http_method" => Method(2),
        "status" => Status(0),
        "response_code" => Status(1),
        "status_code" => Status(2),
        "bytes" => Bytes(0),
        "body_bytes_sent" => Bytes(1),
        "response_bytes" => Bytes(2),
        "bytes_sent" => Bytes(3),
        "request_time" => Duration(0, Unit::Seconds),
        "duration" => Duration(1, Unit::Millis),
        "duration_ms" => Duration(2, Unit::Millis),
        "upstream_response_time" => Upstream(0, Unit::Seconds),
        "upstream_service_time" => Upstream(1, Unit::Millis),
        "remote_addr" => Source(0),
        "client_ip" => Source(1),
        "client" => Source(2),
        "downstream_remote_address" => Source(3),
        "request_length" => RequestBytes(0),
        "bytes_received" => RequestBytes(1),
        "request_bytes" => RequestBytes(2),
        _ => Other,
    }
}

/// A JSON scalar; strings are borrowed from the line unless they had escapes.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
}

type Slot<'a> = Option<(u8, Scalar<'a>)>;

#[derive(Default)]
struct Fields<'a> {
    time: Slot<'a>,
    path: Slot<'a>,
    request: Option<Scalar<'a>>,
    method: Slot<'a>,
    status: Slot<'a>,
    bytes: Slot<'a>,
    duration: Option<(u8, Scalar<'a>, Unit)>,
    upstream: Option<(u8, Scalar<'a>, Unit)>,
    source: Slot<'a>,
    request_bytes: Slot<'a>,
}

fn put<'a>(slot: &mut Slot<'a>, rank: u8, v: Scalar<'a>) {
    if slot.as_ref().is_none_or(|(r, _)| rank < *r) {
        *slot = Some((rank, v));
    }
}

fn put_timed<'a>(slot: &mut Option<(u8, Scalar<'a>, Unit)>, rank: u8, v: Scalar<'a>, u: Unit) {
    if slot.as_ref().is_none_or(|(r, _, _)| rank < *r) {
        *slot = Some((rank, v, u));
    }
}

impl<'a> Fields<'a> {
    fn put(&mut self, k: Key, v: Scalar<'a>) {
        match k {
            Key::Time(r) => put(&mut self.time, r, v),
            Key::Path(r) => put(&mut self.path, r, v),
            Key::Request => self.request = Some(v),
            Key::Method(r) => put(&mut self.method, r, v),
            Key::Status(r) => put(&mut self.status, r, v),
            Key::Bytes(r) => put(&mut self.bytes, r, v),
            Key::Duration(r, u) => put_timed(&mut self.duration, r, v, u),
            Key::Upstream(r, u) => put_timed(&mut self.upstream, r, v, u),
            Key::Source(r) => put(&mut self.source, r, v),
            Key::RequestBytes(r) => put(&mut self.request_bytes, r, v),
            Key::Other => {}
        }
    }

    fn into_request(self) -> Result<Request, String> {
        let ts = match self.time {
            None => return Err(NO_TIME.into()),
            Some((_, Scalar::Num(v))) => time::from_epoch(v),
            Some((_, Scalar::Str(ref s))) => time::parse_any(s.as_bytes()),
        }
        .ok_or_else(|| {
            format!(
                "unreadable timestamp {}",
                show(self.time.as_ref().map(|t| &t.1))
            )
        })?;

        let (req_method, req_target) = match &self.request {
            Some(Scalar::Str(r)) => {
                let (m, t) = clf::split_request(r.as_bytes());
                (Some(m), Some(t))
            }
            _ => (None, None),
        };
        let mut path = self.path;
        if let Some(t) = req_target.filter(|t| t != "-") {
            put(&mut path, REQUEST_TARGET_RANK, Scalar::Str(Cow::Owned(t)));
        }
        if path.is_none() && self.status.is_none() {
            return Err("no request fields (path, uri, request, status, response_code)".into());
        }
        let method = match self.method {
            Some((_, v)) => text(v),
            None => req_method.unwrap_or_else(|| "-".into()),
        };
        let status = match &self.status {
            None => 0,
            Some((_, v)) => integer(v)
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| format!("unreadable status {}", show(Some(v))))?,
        };
        let bytes = match &self.bytes {
            None => 0,
            Some((_, v)) => {
                integer(v).ok_or_else(|| format!("unreadable bytes {}", show(Some(v))))?
            }
        };
        let request_bytes = match &self.request_bytes {
            None => None,
            Some((_, v)) => Some(
                integer(v).ok_or_else(|| format!("unreadable request bytes {}", show(Some(v))))?,
            ),
        };
        Ok(Request {
            ts,
            method,
            path: path.map_or_else(|| "-".into(), |(_, v)| text(v)),
            status,
            bytes,
            duration: seconds(self.duration.as_ref(), "duration")?,
            upstream_time: seconds(self.upstream.as_ref(), "upstream time")?,
            source: self.source.map(|(_, v)| strip_port(text(v))),
            request_bytes,
        })
    }
}

fn text(v: Scalar<'_>) -> String {
    match v {
        Scalar::Str(s) => s.into_owned(),
        Scalar::Num(n) => n.to_string(),
    }
}

fn show(v: Option<&Scalar<'_>>) -> String {
    match v {
        Some(Scalar::Str(s)) => snippet(s.as_bytes()),
        Some(Scalar::Num(n)) => n.to_string(),
        None => "null".into(),
    }
}

fn integer(v: &Scalar<'_>) -> Option<u64> {
    let n = match v {
        Scalar::Num(n) => *n,
        Scalar::Str(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<u64>() {
                return Some(n);
            }
            s.parse().ok()?
        }
    };
    // 2^64: larger floats do not fit.
    (n >= 0.0 && n.fract() == 0.0 && n < 18_446_744_073_709_551_616.0).then_some(n as u64)
}

/// A duration to seconds. Strings may list nginx upstream tries (`0.1, 0.2 : 0.3`), summed
/// because all of them were spent on this request.
fn seconds(v: Option<&(u8, Scalar<'_>, Unit)>, what: &str) -> Result<Option<f64>, String> {
    let Some((_, v, unit)) = v else {
        return Ok(None);
    };
    let raw = match v {
        Scalar::Num(n) => Some(*n),
        Scalar::Str(s) => s
            .split([',', ':'])
            .map(|p| p.trim().parse::<f64>().ok())
            .sum::<Option<f64>>(),
    };
    let raw = raw
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("unreadable {what} {}", show(Some(v))))?;
    Ok(Some(match unit {
        Unit::Seconds => raw,
        Unit::Millis => raw / 1e3,
    }))
}

fn strip_port(a: String) -> String {
    if let Some(inner) = a.strip_prefix('[') {
        if let Some(end) = inner.find(']') {
            return inner[..end].to_string();
        }
    }
    match a.split_once(':') {
        // One colon is IPv4 (or a name) with a port; more is a bare IPv6 address.
        Some((host, port)) if !port.contains(':') => host.to_string(),
        _ => a,
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(k) = map.next_key::<Key>()? {
            if matches!(k, Key::Other) {
                map.next_value::<IgnoredAny>()?;
            } else if let Value(Some(v)) = map.next_value()? {
                fields.put(k, v);
            }
        }
        Ok(fields)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(key(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A value of a known key: None for null, `""`, `"-"`, booleans and nested values.
struct Value<'a>(Option<Scalar<'a>>);

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

fn string(s: Cow<'_, str>) -> Value<'_> {
    Value((!matches!(&*s, "" | "-")).then_some(Scalar::Str(s)))
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(string(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(string(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value<'de>, E> {
        Ok(string(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value(Some(Scalar::Num(v as f64))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value(Some(Scalar::Num(v as f64))))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value<'de>, E> {
        Ok(Value(Some(Scalar::Num(v))))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value<'de>, E> {
        Ok(Value(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Request {
        match parse(line.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    #[test]
    fn nginx_json_with_string_values() {
        let r = ok(
            r#"{"time_local":"17/May/2015:12:05:03 +0200","remote_addr":"2001:db8::7","request":"GET /a/b?x=1 HTTP/1.1","status":"200","body_bytes_sent":"512","request_time":"0.250","upstream_response_time":"0.100, 0.050","request_length":"310","http_user_agent":"curl/8 \"quoted\""}"#,
        );
        assert_eq!(r.ts, 1_431_857_103.0);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/a/b?x=1"));
        assert_eq!((r.status, r.bytes), (200, 512));
        assert_eq!(r.duration, Some(0.25));
        assert!(r.upstream_time.is_some_and(|u| (u - 0.15).abs() < 1e-9));
        assert_eq!(r.source.as_deref(), Some("2001:db8::7"));
        assert_eq!(r.request_bytes, Some(310));
    }

    #[test]
    fn envoy_json_durations_in_milliseconds() {
        let r = ok(
            r#"{"start_time":"2015-05-17T10:05:03.500Z","method":"POST","path":"/api/v1/items?id=3","protocol":"HTTP/2","response_code":503,"bytes_received":42,"bytes_sent":91,"duration":1250,"upstream_service_time":"-","downstream_remote_address":"10.1.2.3:53422","response_flags":"UO"}"#,
        );
        assert_eq!(r.ts, 1_431_857_103.5);
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v1/items?id=3")
        );
        assert_eq!((r.status, r.bytes, r.request_bytes), (503, 91, Some(42)));
        assert_eq!(r.duration, Some(1.25));
        assert_eq!(r.upstream_time, None);
        assert_eq!(r.source.as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn epoch_times_ranked_keys_and_ipv6_ports() {
        let r = ok(
            r#"{"ts":1,"timestamp":1431857103250,"uri":"/norm","request_uri":"/raw?q","status":204,"client":"[::1]:8080","nested":{"status":1},"list":[1,2]}"#,
        );
        assert_eq!(r.ts, 1_431_857_103.25);
        assert_eq!(r.path, "/raw?q");
        assert_eq!(r.method, "-");
        assert_eq!(r.status, 204);
        assert_eq!(r.source.as_deref(), Some("::1"));
    }

    #[test]
    fn bad_lines_say_why() {
        let e = |s: &str| parse(s.as_bytes()).err().unwrap_or_default();
        assert!(e(r#"{"time":"2015-05-17T10:05:03Z""#).starts_with("bad JSON"));
        assert!(e(r#"[1,2]"#).starts_with("bad JSON"));
        assert!(e(r#"{"path":"/x"}"#).starts_with("no time field"));
        assert_eq!(
            e(r#"{"time":"[xx]","path":"/x"}"#),
            "unreadable timestamp \"[xx]\""
        );
        assert!(e(r#"{"time":1431857103,"msg":"hello"}"#).starts_with("no request fields"));
        assert!(e(r#"{"time":1431857103,"status":"ok"}"#).starts_with("unreadable status"));
    }
}
