//! `/version`: the `version.Info` kube-apiserver serves.
//!
//! rk3s serves the Kubernetes 1.32 API, so `major`/`minor` are "1"/"32"
//! (kubectl's dispatcher picks kubectl 1.32 from them). `gitVersion` is
//! `v1.32.0+rk3s<N>`: the Kubernetes API level, then rk3s's own release
//! counter as semver build metadata, like k3s' `v1.32.4+k3s1`.
//!
//! Build facts come from compile-time environment variables when the release
//! build sets them (`RK3S_GIT_COMMIT`, `RK3S_GIT_TREE_STATE`,
//! `RK3S_BUILD_DATE`, `RK3S_RUSTC_VERSION`); otherwise they read "unknown"
//! (the build date: Go's zero default, `1970-01-01T00:00:00Z`).

use serde_json::{json, Value};

/// The Kubernetes API level served.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";
/// `v<kube version>+rk3s<release counter>`.
pub const GIT_VERSION: &str = "v1.32.0+rk3s1";

/// `linux/amd64`, `linux/arm64`, `linux/arm`: Go's names for the target.
pub fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// The `/version` body.
pub fn version_info() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": option_env!("RK3S_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": option_env!("RK3S_GIT_TREE_STATE").unwrap_or("unknown"),
        "buildDate": option_env!("RK3S_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
        "goVersion": option_env!("RK3S_RUSTC_VERSION").unwrap_or("unknown"),
        "compiler": "rustc",
        "platform": platform(),
    })
}

/// The body as kube writes it: indented JSON (`WriteRawJSON`).
pub fn version_body() -> String {
    serde_json::to_string_pretty(&version_info()).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_says_kubernetes_1_32() {
        let v = version_info();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "32");
        assert!(v["gitVersion"].as_str().unwrap_or("").starts_with("v1.32."));
        assert_eq!(v["compiler"], "rustc");
        let platform = v["platform"].as_str().unwrap_or("");
        assert!(
            platform.starts_with("linux/") || platform.contains('/'),
            "{platform}"
        );
        assert!(!platform.ends_with("x86_64") && !platform.ends_with("aarch64"));
        for key in ["gitCommit", "gitTreeState", "buildDate", "goVersion"] {
            assert!(v[key].is_string(), "{key}");
        }
        assert!(version_body().contains("\n  \"major\": \"1\""));
    }
}
