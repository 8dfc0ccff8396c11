//! Capacity planning: will a devnet of N nodes fit this host? From per-node figures measured on
//! the 2-core development machine (release build, `timeout_commit` 100 ms, idle load), scaled
//! to this host's available memory and cores.

use serde::Serialize;

/// Resident memory of one node early in a devnet's life, MiB. Measured (release, `ps` RSS):
/// 25.7 MiB in a 4-node devnet, 28-30 MiB in a 20-node one, 35.0 MiB mean (35.8 max) in a
/// 100-node one; rounded up. See `docs/HARNESS.md`.
pub const NODE_RSS_MIB: f64 = 36.0;
/// CPU of one node, in cores: 100 process nodes shared this machine's 2 cores and reached
/// height 5 in 26 s, so 2 / 100.
pub const NODE_CPU_CORES: f64 = 0.02;
/// Share of available memory a devnet may take.
const MEMORY_SHARE: f64 = 0.8;

#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    pub nodes: usize,
    pub memory_mib: f64,
    pub memory_available_mib: f64,
    pub memory_limit_mib: f64,
    pub cpu_cores: f64,
    pub cores: usize,
    pub fits: bool,
    pub reason: String,
}

impl Estimate {
    pub fn describe(&self) -> String {
        format!(
            "{} nodes: about {:.0} MiB resident ({:.0} MiB per node; {:.0} MiB available here, \
             container limit {:.0} MiB each) and {:.1} of {} cores. {}",
            self.nodes,
            self.memory_mib,
            NODE_RSS_MIB,
            self.memory_available_mib,
            self.memory_limit_mib,
            self.cpu_cores,
            self.cores,
            if self.fits {
                "Fits.".to_string()
            } else {
                format!("Does not fit: {}.", self.reason)
            }
        )
    }
}

/// Available memory in MiB, from /proc/meminfo (`MemAvailable`).
pub fn available_memory_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The estimate for `nodes` nodes with a container memory limit of `limit_mib` each.
pub fn estimate(nodes: usize, limit_mib: u64) -> Estimate {
    let available = available_memory_mib().unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    estimate_for(nodes, limit_mib, available, cores)
}

/// [`estimate`] for a given host.
pub fn estimate_for(nodes: usize, limit_mib: u64, available_mib: f64, cores: usize) -> Estimate {
    let memory = nodes as f64 * NODE_RSS_MIB;
    let cpu = nodes as f64 * NODE_CPU_CORES;
    let mut reasons = Vec::new();
    if memory > available_mib * MEMORY_SHARE {
        reasons.push(format!(
            "{memory:.0} MiB needed, {:.0} MiB is {:.0}% of what is available",
            available_mib * MEMORY_SHARE,
            MEMORY_SHARE * 100.0
        ));
    }
    if cpu > cores as f64 {
        reasons.push(format!("{cpu:.1} cores needed, {cores} here"));
    }
    if (limit_mib as f64) < NODE_RSS_MIB * 1.5 {
        reasons.push(format!(
            "a {limit_mib} MiB container limit leaves no headroom over {NODE_RSS_MIB:.0} MiB per node"
        ));
    }
    Estimate {
        nodes,
        memory_mib: memory,
        memory_available_mib: available_mib,
        memory_limit_mib: limit_mib as f64,
        cpu_cores: cpu,
        cores,
        fits: reasons.is_empty(),
        reason: reasons.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_by_memory_and_cores() {
        assert!(estimate_for(100, 256, 20_000.0, 2).fits);
        let tight = estimate_for(1000, 256, 20_000.0, 2);
        assert!(!tight.fits);
        assert!(tight.reason.contains("MiB needed"), "{}", tight.reason);
        assert!(
            !estimate_for(4, 32, 20_000.0, 2).fits,
            "limit below the per-node need"
        );
    }
}
