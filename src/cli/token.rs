//! `rk3s token create|list|delete|generate`: bootstrap tokens for joining agents, kept as
//! `kube-system/bootstrap-token-<id>` Secrets (see `pki::bootstrap`), managed through the API
//! with the admin kubeconfig (`--kubeconfig`, default `/etc/rk3s/rk3s.yaml`).
//!
//! `create` prints the full join token `K10<CA hash>::<id>.<secret>`; the CA hash comes from the
//! server's `/cacerts` (over the kubeconfig's verified connection), or from
//! `<data-dir>/server/tls/server-ca.crt` when that fails. `generate` only prints a random
//! `<id>.<secret>` and stores nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{json, Value};

use super::args::{TokenCommand, TokenCommon};
use crate::pki::bootstrap::{self, BootstrapToken};

const NAMESPACE: &str = "kube-system";
const NAME_PREFIX: &str = "bootstrap-token-";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("failed to read the kubeconfig {}: {reason} (run this on the server as root, or pass --kubeconfig)", path.display())]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("failed to {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("bootstrap token {0:?} not found")]
    NotFound(String),
    #[error("bootstrap token {0} already exists")]
    AlreadyExists(String),
    #[error("failed to learn the cluster CA: {0}")]
    Ca(String),
}

/// Runs a `rk3s token` subcommand; errors are printed, exit code 1.
pub fn run(command: TokenCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(execute(command)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a subcommand and returns what it prints.
pub async fn execute(command: TokenCommand) -> Result<String, TokenError> {
    match command {
        TokenCommand::Generate => Ok(format!("{}\n", BootstrapToken::generate(None).token())),
        TokenCommand::Create {
            token,
            ttl,
            description,
            usages,
            groups,
            common,
        } => {
            let mut t = match token {
                Some(text) => {
                    BootstrapToken::parse(&text).map_err(|e| TokenError::Invalid(e.to_string()))?
                }
                None => BootstrapToken::generate(None),
            };
            let ttl = parse_ttl(&ttl)?;
            t.expiration = ttl
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| chrono::Utc::now() + d);
            t.description = description.filter(|d| !d.is_empty());
            t.usages = check_usages(&usages)?;
            t.groups = check_groups(&groups)?;
            let client = client(&common).await?;
            create(&client, &t).await?;
            let hash = ca_hash(&client, &common.data_dir).await?;
            Ok(format!("K10{hash}::{}\n", t.token()))
        }
        TokenCommand::List { output, common } => {
            let client = client(&common).await?;
            let tokens = list(&client).await?;
            format_list(&tokens, &output, chrono::Utc::now())
        }
        TokenCommand::Delete { tokens, common } => {
            let client = client(&common).await?;
            let mut out = String::new();
            for token in tokens {
                let id = token.split('.').next().unwrap_or_default().to_string();
                delete(&client, &id).await?;
                out.push_str(&format!("bootstrap token {id:?} deleted\n"));
            }
            Ok(out)
        }
    }
}

/// A Go-style duration (`24h`, `1h30m`, `90s`); `0` means the token never expires.
pub fn parse_ttl(text: &str) -> Result<Option<Duration>, TokenError> {
    let bad = || {
        TokenError::Invalid(format!(
            "--ttl {text:?} is not a duration: use e.g. 24h, 90m, 1h30m, or 0 for no expiry"
        ))
    };
    let text = text.trim();
    if text == "0" {
        return Ok(None);
    }
    let mut total = 0u64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    if chars.peek().is_none() {
        return Err(bad());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' if chars.peek() == Some(&'s') => return Err(bad()),
            'm' => 60,
            's' => 1,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok((total > 0).then(|| Duration::from_secs(total)))
}

fn check_usages(usages: &[String]) -> Result<Vec<String>, TokenError> {
    let mut out = Vec::new();
    for u in usages.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        if !matches!(u, "signing" | "authentication") {
            return Err(TokenError::Invalid(format!(
                "--usages {u:?} is not a bootstrap token usage: use signing and/or authentication"
            )));
        }
        if !out.iter().any(|o| o == u) {
            out.push(u.to_string());
        }
    }
    out.sort();
    Ok(out)
}

fn check_groups(groups: &[String]) -> Result<Vec<String>, TokenError> {
    let groups: Vec<String> = groups
        .iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    if groups.is_empty() {
        return Ok(vec![bootstrap::DEFAULT_GROUP.to_string()]);
    }
    for g in &groups {
        if !g.starts_with("system:bootstrappers:") {
            return Err(TokenError::Invalid(format!(
                "--groups {g:?} must start with system:bootstrappers:"
            )));
        }
    }
    Ok(groups)
}

async fn client(common: &TokenCommon) -> Result<Client, TokenError> {
    let path = common
        .kubeconfig
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_WRITE_KUBECONFIG));
    let fail = |reason: String| TokenError::Kubeconfig {
        path: path.clone(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| fail(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    Client::try_from(config).map_err(|e| fail(e.to_string()))
}

fn api(client: &Client) -> Api<Secret> {
    Api::namespaced(client.clone(), NAMESPACE)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

async fn create(client: &Client, token: &BootstrapToken) -> Result<(), TokenError> {
    let secret: Secret = serde_json::from_value(token.to_secret_json())
        .map_err(|e| TokenError::Invalid(format!("failed to build the Secret: {e}")))?;
    match api(client).create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Err(TokenError::AlreadyExists(token.id.clone())),
        Err(source) => Err(TokenError::Api {
            action: format!("create Secret {NAMESPACE}/{}", token.secret_name()),
            source,
        }),
    }
}

/// Every bootstrap token stored in the cluster, by id. Secrets that are not valid bootstrap
/// tokens are skipped, as kube-apiserver's authenticator skips them.
pub async fn list(client: &Client) -> Result<Vec<BootstrapToken>, TokenError> {
    let secrets = api(client)
        .list(&ListParams::default())
        .await
        .map_err(|source| TokenError::Api {
            action: format!("list Secrets in {NAMESPACE}"),
            source,
        })?;
    let mut tokens: Vec<BootstrapToken> = secrets
        .items
        .iter()
        .filter(|s| {
            s.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(NAME_PREFIX))
        })
        .filter_map(|s| serde_json::to_value(s).ok())
        .filter_map(|v| BootstrapToken::from_secret_json(&v).ok())
        .collect();
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tokens)
}

