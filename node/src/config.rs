//! Node configuration: `config.toml`, then `BLYAN_*` environment variables, then flags.
//!
//! Every setting is documented in the file that `blyan-node init` writes ([`Config::template`]).
//! An environment variable `BLYAN_<SECTION>_<KEY>` (or `BLYAN_<KEY>` for top-level keys)
//! overrides the file, for example `BLYAN_API_LISTEN=127.0.0.1:8080`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::StorageConfig;

/// Why a configuration could not be loaded; each names the file, variable or field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source} (run `blyan-node init --home {home}` first?)", home = path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {variable}={value:?}: {reason}")]
    Environment {
        variable: String,
        value: String,
        reason: String,
    },
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: u64,
    /// Requests per second allowed per client IP address (a token bucket); 0: no limit.
    #[serde(default = "default_rate_limit_per_s")]
    pub rate_limit_per_s: u32,
    /// Burst above the rate a client may use at once.
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// HTTPS and client certificates for the admin endpoints.
    #[serde(default, skip_serializing_if = "ApiTlsConfig::is_off")]
    pub tls: ApiTlsConfig,
}

fn default_rate_limit_per_s() -> u32 {
    200
}

fn default_rate_limit_burst() -> u32 {
    400
}

/// `[api.tls]`: serve the API over HTTPS (TLS 1.3 only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiTlsConfig {
    pub enabled: bool,
    /// HTTPS on its own address, `api.listen` staying plain HTTP; "": `api.listen` is HTTPS.
    pub listen: String,
    /// PEM certificate chain and key of the server (relative paths are under the node home).
    pub cert_file: String,
    pub key_file: String,
    /// PEM CA whose client certificates may use the admin endpoints; "" leaves them closed
    /// over TLS.
    pub client_ca_file: String,
    /// PEM certificate revocation list of that CA; a revoked client certificate is refused.
    pub crl_file: String,
    /// The CA's key (devnets): the node renews its own certificate before it expires.
    pub ca_key_file: String,
    /// Renew this many seconds before expiry (with `ca_key_file`).
    pub renew_before_s: u64,
}

impl ApiTlsConfig {
    pub fn is_off(&self) -> bool {
        *self == ApiTlsConfig::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives (`info,blyan_node::storage=debug`).
    pub level: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Addresses announced to peers; with `static_mode`, the only ones.
    pub external_addresses: Vec<String>,
    /// Peers dialled at start and redialled when the link drops: `/ip4/../tcp/../p2p/<id>` or
    /// `/dnsaddr/<domain>` seeds.
    pub bootstrap: Vec<String>,
    /// Dial only `bootstrap`, announce only `external_addresses`, no discovery.
    pub static_mode: bool,
    /// Also run QUIC (listen on a `/udp/<port>/quic-v1` address to accept it).
    pub quic: bool,
    /// Use Noise instead of TLS 1.3 to secure TCP links.
    pub noise: bool,
    /// Most established connections.
    pub max_connections: u32,
    /// Largest gossip message or sync request accepted, in bytes.
    pub max_message_bytes: u64,
    /// Gossipsub heartbeat (mesh upkeep and lazy gossip), in milliseconds.
    #[serde(default = "default_gossip_heartbeat_ms")]
    pub gossip_heartbeat_ms: u64,
    /// Gossipsub mesh degree D: each message is pushed to about this many peers per topic.
    #[serde(default = "default_gossip_mesh_n")]
    pub gossip_mesh_n: u32,
    /// A file of the only peer ids allowed to connect (one per line); empty: any peer not
    /// revoked. Reloaded when it changes and on SIGHUP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub allowlist_file: String,
    /// A file of revoked peer ids: refused, and cut off within a second of being added.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revoked_file: String,
    /// Circuit relay v2 servers (`/ip4/../tcp/../p2p/<id>`) to reserve a slot on when this node
    /// is not reachable; relays found among connected peers are used too.
    #[serde(default)]
    pub relays: Vec<String>,
    /// When to reserve relay slots and advertise relayed addresses: "auto" (when AutoNAT says
    /// this node is private), "always", or "never".
    #[serde(default)]
    pub reserve_relays: ReserveRelays,
    /// How many relays to hold a reservation on at once (more than one, so that losing a relay
    /// does not cut the node off).
    #[serde(default = "default_relay_reservations")]
    pub relay_reservations: u32,
    /// Serve circuit relay v2 for other nodes (public nodes: bootstrap and relay nodes).
    #[serde(default)]
    pub relay_server: bool,
    /// Relay server limits: reservations held, circuits open, and each circuit's life and bytes.
    #[serde(default = "default_relay_max_reservations")]
    pub relay_max_reservations: u32,
    #[serde(default = "default_relay_max_circuits")]
    pub relay_max_circuits: u32,
    #[serde(default = "default_relay_max_circuit_duration_s")]
    pub relay_max_circuit_duration_s: u64,
    #[serde(default = "default_relay_max_circuit_bytes")]
    pub relay_max_circuit_bytes: u64,
    /// New circuits a relay opens per minute for one source peer (twice that per source IP:
    /// nodes behind one NAT share it).
    #[serde(default = "default_relay_circuits_per_minute")]
    pub relay_circuits_per_minute: u32,
    /// AutoNAT v2: ask peers to dial this node's candidate addresses back, to learn whether it
    /// is reachable (and serve such tests for peers).
    #[serde(default = "default_true")]
    pub autonat: bool,
    /// Ask the gateway for a port mapping (UPnP IGD) for each listen address.
    #[serde(default)]
    pub upnp: bool,
    /// DNS seed domains: each is resolved as `/dnsaddr/<domain>` (TXT `_dnsaddr.<domain>`) and
    /// its answers dialled while the node has no peers.
    #[serde(default)]
    pub bootstrap_dns: Vec<String>,
    /// The DNS server (`ip:port`) that resolves `/dnsaddr` and `/dns` bootstrap entries; ""
    /// uses the system's resolver.
    #[serde(default)]
    pub dns_server: String,
}

/// When a node reserves relay slots (see [`P2pConfig::reserve_relays`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReserveRelays {
    #[default]
    Auto,
    Always,
    Never,
}

