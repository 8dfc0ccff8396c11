//! NAT topologies for the Docker backend (`[network.topology]`): each "home" is a Docker
//! bridge network of its own whose nodes reach the devnet's public network only through a NAT
//! router container. The router image is built offline, `FROM scratch`, from the host's own
//! `iptables` (nft or legacy), `ip` and `sleep` binaries and the shared libraries they load.
//!
//! - The router sits on both networks (public `.200+h`, home `.2`) with IP forwarding on and
//!   masquerades what leaves the home: "endpoint-independent" keeps the source port (one
//!   mapping per local address, so TCP hole punching works), "address-dependent" picks a
//!   random port per connection (`--random-fully`: a peer cannot predict the mapping, hole
//!   punching fails and the relay carries the link). Connections from outside to the home are
//!   dropped unless conntrack knows them (a reply, or a simultaneous open).
//! - A node behind NAT runs in the network namespace of a small "holder" container (the router
//!   image, sleeping) whose default route is set to the router before the node starts; Docker's
//!   isolation between bridge networks keeps the public side from reaching the home directly.
//! - A "firewall" home has no router and no network of its own: its nodes keep their addresses
//!   on the public network, and their holder's netfilter drops every connection opened from
//!   outside (replies and simultaneous opens pass; so do the devnet's API ports, the
//!   harness's management plane). Peers can neither dial them nor learn a mapped port; AutoNAT
//!   finds them private and the relays carry their links until hole punching upgrades them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, HostConfig, Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::engine::{
    at_address, endpoint, run_container, DockerError, API_PORT, HTTPS_PORT, LABEL_BINARY,
    LABEL_NODE, LABEL_ROLE,
};
use crate::manifest::Mapping;

pub const ROUTER_IMAGE: &str = "blyan-nat-router";
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// The host tools the router image is made of.
struct Tools {
    /// The multi-call binary `iptables` points to (xtables-nft-multi or xtables-legacy-multi).
    iptables: PathBuf,
    ip: PathBuf,
    sleep: PathBuf,
    /// iptables' extension modules (MASQUERADE, conntrack, ...).
    xtables: PathBuf,
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .and_then(|path| std::fs::canonicalize(path).ok())
}

fn tools() -> Result<Tools, DockerError> {
    let missing = |what: &str| {
        DockerError::Invalid(format!(
            "network.topology: the NAT router image is built from this host's {what}, which is \
             missing (Debian: apt-get install iptables iproute2)"
        ))
    };
    let iptables =
        find(&["/usr/sbin/iptables", "/sbin/iptables"]).ok_or_else(|| missing("iptables"))?;
    let ip = find(&["/usr/sbin/ip", "/sbin/ip", "/bin/ip"]).ok_or_else(|| missing("ip"))?;
    let sleep = find(&["/bin/sleep", "/usr/bin/sleep"]).ok_or_else(|| missing("sleep"))?;
    let xtables = [XTABLES_DIR, "/usr/lib/xtables", "/usr/lib64/xtables"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("libxt_MASQUERADE.so").is_file())
        .ok_or_else(|| missing("iptables extensions (libxt_MASQUERADE.so)"))?;
    Ok(Tools {
        iptables,
        ip,
        sleep,
        xtables,
    })
}

