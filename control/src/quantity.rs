//! Kubernetes resource quantities (`250m`, `128Mi`, `123456n`) as numbers.

/// Cores from a Kubernetes CPU quantity (`250m`, `1`, `1.5`, `2k`...).
pub fn cpu_cores(q: &str) -> Option<f64> {
    bytes(q)
}

/// The value of a Kubernetes quantity: decimal SI (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`),
/// binary (`Ki` ... `Ei`) or an exponent (`1e3`).
pub fn bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        // Divided, not multiplied by 1e-9: `123456789n` is exactly 0.123456789.
        "n" => return finite(n / 1e9),
        "u" => return finite(n / 1e6),
        "m" => return finite(n / 1e3),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s.get(1..)?.parse().ok()?),
        _ => return None,
    };
    finite(n * scale)
}

fn finite(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_the_api_server_writes_them() {
        assert_eq!(cpu_cores("250m"), Some(0.25));
        // metrics-server writes nanocores and kibibytes.
        assert_eq!(cpu_cores("123456789n"), Some(0.123456789));
        assert_eq!(bytes("2048Ki"), Some(2_097_152.0));
        assert_eq!(cpu_cores("2"), Some(2.0));
        assert_eq!(cpu_cores("1.5"), Some(1.5));
        assert_eq!(bytes("128Mi"), Some(134_217_728.0));
        assert_eq!(bytes("1G"), Some(1e9));
        assert_eq!(bytes("1e3"), Some(1000.0));
        assert_eq!(bytes("12Qi"), None);
        assert_eq!(bytes(""), None);
    }
}
