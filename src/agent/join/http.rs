//! One HTTPS request to the server's join endpoints: a fresh connection, HTTP/1.1, a
//! caller-chosen rustls configuration (an unverified one only for the first `/cacerts` fetch,
//! whose body the token's hash then authenticates), a timeout.
//!
//! Errors say whether retrying can help: a refused or timed-out connection can
//! ([`HttpError::Unreachable`]); a certificate the pinned CA does not accept cannot
//! ([`HttpError::Tls`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Bodies here are a few certificates; refuse to buffer more.
const MAX_BODY: usize = 1024 * 1024;

/// The server a node joins: where to connect and the name its certificate must carry.
#[derive(Debug, Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// `https://host:port`, without a trailing slash.
    pub url: String,
}

impl Endpoint {
    /// Parses an `https://host[:port]` URL (a path is ignored; the port defaults to 6443).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{url:?} must start with https://"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(6443);
        let url = if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        Ok(Endpoint { host, port, url })
    }

    fn server_name(&self) -> Result<ServerName<'static>, HttpError> {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
            Err(_) => ServerName::try_from(self.host.clone())
                .map_err(|e| HttpError::Tls(format!("invalid server name {}: {e}", self.host))),
        }
    }
}

/// A response, with the local address the connection used (the node's IP towards the server).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
    pub local_ip: IpAddr,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Worth retrying: refused, reset, timed out, name not resolved yet.
    #[error("{0}")]
    Unreachable(String),
    /// Not worth retrying: the server's certificate is not acceptable.
    #[error("{0}")]
    Tls(String),
}

/// Sends one request and reads the whole response.
pub async fn request(
    endpoint: &Endpoint,
    tls: Arc<ClientConfig>,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Response, HttpError> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        request_inner(endpoint, tls, method, path, headers, body),
    )
    .await
    .map_err(|_| {
        HttpError::Unreachable(format!(
            "no answer from {} within {}s",
            endpoint.url,
            REQUEST_TIMEOUT.as_secs()
        ))
    })?
}

async fn request_inner(
    endpoint: &Endpoint,
    tls: Arc<ClientConfig>,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Response, HttpError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        HttpError::Unreachable(format!("failed to reach {}: {e}", endpoint.url))
    };
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| unreachable(&e))?;
    let local_ip = tcp.local_addr().map_err(|e| unreachable(&e))?.ip();
    let stream = TlsConnector::from(tls)
        .connect(endpoint.server_name()?, tcp)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                HttpError::Tls(format!(
                    "the TLS handshake with {} failed ({e}); if the server's certificate lacks \
                     the name or address used here, add it with --tls-san on the server",
                    endpoint.url
                ))
            } else {
                unreachable(&e)
            }
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    let conn = tokio::spawn(conn);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(
            http::header::HOST,
            endpoint.url.trim_start_matches("https://"),
        )
        .header(
            http::header::USER_AGENT,
            concat!("rk3s-agent/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HttpError::Tls(format!("failed to build a request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    conn.abort();
    Ok(Response {
        status,
        body,
        local_ip,
    })
}

/// A TLS configuration that accepts any server certificate: only for fetching `/cacerts`
/// before the CA is known; its body is then checked against the token's hash.
pub fn unverified_tls() -> Arc<ClientConfig> {
    Arc::new(crate::pki::skip_verify::insecure_client_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://10.0.0.1:6443/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.1", 6443));
        assert_eq!(e.url, "https://10.0.0.1:6443");
        assert_eq!(Endpoint::parse("https://pi-server").unwrap().port, 6443);
        let v6 = Endpoint::parse("https://[fd00::1]:7443").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.url.as_str()),
            ("fd00::1", "https://[fd00::1]:7443")
        );
        assert!(matches!(
            v6.server_name().unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(Endpoint::parse("http://x:6443").is_err());
        let _ = unverified_tls();
    }
}
