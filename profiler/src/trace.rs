//! Trace context: the id that ties a service's outbound calls to the inbound request
//! it is serving (`traceparent`, `b3`, `x-b3-traceid`, `x-request-id`).

/// A trace id reduced to 64 bits: enough to correlate calls within one sidecar, where
/// at most a few thousand requests are in flight. Never zero (zero marks a free slot).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(u64);

/// Which header carries the trace id, in order of preference.
pub const HEADERS: [&str; 4] = ["traceparent", "b3", "x-b3-traceid", "x-request-id"];

// === impl TraceId ===

impl TraceId {
    pub fn get(self) -> u64 {
        self.0
    }

    /// Parses a header value by the rules of its header name; `None` for malformed,
    /// all-zero or absent ids. Never allocates.
    pub fn parse(header: &str, value: &str) -> Option<Self> {
        let id = match header {
            // W3C: version-traceid-parentid-flags, trace id 32 lower-hex, not all zero.
            "traceparent" => {
                let mut parts = value.trim().split('-');
                let _version = parts.next().filter(|v| v.len() == 2)?;
                let id = parts.next().filter(|id| id.len() == 32 && is_hex(id))?;
                let _parent = parts.next().filter(|p| p.len() == 16 && is_hex(p))?;
                id
            }
            // b3 single header: traceid-spanid[-sampled[-parent]], or just "0"/"1"/"d".
            "b3" => value
                .trim()
                .split('-')
                .next()
                .filter(|id| (id.len() == 16 || id.len() == 32) && is_hex(id))?,
            "x-b3-traceid" => {
                Some(value.trim()).filter(|id| (id.len() == 16 || id.len() == 32) && is_hex(id))?
            }
            // Free-form (often a UUID): any visible token up to 128 bytes.
            "x-request-id" => Some(value.trim()).filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })?,
            _ => return None,
        };
        let h = fold(id);
        (h != 0).then_some(TraceId(h))
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// FNV-1a over the id's bytes, case-folded for hex so `ABC` and `abc` match.
fn fold(id: &str) -> u64 {
    if id.bytes().all(|b| b == b'0') {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_header_and_rejects_malformed_or_zero_ids() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let a = TraceId::parse("traceparent", tp).unwrap();
        // The same trace id propagated as b3 correlates with the traceparent.
        let b =
            TraceId::parse("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1").unwrap();
        let c = TraceId::parse("x-b3-traceid", "4BF92F3577B34DA6A3CE929D0E0E4736").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(TraceId::parse("x-request-id", "7f0c3c1e-req").is_some());
        for (h, v) in [
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("traceparent", "00-xyz-00f067aa0ba902b7-01"),
            ("traceparent", ""),
            ("b3", "1"),
            ("x-request-id", "has space"),
            ("x-unknown", "abc"),
        ] {
            assert_eq!(TraceId::parse(h, v), None, "{h}: {v}");
        }
    }
}
