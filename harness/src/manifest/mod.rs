//! The devnet manifest (TOML): what to start, how the network behaves, what load and faults to
//! apply, what to check. A default manifest is built in, so `devnet up` needs no file.
//!
//! Validation happens before anything starts; every error names the field and the reason,
//! e.g. `nodes[3].stake: must be > 0`. Sections that later issues execute (load, faults, checks,
//! Byzantine settings) are parsed and validated here already.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::backend::kind::BackendKind;
use crate::faults::Fault;

/// Why a manifest is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("{origin}: cannot read: {reason}")]
    Read { origin: String, reason: String },
    #[error("{origin}: {reason}")]
    Parse { origin: String, reason: String },
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Validator,
    Full,
}

/// A node given explicitly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default = "default_role")]
    pub role: Role,
    /// Voting power of a validator (ignored for full nodes).
    #[serde(default = "default_stake")]
    pub stake: i64,
    /// A label for latency and placement rules.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Byzantine behaviour (devnet mode only; `docs/CHAOS.md`).
    #[serde(default)]
    pub byzantine: Option<Byzantine>,
    /// Twins: this node runs with the validator key of the named validator (a second machine
    /// signing as the same validator). It is not a validator of its own in genesis.
    #[serde(default)]
    pub twin_of: Option<String>,
}