impl ReserveRelays {
    pub fn as_str(self) -> &'static str {
        match self {
            ReserveRelays::Auto => "auto",
            ReserveRelays::Always => "always",
            ReserveRelays::Never => "never",
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_relay_reservations() -> u32 {
    2
}

fn default_relay_max_reservations() -> u32 {
    128
}

fn default_relay_max_circuits() -> u32 {
    64
}

fn default_relay_max_circuit_duration_s() -> u64 {
    3600
}

fn default_relay_max_circuit_bytes() -> u64 {
    1 << 30
}

fn default_relay_circuits_per_minute() -> u32 {
    30
}

fn default_gossip_heartbeat_ms() -> u64 {
    500
}

fn default_gossip_mesh_n() -> u32 {
    6
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/26656".into()],
            external_addresses: Vec::new(),
            bootstrap: Vec::new(),
            static_mode: false,
            quic: false,
            noise: false,
            max_connections: 128,
            max_message_bytes: 4 << 20,
            gossip_heartbeat_ms: default_gossip_heartbeat_ms(),
            gossip_mesh_n: default_gossip_mesh_n(),
            allowlist_file: String::new(),
            revoked_file: String::new(),
            relays: Vec::new(),
            reserve_relays: ReserveRelays::Auto,
            relay_reservations: default_relay_reservations(),
            relay_server: false,
            relay_max_reservations: default_relay_max_reservations(),
            relay_max_circuits: default_relay_max_circuits(),
            relay_max_circuit_duration_s: default_relay_max_circuit_duration_s(),
            relay_max_circuit_bytes: default_relay_max_circuit_bytes(),
            relay_circuits_per_minute: default_relay_circuits_per_minute(),
            autonat: true,
            upnp: false,
            bootstrap_dns: Vec::new(),
            dns_server: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusConfig {
    pub timeout_propose_ms: u64,
    pub timeout_propose_delta_ms: u64,
    pub timeout_prevote_ms: u64,
    pub timeout_prevote_delta_ms: u64,
    pub timeout_precommit_ms: u64,
    pub timeout_precommit_delta_ms: u64,
    /// Pause after a commit before the next height starts.
    pub timeout_commit_ms: u64,
    /// Most transactions a proposer puts in one block.
    pub max_block_txs: u32,
    /// Every this many blocks the node keeps a state snapshot that peers can state-sync from
    /// (the two latest are kept, in memory; 0: serve none).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: u64,
}

fn default_snapshot_interval() -> u64 {
    500
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        let params = crate::consensus::state_machine::Params::default();
        ConsensusConfig {
            timeout_propose_ms: params.timeout_propose_ms,
            timeout_propose_delta_ms: params.timeout_propose_delta_ms,
            timeout_prevote_ms: params.timeout_prevote_ms,
            timeout_prevote_delta_ms: params.timeout_prevote_delta_ms,
            timeout_precommit_ms: params.timeout_precommit_ms,
            timeout_precommit_delta_ms: params.timeout_precommit_delta_ms,
            timeout_commit_ms: 1000,
            max_block_txs: 5000,
            snapshot_interval: default_snapshot_interval(),
        }
    }
}

impl ConsensusConfig {
    pub fn params(&self) -> crate::consensus::state_machine::Params {
        crate::consensus::state_machine::Params {
            timeout_propose_ms: self.timeout_propose_ms,
            timeout_propose_delta_ms: self.timeout_propose_delta_ms,
            timeout_prevote_ms: self.timeout_prevote_ms,
            timeout_prevote_delta_ms: self.timeout_prevote_delta_ms,
            timeout_precommit_ms: self.timeout_precommit_ms,
            timeout_precommit_delta_ms: self.timeout_precommit_delta_ms,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    pub max_txs: u32,
    pub max_bytes: u64,
    /// Seconds a transaction may wait; older ones are dropped at the next commit (one whose
    /// nonce never comes due would otherwise hold its place for ever).
    #[serde(default = "default_mempool_ttl_s")]
    pub ttl_s: u64,
}

fn default_mempool_ttl_s() -> u64 {
    60
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 20_000,
            max_bytes: 16 << 20,
            ttl_s: default_mempool_ttl_s(),
        }
    }
}

/// Settings that make a node worse on purpose, for devnets only: the harness uses them to check
/// that benchmarks catch a slowdown and that honest nodes survive Byzantine ones
/// (`docs/CHAOS.md`). Any of them set without `enabled = true` is refused, so a production config
/// cannot carry one by accident.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevnetConfig {
    /// This node runs in a devnet and may be made to misbehave.
    pub enabled: bool,
    /// Milliseconds added to every commit of a decided block (blocks the consensus loop, as slow
    /// block execution would).
    pub commit_delay_ms: u64,
    /// Byzantine: with every vote for a block, also sign and gossip a nil vote for the same
    /// height, round and step (an equivocation the other validators must catch).
    pub equivocate_votes: bool,
    /// Byzantine: as proposer, also sign and gossip a second, different block for the same
    /// height and round.
    pub equivocate_proposals: bool,
    /// Byzantine: sign votes but never send them.
    pub withhold_votes: bool,
    /// Byzantine: ignore every proposal received.
    pub drop_proposals: bool,
    /// Byzantine (amnesia): prevote for any valid proposal even when locked on another value.
    pub ignore_locks: bool,
    /// Byzantine: as proposer, propose blocks with a wrong app hash (the others must refuse).
    pub invalid_blocks: bool,
    /// Byzantine: gossip this many junk transactions a second (0: none; at most 10000).
    pub spam_txs_per_s: u64,
    /// Byzantine: as proposer, change one field of an otherwise valid, signed block (one of
    /// [`MUTABLE_BLOCK_FIELDS`]; empty: none); the others must re-check it and refuse it.
    pub mutate_block: String,
    /// When the Byzantine behaviours act: always, probability, heights, rounds.
    pub trigger: String,
    /// `probability`: the chance per height and round, drawn from `seed`.
    pub probability: f64,
    pub seed: u64,
    /// `heights`: these heights, and/or the range `from_height..=to_height` (`to_height` 0: none).
    pub heights: Vec<u64>,
    pub from_height: u64,
    pub to_height: u64,
    /// `rounds`: in these rounds of any height.
    pub rounds: Vec<u32>,
}

/// The Byzantine switches' names, for errors and for the harness.
pub const BYZANTINE_SWITCHES: [&str; 8] = [
    "equivocate_votes",
    "equivocate_proposals",
    "withhold_votes",
    "drop_proposals",
    "ignore_locks",
    "invalid_blocks",
    "spam_txs_per_s",
    "mutate_block",
];

/// The block fields `devnet.mutate_block` can change: the header's app hash, parent hash,
/// time (an hour ahead) and validator-set hash, and the transactions (a junk one added, the
/// data hash recomputed so that only re-checking the transactions finds it).
pub const MUTABLE_BLOCK_FIELDS: [&str; 5] =
    ["app_hash", "prev_hash", "time", "validators_hash", "txs"];

impl DevnetConfig {
    /// True when nothing is set (the section is then left out of a written config).
    pub fn is_off(&self) -> bool {
        *self == DevnetConfig::default()
    }

