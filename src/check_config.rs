//! `rk3s check-config`: a preflight of this machine, in the spirit of k3s's
//! `check-config`. Each check prints one line `STATUS  ITEM  DETAIL`, where
//! STATUS is OK, WARN or FAIL and every non-OK line says what to do; a
//! summary line follows, and the exit code is 1 when anything FAILed.
//!
//! All host access goes through the [`Host`] seam ([`RealHost`] reads
//! `/proc`, `/sys`, `/lib/modules`, `PATH` and tries to bind ports), so the
//! checks are unit-tested against a fake. Kernel modules count as present
//! when loaded, built in, or installed as a loadable module (the systemd unit
//! `modprobe`s the ones rk3s needs). Inside a container without
//! `/lib/modules` the module checks can only WARN.

mod real;

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

pub use real::RealHost;

/// A transport protocol for port checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Whether a port can be bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    Free,
    /// Bound by someone; the process name when it could be found.
    InUse(Option<String>),
    /// The probe itself failed (e.g. no permission).
    Unknown(String),
}

/// The host as the checks see it.
pub trait Host {
    /// A file's contents, or `None` if it cannot be read.
    fn read(&self, path: &str) -> Option<String>;
    fn exists(&self, path: &str) -> bool;
    /// The program's path when it is on `PATH`.
    fn which(&self, program: &str) -> Option<PathBuf>;
    fn probe_port(&self, proto: Proto, port: u16) -> PortState;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub item: String,
    pub detail: String,
}

fn check(status: Status, item: &str, detail: impl Into<String>) -> Check {
    Check {
        status,
        item: item.to_string(),
        detail: detail.into(),
    }
}

/// Runs every check against `host`, in report order.
pub fn run_checks(host: &dyn Host) -> Vec<Check> {
    let mut checks = vec![check_cgroups(host), check_overlay(host)];
    for (module, why) in [
        ("vxlan", "flannel's VXLAN backend"),
        ("bridge", "the pod bridge"),
        ("br_netfilter", "service traffic on the pod bridge"),
        ("nf_tables", "service and network-policy rules"),
    ] {
        checks.push(check_module(host, module, why));
    }
    checks.push(check_firewall_tool(host));
    checks.push(check_proxy_modules(host));
    checks.push(check_bridge_netfilter(host));
    checks.push(check_ip_forward(host));
    for program in ["containerd", "runc"] {
        checks.push(match host.which(program) {
            Some(path) => check(Status::Ok, program, path.display().to_string()),
            None => check(
                Status::Fail,
                program,
                "not found on PATH: install it with `apt-get install containerd runc`",
            ),
        });
    }
    for (proto, port, what) in [
        (Proto::Tcp, 6443, "API server"),
        (Proto::Tcp, 10250, "kubelet"),
        (Proto::Udp, 8472, "flannel VXLAN"),
    ] {
        checks.push(check_port(host, proto, port, what));
    }
    // NFS volumes (a NAS) need the mount helper; everything else runs without it.
    checks.push(match host.which("mount.nfs") {
        Some(path) => check(Status::Ok, "mount.nfs", path.display().to_string()),
        None => check(
            Status::Warn,
            "mount.nfs",
            "not found: pods with NFS volumes cannot start; install it with `apt-get install nfs-common`",
        ),
    });
    checks.push(match host.which("kubectl") {
        Some(path) => check(Status::Ok, "kubectl", path.display().to_string()),
        None => check(
            Status::Warn,
            "kubectl",
            "not found on PATH: `rk3s kubectl` needs it; see https://kubernetes.io/docs/tasks/tools/",
        ),
    });
    checks
}

const CGROUP_FIX: &str = "enable the memory controller: on a Raspberry Pi append \
     `cgroup_memory=1 cgroup_enable=memory` to the single line in /boot/firmware/cmdline.txt \
     (older systems: /boot/cmdline.txt) and reboot; elsewhere add them to the kernel command line";

fn check_cgroups(host: &dyn Host) -> Check {
    const ITEM: &str = "cgroups";
    if let Some(controllers) = host.read("/sys/fs/cgroup/cgroup.controllers") {
        return if controllers.split_whitespace().any(|c| c == "memory") {
            check(Status::Ok, ITEM, "v2, memory controller enabled")
        } else {
            check(
                Status::Fail,
                ITEM,
                format!("v2, memory controller missing: {CGROUP_FIX}"),
            )
        };
    }
    let Some(table) = host.read("/proc/cgroups") else {
        return check(Status::Fail, ITEM, "no cgroup filesystem found (neither /sys/fs/cgroup/cgroup.controllers nor /proc/cgroups): mount cgroups (cgroup v2 recommended)");
    };
    // Columns: subsys_name hierarchy num_cgroups enabled
    let memory_enabled = table.lines().any(|line| {
        let cols: Vec<_> = line.split_whitespace().collect();
        cols.first() == Some(&"memory") && cols.get(3) == Some(&"1")
    });
    if memory_enabled {
        check(
            Status::Ok,
            ITEM,
            "v1, memory controller enabled (v2 recommended)",
        )
    } else {
        check(
            Status::Fail,
            ITEM,
            format!("v1, memory controller disabled: {CGROUP_FIX}"),
        )
    }
}