async fn delete(client: &Client, id: &str) -> Result<(), TokenError> {
    if id.len() != 6
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(TokenError::Invalid(format!(
            "{id:?} is not a bootstrap token id ([a-z0-9]{{6}}) or token"
        )));
    }
    let name = format!("{NAME_PREFIX}{id}");
    match api(client).delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Err(TokenError::NotFound(id.to_string())),
        Err(source) => Err(TokenError::Api {
            action: format!("delete Secret {NAMESPACE}/{name}"),
            source,
        }),
    }
}

/// The CA hash join tokens pin: from the server's `/cacerts`, else the local server CA file.
async fn ca_hash(client: &Client, data_dir: &Path) -> Result<String, TokenError> {
    let request = http::Request::get("/cacerts")
        .body(Vec::new())
        .map_err(|e| TokenError::Ca(e.to_string()))?;
    match client.request_text(request).await {
        Ok(body) if body.contains("BEGIN CERTIFICATE") => Ok(crate::pki::ca_hash(body.as_bytes())),
        other => {
            let path = data_dir.join("server/tls/server-ca.crt");
            std::fs::read(&path)
                .map(|pem| crate::pki::ca_hash(&pem))
                .map_err(|e| {
                    let remote = match other {
                        Ok(_) => "/cacerts returned no certificate".to_string(),
                        Err(err) => format!("GET /cacerts failed: {err}"),
                    };
                    TokenError::Ca(format!("{remote}; reading {}: {e}", path.display()))
                })
        }
    }
}

