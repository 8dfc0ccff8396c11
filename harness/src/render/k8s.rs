//! `devnet render k8s`: a devnet as typed Kubernetes objects (k8s-openapi) that a cluster
//! operator applies with `kubectl apply -f`.
//!
//! Per node: a one-replica StatefulSet (a stable pod name, DNS name and volume claim per node,
//! so each node keeps its identity and its chain across rescheduling), a ConfigMap with its
//! `config.toml` and a Secret with its node and validator keys, mounted over the home volume at
//! the paths the node reads. Shared: the Namespace, a ConfigMap with the genesis, and one
//! headless Service through which the nodes find each other
//! (`<pod>.<service>.<namespace>.svc.<cluster domain>`). Resource requests come from the
//! capacity planner's per-node figures and limits from the manifest. No PodDisruptionBudget is
//! rendered: a devnet is meant to be disrupted, and a PDB would block the node drains a chaos
//! suite may do.
//!
//! The rendering is reproducible (keys from the seed, a fixed genesis time) and
//! snapshot-tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blyan_node::home::Home;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::ByteString;
use serde::Serialize;

use crate::docker::{self, API_PORT, HOME_INSIDE, LABEL_DEVNET, LABEL_NODE, LABEL_ROLE, P2P_PORT};
use crate::manifest::{Manifest, ManifestError};
use crate::plan;
use crate::process::ProcessError;
use crate::testnet::NodePlan;

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Devnet(#[from] ProcessError),
    #[error(transparent)]
    Testnet(#[from] crate::testnet::TestnetError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// How to render, beyond the manifest.
#[derive(Clone, Debug)]
pub struct K8sOptions {
    pub namespace: String,
    pub image: String,
    /// The cluster's DNS domain (`cluster.local` on most clusters).
    pub cluster_domain: String,
    /// Size of each node's volume claim.
    pub storage: String,
    /// The claims' storage class (the cluster's default when `None`).
    pub storage_class: Option<String>,
}

impl Default for K8sOptions {
    fn default() -> K8sOptions {
        K8sOptions {
            namespace: "blyan-devnet".into(),
            image: format!("{}:dev", docker::IMAGE),
            cluster_domain: "cluster.local".into(),
            storage: "1Gi".into(),
            storage_class: None,
        }
    }
}

/// One Kubernetes object of a rendering.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Namespace),
    Service(Box<Service>),
    ConfigMap(ConfigMap),
    Secret(Secret),
    StatefulSet(Box<StatefulSet>),
}

/// A DNS-1123 label: lower-case letters, digits and '-', at most 63, starting and ending with
/// an alphanumeric.
fn check_label(field: &str, value: &str) -> Result<(), K8sError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(K8sError::Invalid {
            field: field.into(),
            reason: format!(
                "{value:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most \
                 63 characters, starting and ending with a letter or digit)"
            ),
        })
    }
}

fn labels(devnet: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "blyan-node".to_string(),
        ),
        (LABEL_DEVNET.to_string(), devnet.to_string()),
    ])
}

fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels),
        ..Default::default()
    }
}

