//! Reading CPU and memory from cgroups and from `/proc`, and the math that
//! turns two readings into a rate, as cadvisor and the kubelet do.
//!
//! Containers (`/rk3s/pods/<pod uid>/<container id>`, cgroupfs driver):
//! - cgroup v2 (`/sys/fs/cgroup/cgroup.controllers` exists): CPU is
//!   `cpu.stat`'s `usage_usec`; memory usage is `memory.current` and the
//!   working set is usage minus `memory.stat`'s `inactive_file`.
//! - cgroup v1 (hybrid or legacy hosts): CPU is `cpuacct/<path>/cpuacct.usage`
//!   (nanoseconds); memory usage is `memory/<path>/memory.usage_in_bytes`
//!   and the working set is usage minus `memory.stat`'s `total_inactive_file`.
//!
//! The working set never goes below zero (cadvisor clamps it likewise).
//!
//! The node: `/proc/stat`'s first `cpu` line (user, nice, system, irq,
//! softirq and steal ticks; idle and iowait are not usage) and
//! `/proc/meminfo` (usage = MemTotal − MemFree, working set = usage −
//! Inactive(file)), the same split the kubelet makes for the root cgroup.
//!
//! Every file goes through [`HostFiles`], so the parsing and math are unit
//! tested against fixed file contents.

use std::io;
use std::path::PathBuf;

/// Where the figures are read from: the host in production, a map in tests.
pub trait HostFiles: Send + Sync {
    fn read(&self, path: &str) -> io::Result<String>;
    fn exists(&self, path: &str) -> bool;
}

/// The machine's own `/sys/fs/cgroup` and `/proc`.
pub struct RealHost {
    /// `/` in production; a directory holding `sys/` and `proc/` otherwise.
    pub root: PathBuf,
}

impl Default for RealHost {
    fn default() -> Self {
        RealHost { root: PathBuf::from("/") }
    }
}

impl RealHost {
    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl HostFiles for RealHost {
    fn read(&self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(path))
    }
    fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }
}

/// The cgroup hierarchy this host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    V2,
    V1,
}

impl CgroupLayout {
    pub fn detect(host: &dyn HostFiles) -> Self {
        if host.exists("/sys/fs/cgroup/cgroup.controllers") {
            CgroupLayout::V2
        } else {
            CgroupLayout::V1
        }
    }
}

/// One reading of a cgroup or of the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Cumulative CPU time, in nanoseconds (summed over cores).
    pub cpu_ns: u64,
    pub memory_usage: u64,
    pub working_set: u64,
}

fn bad(path: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("failed to read {what} from {path}"))
}

/// The value of `key` in a flat-keyed file (`cpu.stat`, `memory.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn number(host: &dyn HostFiles, path: &str) -> io::Result<u64> {
    host.read(path)?
        .trim()
        .parse()
        .map_err(|_| bad(path, "a number"))
}

/// Reads the cgroup at `path` (as given to runc: `/rk3s/pods/<uid>/<id>`).
pub fn read_cgroup(host: &dyn HostFiles, layout: CgroupLayout, path: &str) -> io::Result<Reading> {
    let path = path.trim_end_matches('/');
    let (cpu_ns, usage, stat_path, inactive_key) = match layout {
        CgroupLayout::V2 => {
            let base = format!("/sys/fs/cgroup{path}");
            let stat = format!("{base}/cpu.stat");
            let usec = keyed(&host.read(&stat)?, "usage_usec").ok_or_else(|| bad(&stat, "usage_usec"))?;
            let usage = number(host, &format!("{base}/memory.current"))?;
            (usec.saturating_mul(1000), usage, format!("{base}/memory.stat"), "inactive_file")
        }
        CgroupLayout::V1 => {
            let cpu = number(host, &format!("/sys/fs/cgroup/cpuacct{path}/cpuacct.usage"))?;
            let base = format!("/sys/fs/cgroup/memory{path}");
            let usage = number(host, &format!("{base}/memory.usage_in_bytes"))?;
            (cpu, usage, format!("{base}/memory.stat"), "total_inactive_file")
        }
    };
    let inactive = keyed(&host.read(&stat_path)?, inactive_key).unwrap_or(0);
    Ok(Reading {
        cpu_ns,
        memory_usage: usage,
        working_set: usage.saturating_sub(inactive),
    })
}

/// The kernel's clock ticks per second for `/proc/stat` (USER_HZ).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the running kernel.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Reads the node's CPU and memory from `/proc/stat` and `/proc/meminfo`.
pub fn read_node(host: &dyn HostFiles, ticks_per_second: u64) -> io::Result<Reading> {
    let stat = host.read("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad("/proc/stat", "the cpu line"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let cpu_ns = busy.saturating_mul(1_000_000_000) / ticks_per_second.max(1);
    let meminfo = host.read("/proc/meminfo")?;
    let kb = |key: &str| {
        meminfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == key).then(|| v.split_whitespace().next()?.parse::<u64>().ok()).flatten()
        })
    };
    let total = kb("MemTotal").ok_or_else(|| bad("/proc/meminfo", "MemTotal"))?;
    let free = kb("MemFree").ok_or_else(|| bad("/proc/meminfo", "MemFree"))?;
    let inactive = kb("Inactive(file)").unwrap_or(0);
    let usage = total.saturating_sub(free) * 1024;
    Ok(Reading {
        cpu_ns,
        memory_usage: usage,
        working_set: usage.saturating_sub(inactive * 1024),
    })
}