/// Builds `blyan-nat-router:dev` (skipped when the image holds these tools already).
pub async fn build_router_image(docker: &Docker) -> Result<String, DockerError> {
    let tools = tools()?;
    let tag = format!("{ROUTER_IMAGE}:dev");
    let mut files: Vec<(String, PathBuf)> = vec![
        ("/usr/sbin/iptables".into(), tools.iptables.clone()),
        ("/usr/sbin/ip".into(), tools.ip.clone()),
        ("/bin/sleep".into(), tools.sleep.clone()),
    ];
    for binary in [&tools.iptables, &tools.ip, &tools.sleep] {
        for library in super::engine::shared_libraries(binary)? {
            let inside = library.display().to_string();
            if !files.iter().any(|(path, _)| *path == inside) {
                files.push((inside, library));
            }
        }
    }
    let mut modules: Vec<PathBuf> = std::fs::read_dir(&tools.xtables)
        .map_err(|source| DockerError::Io {
            path: tools.xtables.clone(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "so"))
        .collect();
    modules.sort();
    for module in modules {
        files.push((module.display().to_string(), module));
    }
    let mut digest = Sha256::new();
    for (inside, path) in &files {
        digest.update(inside.as_bytes());
        digest.update(std::fs::read(path).map_err(|source| DockerError::Io {
            path: path.clone(),
            source,
        })?);
    }
    let sha = hex::encode(digest.finalize());
    if let Ok(image) = docker.inspect_image(&tag).await {
        let current = image
            .config
            .and_then(|config| config.labels)
            .and_then(|labels| labels.get(LABEL_BINARY).cloned());
        if current.as_deref() == Some(sha.as_str()) {
            return Ok(tag);
        }
    }
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path_in_tar: &str, bytes: &[u8], mode: u32| {
        super::engine::tar_file(&mut archive, path_in_tar, bytes, mode)
    };
    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nLABEL {LABEL_BINARY}=\"{sha}\"\nCMD [\"/bin/sleep\", \"infinity\"]\n"
    );
    add("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    for (inside, path) in &files {
        let bytes = std::fs::read(path).map_err(|source| DockerError::Io {
            path: path.clone(),
            source,
        })?;
        add(&format!("rootfs{inside}"), &bytes, 0o755)?;
    }
    let context = archive
        .into_inner()
        .map_err(|error| DockerError::Build(error.to_string()))?;
    super::engine::build_context(docker, &tag, context).await?;
    Ok(tag)
}

/// Runs `command` in a running container; fails with its output unless it exits 0.
pub async fn exec(docker: &Docker, container: &str, command: &[&str]) -> Result<(), DockerError> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(command.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut out, ..
    } = docker.start_exec(&exec.id, None).await?
    {
        while let Some(chunk) = out.next().await {
            output.push_str(&chunk?.to_string());
        }
    }
    let inspect = docker.inspect_exec(&exec.id).await?;
    match inspect.exit_code {
        Some(0) => Ok(()),
        code => Err(DockerError::Invalid(format!(
            "{container}: `{}` exited with {code:?}: {}",
            command.join(" "),
            output.trim()
        ))),
    }
}

/// One home network of a devnet being started.
#[derive(Clone, Debug)]
pub struct HomeNet {
    pub index: usize,
    /// The third octet of its /24 in 10.210.0.0/16 (0 for a firewall home: it has none).
    pub third: u8,
    pub mapping: Mapping,
    /// Node indices in it, in order (node k gets .10+k).
    pub nodes: Vec<usize>,
}

impl HomeNet {
    pub fn subnet(&self) -> String {
        format!("10.210.{}.0/24", self.third)
    }

    pub fn router_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 210, self.third, 2)
    }

    /// Whether the home is behind a NAT router (false: a firewall on public addresses).
    pub fn translates(&self) -> bool {
        self.mapping != Mapping::Firewall
    }

    /// The node's address in the home network (`None` for a node not in it, and for a
    /// firewall home: its nodes keep their public addresses).
    pub fn node_ip(&self, node: usize) -> Option<Ipv4Addr> {
        if !self.translates() {
            return None;
        }
        let k = self.nodes.iter().position(|n| *n == node)?;
        Some(Ipv4Addr::new(10, 210, self.third, 10 + k as u8))
    }

    pub fn network(&self, devnet: &str) -> String {
        format!("blyan-{devnet}-home{}", self.index)
    }
}

/// The router's address on the public network.
pub fn router_public_ip(public_third: u8, home: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 210, public_third, 200 + home as u8)
}

