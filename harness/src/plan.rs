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
        peers.extend(crate::testnet::homes::bootstrap_peers(index, nodes));
    }
    for index in 0..nodes {
        for peer in crate::testnet::homes::bootstrap_peers(index, nodes) {
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

/// A member of a distributed engine (a swarm node) as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub id: String,
    pub hostname: String,
    /// Its address in the swarm (where its published ports are reached).
    pub address: String,
    pub cores: f64,
    pub memory_mib: f64,
    /// Its `blyan.zone` label: nodes of that zone run only there.
    pub zone: Option<String>,
    /// Its Docker API (`blyan.docker` label), to load images into without a registry.
    pub docker: Option<String>,
    /// The member the harness talks to.
    pub local: bool,
}

/// Splits nodes (given by zone, `"default"` for any) across `members`: each node goes to the
/// least loaded member of its zone that still has room for one more (memory: [`NODE_RSS_MIB`]
/// each within [`MEMORY_SHARE`] of the member's memory, and the container limit must fit the
/// member; CPU: [`NODE_CPU_CORES`] each). Returns the member index of every node, or why the
/// plan does not fit the cluster.
pub fn place(zones: &[String], limit_mib: u64, members: &[Member]) -> Result<Vec<usize>, String> {
    if members.is_empty() {
        return Err("the swarm has no ready, active member".into());
    }
    let mut load = vec![0usize; members.len()];
    let mut placement = Vec::with_capacity(zones.len());
    for (index, zone) in zones.iter().enumerate() {
        let eligible: Vec<usize> = (0..members.len())
            .filter(|&m| zone == "default" || members[m].zone.as_deref() == Some(zone.as_str()))
            .collect();
        if eligible.is_empty() {
            return Err(format!(
                "node {index} is in zone {zone:?} and no swarm member has the label \
                 blyan.zone={zone} (docker node update --label-add blyan.zone={zone} NODE)"
            ));
        }
        let room = |m: usize| {
            let member = &members[m];
            let memory = (load[m] + 1) as f64 * NODE_RSS_MIB;
            memory <= member.memory_mib * MEMORY_SHARE
                && (limit_mib as f64) <= member.memory_mib
                && (load[m] + 1) as f64 * NODE_CPU_CORES <= member.cores + 1e-9
        };
        let chosen = eligible
            .iter()
            .copied()
            .filter(|&m| room(m))
            .min_by_key(|&m| load[m]);
        let Some(chosen) = chosen else {
            let total_memory: f64 = eligible.iter().map(|&m| members[m].memory_mib).sum();
            let total_cores: f64 = eligible.iter().map(|&m| members[m].cores).sum();
            let wanted = zones.iter().filter(|z| *z == zone).count();
            return Err(format!(
                "{wanted} nodes in zone {zone:?} do not fit its {} member(s) ({total_memory:.0} \
                 MiB, {total_cores:.1} cores): each node needs {NODE_RSS_MIB:.0} MiB (at most \
                 {:.0}% of a member's memory) and {NODE_CPU_CORES} cores, and its {limit_mib} \
                 MiB limit must fit one member; node {index} found no room",
                eligible.len(),
                MEMORY_SHARE * 100.0
            ));
        };
        load[chosen] += 1;
        placement.push(chosen);
    }
    Ok(placement)
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

    fn member(id: &str, cores: f64, memory_mib: f64, zone: Option<&str>) -> Member {
        Member {
            id: id.into(),
            hostname: id.into(),
            address: String::new(),
            cores,
            memory_mib,
            zone: zone.map(str::to_string),
            docker: None,
            local: false,
        }
    }

    #[test]
    fn placement_spreads_nodes_and_refuses_what_does_not_fit() {
        let any = vec!["default".to_string(); 10];
        let members = [
            member("a", 2.0, 8192.0, None),
            member("b", 2.0, 8192.0, None),
            member("c", 2.0, 8192.0, None),
        ];
        let placement = place(&any, 256, &members).unwrap();
        let counts: Vec<usize> = (0..3)
            .map(|m| placement.iter().filter(|p| **p == m).count())
            .collect();
        assert_eq!(counts, vec![4, 3, 3], "spread evenly: {placement:?}");
        // Zones go to members with the matching label only.
        let zoned: Vec<String> = ["eu", "us", "eu", "default"].map(String::from).to_vec();
        let members = [
            member("a", 2.0, 8192.0, Some("us")),
            member("b", 2.0, 8192.0, Some("eu")),
        ];
        assert_eq!(place(&zoned, 256, &members).unwrap(), vec![1, 0, 1, 0]);
        let error = place(&["asia".to_string()], 256, &members).unwrap_err();
        assert!(error.contains("blyan.zone=asia"), "{error}");
        // 500 nodes need 18,000 MiB: two 8 GiB members are not enough, eight are.
        let five_hundred = vec!["default".to_string(); 500];
        let small = [
            member("a", 16.0, 8192.0, None),
            member("b", 16.0, 8192.0, None),
        ];
        let error = place(&five_hundred, 256, &small).unwrap_err();
        assert!(
            error.contains("500 nodes in zone \"default\" do not fit its 2 member"),
            "{error}"
        );
        let big: Vec<Member> = (0..8)
            .map(|i| member(&i.to_string(), 16.0, 8192.0, None))
            .collect();
        let placement = place(&five_hundred, 256, &big).unwrap();
        assert!((0..8).all(|m| placement.iter().filter(|p| **p == m).count() <= 63));
        // CPU bounds it too: 0.02 cores a node, so one core holds 50.
        let one_core = [member("a", 1.0, 65536.0, None)];
        assert!(place(&vec!["default".to_string(); 50], 256, &one_core).is_ok());
        assert!(place(&vec!["default".to_string(); 51], 256, &one_core).is_err());
        // A container limit larger than any member refuses.
        assert!(place(&any[..1], 16_384, &[member("a", 2.0, 8192.0, None)]).is_err());
        assert!(place(&any, 256, &[]).is_err());
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