/// Where a kernel module stands on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleState {
    Loaded,
    Builtin,
    /// Installed under /lib/modules but not loaded.
    Loadable,
    Missing,
    /// No /lib/modules tree for the running kernel (e.g. inside a container).
    Unknown,
}

fn module_state(host: &dyn Host, name: &str) -> ModuleState {
    let norm = |s: &str| s.replace('-', "_");
    if host.read("/proc/modules").is_some_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().next().map(norm).as_deref() == Some(name))
    }) {
        return ModuleState::Loaded;
    }
    if host.exists(&format!("/sys/module/{name}")) {
        return ModuleState::Builtin;
    }
    let release = host
        .read("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let dir = format!("/lib/modules/{release}");
    // A module file's stem, e.g. `kernel/net/bridge/br_netfilter.ko.xz` → `br_netfilter`.
    let stem = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().map(norm)
    };
    let lists = |file: &str| {
        host.read(&format!("{dir}/{file}")).map(|text| {
            text.lines()
                .any(|l| stem(l.split(':').next().unwrap_or("")).as_deref() == Some(name))
        })
    };
    match (lists("modules.builtin"), lists("modules.dep")) {
        (Some(true), _) => ModuleState::Builtin,
        (_, Some(true)) => ModuleState::Loadable,
        (None, None) => ModuleState::Unknown,
        _ => ModuleState::Missing,
    }
}

fn check_module(host: &dyn Host, name: &str, why: &str) -> Check {
    let item = format!("module {name}");
    match module_state(host, name) {
        ModuleState::Loaded => check(Status::Ok, &item, "loaded"),
        ModuleState::Builtin => check(Status::Ok, &item, "built into the kernel"),
        ModuleState::Loadable => check(
            Status::Ok,
            &item,
            format!("available, not loaded yet (`modprobe {name}`)"),
        ),
        ModuleState::Unknown => check(
            Status::Warn,
            &item,
            format!("cannot tell: no /lib/modules for this kernel (container?); needed for {why}"),
        ),
        ModuleState::Missing => {
            let hint = if name == "vxlan" {
                "; on Ubuntu for Raspberry Pi: `apt-get install linux-modules-extra-raspi` and reboot; \
                 Raspberry Pi OS kernels have it built in or as a module (`apt full-upgrade` to a \
                 current kernel); or run the server with --flannel-backend host-gw"
            } else {
                ""
            };
            check(
                Status::Fail,
                &item,
                format!("not in this kernel; needed for {why}: install your distribution's extra kernel modules{hint}"),
            )
        }
    }
}

