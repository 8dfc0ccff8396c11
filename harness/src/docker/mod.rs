//! The Docker backend (bollard): a node image built with no registry, one bridge network per
//! devnet with its own subnet, one container per node with a fixed address, labels, a memory
//! limit and a health check; created and started in parallel; removed by label.
//!
//! Everything the backend creates carries the label `blyan.devnet=<name>`, so `down` (and the
//! cleanup after a failed or interrupted `up`) finds all of it without any local state.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, Ipam, IpamConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

pub mod engine;
pub mod nat;

pub use engine::*;

use crate::backend::kind::BackendKind;
use crate::backend::settings::UpSettings;
use crate::testnet::record::NodeEntry;

use crate::manifest::Manifest;
use crate::process::{self, ProcessError};
use crate::testnet::record::DevnetState;
use crate::testnet::NodePlan;

/// The image that `devnet image build` made.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub tag: String,
    pub commit_tag: String,
    pub binary_sha256: String,
    pub libraries: Vec<PathBuf>,
    pub rebuilt: bool,
}

fn file_sha256(path: &Path) -> Result<String, DockerError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The commit a node binary was built from, from its `--version`.
fn binary_commit(binary: &Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).to_string();
            text.split("(commit ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .map(str::to_string)
        })
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Builds `blyan-node:dev` (and `blyan-node:<commit>`) `FROM scratch` with the binary and
/// exactly the shared libraries it loads; skipped when the image already holds this binary.
pub async fn build_image(
    docker: &Docker,
    binary: &Path,
    force: bool,
) -> Result<ImageInfo, DockerError> {
    build_scratch_image(
        docker,
        binary,
        &ScratchImage {
            repo: IMAGE,
            entrypoint: "/bin/blyan-node",
            cmd: vec!["start".into(), "--home".into(), HOME_INSIDE.into()],
            expose: vec![API_PORT, P2P_PORT],
        },
        force,
    )
    .await
}

/// The node image of `binary` (built, or reused when its content is unchanged), also tagged
/// by that content (`blyan-node:sha-<16 hex>`), so that nodes of one devnet can run different
/// builds while `blyan-node:dev` moves on; returns the content tag.
pub async fn node_image_of(docker: &Docker, binary: &Path) -> Result<String, DockerError> {
    let image = build_image(docker, binary, false).await?;
    let tag = format!("sha-{}", &image.binary_sha256[..16]);
    let options = TagImageOptionsBuilder::default()
        .repo(IMAGE)
        .tag(&tag)
        .build();
    docker.tag_image(&image.tag, Some(options)).await?;
    Ok(format!("{IMAGE}:{tag}"))
}

/// Replaces node `index`'s container by one of `binary`'s image ([`node_image_of`]) with the
/// same home, address, memory limit and labels: SIGTERM first (10 s), as an operator's upgrade
/// would. Returns the new container's id.
pub async fn replace_node(
    docker: &Docker,
    state: &DevnetState,
    index: usize,
    binary: &Path,
) -> Result<String, DockerError> {
    let image = node_image_of(docker, binary).await?;
    let node = &state.nodes[index];
    let old = node
        .container
        .clone()
        .ok_or_else(|| DockerError::Invalid(format!("{} has no container", node.moniker)))?;
    let host = docker
        .inspect_container(&old, None)
        .await?
        .host_config
        .unwrap_or_default();
    let holder = host
        .network_mode
        .as_deref()
        .and_then(|mode| mode.strip_prefix("container:"))
        .map(String::from);
    let ip: Ipv4Addr = node
        .api
        .trim_start_matches("http://")
        .split(':')
        .next()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            DockerError::Invalid(format!("{}: no address in {}", node.moniker, node.api))
        })?;
    let network = state.network.clone().unwrap_or_default();
    let labels = HashMap::from([(LABEL_DEVNET.to_string(), state.name.clone())]);
    let stop = bollard::query_parameters::StopContainerOptionsBuilder::default()
        .t(10)
        .build();
    docker.stop_container(&old, Some(stop)).await?;
    docker
        .remove_container(
            &old,
            None::<bollard::query_parameters::RemoveContainerOptions>,
        )
        .await?;
    let memory = host.memory.unwrap_or(0);
    let body = container_spec(
        node,
        &image,
        memory,
        (&network, ip),
        holder.as_ref(),
        &labels,
        false,
    );
    let name = format!("blyan-{}-{}", state.name, node.moniker);
    create_container(docker, &name, body, true).await
}