    /// The first field of the section that is set (`devnet.<name>`), `None` when it is off.
    pub fn first_set(&self) -> Option<String> {
        if self.is_off() {
            return None;
        }
        if self.commit_delay_ms > 0 {
            return Some("devnet.commit_delay_ms".into());
        }
        let on = |name: &str| match name {
            "equivocate_votes" => self.equivocate_votes,
            "equivocate_proposals" => self.equivocate_proposals,
            "withhold_votes" => self.withhold_votes,
            "drop_proposals" => self.drop_proposals,
            "ignore_locks" => self.ignore_locks,
            "invalid_blocks" => self.invalid_blocks,
            "mutate_block" => !self.mutate_block.is_empty(),
            _ => self.spam_txs_per_s > 0,
        };
        let name = BYZANTINE_SWITCHES
            .iter()
            .find(|name| on(name))
            .map_or(if self.enabled { "enabled" } else { "trigger" }, |name| {
                name
            });
        Some(format!("devnet.{name}"))
    }

    /// Whether any Byzantine behaviour is switched on.
    pub fn byzantine(&self) -> bool {
        self.equivocate_votes
            || self.equivocate_proposals
            || self.withhold_votes
            || self.drop_proposals
            || self.ignore_locks
            || self.invalid_blocks
            || self.spam_txs_per_s > 0
            || !self.mutate_block.is_empty()
    }

    /// Whether the behaviours act at `height` and `round`; `salt` separates the draws of
    /// different behaviours under a probability trigger (the same inputs always give the same
    /// answer).
    pub fn fires(&self, height: u64, round: u32, salt: &str) -> bool {
        match self.trigger.as_str() {
            "" | "always" => true,
            "probability" => {
                use sha2::{Digest, Sha256};
                let mut hasher = Sha256::new();
                hasher.update(self.seed.to_le_bytes());
                hasher.update(height.to_le_bytes());
                hasher.update(round.to_le_bytes());
                hasher.update(salt.as_bytes());
                let digest = hasher.finalize();
                let draw = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
                (draw as f64 / u64::MAX as f64) < self.probability
            }
            "heights" => {
                self.heights.contains(&height)
                    || (self.to_height > 0 && (self.from_height..=self.to_height).contains(&height))
            }
            "rounds" => self.rounds.contains(&round),
            _ => false,
        }
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if !["", "always", "probability", "heights", "rounds"].contains(&self.trigger.as_str()) {
            return Err((
                "devnet.trigger",
                format!(
                    "{:?} is not one of always, probability, heights, rounds",
                    self.trigger
                ),
            ));
        }
        if self.trigger == "probability" && !(0.0..=1.0).contains(&self.probability) {
            return Err((
                "devnet.probability",
                format!("must be between 0 and 1, got {}", self.probability),
            ));
        }
        if self.trigger == "heights"
            && self.heights.is_empty()
            && (self.to_height == 0 || self.to_height < self.from_height)
        {
            return Err((
                "devnet.heights",
                "a heights trigger needs heights or from_height..=to_height".into(),
            ));
        }
        if self.trigger == "rounds" && self.rounds.is_empty() {
            return Err(("devnet.rounds", "a rounds trigger needs rounds".into()));
        }
        if self.spam_txs_per_s > 10_000 {
            return Err(("devnet.spam_txs_per_s", "must be at most 10000".into()));
        }
        if !self.mutate_block.is_empty()
            && !MUTABLE_BLOCK_FIELDS.contains(&self.mutate_block.as_str())
        {
            return Err((
                "devnet.mutate_block",
                format!(
                    "{:?} is not one of {}",
                    self.mutate_block,
                    MUTABLE_BLOCK_FIELDS.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// The message types a message fault can act on.
pub const MESSAGE_TYPES: [&str; 4] = ["vote", "proposal", "tx", "sync"];

/// A message fault (devnet nodes only, set at run time through `POST /admin/devnet/messages`):
/// what happens to this node's outgoing messages between its consensus output and the wire.
/// Each message of the listed `types` meets each fault with its probability, drawn from a
/// generator seeded with `seed`, so the same node sending the same messages makes the same
/// draws.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageFaults {
    /// The message is never sent.
    pub drop: f64,
    /// A second copy is sent right after (gossip: a new copy with its own message id).
    pub duplicate: f64,
    /// Every message is held this long before it is sent (at most 10000).
    pub delay_ms: u64,
    /// The message is held an extra random 1..=max(delay_ms, 100) ms, so later ones overtake it.
    pub reorder: f64,
    /// An old message of the same kind (one of the last 64 this node sent) is sent again.
    pub replay_old: f64,
    /// vote, proposal, tx, sync (empty: all). `sync` (block sync requests and answers) is only
    /// dropped, delayed or reordered.
    pub types: Vec<String>,
    pub seed: u64,
    /// Peer ids. Empty: the fault acts on what this node sends. Otherwise on what it receives
    /// from these peers (gossip they forward to it, their block-sync requests and answers):
    /// gossip goes to every mesh peer at once, so one peer's share is told apart on arrival.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

impl MessageFaults {
    /// Refuses what the node cannot do, naming the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, p) in [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("replay_old", self.replay_old),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err((
                    field,
                    format!("must be a probability between 0 and 1, got {p}"),
                ));
            }
        }
        if self.delay_ms > 10_000 {
            return Err((
                "delay_ms",
                format!("must be at most 10000, got {}", self.delay_ms),
            ));
        }
        if let Some(bad) = self
            .peers
            .iter()
            .find(|peer| peer.parse::<libp2p::PeerId>().is_err())
        {
            return Err(("peers", format!("{bad:?} is not a peer id")));
        }
        if let Some(bad) = self
            .types
            .iter()
            .find(|t| !MESSAGE_TYPES.contains(&t.as_str()))
        {
            return Err((
                "types",
                format!("{bad:?} is not one of {}", MESSAGE_TYPES.join(", ")),
            ));
        }
        Ok(())
    }

    /// Whether it acts on messages of `kind`.
    pub fn acts_on(&self, kind: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == kind)
    }
}

/// Mixture-of-experts inference (`POST /infer`, `docs/INFERENCE.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Serve `/infer` and expert tiles to peers.
    pub enabled: bool,
    /// Memory budget of the loaded-expert cache (least recently used experts leave first).
    pub cache_mib: u64,
    /// Most tokens one request may ask for.
    pub max_new_tokens: u32,
    /// The model a request without `model` runs.
    pub model: String,
}