/// Creates the home network and its router (started, rules in place); a firewall home has
/// neither.
pub async fn start_home(
    docker: &Docker,
    devnet: &str,
    public_network: &str,
    public_third: u8,
    home: &HomeNet,
    image: &str,
    labels: &HashMap<String, String>,
) -> Result<(), DockerError> {
    if !home.translates() {
        return Ok(());
    }
    let network = home.network(devnet);
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(home.subnet()),
                    gateway: Some(format!("10.210.{}.1", home.third)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await?;
    let mut router_labels = labels.clone();
    router_labels.insert(LABEL_NODE.into(), format!("router{}", home.index));
    router_labels.insert(LABEL_ROLE.into(), "nat-router".into());
    let name = format!("blyan-{devnet}-router{}", home.index);
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(image.into()),
                labels: Some(router_labels),
                host_config: Some(HostConfig {
                    network_mode: Some(public_network.into()),
                    cap_add: Some(vec!["NET_ADMIN".into()]),
                    sysctls: Some(HashMap::from([(
                        "net.ipv4.ip_forward".to_string(),
                        "1".to_string(),
                    )])),
                    ..Default::default()
                }),
                networking_config: Some(at_address(
                    public_network,
                    router_public_ip(public_third, home.index),
                )),
                ..Default::default()
            },
        )
        .await?;
    docker
        .connect_network(
            &network,
            NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(endpoint(home.router_ip())),
            },
        )
        .await?;
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await?;
    let subnet = home.subnet();
    let random = if home.mapping == Mapping::AddressDependent {
        " --random-fully"
    } else {
        ""
    };
    let rules = [
        // Masquerade what leaves the home (a random port per connection when address-dependent).
        format!("-t nat -A POSTROUTING -s {subnet} ! -d {subnet} -j MASQUERADE{random}"),
        // Nothing from outside opens a connection into the home (conntrack lets replies and
        // simultaneous opens through).
        format!("-A FORWARD ! -s {subnet} -d {subnet} -m conntrack --ctstate NEW -j DROP"),
        // Like a home router, it answers nothing from outside: a SYN to a port with no mapping
        // is dropped, not reset, so that a hole punch's early SYN is retried, not refused.
        format!("-A INPUT ! -s {subnet} -m conntrack --ctstate NEW -j DROP"),
    ];
    apply(docker, &created.id, &rules).await
}

/// Runs each rule in the container: `iptables` for one that starts with `-`, else `ip`.
async fn apply(docker: &Docker, container: &str, rules: &[String]) -> Result<(), DockerError> {
    for rule in rules {
        let binary = if rule.starts_with('-') {
            "/usr/sbin/iptables"
        } else {
            "/usr/sbin/ip"
        };
        let mut command = vec![binary];
        command.extend(rule.split_whitespace());
        exec(docker, container, &command).await?;
    }
    Ok(())
}

/// Starts the holder of a node behind NAT or a firewall: its network namespace, with the
/// default route to the home's router (NAT), or on the public network at `public_ip` with
/// inbound connections dropped (firewall). Returns the holder's id (the node container joins
/// it).
#[allow(clippy::too_many_arguments)]
pub async fn start_holder(
    docker: &Docker,
    devnet: &str,
    moniker: &str,
    home: &HomeNet,
    node: usize,
    public: (&str, Ipv4Addr),
    image: &str,
    labels: &HashMap<String, String>,
) -> Result<String, DockerError> {
    if !home.nodes.contains(&node) {
        return Err(DockerError::Invalid(format!(
            "{moniker} is not in home {}",
            home.index
        )));
    }
    let (network, ip) = match home.node_ip(node) {
        Some(ip) => (home.network(devnet), ip),
        None => (public.0.to_string(), public.1),
    };
    let mut holder_labels = labels.clone();
    holder_labels.insert(LABEL_NODE.into(), format!("{moniker}-net"));
    holder_labels.insert(LABEL_ROLE.into(), "nat-holder".into());
    let body = ContainerCreateBody {
        image: Some(image.into()),
        labels: Some(holder_labels),
        host_config: Some(HostConfig {
            network_mode: Some(network.clone()),
            cap_add: Some(vec!["NET_ADMIN".into()]),
            ..Default::default()
        }),
        networking_config: Some(at_address(&network, ip)),
        ..Default::default()
    };
    let id = run_container(docker, &format!("blyan-{devnet}-{moniker}-net"), body).await?;
    apply(docker, &id, &holder_rules(home)).await?;
    Ok(id)
}