fn default_role() -> Role {
    Role::Validator
}
fn default_stake() -> i64 {
    10
}
fn default_zone() -> String {
    "default".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Byzantine {
    /// equivocate (votes), equivocate-proposals, withhold-votes, drop-proposals, ignore-locks,
    /// invalid-blocks, mutate-block, spam.
    pub behaviour: String,
    /// `mutate-block`: the block field it changes (app_hash, prev_hash, time, validators_hash,
    /// txs).
    #[serde(default)]
    pub field: Option<String>,
    /// always, probability, heights, rounds.
    #[serde(default = "default_trigger")]
    pub trigger: String,
    /// `probability`: the chance per height and round.
    #[serde(default)]
    pub probability: Option<f64>,
    /// `probability`: the seed of the draws (default: the manifest's seed).
    #[serde(default)]
    pub seed: Option<u64>,
    /// `heights`: these heights...
    #[serde(default)]
    pub heights: Vec<u64>,
    /// ...and/or this range (inclusive).
    #[serde(default)]
    pub from_height: Option<u64>,
    #[serde(default)]
    pub to_height: Option<u64>,
    /// `rounds`: these rounds of every height.
    #[serde(default)]
    pub rounds: Vec<u32>,
    /// `spam`: junk transactions per second (default 100).
    #[serde(default)]
    pub rate: Option<u64>,
}

fn default_trigger() -> String {
    "always".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Consensus {
    pub timeout_propose_ms: i64,
    pub timeout_prevote_ms: i64,
    pub timeout_precommit_ms: i64,
    pub timeout_commit_ms: i64,
    /// Blocks per epoch (validator set changes take effect at epoch boundaries).
    pub epoch_length: i64,
    /// Devnet-only slowdown: milliseconds every node adds to each commit (benchmark checks).
    pub commit_delay_ms: i64,
}

impl Default for Consensus {
    fn default() -> Self {
        Consensus {
            timeout_propose_ms: 1000,
            timeout_prevote_ms: 500,
            timeout_precommit_ms: 500,
            timeout_commit_ms: 100,
            epoch_length: 100,
            commit_delay_ms: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneLatency {
    pub from: String,
    pub to: String,
    pub latency_ms: i64,
    #[serde(default)]
    pub jitter_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Route every directed P2P link through its own fault proxy (chaos issue).
    #[serde(default)]
    pub proxy: bool,
    #[serde(default)]
    pub latency: Vec<ZoneLatency>,
    /// NAT topology (Docker backend): nodes in "home" networks behind NAT routers, relays on
    /// the public network (docs/NETWORKING.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
}

/// `[network.topology]`: who sits behind which NAT, and which public nodes relay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Public nodes that serve circuit relay v2 (and are every node's bootstrap).
    #[serde(default)]
    pub relays: Vec<String>,
    #[serde(default)]
    pub homes: Vec<Home>,
}

/// One home network: its nodes share a NAT router to the public network, or (mapping
/// "firewall") keep public addresses behind a firewall that blocks inbound connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Home {
    pub nodes: Vec<String>,
    /// "endpoint-independent" (port-preserving masquerade: hole punching works),
    /// "address-dependent" (a new random port per destination: hole punching fails, the
    /// relay carries the link) or "firewall" (no address translation: a stateful firewall
    /// drops every connection opened from outside, the devnet's own API ports excepted).
    #[serde(default)]
    pub mapping: Mapping,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    #[default]
    EndpointIndependent,
    AddressDependent,
    /// Not a NAT: public addresses behind a firewall that blocks inbound.
    Firewall,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Transactions per second, open loop; 0 is no load.
    #[serde(default)]
    pub rate: i64,
    /// Funded genesis accounts the load signs with.
    #[serde(default = "default_accounts")]
    pub accounts: i64,
    /// Benchmarks: rates to step through, ascending, each for `duration_s` (instead of `rate`).
    #[serde(default)]
    pub ramp: Vec<i64>,
}

fn default_accounts() -> i64 {
    16
}

impl Default for Load {
    fn default() -> Self {
        Load {
            rate: 0,
            accounts: default_accounts(),
            ramp: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// After the last fault heals, every honest node advances this many heights...
    pub liveness_heights: i64,
    /// ...within this many seconds.
    pub liveness_within_s: i64,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            liveness_heights: 5,
            liveness_within_s: 30,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// Memory limit per node container, MiB.
    pub memory_mb: i64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { memory_mb: 256 }
    }
}

/// The manifest as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    /// Seed of every key; the same seed gives the same identities.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_chain_id")]
    pub chain_id: String,
    /// Validators to create when `nodes` is not given.
    #[serde(default)]
    pub validators: Option<i64>,
    /// Full nodes to add when `nodes` is not given.
    #[serde(default)]
    pub full_nodes: Option<i64>,
    /// Explicit nodes (instead of the counts).
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// How long a scenario runs, seconds (0: until `devnet down`).
    #[serde(default)]
    pub duration_s: i64,
    #[serde(default)]
    pub consensus: Consensus,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub load: Load,
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub resources: Resources,
    /// Staking, slashing and reward parameters written into genesis (`docs/STAKING.md`); the
    /// epoch length comes from `consensus.epoch_length`.
    #[serde(default)]
    pub staking: blyan_node::state::StakingParams,
    /// A mixture-of-experts model generated into one node's home once the devnet is up; that
    /// node registers it on chain and every node can answer `POST /infer` (`docs/INFERENCE.md`).
    #[serde(default)]
    pub inference: Option<InferenceSpec>,
}

/// `[inference]`: the model `blyan-node experts generate` writes (every field optional; the
/// default model is 4 layers of 8 experts of 4 MiB).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceSpec {
    /// The model's name (default "moe", the nodes' default model).
    pub model: Option<String>,
    /// Weights are a pure function of this seed (default 42).
    pub seed: Option<u64>,
    /// The node whose home gets the files (default node0); the others fetch from peers.
    pub on: Option<String>,
    pub experts: Option<i64>,
    pub dim: Option<i64>,
    pub hidden: Option<i64>,
    pub layers: Option<i64>,
    pub vocab: Option<i64>,
    pub top_k: Option<i64>,
    pub max_seq: Option<i64>,
    pub tile_bytes: Option<i64>,
    /// `devnet run`: seeded requests sent to every honest node, spread over the run (default
    /// 8; 0 sends none), whose outputs `inference_determinism` compares.
    pub requests: Option<i64>,
    /// Prompt length of each request, in tokens (default 8).
    pub prompt_tokens: Option<i64>,
    /// Tokens each request generates (default 4).
    pub new_tokens: Option<i64>,
}

impl InferenceSpec {
    /// `devnet run`'s seeded requests: how many, prompt length, tokens to generate.
    pub fn request_shape(&self) -> (u32, u32, u32) {
        let clamp = |value: Option<i64>, fallback: u32| {
            value.map_or(fallback, |v| v.clamp(0, i64::from(u32::MAX)) as u32)
        };
        (
            clamp(self.requests, 8),
            clamp(self.prompt_tokens, 8),
            clamp(self.new_tokens, 4),
        )
    }

    pub fn model(&self) -> String {
        self.model.clone().unwrap_or_else(|| "moe".into())
    }

    pub fn node(&self) -> String {
        self.on.clone().unwrap_or_else(|| "node0".into())
    }

    /// The model's shape (defaults from the default model); a negative field is named.
    pub fn config(
        &self,
    ) -> Result<blyan_node::inference::model::MoeConfig, (&'static str, String)> {
        let default = blyan_node::inference::model::MoeConfig::default();
        let size = |name: &'static str, value: Option<i64>, fallback: usize| match value {
            None => Ok(fallback),
            Some(value) if value > 0 => Ok(value as usize),
            Some(value) => Err((name, format!("{value} must be > 0"))),
        };
        Ok(blyan_node::inference::model::MoeConfig {
            vocab: size("vocab", self.vocab, default.vocab)?,
            dim: size("dim", self.dim, default.dim)?,
            hidden: size("hidden", self.hidden, default.hidden)?,
            layers: size("layers", self.layers, default.layers)?,
            experts: size("experts", self.experts, default.experts)?,
            top_k: size("top_k", self.top_k, default.top_k)?,
            max_seq: size("max_seq", self.max_seq, default.max_seq)?,
            seed: self.seed.unwrap_or(default.seed),
        })
    }

    /// The `blyan-node experts generate` arguments after `--home DIR`.
    pub fn generate_args(&self) -> Vec<String> {
        let config = self.config().unwrap_or_default();
        [
            ("--model", self.model()),
            ("--seed", config.seed.to_string()),
            ("--experts", config.experts.to_string()),
            ("--dim", config.dim.to_string()),
            ("--hidden", config.hidden.to_string()),
            ("--layers", config.layers.to_string()),
            ("--vocab", config.vocab.to_string()),
            ("--top-k", config.top_k.to_string()),
            ("--max-seq", config.max_seq.to_string()),
            (
                "--tile-bytes",
                self.tile_bytes.unwrap_or(1 << 20).to_string(),
            ),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }

    /// Files the model has (base plus every expert).
    pub fn files(&self) -> usize {
        let config = self.config().unwrap_or_default();
        1 + config.layers * config.experts
    }
}

fn default_backend() -> BackendKind {
    BackendKind::Auto
}
fn default_seed() -> u64 {
    1
}
fn default_chain_id() -> String {
    "blyan-devnet".into()
}

/// A node after the manifest is resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolvedNode {
    pub index: usize,
    pub name: String,
    pub role: Role,
    pub stake: u64,
    pub zone: String,
}

pub const MAX_NODES: usize = 200;
/// The most nodes a devnet with a proxy on every directed link may have (n (n - 1) proxies).
pub const MAX_PROXIED_NODES: usize = 32;

const BYZANTINE_BEHAVIOURS: [&str; 8] = [
    "equivocate",
    "equivocate-proposals",
    "withhold-votes",
    "drop-proposals",
    "ignore-locks",
    "invalid-blocks",
    "mutate-block",
    "spam",
];
const TRIGGERS: [&str; 4] = ["always", "probability", "heights", "rounds"];
/// The commented example that `devnet manifest --example` prints; it parses to a valid manifest.
pub const EXAMPLE: &str = r#"# Blyan devnet manifest. Everything but `name` is optional.
name = "example"          # devnet name: containers, networks and .devnet/<name>/ carry it
chain_id = "blyan-devnet"
backend = "auto"          # auto (Docker when a daemon answers, else processes) | docker | process | swarm (docs/SCALING.md)
seed = 7                  # every key derives from it: same seed, same identities
duration_s = 0            # scenario length; 0 runs until `devnet down`

# Either counts...
validators = 4
full_nodes = 0
# ...or explicit nodes (then leave the counts out):
# [[nodes]]
# name = "node0"
# role = "validator"      # validator | full
# stake = 10              # voting power, > 0 for validators
# zone = "eu"             # for latency rules and placement
# byzantine = { behaviour = "equivocate", trigger = "probability", probability = 0.5 }
# byzantine = { behaviour = "mutate-block", field = "txs" }  # app_hash | prev_hash | time | validators_hash | txs

[consensus]
timeout_propose_ms = 1000
timeout_prevote_ms = 500
timeout_precommit_ms = 500
timeout_commit_ms = 100   # pause after each block; 0 for as fast as possible
epoch_length = 100        # blocks per epoch
commit_delay_ms = 0       # devnet-only slowdown added to every commit (regression checks)

# [staking]               # genesis staking, slashing and rewards (docs/STAKING.md); defaults:
# max_validators = 100
# unbonding_blocks = 100
# block_reward = 10
# double_sign_slash_bps = 500
# downtime_window = 100
# downtime_max_missed = 50
# downtime_jail_blocks = 100
# evidence_max_age = 100  # at most unbonding_blocks

[network]
proxy = false             # route every directed link through a fault proxy (chaos)
# [[network.latency]]
# from = "eu"
# to = "us"
# latency_ms = 40
# jitter_ms = 5
# [network.topology]      # Docker: nodes behind NAT routers, relays public (docs/NETWORKING.md)
# relays = ["node0", "node1"]
# [[network.topology.homes]]
# nodes = ["node2", "node3"]
# mapping = "endpoint-independent"   # or "address-dependent" (hole punching fails), or
#                                    # "firewall" (public addresses, inbound blocked, no NAT)

[load]
rate = 0                  # transactions per second (open loop); 0: none
accounts = 16             # funded genesis accounts

# [[faults]]               # docs/CHAOS.md lists every kind and its fields
# at_s = 10
# kind = "partition"      # kill | stop | pause | restart | resume | heal | isolate | partition |
#                         # latency | bandwidth | timeout | reset | cut | random
# shape = "halves"        # partition: isolate | halves | majority | ring | bridge | groups
# duration_s = 5
# [[faults]]
# at_s = 20
# kind = "latency"        # link faults need network.proxy = true
# link = ["node0", "node1"]
# latency_ms = 100
# jitter_ms = 10
# duration_s = 10
# [[faults]]
# at_s = 40
# kind = "random"         # a seeded nemesis; `devnet run --seed S` replays or varies it
# seed = 7
# duration_s = 60
# mean_interval_s = 8
# kinds = ["kill", "pause", "partition-halves", "latency"]

[checks]
liveness_heights = 5      # after the last fault heals, every honest node advances this many
liveness_within_s = 30    # heights within this many seconds

[resources]
memory_mb = 256           # memory limit per node container

# [inference]             # a mixture-of-experts model for POST /infer (docs/INFERENCE.md)
# on = "node0"            # generated into this node's home once the devnet is up; it
# seed = 42               # registers the files on chain, the other nodes fetch from peers
# layers = 4              # default model: 4 layers x 8 experts of 4 MiB, dim 256, vocab 1024
# experts = 8
# requests = 8            # devnet run: seeded POST /infer to every honest node, compared
# prompt_tokens = 8       # by the inference_determinism check
# new_tokens = 4
"#;

impl Manifest {
    /// The built-in default: 4 validators.
    pub fn default_named(name: &str) -> Manifest {
        Manifest {
            name: name.to_string(),
            backend: BackendKind::Auto,
            seed: 1,
            chain_id: "blyan-devnet".into(),
            validators: Some(4),
            full_nodes: None,
            nodes: Vec::new(),
            duration_s: 0,
            consensus: Consensus::default(),
            network: Network::default(),
            load: Load::default(),
            faults: Vec::new(),
            checks: Checks::default(),
            resources: Resources::default(),
            staking: Default::default(),
            inference: None,
        }
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|error| ManifestError::Parse {
            origin: origin.to_string(),
            reason: error.message().trim().replace('\n', "; ") + &location(text, error.span()),
        })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
            origin: origin.clone(),
            reason: error.to_string(),
        })?;
        Manifest::parse(&text, &origin)
    }

    /// Names of the validators made to equivocate (`byzantine.behaviour = "equivocate"`).
    pub fn equivocators(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| {
                node.byzantine
                    .as_ref()
                    .is_some_and(|b| b.behaviour == "equivocate")
            })
            .map(|node| node.name.clone())
            .collect()
    }

    /// Each Byzantine node's `[devnet]` settings, as the node takes them, and devnet mode alone
    /// for every other node a `messages` or `clock` fault acts on (its admin API takes them only
    /// in devnet mode).
    pub fn byzantine_settings(&self) -> Vec<(String, blyan_node::config::DevnetConfig)> {
        let mut settings = self.behaviour_settings();
        for fault in &self.faults {
            use crate::faults::Fault;
            if let Fault::Messages(_) | Fault::Clock(_) = fault {
                for name in fault.nodes() {
                    if !settings.iter().any(|(node, _)| node == name) {
                        let mode = blyan_node::config::DevnetConfig {
                            enabled: true,
                            ..Default::default()
                        };
                        settings.push((name.clone(), mode));
                    }
                }
            }
        }
        settings
    }

    fn behaviour_settings(&self) -> Vec<(String, blyan_node::config::DevnetConfig)> {
        self.nodes
            .iter()
            .filter_map(|node| {
                let b = node.byzantine.as_ref()?;
                let mut config = blyan_node::config::DevnetConfig {
                    enabled: true,
                    trigger: b.trigger.clone(),
                    probability: b.probability.unwrap_or(0.0),
                    seed: b.seed.unwrap_or(self.seed),
                    heights: b.heights.clone(),
                    from_height: b.from_height.unwrap_or(0),
                    to_height: b.to_height.unwrap_or(0),
                    rounds: b.rounds.clone(),
                    ..Default::default()
                };
                match b.behaviour.as_str() {
                    "equivocate" => config.equivocate_votes = true,
                    "equivocate-proposals" => config.equivocate_proposals = true,
                    "withhold-votes" => config.withhold_votes = true,
                    "drop-proposals" => config.drop_proposals = true,
                    "ignore-locks" => config.ignore_locks = true,
                    "invalid-blocks" => config.invalid_blocks = true,
                    "mutate-block" => config.mutate_block = b.field.clone().unwrap_or_default(),
                    _ => config.spam_txs_per_s = b.rate.unwrap_or(100),
                }
                Some((node.name.clone(), config))
            })
            .collect()
    }

    /// The faults as a schedule (`seed` replaces every random nemesis' seed); refuses what the
    /// devnet cannot do, naming the field.
    pub fn fault_schedule(
        &self,
        seed: Option<u64>,
    ) -> Result<Vec<crate::scenario::Planned>, crate::scenario::ScenarioError> {
        let resolved = self.resolve();
        let names: Vec<String> = resolved.iter().map(|node| node.name.clone()).collect();
        let validators = resolved
            .iter()
            .filter(|node| node.role == Role::Validator)
            .count();
        crate::scenario::plan(
            &self.faults,
            &crate::scenario::Target {
                names: &names,
                validators,
                proxy: self.network.proxy,
                backend: self.backend,
            },
            seed,
        )
    }

    /// Nodes whose data directory a full `disk` fault needs on a tmpfs of this many MiB.
    pub fn disk_nodes(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        for fault in &self.faults {
            if let crate::faults::Fault::Disk(f) = fault {
                if f.mode != "full" {
                    continue;
                }
                for name in &f.nodes {
                    if !out.iter().any(|(known, _)| known == name) {
                        out.push((name.clone(), f.size_mb.unwrap_or(64)));
                    }
                }
            }
        }
        out
    }

    /// Nodes whose data directory a slow or power-loss `disk` fault needs on `blyan-lazyfs`.
    pub fn lazyfs_nodes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for fault in &self.faults {
            if let crate::faults::Fault::Disk(f) = fault {
                if f.mode == "slow" || f.mode == "power_loss" {
                    out.extend(
                        f.nodes
                            .iter()
                            .filter(|n| !out.contains(n))
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                }
            }
        }
        out
    }

    /// The nodes a `join` fault starts late (not started with the devnet).
    pub fn joiners(&self) -> Vec<String> {
        self.faults
            .iter()
            .filter(|fault| matches!(fault, crate::faults::Fault::Join(_)))
            .flat_map(|fault| fault.nodes().to_vec())
            .collect()
    }

    /// Twins as (twin, the validator whose key it runs).
    pub fn twins(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .filter_map(|node| Some((node.name.clone(), node.twin_of.clone()?)))
            .collect()
    }

    /// What run.json records as a node's Byzantine role: its behaviour, `twin` for a twin and
    /// for the validator it copies, nothing for an honest node.
    pub fn byzantine_label(&self, name: &str) -> Option<String> {
        let node = self.nodes.iter().find(|node| node.name == name)?;
        if let Some(byzantine) = &node.byzantine {
            return Some(byzantine.behaviour.clone());
        }
        let twinned = self
            .twins()
            .iter()
            .any(|(twin, of)| twin == name || of == name);
        twinned.then(|| "twin".to_string())
    }

    /// The staking parameters for genesis: `[staking]` with `consensus.epoch_length`.
    pub fn staking_params(&self) -> blyan_node::state::StakingParams {
        blyan_node::state::StakingParams {
            epoch_length: self.consensus.epoch_length.max(0) as u64,
            ..self.staking.clone()
        }
    }

    /// The nodes, from the explicit list or the counts (validators first, then full nodes).
    pub fn resolve(&self) -> Vec<ResolvedNode> {
        if !self.nodes.is_empty() {
            return self
                .nodes
                .iter()
                .enumerate()
                .map(|(index, node)| ResolvedNode {
                    index,
                    name: node.name.clone(),
                    // A twin signs with another validator's key; it has no stake of its own.
                    role: if node.twin_of.is_some() {
                        Role::Full
                    } else {
                        node.role
                    },
                    stake: if node.role == Role::Validator && node.twin_of.is_none() {
                        node.stake.max(0) as u64
                    } else {
                        0
                    },
                    zone: node.zone.clone(),
                })
                .collect();
        }
        let validators = self.validators.unwrap_or(4).max(0) as usize;
        let full = self.full_nodes.unwrap_or(0).max(0) as usize;
        (0..validators + full)
            .map(|index| ResolvedNode {
                index,
                name: format!("node{index}"),
                role: if index < validators {
                    Role::Validator
                } else {
                    Role::Full
                },
                stake: if index < validators { 10 } else { 0 },
                zone: default_zone(),
            })
            .collect()
    }
}

/// " (line L, column C)" for a parse error's span.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
    format!(" (line {line}, column {column})")
}

mod validate;

#[cfg(test)]
mod tests;