impl Default for InferenceConfig {
    fn default() -> InferenceConfig {
        InferenceConfig {
            enabled: true,
            cache_mib: 512,
            max_new_tokens: 64,
            model: "moe".into(),
        }
    }
}

impl InferenceConfig {
    pub fn is_default(&self) -> bool {
        *self == InferenceConfig::default()
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1 << 20).contains(&self.cache_mib) {
            return Err((
                "inference.cache_mib",
                "must be between 1 and 1048576".into(),
            ));
        }
        if !(1..=4096).contains(&self.max_new_tokens) {
            return Err((
                "inference.max_new_tokens",
                "must be between 1 and 4096".into(),
            ));
        }
        check_name(&self.model).map_err(|reason| ("inference.model", reason))?;
        Ok(())
    }
}

/// The whole node configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub moniker: String,
    pub chain_id: String,
    pub api: ApiConfig,
    pub p2p: P2pConfig,
    pub consensus: ConsensusConfig,
    pub mempool: MempoolConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    #[serde(default, skip_serializing_if = "DevnetConfig::is_off")]
    pub devnet: DevnetConfig,
    #[serde(default, skip_serializing_if = "InferenceConfig::is_default")]
    pub inference: InferenceConfig,
}

impl Config {
    /// The default configuration for a node called `moniker` on `chain_id`.
    pub fn new(moniker: &str, chain_id: &str) -> Config {
        Config {
            moniker: moniker.to_string(),
            chain_id: chain_id.to_string(),
            api: ApiConfig {
                listen: "127.0.0.1:26657".into(),
                max_body_bytes: 1 << 20,
                rate_limit_per_s: default_rate_limit_per_s(),
                rate_limit_burst: default_rate_limit_burst(),
                tls: ApiTlsConfig::default(),
            },
            p2p: P2pConfig::default(),
            consensus: ConsensusConfig::default(),
            mempool: MempoolConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig {
                format: LogFormat::Human,
                level: "info".into(),
            },
            devnet: DevnetConfig::default(),
            inference: InferenceConfig::default(),
        }
    }

