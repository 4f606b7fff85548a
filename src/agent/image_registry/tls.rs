//! The HTTP clients registries are reached with: the system roots, or a
//! host's `tls` settings from `registries.yaml` (`ca_file` added to the
//! roots, `cert_file` and `key_file` as the client certificate,
//! `insecure_skip_verify`), always on rustls with ring.

use std::path::Path;
use std::sync::Arc;

use super::config;

fn read_pem(path: &Path, what: &str) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("failed to read {what} {}: {e}", path.display()))
}

/// A client for one host's `tls` settings: the system roots plus
/// `ca_file`, a client certificate, or no verification at all.
pub(super) fn build_client(tls: Option<&config::TlsConfig>) -> std::result::Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = tls.cloned().unwrap_or_default();
    if let Some(ca) = &tls.ca_file {
        let pem = read_pem(ca, "ca_file")?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                ca.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::pki::skip_verify::SkipVerify(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let pem = read_pem(cert, "cert_file")?;
            let chain = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
            let pem = read_pem(key, "key_file")?;
            let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| format!("key_file {}: {e}", key.display()))?
                .ok_or_else(|| format!("key_file {}: no PEM private key in it", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("cert_file {}: {e}", cert.display()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("cert_file and key_file go together".into()),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .connect_timeout(std::time::Duration::from_secs(15))
        .user_agent(concat!("rk3s/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

