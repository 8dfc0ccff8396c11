//! `Manifest::validate`: every section checked before anything starts, one function a section;
//! the first problem is returned as the field and the reason.

use std::collections::{HashMap, HashSet};

use super::{
    Byzantine, Manifest, ManifestError, NodeSpec, Role, BYZANTINE_BEHAVIOURS, MAX_NODES,
    MAX_PROXIED_NODES, TRIGGERS,
};

/// A field and why its value is refused.
type Bad = (String, String);

fn bad(field: impl Into<String>, reason: impl Into<String>) -> Bad {
    (field.into(), reason.into())
}

fn name(field: &str, value: &str) -> Result<(), Bad> {
    blyan_node::config::check_name(value).map_err(|reason| bad(field, reason))
}

impl Manifest {
    /// Every rule; the first broken one is reported with its field.
    pub fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        self.check_all()
            .map_err(|(field, reason)| ManifestError::Invalid {
                origin: origin.to_string(),
                field,
                reason,
            })
    }

    fn check_all(&self) -> Result<(), Bad> {
        name("name", &self.name)?;
        name("chain_id", &self.chain_id)?;
        if self.nodes.is_empty() {
            self.check_counts()?;
        } else {
            self.check_nodes()?;
        }
        if self.duration_s < 0 {
            return Err(bad("duration_s", "must be >= 0"));
        }
        self.check_consensus()?;
        self.check_latency()?;
        self.check_load()?;
        // Every fault is turned into its schedule once here, before anything starts, so that a
        // bad kind, target, shape or parameter is refused with its field.
        self.fault_schedule(None).map_err(|error| match error {
            crate::scenario::ScenarioError::Field { field, reason } => bad(field, reason),
            other => bad("faults", other.to_string()),
        })?;
        self.check_topology()?;
        let nodes = self.resolve().len();
        if self.network.proxy && nodes > MAX_PROXIED_NODES {
            return Err(bad(
                "network.proxy",
                format!(
                    "{nodes} nodes; a proxy per directed link is offered up to {MAX_PROXIED_NODES} nodes"
                ),
            ));
        }
        if self.checks.liveness_heights <= 0 {
            return Err(bad("checks.liveness_heights", "must be > 0"));
        }
        if self.checks.liveness_within_s <= 0 {
            return Err(bad("checks.liveness_within_s", "must be > 0"));
        }
        if !(32..=65_536).contains(&self.resources.memory_mb) {
            return Err(bad("resources.memory_mb", "must be between 32 and 65536"));
        }
        self.check_inference()
    }

    /// `validators` and `full_nodes`, when no `[[nodes]]` are listed.
    fn check_counts(&self) -> Result<(), Bad> {
        let validators = self.validators.unwrap_or(4);
        let full = self.full_nodes.unwrap_or(0);
        if validators <= 0 {
            return Err(bad("validators", "must be > 0 (a chain needs a validator)"));
        }
        if full < 0 {
            return Err(bad("full_nodes", "must be >= 0"));
        }
        if (validators + full) as usize > MAX_NODES {
            return Err(bad(
                "validators",
                format!("{} nodes in all; at most {MAX_NODES}", validators + full),
            ));
        }
        Ok(())
    }

    /// `[[nodes]]`: names unique, stakes, zones, Byzantine settings and twins.
    fn check_nodes(&self) -> Result<(), Bad> {
        if self.validators.is_some() || self.full_nodes.is_some() {
            return Err(bad(
                "nodes",
                "give either [[nodes]] or the validators/full_nodes counts, not both",
            ));
        }
        if self.nodes.len() > MAX_NODES {
            return Err(bad(
                "nodes",
                format!("{} nodes; at most {MAX_NODES}", self.nodes.len()),
            ));
        }
        let mut names = HashMap::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let field = |name: &str| format!("nodes[{index}].{name}");
            name(&field("name"), &node.name)?;
            if let Some(first) = names.insert(node.name.as_str(), index) {
                return Err(bad(
                    field("name"),
                    format!("{:?} is also the name of nodes[{first}]", node.name),
                ));
            }
            if node.role == Role::Validator && node.stake <= 0 {
                return Err(bad(field("stake"), "must be > 0"));
            }
            if node.stake < 0 {
                return Err(bad(field("stake"), "must be >= 0"));
            }
            name(&field("zone"), &node.zone)?;
            if let Some(byzantine) = &node.byzantine {
                check_byzantine(node, byzantine)
                    .map_err(|(name, reason)| (field(&name), reason))?;
            }
            if let Some(of) = &node.twin_of {
                self.check_twin(node, of)
                    .map_err(|reason| bad(field("twin_of"), reason))?;
            }
        }
        if !self.nodes.iter().any(|node| node.role == Role::Validator) {
            return Err(bad("nodes", "no validator: a chain needs at least one"));
        }
        Ok(())
    }

    /// A twin copies another validator that is not itself a twin.
    fn check_twin(&self, node: &NodeSpec, of: &str) -> Result<(), String> {
        match self.nodes.iter().find(|other| other.name == of) {
            None => Err(format!("no node named {of:?}")),
            Some(target)
                if target.role != Role::Validator
                    || target.twin_of.is_some()
                    || target.name == node.name =>
            {
                Err(format!(
                    "{of:?} must be another validator that is not itself a twin"
                ))
            }
            Some(_) => Ok(()),
        }
    }

    fn check_consensus(&self) -> Result<(), Bad> {
        let consensus = &self.consensus;
        for (field, value) in [
            ("consensus.timeout_propose_ms", consensus.timeout_propose_ms),
            ("consensus.timeout_prevote_ms", consensus.timeout_prevote_ms),
            (
                "consensus.timeout_precommit_ms",
                consensus.timeout_precommit_ms,
            ),
        ] {
            if !(1..=600_000).contains(&value) {
                return Err(bad(field, "must be between 1 and 600000"));
            }
        }
        if !(0..=600_000).contains(&consensus.timeout_commit_ms) {
            return Err(bad(
                "consensus.timeout_commit_ms",
                "must be between 0 and 600000",
            ));
        }
        if !(0..=10_000).contains(&consensus.commit_delay_ms) {
            return Err(bad(
                "consensus.commit_delay_ms",
                "must be between 0 and 10000",
            ));
        }
        if consensus.epoch_length < 2 {
            return Err(bad("consensus.epoch_length", "must be at least 2"));
        }
        if self.staking.epoch_length != blyan_node::state::StakingParams::default().epoch_length
            && self.staking.epoch_length != consensus.epoch_length as u64
        {
            return Err(bad(
                "staking.epoch_length",
                "set the epoch length as consensus.epoch_length",
            ));
        }
        self.staking_params()
            .validate()
            .map_err(|(field, reason)| bad(field, reason))
    }

    /// `[[network.latency]]` rules between zones that have nodes.
    fn check_latency(&self) -> Result<(), Bad> {
        let zones: HashSet<String> = self.resolve().into_iter().map(|node| node.zone).collect();
        for (index, rule) in self.network.latency.iter().enumerate() {
            let field = |name: &str| format!("network.latency[{index}].{name}");
            for (name, zone) in [("from", &rule.from), ("to", &rule.to)] {
                if !zones.contains(zone) {
                    return Err(bad(field(name), format!("zone {zone:?} has no node")));
                }
            }
            if rule.latency_ms < 0 || rule.latency_ms > 60_000 {
                return Err(bad(field("latency_ms"), "must be between 0 and 60000"));
            }
            if rule.jitter_ms < 0 || rule.jitter_ms > rule.latency_ms.max(0) {
                return Err(bad(field("jitter_ms"), "must be between 0 and latency_ms"));
            }
        }
        Ok(())
    }

    fn check_load(&self) -> Result<(), Bad> {
        if self.load.rate < 0 || self.load.rate > 1_000_000 {
            return Err(bad("load.rate", "must be between 0 and 1000000"));
        }
        if !(1..=100_000).contains(&self.load.accounts) {
            return Err(bad("load.accounts", "must be between 1 and 100000"));
        }
        for (index, rate) in self.load.ramp.iter().enumerate() {
            if !(1..=1_000_000).contains(rate) {
                return Err(bad(
                    format!("load.ramp[{index}]"),
                    "must be between 1 and 1000000",
                ));
            }
            if index > 0 && *rate <= self.load.ramp[index - 1] {
                return Err(bad(format!("load.ramp[{index}]"), "rates must ascend"));
            }
        }
        Ok(())
    }

    /// `[network.topology]`: relays and homes name nodes, each node in at most one home.
    fn check_topology(&self) -> Result<(), Bad> {
        let Some(topology) = &self.network.topology else {
            return Ok(());
        };
        let all: Vec<String> = self.resolve().into_iter().map(|node| node.name).collect();
        let known = |field: String, name: &String| {
            if all.contains(name) {
                Ok(())
            } else {
                Err(bad(field, format!("no node named {name:?}")))
            }
        };
        if self.network.proxy {
            return Err(bad(
                "network.topology",
                "NAT topologies route links through routers, not the link proxy: set network.proxy = false",
            ));
        }
        if topology.relays.is_empty() {
            return Err(bad(
                "network.topology.relays",
                "name at least one public node to relay for the nodes behind NAT",
            ));
        }
        if topology.homes.len() > 16 {
            return Err(bad("network.topology.homes", "at most 16 homes"));
        }
        for (index, relay) in topology.relays.iter().enumerate() {
            known(format!("network.topology.relays[{index}]"), relay)?;
        }
        let mut placed: HashSet<&String> = HashSet::new();
        for (h, home) in topology.homes.iter().enumerate() {
            if home.nodes.is_empty() || home.nodes.len() > 32 {
                return Err(bad(
                    format!("network.topology.homes[{h}].nodes"),
                    "1 to 32 nodes per home",
                ));
            }
            for (index, node) in home.nodes.iter().enumerate() {
                let field = format!("network.topology.homes[{h}].nodes[{index}]");
                known(field.clone(), node)?;
                if topology.relays.contains(node) {
                    return Err(bad(
                        field,
                        format!("{node:?} is a relay; relays are public"),
                    ));
                }
                if !placed.insert(node) {
                    return Err(bad(field, format!("{node:?} is in two homes")));
                }
            }
        }
        Ok(())
    }

    /// `[inference]`: the node, the model's name and shape, the request sizes.
    fn check_inference(&self) -> Result<(), Bad> {
        let Some(spec) = &self.inference else {
            return Ok(());
        };
        let on = spec.node();
        if !self.resolve().iter().any(|node| node.name == on) {
            return Err(bad("inference.on", format!("no node named {on:?}")));
        }
        name("inference.model", &spec.model())?;
        let tile = spec.tile_bytes.unwrap_or(1 << 20);
        if !(1..=4 << 20).contains(&tile) {
            return Err(bad("inference.tile_bytes", "must be between 1 and 4194304"));
        }
        let config = spec
            .config()
            .map_err(|(field, reason)| bad(format!("inference.{field}"), reason))?;
        config.check().map_err(|error| {
            let text = error.to_string();
            let reason = text.trim_start_matches("model config: ");
            let field = reason.split(' ').next().unwrap_or("inference");
            bad(format!("inference.{field}"), reason)
        })?;
        for (field, value, range) in [
            ("inference.requests", spec.requests, 0..=1000),
            ("inference.prompt_tokens", spec.prompt_tokens, 1..=4096),
            ("inference.new_tokens", spec.new_tokens, 1..=64),
        ] {
            if let Some(value) = value.filter(|value| !range.contains(value)) {
                let (low, high) = (range.start(), range.end());
                return Err(bad(
                    field,
                    format!("{value} is not between {low} and {high}"),
                ));
            }
        }
        let (_, prompt, new) = spec.request_shape();
        if (prompt + new) as usize > config.max_seq {
            return Err(bad(
                "inference.prompt_tokens",
                format!(
                    "{prompt} prompt + {new} new tokens exceed the model's max_seq ({})",
                    config.max_seq
                ),
            ));
        }
        Ok(())
    }
}