    /// The commented `config.toml` that `blyan-node init` writes, holding this configuration.
    /// Longer than 100 lines on purpose: it is one `format!` of the whole file, so the file's
    /// text reads top to bottom as the operator will see it.
    pub fn template(&self) -> String {
        let storage = &self.storage;
        let format = match self.log.format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        format!(
            r#"# Blyan node configuration.
# Precedence: this file, then environment variables BLYAN_<SECTION>_<KEY> (BLYAN_<KEY> for the
# top-level keys, e.g. BLYAN_API_LISTEN=0.0.0.0:26657), then command-line flags.

# Human-readable name of this node, shown in /status. Letters, digits, '.', '_' and '-'.
moniker = "{moniker}"
# Chain this node belongs to; every block carries it. Same character rules as moniker.
chain_id = "{chain_id}"

[api]
# Address of the HTTP API (/health, /status, /metrics, /checkpoints). Use 0.0.0.0 in containers.
listen = "{listen}"
# Largest request body accepted, in bytes; larger requests get 413 with a JSON error.
max_body_bytes = {max_body_bytes}
# Requests per second per client IP address, with a burst allowance; more get 429 (0: no limit).
rate_limit_per_s = {rate_limit_per_s}
rate_limit_burst = {rate_limit_burst}
# HTTPS (TLS 1.3 only) with client certificates for the admin endpoints (POST /checkpoints,
# POST /admin/reload, GET /admin/devnet): add a section like this (docs/SECURITY.md;
# `blyan-node certs --help` makes the files). Without TLS, admin endpoints answer loopback only.
# [api.tls]
# enabled = true
# listen = ""            # "" makes api.listen HTTPS; an address adds HTTPS there, api.listen stays HTTP
# cert_file = "tls/node.crt"
# key_file = "tls/node.key"
# client_ca_file = "tls/ca.crt"
# crl_file = "tls/ca.crl"
# ca_key_file = ""        # the CA key (devnets): renew the certificate before it expires
# renew_before_s = 86400

[p2p]
# Multiaddrs the node listens on (TCP; add "/ip4/0.0.0.0/udp/26656/quic-v1" with quic = true).
listen = {p2p_listen}
# Addresses announced to peers. In static mode these are the only ones announced.
external_addresses = {p2p_external}
# Peers to dial at start and redial when the link drops: "/ip4/10.0.0.2/tcp/26656/p2p/<peer id>"
# or DNS seeds "/dnsaddr/seeds.example.org". BLYAN_P2P_BOOTSTRAP takes a comma-separated list.
bootstrap = {p2p_bootstrap}
# Devnet mode: dial only the bootstrap addresses, announce only external_addresses, and run no
# discovery, so that every link can be routed through a fault proxy.
static_mode = {p2p_static}
# Also run QUIC (needs a quic-v1 listen address to accept it). Chaos runs use TCP only.
quic = {p2p_quic}
# Secure TCP links with Noise instead of TLS 1.3. TLS 1.3 is the production profile: Noise is
# refused unless devnet.enabled = true.
noise = {p2p_noise}
# Permissioned networks: a file of the only peer ids allowed to connect, one per line ('#'
# comments); "" lets any peer in. A file of revoked peer ids: refused, and cut off within a
# second of being added. Both are re-read when they change and on SIGHUP; a file that does not
# parse is reported and the lists in force stay. Relative paths are under the node home.
allowlist_file = {p2p_allowlist_file:?}
revoked_file = {p2p_revoked_file:?}
# Most established connections; further ones are refused.
max_connections = {p2p_max_connections}
# Largest gossip message or block-sync request accepted, in bytes; larger ones are dropped and
# the sender is penalised.
max_message_bytes = {p2p_max_message_bytes}
# Gossipsub heartbeat in milliseconds, and the mesh degree D (each message goes to about D peers
# per hop). Large devnets on few cores use a slower heartbeat and a smaller D to save CPU.
gossip_heartbeat_ms = {p2p_gossip_heartbeat_ms}
gossip_mesh_n = {p2p_gossip_mesh_n}
# NAT traversal (docs/NETWORKING.md). A node learns whether it is reachable with AutoNAT v2;
# when it is not ("auto"; or "always"), it reserves slots on relay_reservations circuit relays
# (from relays and from connected peers that serve as relays) and advertises the relayed
# addresses; peers then upgrade relayed connections to direct ones by hole punching (DCUtR).
autonat = {p2p_autonat}
relays = {p2p_relays}
reserve_relays = "{p2p_reserve_relays}"
relay_reservations = {p2p_relay_reservations}
# Ask the gateway for a port mapping with UPnP IGD (home routers).
upnp = {p2p_upnp}
# Serve circuit relay v2 (public nodes), with these limits: reservations held, circuits open,
# each circuit's life in seconds and bytes.
relay_server = {p2p_relay_server}
relay_max_reservations = {p2p_relay_max_reservations}
relay_max_circuits = {p2p_relay_max_circuits}
relay_max_circuit_duration_s = {p2p_relay_max_circuit_duration_s}
relay_max_circuit_bytes = {p2p_relay_max_circuit_bytes}
# New circuits per minute for one source peer (twice that per source IP).
relay_circuits_per_minute = {p2p_relay_circuits_per_minute}
# DNS seed domains (a `blyan-node seeder` answers for them): their _dnsaddr TXT records are
# dialled while the node has no peers. dns_server = "ip:port" resolves them instead of the
# system's resolver (e.g. a seeder on a devnet).
bootstrap_dns = {p2p_bootstrap_dns}
dns_server = {p2p_dns_server:?}

[consensus]
# Round timeouts grow with the round: base + round * delta, in milliseconds.
timeout_propose_ms = {timeout_propose_ms}
timeout_propose_delta_ms = {timeout_propose_delta_ms}
timeout_prevote_ms = {timeout_prevote_ms}
timeout_prevote_delta_ms = {timeout_prevote_delta_ms}
timeout_precommit_ms = {timeout_precommit_ms}
timeout_precommit_delta_ms = {timeout_precommit_delta_ms}
# Pause after each commit before the next height (0: start at once; blocks as fast as possible).
timeout_commit_ms = {timeout_commit_ms}
# Most transactions in one block.
max_block_txs = {max_block_txs}
# Keep a state snapshot every this many blocks for peers that start with --state-sync (0: none).
snapshot_interval = {snapshot_interval}

[mempool]
# Pending transactions kept at most, by count and by bytes; more are refused with 503.
max_txs = {mempool_max_txs}
max_bytes = {mempool_max_bytes}
# Seconds a transaction may wait before it is dropped (e.g. one whose nonce never comes due).
ttl_s = {mempool_ttl_s}

[storage]
# Shared RocksDB block cache for all column families, in MiB.
block_cache_mb = {block_cache_mb}
# Memtable size of the blocks column family in MiB; the other families use a quarter of it.
write_buffer_mb = {write_buffer_mb}
# Memtables per column family before writes wait for a flush (2 to 16).
max_write_buffers = {max_write_buffers}
# Block values of at least this many bytes are kept in blob files, out of the LSM tree.
blob_min_bytes = {blob_min_bytes}
# Checkpoints kept under HOME/checkpoints; older ones are deleted. 0 keeps them all.
checkpoint_retention = {checkpoint_retention}

[log]
# "human" for people, "json" for machines (one JSON object per line).
format = "{format}"
# Level or tracing filter directives, e.g. "info" or "info,blyan_node::storage=debug".
level = "{level}"
"#,
            moniker = self.moniker,
            chain_id = self.chain_id,
            listen = self.api.listen,
            max_body_bytes = self.api.max_body_bytes,
            rate_limit_per_s = self.api.rate_limit_per_s,
            rate_limit_burst = self.api.rate_limit_burst,
            p2p_listen = toml_list(&self.p2p.listen),
            p2p_external = toml_list(&self.p2p.external_addresses),
            p2p_bootstrap = toml_list(&self.p2p.bootstrap),
            p2p_static = self.p2p.static_mode,
            p2p_quic = self.p2p.quic,
            p2p_noise = self.p2p.noise,
            p2p_allowlist_file = self.p2p.allowlist_file,
            p2p_revoked_file = self.p2p.revoked_file,
            p2p_max_connections = self.p2p.max_connections,
            p2p_max_message_bytes = self.p2p.max_message_bytes,
            p2p_gossip_heartbeat_ms = self.p2p.gossip_heartbeat_ms,
            p2p_gossip_mesh_n = self.p2p.gossip_mesh_n,
            p2p_autonat = self.p2p.autonat,
            p2p_relays = toml_list(&self.p2p.relays),
            p2p_reserve_relays = self.p2p.reserve_relays.as_str(),
            p2p_relay_reservations = self.p2p.relay_reservations,
            p2p_upnp = self.p2p.upnp,
            p2p_relay_server = self.p2p.relay_server,
            p2p_relay_max_reservations = self.p2p.relay_max_reservations,
            p2p_relay_max_circuits = self.p2p.relay_max_circuits,
            p2p_relay_max_circuit_duration_s = self.p2p.relay_max_circuit_duration_s,
            p2p_relay_max_circuit_bytes = self.p2p.relay_max_circuit_bytes,
            p2p_relay_circuits_per_minute = self.p2p.relay_circuits_per_minute,
            p2p_bootstrap_dns = toml_list(&self.p2p.bootstrap_dns),
            p2p_dns_server = self.p2p.dns_server,
            timeout_propose_ms = self.consensus.timeout_propose_ms,
            timeout_propose_delta_ms = self.consensus.timeout_propose_delta_ms,
            timeout_prevote_ms = self.consensus.timeout_prevote_ms,
            timeout_prevote_delta_ms = self.consensus.timeout_prevote_delta_ms,
            timeout_precommit_ms = self.consensus.timeout_precommit_ms,
            timeout_precommit_delta_ms = self.consensus.timeout_precommit_delta_ms,
            timeout_commit_ms = self.consensus.timeout_commit_ms,
            max_block_txs = self.consensus.max_block_txs,
            snapshot_interval = self.consensus.snapshot_interval,
            mempool_max_txs = self.mempool.max_txs,
            mempool_max_bytes = self.mempool.max_bytes,
            mempool_ttl_s = self.mempool.ttl_s,
            block_cache_mb = storage.block_cache_mb,
            write_buffer_mb = storage.write_buffer_mb,
            max_write_buffers = storage.max_write_buffers,
            blob_min_bytes = storage.blob_min_bytes,
            checkpoint_retention = storage.checkpoint_retention,
            level = self.log.level,
        ) + &self.devnet_section()
            + &self.tls_section()
    }

    /// The `[api.tls]` section, written only when set.
    fn tls_section(&self) -> String {
        if self.api.tls.is_off() {
            return String::new();
        }
        let body = toml::to_string(&self.api.tls).expect("the TLS settings serialise");
        format!("\n[api.tls]\n# HTTPS for the API and client certificates for its admin endpoints.\n{body}")
    }

    /// The `[devnet]` section, written only when something in it is set.
    fn devnet_section(&self) -> String {
        if self.devnet.is_off() {
            return String::new();
        }
        let body = toml::to_string(&self.devnet).expect("the devnet settings serialise");
        format!(
            "\n[devnet]\n# DEVNET ONLY: the settings below make this node worse on purpose \
             (benchmark checks, Byzantine faults; docs/CHAOS.md).\n{body}"
        )
    }

