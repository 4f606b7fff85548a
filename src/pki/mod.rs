//! The cluster PKI: CAs, serving and client certificates, join tokens.
//!
//! Planned (issue 5): nothing here yet. Until then the API server makes a
//! self-signed serving certificate at start (`apiserver::server`).
