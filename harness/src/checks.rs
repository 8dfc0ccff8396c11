//! Checkers: pure functions over a recorded [`History`], each giving a verdict and a detail
//! precise enough to act on (the height, the nodes, the hashes).

use std::collections::{BTreeMap, HashMap, HashSet};

use blyan_node::block::Hash;
use blyan_node::consensus::types::{verify_votes_batch, SignedVote};
use blyan_node::wire::Commit;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::history::{History, NodeRecord, RunInfo, RunNode, SignatureRecord, StakeRecord};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Nothing to check in this run (said why in the detail).
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

fn check(name: &str, verdict: Verdict, detail: String) -> Check {
    Check {
        name: name.into(),
        verdict,
        detail,
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Every check, in a fixed order.
pub fn run_all(history: &History) -> Vec<Check> {
    vec![
        safety(history),
        agreement(history),
        validity(history),
        liveness(history),
        accountability(history),
        fault_bound(history),
        partitions::partitions_hold(history),
        block_times(history),
        durability(history),
        inference_determinism(history),
    ]
}

/// After every power loss (`disk` `power_loss`), the node's database held every block the node
/// had acknowledged before it: the height it started again from is at least its last
/// `/status` height before the fault.
pub fn durability(history: &History) -> Check {
    const NAME: &str = "durability";
    let mut losses = 0usize;
    let mut failures = Vec::new();
    for (name, records) in &history.nodes {
        for record in records {
            if let NodeRecord::Restarted {
                acknowledged,
                stored,
                ..
            } = record
            {
                losses += 1;
                match stored {
                    Some(stored) if stored >= acknowledged => {}
                    Some(stored) => failures.push(format!(
                        "{name} had acknowledged height {acknowledged} and started again from {stored}: {} block(s) lost",
                        acknowledged - stored
                    )),
                    None => failures.push(format!(
                        "{name} had acknowledged height {acknowledged} and did not answer within 15 s of its restart"
                    )),
                }
            }
        }
    }
    if losses == 0 {
        return check(NAME, Verdict::Skipped, "no power loss in this run".into());
    }
    if let Some(first) = failures.first() {
        return check(
            NAME,
            Verdict::Fail,
            format!(
                "{} of {losses} power loss(es) lost blocks; first: {first}",
                failures.len()
            ),
        );
    }
    check(
        NAME,
        Verdict::Pass,
        format!("{losses} power loss(es): every acknowledged block was in the database on restart"),
    )
}

/// Block time holds its rules on the committed chain: each block after its parent, and none
/// dated more than `MAX_BLOCK_TIME_AHEAD_MS` after the moment an honest node was first seen to
/// hold it (the recorder's clock; on one host the nodes' clock too), so no proposer pushed
/// block time into the future (`docs/CONSENSUS.md`, "Block time").
pub fn block_times(history: &History) -> Check {
    let bound = blyan_node::app::MAX_BLOCK_TIME_AHEAD_MS;
    let mut blocks: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (_, records) in history
        .nodes
        .iter()
        .filter(|(name, _)| history.honest(name))
    {
        for record in records {
            if let NodeRecord::Block {
                at_ms,
                height,
                time_ms,
                ..
            } = record
            {
                let entry = blocks.entry(*height).or_insert((*time_ms, *at_ms));
                entry.1 = entry.1.min(*at_ms);
            }
        }
    }
    let mut parent: Option<(u64, u64)> = None;
    for (&height, &(time_ms, seen_ms)) in &blocks {
        if time_ms > seen_ms + bound {
            let ahead = time_ms - seen_ms;
            let detail = format!(
                "height {height} is dated {ahead} ms after it was first seen committed (bound {bound} ms)"
            );
            return check("block_times", Verdict::Fail, detail);
        }
        if let Some((h, t)) = parent.filter(|&(h, t)| h + 1 == height && time_ms <= t) {
            let detail = format!("height {height} ({time_ms}) is not after height {h} ({t})");
            return check("block_times", Verdict::Fail, detail);
        }
        parent = Some((height, time_ms));
    }
    if blocks.is_empty() {
        return check(
            "block_times",
            Verdict::Skipped,
            "no committed block recorded".into(),
        );
    }
    check(
        "block_times",
        Verdict::Pass,
        format!(
            "{} blocks, each after its parent and at most {bound} ms ahead of when it was seen",
            blocks.len()
        ),
    )
}

/// The run stayed within what BFT consensus promises to survive: Byzantine validators (their
/// own behaviour, twins and the validators twins copy) hold less than a third of the genesis
/// power. Beyond that the other checks passing proves nothing, so the run fails, saying why.
pub fn fault_bound(history: &History) -> Check {
    let Some(run) = &history.run else {
        return check("fault_bound", Verdict::Fail, "no run.json".into());
    };
    let total: u64 = run.nodes.iter().map(|node| node.power).sum();
    let byzantine: Vec<&RunNode> = run
        .nodes
        .iter()
        .filter(|node| node.byzantine.is_some() && node.power > 0)
        .collect();
    if run.nodes.iter().all(|node| node.byzantine.is_none()) {
        return check(
            "fault_bound",
            Verdict::Skipped,
            "no Byzantine node in this run".into(),
        );
    }
    let power: u64 = byzantine.iter().map(|node| node.power).sum();
    let names: Vec<&str> = byzantine.iter().map(|node| node.name.as_str()).collect();
    if 3 * power >= total {
        check(
            "fault_bound",
            Verdict::Fail,
            format!(
                "Byzantine validators {} hold {power} of {total} power (at least a third): beyond \
                 what BFT consensus tolerates, so the other verdicts prove nothing",
                names.join(", ")
            ),
        )
    } else {
        check(
            "fault_bound",
            Verdict::Pass,
            format!(
                "Byzantine validators {} hold {power} of {total} power (less than a third)",
                if names.is_empty() {
                    "-".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    }
}

/// Blocks each honest node committed: (node, height, hash, result app hash, header app hash).
fn honest_blocks(history: &History) -> Vec<(&str, u64, &str, Option<&str>, &str)> {
    history
        .nodes
        .iter()
        .filter(|(name, _)| history.honest(name))
        .flat_map(|(name, records)| {
            records.iter().filter_map(move |record| match record {
                NodeRecord::Block {
                    height,
                    hash,
                    result_app_hash,
                    app_hash,
                    ..
                } => Some((
                    name.as_str(),
                    *height,
                    hash.as_str(),
                    result_app_hash.as_deref(),
                    app_hash.as_str(),
                )),
                _ => None,
            })
        })
        .collect()
}

/// Groups `(height, value, node)` into height -> value -> nodes.
fn by_height<'a>(
    items: impl Iterator<Item = (u64, &'a str, &'a str)>,
) -> BTreeMap<u64, BTreeMap<&'a str, Vec<&'a str>>> {
    let mut out: BTreeMap<u64, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for (height, value, node) in items {
        let nodes = out.entry(height).or_default().entry(value).or_default();
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    out
}

fn describe(values: &BTreeMap<&str, Vec<&str>>) -> String {
    values
        .iter()
        .map(|(value, nodes)| format!("{} committed {}", nodes.join(", "), short(value)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Safety: no two different blocks committed at one height by honest nodes.
pub fn safety(history: &History) -> Check {
    let blocks = honest_blocks(history);
    if blocks.is_empty() {
        return check(
            "safety",
            Verdict::Fail,
            "no honest node recorded a block".into(),
        );
    }
    let grouped = by_height(
        blocks
            .iter()
            .map(|(node, h, hash, _, _)| (*h, *hash, *node)),
    );
    let forks: Vec<String> = grouped
        .iter()
        .filter(|(_, values)| values.len() > 1)
        .map(|(height, values)| format!("height {height}: {}", describe(values)))
        .collect();
    if forks.is_empty() {
        check(
            "safety",
            Verdict::Pass,
            format!(
                "{} heights, every honest node committed the same block at each",
                grouped.len()
            ),
        )
    } else {
        check(
            "safety",
            Verdict::Fail,
            format!("{} forked heights; first: {}", forks.len(), forks[0]),
        )
    }
}

/// Agreement: identical app hashes (header and after execution) at every height.
pub fn agreement(history: &History) -> Check {
    let blocks = honest_blocks(history);
    let after = by_height(
        blocks
            .iter()
            .filter_map(|(node, h, _, result, _)| result.map(|r| (*h, r, *node))),
    );
    let header = by_height(blocks.iter().map(|(node, h, _, _, app)| (*h, *app, *node)));
    for (what, grouped) in [("after executing", &after), ("in the header", &header)] {
        if let Some((height, values)) = grouped.iter().find(|(_, values)| values.len() > 1) {
            return check(
                "agreement",
                Verdict::Fail,
                format!(
                    "height {height}: app hash {what} differs: {}",
                    describe(values).replace("committed", "has")
                ),
            );
        }
    }
    if after.is_empty() {
        return check(
            "agreement",
            Verdict::Fail,
            "no app hash recorded by any honest node".into(),
        );
    }
    check(
        "agreement",
        Verdict::Pass,
        format!("{} heights with one app hash each", after.len()),
    )
}

/// A validator of the genesis set: its key, power and name.
type Member<'a> = (VerifyingKey, u64, &'a str);

/// The genesis set from run.json (keys of validators with power), in genesis order.
fn genesis_set(run: &RunInfo) -> Result<Vec<Member<'_>>, String> {
    run.nodes
        .iter()
        .filter(|node| node.power > 0)
        .map(|node| {
            let bytes: [u8; 32] = hex::decode(&node.validator_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{}: validator key is not 32 bytes of hex", node.name))?;
            VerifyingKey::from_bytes(&bytes)
                .map(|key| (key, node.power, node.name.as_str()))
                .map_err(|_| format!("{}: validator key is not a valid point", node.name))
        })
        .collect()
}

/// One recorded precommit's key and weight: the key it names, or (older histories) the
/// genesis set's validator at its index.
fn signer(signature: &SignatureRecord, set: &[Member]) -> Result<(VerifyingKey, u64), String> {
    let index = signature.validator_index;
    if signature.validator.is_empty() {
        return set
            .get(index as usize)
            .map(|(key, weight, _)| (*key, *weight))
            .ok_or_else(|| format!("precommit from validator {index}, not in the set"));
    }
    hex::decode(&signature.validator)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .map(|key| (key, signature.power))
        .ok_or_else(|| format!("validator {index}'s key is not a valid key"))
}

/// One committed block's precommits: each signer once, more than 2/3 of the power, every
/// signature valid (checked in one batch, then one by one to name the bad ones).
fn check_commit(
    chain_id: &str,
    (height, hash, round): (u64, &str, u32),
    signatures: &[SignatureRecord],
    (set, total): (&[Member], u64),
) -> Result<(), String> {
    let block_hash =
        Hash::from_hex(hash).map_err(|_| "the block hash is not 32 bytes of hex".to_string())?;
    let mut power = 0;
    let mut indices = HashSet::new();
    let mut parsed = Vec::with_capacity(signatures.len());
    for signature in signatures {
        let index = signature.validator_index;
        let (key, weight) = signer(signature, set)?;
        if !indices.insert(index) {
            return Err(format!("validator {index} signed twice"));
        }
        let Some(bytes) = hex::decode(&signature.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return Err(format!("validator {index}'s signature is not 64 bytes"));
        };
        parsed.push((index, Signature::from_bytes(&bytes), key));
        power += weight;
    }
    if 3 * power <= 2 * total {
        return Err(format!(
            "precommit power {power} of {total} is not more than two thirds ({} signatures)",
            signatures.len()
        ));
    }
    let commit = Commit {
        round,
        signatures: parsed.iter().map(|(i, s, _)| (*i, *s)).collect(),
    };
    let votes: Vec<(SignedVote, VerifyingKey)> = commit
        .votes(height, block_hash)
        .into_iter()
        .zip(parsed.iter().map(|(_, _, key)| *key))
        .collect();
    if verify_votes_batch(chain_id, &votes) {
        return Ok(());
    }
    let bad: Vec<String> = votes
        .iter()
        .filter(|(vote, key)| !vote.verify(chain_id, key))
        .map(|(_, key)| {
            set.iter().find(|(known, _, _)| known == key).map_or_else(
                || hex::encode(key.as_bytes()),
                |(_, _, name)| name.to_string(),
            )
        })
        .collect();
    Err(format!(
        "invalid precommit signature from {}",
        bad.join(", ")
    ))
}

/// Validity: each committed block carries precommits of more than 2/3 of the voting power,
/// from validators of the set, each once, with valid signatures.
pub fn validity(history: &History) -> Check {
    let Some(run) = &history.run else {
        return check("validity", Verdict::Fail, "no run.json".into());
    };
    // Each signature names its signer's key and power in the set of its height (sets change by
    // epoch); histories without them fall back to the genesis set in genesis order.
    let set = match genesis_set(run) {
        Ok(set) => set,
        Err(error) => return check("validity", Verdict::Fail, error),
    };
    let genesis_total: u64 = set.iter().map(|(_, power, _)| power).sum();
    let mut seen = HashSet::new();
    let mut checked = 0;
    for (node, records) in &history.nodes {
        if !history.honest(node) {
            continue;
        }
        for record in records {
            let NodeRecord::Block {
                height,
                hash,
                round,
                signatures,
                total_power,
                ..
            } = record
            else {
                continue;
            };
            if !seen.insert((*height, hash.clone())) {
                continue;
            }
            checked += 1;
            let total = if *total_power > 0 {
                *total_power
            } else {
                genesis_total
            };
            let block = (*height, hash.as_str(), *round);
            if let Err(reason) = check_commit(&run.chain_id, block, signatures, (&set, total)) {
                let detail = format!("height {height} ({}) on {node}: {reason}", short(hash));
                return check("validity", Verdict::Fail, detail);
            }
        }
    }
    if checked == 0 {
        return check(
            "validity",
            Verdict::Fail,
            "no committed block recorded".into(),
        );
    }
    check(
        "validity",
        Verdict::Pass,
        format!(
            "{checked} blocks, each with valid precommits of more than 2/3 of {genesis_total} power"
        ),
    )
}

/// (time, height) of a node's answered polls, in order.
fn heights(records: &[NodeRecord]) -> Vec<(u64, u64)> {
    records
        .iter()
        .filter_map(|record| match record {
            NodeRecord::Sample {
                at_ms,
                height: Some(height),
                ..
            } => Some((*at_ms, *height)),
            NodeRecord::Block { at_ms, height, .. } => Some((*at_ms, *height)),
            _ => None,
        })
        .collect()
}

/// Liveness: after the last fault heals (or from the start when there was none), every honest
/// node gains `liveness_heights` heights within `liveness_within_s` seconds.
pub fn liveness(history: &History) -> Check {
    let Some(run) = &history.run else {
        return check("liveness", Verdict::Fail, "no run.json".into());
    };
    let healed = history
        .timeline
        .iter()
        .filter(|event| event.kind == "fault_end")
        .map(|event| event.at_ms)
        .max();
    let from = healed.unwrap_or(run.started_ms);
    let deadline = from + run.liveness_within_s * 1000;
    let since = |at: u64| (at as f64 - run.started_ms as f64) / 1000.0;
    let mut stalled = Vec::new();
    for (name, records) in &history.nodes {
        if !history.honest(name) {
            continue;
        }
        let points = heights(records);
        let start = points
            .iter()
            .filter(|(at, _)| *at <= from)
            .map(|(_, h)| *h)
            .max()
            .unwrap_or(0);
        let reached = points
            .iter()
            .filter(|(at, _)| *at <= deadline)
            .map(|(_, h)| *h)
            .max()
            .unwrap_or(0);
        if reached < start + run.liveness_heights {
            let last = points.last().map_or(0, |(at, _)| *at);
            let note = if last < deadline {
                format!(" (recorded only until t={:.1} s)", since(last))
            } else {
                String::new()
            };
            stalled.push(format!(
                "{name} at height {start} when {} (t={:.1} s) reached only {reached} by t={:.1} s; needed {} within {} s{note}",
                if healed.is_some() { "the last fault healed" } else { "the run started" },
                since(from),
                since(deadline),
                start + run.liveness_heights,
                run.liveness_within_s
            ));
        }
    }
    if stalled.is_empty() {
        check(
            "liveness",
            Verdict::Pass,
            format!(
                "every honest node gained {} heights within {} s of {}",
                run.liveness_heights,
                run.liveness_within_s,
                if healed.is_some() {
                    format!("the last heal (t={:.1} s)", since(from))
                } else {
                    "the start".into()
                }
            ),
        )
    } else {
        check("liveness", Verdict::Fail, stalled.join("; "))
    }
}

/// The honest nodes whose evidence count rose (or started above 0) during the run.
fn evidence_observers(history: &History) -> Vec<&str> {
    let mut observers = Vec::new();
    for (name, records) in &history.nodes {
        if !history.honest(name) {
            continue;
        }
        let counts: Vec<u64> = records
            .iter()
            .filter_map(|record| match record {
                NodeRecord::Sample {
                    evidence: Some(count),
                    ..
                } => Some(*count),
                _ => None,
            })
            .collect();
        if counts.iter().max() > counts.first() || counts.first().is_some_and(|c| *c > 0) {
            observers.push(name.as_str());
        }
    }
    observers
}

/// The chain's verdict: the last staking view any honest node gave (height, validators).
fn last_stake(history: &History) -> Option<(u64, &Vec<StakeRecord>)> {
    history
        .nodes
        .iter()
        .filter(|(name, _)| history.honest(name))
        .filter_map(|(_, records)| {
            records.iter().rev().find_map(|record| match record {
                NodeRecord::Stake {
                    height, validators, ..
                } => Some((*height, validators)),
                _ => None,
            })
        })
        .max_by_key(|(height, _)| *height)
}

/// Each equivocator as punished (tombstoned) or not in the staking view.
fn punishments(
    history: &History,
    equivocators: &[&str],
    validators: &[StakeRecord],
) -> (Vec<String>, Vec<String>) {
    let mut punished = Vec::new();
    let mut unpunished = Vec::new();
    for name in equivocators {
        let key = history.node(name).map(|node| node.validator_key.as_str());
        if key.is_none_or(str::is_empty) {
            // A twin: it signs with the key of the validator it copies, checked under that name.
            continue;
        }
        match validators
            .iter()
            .find(|v| Some(v.public_key.as_str()) == key)
        {
            // Tombstoned is the double-sign verdict; the burn may round to 0 on a tiny stake.
            Some(v) if v.tombstoned => {
                punished.push(format!("{name} ({} burned, tombstoned)", v.slashed))
            }
            Some(v) => unpunished.push(format!(
                "{name} (tombstoned {}, slashed {}, power {})",
                v.tombstoned, v.slashed, v.power
            )),
            None => unpunished.push(format!("{name} (not in the staking view)")),
        }
    }
    (punished, unpunished)
}

/// Accountability: an equivocating node (Byzantine setting or twins) is seen: honest nodes
/// record evidence of it. Slashing follows once the chain has stake (issue 5).
pub fn accountability(history: &History) -> Check {
    let Some(run) = &history.run else {
        return check("accountability", Verdict::Fail, "no run.json".into());
    };
    let equivocators: Vec<&str> = run
        .nodes
        .iter()
        .filter(|node| {
            node.byzantine
                .as_deref()
                // Conflicting votes are evidence; conflicting proposals are not (yet).
                .is_some_and(|b| ["equivocate", "equivocate_votes", "twin"].contains(&b))
        })
        .map(|node| node.name.as_str())
        .collect();
    if equivocators.is_empty() {
        return check(
            "accountability",
            Verdict::Skipped,
            "no equivocating node in this run".into(),
        );
    }
    let observers = evidence_observers(history);
    if observers.is_empty() {
        return check(
            "accountability",
            Verdict::Fail,
            format!(
                "{} equivocated but no honest node recorded evidence",
                equivocators.join(", ")
            ),
        );
    }
    let stake = last_stake(history);
    let Some((height, validators)) = stake else {
        return check(
            "accountability",
            Verdict::Pass,
            format!(
                "{} equivocated; evidence recorded by {} (no staking view recorded: slashing not checked)",
                equivocators.join(", "),
                observers.join(", ")
            ),
        );
    };
    let (punished, unpunished) = punishments(history, &equivocators, validators);
    if unpunished.is_empty() {
        check(
            "accountability",
            Verdict::Pass,
            format!(
                "evidence recorded by {}; slashed on chain by height {height}: {}",
                observers.join(", "),
                punished.join(", ")
            ),
        )
    } else {
        check(
            "accountability",
            Verdict::Fail,
            format!(
                "evidence recorded by {} but not slashed on chain by height {height}: {}",
                observers.join(", "),
                unpunished.join(", ")
            ),
        )
    }
}

/// Inference determinism: every honest node that answered one of the run's seeded requests
/// gave the same output, bit for bit (the nodes' output hashes cover the generated tokens and
/// the last step's logits). A request only some nodes answered (a fault cut the others off) is
/// compared among those that did.
pub fn inference_determinism(history: &History) -> Check {
    const NAME: &str = "inference_determinism";
    if history.inference.is_empty() {
        return check(
            NAME,
            Verdict::Skipped,
            "no inference requests in this run (the manifest has no [inference])".into(),
        );
    }
    let mut answers: BTreeMap<u32, Vec<(&str, &str)>> = BTreeMap::new();
    let mut errors = 0usize;
    let mut first_error = None;
    let mut honest_nodes: HashSet<&str> = HashSet::new();
    for record in history.inference.iter().filter(|r| history.honest(&r.node)) {
        honest_nodes.insert(&record.node);
        match (&record.output_hash, &record.error) {
            (Some(hash), _) => answers
                .entry(record.request)
                .or_default()
                .push((&record.node, hash)),
            (None, error) => {
                errors += 1;
                first_error.get_or_insert_with(|| {
                    format!(
                        "{} on request {}: {}",
                        record.node,
                        record.request,
                        error.as_deref().unwrap_or("no answer")
                    )
                });
            }
        }
    }
    let mut differing = Vec::new();
    let mut compared = 0usize;
    for (request, given) in &answers {
        if given.len() < 2 {
            continue;
        }
        compared += 1;
        let (_, reference) = given[0];
        if given.iter().any(|(_, hash)| hash != &reference) {
            let shown: Vec<String> = given
                .iter()
                .map(|(node, hash)| format!("{node} {}", short(hash)))
                .collect();
            differing.push(format!("request {request}: {}", shown.join(", ")));
        }
    }
    let answered: usize = answers.values().map(Vec::len).sum();
    let errors_text = first_error.map_or(String::new(), |first| format!("; first: {first}"));
    if !differing.is_empty() {
        return check(
            NAME,
            Verdict::Fail,
            format!("outputs differ: {}", differing.join("; ")),
        );
    }
    if compared == 0 {
        let verdict = if honest_nodes.len() < 2 {
            Verdict::Skipped
        } else {
            Verdict::Fail
        };
        return check(
            NAME,
            verdict,
            format!(
                "no request was answered by two honest nodes ({answered} answers, {errors} \
                 without one{errors_text})"
            ),
        );
    }
    check(
        NAME,
        Verdict::Pass,
        format!(
            "{compared} requests compared across {} honest nodes: outputs bit-identical \
             ({answered} answers, {errors} without one{errors_text})",
            honest_nodes.len()
        ),
    )
}

/// Heights per node over time, for plots: node -> [(seconds since start, height)].
pub fn height_series(history: &History) -> Vec<(String, Vec<(f64, f64)>)> {
    let start = history.run.as_ref().map_or(0, |run| run.started_ms);
    history
        .nodes
        .iter()
        .map(|(name, records)| {
            let points = heights(records)
                .into_iter()
                .map(|(at, h)| ((at as f64 - start as f64) / 1000.0, h as f64))
                .collect();
            (name.clone(), points)
        })
        .collect()
}

/// Commit latency (ms) of each node's own decisions over time: node -> [(seconds, ms)].
pub fn commit_latency_series(history: &History) -> Vec<(String, Vec<(f64, f64)>)> {
    let start = history.run.as_ref().map_or(0, |run| run.started_ms);
    history
        .nodes
        .iter()
        .map(|(name, records)| {
            let points = records
                .iter()
                .filter_map(|record| match record {
                    NodeRecord::Decision {
                        at_ms, latency_ms, ..
                    } => Some(((*at_ms as f64 - start as f64) / 1000.0, *latency_ms)),
                    _ => None,
                })
                .collect();
            (name.clone(), points)
        })
        .collect()
}

/// Block interval (ms) over time, from the first honest node's blocks: [(seconds, interval)].
pub fn block_intervals(history: &History) -> Vec<(f64, f64)> {
    let start = history.run.as_ref().map_or(0, |run| run.started_ms);
    let mut times: HashMap<u64, u64> = HashMap::new();
    for (name, records) in &history.nodes {
        if !history.honest(name) {
            continue;
        }
        for record in records {
            if let NodeRecord::Block {
                height, time_ms, ..
            } = record
            {
                times.entry(*height).or_insert(*time_ms);
            }
        }
    }
    let mut ordered: Vec<(u64, u64)> = times.into_iter().collect();
    ordered.sort();
    ordered
        .windows(2)
        .filter(|pair| pair[1].0 == pair[0].0 + 1)
        .map(|pair| {
            (
                (pair[1].1 as f64 - start as f64) / 1000.0,
                pair[1].1.saturating_sub(pair[0].1) as f64,
            )
        })
        .collect()
}

mod partitions;
pub use partitions::partitions_hold;

#[cfg(test)]
mod tests;
