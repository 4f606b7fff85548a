//! `--datastore-endpoint` and its TLS files (k3s's names): where the server
//! keeps the cluster state. Unset: the embedded SQLite under the data dir.
//! Set to `http://` or `https://` URLs (comma-separated): an external etcd.

use std::path::PathBuf;

/// Where the server keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Datastore {
    /// `<data-dir>/server/db/state.db` (the default).
    #[default]
    Sqlite,
    /// An external etcd cluster.
    Etcd(EtcdEndpoints),
}

/// The members of an etcd cluster and the files to authenticate to it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoints {
    /// `http://host:port` or `https://host:port`, in the order given.
    pub urls: Vec<String>,
    /// `--datastore-cafile`: CA of the members' serving certificates.
    pub cafile: Option<PathBuf>,
    /// `--datastore-certfile` / `--datastore-keyfile`: client certificate and key.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

impl EtcdEndpoints {
    /// Builds and checks the endpoints from the raw flag values (for `rk3s datastore migrate`).
    pub fn from_flags(
        endpoint: &str,
        cafile: Option<&str>,
        certfile: Option<&str>,
        keyfile: Option<&str>,
    ) -> Result<EtcdEndpoints, String> {
        let e = EtcdEndpoints {
            urls: parse_endpoints(endpoint).map_err(|r| format!("--datastore-endpoint: {r}"))?,
            cafile: cafile.map(PathBuf::from),
            certfile: certfile.map(PathBuf::from),
            keyfile: keyfile.map(PathBuf::from),
        };
        check(&e)?;
        Ok(e)
    }
}

/// Parses the value of `--datastore-endpoint` (one or more comma-separated URLs).
pub(super) fn parse_endpoints(text: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scheme, rest) = item.split_once("://").ok_or_else(|| {
            format!("{item:?} is not a URL; give etcd members as http://HOST:PORT or https://HOST:PORT")
        })?;
        match scheme {
            "http" | "https" => {}
            "postgres" | "mysql" | "sqlite" => {
                return Err(format!(
                    "{scheme} datastores are not supported; rk3s keeps its state in SQLite (leave the flag unset) or etcd (http:// or https:// URLs)"
                ))
            }
            other => return Err(format!("unknown scheme {other:?}; etcd members are http:// or https:// URLs")),
        }
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("{item:?} must be SCHEME://HOST:PORT without a path"));
        }
        let uri: http::Uri = item
            .parse()
            .map_err(|e| format!("{item:?} is not a valid URL: {e}"))?;
        if uri.host().is_none() {
            return Err(format!("{item:?} has no host"));
        }
        urls.push(format!("{scheme}://{authority}"));
    }
    if urls.is_empty() {
        return Err("no endpoint given".into());
    }
    Ok(urls)
}

/// Checks the TLS files against the URLs.
pub(super) fn check(e: &EtcdEndpoints) -> Result<(), String> {
    if e.certfile.is_some() != e.keyfile.is_some() {
        return Err("--datastore-certfile and --datastore-keyfile go together".into());
    }
    let https = e.urls.iter().any(|u| u.starts_with("https://"));
    let http = e.urls.iter().any(|u| u.starts_with("http://"));
    if https && http {
        return Err("--datastore-endpoint mixes http:// and https:// members".into());
    }
    if http && (e.cafile.is_some() || e.certfile.is_some()) {
        return Err("--datastore-cafile/-certfile/-keyfile need https:// endpoints".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_or_https_urls() {
        assert_eq!(
            parse_endpoints("https://h1:2379, https://h2:2379/").unwrap(),
            ["https://h1:2379", "https://h2:2379"]
        );
        assert!(parse_endpoints("postgres://u@h/db").unwrap_err().contains("not supported"));
        assert!(parse_endpoints("h1:2379").unwrap_err().contains("not a URL"));
        assert!(parse_endpoints("http://h1:2379/x").is_err());
        assert!(parse_endpoints(",").is_err());
    }

    #[test]
    fn tls_files_need_https_and_each_other() {
        let e = |urls: &[&str], ca: bool, cert: bool, key: bool| EtcdEndpoints {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            cafile: ca.then(|| "/ca".into()),
            certfile: cert.then(|| "/c".into()),
            keyfile: key.then(|| "/k".into()),
        };
        assert!(check(&e(&["https://a:2379"], true, true, true)).is_ok());
        assert!(check(&e(&["https://a:2379"], true, true, false)).is_err());
        assert!(check(&e(&["http://a:2379"], true, false, false)).is_err());
        assert!(check(&e(&["http://a:2379", "https://b:2379"], false, false, false)).is_err());
    }
}
