//! k3s-format join tokens: `K10<sha256 of the CA bundle>::<user>:<password>`.
//!
//! Forms accepted by [`JoinToken::parse`]:
//! - `K10<hash>::<user>:<password>`: the server token is `K10<hash>::server:<secret>`;
//! - `K10<hash>::<password>` (also a bootstrap token `K10<hash>::abcdef.0123456789abcdef`);
//! - a bare secret: no CA hash, so the agent trusts the CA it first sees (as k3s warns, this is
//!   open to a man in the middle on the first join).
//!
//! The hash pins the CA: an agent fetches `/cacerts`, hashes the body with [`ca_hash`] and
//! refuses to continue on a mismatch ([`JoinToken::verify_ca`]).
//!
//! The server token ([`load_or_create_server_token`]) lives in `<data-dir>/server/token`, with an
//! identical `node-token` copy for k3s muscle memory, both 0600. Unlike k3s, the token does not
//! encrypt bootstrap data in the datastore (there is no HA bootstrap yet), so changing `--token`
//! simply replaces the secret; nodes joined with the old one keep their certificates.

use std::fmt;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::bootstrap::is_bootstrap_token_format;
use super::files::{read_optional_string, write_atomic, SECRET_MODE};
use super::PkiError;

/// The token prefix: "K10" names the token format version in k3s.
pub const TOKEN_PREFIX: &str = "K10";
/// The user name in the server token.
pub const SERVER_USER: &str = "server";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA bundle, when the token pins one.
    pub ca_hash: Option<String>,
    /// The user (`server` in the server token); empty when the token names none, and the
    /// caller then picks one (agents use `node`, as k3s does).
    pub username: String,
    /// The secret, or a bootstrap token `id.secret`.
    pub password: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// The full token text: `K10<hash>::<user>:<password>` (or `K10<hash>::<password>` without a
/// user). Without a hash only the bare password is printed.
impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_hash {
            None if self.username.is_empty() => f.write_str(&self.password),
            hash => {
                let hash = hash.as_deref().unwrap_or("");
                if self.username.is_empty() {
                    write!(f, "{TOKEN_PREFIX}{hash}::{}", self.password)
                } else {
                    write!(
                        f,
                        "{TOKEN_PREFIX}{hash}::{}:{}",
                        self.username, self.password
                    )
                }
            }
        }
    }
}

impl JoinToken {
    /// The server token for a CA hash and secret.
    pub fn server(ca_hash: &str, secret: &str) -> JoinToken {
        JoinToken {
            ca_hash: Some(ca_hash.to_string()),
            username: SERVER_USER.to_string(),
            password: secret.to_string(),
        }
    }

    /// Parses any of the forms in the module docs. Surrounding whitespace (a trailing newline
    /// from a token file) is ignored.
    pub fn parse(s: &str) -> Result<JoinToken, PkiError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(PkiError::InvalidToken("the token is empty".into()));
        }
        let Some(rest) = s.strip_prefix(TOKEN_PREFIX) else {
            return Ok(JoinToken {
                ca_hash: None,
                username: String::new(),
                password: s.to_string(),
            });
        };
        let Some((hash, creds)) = rest.split_once("::") else {
            return Err(PkiError::InvalidToken(
                "a token starting with K10 must look like K10<ca-hash>::<user>:<password>".into(),
            ));
        };
        let ca_hash = if hash.is_empty() {
            None
        } else if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(hash.to_ascii_lowercase())
        } else {
            return Err(PkiError::InvalidToken(format!(
                "the CA hash after K10 must be 64 hex characters (a SHA-256), got {} characters",
                hash.len()
            )));
        };
        let (username, password) = match creds.split_once(':') {
            Some((user, pass)) => (user.to_string(), pass.to_string()),
            None => (String::new(), creds.to_string()),
        };
        if password.is_empty() {
            return Err(PkiError::InvalidToken(
                "the token has no password after '::'".into(),
            ));
        }
        Ok(JoinToken {
            ca_hash,
            username,
            password,
        })
    }

    /// Checks a CA bundle (the `/cacerts` body) against the pinned hash. A token without a hash
    /// accepts any CA; the caller should warn that the first join is then unauthenticated.
    pub fn verify_ca(&self, ca_pem: &[u8]) -> Result<(), PkiError> {
        let Some(expected) = &self.ca_hash else {
            return Ok(());
        };
        let actual = ca_hash(ca_pem);
        if *expected == actual {
            Ok(())
        } else {
            Err(PkiError::CaHashMismatch {
                expected: expected.clone(),
                actual,
            })
        }
    }

    /// Whether the credentials are a bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`, no user).
    pub fn is_bootstrap_token(&self) -> bool {
        self.username.is_empty() && is_bootstrap_token_format(&self.password)
    }
}

/// The hash a token pins for a CA bundle, as k3s computes it: SHA-256 of the bundle bytes when
/// it holds one certificate; for a longer bundle, SHA-256 of the DER of its self-signed root
/// (so an intermediate can rotate under a stable root). Unlike k3s, the root is found by
/// subject == issuer rather than by verifying the chain; a bundle without one hashes as bytes.
pub fn ca_hash(bundle_pem: &[u8]) -> String {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bundle_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.len() > 1 {
        let root = certs.iter().rev().find(|der| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
                .unwrap_or(false)
        });
        if let Some(root) = root {
            return hex::encode(Sha256::digest(root.as_ref()));
        }
    }
    hex::encode(Sha256::digest(bundle_pem))
}

