//! Records a running devnet into a run directory ([`crate::history`]): every node's committed
//! blocks (with their commit signatures), and a poll of its height, peers and evidence; the
//! harness's events go to the timeline.

use std::collections::HashSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::history::{Event, HistoryError, JsonLines, NodeRecord, SignatureRecord, StakeRecord};
use crate::process;
use crate::testnet::record::DevnetState;

/// Most blocks fetched from one node per poll, so one poll stays short after a stall.
pub const MAX_BLOCKS_PER_POLL: u64 = 50;
pub use process::POLL_TIMEOUT_MS;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub struct Recorder {
    client: reqwest::blocking::Client,
    nodes: Vec<JsonLines>,
    timeline: JsonLines,
    /// Highest height recorded per node.
    recorded: Vec<u64>,
    /// Highest decision recorded per node.
    decided: Vec<u64>,
}

/// The peer ids a node's `/net_info` lists as connected (empty when it does not answer).
fn connected_peers(client: &reqwest::blocking::Client, api: &str) -> Vec<String> {
    let Some(info) = client
        .get(format!("{api}/net_info"))
        .send()
        .ok()
        .and_then(|response| response.json::<serde_json::Value>().ok())
    else {
        return Vec::new();
    };
    info["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|peer| peer["peer_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A block as the node's API serves it, in the history's form (None when malformed).
fn block_record(at_ms: u64, view: &serde_json::Value) -> Option<NodeRecord> {
    let text = |key: &str| view[key].as_str().map(str::to_string);
    let commit = &view["commit"];
    let signatures = commit["signatures"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| {
                    Some(SignatureRecord {
                        validator_index: u32::try_from(s["validator_index"].as_u64()?).ok()?,
                        signature: s["signature"].as_str()?.to_string(),
                        validator: s["validator"].as_str().unwrap_or_default().to_string(),
                        power: s["power"].as_u64().unwrap_or(0),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(NodeRecord::Block {
        at_ms,
        height: view["height"].as_u64()?,
        hash: text("hash")?,
        app_hash: text("app_hash")?,
        result_app_hash: text("result_app_hash"),
        time_ms: view["time_ms"].as_u64()?,
        round: u32::try_from(commit["round"].as_u64().unwrap_or(0)).ok()?,
        signatures,
        total_power: commit["total_power"].as_u64().unwrap_or(0),
        txs: view["tx_hashes"]
            .as_array()
            .map_or(0, |list| list.len() as u64),
    })
}

impl Recorder {
    pub fn create(dir: &Path, state: &DevnetState) -> Result<Recorder, HistoryError> {
        let nodes = state
            .nodes
            .iter()
            .map(|node| {
                JsonLines::create(&dir.join("nodes").join(format!("{}.jsonl", node.moniker)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A short timeout: an isolated or paused node must not hold up the poll (and with it
        // the fault schedule) for long.
        let client = process::poll_client();
        Ok(Recorder {
            client,
            recorded: vec![0; nodes.len()],
            decided: vec![0; nodes.len()],
            nodes,
            timeline: JsonLines::create(&dir.join("timeline.jsonl"))?,
        })
    }

    /// Appends a harness event, stamped now.
    pub fn event(
        &mut self,
        kind: &str,
        label: &str,
        nodes: Vec<String>,
    ) -> Result<(), HistoryError> {
        self.timeline.append(&Event {
            at_ms: now_ms(),
            kind: kind.into(),
            label: label.into(),
            nodes,
            links: Vec::new(),
        })
    }

    /// Records that the directed `links` of a partition, cut or isolation are all cut now.
    pub fn cut_in_force(
        &mut self,
        state: &DevnetState,
        label: &str,
        links: &[(usize, usize)],
    ) -> Result<(), HistoryError> {
        let name = |i: usize| state.nodes[i].moniker.clone();
        self.timeline.append(&Event {
            at_ms: now_ms(),
            kind: "cut_in_force".into(),
            label: label.into(),
            nodes: Vec::new(),
            links: links.iter().map(|&(a, b)| [name(a), name(b)]).collect(),
        })
    }

    /// Just before a cut is undone: asks every node (at once) for its connections and records
    /// each one that spans the cut (both directions of the pair cut: a connection over either
    /// link carries traffic both ways), then `cut_undo`. Returns the pairs found.
    pub fn cut_undo(
        &mut self,
        state: &DevnetState,
        label: &str,
        links: &[(usize, usize)],
    ) -> Result<Vec<(usize, usize)>, HistoryError> {
        let cut: HashSet<(usize, usize)> = links.iter().copied().collect();
        let client = &self.client;
        let connected: Vec<Vec<String>> = std::thread::scope(|scope| {
            let asks: Vec<_> = state
                .nodes
                .iter()
                .map(|node| scope.spawn(move || connected_peers(client, &node.api)))
                .collect();
            asks.into_iter()
                .map(|ask| ask.join().unwrap_or_default())
                .collect()
        });
        let mut crossing = Vec::new();
        for (from, peers) in connected.iter().enumerate() {
            for (to, node) in state.nodes.iter().enumerate() {
                let spans = cut.contains(&(from, to)) && cut.contains(&(to, from));
                if spans && peers.contains(&node.peer_id) {
                    crossing.push((from, to));
                }
            }
        }
        for &(from, to) in &crossing {
            let names = vec![
                state.nodes[from].moniker.clone(),
                state.nodes[to].moniker.clone(),
            ];
            self.event("cut_crossing", label, names)?;
        }
        self.event("cut_undo", label, Vec::new())?;
        Ok(crossing)
    }

    /// Records that node `index` started again after a power loss (see
    /// [`NodeRecord::Restarted`]).
    pub fn restarted(
        &mut self,
        index: usize,
        acknowledged: u64,
        stored: Option<u64>,
    ) -> Result<(), HistoryError> {
        self.nodes[index].append(&NodeRecord::Restarted {
            at_ms: now_ms(),
            acknowledged,
            stored,
        })
    }

    /// Records every answering node's view of the validators (`/validators`).
    pub fn stake(&mut self, state: &DevnetState) -> Result<(), HistoryError> {
        for (index, node) in state.nodes.iter().enumerate() {
            let Some(view) = self
                .client
                .get(format!("{}/validators", node.api))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.json::<serde_json::Value>().ok())
            else {
                continue;
            };
            let validators = view["validators"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| {
                    Some(StakeRecord {
                        public_key: v["public_key"].as_str()?.to_string(),
                        tokens: v["tokens"].as_u64()?,
                        power: v["power"].as_u64().unwrap_or(0),
                        jailed: v["jailed"].as_bool().unwrap_or(false),
                        tombstoned: v["tombstoned"].as_bool().unwrap_or(false),
                        slashed: v["slashed"].as_u64().unwrap_or(0),
                    })
                })
                .collect();
            self.nodes[index].append(&NodeRecord::Stake {
                at_ms: now_ms(),
                height: view["height"].as_u64().unwrap_or(0).saturating_sub(1),
                validators,
            })?;
        }
        Ok(())
    }

    /// One poll of every node (asked in parallel): a sample each, and the blocks committed
    /// since the last poll. Returns the heights seen (None: no answer).
    pub fn poll(&mut self, state: &DevnetState) -> Result<Vec<Option<u64>>, HistoryError> {
        let all: Vec<usize> = (0..state.nodes.len()).collect();
        let statuses = process::node_statuses(&self.client, state, &all);
        let at_ms = now_ms();
        let heights: Vec<Option<u64>> = statuses
            .iter()
            .map(|status| status.as_ref().and_then(|s| s["latest_height"].as_u64()))
            .collect();
        // Fetch new blocks, every node at once.
        let client = &self.client;
        let recorded = &self.recorded;
        let decided = &self.decided;
        let fetched: Vec<Vec<NodeRecord>> = std::thread::scope(|scope| {
            let asks: Vec<_> = state
                .nodes
                .iter()
                .zip(&heights)
                .zip(recorded)
                .zip(decided)
                .map(|(((node, height), done), since)| {
                    let target = height.unwrap_or(0).min(done + MAX_BLOCKS_PER_POLL);
                    let answered = height.is_some();
                    scope.spawn(move || {
                        let mut blocks = Vec::new();
                        // A node that did not answer its status will not answer these either:
                        // asking would add a timeout to the poll.
                        if !answered {
                            return blocks;
                        }
                        // The node's own decisions since the last poll, with their latency.
                        let url = format!("{}/consensus?since={since}", node.api);
                        if let Some(view) = client
                            .get(&url)
                            .send()
                            .ok()
                            .filter(|r| r.status().is_success())
                            .and_then(|r| r.json::<serde_json::Value>().ok())
                        {
                            for decision in view["recent"].as_array().into_iter().flatten() {
                                if let (Some(height), Some(latency_ms)) = (
                                    decision["height"].as_u64(),
                                    decision["commit_latency_ms"].as_f64(),
                                ) {
                                    blocks.push(NodeRecord::Decision {
                                        at_ms: now_ms(),
                                        height,
                                        latency_ms,
                                    });
                                }
                            }
                        }
                        for h in done + 1..=target {
                            let url = format!("{}/blocks/{h}?txs=false", node.api);
                            let Some(view) = client
                                .get(&url)
                                .send()
                                .ok()
                                .filter(|r| r.status().is_success())
                                .and_then(|r| r.json::<serde_json::Value>().ok())
                            else {
                                break;
                            };
                            match block_record(now_ms(), &view) {
                                Some(record) => blocks.push(record),
                                None => break,
                            }
                        }
                        blocks
                    })
                })
                .collect();
            asks.into_iter()
                .map(|ask| ask.join().unwrap_or_default())
                .collect()
        });
        for (index, (status, blocks)) in statuses.iter().zip(fetched).enumerate() {
            self.nodes[index].append(&NodeRecord::Sample {
                at_ms,
                height: heights[index],
                peers: status.as_ref().and_then(|s| s["peers"].as_u64()),
                evidence: status.as_ref().and_then(|s| s["evidence"].as_u64()),
            })?;
            for block in blocks {
                match &block {
                    NodeRecord::Block { height, .. } => self.recorded[index] = *height,
                    NodeRecord::Decision { height, .. } => {
                        self.decided[index] = self.decided[index].max(*height)
                    }
                    NodeRecord::Sample { .. }
                    | NodeRecord::Stake { .. }
                    | NodeRecord::Restarted { .. } => {}
                }
                self.nodes[index].append(&block)?;
            }
        }
        Ok(heights)
    }
}
