//! The Docker Swarm backend: a devnet as Swarm services, for devnets larger than one host.
//!
//! One service per node (one replica) so that every node keeps its identity and its data:
//! - its keys are Swarm **secrets** and its config and genesis Swarm **configs**, mounted at
//!   the paths the node reads (`/home/blyan/keys/*.json`, `config.toml`, `genesis.json`), so
//!   nothing has to be copied to the host that runs it;
//! - its home is a named **volume** `blyan-<devnet>-<node>` created on the member that runs
//!   the task; the service is pinned to that member (`node.id == ...`), which the capacity
//!   planner chooses (spread over the members, zones matched to the members' `blyan.zone`
//!   label), so a restarted task finds its data again;
//! - nodes reach each other by service name on one attachable **overlay** network (DNS
//!   round-robin endpoints: the name resolves to the task's own address); the API is published
//!   in host mode on `api_port_base + index` of the member that runs it.
//!
//! Restart policy is `none`: a fault that kills a node's task keeps it down until the fault
//! ends, which starts a new task of the same service (`force_update`). Process faults act on
//! the task's container through the Docker API of this host, so in a swarm of several members
//! they reach the tasks that run here (`docs/SCALING.md`).
//!
//! Everything created carries the label `blyan.devnet=<name>`; `down` removes services,
//! secrets, configs, the network and the volumes by label and leaves the swarm when (and only
//! when) the harness created it and no other devnet's service is left on it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use blyan_node::home::Home;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, Limit, LocalNodeState, Mount, MountType, MountVolumeOptions,
    NetworkAttachmentConfig, NetworkCreateRequest, NodeSpecAvailabilityEnum, NodeState,
    ResourceObject, SecretSpec, ServiceSpec, SwarmInitRequest, SwarmSpec, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListConfigsOptionsBuilder, ListNetworksOptionsBuilder, ListNodesOptionsBuilder,
    ListSecretsOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use bollard::Docker;

use crate::backend::settings::UpSettings;
use crate::docker::{
    self, DockerError, ImageInfo, API_PORT, HOME_INSIDE, LABEL_DEVNET, LABEL_NODE, LABEL_ROLE,
    P2P_PORT, PROXY_API_PORT,
};
use crate::manifest::Manifest;
use crate::plan::{self, Member};
use crate::testnet::record::DevnetState;
use crate::testnet::DevnetPlan;

/// Label on the swarm's spec when the harness created the swarm (so `down` may leave it).
pub const LABEL_CREATED: &str = "blyan.created-by";
/// Label of a member's zone, matched against the manifest's node `zone`.
pub const LABEL_ZONE: &str = "blyan.zone";
/// Label of a member's Docker API (`tcp://HOST:2375`), used to load the image there when no
/// registry is configured.
pub const LABEL_DOCKER: &str = "blyan.docker";
/// Host port of node 0's API; node `i` publishes its API on base + i.
pub const DEFAULT_API_PORT_BASE: u16 = 28100;
/// The proxy's API is published on `api_port_base - PROXY_API_OFFSET` of this host.
pub const PROXY_API_OFFSET: u16 = 10;

/// Progress of `up`, for a progress bar.
#[derive(Clone, Debug)]
pub enum Stage {
    Swarm,
    Image,
    Genesis,
    Network,
    Services { created: usize, of: usize },
    Heights { ready: usize, of: usize },
}

/// The swarm as the harness found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwarmState {
    /// This daemon is in no swarm.
    Inactive,
    /// A manager of an active swarm (the harness can create services).
    Manager,
    /// A worker, or a swarm in trouble (pending, error, locked): the reason.
    Unusable(String),
}

pub async fn swarm_state(docker: &Docker) -> Result<SwarmState, DockerError> {
    let info = docker.info().await?;
    let swarm = info.swarm.unwrap_or_default();
    Ok(match swarm.local_node_state {
        None | Some(LocalNodeState::INACTIVE) | Some(LocalNodeState::EMPTY) => SwarmState::Inactive,
        Some(LocalNodeState::ACTIVE) if swarm.control_available == Some(true) => {
            SwarmState::Manager
        }
        Some(LocalNodeState::ACTIVE) => SwarmState::Unusable(
            "this daemon is a swarm worker; run the harness on a manager".into(),
        ),
        Some(other) => SwarmState::Unusable(format!(
            "the swarm is {other:?}{}",
            swarm
                .error
                .filter(|error| !error.is_empty())
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        )),
    })
}