/// Reads a `--token-file`: its trimmed contents.
pub fn read_token_file(path: &Path) -> Result<String, PkiError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| PkiError::io("read token file", path, e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(PkiError::InvalidToken(format!(
            "{} is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// A random secret: 16 bytes from the OS as 32 hex characters (k3s's length).
pub fn random_secret() -> String {
    hex::encode(random_bytes::<16>())
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the OS random source failed");
    out
}

/// Decides the server token and writes `<server_dir>/token` and `node-token` (0600):
/// - `given` (from `--token`/`--token-file`): a bare secret, or a full token whose CA hash must
///   match `ca_pem` (a mismatch is [`PkiError::ServerTokenCaMismatch`]);
/// - otherwise the secret already in `token`, so restarts keep it;
/// - otherwise a fresh random secret.
///
/// Returns the full server token `K10<hash>::server:<secret>`.
pub fn load_or_create_server_token(
    server_dir: &Path,
    given: Option<&str>,
    ca_pem: &[u8],
) -> Result<JoinToken, PkiError> {
    let hash = ca_hash(ca_pem);
    let token_path = server_dir.join("token");
    let secret = match given {
        Some(text) => {
            let parsed = JoinToken::parse(text)?;
            if let Some(expected) = parsed.ca_hash {
                if expected != hash {
                    return Err(PkiError::ServerTokenCaMismatch {
                        expected,
                        actual: hash,
                    });
                }
            }
            parsed.password
        }
        None => match read_optional_string(&token_path)? {
            // The stored hash is derived data: if the CA changed, the secret stays and the file
            // is rewritten below with the new hash.
            Some(text) => JoinToken::parse(&text)?.password,
            None => random_secret(),
        },
    };
    let token = JoinToken::server(&hash, &secret);
    let contents = format!("{token}\n");
    for name in ["token", "node-token"] {
        let path = server_dir.join(name);
        if read_optional_string(&path)?.as_deref() != Some(contents.as_str()) {
            write_atomic(&path, contents.as_bytes(), SECRET_MODE)?;
        }
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_every_form() {
        let full = JoinToken::parse(&format!("K10{HASH}::server:s3cr:et\n")).unwrap();
        assert_eq!(full.ca_hash.as_deref(), Some(HASH));
        assert_eq!(full.username, "server");
        assert_eq!(full.password, "s3cr:et");
        assert_eq!(full.to_string(), format!("K10{HASH}::server:s3cr:et"));

        let no_user = JoinToken::parse(&format!("K10{HASH}::abcdef.0123456789abcdef")).unwrap();
        assert_eq!(no_user.username, "");
        assert_eq!(no_user.password, "abcdef.0123456789abcdef");
        assert!(no_user.is_bootstrap_token());

        let bare = JoinToken::parse("just-a-secret").unwrap();
        assert_eq!(bare.ca_hash, None);
        assert_eq!(bare.password, "just-a-secret");
        assert!(!bare.is_bootstrap_token());
        assert_eq!(bare.to_string(), "just-a-secret");

        let short = JoinToken::parse("K10:::pw").unwrap();
        assert_eq!(
            (
                short.ca_hash,
                short.username.as_str(),
                short.password.as_str()
            ),
            (None, "", "pw")
        );
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in [
            "",
            "  ",
            "K10abc::server:x",
            "K10nohash",
            &format!("K10{HASH}::server:"),
        ] {
            let err = JoinToken::parse(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("failed to parse the join token"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn verify_ca_accepts_the_right_bundle_and_names_the_problem_otherwise() {
        let ca = b"-----BEGIN CERTIFICATE-----\nnot parsed for a single bundle\n-----END CERTIFICATE-----\n";
        let good = JoinToken::server(&ca_hash(ca), "x");
        good.verify_ca(ca).unwrap();
        let err = good.verify_ca(b"another CA").unwrap_err().to_string();
        assert!(
            err.contains("belongs to another cluster or server"),
            "{err}"
        );
        assert!(err.contains(&ca_hash(ca)), "{err}");
        // No hash: trust on first use.
        JoinToken::parse("bare")
            .unwrap()
            .verify_ca(b"anything")
            .unwrap();
    }

    #[test]
    fn server_token_is_created_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = b"ca bytes";
        let first = load_or_create_server_token(dir.path(), None, ca).unwrap();
        assert_eq!(first.ca_hash.as_deref(), Some(ca_hash(ca).as_str()));
        assert_eq!(first.username, "server");
        assert_eq!(first.password.len(), 32);
        let text = std::fs::read_to_string(dir.path().join("token")).unwrap();
        assert_eq!(text, format!("{first}\n"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("node-token")).unwrap(),
            text
        );
        let mode = std::fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let again = load_or_create_server_token(dir.path(), None, ca).unwrap();
        assert_eq!(again, first);

        let given = load_or_create_server_token(dir.path(), Some("my-secret"), ca).unwrap();
        assert_eq!(given.password, "my-secret");
        let full = format!("K10{}::server:other", ca_hash(ca));
        assert_eq!(
            load_or_create_server_token(dir.path(), Some(&full), ca)
                .unwrap()
                .password,
            "other"
        );

        let wrong = format!("K10{HASH}::server:other");
        let err = load_or_create_server_token(dir.path(), Some(&wrong), ca).unwrap_err();
        assert!(
            matches!(err, PkiError::ServerTokenCaMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn multi_cert_bundle_hashes_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let pki =
            crate::pki::Pki::load_or_create(dir.path(), &crate::pki::PkiOptions::new("h")).unwrap();
        let root_der = CertificateDer::from_pem_slice(pki.ca_bundle_pem()).unwrap();
        let mut bundle = pki.serving().cert_pem.to_string();
        bundle.push_str(pki.server_ca_pem());
        assert_eq!(
            ca_hash(bundle.as_bytes()),
            hex::encode(Sha256::digest(root_der.as_ref()))
        );
        assert_eq!(ca_hash(pki.ca_bundle_pem()), pki.ca_bundle_sha256());
    }
}
