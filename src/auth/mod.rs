//! Authentication (x509, tokens) and authorization (RBAC, the Node rule).
//!
//! Planned (issue 5): nothing here yet. Until then the API server's
//! `apiserver::auth` seam allows every request.