/// Makes sure this daemon manages a swarm; returns whether the harness created it (then the
/// swarm's spec carries [`LABEL_CREATED`] and `down` leaves it again).
pub async fn ensure_swarm(docker: &Docker, init: bool) -> Result<bool, DockerError> {
    match swarm_state(docker).await? {
        SwarmState::Manager => Ok(false),
        SwarmState::Unusable(reason) => Err(DockerError::Invalid(reason)),
        SwarmState::Inactive if !init => Err(DockerError::Invalid(
            "this Docker daemon is in no swarm: run `docker swarm init` (or `devnet up \
             --backend swarm --swarm-init`, which creates a single-node swarm and leaves it \
             on `devnet down`)"
                .into(),
        )),
        SwarmState::Inactive => {
            docker
                .init_swarm(SwarmInitRequest {
                    listen_addr: Some("127.0.0.1:2377".into()),
                    advertise_addr: Some("127.0.0.1".into()),
                    spec: Some(SwarmSpec {
                        labels: Some(HashMap::from([(
                            LABEL_CREATED.to_string(),
                            "blyan-harness".to_string(),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            Ok(true)
        }
    }
}

/// The swarm's members that can run tasks (ready and active), local one marked.
pub async fn members(docker: &Docker) -> Result<Vec<Member>, DockerError> {
    let local = docker
        .info()
        .await?
        .swarm
        .and_then(|swarm| swarm.node_id)
        .unwrap_or_default();
    let nodes = docker
        .list_nodes(Some(ListNodesOptionsBuilder::default().build()))
        .await?;
    let mut members: Vec<Member> = nodes
        .into_iter()
        .filter(|node| {
            node.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)
                && node.spec.as_ref().and_then(|s| s.availability)
                    == Some(NodeSpecAvailabilityEnum::ACTIVE)
        })
        .map(|node| {
            let id = node.id.unwrap_or_default();
            let labels = node.spec.and_then(|spec| spec.labels).unwrap_or_default();
            let description = node.description.unwrap_or_default();
            let resources = description.resources.unwrap_or_default();
            Member {
                local: id == local,
                id,
                hostname: description.hostname.unwrap_or_default(),
                address: node.status.and_then(|s| s.addr).unwrap_or_default(),
                cores: resources.nano_cpus.unwrap_or(0) as f64 / 1e9,
                memory_mib: resources.memory_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
                zone: labels.get(LABEL_ZONE).cloned(),
                docker: labels.get(LABEL_DOCKER).cloned(),
            }
        })
        .collect();
    members.sort_by(|a, b| b.local.cmp(&a.local).then(a.hostname.cmp(&b.hostname)));
    Ok(members)
}

fn service_name(devnet: &str, moniker: &str) -> String {
    format!("blyan-{devnet}-{moniker}")
}

/// The plan of a Swarm devnet: node `i` reachable as its service's name on the overlay, API
/// published on `api_port_base + i` of the member `placement[i]` runs it.
pub fn swarm_plan(
    manifest: &Manifest,
    members: &[Member],
    placement: &[usize],
    api_port_base: u16,
    log_level: &str,
    node_bin: &Path,
) -> DevnetPlan {
    let names: Vec<String> = manifest
        .resolve()
        .into_iter()
        .map(|node| node.name)
        .collect();
    let node = |index: usize| {
        let member = &members[placement[index]];
        let host = if member.local || member.address.is_empty() {
            "127.0.0.1".to_string()
        } else {
            member.address.clone()
        };
        let service = service_name(&manifest.name, &names[index]);
        crate::testnet::NodePlan {
            api_url: format!("http://{host}:{}", api_port_base as usize + index),
            p2p_address: format!("/dns4/{service}/tcp/{P2P_PORT}"),
            ..docker::container_node(std::net::Ipv4Addr::UNSPECIFIED)
        }
    };
    let proxy = docker::container_proxy(
        &service_name(&manifest.name, "chaos-proxy"),
        format!("127.0.0.1:{}", api_port_base - PROXY_API_OFFSET),
    );
    crate::testnet::resolve(
        manifest,
        &crate::testnet::Addressing {
            backend: crate::backend::kind::BackendKind::Swarm,
            node: &node,
            proxy: Some(proxy),
            log_level,
            node_bin,
            genesis_time_ms: None,
        },
    )
}

fn labels(devnet: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL_DEVNET.to_string(), devnet.to_string())])
}

fn read(path: &Path) -> Result<String, DockerError> {
    std::fs::read(path)
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|source| DockerError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A secret or config file in the container.
fn secret_file(name: &str) -> TaskSpecContainerSpecFile {
    TaskSpecContainerSpecFile {
        name: Some(name.into()),
        uid: Some("0".into()),
        gid: Some("0".into()),
        mode: Some(0o600),
    }
}

fn config_file(name: &str) -> TaskSpecContainerSpecFile1 {
    TaskSpecContainerSpecFile1 {
        name: Some(name.into()),
        uid: Some("0".into()),
        gid: Some("0".into()),
        mode: Some(0o644),
    }
}

/// Makes the node image reachable from every member: pushed to `registry` when one is
/// configured, else loaded into each other member's daemon (`blyan.docker` label) from this
/// one's (`docker save | docker load`). Returns the image reference services use.
pub async fn distribute_image(
    docker: &Docker,
    image: &ImageInfo,
    members: &[Member],
    registry: Option<&str>,
) -> Result<String, DockerError> {
    if let Some(registry) = registry {
        let repo = format!("{}/{}", registry.trim_end_matches('/'), docker::IMAGE);
        let tag = image.binary_sha256.chars().take(12).collect::<String>();
        docker
            .tag_image(
                &image.tag,
                Some(
                    bollard::query_parameters::TagImageOptionsBuilder::default()
                        .repo(&repo)
                        .tag(&tag)
                        .build(),
                ),
            )
            .await?;
        let mut push = docker.push_image(
            &repo,
            Some(
                bollard::query_parameters::PushImageOptionsBuilder::default()
                    .tag(&tag)
                    .build(),
            ),
            None,
        );
        use futures::StreamExt;
        while let Some(message) = push.next().await {
            let message = message?;
            if let Some(error) = message.error_detail.and_then(|detail| detail.message) {
                return Err(DockerError::Build(format!("push to {repo}: {error}")));
            }
        }
        return Ok(format!("{repo}:{tag}"));
    }
    for member in members.iter().filter(|member| !member.local) {
        let Some(endpoint) = &member.docker else {
            return Err(DockerError::Invalid(format!(
                "swarm member {} ({}) has no way to get the node image: configure a registry \
                 (--registry HOST:PORT) or label the member with its Docker API (docker node \
                 update --label-add {LABEL_DOCKER}=tcp://HOST:2375 {})",
                member.hostname, member.id, member.id
            )));
        };
        let remote = member_client(endpoint)?;
        copy_image(docker, &remote, &image.tag).await?;
    }
    Ok(image.tag.clone())
}

/// `docker save TAG | docker -H REMOTE load`, streamed chunk by chunk (an image is tens of
/// MiB; nothing is held whole in memory). Returns what the remote daemon said it loaded
/// (`Loaded image: TAG`).
pub async fn copy_image(from: &Docker, to: &Docker, tag: &str) -> Result<Vec<String>, DockerError> {
    use futures::StreamExt;
    let failed: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let export_failed = failed.clone();
    let chunks = from.export_image(tag).filter_map(move |chunk| {
        let failed = export_failed.clone();
        async move {
            match chunk {
                Ok(bytes) => Some(bytes),
                Err(error) => {
                    if let Ok(mut slot) = failed.lock() {
                        slot.get_or_insert(error.to_string());
                    }
                    None
                }
            }
        }
    });
    let mut load = to.import_image(
        bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(false)
            .build(),
        bollard::body_stream(chunks),
        None,
    );
    let mut outcome = Ok(Vec::new());
    while let Some(message) = load.next().await {
        match message {
            Ok(info) => {
                if let Some(error) = info.error_detail.and_then(|detail| detail.message) {
                    outcome = Err(DockerError::Build(format!("docker load: {error}")));
                }
                if let (Ok(loaded), Some(line)) = (&mut outcome, info.stream) {
                    if !line.trim().is_empty() {
                        loaded.push(line.trim().to_string());
                    }
                }
            }
            Err(error) => outcome = Err(error.into()),
        }
    }
    if let Some(error) = failed.lock().ok().and_then(|slot| slot.clone()) {
        return Err(DockerError::Build(format!("docker save {tag}: {error}")));
    }
    outcome
}

/// A client for a member's Docker API: `tcp://HOST:PORT` (or `http://`) or `unix:///PATH`.
pub fn member_client(endpoint: &str) -> Result<Docker, DockerError> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return Ok(Docker::connect_with_unix(
            path,
            120,
            bollard::API_DEFAULT_VERSION,
        )?);
    }
    if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        return Ok(Docker::connect_with_http(
            endpoint,
            120,
            bollard::API_DEFAULT_VERSION,
        )?);
    }
    Err(DockerError::Invalid(format!(
        "{LABEL_DOCKER}={endpoint:?}: expected tcp://HOST:PORT or unix:///PATH"
    )))
}

/// Starts the manifest's devnet as Swarm services and waits for `wait_height` on every node;
/// on any failure everything it created is removed again (and a swarm it created is left).
pub async fn up(
    docker: &Docker,
    manifest: &Manifest,
    options: &UpSettings,
    progress: impl Fn(Stage) + Send + Sync,
) -> Result<DevnetState, DockerError> {
    progress(Stage::Swarm);
    let created = ensure_swarm(docker, options.swarm_init).await?;
    let result = up_inner(docker, manifest, options, created, &progress).await;
    if result.is_err() {
        let _ = remove_by_label(docker, &manifest.name).await;
        if created {
            let _ = leave_if_created(docker).await;
        }
    }
    result
}

/// One service per node, pinned to its member, created one after the other.
async fn create_services(
    docker: &Docker,
    manifest: &Manifest,
    state: &mut DevnetState,
    (network, image_ref, members): (&str, &str, &[Member]),
    placement: &[usize],
    options: &UpSettings,
    progress: &(impl Fn(Stage) + Send + Sync),
) -> Result<(), DockerError> {
    let name = &manifest.name;
    let total = state.nodes.len();
    progress(Stage::Services {
        created: 0,
        of: total,
    });
    for index in 0..total {
        let node = state.nodes[index].clone();
        let spec = node_service(
            docker,
            name,
            network,
            image_ref,
            &node,
            &members[placement[index]],
            options.api_port_base + index as u16,
            manifest.resources.memory_mb * 1024 * 1024,
            total,
        )
        .await?;
        let response = docker.create_service(spec, None).await?;
        state.nodes[index].container = response.id;
        progress(Stage::Services {
            created: index + 1,
            of: total,
        });
    }
    Ok(())
}

/// Waits for `wait_height` on every node; meanwhile a task that failed to start is started
/// again (bounded). A timeout says why tasks did not run.
async fn wait_supervised(
    docker: &Docker,
    state: &DevnetState,
    options: &UpSettings,
    progress: &(impl Fn(Stage) + Send + Sync),
) -> Result<(), DockerError> {
    let name = &state.name;
    let total = state.nodes.len();
    let all: Vec<usize> = (0..state.nodes.len()).collect();
    let wait = docker::wait_heights(
        state,
        &all,
        options.wait_height,
        options.wait_timeout,
        |ready| progress(Stage::Heights { ready, of: total }),
    );
    // Meanwhile a task that failed to start is started again (bounded).
    let supervise = async {
        let mut attempts = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let services: Vec<String> = state
                .nodes
                .iter()
                .filter_map(|n| n.container.clone())
                .collect();
            for service in services {
                if let Err(error) = retry_failed_start(docker, &service, &mut attempts).await {
                    eprintln!("note: {error}");
                }
            }
        }
    };
    let waited = tokio::select! {
        waited = wait => waited,
        never = supervise => never,
    };
    if let Err(error) = waited {
        // Say why a task did not run (image missing on a member, port taken, ...).
        let reasons = task_errors(docker, name).await.unwrap_or_default();
        if reasons.is_empty() {
            return Err(error);
        }
        return Err(DockerError::Invalid(format!(
            "{error}; tasks: {}",
            reasons.join("; ")
        )));
    }
    Ok(())
}

async fn up_inner(
    docker: &Docker,
    manifest: &Manifest,
    options: &UpSettings,
    created: bool,
    progress: &(impl Fn(Stage) + Send + Sync),
) -> Result<DevnetState, DockerError> {
    let name = &manifest.name;
    let earlier = remove_by_label(docker, name).await?;
    if earlier.services > 0 {
        eprintln!(
            "note: removed {} services of an earlier devnet {name:?}",
            earlier.services
        );
    }
    let members = members(docker).await?;
    let nodes = manifest.resolve();
    let zones: Vec<String> = nodes.iter().map(|node| node.zone.clone()).collect();
    let memory_mib = manifest.resources.memory_mb as u64;
    let placement = plan::place(&zones, memory_mib, &members)
        .map_err(|reason| DockerError::Invalid(format!("capacity: {reason}")))?;
    progress(Stage::Image);
    let image = docker::build_image(docker, &options.node_bin, false).await?;
    let image_ref = distribute_image(docker, &image, &members, options.registry.as_deref()).await?;
    progress(Stage::Genesis);
    let base = docker::absolute_base(&options.base)?;
    let plan = swarm_plan(
        manifest,
        &members,
        &placement,
        options.api_port_base,
        &options.log_level,
        &options.node_bin,
    );
    let mut state = crate::testnet::homes::write_devnet(&base, &plan)?;
    state.swarm = Some(crate::testnet::record::SwarmInfo {
        created,
        members: members.iter().map(|m| m.hostname.clone()).collect(),
    });
    progress(Stage::Network);
    let network = format!("blyan-{name}");
    let labels = labels(name);
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await?;
    state.network = Some(network.clone());
    if let Some(proxy) = state.proxy.clone() {
        let local = members
            .iter()
            .find(|member| member.local)
            .map(|member| member.id.clone())
            .unwrap_or_default();
        let service = start_proxy(docker, name, &network, &plan, &options.node_bin, &local).await?;
        docker::populate_proxy(proxy).await?;
        if let Some(proxy) = &mut state.proxy {
            proxy.container = Some(service);
        }
    }
    let spec = (network.as_str(), image_ref.as_str(), members.as_slice());
    create_services(
        docker, manifest, &mut state, spec, &placement, options, progress,
    )
    .await?;
    crate::testnet::record::save_state(&base, &state)?;
    wait_supervised(docker, &state, options, progress).await?;
    Ok(state)
}

/// The health check interval of a devnet of `nodes`: 0.25 s a node, within 3..=30 s.
pub fn health_interval(nodes: usize) -> Duration {
    Duration::from_millis((nodes as u64 * 250).clamp(3_000, 30_000))
}

/// The node's keys as Swarm secrets and its config and genesis as Swarm configs, each
/// mounted at its place in the home.
async fn home_files(
    docker: &Docker,
    home: &Home,
    service: &str,
    labels: &HashMap<String, String>,
) -> Result<
    (
        Vec<TaskSpecContainerSpecSecrets>,
        Vec<TaskSpecContainerSpecConfigs>,
    ),
    DockerError,
> {
    let mut secrets = Vec::new();
    for (what, path, inside) in [
        ("node-key", home.node_key(), "keys/node_key.json"),
        (
            "validator-key",
            home.validator_key(),
            "keys/validator_key.json",
        ),
    ] {
        let secret = format!("{service}-{what}");
        let id = docker
            .create_secret(SecretSpec {
                name: Some(secret.clone()),
                labels: Some(labels.clone()),
                data: Some(read(&path)?),
                ..Default::default()
            })
            .await?
            .id;
        secrets.push(TaskSpecContainerSpecSecrets {
            file: Some(secret_file(&format!("{HOME_INSIDE}/{inside}"))),
            secret_id: Some(id),
            secret_name: Some(secret),
        });
    }
    let mut configs = Vec::new();
    for (what, path, inside) in [
        ("config", home.config(), "config.toml"),
        ("genesis", home.genesis(), "genesis.json"),
    ] {
        let config = format!("{service}-{what}");
        let id = docker
            .create_config(bollard::models::ConfigSpec {
                name: Some(config.clone()),
                labels: Some(labels.clone()),
                data: Some(read(&path)?),
                ..Default::default()
            })
            .await?
            .id;
        configs.push(TaskSpecContainerSpecConfigs {
            file: Some(config_file(&format!("{HOME_INSIDE}/{inside}"))),
            config_id: Some(id),
            config_name: Some(config),
            ..Default::default()
        });
    }
    Ok((secrets, configs))
}

/// One node's service: its secrets and configs, volume, placement, published API port.
#[allow(clippy::too_many_arguments)]
async fn node_service(
    docker: &Docker,
    devnet: &str,
    network: &str,
    image: &str,
    node: &crate::testnet::record::NodeEntry,
    member: &Member,
    api_port: u16,
    memory: i64,
    node_count: usize,
) -> Result<ServiceSpec, DockerError> {
    let home = Home::new(&node.home);
    let service = service_name(devnet, &node.moniker);
    let mut labels = labels(devnet);
    labels.insert(LABEL_NODE.into(), node.moniker.clone());
    labels.insert(
        LABEL_ROLE.into(),
        if node.validator { "validator" } else { "full" }.into(),
    );
    let (secrets, configs) = home_files(docker, &home, &service, &labels).await?;
    let mut constraints = vec![format!("node.id == {}", member.id)];
    if let Some(zone) = &member.zone {
        constraints.push(format!("node.labels.{LABEL_ZONE} == {zone}"));
    }
    Ok(ServiceSpec {
        name: Some(service.clone()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.into()),
                labels: Some(labels.clone()),
                args: Some(vec!["start".into(), "--home".into(), HOME_INSIDE.into()]),
                hostname: Some(node.moniker.clone()),
                mounts: Some(vec![Mount {
                    target: Some(HOME_INSIDE.into()),
                    source: Some(service.clone()),
                    typ: Some(MountType::VOLUME),
                    volume_options: Some(MountVolumeOptions {
                        labels: Some(labels.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                secrets: Some(secrets),
                configs: Some(configs),
                stop_grace_period: Some(10_000_000_000),
                health_check: Some(HealthConfig {
                    test: Some(vec![
                        "CMD".into(),
                        "/bin/blyan-node".into(),
                        "health".into(),
                        "--api".into(),
                        format!("127.0.0.1:{API_PORT}"),
                    ]),
                    // Swarm puts a task into its service's DNS only once it is healthy, so
                    // the first probe gates every peer's first dial; but probes are processes
                    // (runc), costly by the hundred. A quarter second per node, 3 to 30 s,
                    // keeps it to at most 4 probes a second.
                    interval: Some(health_interval(node_count).as_nanos() as i64),
                    timeout: Some(3_000_000_000),
                    retries: Some(3),
                    start_period: Some(60_000_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(memory),
                    ..Default::default()
                }),
                reservations: Some(ResourceObject {
                    memory_bytes: Some((plan::NODE_RSS_MIB * 1024.0 * 1024.0) as i64),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: Some(pinned(constraints)),
            networks: Some(vec![attachment(network, vec![node.moniker.clone()])]),
            ..Default::default()
        }),
        endpoint_spec: Some(published(API_PORT, api_port)),
        ..Default::default()
    })
}

/// A service's endpoint: DNS round-robin (its name resolves to the task itself) and `inside`
/// published in host mode on `outside` of the member that runs it.
fn published(inside: u16, outside: u16) -> EndpointSpec {
    EndpointSpec {
        mode: Some(EndpointSpecModeEnum::DNSRR),
        ports: Some(vec![EndpointPortConfig {
            target_port: Some(inside as i64),
            published_port: Some(outside as i64),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            ..Default::default()
        }]),
    }
}

fn pinned(constraints: Vec<String>) -> TaskSpecPlacement {
    TaskSpecPlacement {
        constraints: Some(constraints),
        ..Default::default()
    }
}

fn attachment(network: &str, aliases: Vec<String>) -> NetworkAttachmentConfig {
    NetworkAttachmentConfig {
        target: Some(network.into()),
        aliases: (!aliases.is_empty()).then_some(aliases),
        ..Default::default()
    }
}

/// The link proxy as a service on the overlay (its API published on this host).
async fn start_proxy(
    docker: &Docker,
    devnet: &str,
    network: &str,
    plan: &DevnetPlan,
    node_bin: &Path,
    local: &str,
) -> Result<String, DockerError> {
    let binary = crate::links::existing_proxy_bin(node_bin).map_err(DockerError::Build)?;
    let image = docker::build_proxy_image(docker, &binary, false).await?;
    let proxy = plan.proxy.as_ref().expect("called with a proxy plan");
    let api_port: u16 = proxy
        .api
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| DockerError::Invalid(format!("proxy api {}", proxy.api)))?;
    let mut labels = labels(devnet);
    labels.insert(LABEL_NODE.into(), "chaos-proxy".into());
    labels.insert(LABEL_ROLE.into(), "proxy".into());
    let spec = ServiceSpec {
        name: Some(service_name(devnet, "chaos-proxy")),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.tag),
                labels: Some(labels),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(256 * 1024 * 1024),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
                ..Default::default()
            }),
            // The proxy's API is reached from here: it runs on this member.
            placement: Some(pinned(vec![format!("node.id == {local}")])),
            networks: Some(vec![attachment(network, Vec::new())]),
            ..Default::default()
        }),
        endpoint_spec: Some(published(PROXY_API_PORT, api_port)),
        ..Default::default()
    };
    Ok(docker
        .create_service(spec, None)
        .await?
        .id
        .unwrap_or_default())
}

/// Why tasks of the devnet are not running (for errors).
async fn task_errors(docker: &Docker, devnet: &str) -> Result<Vec<String>, DockerError> {
    let tasks = docker
        .list_tasks(Some(
            ListTasksOptionsBuilder::default()
                .filters(&docker::label_filter(Some(devnet)))
                .build(),
        ))
        .await?;
    Ok(tasks
        .into_iter()
        .filter_map(|task| {
            let status = task.status?;
            let state = status.state?;
            if state == TaskState::RUNNING {
                return None;
            }
            Some(format!(
                "{} {state:?}: {}",
                task.name.unwrap_or_default(),
                status.err.or(status.message).unwrap_or_default()
            ))
        })
        .take(5)
        .collect())
}

/// The running container of a service's current task (on this host), waiting up to `limit`
/// for one to run.
pub async fn task_container(
    docker: &Docker,
    service: &str,
    limit: Duration,
) -> Result<String, DockerError> {
    let deadline = Instant::now() + limit;
    loop {
        let filters = HashMap::from([
            ("service".to_string(), vec![service.to_string()]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ]);
        let tasks = docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filters).build(),
            ))
            .await?;
        let running = tasks.into_iter().find_map(|task| {
            let status = task.status?;
            (status.state? == TaskState::RUNNING).then_some((
                task.node_id.unwrap_or_default(),
                status.container_status?.container_id?,
            ))
        });
        if let Some((member, id)) = running {
            let local = docker
                .info()
                .await?
                .swarm
                .and_then(|swarm| swarm.node_id)
                .unwrap_or_default();
            if member != local {
                return Err(DockerError::Invalid(format!(
                    "service {service} runs on swarm member {member}, not on this host \
                     ({local}): process faults reach only tasks on the member the harness \
                     runs on (docs/SCALING.md)"
                )));
            }
            return Ok(id);
        }
        if Instant::now() >= deadline {
            return Err(DockerError::Invalid(format!(
                "service {service} has no running task after {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `service` has a task that is running or on its way (none failed, rejected, shut
/// down or complete), and the newest dead task's error.
async fn task_alive(docker: &Docker, service: &str) -> Result<(bool, Option<String>), DockerError> {
    let filters = HashMap::from([("service".to_string(), vec![service.to_string()])]);
    let tasks = docker
        .list_tasks(Some(
            ListTasksOptionsBuilder::default().filters(&filters).build(),
        ))
        .await?;
    let dead = |state: &TaskState| {
        matches!(
            state,
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::REMOVE
                | TaskState::ORPHANED
        )
    };
    let mut alive = false;
    let mut newest: Option<(String, String)> = None;
    for task in tasks {
        let status = task.status.unwrap_or_default();
        match status.state {
            Some(state) if !dead(&state) => alive = true,
            _ => {
                let when = task
                    .created_at
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_default();
                if newest.as_ref().is_none_or(|(at, _)| when > *at) {
                    newest = Some((when, status.err.or(status.message).unwrap_or_default()));
                }
            }
        }
    }
    Ok((alive, newest.map(|(_, error)| error)))
}

/// Starts `service` again when its only tasks are dead, at most 3 times per service: dockerd
/// sometimes fails to start a task ("unable to remount dir as readonly: mount
/// tmpfs:.../mounts/secrets: device or resource busy" in one of 20 here), and with restart
/// policy `none` nothing else would. Used only while no fault is meant to keep a node down.
async fn retry_failed_start(
    docker: &Docker,
    service: &str,
    attempts: &mut HashMap<String, u32>,
) -> Result<(), DockerError> {
    let (alive, error) = task_alive(docker, service).await?;
    if alive {
        return Ok(());
    }
    let tried = attempts.entry(service.to_string()).or_insert(0);
    if *tried >= 3 {
        return Ok(());
    }
    *tried += 1;
    eprintln!(
        "note: a task of {service} did not start ({}); starting it again (attempt {tried} of 3)",
        error.unwrap_or_default()
    );
    force_update(docker, service).await
}

/// Starts a new task of `service` (after its task was killed or stopped) and waits up to 30 s
/// for it to run, starting it again (up to 3 times) when the new task fails to start.
pub async fn restart_service(docker: &Docker, service: &str) -> Result<(), DockerError> {
    force_update(docker, service).await?;
    let mut attempts = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let filters = HashMap::from([
            ("service".to_string(), vec![service.to_string()]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ]);
        let running = docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filters).build(),
            ))
            .await?
            .into_iter()
            .any(|task| task.status.and_then(|s| s.state) == Some(TaskState::RUNNING));
        if running {
            return Ok(());
        }
        retry_failed_start(docker, service, &mut attempts).await?;
    }
    Err(DockerError::Invalid(format!(
        "service {service}: no task running 30 s after it was started again"
    )))
}

/// A new task of `service`: its spec with `force_update` raised.
async fn force_update(docker: &Docker, service: &str) -> Result<(), DockerError> {
    let current = docker
        .inspect_service(
            service,
            None::<bollard::query_parameters::InspectServiceOptions>,
        )
        .await?;
    let version = current
        .version
        .and_then(|version| version.index)
        .ok_or_else(|| DockerError::Invalid(format!("service {service} has no version")))?;
    let mut spec = current
        .spec
        .ok_or_else(|| DockerError::Invalid(format!("service {service} has no spec")))?;
    if let Some(task) = &mut spec.task_template {
        task.force_update = Some(task.force_update.unwrap_or(0) + 1);
    }
    docker
        .update_service(
            service,
            spec,
            bollard::query_parameters::UpdateServiceOptionsBuilder::default()
                .version(version as i32)
                .build(),
            None,
        )
        .await?;
    Ok(())
}

/// What `down` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub services: usize,
    pub secrets: usize,
    pub configs: usize,
    pub networks: usize,
    pub volumes: usize,
}

/// Removes devnet `name`'s services, then (once their containers are gone) its secrets,
/// configs, network and volumes, all found by label. Bounded: a minute at most.
/// Waits (until `deadline`) for the devnet's task containers to be gone: volumes, secrets and
/// the network stay in use until they are.
async fn wait_tasks_gone(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
    deadline: Instant,
) -> Result<(), DockerError> {
    loop {
        let left = docker
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(filters)
                    .build(),
            ))
            .await?;
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Removes the devnet's secrets and configs.
async fn remove_secrets_and_configs(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
    removed: &mut Removed,
) -> Result<(), DockerError> {
    for secret in docker
        .list_secrets(Some(
            ListSecretsOptionsBuilder::default()
                .filters(filters)
                .build(),
        ))
        .await?
    {
        if let Some(id) = secret.id {
            if removed_ok(docker.delete_secret(&id).await)? {
                removed.secrets += 1;
            }
        }
    }
    for config in docker
        .list_configs(Some(
            ListConfigsOptionsBuilder::default()
                .filters(filters)
                .build(),
        ))
        .await?
    {
        if let Some(id) = config.id {
            if removed_ok(docker.delete_config(&id).await)? {
                removed.configs += 1;
            }
        }
    }
    Ok(())
}

/// Removes the devnet's networks and volumes, retrying while one is still in use (its task
/// containers are being removed) until `deadline`.
async fn remove_networks_and_volumes(
    docker: &Docker,
    name: &str,
    filters: &HashMap<String, Vec<String>>,
    (deadline, removed): (Instant, &mut Removed),
) -> Result<(), DockerError> {
    loop {
        let mut busy = false;
        for network in docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(filters)
                    .build(),
            ))
            .await?
        {
            if let Some(id) = network.id {
                match docker.remove_network(&id).await {
                    Ok(()) => removed.networks += 1,
                    Err(error) if is_not_found(&error) => {}
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 403 | 409,
                        ..
                    }) => busy = true,
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let volumes = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(filters)
                    .build(),
            ))
            .await?
            .volumes
            .unwrap_or_default();
        for volume in volumes {
            match docker
                .remove_volume(
                    &volume.name,
                    Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
                )
                .await
            {
                Ok(()) => removed.volumes += 1,
                Err(error) if is_not_found(&error) => {}
                // "volume is in use": its container is still being removed.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => busy = true,
                Err(error) => return Err(error.into()),
            }
        }
        if !busy {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DockerError::Invalid(format!(
                "devnet {name}: a network or volume is still in use after 60 s; run `devnet \
                 down` again"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn remove_by_label(docker: &Docker, name: &str) -> Result<Removed, DockerError> {
    if swarm_state(docker).await? != SwarmState::Manager {
        return Ok(Removed::default());
    }
    let filters = docker::label_filter(Some(name));
    let mut removed = Removed::default();
    let services = docker
        .list_services(Some(
            ListServicesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    for service in services {
        if let Some(id) = service.id {
            match docker.delete_service(&id).await {
                Ok(()) => removed.services += 1,
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    // Task containers go away asynchronously; volumes, secrets and the network stay in use
    // until they have.
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_tasks_gone(docker, &filters, deadline).await?;
    remove_secrets_and_configs(docker, &filters, &mut removed).await?;
    remove_networks_and_volumes(docker, name, &filters, (deadline, &mut removed)).await?;
    Ok(removed)
}

use crate::docker::is_not_found;

fn removed_ok(result: Result<(), bollard::errors::Error>) -> Result<bool, DockerError> {
    match result {
        Ok(()) => Ok(true),
        Err(error) if is_not_found(&error) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Leaves the swarm when the harness created it and no service is left on it; returns whether
/// it left.
pub async fn leave_if_created(docker: &Docker) -> Result<bool, DockerError> {
    if swarm_state(docker).await? != SwarmState::Manager {
        return Ok(false);
    }
    let swarm = docker.inspect_swarm().await?;
    let ours = swarm
        .spec
        .and_then(|spec| spec.labels)
        .is_some_and(|labels| labels.contains_key(LABEL_CREATED));
    if !ours {
        return Ok(false);
    }
    let services = docker
        .list_services(None::<bollard::query_parameters::ListServicesOptions>)
        .await?;
    if !services.is_empty() {
        return Ok(false);
    }
    docker
        .leave_swarm(Some(
            bollard::query_parameters::LeaveSwarmOptionsBuilder::default()
                .force(true)
                .build(),
        ))
        .await?;
    Ok(true)
}
