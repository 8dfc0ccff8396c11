//! `devnet compose`: a devnet as a docker-compose file (v1 syntax, file format 2.4, which
//! Debian's `docker-compose` 1.29 runs) plus the node homes it mounts.
//!
//! The rendering is reproducible: keys come from the manifest's seed and genesis has a fixed
//! time, so the same manifest always gives the same files (`compose/` holds a checked-in 4-node
//! rendering, and a test renders it again and compares).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::docker::{self, API_PORT, HOME_INSIDE, IMAGE, LABEL_DEVNET, LABEL_NODE, LABEL_ROLE};
use crate::manifest::{Manifest, ManifestError};
use crate::process::ProcessError;
use crate::testnet::record::DevnetState;
use crate::testnet::DevnetPlan;

/// 2026-01-01T00:00:00Z: the genesis time of every rendering, so that renderings repeat.
pub const GENESIS_TIME_MS: u64 = 1_767_225_600_000;
/// The default network of compose devnets (the Docker backend uses 10.210.x.0/24).
pub const DEFAULT_SUBNET: &str = "10.211.0.0/24";
/// Host port of node 0's API; node i publishes its API on base + i (127.0.0.1 only).
pub const DEFAULT_API_PORT_BASE: u16 = 27100;

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Devnet(#[from] ProcessError),
    #[error(transparent)]
    Testnet(#[from] crate::testnet::TestnetError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// How to render, beyond the manifest.
#[derive(Clone, Debug)]
pub struct ComposeOptions {
    /// The network's /24 (its first three octets; the last is 0).
    pub subnet: Ipv4Addr,
    pub api_port_base: u16,
    /// The node image.
    pub image: String,
    /// Wipe homes that hold a chain (`homes/*/data`) from an earlier run.
    pub force: bool,
}

impl Default for ComposeOptions {
    fn default() -> ComposeOptions {
        ComposeOptions {
            subnet: parse_subnet(DEFAULT_SUBNET).expect("the default subnet parses"),
            api_port_base: DEFAULT_API_PORT_BASE,
            image: format!("{IMAGE}:dev"),
            force: false,
        }
    }
}

/// Parses an IPv4 `/24` such as `10.211.0.0/24`.
pub fn parse_subnet(text: &str) -> Result<Ipv4Addr, ComposeError> {
    let invalid = |reason: &str| ComposeError::Invalid {
        field: "--subnet".into(),
        reason: format!("{text:?}: {reason}"),
    };
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| invalid("expected an IPv4 /24 such as 10.211.0.0/24"))?;
    if prefix != "24" {
        return Err(invalid("only /24 networks are supported"));
    }
    let address: Ipv4Addr = address
        .parse()
        .map_err(|_| invalid("not an IPv4 address"))?;
    if address.octets()[3] != 0 {
        return Err(invalid("the last octet of a /24 must be 0"));
    }
    Ok(address)
}

fn node_ip(subnet: Ipv4Addr, index: usize) -> Ipv4Addr {
    let [a, b, c, _] = subnet.octets();
    Ipv4Addr::new(a, b, c, 10 + index as u8)
}

/// The plan of the manifest's devnet as a compose rendering: fixed addresses in the subnet, a
/// fixed genesis time.
pub fn plan(manifest: &Manifest, options: &ComposeOptions) -> Result<DevnetPlan, ComposeError> {
    manifest.validate("manifest")?;
    if manifest.network.topology.is_some() {
        return Err(ComposeError::Invalid {
            field: "network.topology".into(),
            reason: "NAT routers are made by the docker backend (`devnet up --backend docker`); a compose file does not render them".into(),
        });
    }
    // The manifest allows at most 200 nodes, so .10 + i stays inside the /24.
    let count = manifest.resolve().len();
    if usize::from(options.api_port_base) + count > usize::from(u16::MAX) + 1 {
        return Err(ComposeError::Invalid {
            field: "--api-port-base".into(),
            reason: format!(
                "{} + {count} nodes runs past port 65535",
                options.api_port_base
            ),
        });
    }
    let node = |index: usize| docker::container_node(node_ip(options.subnet, index));
    let plan = super::rendered(manifest, &node);
    Ok(plan)
}

/// What `write` wrote.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// `DIR/docker-compose.yml`.
    pub file: PathBuf,
    /// The nodes, with their API URLs on the published host ports (127.0.0.1).
    pub state: DevnetState,
}