/// The average CPU rate, in nanocores, between two cumulative readings
/// `elapsed_ns` apart; `None` without a positive interval or when the
/// counter went backwards (a new cgroup under the same path).
pub fn nanocores(prev_cpu_ns: u64, cpu_ns: u64, elapsed_ns: u64) -> Option<u64> {
    if elapsed_ns == 0 {
        return None;
    }
    let used = cpu_ns.checked_sub(prev_cpu_ns)?;
    Some(((used as u128 * 1_000_000_000) / elapsed_ns as u128) as u64)
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Files by path, changeable between readings.
    #[derive(Default)]
    pub struct FakeHost(pub Mutex<HashMap<String, String>>);

    impl FakeHost {
        pub fn set(&self, path: &str, text: &str) {
            self.0.lock().unwrap().insert(path.into(), text.into());
        }
    }

    impl HostFiles for FakeHost {
        fn read(&self, path: &str) -> io::Result<String> {
            self.0
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.to_string()))
        }
        fn exists(&self, path: &str) -> bool {
            self.0.lock().unwrap().contains_key(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;

    #[test]
    fn v2_cgroup_working_set_is_usage_minus_inactive_file() {
        let host = FakeHost::default();
        host.set("/sys/fs/cgroup/cgroup.controllers", "cpu memory");
        let base = "/sys/fs/cgroup/rk3s/pods/u/c";
        host.set(&format!("{base}/cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n");
        host.set(&format!("{base}/memory.current"), "60000000\n");
        host.set(&format!("{base}/memory.stat"), "anon 50000000\nfile 10000000\ninactive_anon 0\ninactive_file 8000000\nactive_file 2000000\n");
        assert_eq!(CgroupLayout::detect(&host), CgroupLayout::V2);
        let r = read_cgroup(&host, CgroupLayout::V2, "/rk3s/pods/u/c").unwrap();
        assert_eq!(r, Reading { cpu_ns: 2_500_000_000, memory_usage: 60_000_000, working_set: 52_000_000 });
    }

    #[test]
    fn v1_cgroup_reads_cpuacct_and_total_inactive_file() {
        let host = FakeHost::default();
        host.set("/sys/fs/cgroup/cpuacct/rk3s/pods/u/c/cpuacct.usage", "123456789\n");
        host.set("/sys/fs/cgroup/memory/rk3s/pods/u/c/memory.usage_in_bytes", "4096\n");
        // `inactive_file` is this cgroup alone; `total_` includes children.
        host.set("/sys/fs/cgroup/memory/rk3s/pods/u/c/memory.stat", "inactive_file 1\ntotal_inactive_file 8192\n");
        assert_eq!(CgroupLayout::detect(&host), CgroupLayout::V1);
        let r = read_cgroup(&host, CgroupLayout::V1, "/rk3s/pods/u/c").unwrap();
        // More inactive file pages than usage (shared pages) clamps to zero.
        assert_eq!(r, Reading { cpu_ns: 123_456_789, memory_usage: 4096, working_set: 0 });
        assert!(read_cgroup(&host, CgroupLayout::V1, "/rk3s/pods/u/gone").is_err());
    }

    #[test]
    fn node_reads_proc_stat_and_meminfo() {
        let host = FakeHost::default();
        host.set(
            "/proc/stat",
            "cpu  100 20 30 4000 50 6 7 8 9 0\ncpu0 50 10 15 2000 25 3 3 4 0 0\nintr 1\n",
        );
        host.set(
            "/proc/meminfo",
            "MemTotal:        2000 kB\nMemFree:          500 kB\nMemAvailable:    1200 kB\nInactive(file):   300 kB\n",
        );
        let r = read_node(&host, 100).unwrap();
        // user+nice+system+irq+softirq+steal = 171 ticks at 100 Hz.
        assert_eq!(r.cpu_ns, 1_710_000_000);
        assert_eq!(r.memory_usage, 1500 * 1024);
        assert_eq!(r.working_set, 1200 * 1024);
    }

    #[test]
    fn rates_are_usage_over_elapsed_time() {
        // One full core for ten seconds.
        assert_eq!(nanocores(5_000_000_000, 15_000_000_000, 10_000_000_000), Some(1_000_000_000));
        // A quarter core.
        assert_eq!(nanocores(0, 2_500_000_000, 10_000_000_000), Some(250_000_000));
        assert_eq!(nanocores(10, 5, 1_000), None, "a counter reset has no rate");
        assert_eq!(nanocores(0, 5, 0), None);
    }
}
