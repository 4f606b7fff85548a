//! `rk3s certificate check|rotate` (k3s's `certificate` command).
//!
//! `check` lists every certificate under `<data-dir>/server/tls/` and
//! `<data-dir>/agent/` with its subject and expiry. `rotate` moves the leaf
//! certificates and their keys (never the CAs, never the service-account key)
//! into `<dir>/rotate-<unix time>/`; the next start issues new ones, as
//! k3s's rotate does: the server through [`super::Pki::load_or_create`], the
//! built-in agent from the server's CA, a joined agent by rejoining with its
//! token. Renewal of what expires within 90 days at every start is
//! `certs::RENEW_BEFORE`, already applied by those same paths.
//!
//! Invariant: rotation only moves files aside (nothing is deleted), so a
//! failed restart can be undone by moving them back.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PkiError;

/// k3s's `--service` names and the file bases they stand for.
pub const SERVICES: &[(&str, &[&str])] = &[
    ("admin", &["client-admin"]),
    ("api-server", &["serving-kube-apiserver"]),
    ("controller-manager", &["client-controller"]),
    ("scheduler", &["client-scheduler"]),
    ("rk3s-controller", &["client-supervisor"]),
    ("kubelet", &["client-kubelet", "serving-kubelet"]),
];

/// One certificate file's first certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    pub path: PathBuf,
    pub subject: String,
    pub not_after: time::OffsetDateTime,
    pub is_ca: bool,
}

impl CertStatus {
    pub fn days_left(&self, now: time::OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

fn cert_dirs(data_dir: &Path) -> [PathBuf; 2] {
    [data_dir.join("server/tls"), data_dir.join("agent")]
}

/// Every `.crt` in the server's and agent's directories, sorted by path.
pub fn check(data_dir: &Path) -> Result<Vec<CertStatus>, PkiError> {
    let mut out = Vec::new();
    for dir in cert_dirs(data_dir) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "crt") {
                continue;
            }
            let pem = std::fs::read(&path).map_err(|e| PkiError::io("read", &path, e))?;
            let der = CertificateDer::from_pem_slice(&pem)
                .map_err(|e| PkiError::parse(path.display().to_string(), e))?;
            let (_, cert) = X509Certificate::from_der(&der)
                .map_err(|e| PkiError::parse(path.display().to_string(), e))?;
            out.push(CertStatus {
                path: path.clone(),
                subject: cert.subject().to_string(),
                not_after: cert.validity().not_after.to_datetime(),
                is_ca: cert.is_ca(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The table `rk3s certificate check` prints.
pub fn format_check(certs: &[CertStatus], now: time::OffsetDateTime) -> String {
    let mut out = String::from("FILE                                                    SUBJECT                                   EXPIRES                DAYS LEFT\n");
    for c in certs {
        let expires = c
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let days = c.days_left(now);
        let note = if days < 0 { " EXPIRED" } else if days < 90 { " renewed at next start" } else { "" };
        out.push_str(&format!("{:<55} {:<41} {:<22} {}{}\n", c.path.display(), c.subject, expires, days, note));
    }
    out
}

/// Moves the leaf certificates (of `services`, or all when empty) and their
/// keys aside. Returns the backup directories used.
pub fn rotate(data_dir: &Path, services: &[String]) -> Result<Vec<PathBuf>, PkiError> {
    let mut bases: Vec<&str> = Vec::new();
    for s in services {
        let found = SERVICES.iter().find(|(name, _)| name == s).ok_or_else(|| {
            let names: Vec<_> = SERVICES.iter().map(|(n, _)| *n).collect();
            PkiError::InvalidOption(format!("unknown service {s:?}; valid values are {}", names.join(", ")))
        })?;
        bases.extend(found.1);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut backups = Vec::new();
    for status in check(data_dir)? {
        if status.is_ca {
            continue;
        }
        let base = status.path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if !bases.is_empty() && !bases.contains(&base.as_str()) {
            continue;
        }
        let dir = status.path.parent().expect("a file has a parent").to_path_buf();
        let backup = dir.join(format!("rotate-{stamp}"));
        std::fs::create_dir_all(&backup).map_err(|e| PkiError::io("create directory", &backup, e))?;
        for ext in ["crt", "key"] {
            let from = dir.join(format!("{base}.{ext}"));
            if from.exists() {
                let to = backup.join(format!("{base}.{ext}"));
                std::fs::rename(&from, &to).map_err(|e| PkiError::io("move aside", &from, e))?;
            }
        }
        if !backups.contains(&backup) {
            backups.push(backup);
        }
    }
    Ok(backups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lists_expiry_and_rotate_moves_leaves_but_not_cas() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("server/tls");
        let pki = super::super::Pki::load_or_create(&tls, &super::super::PkiOptions::new("n1")).unwrap();
        let before = pki.serving().cert_pem.to_string();
        let now = time::OffsetDateTime::now_utc();
        let certs = check(dir.path()).unwrap();
        let serving = certs.iter().find(|c| c.path.ends_with("serving-kube-apiserver.crt")).unwrap();
        assert!(serving.days_left(now) > 300, "{serving:?}");
        assert!(certs.iter().any(|c| c.is_ca && c.path.ends_with("server-ca.crt")));
        assert!(format_check(&certs, now).contains("serving-kube-apiserver.crt"));

        let err = rotate(dir.path(), &["etcd".into()]).unwrap_err().to_string();
        assert!(err.contains("valid values are admin"), "{err}");
        let backups = rotate(dir.path(), &["api-server".into()]).unwrap();
        assert_eq!(backups.len(), 1);
        assert!(backups[0].join("serving-kube-apiserver.crt").exists());
        assert!(!tls.join("serving-kube-apiserver.crt").exists());
        assert!(tls.join("client-admin.crt").exists(), "other services are untouched");
        rotate(dir.path(), &[]).unwrap();
        assert!(!tls.join("client-admin.crt").exists());
        assert!(tls.join("server-ca.crt").exists() && tls.join("server-ca.key").exists());
        assert!(tls.join("service.key").exists());
        // The next start issues new ones under the same CA.
        let again = super::super::Pki::load_or_create(&tls, &super::super::PkiOptions::new("n1")).unwrap();
        assert_ne!(again.serving().cert_pem, before);
        assert_eq!(again.ca_bundle_sha256(), pki.ca_bundle_sha256());
    }
}
