//! Carries a run's faults out: link faults (cuts, partitions by proxy, one-way partitions,
//! toxics) through the devnet's link proxy, node faults (kill, stop, pause, restart, isolate)
//! through its backend.

use crate::backend::Backend;
use crate::links::LinkControl;
use crate::scenario::{Action, InNode, Planned, ScenarioError};
use crate::testnet::record::DevnetState;

/// Carries faults out on one devnet.
pub struct Injector<'a> {
    backend: &'a dyn Backend,
    links: Option<LinkControl>,
}

fn link_error(action: &str) -> impl FnOnce(String) -> ScenarioError + '_ {
    move |reason| ScenarioError::Action {
        action: action.into(),
        node: "proxy".into(),
        reason,
    }
}

impl<'a> Injector<'a> {
    pub fn new(backend: &'a dyn Backend, state: &DevnetState) -> Injector<'a> {
        Injector {
            backend,
            links: state.proxy.as_ref().map(LinkControl::new),
        }
    }

    fn link_control(&self) -> Result<&LinkControl, ScenarioError> {
        self.links.as_ref().ok_or_else(|| ScenarioError::Action {
            action: "link fault".into(),
            node: "-".into(),
            reason: "this devnet has no link proxy (network.proxy = false)".into(),
        })
    }

    /// Starts `step` on its nodes or links.
    pub fn begin(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        match (step.action, &step.toxic) {
            (Action::Cut, _) => self
                .link_control()?
                .cut(&step.links)
                .map_err(link_error("cut")),
            (Action::Toxic, Some(toxic)) => self
                .link_control()?
                .add_toxic(&step.links, &step.tag, toxic)
                .map_err(link_error("toxic")),
            (Action::OneWay, _) => self
                .link_control()?
                .drop_directions(&step.links, &step.tag)
                .map_err(link_error("one-way partition")),
            (Action::InNode, _) => {
                let fault = step
                    .in_node
                    .as_ref()
                    .expect("an in-node step carries its fault");
                in_node(
                    state,
                    &step.nodes,
                    "POST",
                    fault.path(),
                    &body_for(state, fault),
                )
            }
            _ => self.backend.begin(state, step),
        }
    }

    /// Undoes `step` (reconnect, start, unpause, re-enable links, remove toxics).
    pub fn end(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        match (step.action, &step.toxic) {
            (Action::Cut, _) => self
                .link_control()?
                .restore(&step.links)
                .map_err(link_error("restore")),
            (Action::Toxic, Some(toxic)) => self
                .link_control()?
                .remove_toxic(&step.links, &step.tag, toxic)
                .map_err(link_error("remove toxic")),
            (Action::OneWay, _) => self
                .link_control()?
                .restore_directions(&step.links, &step.tag)
                .map_err(link_error("end one-way partition")),
            (Action::InNode, _) => {
                let fault = step
                    .in_node
                    .as_ref()
                    .expect("an in-node step carries its fault");
                in_node(state, &step.nodes, "DELETE", fault.path(), "")
            }
            _ => self.backend.end(state, step),
        }
    }
}

/// The `POST` body of `fault` on this devnet: a message fault's peers, node names in the
/// plan, become their peer ids.
fn body_for(state: &DevnetState, fault: &InNode) -> String {
    match fault {
        InNode::Messages(faults) if !faults.peers.is_empty() => {
            let peers = faults
                .peers
                .iter()
                .filter_map(|name| state.nodes.iter().find(|node| node.moniker == *name))
                .map(|node| node.peer_id.clone())
                .collect();
            let faults = blyan_node::config::MessageFaults {
                peers,
                ..faults.clone()
            };
            InNode::Messages(faults).body()
        }
        _ => fault.body(),
    }
}

/// `METHOD PATH` (an in-node fault's admin endpoint) on each of `nodes` (HTTPS with the
/// devnet's admin certificate, or HTTP on loopback, where the node takes admin requests without
/// TLS).
fn in_node(
    state: &DevnetState,
    nodes: &[usize],
    method: &str,
    path: &str,
    body: &str,
) -> Result<(), ScenarioError> {
    for &index in nodes {
        let node = &state.nodes[index];
        let answer = match &node.api_https {
            Some(url) => {
                let pki = node.home.parent().unwrap_or(&node.home).join("pki");
                crate::process::https_request(&pki, true, url, method, path, body)
            }
            None => plain_request(&node.api, method, path, body),
        };
        match answer {
            Ok((200, _)) => {}
            Ok((status, text)) => {
                return Err(node_error(
                    node,
                    format!("{method} {path}: {status} {text}"),
                ))
            }
            Err(reason) => return Err(node_error(node, reason)),
        }
    }
    Ok(())
}

fn plain_request(api: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let response = crate::process::http_client()
        .request(method, format!("{api}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().unwrap_or_default()))
}

fn node_error(node: &crate::testnet::record::NodeEntry, reason: String) -> ScenarioError {
    ScenarioError::Action {
        action: "in-node fault".into(),
        node: node.moniker.clone(),
        reason,
    }
}