fn read(path: &Path) -> Result<String, K8sError> {
    std::fs::read_to_string(path).map_err(|source| K8sError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The objects of the manifest's devnet.
/// The headless Service every node's StatefulSet belongs to.
fn service(devnet: &str, ns: &str, manifest: &str) -> Object {
    Object::Service(Box::new(Service {
        metadata: meta(devnet, ns, labels(manifest)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Peers must find each other before they are ready (they become ready by
            // committing, which needs the peers).
            publish_not_ready_addresses: Some(true),
            selector: Some(labels(manifest)),
            ports: Some(vec![
                ServicePort {
                    name: Some("p2p".into()),
                    port: P2P_PORT as i32,
                    ..Default::default()
                },
                ServicePort {
                    name: Some("api".into()),
                    port: API_PORT as i32,
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// The node container: the image, its ports, requests and limits, the home volume with the
/// config, genesis and keys mounted over it, a readiness probe.
fn node_container(image: &str, memory_mib: i64) -> Container {
    let memory_limit = format!("{memory_mib}Mi");
    let memory_request = format!("{}Mi", plan::NODE_RSS_MIB as u64);
    let cpu_request = format!("{}m", (plan::NODE_CPU_CORES * 1000.0).round() as u64);
    let mount = |volume: &str, path: &str, sub: Option<&str>| VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        sub_path: sub.map(str::to_string),
        read_only: sub.map(|_| true),
        ..Default::default()
    };
    Container {
        name: "node".into(),
        image: Some(image.to_string()),
        args: Some(vec!["start".into(), "--home".into(), HOME_INSIDE.into()]),
        ports: Some(vec![
            ContainerPort {
                name: Some("p2p".into()),
                container_port: P2P_PORT as i32,
                ..Default::default()
            },
            ContainerPort {
                name: Some("api".into()),
                container_port: API_PORT as i32,
                ..Default::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu_request)),
                ("memory".to_string(), Quantity(memory_request)),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(memory_limit),
            )])),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("home", HOME_INSIDE, None),
            mount(
                "config",
                &format!("{HOME_INSIDE}/config.toml"),
                Some("config.toml"),
            ),
            mount(
                "genesis",
                &format!("{HOME_INSIDE}/genesis.json"),
                Some("genesis.json"),
            ),
            mount(
                "keys",
                &format!("{HOME_INSIDE}/keys/node_key.json"),
                Some("node_key.json"),
            ),
            mount(
                "keys",
                &format!("{HOME_INSIDE}/keys/validator_key.json"),
                Some("validator_key.json"),
            ),
        ]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/blyan-node".into(),
                    "health".into(),
                    "--api".into(),
                    format!("127.0.0.1:{API_PORT}"),
                ]),
            }),
            period_seconds: Some(30),
            timeout_seconds: Some(3),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One node's StatefulSet (one replica) with its volumes and a home claim.
fn stateful_set(
    name: &str,
    devnet: &str,
    (ns, options): (&str, &K8sOptions),
    node_labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    container: Container,
) -> Object {
    Object::StatefulSet(Box::new(StatefulSet {
        metadata: meta(name, ns, node_labels.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(devnet.to_string()),
            // Start every node at once: none is ready before the others run.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(node_labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(10),
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: format!("{name}-config"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "genesis".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: format!("{devnet}-genesis"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "keys".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(format!("{name}-keys")),
                                default_mode: Some(0o600),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("home".into()),
                    labels: Some(node_labels),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: options.storage_class.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(options.storage.clone()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// The testnet as the cluster sees it: every node at its StatefulSet pod's DNS name, no link
/// proxy, a fixed genesis time. Checks that every name the objects carry is a DNS label.
fn cluster_plan(
    manifest: &Manifest,
    options: &K8sOptions,
) -> Result<crate::testnet::DevnetPlan, K8sError> {
    check_label("--namespace", &options.namespace)?;
    let devnet = format!("blyan-{}", manifest.name);
    check_label("name", &devnet)?;
    let ns = &options.namespace;
    let resolved = manifest.resolve();
    for node in &resolved {
        // `<devnet>-<node>-0`: the StatefulSet's pod name must be a label too.
        check_label(
            &format!("nodes.{}", node.name),
            &format!("{devnet}-{}-0", node.name),
        )?;
    }
    let fqdn = |moniker: &str| {
        format!(
            "{devnet}-{moniker}-0.{devnet}.{ns}.svc.{}",
            options.cluster_domain
        )
    };
    let names: Vec<String> = resolved.iter().map(|node| node.name.clone()).collect();
    let node = |index: usize| NodePlan {
        p2p_address: format!("/dns4/{}/tcp/{P2P_PORT}", fqdn(&names[index])),
        api_url: format!("http://{}:{API_PORT}", fqdn(&names[index])),
        ..docker::container_node(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let plan = super::rendered(manifest, &node);
    Ok(plan)
}

pub fn render(manifest: &Manifest, options: &K8sOptions) -> Result<Vec<Object>, K8sError> {
    manifest.validate("manifest")?;
    if manifest.network.topology.is_some() {
        return Err(K8sError::Invalid {
            field: "network.topology".into(),
            reason: "NAT routers are made by the docker backend only".into(),
        });
    }
    let devnet = format!("blyan-{}", manifest.name);
    let ns = &options.namespace;
    let plan = cluster_plan(manifest, options)?;
    let homes = tempfile::tempdir().map_err(|source| K8sError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let state = crate::testnet::homes::write_homes(homes.path(), &plan)?;
    let mut objects = vec![Object::Namespace(Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(labels(&manifest.name)),
            ..Default::default()
        },
        ..Default::default()
    })];
    objects.push(service(&devnet, ns, &manifest.name));
    let first = Home::new(&state.nodes[0].home);
    objects.push(Object::ConfigMap(ConfigMap {
        metadata: meta(&format!("{devnet}-genesis"), ns, labels(&manifest.name)),
        data: Some(BTreeMap::from([(
            "genesis.json".to_string(),
            read(&first.genesis())?,
        )])),
        ..Default::default()
    }));
    for node in &state.nodes {
        let home = Home::new(&node.home);
        let name = format!("{devnet}-{}", node.moniker);
        let mut node_labels = labels(&manifest.name);
        node_labels.insert(LABEL_NODE.into(), node.moniker.clone());
        node_labels.insert(
            LABEL_ROLE.into(),
            if node.validator { "validator" } else { "full" }.into(),
        );
        objects.push(Object::ConfigMap(ConfigMap {
            metadata: meta(&format!("{name}-config"), ns, node_labels.clone()),
            data: Some(BTreeMap::from([(
                "config.toml".to_string(),
                read(&home.config())?,
            )])),
            ..Default::default()
        }));
        objects.push(Object::Secret(Secret {
            metadata: meta(&format!("{name}-keys"), ns, node_labels.clone()),
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (
                    "node_key.json".to_string(),
                    ByteString(read(&home.node_key())?.into_bytes()),
                ),
                (
                    "validator_key.json".to_string(),
                    ByteString(read(&home.validator_key())?.into_bytes()),
                ),
            ])),
            ..Default::default()
        }));
        let selector = BTreeMap::from([
            (LABEL_DEVNET.to_string(), manifest.name.clone()),
            (LABEL_NODE.to_string(), node.moniker.clone()),
        ]);
        let container = node_container(&options.image, manifest.resources.memory_mb);
        objects.push(stateful_set(
            &name,
            &devnet,
            (ns, options),
            node_labels,
            selector,
            container,
        ));
    }
    Ok(objects)
}

/// The objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[Object]) -> Result<String, K8sError> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object)?);
    }
    Ok(out)
}

/// Writes `DIR/devnet.yaml` (temp file + rename); returns its path.
pub fn write(dir: &Path, objects: &[Object]) -> Result<PathBuf, K8sError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| K8sError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let file = dir.join("devnet.yaml");
    let temporary = file.with_extension("yaml.tmp");
    std::fs::write(&temporary, to_yaml(objects)?).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &file).map_err(io(&file))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(objects: &[Object]) -> Vec<&'static str> {
        objects
            .iter()
            .map(|object| match object {
                Object::Namespace(_) => "Namespace",
                Object::Service(_) => "Service",
                Object::ConfigMap(_) => "ConfigMap",
                Object::Secret(_) => "Secret",
                Object::StatefulSet(_) => "StatefulSet",
            })
            .collect()
    }

    #[test]
    fn a_four_node_devnet_renders_to_the_checked_in_objects() {
        let manifest = Manifest::default_named("k8s");
        let objects = render(&manifest, &K8sOptions::default()).unwrap();
        let kinds = kinds(&objects);
        assert_eq!(kinds.iter().filter(|k| **k == "StatefulSet").count(), 4);
        assert_eq!(kinds.iter().filter(|k| **k == "Secret").count(), 4);
        assert_eq!(kinds.iter().filter(|k| **k == "ConfigMap").count(), 5);
        assert_eq!(kinds.iter().filter(|k| **k == "Service").count(), 1);
        let yaml = to_yaml(&objects).unwrap();
        // Typed objects carry their kind and API version.
        assert!(
            yaml.contains("apiVersion: apps/v1\nkind: StatefulSet"),
            "{yaml}"
        );
        // Peers dial each other by the pods' stable DNS names.
        assert!(
            yaml.contains(
                "/dns4/blyan-k8s-node1-0.blyan-k8s.blyan-devnet.svc.cluster.local/tcp/26656/p2p/"
            ),
            "{yaml}"
        );
        // Same manifest, same bytes (keys from the seed, fixed genesis time).
        let again = to_yaml(&render(&manifest, &K8sOptions::default()).unwrap()).unwrap();
        assert_eq!(yaml, again);
        insta::assert_snapshot!("k8s_four_nodes", yaml);
    }

    #[test]
    fn every_document_parses_back_as_its_kubernetes_type() {
        use serde::Deserialize;
        let objects = render(&Manifest::default_named("k8s"), &K8sOptions::default()).unwrap();
        let yaml = to_yaml(&objects).unwrap();
        let mut statefulsets = 0;
        for document in serde_yaml::Deserializer::from_str(&yaml) {
            let value = serde_yaml::Value::deserialize(document).unwrap();
            let kind = value["kind"].as_str().unwrap().to_string();
            let text = serde_yaml::to_string(&value).unwrap();
            match kind.as_str() {
                "StatefulSet" => {
                    let set: StatefulSet = serde_yaml::from_str(&text).unwrap();
                    let spec = set.spec.unwrap();
                    assert_eq!(spec.replicas, Some(1));
                    let pod = spec.template.spec.unwrap();
                    let resources = pod.containers[0].resources.clone().unwrap();
                    assert_eq!(
                        resources.requests.unwrap()["memory"],
                        Quantity("36Mi".into()),
                        "the planner's per-node memory"
                    );
                    assert_eq!(
                        resources.limits.unwrap()["memory"],
                        Quantity("256Mi".into())
                    );
                    statefulsets += 1;
                }
                "Secret" => {
                    let secret: Secret = serde_yaml::from_str(&text).unwrap();
                    let data = secret.data.unwrap();
                    let key = String::from_utf8(data["node_key.json"].0.clone()).unwrap();
                    assert!(key.contains("secret"), "{key}");
                }
                "Service" => {
                    let service: Service = serde_yaml::from_str(&text).unwrap();
                    assert_eq!(service.spec.unwrap().cluster_ip.as_deref(), Some("None"));
                }
                "ConfigMap" | "Namespace" => {}
                other => panic!("unexpected kind {other}"),
            }
        }
        assert_eq!(statefulsets, 4);
    }

    #[test]
    fn bad_names_are_refused_naming_the_field() {
        let manifest = Manifest::default_named("k8s");
        let options = K8sOptions {
            namespace: "Not_Valid".into(),
            ..Default::default()
        };
        let error = render(&manifest, &options).unwrap_err().to_string();
        assert!(error.starts_with("--namespace: \"Not_Valid\""), "{error}");
    }
}
