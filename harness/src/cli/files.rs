//! `devnet manifest | plan | compose | render`.

use std::path::PathBuf;

use super::{load_manifest, parse_backend, runtime};
use anyhow::{bail, Context, Result};
use blyan_harness::backend::{self};
use blyan_harness::docker;
use blyan_harness::manifest::{Manifest, Role, EXAMPLE};
use blyan_harness::plan;
use clap::Args;

#[derive(Args)]
pub struct ManifestArgs {
    /// Print the commented example manifest.
    #[arg(long)]
    example: bool,
    /// Check a manifest file and show what it resolves to.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Check it for this backend (auto, docker, process, swarm) instead of the manifest's:
    /// faults the backend cannot do are refused, naming the field.
    #[arg(long, requires = "check")]
    backend: Option<String>,
}

#[derive(Args)]
pub struct ComposeArgs {
    /// A manifest file (see `devnet manifest --example`); default: 4 validators.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Validators (overrides the manifest's count).
    #[arg(long)]
    nodes: Option<usize>,
    /// Seed of every key (overrides the manifest).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for docker-compose.yml and the homes it mounts.
    #[arg(long, default_value = "compose", value_name = "DIR")]
    out: PathBuf,
    /// The devnet's network, a /24; node i gets address .10+i.
    #[arg(long, default_value = blyan_harness::render::compose::DEFAULT_SUBNET)]
    subnet: String,
    /// Host port (127.0.0.1) of node 0's API; node i uses base + i.
    #[arg(long, default_value_t = blyan_harness::render::compose::DEFAULT_API_PORT_BASE)]
    api_port_base: u16,
    /// The node image.
    #[arg(long, default_value = "blyan-node:dev")]
    image: String,
    /// Wipe homes that hold a chain from an earlier run.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct PlanArgs {
    /// Nodes to plan for.
    #[arg(long)]
    nodes: Option<usize>,
    /// A manifest to plan for.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Plan for the Swarm backend: split the nodes across this daemon's swarm members (by
    /// zone) and say whether they fit the cluster.
    #[arg(long)]
    swarm: bool,
    /// Plan for a cluster of N identical members instead of a live swarm (with
    /// --member-cores and --member-memory-mib), e.g. to size a 500-node nightly suite.
    #[arg(long, value_name = "N")]
    members: Option<usize>,
    /// Cores of each member (with --members).
    #[arg(long, default_value_t = 16.0)]
    member_cores: f64,
    /// Memory of each member, MiB (with --members).
    #[arg(long, default_value_t = 65536.0)]
    member_memory_mib: f64,
}

#[derive(Args)]
pub struct RenderArgs {
    /// What to render: `k8s` (Kubernetes objects for `kubectl apply -f`).
    target: String,
    /// A manifest file (see `devnet manifest --example`); default: 4 validators.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Validators (overrides the manifest's count).
    #[arg(long)]
    nodes: Option<usize>,
    /// Seed of every key (overrides the manifest).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for devnet.yaml.
    #[arg(long, default_value = "k8s", value_name = "DIR")]
    out: PathBuf,
    /// Print the YAML instead of writing DIR/devnet.yaml.
    #[arg(long)]
    stdout: bool,
    /// The namespace of every object.
    #[arg(long, default_value = "blyan-devnet")]
    namespace: String,
    /// The node image (pushed to a registry the cluster pulls from).
    #[arg(long, default_value = "blyan-node:dev")]
    image: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Size of each node's volume claim.
    #[arg(long, default_value = "1Gi")]
    storage: String,
    /// Storage class of the claims (default: the cluster's default class).
    #[arg(long)]
    storage_class: Option<String>,
}

pub fn manifest(args: ManifestArgs) -> Result<bool> {
    if args.example {
        print!("{EXAMPLE}");
        return Ok(true);
    }
    let Some(path) = args.check else {
        bail!("manifest: use --example or --check FILE");
    };
    let mut manifest = Manifest::load(&path)?;
    if let Some(backend) = &args.backend {
        manifest.backend = parse_backend(backend)?;
        manifest.validate(&path.display().to_string())?;
        // What the backend cannot do (NAT, inference, isolate); the host's fit is `devnet plan`.
        backend::check(manifest.backend, &manifest, true)
            .with_context(|| format!("{}: backend {}", path.display(), manifest.backend))?;
    }
    let nodes = manifest.resolve();
    let validators = nodes.iter().filter(|n| n.role == Role::Validator).count();
    println!(
        "{}: valid. devnet {:?}, {} nodes ({} validators, {} full), backend {:?}, seed {}",
        path.display(),
        manifest.name,
        nodes.len(),
        validators,
        nodes.len() - validators,
        manifest.backend,
        manifest.seed
    );
    Ok(true)
}