/// Writes `DIR/docker-compose.yml`, `DIR/.gitignore` and the homes under `DIR/homes/` (wiping
/// an earlier `DIR/homes/`).
pub fn write(
    dir: &Path,
    manifest: &Manifest,
    options: &ComposeOptions,
) -> Result<Rendered, ComposeError> {
    let plan = plan(manifest, options)?;
    if !options.force {
        if let Some(data) = chain_data(&dir.join("homes")) {
            return Err(ComposeError::Invalid {
                field: "--out".into(),
                reason: format!(
                    "{} holds a chain from an earlier run; stop it (docker-compose down) and \
                     pass --force to wipe it",
                    data.display()
                ),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| ComposeError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut state = crate::testnet::homes::write_homes(&dir.join("homes"), &plan)?;
    for node in &mut state.nodes {
        node.api = format!(
            "http://127.0.0.1:{}",
            usize::from(options.api_port_base) + node.index
        );
    }
    let ignore = dir.join(".gitignore");
    write_file(
        &ignore,
        "# What the nodes write into their homes while running.\nhomes/*/data/\nhomes/*/checkpoints/\n",
    )?;
    let file = dir.join("docker-compose.yml");
    write_file(&file, &render(&plan, manifest, options))?;
    Ok(Rendered { file, state })
}

/// The first `HOMES/*/data` directory, if any.
fn chain_data(homes: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(homes)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("data"))
        .filter(|data| data.is_dir())
        .collect();
    found.sort();
    found.into_iter().next()
}

fn write_file(path: &Path, text: &str) -> Result<(), ComposeError> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|source| ComposeError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A YAML double-quoted scalar (JSON strings are valid ones).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialise")
}

/// The compose file of `plan` (homes under `./homes/<moniker>` next to it).
pub fn render(plan: &DevnetPlan, manifest: &Manifest, options: &ComposeOptions) -> String {
    let [a, b, c, _] = options.subnet.octets();
    let devnet = format!("compose-{}", plan.name);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Devnet {:?}: {} nodes, seed {}, rendered by `devnet compose`; render again rather",
        plan.name,
        plan.nodes.len(),
        plan.seed
    );
    out.push_str(
        "# than edit. The homes (keys, config, genesis) are in ./homes. Start it, once the image\n\
         # is built (`devnet image build`), with `docker-compose up` in this directory or\n\
         # `docker-compose -f DIR/docker-compose.yml up` from elsewhere.\n",
    );
    let _ = writeln!(
        out,
        "# Node i serves its API on http://127.0.0.1:{}+i (/status, /blocks/latest, /metrics).\n",
        options.api_port_base
    );
    out.push_str("version: \"2.4\"\n\nnetworks:\n  blyan:\n    driver: bridge\n");
    let _ = writeln!(
        out,
        "    ipam:\n      config:\n        - subnet: {a}.{b}.{c}.0/24\n          gateway: {a}.{b}.{c}.1"
    );
    let _ = writeln!(
        out,
        "    labels:\n      {LABEL_DEVNET}: {}",
        quoted(&devnet)
    );
    out.push_str("\nservices:\n");
    let memory_mb = manifest.resources.memory_mb;
    for (index, node) in plan.nodes.iter().enumerate() {
        let ip = node_ip(options.subnet, index);
        let role = if node.stake > 0 { "validator" } else { "full" };
        let _ = writeln!(out, "  {}:", node.moniker);
        let _ = writeln!(out, "    image: {}", quoted(&options.image));
        let _ = writeln!(
            out,
            "    command: [\"start\", \"--home\", \"{HOME_INSIDE}\"]"
        );
        let _ = writeln!(
            out,
            "    volumes:\n      - ./homes/{}:{HOME_INSIDE}",
            node.moniker
        );
        let _ = writeln!(out, "    mem_limit: {memory_mb}m");
        let _ = writeln!(
            out,
            "    ports:\n      - \"127.0.0.1:{}:{API_PORT}\"",
            usize::from(options.api_port_base) + index
        );
        let _ = writeln!(out, "    labels:");
        let _ = writeln!(out, "      {LABEL_DEVNET}: {}", quoted(&devnet));
        let _ = writeln!(out, "      {LABEL_NODE}: {}", quoted(&node.moniker));
        let _ = writeln!(out, "      {LABEL_ROLE}: {role}");
        let _ = writeln!(
            out,
            "    healthcheck:\n      test: [\"CMD\", \"/bin/blyan-node\", \"health\", \"--api\", \"127.0.0.1:{API_PORT}\"]\n      interval: 30s\n      timeout: 3s\n      retries: 3\n      start_period: 10s"
        );
        out.push_str("    stop_grace_period: 10s\n");
        let _ = writeln!(
            out,
            "    networks:\n      blyan:\n        ipv4_address: {ip}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four() -> Manifest {
        let mut manifest = Manifest::default_named("compose");
        manifest.seed = 7;
        manifest
    }

    #[test]
    fn subnets_are_validated() {
        assert_eq!(
            parse_subnet("10.9.8.0/24").unwrap(),
            Ipv4Addr::new(10, 9, 8, 0)
        );
        for bad in ["10.9.8.0", "10.9.8.0/16", "10.9.8.1/24", "ten/24"] {
            let error = parse_subnet(bad).unwrap_err().to_string();
            assert!(error.starts_with("--subnet: "), "{bad}: {error}");
        }
    }

    #[test]
    fn too_many_nodes_or_ports_are_refused() {
        let mut manifest = four();
        manifest.validators = Some(241);
        let error = plan(&manifest, &ComposeOptions::default()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("manifest: validators: 241 nodes"),
            "{error}"
        );
        let options = ComposeOptions {
            api_port_base: 65534,
            ..ComposeOptions::default()
        };
        let error = plan(&four(), &options).unwrap_err();
        assert!(error.to_string().starts_with("--api-port-base"), "{error}");
    }

    #[test]
    fn rendering_is_reproducible_and_snapshotted() {
        let dir = tempfile::tempdir().unwrap();
        let options = ComposeOptions::default();
        let file = write(dir.path(), &four(), &options).unwrap().file;
        let first = std::fs::read_to_string(&file).unwrap();
        let genesis = std::fs::read_to_string(dir.path().join("homes/node0/genesis.json")).unwrap();
        let config = std::fs::read_to_string(dir.path().join("homes/node0/config.toml")).unwrap();
        // Every home holds the same genesis.
        for node in ["node1", "node2", "node3"] {
            let other =
                std::fs::read_to_string(dir.path().join(format!("homes/{node}/genesis.json")))
                    .unwrap();
            assert_eq!(other, genesis, "{node}");
        }
        write(dir.path(), &four(), &options).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
        insta::assert_snapshot!("compose_4_nodes", first);
        insta::assert_snapshot!("genesis_4_nodes", genesis);
        insta::assert_snapshot!("config_node0", config);
    }

    #[test]
    fn a_home_with_a_chain_is_not_wiped_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = ComposeOptions::default();
        write(dir.path(), &four(), &options).unwrap();
        let data = dir.path().join("homes/node2/data");
        std::fs::create_dir_all(&data).unwrap();
        let error = write(dir.path(), &four(), &options)
            .unwrap_err()
            .to_string();
        assert!(error.contains("homes/node2/data holds a chain"), "{error}");
        assert!(data.is_dir(), "nothing is wiped on refusal");
        options.force = true;
        write(dir.path(), &four(), &options).unwrap();
        assert!(!data.exists());
    }

    #[test]
    fn full_nodes_are_labelled_and_left_out_of_genesis() {
        let mut manifest = four();
        manifest.full_nodes = Some(1);
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), &manifest, &ComposeOptions::default())
            .unwrap()
            .file;
        let text = std::fs::read_to_string(file).unwrap();
        assert_eq!(text.matches("blyan.role: validator").count(), 4);
        assert_eq!(text.matches("blyan.role: full").count(), 1);
        let genesis: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("homes/node0/genesis.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(genesis["validators"].as_array().unwrap().len(), 4);
    }
}
