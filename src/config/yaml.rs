//! The resolved configuration written back as YAML in the config file
//! format (long flag names as keys), for `--print-config`. Tokens are masked.

use serde_yaml::{Mapping, Value};

use super::{AgentConfig, NodeConfig, ServerConfig, TokenSource};

impl ServerConfig {
    /// The resolved configuration as YAML with the long flag names as keys
    /// (the config file format); the token is masked.
    pub fn to_yaml(&self) -> String {
        let mut m = Mapping::new();
        put(&mut m, "data-dir", self.data_dir.display());
        put(&mut m, "bind-address", self.bind_address);
        m.insert(
            "https-listen-port".into(),
            Value::from(self.https_listen_port),
        );
        if let Some(a) = self.advertise_address {
            put(&mut m, "advertise-address", a);
        }
        list(&mut m, "tls-san", self.tls_san.iter());
        put(&mut m, "cluster-cidr", self.cluster_cidr);
        put(&mut m, "service-cidr", self.service_cidr);
        put(&mut m, "cluster-dns", self.cluster_dns);
        put(&mut m, "cluster-domain", &self.cluster_domain);
        put(
            &mut m,
            "service-node-port-range",
            self.service_node_port_range,
        );
        if self.token.is_some() {
            put(&mut m, "token", "********");
        }
        if let Some(f) = &self.token_file {
            put(&mut m, "token-file", f.display());
        }
        if let Some(first) = &self.join_server {
            put(&mut m, "server", first);
        }
        put(&mut m, "write-kubeconfig", self.write_kubeconfig.display());
        put(
            &mut m,
            "write-kubeconfig-mode",
            format!("{:04o}", self.write_kubeconfig_mode),
        );
        list(&mut m, "disable", self.disable.iter().map(|c| c.name()));
        m.insert("disable-agent".into(), Value::from(self.disable_agent));
        put(&mut m, "default-local-storage-path", self.default_local_storage_path.display());
        put(&mut m, "flannel-backend", self.flannel_backend.name());
        let h = &self.habits;
        put(&mut m, "snapshot-schedule-cron", h.snapshot_schedule_cron.as_deref().unwrap_or(""));
        put(&mut m, "snapshot-retention", h.snapshot_retention);
        if let Some(d) = &h.snapshot_dir {
            put(&mut m, "snapshot-dir", d.display());
        }
        m.insert("secrets-encryption".into(), Value::from(h.secrets_encryption));
        if let Some(p) = &h.cluster_reset_restore_path {
            m.insert("cluster-reset".into(), Value::from(true));
            put(&mut m, "cluster-reset-restore-path", p.display());
        }
        if let super::Datastore::Etcd(e) = &self.datastore {
            put(&mut m, "datastore-endpoint", e.urls.join(","));
            for (k, f) in [("datastore-cafile", &e.cafile), ("datastore-certfile", &e.certfile), ("datastore-keyfile", &e.keyfile)] {
                if let Some(f) = f {
                    put(&mut m, k, f.display());
                }
            }
        }
        node_yaml(&mut m, &self.node);
        m.insert("debug".into(), Value::from(self.debug));
        serde_yaml::to_string(&m).expect("a mapping of strings serialises")
    }
}

impl AgentConfig {
    /// The resolved configuration as YAML (config file format); the token is masked.
    pub fn to_yaml(&self) -> String {
        let mut m = Mapping::new();
        put(&mut m, "server", &self.server);
        match &self.token {
            TokenSource::Value(_) => put(&mut m, "token", "********"),
            TokenSource::File(f) => put(&mut m, "token-file", f.display()),
        }
        put(&mut m, "data-dir", self.data_dir.display());
        put(&mut m, "lb-server-port", self.lb_server_port);
        node_yaml(&mut m, &self.node);
        m.insert("debug".into(), Value::from(self.debug));
        serde_yaml::to_string(&m).expect("a mapping of strings serialises")
    }
}

fn put(m: &mut Mapping, key: &str, value: impl std::fmt::Display) {
    m.insert(key.into(), Value::String(value.to_string()));
}

fn list<T: std::fmt::Display>(m: &mut Mapping, key: &str, items: impl Iterator<Item = T>) {
    let items: Vec<Value> = items.map(|i| Value::String(i.to_string())).collect();
    if !items.is_empty() {
        m.insert(key.into(), Value::Sequence(items));
    }
}

fn node_yaml(m: &mut Mapping, node: &NodeConfig) {
    put(m, "node-name", &node.node_name);
    if let Some(ip) = node.node_ip {
        put(m, "node-ip", ip);
    }
    list(
        m,
        "node-label",
        node.node_labels.iter().map(|(k, v)| format!("{k}={v}")),
    );
    list(m, "node-taint", node.node_taints.iter());
    list(m, "kubelet-arg", node.kubelet_args.raw.iter());
    put(
        m,
        "container-runtime-endpoint",
        &node.container_runtime_endpoint,
    );
    put(m, "private-registry", node.private_registry.display());
    if let Some(ip) = node.node_external_ip {
        put(m, "node-external-ip", ip);
    }
    if let Some(iface) = &node.flannel_iface {
        put(m, "flannel-iface", iface);
    }
    if let Some(r) = &node.resolv_conf {
        put(m, "resolv-conf", r.display());
    }
    put(m, "ingress-http-port", node.ingress_http_port);
    put(m, "ingress-https-port", node.ingress_https_port);
    put(m, "run-dir", node.run_dir.display());
}