    /// Loads `path`, applies `BLYAN_*` variables from `environment`, and validates.
    pub fn load(
        path: &Path,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message: message.trim().replace('\n', " "),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
        let config: Config = table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        config.validate(&path.display().to_string())?;
        let overridden = apply_environment(&mut table, environment)?;
        if overridden.is_empty() {
            return Ok(config);
        }
        let origin = format!("{} with {}", path.display(), overridden.join(", "));
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "after applying {}: {}",
                    overridden.join(", "),
                    e.to_string().trim()
                ),
            })?;
        config.validate(&origin)?;
        Ok(config)
    }

    /// Checks every field; the error names the field and says what is allowed.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        };
        check_name(&self.moniker).map_err(|reason| invalid("moniker", reason))?;
        check_name(&self.chain_id).map_err(|reason| invalid("chain_id", reason))?;
        self.validate_api(&invalid)?;
        self.validate_p2p(&invalid)?;
        self.validate_consensus(&invalid)?;
        self.storage
            .validate()
            .map_err(|(field, reason)| invalid(field, reason))?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|error| invalid("log.level", format!("{:?}: {error}", self.log.level)))?;
        self.validate_devnet(&invalid)?;
        self.inference
            .check()
            .map_err(|(field, reason)| invalid(field, reason))?;
        if let Some(field) = self.devnet.first_set() {
            if !cfg!(feature = "devnet") {
                return Err(invalid(
                    &field,
                    "devnet-only, and this node was built without the devnet feature (the \
                     operator build); remove [devnet], or build with `cargo build --features \
                     devnet`"
                        .into(),
                ));
            }
            if !self.devnet.enabled {
                return Err(invalid(
                    &field,
                    "slows the node on purpose; set only on devnets, with devnet.enabled = true"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    fn validate_api(&self, invalid: &Invalid) -> Result<(), ConfigError> {
        self.api.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "api.listen",
                format!("{:?} is not an IP:port address", self.api.listen),
            )
        })?;
        between(
            invalid,
            "api.max_body_bytes",
            self.api.max_body_bytes,
            1024,
            64 << 20,
        )?;
        if self.api.rate_limit_per_s > 0 && self.api.rate_limit_burst < self.api.rate_limit_per_s {
            return Err(invalid(
                "api.rate_limit_burst",
                format!(
                    "must be at least api.rate_limit_per_s ({})",
                    self.api.rate_limit_per_s
                ),
            ));
        }
        let tls = &self.api.tls;
        if !tls.enabled {
            if tls.is_off() {
                return Ok(());
            }
            return Err(invalid(
                "api.tls",
                "has settings but enabled = false; set enabled = true or remove the section".into(),
            ));
        }
        for (field, value) in [
            ("api.tls.cert_file", &tls.cert_file),
            ("api.tls.key_file", &tls.key_file),
        ] {
            if value.is_empty() {
                return Err(invalid(
                    field,
                    "is needed with api.tls.enabled = true".into(),
                ));
            }
        }
        if !tls.listen.is_empty() {
            let address = tls.listen.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "api.tls.listen",
                    format!("{:?} is not an IP:port address", tls.listen),
                )
            })?;
            if tls.listen == self.api.listen && address.port() != 0 {
                return Err(invalid(
                    "api.tls.listen",
                    "must differ from api.listen (or be \"\" to make api.listen HTTPS)".into(),
                ));
            }
        }
        if !tls.crl_file.is_empty() && tls.client_ca_file.is_empty() {
            return Err(invalid(
                "api.tls.crl_file",
                "needs api.tls.client_ca_file (the CA it revokes for)".into(),
            ));
        }
        if !tls.ca_key_file.is_empty() && tls.renew_before_s == 0 {
            return Err(invalid(
                "api.tls.renew_before_s",
                "must be at least 1 with api.tls.ca_key_file".into(),
            ));
        }
        Ok(())
    }

    /// The consensus timeouts and block size, and the mempool's bounds.
    fn validate_consensus(&self, invalid: &Invalid) -> Result<(), ConfigError> {
        let consensus = &self.consensus;
        for (field, value) in [
            ("consensus.timeout_propose_ms", consensus.timeout_propose_ms),
            ("consensus.timeout_prevote_ms", consensus.timeout_prevote_ms),
            (
                "consensus.timeout_precommit_ms",
                consensus.timeout_precommit_ms,
            ),
        ] {
            between(invalid, field, value, 1, 600_000)?;
        }
        for (field, value) in [
            (
                "consensus.timeout_propose_delta_ms",
                consensus.timeout_propose_delta_ms,
            ),
            (
                "consensus.timeout_prevote_delta_ms",
                consensus.timeout_prevote_delta_ms,
            ),
            (
                "consensus.timeout_precommit_delta_ms",
                consensus.timeout_precommit_delta_ms,
            ),
            ("consensus.timeout_commit_ms", consensus.timeout_commit_ms),
        ] {
            if value > 600_000 {
                return Err(invalid(field, "must be at most 600000".into()));
            }
        }
        let max_txs = crate::block::MAX_TXS_PER_BLOCK;
        between(
            invalid,
            "consensus.max_block_txs",
            consensus.max_block_txs,
            1,
            max_txs,
        )?;
        between(
            invalid,
            "mempool.max_txs",
            self.mempool.max_txs,
            1,
            10_000_000,
        )?;
        between(
            invalid,
            "mempool.max_bytes",
            self.mempool.max_bytes,
            1024,
            4 << 30,
        )?;
        between(invalid, "mempool.ttl_s", self.mempool.ttl_s, 1, 86_400)
    }

    fn validate_devnet(&self, invalid: &Invalid) -> Result<(), ConfigError> {
        if self.devnet.commit_delay_ms > 10_000 {
            return Err(invalid(
                "devnet.commit_delay_ms",
                "must be at most 10000".into(),
            ));
        }
        self.devnet
            .check()
            .map_err(|(field, reason)| invalid(field, reason))
    }

    fn validate_p2p(&self, invalid: &Invalid) -> Result<(), ConfigError> {
        let p2p = &self.p2p;
        self.validate_p2p_addresses(invalid)?;
        between(
            invalid,
            "p2p.max_connections",
            p2p.max_connections,
            1,
            100_000,
        )?;
        between(
            invalid,
            "p2p.max_message_bytes",
            p2p.max_message_bytes,
            1024,
            256 << 20,
        )?;
        between(
            invalid,
            "p2p.gossip_heartbeat_ms",
            p2p.gossip_heartbeat_ms,
            50,
            10_000,
        )?;
        between(invalid, "p2p.gossip_mesh_n", p2p.gossip_mesh_n, 2, 32)?;
        // The production profile (no [devnet] section) is TLS 1.3 only.
        if p2p.noise && !self.devnet.enabled {
            return Err(invalid(
                "p2p.noise",
                "Noise is for devnets and comparisons only (set devnet.enabled = true); production links are TLS 1.3".into(),
            ));
        }
        between(
            invalid,
            "p2p.relay_reservations",
            p2p.relay_reservations,
            1,
            8,
        )?;
        if p2p.relay_server
            && (p2p.relay_max_circuits == 0
                || p2p.relay_max_reservations == 0
                || p2p.relay_max_circuit_duration_s == 0
                || p2p.relay_max_circuit_bytes < 1024
                || p2p.relay_circuits_per_minute == 0)
        {
            return Err(invalid(
                "p2p.relay_max_circuits",
                "a relay server needs relay_max_reservations, relay_max_circuits, relay_max_circuit_duration_s and relay_circuits_per_minute above 0 and relay_max_circuit_bytes of at least 1024".into(),
            ));
        }
        for (index, domain) in p2p.bootstrap_dns.iter().enumerate() {
            if !is_domain_name(domain) {
                return Err(invalid(
                    "p2p.bootstrap_dns",
                    format!(
                        "[{index}] {domain:?} is not a domain name (e.g. \"seed.example.org\")"
                    ),
                ));
            }
        }
        if !p2p.dns_server.is_empty() && p2p.dns_server.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "p2p.dns_server",
                format!("{:?} is not ip:port (e.g. \"10.0.0.2:53\")", p2p.dns_server),
            ));
        }
        for (field, path) in [
            ("p2p.allowlist_file", &p2p.allowlist_file),
            ("p2p.revoked_file", &p2p.revoked_file),
        ] {
            if !path.is_empty() && path.trim() != path {
                return Err(invalid(
                    field,
                    format!("{path:?} has leading or trailing spaces"),
                ));
            }
        }
        Ok(())
    }

    /// `p2p.listen`, `p2p.external_addresses` and `p2p.bootstrap` are multiaddrs; a bootstrap
    /// address names its peer (or is a /dnsaddr seed).
    fn validate_p2p_addresses(&self, invalid: &Invalid) -> Result<(), ConfigError> {
        let p2p = &self.p2p;
        let parse = |field: &str, index: usize, text: &str| {
            text.parse::<libp2p::Multiaddr>().map_err(|error| {
                invalid(
                    &format!("{field}[{index}]"),
                    format!("{text:?} is not a multiaddr: {error}"),
                )
            })
        };
        if p2p.listen.is_empty() {
            return Err(invalid("p2p.listen", "needs at least one address".into()));
        }
        for (index, text) in p2p.listen.iter().enumerate() {
            parse("p2p.listen", index, text)?;
        }
        for (index, text) in p2p.external_addresses.iter().enumerate() {
            parse("p2p.external_addresses", index, text)?;
        }
        for (index, text) in p2p.bootstrap.iter().enumerate() {
            let address = parse("p2p.bootstrap", index, text)?;
            let seed = address
                .iter()
                .any(|part| matches!(part, libp2p::multiaddr::Protocol::Dnsaddr(_)));
            let has_peer = address
                .iter()
                .any(|part| matches!(part, libp2p::multiaddr::Protocol::P2p(_)));
            if !seed && !has_peer {
                return Err(invalid(
                    &format!("p2p.bootstrap[{index}]"),
                    format!("{text:?} must end in /p2p/<peer id> (or be a /dnsaddr seed)"),
                ));
            }
        }
        Ok(())
    }

    pub fn api_listen(&self) -> SocketAddr {
        self.api
            .listen
            .parse()
            .expect("api.listen is checked by validate()")
    }
}