/// The link proxy's image (`blyan-chaos-proxy:dev`), built offline like the node's.
pub const PROXY_IMAGE: &str = "blyan-chaos-proxy";
/// The proxy container's address in its devnet's subnet, and its API port.
pub const PROXY_HOST: u8 = 9;
pub const PROXY_API_PORT: u16 = 8474;
/// Link `i -> j` listens on `PROXY_LINK_PORT_BASE + i * n + j` in the proxy container.
pub const PROXY_LINK_PORT_BASE: u16 = 30000;

pub async fn build_proxy_image(
    docker: &Docker,
    binary: &Path,
    force: bool,
) -> Result<ImageInfo, DockerError> {
    build_scratch_image(
        docker,
        binary,
        &ScratchImage {
            repo: PROXY_IMAGE,
            entrypoint: "/bin/blyan-chaos-proxy",
            cmd: vec![
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                PROXY_API_PORT.to_string(),
                "--log".into(),
                "warn".into(),
            ],
            expose: vec![PROXY_API_PORT],
        },
        force,
    )
    .await
}

/// An image `FROM scratch` holding one binary and the shared libraries it loads.
pub struct ScratchImage {
    pub repo: &'static str,
    pub entrypoint: &'static str,
    pub cmd: Vec<String>,
    pub expose: Vec<u16>,
}

async fn build_scratch_image(
    docker: &Docker,
    binary: &Path,
    spec: &ScratchImage,
    force: bool,
) -> Result<ImageInfo, DockerError> {
    let repo = spec.repo;
    if !binary.is_file() {
        return Err(DockerError::Devnet(ProcessError::NodeBinary(
            binary.to_path_buf(),
        )));
    }
    let sha = file_sha256(binary)?;
    let commit = binary_commit(binary);
    let tag = format!("{repo}:dev");
    let commit_tag = format!("{repo}:{commit}");
    let libraries = shared_libraries(binary)?;
    if !force {
        if let Ok(image) = docker.inspect_image(&tag).await {
            let current = image
                .config
                .and_then(|config| config.labels)
                .and_then(|labels| labels.get(LABEL_BINARY).cloned());
            if current.as_deref() == Some(sha.as_str()) {
                return Ok(ImageInfo {
                    tag,
                    commit_tag,
                    binary_sha256: sha,
                    libraries,
                    rebuilt: false,
                });
            }
        }
    }
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|item| format!("{item:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nLABEL {LABEL_BINARY}=\"{sha}\"\nENTRYPOINT [\"{}\"]\nCMD [{}]\nEXPOSE {}\n",
        spec.entrypoint,
        quoted(&spec.cmd),
        spec.expose
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path_in_tar: &str, bytes: &[u8], mode: u32| {
        tar_file(&mut archive, path_in_tar, bytes, mode)
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    add(
        &format!("rootfs{}", spec.entrypoint),
        &std::fs::read(binary).map_err(io(binary))?,
        0o755,
    )?;
    for library in &libraries {
        let bytes = std::fs::read(library).map_err(io(library))?;
        let inside = format!("rootfs{}", library.display());
        add(&inside, &bytes, 0o755)?;
    }
    // RocksDB and the node write temporary files nowhere but the home; /tmp exists anyway.
    let mut tmp = tar::Header::new_gnu();
    tmp.set_entry_type(tar::EntryType::Directory);
    tmp.set_mode(0o1777);
    tmp.set_size(0);
    tmp.set_cksum();
    archive
        .append_data(&mut tmp, "rootfs/tmp/", std::io::empty())
        .map_err(|error| DockerError::Build(error.to_string()))?;
    let context = archive
        .into_inner()
        .map_err(|error| DockerError::Build(error.to_string()))?;
    build_context(docker, &tag, context).await?;
    docker
        .tag_image(
            &tag,
            Some(
                TagImageOptionsBuilder::default()
                    .repo(repo)
                    .tag(&commit)
                    .build(),
            ),
        )
        .await?;
    Ok(ImageInfo {
        tag,
        commit_tag,
        binary_sha256: sha,
        libraries,
        rebuilt: true,
    })
}

/// Starts the devnet's link proxy container (`blyan-chaos-proxy`) at its fixed address.
async fn start_proxy(
    docker: &Docker,
    name: &str,
    network: &str,
    third: u8,
    labels: &HashMap<String, String>,
    node_bin: &Path,
) -> Result<String, DockerError> {
    let binary = crate::links::proxy_bin(node_bin);
    if std::env::var_os("BLYAN_TOXIPROXY_IMAGE").is_none() {
        crate::links::existing_proxy_bin(node_bin).map_err(DockerError::Build)?;
    }
    // A real Toxiproxy image instead of ours, when one is configured (it speaks the same API).
    let (image, cmd) = match std::env::var("BLYAN_TOXIPROXY_IMAGE") {
        Ok(image) if !image.is_empty() => (
            image,
            Some(vec![
                "-host".to_string(),
                "0.0.0.0".to_string(),
                "-port".to_string(),
                PROXY_API_PORT.to_string(),
            ]),
        ),
        _ => (build_proxy_image(docker, &binary, false).await?.tag, None),
    };
    let mut labels = labels.clone();
    labels.insert(LABEL_NODE.into(), "chaos-proxy".into());
    labels.insert(LABEL_ROLE.into(), "proxy".into());
    let ip = node_ip(third, 1000 + PROXY_HOST as usize);
    let body = ContainerCreateBody {
        image: Some(image),
        cmd,
        labels: Some(labels),
        stop_timeout: Some(5),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_string()),
            memory: Some(256 * 1024 * 1024),
            ..Default::default()
        }),
        networking_config: Some(at_address(network, ip)),
        ..Default::default()
    };
    run_container(docker, &format!("blyan-{name}-chaos-proxy"), body).await
}

