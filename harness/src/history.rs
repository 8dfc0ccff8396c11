//! A recorded run: what every node said through its API while the run went on, and what the
//! harness did to it. Stored in the run directory as
//!
//! - `run.json`: the manifest, seed, chain id, versions, the nodes (name, validator key, power,
//!   whether the manifest made it Byzantine), start and end;
//! - `nodes/<name>.jsonl`: one JSON object per line, [`NodeRecord`]s in the order observed;
//! - `timeline.jsonl`: the harness's [`Event`]s (faults, load, restarts);
//! - `inference.jsonl`: with `[inference]`, every seeded `POST /infer` sent to a node and what
//!   it answered ([`InferenceRecord`]).
//!
//! JSON Lines so that a run killed half-way still leaves everything recorded up to then; the
//! reader skips a torn last line and says so.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A node of the run, as `run.json` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunNode {
    pub name: String,
    /// Hex of the consensus public key; empty for a full node.
    pub validator_key: String,
    /// Voting power at genesis (0: a full node).
    pub power: u64,
    /// The Byzantine behaviour the manifest gave it, if any: not honest, so safety and
    /// liveness are not asked of it.
    #[serde(default)]
    pub byzantine: Option<String>,
}

/// `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub name: String,
    pub chain_id: String,
    pub seed: u64,
    pub backend: String,
    pub git_commit: String,
    pub manifest: String,
    pub nodes: Vec<RunNode>,
    pub started_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Liveness: after the last fault heals, every honest node gains this many heights ...
    pub liveness_heights: u64,
    /// ... within this many seconds.
    pub liveness_within_s: u64,
    /// Seconds from the start of `up` until every node had committed height 1.
    #[serde(default)]
    pub time_to_first_block_s: Option<f64>,
    /// `devnet run --seed`: the seed that replaced every random nemesis' (a replay needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_seed: Option<u64>,
}

/// One precommit signature of a block's commit certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignatureRecord {
    pub validator_index: u32,
    /// Hex, 64 bytes.
    pub signature: String,
    /// The signer's public key (hex) and power in the set of that height, as the node served
    /// them (empty / 0 in histories recorded before validator sets changed by epoch).
    #[serde(default)]
    pub validator: String,
    #[serde(default)]
    pub power: u64,
}

/// One validator in a [`NodeRecord::Stake`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StakeRecord {
    /// Hex of the consensus public key.
    pub public_key: String,
    pub tokens: u64,
    /// Voting power in the current set (0: not in it).
    pub power: u64,
    pub jailed: bool,
    pub tombstoned: bool,
    /// Burned from it by slashing so far.
    pub slashed: u64,
}

/// What a node told the recorder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeRecord {
    /// A committed block, as the node serves it.
    Block {
        at_ms: u64,
        height: u64,
        hash: String,
        /// App hash in the header (state before the block).
        app_hash: String,
        /// App hash after executing it.
        result_app_hash: Option<String>,
        time_ms: u64,
        round: u32,
        signatures: Vec<SignatureRecord>,
        /// Power of the set that decided it (0: unknown, the genesis set is assumed).
        #[serde(default)]
        total_power: u64,
        txs: u64,
    },
    /// A decision the node made itself: commit latency from the proposal seen to the decision.
    Decision {
        at_ms: u64,
        height: u64,
        latency_ms: f64,
    },
    /// The validators as the node's chain state holds them (recorded at the end of a run):
    /// what accountability checks slashing against.
    Stake {
        at_ms: u64,
        height: u64,
        validators: Vec<StakeRecord>,
    },
    /// The node started again after a power loss: the height it had acknowledged before the
    /// fault (its last `/status`) and the height its database held when it started again
    /// (`started_at_height` in its `/status`; `None`: no answer within 15 s).
    Restarted {
        at_ms: u64,
        acknowledged: u64,
        stored: Option<u64>,
    },
    /// A poll of the node: its height (None when it did not answer), peers and the
    /// equivocations it has seen so far.
    Sample {
        at_ms: u64,
        height: Option<u64>,
        peers: Option<u64>,
        evidence: Option<u64>,
    },
}

impl NodeRecord {
    pub fn at_ms(&self) -> u64 {
        match self {
            NodeRecord::Block { at_ms, .. }
            | NodeRecord::Sample { at_ms, .. }
            | NodeRecord::Decision { at_ms, .. }
            | NodeRecord::Stake { at_ms, .. }
            | NodeRecord::Restarted { at_ms, .. } => *at_ms,
        }
    }
}

/// One of the run's seeded inference requests sent to one node, and its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferenceRecord {
    pub at_ms: u64,
    pub node: String,
    /// The request's index in the run (every node gets the same request under one index).
    pub request: u32,
    pub prompt: Vec<u32>,
    pub max_new_tokens: u32,
    /// The generated tokens (empty when the node did not answer).
    #[serde(default)]
    pub tokens: Vec<u32>,
    /// The node's hash of its output (tokens and last logits): equal only if bit-identical.
    pub output_hash: Option<String>,
    /// Why there is no answer (unreachable under a fault, 503 while weights are fetched, ...).
    pub error: Option<String>,
}