/// Builds the error for a field (the origin is the file or "command line").
type Invalid<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

/// `value` of `field` within `low..=high`, or the error that says so.
fn between<T: PartialOrd + std::fmt::Display>(
    invalid: &Invalid,
    field: &str,
    value: T,
    low: T,
    high: T,
) -> Result<(), ConfigError> {
    if value < low || value > high {
        return Err(invalid(field, format!("must be between {low} and {high}")));
    }
    Ok(())
}

/// A DNS name: dot-separated labels of 1-63 letters, digits and hyphens, 253 bytes at most.
fn is_domain_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn toml_list(items: &[String]) -> String {
    toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect()).to_string()
}

/// Letters, digits, '.', '_' and '-', 1 to 64 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(format!(
            "{name:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// Applies `BLYAN_*` overrides to the parsed table; returns the variables used. A variable
/// that names no setting is an error (a typo must not be silently ignored), except the ones read
/// elsewhere: `BLYAN_HOME` (the command line), `BLYAN_SIM_DEBUG` and `BLYAN_CRASH_SEED` (tests).
fn apply_environment(
    table: &mut toml::Table,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    const NOT_SETTINGS: [&str; 3] = ["BLYAN_HOME", "BLYAN_SIM_DEBUG", "BLYAN_CRASH_SEED"];
    let mut used = Vec::new();
    let mut variables: Vec<(String, String)> = environment
        .into_iter()
        .filter(|(name, _)| name.starts_with("BLYAN_") && !NOT_SETTINGS.contains(&name.as_str()))
        .collect();
    variables.sort();
    for (variable, value) in variables {
        let suffix = variable["BLYAN_".len()..].to_ascii_lowercase();
        let error = |reason: String| ConfigError::Environment {
            variable: variable.clone(),
            value: value.clone(),
            reason,
        };
        let slot = find_slot(table, &suffix)
            .ok_or_else(|| error("names no setting in config.toml".into()))?;
        *slot = match slot {
            toml::Value::Integer(_) => toml::Value::Integer(
                value
                    .parse()
                    .map_err(|_| error("expected an integer".into()))?,
            ),
            toml::Value::Array(_) => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_string()))
                    .collect(),
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                value
                    .parse()
                    .map_err(|_| error("expected true or false".into()))?,
            ),
            _ => toml::Value::String(value.clone()),
        };
        used.push(variable);
    }
    Ok(used)
}