pub fn plan(args: PlanArgs) -> Result<bool> {
    let (zones, memory_mb) = match (&args.manifest, args.nodes) {
        (Some(path), _) => {
            let manifest = Manifest::load(path)?;
            (
                manifest
                    .resolve()
                    .into_iter()
                    .map(|node| node.zone)
                    .collect::<Vec<_>>(),
                manifest.resources.memory_mb as u64,
            )
        }
        (None, Some(nodes)) => (vec!["default".to_string(); nodes], 256),
        (None, None) => bail!("plan: give --nodes N or --manifest FILE"),
    };
    let nodes = zones.len();
    if args.swarm || args.members.is_some() {
        let members = match args.members {
            Some(0) => bail!("--members: 0; a cluster needs at least one member"),
            Some(count) => (0..count)
                .map(|index| plan::Member {
                    id: format!("member{index}"),
                    hostname: format!("member{index}"),
                    address: String::new(),
                    cores: args.member_cores,
                    memory_mib: args.member_memory_mib,
                    zone: None,
                    docker: None,
                    local: index == 0,
                })
                .collect(),
            None => {
                let rt = runtime()?;
                rt.block_on(async {
                    let client = docker::connect().await?;
                    match blyan_harness::swarm::swarm_state(&client).await? {
                        blyan_harness::swarm::SwarmState::Manager => {}
                        blyan_harness::swarm::SwarmState::Inactive => bail!(
                            "--swarm: this Docker daemon is in no swarm (`devnet up --backend \
                             swarm` creates a single-node one; or plan with --members N)"
                        ),
                        blyan_harness::swarm::SwarmState::Unusable(reason) => {
                            bail!("--swarm: {reason}")
                        }
                    }
                    Ok(blyan_harness::swarm::members(&client).await?)
                })?
            }
        };
        return match plan::place(&zones, memory_mb, &members) {
            Ok(placement) => {
                println!(
                    "{nodes} nodes over {} swarm member(s): fits ({:.0} MiB per node, {} cores per node).",
                    members.len(),
                    plan::NODE_RSS_MIB,
                    plan::NODE_CPU_CORES
                );
                println!(
                    "{:<24} {:>6} {:>8} {:>12}  ZONE",
                    "MEMBER", "NODES", "CORES", "MEMORY MIB"
                );
                for (index, member) in members.iter().enumerate() {
                    let count = placement.iter().filter(|p| **p == index).count();
                    println!(
                        "{:<24} {:>6} {:>8.1} {:>12.0}  {}",
                        member.hostname,
                        count,
                        member.cores,
                        member.memory_mib,
                        member.zone.as_deref().unwrap_or("-")
                    );
                }
                Ok(true)
            }
            Err(reason) => {
                println!("Does not fit the cluster: {reason}.");
                Ok(false)
            }
        };
    }
    let estimate = plan::estimate(nodes, memory_mb);
    println!("{}", estimate.describe());
    let neighbours = plan::check_neighbours(nodes, plan::neighbour_limit());
    match &neighbours {
        Ok(()) => println!(
            "Docker backend: about {} neighbour (ARP) entries, within this kernel's limit ({}).",
            plan::neighbour_entries(nodes),
            plan::neighbour_limit().map_or("unknown".to_string(), |limit| limit.to_string())
        ),
        Err(reason) => println!("Docker backend: {reason}."),
    }
    Ok(estimate.fits && neighbours.is_ok())
}

pub fn render(args: RenderArgs) -> Result<bool> {
    if args.target != "k8s" {
        bail!("render: {:?} is not a target (k8s)", args.target);
    }
    let mut manifest = load_manifest(args.manifest.as_deref(), None)?;
    if let Some(nodes) = args.nodes {
        if !manifest.nodes.is_empty() {
            bail!("--nodes: the manifest lists its nodes explicitly");
        }
        manifest.validators = Some(nodes as i64);
    }
    if let Some(seed) = args.seed {
        manifest.seed = seed;
    }
    let options = blyan_harness::render::k8s::K8sOptions {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        cluster_domain: args.cluster_domain.clone(),
        storage: args.storage.clone(),
        storage_class: args.storage_class.clone(),
    };
    let objects = blyan_harness::render::k8s::render(&manifest, &options)?;
    if args.stdout {
        print!("{}", blyan_harness::render::k8s::to_yaml(&objects)?);
        return Ok(true);
    }
    let file = blyan_harness::render::k8s::write(&args.out, &objects)?;
    println!(
        "wrote {} ({} objects: {} nodes as one-replica StatefulSets, a headless Service, \
         ConfigMaps and Secrets) in namespace {}",
        file.display(),
        objects.len(),
        manifest.resolve().len(),
        args.namespace
    );
    println!(
        "apply: kubectl apply -f {}   (image {} must be pullable by the cluster)",
        file.display(),
        args.image
    );
    Ok(true)
}

pub fn compose(args: ComposeArgs) -> Result<bool> {
    use blyan_harness::render::compose::{self, ComposeOptions};
    let mut manifest = load_manifest(args.manifest.as_deref(), None)?;
    if let Some(nodes) = args.nodes {
        if !manifest.nodes.is_empty() {
            bail!("--nodes: the manifest lists its nodes explicitly");
        }
        manifest.validators = Some(nodes as i64);
    }
    if let Some(seed) = args.seed {
        manifest.seed = seed;
    }
    let options = ComposeOptions {
        subnet: compose::parse_subnet(&args.subnet)?,
        api_port_base: args.api_port_base,
        image: args.image.clone(),
        force: args.force,
    };
    let file = compose::write(&args.out, &manifest, &options)?.file;
    let nodes = manifest.resolve().len();
    println!(
        "wrote {} ({nodes} nodes) and their homes under {}",
        file.display(),
        args.out.join("homes").display()
    );
    println!(
        "start: devnet image build && docker-compose -f {} up",
        file.display()
    );
    println!(
        "APIs:  http://127.0.0.1:{}/status .. http://127.0.0.1:{}/status",
        args.api_port_base,
        usize::from(args.api_port_base) + nodes - 1
    );
    Ok(true)
}