/// Something the harness did or saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    /// `fault_start`, `fault_end`, `load_start`, `load_end`, `inference_start`, `inference_end`,
    /// `restart`, `note`; for a partition, cut or isolation: `cut_in_force` (every link cut),
    /// `cut_crossing` (`nodes[0]` still held a connection to `nodes[1]`, seen in its
    /// `/net_info` just before the undo) and `cut_undo` (just before the links come back).
    pub kind: String,
    /// What, for people: "partition node3 | rest", "kill node1".
    pub label: String,
    #[serde(default)]
    pub nodes: Vec<String>,
    /// `cut_in_force`: the directed links cut, `[from, to]` by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<[String; 2]>,
}

/// A whole recorded run, in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub run: Option<RunInfo>,
    /// Per node (in `run.json` order), its records in order.
    pub nodes: Vec<(String, Vec<NodeRecord>)>,
    pub timeline: Vec<Event>,
    /// The seeded inference requests and answers (empty without `[inference]`).
    pub inference: Vec<InferenceRecord>,
    /// Lines that could not be read (a torn last line after a crash), for the report.
    pub warnings: Vec<String>,
}

/// Appends JSON lines to one file, flushing each line so a crash loses at most the line being
/// written.
pub struct JsonLines {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl JsonLines {
    pub fn create(path: &Path) -> Result<JsonLines, HistoryError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| HistoryError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| HistoryError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(JsonLines {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    pub fn append<T: Serialize>(&mut self, value: &T) -> Result<(), HistoryError> {
        let error = |source| HistoryError::Write {
            path: self.path.clone(),
            source,
        };
        let line = serde_json::to_string(value).map_err(|e| error(std::io::Error::other(e)))?;
        self.file.write_all(line.as_bytes()).map_err(error)?;
        self.file.write_all(b"\n").map_err(error)?;
        self.file.flush().map_err(error)
    }
}

fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<T>, HistoryError> {
    let file = std::fs::File::open(path).map_err(|source| HistoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| HistoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let mut out = Vec::with_capacity(lines.len());
    let last = lines.len();
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(value) => out.push(value),
            // A torn last line is what a crash leaves: skip it, say so.
            Err(error) if index + 1 == last => warnings.push(format!(
                "{}, line {}: skipped an unreadable last line ({error})",
                path.display(),
                index + 1
            )),
            Err(error) => {
                return Err(HistoryError::Parse {
                    path: path.to_path_buf(),
                    line: index + 1,
                    message: error.to_string(),
                })
            }
        }
    }
    Ok(out)
}

impl History {
    /// Reads a run directory written by the recorder.
    pub fn load(dir: &Path) -> Result<History, HistoryError> {
        let mut history = History::default();
        let run_path = dir.join("run.json");
        let text = std::fs::read_to_string(&run_path).map_err(|source| HistoryError::Read {
            path: run_path.clone(),
            source,
        })?;
        let run: RunInfo = serde_json::from_str(&text).map_err(|error| HistoryError::Parse {
            path: run_path.clone(),
            line: error.line(),
            message: error.to_string(),
        })?;
        for node in &run.nodes {
            let path = dir.join("nodes").join(format!("{}.jsonl", node.name));
            let records = if path.exists() {
                read_lines(&path, &mut history.warnings)?
            } else {
                history.warnings.push(format!(
                    "{}: missing (no record of this node)",
                    path.display()
                ));
                Vec::new()
            };
            history.nodes.push((node.name.clone(), records));
        }
        let timeline = dir.join("timeline.jsonl");
        if timeline.exists() {
            history.timeline = read_lines(&timeline, &mut history.warnings)?;
        }
        let inference = dir.join("inference.jsonl");
        if inference.exists() {
            history.inference = read_lines(&inference, &mut history.warnings)?;
        }
        history.run = Some(run);
        Ok(history)
    }

    /// Writes the whole history into `dir` (used for crafted histories and copies).
    pub fn save(&self, dir: &Path) -> Result<(), HistoryError> {
        let write = |path: PathBuf, text: String| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| HistoryError::Write {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, text).map_err(|source| HistoryError::Write { path, source })
        };
        if let Some(run) = &self.run {
            let text = serde_json::to_string_pretty(run).map_err(|e| HistoryError::Write {
                path: dir.join("run.json"),
                source: std::io::Error::other(e),
            })?;
            write(dir.join("run.json"), text)?;
        }
        let lines = |items: Vec<String>| items.into_iter().map(|l| l + "\n").collect::<String>();
        for (name, records) in &self.nodes {
            let text = lines(
                records
                    .iter()
                    .filter_map(|r| serde_json::to_string(r).ok())
                    .collect(),
            );
            write(dir.join("nodes").join(format!("{name}.jsonl")), text)?;
        }
        let text = lines(
            self.timeline
                .iter()
                .filter_map(|e| serde_json::to_string(e).ok())
                .collect(),
        );
        write(dir.join("timeline.jsonl"), text)?;
        if self.inference.is_empty() {
            return Ok(());
        }
        let text = lines(
            self.inference
                .iter()
                .filter_map(|r| serde_json::to_string(r).ok())
                .collect(),
        );
        write(dir.join("inference.jsonl"), text)
    }

    /// The run's node entry by name.
    pub fn node(&self, name: &str) -> Option<&RunNode> {
        self.run.as_ref()?.nodes.iter().find(|n| n.name == name)
    }

    /// True unless the manifest made the node Byzantine.
    pub fn honest(&self, name: &str) -> bool {
        self.node(name).is_none_or(|node| node.byzantine.is_none())
    }
}
