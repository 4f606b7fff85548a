//! Kubernetes resource quantities (`500m`, `128Mi`, `1e3`) as numbers, for
//! cgroup limits and `resourceFieldRef`.

/// The value of a quantity string, or `None` when it does not parse.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .or_else(|| {
            // `1e3` is an exponent, `1E` alone is exa.
            text.find(['e', 'E']).filter(|&i| {
                !text[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+')
            })
        })
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
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
        _ => return None,
    };
    Some(value * factor)
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
    fn parses_suffixes() {
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(millicores("0.1"), Some(100));
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("12Zi"), None);
        assert_eq!(bytes("abc"), None);
    }
}
