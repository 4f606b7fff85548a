//! Self-signed certificate authorities: created once, then loaded byte for byte on every start.
//!
//! A CA's certificate file is what join tokens pin (by hash), so it is never rewritten once it
//! exists; only a missing pair is created. The CN carries the creation time like k3s's
//! `k3s-server-ca@1700000000`, which makes two clusters' CAs distinguishable in `openssl x509`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::{read_optional_string, write_atomic, PUBLIC_MODE, SECRET_MODE};
use super::PkiError;

/// CAs last ten years, as in k3s.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Backdating of `notBefore`, so a node whose clock lags (a Raspberry Pi has no RTC and boots
/// with a stale time until NTP syncs) still accepts a freshly issued certificate.
pub const CLOCK_SKEW: Duration = Duration::hours(1);

/// A CA certificate and its signing key.
pub struct CertAuthority {
    label: &'static str,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Loads `<dir>/<base>.crt` + `<dir>/<base>.key`, or creates both with CN
    /// `<cn_prefix>@<unix-seconds>` when neither exists.
    pub fn load_or_create(
        dir: &Path,
        base: &str,
        cn_prefix: &str,
        label: &'static str,
    ) -> Result<Self, PkiError> {
        let cert_path = dir.join(format!("{base}.crt"));
        let key_path = dir.join(format!("{base}.key"));
        let cert = read_optional_string(&cert_path)?;
        let key = read_optional_string(&key_path)?;
        match (cert, key) {
            (Some(cert), Some(key)) => Self::from_pem(label, cert, &key, &cert_path, &key_path),
            (None, None) => {
                let ca = Self::generate(label, cn_prefix)?;
                // Key first: a crash between the two writes leaves a lone key, which the next
                // start reports instead of pairing a new certificate with an unknown key.
                write_atomic(
                    &key_path,
                    ca.issuer.key().serialize_pem().as_bytes(),
                    SECRET_MODE,
                )?;
                write_atomic(&cert_path, ca.cert_pem.as_bytes(), PUBLIC_MODE)?;
                tracing::info!(ca = label, path = %cert_path.display(), "created certificate authority");
                Ok(ca)
            }
            (Some(_), None) => Err(half_present(label, cert_path, key_path)),
            (None, Some(_)) => Err(half_present(label, key_path, cert_path)),
        }
    }

    fn generate(label: &'static str, cn_prefix: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::generate(format!("{label} key"), e))?;
        let now = OffsetDateTime::now_utc();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{cn_prefix}@{unix}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| PkiError::generate(format!("{label} certificate"), e))?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        Ok(CertAuthority {
            label,
            cert_pem,
            cert_der,
            issuer: Issuer::new(params, key),
        })
    }

    fn from_pem(
        label: &'static str,
        cert_pem: String,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, PkiError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::parse(cert_path.display().to_string(), e))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::parse(key_path.display().to_string(), e))?;
        let (_, parsed) = X509Certificate::from_der(&cert_der)
            .map_err(|e| PkiError::parse(cert_path.display().to_string(), e))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::parse(
                key_path.display().to_string(),
                format!("the key does not belong to {}", cert_path.display()),
            ));
        }
        let remaining =
            parsed.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
        if remaining < 0 {
            tracing::error!(ca = label, path = %cert_path.display(), "certificate authority has expired");
        } else if remaining < super::certs::RENEW_BEFORE.whole_seconds() {
            tracing::warn!(
                ca = label,
                days = remaining / 86_400,
                "certificate authority expires soon"
            );
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| PkiError::parse(cert_path.display().to_string(), e))?;
        Ok(CertAuthority {
            label,
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA certificate as PEM, exactly the bytes of the `.crt` file.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The signer for leaves.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Whether `leaf` carries a valid signature by this CA (so it was issued by this CA, not an
    /// older one that has since been replaced).
    pub fn signed(&self, leaf: &X509Certificate<'_>) -> bool {
        match X509Certificate::from_der(&self.cert_der) {
            Ok((_, ca)) => {
                leaf.issuer().as_raw() == ca.subject().as_raw()
                    && leaf.verify_signature(Some(ca.public_key())).is_ok()
            }
            Err(_) => false,
        }
    }
}

fn half_present(label: &'static str, present: PathBuf, missing: PathBuf) -> PkiError {
    PkiError::HalfPresentCa {
        name: label,
        present,
        missing,
    }
}

/// A random positive 127-bit serial: reissuing with the same key must never repeat a serial.
pub(crate) fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let a =
            CertAuthority::load_or_create(dir.path(), "server-ca", "rk3s-server-ca", "server CA")
                .unwrap();
        let b =
            CertAuthority::load_or_create(dir.path(), "server-ca", "rk3s-server-ca", "server CA")
                .unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        let (_, parsed) = X509Certificate::from_der(a.cert_der()).unwrap();
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert!(cn.starts_with("rk3s-server-ca@"), "{cn}");
        assert!(parsed.is_ca());
        let years = (parsed.validity().not_after.timestamp()
            - parsed.validity().not_before.timestamp())
            / 86_400
            / 365;
        assert_eq!(years, 10);
        assert!(
            a.signed(&parsed),
            "a self-signed CA verifies against itself"
        );
    }

    #[test]
    fn a_lone_certificate_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        CertAuthority::load_or_create(dir.path(), "client-ca", "rk3s-client-ca", "client CA")
            .unwrap();
        std::fs::remove_file(dir.path().join("client-ca.key")).unwrap();
        let err =
            CertAuthority::load_or_create(dir.path(), "client-ca", "rk3s-client-ca", "client CA")
                .unwrap_err()
                .to_string();
        assert!(err.contains("client-ca.key is missing"), "{err}");
    }
}