/// A node's `byzantine` table; the field is relative to the node (`byzantine.trigger`).
fn check_byzantine(node: &NodeSpec, byzantine: &Byzantine) -> Result<(), Bad> {
    if !BYZANTINE_BEHAVIOURS.contains(&byzantine.behaviour.as_str()) {
        return Err(bad(
            "byzantine.behaviour",
            format!(
                "{:?} is not one of {}",
                byzantine.behaviour,
                BYZANTINE_BEHAVIOURS.join(", ")
            ),
        ));
    }
    if !TRIGGERS.contains(&byzantine.trigger.as_str()) {
        return Err(bad(
            "byzantine.trigger",
            format!(
                "{:?} is not one of {}",
                byzantine.trigger,
                TRIGGERS.join(", ")
            ),
        ));
    }
    let probability_ok = byzantine
        .probability
        .is_some_and(|p| (0.0..=1.0).contains(&p));
    if byzantine.trigger == "probability" && !probability_ok {
        return Err(bad(
            "byzantine.probability",
            "a probability trigger needs probability between 0 and 1",
        ));
    }
    let range_ok = matches!(
        (byzantine.from_height, byzantine.to_height),
        (Some(a), Some(b)) if a <= b
    );
    if byzantine.trigger == "heights" && byzantine.heights.is_empty() && !range_ok {
        return Err(bad(
            "byzantine.heights",
            "a heights trigger needs heights or from_height <= to_height",
        ));
    }
    if byzantine.trigger == "rounds" && byzantine.rounds.is_empty() {
        return Err(bad("byzantine.rounds", "a rounds trigger needs rounds"));
    }
    if byzantine
        .rate
        .is_some_and(|rate| !(1..=10_000).contains(&rate))
    {
        return Err(bad("byzantine.rate", "must be between 1 and 10000"));
    }
    let fields = blyan_node::config::MUTABLE_BLOCK_FIELDS;
    match (byzantine.behaviour.as_str(), byzantine.field.as_deref()) {
        ("mutate-block", Some(field)) if fields.contains(&field) => {}
        ("mutate-block", field) => {
            let got = field.map_or("none given".to_string(), |field| format!("not {field:?}"));
            return Err(bad(
                "byzantine.field",
                format!(
                    "mutate-block needs field = one of {} ({got})",
                    fields.join(", ")
                ),
            ));
        }
        (_, Some(_)) => {
            return Err(bad("byzantine.field", "only mutate-block takes a field"));
        }
        _ => {}
    }
    if node.role != Role::Validator && byzantine.behaviour != "spam" {
        return Err(bad(
            "byzantine",
            format!(
                "{} acts as a validator; this node is a full node",
                byzantine.behaviour
            ),
        ));
    }
    Ok(())
}
