//! Node passwords: what stops a second machine from taking over an existing node's name.
//!
//! As in k3s, an agent keeps a random password in `/etc/rk3s/node/password` (0600) and sends it
//! with its kubelet certificate requests; the server stores only a hash in Secret
//! `kube-system/<node>.node-password.rk3s` (see [`node_password_secret_name`]) and rejects a
//! different password for the same node name.
//!
//! Hash: PBKDF2-HMAC-SHA256 (ring), 16-byte random salt, written as
//! `$pbkdf2-sha256$i=<iterations>$<salt b64>$<hash b64>` (unpadded standard base64), so the
//! iteration count can grow later without breaking stored hashes. The passwords are 128-bit
//! random values, not human-chosen, so the work factor only needs to make a leaked Secret
//! useless, not resist dictionaries; [`ITERATIONS`] keeps a check around 10 ms on a Raspberry Pi.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use ring::pbkdf2;

use super::token::{random_bytes, random_secret};

/// PBKDF2 iterations for new hashes.
pub const ITERATIONS: u32 = 10_000;
const SCHEME: &str = "pbkdf2-sha256";
const HASH_LEN: usize = 32;
/// Refuse absurd iteration counts from a tampered Secret (a denial of service on verify).
const MAX_ITERATIONS: u32 = 10_000_000;

/// A fresh node password: 16 random bytes as 32 hex characters.
pub fn generate_node_password() -> String {
    random_secret()
}

/// The Secret (in `kube-system`) holding a node's password hash.
pub fn node_password_secret_name(node_name: &str) -> String {
    format!("{node_name}.node-password.rk3s")
}

/// Hashes a node password with a fresh salt.
pub fn hash_node_password(password: &str) -> String {
    let salt = random_bytes::<16>();
    let iterations = NonZeroU32::new(ITERATIONS).expect("nonzero");
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "${SCHEME}$i={ITERATIONS}${}${}",
        B64.encode(salt),
        B64.encode(out)
    )
}

/// Whether `password` matches a hash from [`hash_node_password`], in constant time. A
/// malformed hash never matches.
pub fn verify_node_password(password: &str, hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", SCHEME, iters, salt, expected] = parts.as_slice() else {
        return false;
    };
    let Some(iterations) = iters
        .strip_prefix("i=")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n <= MAX_ITERATIONS)
        .and_then(NonZeroU32::new)
    else {
        return false;
    };
    let (Ok(salt), Ok(expected)) = (B64.decode(salt), B64.decode(expected)) else {
        return false;
    };
    if expected.is_empty() {
        return false;
    }
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let pw = generate_node_password();
        assert_eq!(pw.len(), 32);
        let hash = hash_node_password(&pw);
        assert!(hash.starts_with("$pbkdf2-sha256$i=10000$"), "{hash}");
        assert!(verify_node_password(&pw, &hash));
        assert!(!verify_node_password("wrong", &hash));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, hash_node_password(&pw));
    }

    #[test]
    fn malformed_hashes_never_match() {
        for bad in [
            "",
            "plain",
            "$pbkdf2-sha256$i=0$AAAA$AAAA",
            "$pbkdf2-sha256$i=x$AAAA$AAAA",
            "$md5$i=1$AAAA$AAAA",
            "$pbkdf2-sha256$i=1$AAAA$",
            "$pbkdf2-sha256$i=99999999$AAAA$AAAA",
        ] {
            assert!(!verify_node_password("pw", bad), "{bad}");
        }
    }

    #[test]
    fn secret_name_follows_k3s() {
        assert_eq!(node_password_secret_name("pi-1"), "pi-1.node-password.rk3s");
    }
}