/// What a holder runs before its node starts: `ip` arguments (a route) or `iptables` rules
/// (starting with `-`).
fn holder_rules(home: &HomeNet) -> Vec<String> {
    if home.translates() {
        return vec![format!("route replace default via {}", home.router_ip())];
    }
    vec![
        "-A INPUT -i lo -j ACCEPT".into(),
        // The devnet's management plane (HTTP API and HTTPS admin), as a port forward would.
        format!("-A INPUT -p tcp --dport {API_PORT} -j ACCEPT"),
        format!("-A INPUT -p tcp --dport {HTTPS_PORT} -j ACCEPT"),
        // Nothing else opened from outside gets in (P2P included); conntrack lets replies and
        // simultaneous opens (hole punching) through. Dropped, not refused, like a home
        // firewall.
        "-A INPUT -m conntrack --ctstate NEW -j DROP".into(),
    ]
}

/// One fresh connection from one node behind NAT to another, through a relay (`relay`: the one
/// tried first).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    pub from: String,
    pub to: String,
    pub relay: String,
    pub connected: bool,
    pub connect_ms: Option<f64>,
    pub relayed: Option<bool>,
    /// When the link became direct (hole punching), from the dial.
    pub direct_ms: Option<f64>,
    pub error: Option<String>,
}

/// `devnet nat-probe`: connection attempts between every pair of nodes behind NAT.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProbeReport {
    pub attempts: usize,
    pub connected: usize,
    pub success_rate: f64,
    /// Attempts whose link was upgraded to a direct one by hole punching.
    pub hole_punched: usize,
    pub hole_punched_share: f64,
    pub connect_ms_p50: f64,
    pub connect_ms_p99: f64,
    pub direct_ms_p50: Option<f64>,
    pub direct_ms_p99: Option<f64>,
    pub samples: Vec<Attempt>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

impl ProbeReport {
    pub fn from_attempts(samples: Vec<Attempt>) -> ProbeReport {
        let attempts = samples.len();
        let connected = samples.iter().filter(|a| a.connected).count();
        let hole_punched = samples
            .iter()
            .filter(|a| a.relayed == Some(true) && a.direct_ms.is_some())
            .count();
        let mut connect: Vec<f64> = samples.iter().filter_map(|a| a.connect_ms).collect();
        connect.sort_by(f64::total_cmp);
        let mut direct: Vec<f64> = samples
            .iter()
            .filter(|a| a.relayed == Some(true))
            .filter_map(|a| a.direct_ms)
            .collect();
        direct.sort_by(f64::total_cmp);
        ProbeReport {
            attempts,
            connected,
            success_rate: connected as f64 / attempts.max(1) as f64,
            hole_punched,
            hole_punched_share: hole_punched as f64 / connected.max(1) as f64,
            connect_ms_p50: percentile(&connect, 0.5),
            connect_ms_p99: percentile(&connect, 0.99),
            direct_ms_p50: (!direct.is_empty()).then(|| percentile(&direct, 0.5)),
            direct_ms_p99: (!direct.is_empty()).then(|| percentile(&direct, 0.99)),
            samples,
        }
    }
}

/// One probe: node `from` dials `to` through the relays (`POST /admin/dial` over HTTPS with the
/// devnet's admin certificate) and says whether and how it connected.
fn dial_probe(
    pki: &std::path::Path,
    url: &str,
    body: &str,
    names: (String, String, String),
) -> Attempt {
    let answer = crate::process::https_request(pki, true, url, "POST", "/admin/dial", body);
    let (from, to, relay) = names;
    let mut attempt = Attempt {
        from,
        to,
        relay,
        connected: false,
        connect_ms: None,
        relayed: None,
        direct_ms: None,
        error: None,
    };
    match answer {
        Ok((200, body)) => match serde_json::from_str::<blyan_node::p2p::ProbeOutcome>(&body) {
            Ok(outcome) => {
                attempt.connected = outcome.connected;
                attempt.connect_ms = outcome.connect_ms;
                attempt.relayed = outcome.relayed;
                attempt.direct_ms = outcome.direct_ms;
                attempt.error = outcome.error;
            }
            Err(error) => attempt.error = Some(format!("answer: {error}: {body}")),
        },
        Ok((status, body)) => attempt.error = Some(format!("HTTP {status}: {}", body.trim())),
        Err(error) => attempt.error = Some(error),
    }
    attempt
}

