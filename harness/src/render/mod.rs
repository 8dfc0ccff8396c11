//! Renderers: files for other engines from a resolved testnet, with no runtime of their own.
//! `compose` writes a docker-compose project and the homes it mounts; `k8s` writes typed
//! Kubernetes objects (StatefulSets, a headless Service, ConfigMaps and Secrets).

pub mod compose;
pub mod k8s;