/// The value for `section_key` (lower case): a top-level scalar `key`, or `key` in `[section]`.
fn find_slot<'a>(table: &'a mut toml::Table, name: &str) -> Option<&'a mut toml::Value> {
    let section = table.iter().find_map(|(key, value)| {
        let rest = name.strip_prefix(key.as_str())?.strip_prefix('_')?;
        match value {
            toml::Value::Table(inner) if inner.contains_key(rest) => {
                Some((key.clone(), rest.to_string()))
            }
            _ => None,
        }
    });
    match section {
        Some((section, key)) => table.get_mut(&section)?.as_table_mut()?.get_mut(&key),
        None => match table.get_mut(name)? {
            toml::Value::Table(_) => None,
            value => Some(value),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_default(dir: &Path) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, Config::new("node0", "blyan-devnet").template()).unwrap();
        path
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_example_config_loads_with_its_nat_and_dns_seed_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/config.toml");
        let config = Config::load(&path, Vec::new()).expect("docs/examples/config.toml loads");
        assert_eq!(
            config.p2p.bootstrap_dns,
            vec!["seed.example.org".to_string()]
        );
        assert_eq!(config.p2p.relays.len(), 1);
        assert_eq!(config.p2p.reserve_relays, ReserveRelays::Auto);
        assert!(config.p2p.autonat);
    }

    #[test]
    fn nat_and_dns_settings_are_checked() {
        let mut config = Config::new("n", "c");
        config.p2p.bootstrap_dns = vec!["not a domain".into()];
        let error = config.validate("t").unwrap_err().to_string();
        assert!(error.contains("p2p.bootstrap_dns"), "{error}");
        let mut config = Config::new("n", "c");
        config.p2p.dns_server = "example.org".into();
        let error = config.validate("t").unwrap_err().to_string();
        assert!(error.contains("p2p.dns_server"), "{error}");
        let mut config = Config::new("n", "c");
        config.p2p.relay_reservations = 0;
        let error = config.validate("t").unwrap_err().to_string();
        assert!(error.contains("p2p.relay_reservations"), "{error}");
        let mut config = Config::new("n", "c");
        config.p2p.relay_server = true;
        config.p2p.relay_circuits_per_minute = 0;
        assert!(config.validate("t").is_err());
    }

    #[test]
    fn template_parses_back_to_the_same_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let config = Config::load(&path, Vec::new()).unwrap();
        assert_eq!(config, Config::new("node0", "blyan-devnet"));
    }

    #[test]
    fn environment_overrides_file_and_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let config = Config::load(
            &path,
            env(&[
                ("BLYAN_API_LISTEN", "0.0.0.0:9000"),
                ("BLYAN_STORAGE_BLOCK_CACHE_MB", "32"),
                ("BLYAN_MONIKER", "renamed"),
                ("BLYAN_HOME", "/ignored"),
                ("BLYAN_SIM_DEBUG", "1"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.api.listen, "0.0.0.0:9000");
        assert_eq!(config.storage.block_cache_mb, 32);
        assert_eq!(config.moniker, "renamed");
    }

    #[test]
    fn bad_environment_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let error =
            Config::load(&path, env(&[("BLYAN_STORAGE_BLOCK_CACHE_MB", "lots")])).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("environment variable BLYAN_STORAGE_BLOCK_CACHE_MB"),
            "{error}"
        );
        let error = Config::load(&path, env(&[("BLYAN_API_LISTNE", "x")])).unwrap_err();
        assert!(error.to_string().contains("names no setting"), "{error}");
        let error = Config::load(&path, env(&[("BLYAN_API_LISTEN", "nowhere")])).unwrap_err();
        assert!(error.to_string().contains("api.listen"), "{error}");
    }

    #[test]
    fn truncated_unknown_and_out_of_range_configs_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(error.contains("config.toml: invalid config"), "{error}");

        std::fs::write(&path, format!("{text}\nsurprise = 1\n")).unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(error.contains("unknown field `surprise`"), "{error}");

        std::fs::write(
            &path,
            text.replace("block_cache_mb = 8", "block_cache_mb = 0"),
        )
        .unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(
            error.contains("storage.block_cache_mb: must be between"),
            "{error}"
        );

        std::fs::write(
            &path,
            text.replace("moniker = \"node0\"", "moniker = \"a b\""),
        )
        .unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(error.contains(": moniker:"), "{error}");
    }

    #[test]
    #[cfg(feature = "devnet")]
    fn devnet_slowdown_needs_devnet_mode_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let mut config = Config::new("node0", "blyan-devnet");
        assert!(!config.template().contains("[devnet]"));
        config.devnet.commit_delay_ms = 5;
        std::fs::write(&path, config.template()).unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(
            error.contains("devnet.commit_delay_ms") && error.contains("devnet.enabled = true"),
            "{error}"
        );
        config.devnet.enabled = true;
        std::fs::write(&path, config.template()).unwrap();
        assert_eq!(Config::load(&path, Vec::new()).unwrap(), config);
        let error = Config::load(&path, env(&[("BLYAN_DEVNET_COMMIT_DELAY_MS", "20000")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("devnet.commit_delay_ms: must be at most 10000"),
            "{error}"
        );
        config.devnet.mutate_block = "txs".into();
        std::fs::write(&path, config.template()).unwrap();
        assert_eq!(Config::load(&path, Vec::new()).unwrap(), config);
        config.devnet.mutate_block = "nonce".into();
        std::fs::write(&path, config.template()).unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(
            error.contains("devnet.mutate_block: \"nonce\" is not one of app_hash"),
            "{error}"
        );
    }

    /// The operator build (no `devnet` feature) refuses every `[devnet]` field at start, naming
    /// it: the Byzantine switches are not compiled in. `.ci/run` runs this with
    /// `cargo test -p blyan-node --lib operator_build` (workspace builds have the feature).
    #[test]
    #[cfg(not(feature = "devnet"))]
    fn operator_build_refuses_every_devnet_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        type Set = fn(&mut DevnetConfig);
        let cases: [(&str, Set); 5] = [
            ("devnet.commit_delay_ms", |d| d.commit_delay_ms = 5),
            ("devnet.equivocate_votes", |d| d.equivocate_votes = true),
            ("devnet.spam_txs_per_s", |d| d.spam_txs_per_s = 10),
            ("devnet.mutate_block", |d| d.mutate_block = "time".into()),
            ("devnet.enabled", |_| {}),
        ];
        for (field, set) in cases {
            let mut config = Config::new("node0", "blyan-devnet");
            config.devnet.enabled = true;
            set(&mut config.devnet);
            std::fs::write(&path, config.template()).unwrap();
            let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
            assert!(
                error.contains(field) && error.contains("without the devnet feature"),
                "{field}: {error}"
            );
        }
        let honest = Config::new("node0", "blyan-devnet");
        std::fs::write(&path, honest.template()).unwrap();
        assert_eq!(Config::load(&path, Vec::new()).unwrap(), honest);
    }
}