fn ttl_text(token: &BootstrapToken, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(exp) = token.expiration else {
        return "<forever>".into();
    };
    let left = (exp - now).num_seconds();
    if left <= 0 {
        return "<invalid>".into();
    }
    match left {
        s if s >= 86_400 * 2 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

/// `list`'s output: a table like `kubeadm token list`, or kubeadm's `BootstrapToken` objects
/// as JSON or YAML.
pub fn format_list(
    tokens: &[BootstrapToken],
    output: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, TokenError> {
    let objects: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut v = json!({
                "kind": "BootstrapToken",
                "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
                "token": t.token(),
                "usages": t.usages,
                "groups": t.groups,
            });
            if let Some(d) = &t.description {
                v["description"] = json!(d);
            }
            if let Some(exp) = t.expiration {
                v["ttl"] = json!(ttl_text(t, now));
                v["expires"] = json!(exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            v
        })
        .collect();
    match output {
        "json" => {
            let mut out = String::new();
            for v in &objects {
                out.push_str(&serde_json::to_string_pretty(v).unwrap_or_default());
                out.push('\n');
            }
            Ok(out)
        }
        "yaml" => {
            let mut out = String::new();
            for v in &objects {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(v).unwrap_or_default());
            }
            Ok(out)
        }
        _ => {
            let rows: Vec<[String; 6]> = tokens
                .iter()
                .map(|t| {
                    [
                        t.token(),
                        ttl_text(t, now),
                        t.expiration
                            .map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_else(|| "<never>".into()),
                        or_none(&t.usages.join(",")).to_string(),
                        or_none(t.description.as_deref().unwrap_or("")).to_string(),
                        or_none(&t.groups.join(",")).to_string(),
                    ]
                })
                .collect();
            let header = [
                "TOKEN",
                "TTL",
                "EXPIRES",
                "USAGES",
                "DESCRIPTION",
                "EXTRA GROUPS",
            ]
            .map(String::from);
            let mut widths = [0usize; 6];
            for row in std::iter::once(&header).chain(&rows) {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            let mut out = String::new();
            for row in std::iter::once(&header).chain(&rows) {
                let mut line = String::new();
                for (i, cell) in row.iter().enumerate() {
                    if i + 1 == row.len() {
                        line.push_str(cell);
                    } else {
                        line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
                    }
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(parse_ttl("0s").unwrap(), None);
        assert_eq!(parse_ttl("24h").unwrap(), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("1h30m").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("90s").unwrap(), Some(Duration::from_secs(90)));
        for bad in ["", "h", "24", "1x", "-1h", "10ms"] {
            let err = parse_ttl(bad).unwrap_err().to_string();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn usages_and_groups_are_checked() {
        assert_eq!(
            check_usages(&["signing".into(), "authentication".into()]).unwrap(),
            vec!["authentication", "signing"]
        );
        assert!(check_usages(&["root".into()]).is_err());
        assert_eq!(check_groups(&[]).unwrap(), vec![bootstrap::DEFAULT_GROUP]);
        assert!(check_groups(&["system:masters".into()]).is_err());
    }

    #[test]
    fn list_formats() {
        let now = chrono::Utc::now();
        let mut a = BootstrapToken::generate(Some(Duration::from_secs(3 * 3600 + 5)));
        a.description = Some("for pi-2".into());
        let b = BootstrapToken::generate(None);
        let text = format_list(&[a.clone(), b.clone()], "text", now).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TOKEN") && lines[0].ends_with("EXTRA GROUPS"));
        assert!(
            lines[1].contains(&a.token()) && lines[1].contains(" 3h "),
            "{text}"
        );
        assert!(lines[1].contains("for pi-2"));
        assert!(lines[2].contains("<forever>") && lines[2].contains("<never>"));
        let json = format_list(std::slice::from_ref(&a), "json", now).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["token"], a.token());
        assert_eq!(v["kind"], "BootstrapToken");
        let yaml = format_list(&[b], "yaml", now).unwrap();
        assert!(
            yaml.starts_with("---\n") && !yaml.contains("expires"),
            "{yaml}"
        );
    }
}