/// Asks each node behind NAT to dial every other one afresh through a relay (the relays taken
/// in turn), `rounds` times, the pairs of a round in parallel; each node answers over HTTPS with
/// the devnet's admin certificate (`POST /admin/dial`).
pub fn probe_pairs(
    state: &crate::testnet::record::DevnetState,
    pki: &std::path::Path,
    behind: &[usize],
    relays: &[usize],
    rounds: usize,
    upgrade_wait_ms: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ProbeReport, DockerError> {
    if behind.len() < 2 || relays.is_empty() {
        return Err(DockerError::Invalid(
            "nat-probe needs at least two nodes behind NAT and one relay (network.topology)".into(),
        ));
    }
    let mut pairs = Vec::new();
    for (i, &a) in behind.iter().enumerate() {
        for &b in &behind[i + 1..] {
            pairs.push((a, b));
        }
    }
    let total = pairs.len() * rounds;
    let mut samples = Vec::with_capacity(total);
    for round in 0..rounds {
        let jobs: Vec<_> = pairs
            .iter()
            .enumerate()
            .map(|(k, &(a, b))| {
                // Alternate the direction and the first relay from round to round; the other
                // relays are the fallback, as in the nodes' own bootstrap lists.
                let (from, to) = if round % 2 == 0 { (a, b) } else { (b, a) };
                let first = (round + k) % relays.len();
                let relay = relays[first];
                let from_node = &state.nodes[from];
                let to_node = &state.nodes[to];
                let addresses: Vec<String> = (0..relays.len())
                    .map(|i| {
                        format!(
                            "{}/p2p-circuit/p2p/{}",
                            state.nodes[relays[(first + i) % relays.len()]].p2p,
                            to_node.peer_id
                        )
                    })
                    .collect();
                let body = serde_json::json!({
                    "addresses": addresses,
                    "upgrade_wait_ms": upgrade_wait_ms,
                    "timeout_ms": 15_000,
                })
                .to_string();
                let url = from_node.api_https.clone().unwrap_or_default();
                let names = (
                    from_node.moniker.clone(),
                    to_node.moniker.clone(),
                    state.nodes[relay].moniker.clone(),
                );
                let pki = pki.to_path_buf();
                std::thread::spawn(move || dial_probe(&pki, &url, &body, names))
            })
            .collect();
        for job in jobs {
            let attempt = job
                .join()
                .map_err(|_| DockerError::Invalid("a probe thread panicked".into()))?;
            samples.push(attempt);
            progress(samples.len(), total);
        }
    }
    Ok(ProbeReport::from_attempts(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(mapping: Mapping) -> HomeNet {
        HomeNet {
            index: 3,
            third: 7,
            mapping,
            nodes: vec![4, 9],
        }
    }

    #[test]
    fn nat_homes_address_their_nodes_and_route_through_the_router() {
        let home = home(Mapping::AddressDependent);
        assert!(home.translates());
        assert_eq!(home.node_ip(9), Some(Ipv4Addr::new(10, 210, 7, 11)));
        assert_eq!(home.node_ip(5), None);
        assert_eq!(
            holder_rules(&home),
            vec!["route replace default via 10.210.7.2".to_string()]
        );
    }

    #[test]
    fn firewall_homes_keep_public_addresses_and_drop_what_is_opened_from_outside() {
        let home = home(Mapping::Firewall);
        assert!(!home.translates());
        assert_eq!(home.node_ip(4), None, "public address, no home subnet");
        let rules = holder_rules(&home);
        // Every rule is an iptables rule; the last drops new inbound connections, and only the
        // API ports are let through before it (P2P is not).
        assert!(rules.iter().all(|rule| rule.starts_with("-A INPUT")));
        assert_eq!(
            rules.last().map(String::as_str),
            Some("-A INPUT -m conntrack --ctstate NEW -j DROP")
        );
        let accepted: Vec<&String> = rules.iter().filter(|r| r.contains("--dport")).collect();
        assert_eq!(accepted.len(), 2);
        assert!(accepted
            .iter()
            .all(|r| !r.contains(&crate::docker::P2P_PORT.to_string())));
    }
}
