//! What every Docker-backed part shares (the node containers, the NAT routers, the Swarm
//! services, the rendered files): the labels, the ports inside the containers, the error type,
//! the daemon connection, image build contexts and fixed-address endpoints. A leaf of the
//! harness's Docker code: it imports none of it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{EndpointIpamConfig, EndpointSettings, NetworkingConfig};
use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use crate::process::ProcessError;

pub const LABEL_DEVNET: &str = "blyan.devnet";
pub const LABEL_NODE: &str = "blyan.node";
pub const LABEL_ROLE: &str = "blyan.role";
pub const LABEL_BINARY: &str = "blyan.binary-sha256";
pub const IMAGE: &str = "blyan-node";
pub const HOME_INSIDE: &str = "/home/blyan";
pub const API_PORT: u16 = 26657;
/// The HTTPS API port inside node containers (certificates from the devnet's `pki/`).
pub const HTTPS_PORT: u16 = 26658;
pub const P2P_PORT: u16 = 26656;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("no Docker daemon answers: {0}")]
    NoDaemon(String),
    #[error("docker: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error("image build: {0}")]
    Build(String),
    #[error(transparent)]
    Devnet(#[from] ProcessError),
    #[error(transparent)]
    Testnet(#[from] crate::testnet::TestnetError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DockerError + '_ {
    move |source| DockerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Connects to the local daemon and checks that it answers within 3 s.
pub async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|error| DockerError::NoDaemon(error.to_string()))?;
    let docker = tokio::time::timeout(Duration::from_secs(3), docker.negotiate_version())
        .await
        .map_err(|_| DockerError::NoDaemon("no answer within 3 s".into()))?
        .map_err(|error| DockerError::NoDaemon(error.to_string()))?;
    tokio::time::timeout(Duration::from_secs(3), docker.ping())
        .await
        .map_err(|_| DockerError::NoDaemon("ping: no answer within 3 s".into()))?
        .map_err(|error| DockerError::NoDaemon(error.to_string()))?;
    Ok(docker)
}

/// The shared libraries `binary` loads, from `ldd` (empty for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, DockerError> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io(Path::new("ldd")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
        if line.contains("not found") {
            return Err(DockerError::Build(format!("{}: {line}", binary.display())));
        }
    }
    Ok(libraries)
}

/// Adds one file to an image's build context.
pub(crate) fn tar_file(
    archive: &mut tar::Builder<Vec<u8>>,
    path_in_tar: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<(), DockerError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_cksum();
    archive
        .append_data(&mut header, path_in_tar, bytes)
        .map_err(|error| DockerError::Build(error.to_string()))
}

/// Builds image `tag` from a tar build context (a Dockerfile and what it copies).
pub(crate) async fn build_context(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
) -> Result<(), DockerError> {
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item?;
        if let Some(detail) = info.error_detail {
            return Err(DockerError::Build(format!(
                "{tag}: {}",
                detail.message.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// A container's one network endpoint, at a fixed address.
pub(crate) fn at_address(network: &str, ip: Ipv4Addr) -> NetworkingConfig {
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(network.to_string(), endpoint(ip))])),
    }
}

/// An endpoint at a fixed address (for a container's network, or one connected later).
pub(crate) fn endpoint(ip: Ipv4Addr) -> EndpointSettings {
    EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `label` filter that finds devnet `name`'s objects (every devnet's when `None`).
pub fn label_filter(name: Option<&str>) -> HashMap<String, Vec<String>> {
    let value = match name {
        Some(name) => format!("{LABEL_DEVNET}={name}"),
        None => LABEL_DEVNET.to_string(),
    };
    HashMap::from([("label".to_string(), vec![value])])
}

pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// `base` as an absolute path (made when missing): container bind mounts need one.
pub(crate) fn absolute_base(base: &Path) -> Result<PathBuf, DockerError> {
    std::fs::canonicalize(base)
        .or_else(|_| {
            std::fs::create_dir_all(base)?;
            std::fs::canonicalize(base)
        })
        .map_err(io(base))
}

/// Creates the link proxy's proxies once its container or service answers.
pub(crate) async fn populate_proxy(proxy: crate::links::ProxyInfo) -> Result<(), DockerError> {
    let populated = tokio::task::spawn_blocking(move || crate::links::populate(&proxy))
        .await
        .map_err(|error| DockerError::Build(format!("link proxy: {error}")))?;
    populated.map_err(|reason| DockerError::Build(format!("link proxy: {reason}")))
}

/// Creates container `name` from `body` and starts it; returns its id.
pub(crate) async fn run_container(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
) -> Result<String, DockerError> {
    create_container(docker, name, body, true).await
}

/// Creates container `name`, and starts it when `start`; its id.
pub(crate) async fn create_container(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
    start: bool,
) -> Result<String, DockerError> {
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(name)
        .build();
    let id = docker.create_container(Some(options), body).await?.id;
    if start {
        let start = None::<bollard::query_parameters::StartContainerOptions>;
        docker.start_container(&id, start).await?;
    }
    Ok(id)
}
