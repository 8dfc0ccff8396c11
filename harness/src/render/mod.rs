//! Renderers: files for other engines from a resolved testnet, with no runtime of their own.
//! `compose` writes a docker-compose project and the homes it mounts; `k8s` writes typed
//! Kubernetes objects (StatefulSets, a headless Service, ConfigMaps and Secrets).

pub mod compose;
pub mod k8s;

/// The testnet a renderer writes: its nodes as containers of the node image (addressed by
/// `node`), no link proxy (faults through one are the harness's own backends' business), a
/// fixed genesis time so that the files are reproducible.
fn rendered(
    manifest: &crate::manifest::Manifest,
    node: &dyn Fn(usize) -> crate::testnet::NodePlan,
) -> crate::testnet::DevnetPlan {
    crate::testnet::resolve(
        manifest,
        &crate::testnet::Addressing {
            backend: crate::backend::kind::BackendKind::Docker,
            node,
            proxy: None,
            log_level: "info",
            node_bin: std::path::Path::new("/bin/blyan-node"),
            genesis_time_ms: Some(compose::GENESIS_TIME_MS),
        },
    )
}
