//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `1e3`) as
//! numbers: one parser for the scheduler (integer milli-units), the kubelet
//! (cgroup limits in bytes and millicores) and `resourceFieldRef`.
//!
//! Partial: values go through `f64`, so quantities beyond 2^53 milli-units
//! lose precision (kube keeps them exact); no resource we count is that big.

/// The value of a quantity, or `None` when `text` is not one.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
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
        // `1e3`: a decimal exponent (a lone `E` is exa, matched above).
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(value * factor)
}

/// Milli-units, rounded up (`100m` → 100, `1Ki` → 1 024 000).
pub fn milli(text: &str) -> Option<i128> {
    parse(text).map(|v| (v * 1000.0).ceil() as i128)
}

/// CPU in millicores, rounded up as the kubelet does.
pub fn millicores(text: &str) -> Option<i64> {
    parse(text).map(|v| (v * 1000.0).ceil() as i64)
}

/// Bytes, rounded up.
pub fn bytes(text: &str) -> Option<i64> {
    parse(text).map(|v| v.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_kube() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("1Ki"), Some(1_024_000));
        assert_eq!(milli("128Mi"), Some(128 * 1024 * 1024 * 1000));
        assert_eq!(milli("1G"), Some(1_000_000_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("250n"), Some(1));
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("0.1"), Some(100));
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(bytes("1e-3"), Some(1));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in ["", "x", "abc", "5Q", "12Zi", "1e", "1ex"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