fn check_overlay(host: &dyn Host) -> Check {
    const ITEM: &str = "overlayfs";
    let registered = host.read("/proc/filesystems").is_some_and(|f| {
        f.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    if registered {
        return check(Status::Ok, ITEM, "supported");
    }
    match module_state(host, "overlay") {
        ModuleState::Loaded | ModuleState::Builtin => check(Status::Ok, ITEM, "supported"),
        ModuleState::Loadable => check(Status::Ok, ITEM, "available, not loaded yet (`modprobe overlay`)"),
        ModuleState::Unknown => check(Status::Warn, ITEM, "cannot tell: not in /proc/filesystems and no /lib/modules; containerd's snapshotter needs it"),
        ModuleState::Missing => check(Status::Fail, ITEM, "the kernel has no overlay filesystem; containerd's snapshotter needs it: use a kernel with CONFIG_OVERLAY_FS"),
    }
}

/// The pod network and the service proxy apply their tables with `nft -f`
/// (as kube-proxy's nftables mode does): without it no Service routes.
fn check_firewall_tool(host: &dyn Host) -> Check {
    const ITEM: &str = "nft";
    match host.which("nft") {
        Some(path) => check(Status::Ok, ITEM, path.display().to_string()),
        None => check(
            Status::Fail,
            ITEM,
            "not found on PATH: the pod network and the service proxy need it: `apt-get install nftables`",
        ),
    }
}

/// The nftables expressions the service proxy's table uses (DNAT,
/// masquerade, numgen, fib, reject, conntrack state, the NAT chain type).
const PROXY_MODULES: [&str; 7] = [
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_numgen",
    "nft_fib_ipv4",
    "nft_reject_ipv4",
    "nft_ct",
];

fn check_proxy_modules(host: &dyn Host) -> Check {
    const ITEM: &str = "service proxy modules";
    let states: Vec<(&str, ModuleState)> =
        PROXY_MODULES.iter().map(|m| (*m, module_state(host, m))).collect();
    let missing: Vec<&str> = states
        .iter()
        .filter(|(_, s)| *s == ModuleState::Missing)
        .map(|(m, _)| *m)
        .collect();
    if !missing.is_empty() {
        return check(
            Status::Fail,
            ITEM,
            format!("not in this kernel: {}; Services cannot route without them", missing.join(", ")),
        );
    }
    if states.iter().any(|(_, s)| *s == ModuleState::Unknown) {
        return check(
            Status::Warn,
            ITEM,
            "cannot tell: no /lib/modules for this kernel (container?); the service proxy needs nftables NAT, masquerade, numgen, fib, reject and ct",
        );
    }
    check(Status::Ok, ITEM, PROXY_MODULES.join(", "))
}

/// Pod → Service → pod on the same bridge: the reply is bridged, and only
/// `bridge-nf-call-iptables` sends it through conntrack to be un-NATed.
fn check_bridge_netfilter(host: &dyn Host) -> Check {
    const ITEM: &str = "bridge-nf-call-iptables";
    match host
        .read("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .as_deref()
        .map(str::trim)
    {
        Some("1") => check(Status::Ok, ITEM, "enabled"),
        Some(_) => check(
            Status::Warn,
            ITEM,
            "off: a pod reaching a Service backed by a pod on the same node gets no reply; \
             run `sysctl -w net.bridge.bridge-nf-call-iptables=1` and persist it in /etc/sysctl.d/90-rk3s.conf",
        ),
        None => check(
            Status::Warn,
            ITEM,
            "br_netfilter is not loaded: `modprobe br_netfilter` (and list it in /etc/modules-load.d/rk3s.conf)",
        ),
    }
}

fn check_ip_forward(host: &dyn Host) -> Check {
    const ITEM: &str = "ip forwarding";
    match host.read("/proc/sys/net/ipv4/ip_forward").as_deref().map(str::trim) {
        Some("1") => check(Status::Ok, ITEM, "enabled"),
        _ => check(
            Status::Warn,
            ITEM,
            "net.ipv4.ip_forward is off; pods cannot reach other nodes: run `sysctl -w net.ipv4.ip_forward=1` \
             and persist it with `echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-rk3s.conf`",
        ),
    }
}

fn check_port(host: &dyn Host, proto: Proto, port: u16, what: &str) -> Check {
    let name = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let item = format!("port {port}/{name}");
    match host.probe_port(proto, port) {
        PortState::Free => check(Status::Ok, &item, format!("free ({what})")),
        PortState::InUse(Some(owner)) if owner == "rk3s" => check(
            Status::Ok,
            &item,
            format!("in use by rk3s ({what}), already running"),
        ),
        PortState::InUse(owner) => check(
            Status::Fail,
            &item,
            format!(
                "in use{}: rk3s needs it for the {what}; stop that service",
                owner.map(|o| format!(" by {o}")).unwrap_or_default()
            ),
        ),
        PortState::Unknown(e) => check(Status::Warn, &item, format!("could not check: {e}")),
    }
}

/// Prints the report; the exit code is 1 when any check failed.
pub fn report(
    checks: &[Check],
    out: &mut dyn std::io::Write,
    colour: bool,
) -> std::io::Result<bool> {
    let width = checks.iter().map(|c| c.item.len()).max().unwrap_or(0);
    for c in checks {
        let status = format!("{:<4}", c.status.to_string());
        let status = match (colour, c.status) {
            (false, _) => status,
            (true, Status::Ok) => format!("\x1b[32m{status}\x1b[0m"),
            (true, Status::Warn) => format!("\x1b[33m{status}\x1b[0m"),
            (true, Status::Fail) => format!("\x1b[31m{status}\x1b[0m"),
        };
        writeln!(out, "{status}  {:<width$}  {}", c.item, c.detail)?;
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let failed = count(Status::Fail);
    writeln!(
        out,
        "{} OK, {} WARN, {} FAIL: {}",
        count(Status::Ok),
        count(Status::Warn),
        failed,
        if failed == 0 {
            "this machine can run rk3s"
        } else {
            "fix the FAIL items above"
        }
    )?;
    Ok(failed == 0)
}

/// `rk3s check-config`.
pub fn main() -> ExitCode {
    let checks = run_checks(&RealHost);
    let stdout = std::io::stdout();
    let colour = stdout.is_terminal();
    match report(&checks, &mut stdout.lock(), colour) {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A scripted host: files, existing paths, programs and port states.
    #[derive(Default)]
    struct FakeHost {
        files: HashMap<String, String>,
        paths: HashSet<String>,
        programs: HashSet<String>,
        busy: HashMap<(Proto, u16), PortState>,
    }

    impl FakeHost {
        /// A healthy cgroup v2 Raspberry Pi with every module and binary present.
        fn healthy() -> Self {
            let mut h = FakeHost::default();
            h.file(
                "/sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu io memory pids\n",
            );
            h.file("/proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n");
            h.file(
                "/proc/modules",
                "vxlan 1 0 - Live 0x0\nbr_netfilter 1 0 - Live 0x0\n",
            );
            h.file("/proc/sys/kernel/osrelease", "6.6.31+rpt-rpi-v8\n");
            h.file(
                "/lib/modules/6.6.31+rpt-rpi-v8/modules.builtin",
                "kernel/net/bridge/bridge.ko\n",
            );
            h.file(
                "/lib/modules/6.6.31+rpt-rpi-v8/modules.dep",
                "kernel/net/netfilter/nf_tables.ko.xz: kernel/lib/libcrc32c.ko.xz\n\
                 kernel/net/netfilter/nft_chain_nat.ko.xz:\n\
                 kernel/net/netfilter/nft_nat.ko.xz:\n\
                 kernel/net/netfilter/nft_masq.ko.xz:\n\
                 kernel/net/netfilter/nft_numgen.ko.xz:\n\
                 kernel/net/ipv4/netfilter/nft_fib_ipv4.ko.xz:\n\
                 kernel/net/ipv4/netfilter/nft_reject_ipv4.ko.xz:\n\
                 kernel/net/netfilter/nft_ct.ko.xz:\n",
            );
            h.file("/proc/sys/net/ipv4/ip_forward", "1\n");
            h.file("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
            for p in ["containerd", "runc", "nft", "kubectl", "mount.nfs"] {
                h.programs.insert(p.into());
            }
            h
        }

        fn file(&mut self, path: &str, text: &str) {
            self.files.insert(path.into(), text.into());
        }
    }

    impl Host for FakeHost {
        fn read(&self, path: &str) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn exists(&self, path: &str) -> bool {
            self.paths.contains(path) || self.files.contains_key(path)
        }
        fn which(&self, program: &str) -> Option<PathBuf> {
            self.programs
                .contains(program)
                .then(|| PathBuf::from("/usr/bin").join(program))
        }
        fn probe_port(&self, proto: Proto, port: u16) -> PortState {
            self.busy
                .get(&(proto, port))
                .cloned()
                .unwrap_or(PortState::Free)
        }
    }

    fn find<'a>(checks: &'a [Check], item: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.item == item)
            .unwrap_or_else(|| panic!("no check {item}"))
    }

    #[test]
    fn healthy_host_passes_everything() {
        let checks = run_checks(&FakeHost::healthy());
        let not_ok: Vec<_> = checks.iter().filter(|c| c.status != Status::Ok).collect();
        assert!(not_ok.is_empty(), "{not_ok:?}");
        assert_eq!(
            find(&checks, "module bridge").detail,
            "built into the kernel"
        );
        assert!(find(&checks, "module nf_tables")
            .detail
            .contains("modprobe nf_tables"));
        let mut out = Vec::new();
        assert!(report(&checks, &mut out, false).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with(&format!("{} OK, 0 WARN, 0 FAIL", checks.len())),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn missing_memory_cgroup_fails_with_the_raspberry_pi_fix() {
        let mut h = FakeHost::healthy();
        h.file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n");
        let c = find(&run_checks(&h), "cgroups").clone();
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("cgroup_memory=1 cgroup_enable=memory"));
        assert!(
            c.detail.contains("/boot/firmware/cmdline.txt")
                && c.detail.contains("/boot/cmdline.txt")
        );

        let mut h = FakeHost::healthy();
        h.files.remove("/sys/fs/cgroup/cgroup.controllers");
        h.file(
            "/proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n",
        );
        assert_eq!(find(&run_checks(&h), "cgroups").status, Status::Fail);
        h.file(
            "/proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t90\t1\n",
        );
        assert_eq!(find(&run_checks(&h), "cgroups").status, Status::Ok);
    }

    #[test]
    fn missing_module_binaries_and_busy_ports_fail_with_a_fix() {
        let mut h = FakeHost::healthy();
        h.file("/proc/modules", "br_netfilter 1 0 - Live 0x0\n");
        h.programs.remove("containerd");
        h.busy.insert(
            (Proto::Tcp, 6443),
            PortState::InUse(Some("k3s-server (pid 42)".into())),
        );
        h.busy.insert((Proto::Udp, 8472), PortState::InUse(None));
        let checks = run_checks(&h);
        let vxlan = find(&checks, "module vxlan");
        assert_eq!(vxlan.status, Status::Fail);
        assert!(vxlan.detail.contains("linux-modules-extra-raspi"));
        assert!(vxlan.detail.contains("Raspberry Pi OS"));
        assert!(vxlan.detail.contains("host-gw"));
        let containerd = find(&checks, "containerd");
        assert_eq!(containerd.status, Status::Fail);
        assert!(containerd
            .detail
            .contains("apt-get install containerd runc"));
        assert!(find(&checks, "port 6443/tcp")
            .detail
            .contains("in use by k3s-server (pid 42)"));
        assert_eq!(find(&checks, "port 8472/udp").status, Status::Fail);
        let mut out = Vec::new();
        assert!(!report(&checks, &mut out, true).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\x1b[31mFAIL\x1b[0m") && text.contains("4 FAIL"),
            "{text}"
        );
    }

    #[test]
    fn warnings_do_not_fail() {
        let mut h = FakeHost::healthy();
        h.file("/proc/sys/net/ipv4/ip_forward", "0\n");
        h.programs.remove("kubectl");
        h.programs.remove("mount.nfs");
        h.busy
            .insert((Proto::Tcp, 10250), PortState::InUse(Some("rk3s".into())));
        let checks = run_checks(&h);
        assert!(find(&checks, "ip forwarding")
            .detail
            .contains("sysctl -w net.ipv4.ip_forward=1"));
        assert_eq!(find(&checks, "kubectl").status, Status::Warn);
        let nfs = find(&checks, "mount.nfs");
        assert_eq!(nfs.status, Status::Warn);
        assert!(nfs.detail.contains("nfs-common"), "{}", nfs.detail);
        assert_eq!(find(&checks, "port 10250/tcp").status, Status::Ok);
        assert!(report(&checks, &mut Vec::new(), false).unwrap());
    }

    #[test]
    fn container_without_lib_modules_warns_instead_of_failing() {
        let mut h = FakeHost::healthy();
        h.files.retain(|k, _| !k.starts_with("/lib/modules"));
        h.file("/proc/modules", "");
        let checks = run_checks(&h);
        assert_eq!(find(&checks, "module vxlan").status, Status::Warn);
        h.paths.insert("/sys/module/vxlan".into());
        assert_eq!(find(&run_checks(&h), "module vxlan").status, Status::Ok);
    }

    #[test]
    fn the_service_proxy_needs_nft_its_modules_and_bridge_netfilter() {
        let h = FakeHost::healthy();
        let checks = run_checks(&h);
        assert_eq!(find(&checks, "nft").status, Status::Ok);
        assert_eq!(find(&checks, "service proxy modules").status, Status::Ok);
        assert_eq!(find(&checks, "bridge-nf-call-iptables").status, Status::Ok);

        let mut h = FakeHost::healthy();
        h.programs.remove("nft");
        let nft = run_checks(&h).into_iter().find(|c| c.item == "nft").unwrap();
        assert_eq!(nft.status, Status::Fail);
        assert!(nft.detail.contains("apt-get install nftables"), "{}", nft.detail);

        let mut h = FakeHost::healthy();
        let dep = "/lib/modules/6.6.31+rpt-rpi-v8/modules.dep";
        let without = h.files[dep].replace("kernel/net/netfilter/nft_numgen.ko.xz:\n", "");
        h.file(dep, &without);
        h.file("/proc/sys/net/bridge/bridge-nf-call-iptables", "0\n");
        let checks = run_checks(&h);
        let modules = find(&checks, "service proxy modules");
        assert_eq!(modules.status, Status::Fail);
        assert!(modules.detail.contains("nft_numgen") && !modules.detail.contains("nft_nat,"), "{}", modules.detail);
        let bridge = find(&checks, "bridge-nf-call-iptables");
        assert_eq!(bridge.status, Status::Warn);
        assert!(bridge.detail.contains("sysctl -w net.bridge.bridge-nf-call-iptables=1"));
    }
}
