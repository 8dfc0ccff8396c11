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

/// The kernel's limit on neighbour (ARP) entries, `net.ipv4.neigh.default.gc_thresh3`. Beyond
/// it no new entry is made ("neighbour: arp_cache: neighbor table overflow!" in the kernel log)
/// and new links between containers, or from the host to a container, fail.
pub fn neighbour_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Neighbour entries a Docker devnet of `nodes` needs: every container resolves the nodes it
/// links to (those it dials and those that dial it) and its gateway, and the host resolves every
/// container. 100 nodes need about 1,600; a default limit of 1,024 overflowed here, and the host
/// lost its way to every container while they went on committing among themselves.
pub fn neighbour_entries(nodes: usize) -> usize {
    let mut linked = vec![std::collections::HashSet::new(); nodes];
    for (index, peers) in linked.iter_mut().enumerate() {
        peers.extend(crate::process::bootstrap_peers(index, nodes));
    }
    for index in 0..nodes {
        for peer in crate::process::bootstrap_peers(index, nodes) {
            linked[peer].insert(index);
        }
    }
    linked.iter().map(|peers| peers.len() + 1).sum::<usize>() + nodes
}

/// `Err` with the reason and the fix when a Docker devnet of `nodes` would overflow this host's
/// neighbour table.
pub fn check_neighbours(nodes: usize, limit: Option<usize>) -> Result<(), String> {
    let needed = neighbour_entries(nodes);
    match limit {
        Some(limit) if needed > limit => Err(format!(
            "a Docker devnet of {nodes} nodes needs about {needed} neighbour (ARP) entries and \
             this kernel keeps at most {limit} (net.ipv4.neigh.default.gc_thresh3); beyond that \
             the host cannot reach the containers. Raise it, e.g. `sudo sysctl -w \
             net.ipv4.neigh.default.gc_thresh1={} net.ipv4.neigh.default.gc_thresh2={} \
             net.ipv4.neigh.default.gc_thresh3={}`",
            (needed * 2).next_power_of_two() / 4,
            (needed * 2).next_power_of_two() / 2,
            (needed * 2).next_power_of_two()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_entries_follow_the_links() {
        // Up to 16 nodes everyone links to everyone: n (n - 1 + 1) + n.
        assert_eq!(neighbour_entries(4), 4 * 4 + 4);
        assert_eq!(neighbour_entries(10), 10 * 10 + 10);
        let hundred = neighbour_entries(100);
        assert!((1_300..2_000).contains(&hundred), "{hundred}");
        assert!(check_neighbours(10, Some(1024)).is_ok());
        let error = check_neighbours(100, Some(1024)).unwrap_err();
        assert!(error.contains("gc_thresh3=4096"), "{error}");
        assert!(check_neighbours(100, Some(16_384)).is_ok());
        assert!(
            check_neighbours(100, None).is_ok(),
            "unknown limit: no refusal"
        );
    }

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