/// What `down` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: usize,
    pub networks: usize,
    /// Networks that still had endpoints in the last pass.
    pub busy_networks: Vec<String>,
    /// Containers whose removal the daemon was already carrying out in the last pass.
    pub busy_containers: usize,
}

/// Removes every container and network of devnet `name` (all devnets when `None`), found by
/// label. Lists again until nothing is left (a bounded number of passes): the daemon may still
/// be creating a container for a client that was killed mid-request.
pub async fn remove_by_label(docker: &Docker, name: Option<&str>) -> Result<Removed, DockerError> {
    let mut total = Removed::default();
    // A network still has endpoints for a moment after its last container is removed (seconds
    // with 100 containers on a loaded host): passes go on until nothing is left or busy, for at
    // most a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut pass = 0;
    loop {
        let removed = remove_pass(docker, name).await?;
        total.containers += removed.containers;
        total.networks += removed.networks;
        let done = removed.busy_networks.is_empty()
            && removed.busy_containers == 0
            && removed.containers + removed.networks == 0
            && pass > 0;
        if done {
            return Ok(total);
        }
        if std::time::Instant::now() >= deadline {
            if removed.busy_containers > 0 {
                return Err(DockerError::Invalid(format!(
                    "{} containers were still being removed by the daemon after 60 s; run \
                     `devnet down` again",
                    removed.busy_containers
                )));
            }
            if removed.busy_networks.is_empty() {
                return Ok(total);
            }
            return Err(DockerError::Invalid(format!(
                "networks {} still have endpoints after 60 s with no container left; run \
                 `devnet down` again (endpoints the daemon lost track of stay until dockerd \
                 restarts; they hold only their subnet, and new devnets pick another)",
                removed.busy_networks.join(", ")
            )));
        }
        pass += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn remove_pass(docker: &Docker, name: Option<&str>) -> Result<Removed, DockerError> {
    let filters = label_filter(name);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    let ids: Vec<String> = containers.into_iter().filter_map(|c| c.id).collect();
    let outcomes: Vec<Result<(), bollard::errors::Error>> = futures::stream::iter(ids)
        .map(|id| async move {
            docker
                .remove_container(
                    &id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // Every container is tried; the first real failure is reported after the others.
    let mut count = 0;
    let mut busy_containers = 0;
    let mut failed = None;
    for outcome in outcomes {
        match outcome {
            Ok(()) => count += 1,
            // Gone already (removed concurrently): that is the goal.
            Err(error) if is_not_found(&error) => {}
            // "removal of container ... is already in progress" (an interrupted `up`, another
            // `down`): the next pass finds it gone, or still there.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => busy_containers += 1,
            Err(error) => {
                failed.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failed {
        return Err(error.into());
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    let mut removed_networks = 0;
    let mut busy_networks = Vec::new();
    for network in networks {
        if let Some(id) = network.id {
            match docker.remove_network(&id).await {
                Ok(()) => removed_networks += 1,
                Err(error) if is_not_found(&error) => {}
                // "has active endpoints": a container is still being torn down; next pass.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 403 | 409,
                    ..
                }) => busy_networks.push(network.name.unwrap_or(id)),
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(Removed {
        containers: count,
        networks: removed_networks,
        busy_networks,
        busy_containers,
    })
}

/// A /24 subnet in 10.210.0.0/16 that no existing Docker network uses, picked from the name.
async fn free_subnet(docker: &Docker, name: &str, taken: &[u8]) -> Result<u8, DockerError> {
    let networks = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await?;
    let used: Vec<String> = networks
        .into_iter()
        .filter_map(|network| network.ipam?.config)
        .flatten()
        .filter_map(|config| config.subnet)
        .collect();
    let start = Sha256::digest(name.as_bytes())[0];
    for offset in 0..=255u16 {
        let third = start.wrapping_add(offset as u8);
        let subnet = format!("10.210.{third}.0/24");
        if !used.contains(&subnet) && !taken.contains(&third) {
            return Ok(third);
        }
    }
    Err(DockerError::Invalid("no free /24 in 10.210.0.0/16".into()))
}

/// Node `index`'s address; index `1000 + k` is the devnet's service address `.k` (the proxy).
fn node_ip(third: u8, index: usize) -> Ipv4Addr {
    if index >= 1000 {
        return Ipv4Addr::new(10, 210, third, (index - 1000) as u8);
    }
    Ipv4Addr::new(10, 210, third, 10 + index as u8)
}

/// A node in a container at `ip`: the API on [`API_PORT`] and P2P on [`P2P_PORT`], listening
/// on every interface (its name and stake come from `testnet::resolve`).
pub fn container_node(ip: Ipv4Addr) -> NodePlan {
    NodePlan {
        moniker: String::new(),
        stake: 0,
        api_listen: format!("0.0.0.0:{API_PORT}"),
        api_url: format!("http://{ip}:{API_PORT}"),
        p2p_listen: format!("/ip4/0.0.0.0/tcp/{P2P_PORT}"),
        p2p_address: format!("/ip4/{ip}/tcp/{P2P_PORT}"),
        api_https: None,
    }
}

/// The link proxy container, reached at `host`.
pub fn container_proxy(host: &str, api: String) -> crate::links::ProxyPlan {
    crate::links::ProxyPlan {
        dial_host: host.to_string(),
        listen_host: "0.0.0.0".into(),
        port_base: PROXY_LINK_PORT_BASE,
        api,
    }
}

/// Progress of `up`, for a progress bar.
#[derive(Clone, Debug)]
pub enum Stage {
    Image,
    Genesis,
    Network,
    Containers { started: usize, of: usize },
    Heights { ready: usize, of: usize },
}

/// Starts the manifest's devnet in Docker and waits for `wait_height` on every node; on any
/// failure everything it created is removed again.
pub async fn up(
    docker: &Docker,
    manifest: &Manifest,
    options: &UpSettings,
    progress: impl Fn(Stage) + Send + Sync,
) -> Result<DevnetState, DockerError> {
    let result = up_inner(docker, manifest, options, &progress).await;
    if result.is_err() {
        let _ = remove_by_label(docker, Some(&manifest.name)).await;
        release_disks(&options.base, &manifest.name);
    }
    result
}

/// Ends the disk layers of devnet `name` under `base` (its containers are gone): FUSE layers
/// write back and exit, mounts go.
pub fn release_disks(base: &Path, name: &str) {
    let Ok(base) = absolute_base(base) else {
        return;
    };
    let dir = crate::testnet::record::devnet_dir(&base, name);
    match crate::testnet::record::load_state(&base, name) {
        Ok(mut state) => {
            crate::disk::release(&mut state, &dir);
            let _ = crate::testnet::record::save_state(&base, &state);
        }
        Err(_) => crate::disk::unmount_under(&dir),
    }
}

/// NAT topology: a /24 per home behind a router (a firewall home keeps its nodes on the public
/// network), its nodes at .10 + k there.
async fn home_nets(
    docker: &Docker,
    manifest: &Manifest,
    third: u8,
) -> Result<Vec<nat::HomeNet>, DockerError> {
    let mut homes = Vec::new();
    let Some(topology) = &manifest.network.topology else {
        return Ok(homes);
    };
    let resolved = manifest.resolve();
    let mut taken = vec![third];
    for (index, home) in topology.homes.iter().enumerate() {
        let home_third = if home.mapping == crate::manifest::Mapping::Firewall {
            0
        } else {
            let name = format!("{}-home{index}", manifest.name);
            let home_third = free_subnet(docker, &name, &taken).await?;
            taken.push(home_third);
            home_third
        };
        homes.push(nat::HomeNet {
            index,
            third: home_third,
            mapping: home.mapping,
            nodes: home
                .nodes
                .iter()
                .filter_map(|n| resolved.iter().position(|r| &r.name == n))
                .collect(),
        });
    }
    Ok(homes)
}

/// The devnet's bridge network on `10.210.<third>.0/24`.
async fn create_network(
    docker: &Docker,
    network: &str,
    third: u8,
    labels: &HashMap<String, String>,
) -> Result<(), DockerError> {
    docker
        .create_network(NetworkCreateRequest {
            name: network.to_string(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(format!("10.210.{third}.0/24")),
                    gateway: Some(format!("10.210.{third}.1")),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Behind NAT: the home networks, their routers, and a holder (network namespace with the
/// route to the router) per node there; behind a firewall: a holder on the public network with
/// inbound connections dropped. Returns each such node's holder container.
async fn start_homes(
    docker: &Docker,
    state: &DevnetState,
    homes: &[nat::HomeNet],
    (network, third): (&str, u8),
    ip_of: impl Fn(usize) -> Ipv4Addr,
    labels: &HashMap<String, String>,
) -> Result<HashMap<usize, String>, DockerError> {
    let mut holders = HashMap::new();
    if homes.is_empty() {
        return Ok(holders);
    }
    let name = &state.name;
    let router_image = nat::build_router_image(docker).await?;
    for home in homes {
        nat::start_home(docker, name, network, third, home, &router_image, labels).await?;
        for &node in &home.nodes {
            let moniker = &state.nodes[node].moniker;
            let at = (network, ip_of(node));
            let id =
                nat::start_holder(docker, name, moniker, home, node, at, &router_image, labels)
                    .await?;
            holders.insert(node, id);
        }
    }
    Ok(holders)
}

/// Node `node`'s container: its home bound in, a memory limit, a health check, on the
/// devnet's network at its address (or in its NAT holder's namespace).
fn container_spec(
    node: &NodeEntry,
    image: &str,
    memory: i64,
    (network, ip): (&str, Ipv4Addr),
    holder: Option<&String>,
    labels: &HashMap<String, String>,
    late: bool,
) -> ContainerCreateBody {
    let mut labels = labels.clone();
    labels.insert(LABEL_NODE.into(), node.moniker.clone());
    let role = if node.validator { "validator" } else { "full" };
    labels.insert(LABEL_ROLE.into(), role.into());
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(node_command(late)),
        labels: Some(labels),
        stop_timeout: Some(10),
        healthcheck: Some(HealthConfig {
            test: Some(vec![
                "CMD".into(),
                "/bin/blyan-node".into(),
                "health".into(),
                "--api".into(),
                format!("127.0.0.1:{API_PORT}"),
            ]),
            // Each probe is a process started in the container by runc, which costs far more
            // system CPU than the probe itself: every 2 s on 100 containers saturates two
            // cores. Every 30 s keeps it to a few probes a second.
            interval: Some(30_000_000_000),
            timeout: Some(3_000_000_000),
            retries: Some(3),
            start_period: Some(10_000_000_000),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{HOME_INSIDE}", node.home.display())]),
            memory: Some(memory),
            network_mode: Some(match holder {
                Some(id) => format!("container:{id}"),
                None => network.to_string(),
            }),
            ..Default::default()
        }),
        networking_config: holder.is_none().then(|| at_address(network, ip)),
        ..Default::default()
    }
}

/// A node container's command: `start`, and for a late joiner state sync first (30 s to get
/// a snapshot offer), as on the process backend.
fn node_command(late: bool) -> Vec<String> {
    let mut command: Vec<String> = vec!["start".into(), "--home".into(), HOME_INSIDE.into()];
    if late {
        command.extend(["--state-sync", "--state-sync-wait-s", "30"].map(String::from));
    }
    command
}

/// Creates and starts the containers, eight at a time (a late joiner's only created); returns
/// (node index, container id).
async fn start_containers(
    docker: &Docker,
    specs: Vec<(usize, String, ContainerCreateBody, bool)>,
    progress: &(impl Fn(Stage) + Send + Sync),
) -> Result<Vec<(usize, String)>, DockerError> {
    let total = specs.len();
    let started = std::sync::atomic::AtomicUsize::new(0);
    progress(Stage::Containers {
        started: 0,
        of: total,
    });
    futures::stream::iter(specs)
        .map(|(index, container_name, body, late)| {
            let started = &started;
            async move {
                let id = engine::create_container(docker, &container_name, body, !late).await?;
                let count = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(Stage::Containers {
                    started: count,
                    of: total,
                });
                Ok::<_, DockerError>((index, id))
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
}

/// The binary node `moniker` runs when not the devnet's own (`--old-build`).
fn own_binary<'a>(options: &'a UpSettings, moniker: &str) -> Option<&'a PathBuf> {
    options
        .node_bins
        .iter()
        .find(|(name, _)| name == moniker)
        .map(|(_, bin)| bin)
}

/// The image of each node on its own build (`--old-build`, an upgrade's binaries) first,
/// then `blyan-node:dev` of the devnet's binary (so `:dev` ends on it).
async fn node_images(
    docker: &Docker,
    options: &UpSettings,
) -> Result<(HashMap<PathBuf, String>, ImageInfo), DockerError> {
    let mut images: HashMap<PathBuf, String> = HashMap::new();
    for (_, bin) in &options.node_bins {
        if !images.contains_key(bin) {
            images.insert(bin.clone(), node_image_of(docker, bin).await?);
        }
    }
    let image = build_image(docker, &options.node_bin, false).await?;
    Ok((images, image))
}

/// The devnet's network, and its fault proxy's container when it has one (its links
/// registered, its id recorded in `state`).
async fn network_and_proxy(
    docker: &Docker,
    state: &mut DevnetState,
    (network, third): (&str, u8),
    labels: &HashMap<String, String>,
    node_bin: &Path,
) -> Result<(), DockerError> {
    create_network(docker, network, third, labels).await?;
    state.network = Some(network.to_string());
    if let Some(proxy) = state.proxy.clone() {
        let id = start_proxy(docker, &state.name, network, third, labels, node_bin).await?;
        populate_proxy(proxy).await?;
        if let Some(proxy) = &mut state.proxy {
            proxy.container = Some(id);
        }
    }
    Ok(())
}

async fn up_inner(
    docker: &Docker,
    manifest: &Manifest,
    options: &UpSettings,
    progress: &(impl Fn(Stage) + Send + Sync),
) -> Result<DevnetState, DockerError> {
    let name = &manifest.name;
    let existing = remove_by_label(docker, Some(name)).await?;
    if existing.containers > 0 {
        tracing_note(&format!(
            "removed {} containers of an earlier devnet {name:?}",
            existing.containers
        ));
    }
    progress(Stage::Image);
    let (images, image) = node_images(docker, options).await?;
    progress(Stage::Genesis);
    let third = free_subnet(docker, name, &[]).await?;
    let homes = home_nets(docker, manifest, third).await?;
    let ip_of = |index: usize| {
        homes
            .iter()
            .find_map(|home| home.node_ip(index))
            .unwrap_or_else(|| node_ip(third, index))
    };
    let base = absolute_base(&options.base)?;
    let node = |index: usize| NodePlan {
        api_https: Some((
            format!("0.0.0.0:{HTTPS_PORT}"),
            format!("https://{}:{HTTPS_PORT}", ip_of(index)),
        )),
        ..container_node(ip_of(index))
    };
    let proxy_host = ip_of(PROXY_HOST as usize + 1000);
    let plan = crate::testnet::resolve(
        manifest,
        &crate::testnet::Addressing {
            backend: BackendKind::Docker,
            node: &node,
            proxy: Some(container_proxy(
                &proxy_host.to_string(),
                format!("{proxy_host}:{PROXY_API_PORT}"),
            )),
            log_level: &options.log_level,
            node_bin: &options.node_bin,
            genesis_time_ms: None,
        },
    );
    let mut state = crate::testnet::homes::write_devnet(&base, &plan)?;
    progress(Stage::Network);
    let network = format!("blyan-{name}");
    let labels = HashMap::from([(LABEL_DEVNET.to_string(), name.clone())]);
    network_and_proxy(
        docker,
        &mut state,
        (&network, third),
        &labels,
        &options.node_bin,
    )
    .await?;
    let devnet_dir = crate::testnet::record::devnet_dir(&base, name);
    let (tmpfs, lazyfs) = (manifest.disk_nodes(), manifest.lazyfs_nodes());
    crate::disk::prepare(&mut state, &devnet_dir, &options.node_bin, &tmpfs, &lazyfs)
        .map_err(DockerError::Invalid)?;
    crate::testnet::record::save_state(&base, &state)?;
    let holders = start_homes(docker, &state, &homes, (&network, third), ip_of, &labels).await?;
    let memory = manifest.resources.memory_mb * 1024 * 1024;
    let joiners = manifest.joiners();
    let specs = state
        .nodes
        .iter()
        .map(|node| {
            let holder = holders.get(&node.index);
            let at = (network.as_str(), ip_of(node.index));
            let late = joiners.contains(&node.moniker);
            let tag = own_binary(options, &node.moniker)
                .and_then(|bin| images.get(bin))
                .unwrap_or(&image.tag);
            let body = container_spec(node, tag, memory, at, holder, &labels, late);
            (
                node.index,
                format!("blyan-{name}-{}", node.moniker),
                body,
                late,
            )
        })
        .collect();
    for (index, id) in start_containers(docker, specs, progress).await? {
        state.nodes[index].container = Some(id);
        state.nodes[index].bin = own_binary(options, &state.nodes[index].moniker).cloned();
    }
    crate::testnet::record::save_state(&base, &state)?;
    wait_started(&state, &joiners, options, progress).await?;
    Ok(state)
}

/// Waits for every node but the late joiners to reach `options.wait_height`.
async fn wait_started(
    state: &DevnetState,
    joiners: &[String],
    options: &UpSettings,
    progress: &(impl Fn(Stage) + Send + Sync),
) -> Result<(), DockerError> {
    let started: Vec<usize> = (0..state.nodes.len())
        .filter(|&index| !joiners.contains(&state.nodes[index].moniker))
        .collect();
    let total = started.len();
    wait_heights(
        state,
        &started,
        options.wait_height,
        options.wait_timeout,
        |ready| progress(Stage::Heights { ready, of: total }),
    )
    .await
}

/// Waits (off the async threads) until nodes `all` of `state` have reached `height`, reporting
/// how many have after each poll.
pub async fn wait_heights(
    state: &DevnetState,
    all: &[usize],
    height: u64,
    timeout: Duration,
    progress: impl Fn(usize),
) -> Result<(), DockerError> {
    let waiting = state.clone();
    let all = all.to_vec();
    // A watch holds only the latest count (bounded: a slow reader skips counts, never queues
    // them); it closes when the waiter returns and drops the sender.
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let waiter = tokio::task::spawn_blocking(move || {
        process::wait_for_height(&waiting, &all, height, timeout, |heights| {
            let ready = heights
                .iter()
                .filter(|h| h.is_some_and(|h| h >= height))
                .count();
            tx.send_replace(ready);
        })
    });
    while rx.changed().await.is_ok() {
        let ready = *rx.borrow_and_update();
        progress(ready);
    }
    waiter
        .await
        .map_err(|error| DockerError::Invalid(error.to_string()))??;
    Ok(())
}

fn tracing_note(message: &str) {
    eprintln!("note: {message}");
}

/// Container resource use: (container name, memory bytes), from one stats sample each.
pub async fn memory_usage(docker: &Docker, name: &str) -> Result<Vec<(String, u64)>, DockerError> {
    let filters = label_filter(Some(name));
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    // One stats call per container takes a second or more on a loaded host: ask in parallel.
    let mut usage: Vec<(String, u64)> = futures::stream::iter(containers)
        .map(|container| async move {
            let id = container.id?;
            let label = container
                .labels
                .and_then(|labels| labels.get(LABEL_NODE).cloned())
                .unwrap_or_else(|| id.clone());
            let mut stats = docker.stats(
                &id,
                Some(
                    bollard::query_parameters::StatsOptionsBuilder::default()
                        .stream(false)
                        .one_shot(true)
                        .build(),
                ),
            );
            match stats.next().await {
                Some(Ok(sample)) => Some((
                    label,
                    sample
                        .memory_stats
                        .and_then(|memory| memory.usage)
                        .unwrap_or(0),
                )),
                _ => None,
            }
        })
        .buffer_unordered(16)
        .filter_map(|sample| async move { sample })
        .collect()
        .await;
    usage.sort();
    Ok(usage)
}
