//! Crafted histories: a clean one passes every check; each fault makes exactly its checker fail
//! with a message naming the height, nodes or hashes.

use super::*;
use crate::history::{Event, InferenceRecord, RunInfo, RunNode, SignatureRecord};
use blyan_node::consensus::types::{Vote, VoteKind};
use ed25519_dalek::{Signer, SigningKey};

const CHAIN: &str = "blyan-test";
const START: u64 = 1_000_000;

fn key(index: usize) -> SigningKey {
    SigningKey::from_bytes(&[index as u8 + 1; 32])
}

fn block_hash(height: u64, fork: u8) -> Hash {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&height.to_be_bytes());
    bytes[31] = fork;
    Hash(bytes)
}

/// Precommits of `signers` for `hash` at `height`, round 0.
fn precommits(height: u64, hash: Hash, signers: &[usize]) -> Vec<SignatureRecord> {
    signers
        .iter()
        .map(|&index| {
            let vote = Vote {
                kind: VoteKind::Precommit,
                height,
                round: 0,
                value: Some(hash),
                validator: index as u32,
            };
            SignatureRecord {
                validator_index: index as u32,
                signature: hex::encode(key(index).sign(&vote.sign_bytes(CHAIN)).to_bytes()),
                validator: String::new(),
                power: 0,
            }
        })
        .collect()
}

fn block(height: u64, hash: Hash, app: &str, signers: &[usize]) -> NodeRecord {
    NodeRecord::Block {
        at_ms: START + height * 1000,
        height,
        hash: hash.to_hex(),
        app_hash: format!("{app}-before"),
        result_app_hash: Some(app.to_string()),
        time_ms: START + height * 1000,
        round: 0,
        signatures: precommits(height, hash, signers),
        total_power: 0,
        txs: 0,
    }
}

fn sample(at_s: u64, height: u64, evidence: u64) -> NodeRecord {
    NodeRecord::Sample {
        at_ms: START + at_s * 1000,
        height: Some(height),
        peers: Some(3),
        evidence: Some(evidence),
    }
}

/// Four equal validators, ten heights, every node samples each second: passes everything.
fn clean() -> History {
    let nodes: Vec<RunNode> = (0..4)
        .map(|i| RunNode {
            name: format!("node{i}"),
            validator_key: hex::encode(key(i).verifying_key().to_bytes()),
            power: 10,
            byzantine: None,
        })
        .collect();
    let mut history = History {
        run: Some(RunInfo {
            name: "t".into(),
            chain_id: CHAIN.into(),
            seed: 1,
            backend: "process".into(),
            git_commit: "abc".into(),
            manifest: String::new(),
            nodes,
            started_ms: START,
            ended_ms: Some(START + 20_000),
            liveness_heights: 3,
            liveness_within_s: 5,
            fault_seed: None,
            time_to_first_block_s: None,
        }),
        ..History::default()
    };
    for i in 0..4 {
        let mut records = Vec::new();
        for h in 1..=10 {
            records.push(block(h, block_hash(h, 0), &format!("app{h}"), &[0, 1, 2]));
            records.push(sample(h, h, 0));
        }
        history.nodes.push((format!("node{i}"), records));
    }
    history
}

fn verdicts(history: &History) -> Vec<(String, Verdict)> {
    run_all(history)
        .into_iter()
        .map(|c| (c.name, c.verdict))
        .collect()
}

fn only_failure(history: &History, name: &str) -> String {
    let checks = run_all(history);
    let failed: Vec<&Check> = checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .collect();
    assert_eq!(failed.len(), 1, "{checks:#?}");
    assert_eq!(failed[0].name, name, "{checks:#?}");
    failed[0].detail.clone()
}

#[test]
fn a_clean_history_passes_every_check() {
    let history = clean();
    for (name, verdict) in verdicts(&history) {
        let expected = if [
            "accountability",
            "inference_determinism",
            "fault_bound",
            "partitions_hold",
            "durability",
        ]
        .contains(&name.as_str())
        {
            Verdict::Skipped
        } else {
            Verdict::Pass
        };
        assert_eq!(verdict, expected, "{name}: {:?}", run_all(&history));
    }
}

#[test]
fn a_fork_names_the_height_the_nodes_and_both_hashes() {
    let mut history = clean();
    let other = block_hash(7, 1);
    history.nodes[3].1[12] = block(7, other, "app7", &[0, 1, 3]);
    let detail = only_failure(&history, "safety");
    assert!(detail.contains("height 7"), "{detail}");
    assert!(detail.contains("node0, node1, node2 committed"), "{detail}");
    assert!(
        detail.contains(&format!("node3 committed {}", &other.to_hex()[..12])),
        "{detail}"
    );
}

#[test]
fn a_fork_by_a_byzantine_node_is_not_a_safety_failure() {
    let mut history = clean();
    history.run.as_mut().unwrap().nodes[3].byzantine = Some("equivocate_votes".into());
    history.nodes[3].1[12] = block(7, block_hash(7, 1), "app7", &[0, 1, 3]);
    let checks = run_all(&history);
    assert_eq!(checks[0].verdict, Verdict::Pass, "{checks:?}");
}

#[test]
fn differing_app_hashes_are_named() {
    let mut history = clean();
    history.nodes[2].1[8] = block(5, block_hash(5, 0), "diverged", &[0, 1, 2]);
    let detail = only_failure(&history, "agreement");
    assert!(
        detail.starts_with("height 5: app hash after executing differs"),
        "{detail}"
    );
    assert!(detail.contains("node2 has diverged"), "{detail}");
}

#[test]
fn two_thirds_or_less_of_the_power_is_invalid() {
    let mut history = clean();
    // Two of four equal validators: exactly half, not more than two thirds.
    for (_, records) in &mut history.nodes {
        records[4] = block(3, block_hash(3, 0), "app3", &[0, 1]);
    }
    let detail = only_failure(&history, "validity");
    assert!(detail.contains("height 3"), "{detail}");
    assert!(
        detail.contains("precommit power 20 of 40 is not more than two thirds"),
        "{detail}"
    );
}

#[test]
fn signatures_are_checked_against_the_set_of_their_height() {
    // A new epoch's set lists the validators in another order and with other powers: the
    // node serves each signer's key and power, and those are what count.
    let mut history = clean();
    for (_, records) in &mut history.nodes {
        if let NodeRecord::Block {
            height,
            hash,
            signatures,
            total_power,
            ..
        } = &mut records[4]
        {
            let hash = Hash::from_hex(hash).unwrap();
            *total_power = 100;
            *signatures = [3usize, 2, 1, 0]
                .iter()
                .enumerate()
                .map(|(position, &signer)| {
                    let vote = Vote {
                        kind: VoteKind::Precommit,
                        height: *height,
                        round: 0,
                        value: Some(hash),
                        validator: position as u32,
                    };
                    SignatureRecord {
                        validator_index: position as u32,
                        signature: hex::encode(
                            key(signer).sign(&vote.sign_bytes(CHAIN)).to_bytes(),
                        ),
                        validator: hex::encode(key(signer).verifying_key().as_bytes()),
                        power: 25,
                    }
                })
                .collect();
        }
    }
    let checks = run_all(&history);
    let validity = checks.iter().find(|c| c.name == "validity").unwrap();
    assert_eq!(validity.verdict, Verdict::Pass, "{}", validity.detail);
    // The same signatures with less power than two thirds of the height's set fail.
    for (_, records) in &mut history.nodes {
        if let NodeRecord::Block { total_power, .. } = &mut records[4] {
            *total_power = 160;
        }
    }
    let detail = only_failure(&history, "validity");
    assert!(detail.contains("power 100 of 160"), "{detail}");
}

#[test]
fn a_forged_signature_is_invalid_and_named() {
    let mut history = clean();
    for (_, records) in &mut history.nodes {
        if let NodeRecord::Block { signatures, .. } = &mut records[4] {
            // node2's signature over height 4's block, placed at height 3.
            signatures[2] = precommits(4, block_hash(4, 0), &[2]).remove(0);
        }
    }
    let detail = only_failure(&history, "validity");
    assert!(detail.contains("height 3"), "{detail}");
    assert!(
        detail.contains("invalid precommit signature from node2"),
        "{detail}"
    );
}

#[test]
fn a_node_stalled_after_the_heal_fails_liveness() {
    let mut history = clean();
    history.timeline = vec![
        Event {
            at_ms: START + 2_000,
            kind: "fault_start".into(),
            label: "isolate node1".into(),
            nodes: vec!["node1".into()],
            links: vec![],
        },
        Event {
            at_ms: START + 4_000,
            kind: "fault_end".into(),
            label: "heal".into(),
            nodes: vec![],
            links: vec![],
        },
    ];
    // node1 stays at height 4 after the heal.
    history.nodes[1].1.retain(|record| match record {
        NodeRecord::Block { height, .. } => *height <= 4,
        NodeRecord::Sample { .. }
        | NodeRecord::Decision { .. }
        | NodeRecord::Stake { .. }
        | NodeRecord::Restarted { .. } => true,
    });
    for record in &mut history.nodes[1].1 {
        if let NodeRecord::Sample { height, .. } = record {
            *height = Some(height.unwrap().min(4));
        }
    }
    let detail = only_failure(&history, "liveness");
    assert!(
        detail.starts_with("node1 at height 4 when the last fault healed (t=4.0 s) reached only 4 by t=9.0 s; needed 7 within 5 s"),
        "{detail}"
    );
}

#[test]
fn an_equivocation_without_evidence_fails_accountability() {
    let mut history = clean();
    history.run.as_mut().unwrap().nodes[2].byzantine = Some("equivocate_votes".into());
    let detail = only_failure(&history, "accountability");
    assert_eq!(
        detail,
        "node2 equivocated but no honest node recorded evidence"
    );
    // With evidence seen by an honest node, it passes.
    history.nodes[0].1.push(sample(11, 10, 1));
    let checks = run_all(&history);
    assert!(
        checks.iter().all(|c| c.verdict != Verdict::Fail),
        "{checks:?}"
    );
    // Once the chain has a staking view, the equivocator must be slashed and tombstoned in it.
    let node2_key = history.run.as_ref().unwrap().nodes[2].validator_key.clone();
    let view = |tombstoned: bool, slashed: u64| NodeRecord::Stake {
        at_ms: START + 12_000,
        height: 10,
        validators: vec![crate::history::StakeRecord {
            public_key: node2_key.clone(),
            tokens: 10 - slashed,
            power: 0,
            jailed: tombstoned,
            tombstoned,
            slashed,
        }],
    };
    history.nodes[1].1.push(view(false, 0));
    let detail = only_failure(&history, "accountability");
    assert_eq!(
        detail,
        "evidence recorded by node0 but not slashed on chain by height 10: node2 (tombstoned false, slashed 0, power 0)"
    );
    history.nodes[1].1.pop();
    history.nodes[1].1.push(view(true, 1));
    let accountability = run_all(&history)
        .into_iter()
        .find(|c| c.name == "accountability")
        .unwrap();
    assert_eq!(accountability.verdict, Verdict::Pass);
    assert!(
        accountability
            .detail
            .contains("node2 (1 burned, tombstoned)"),
        "{}",
        accountability.detail
    );
}

#[test]
fn a_history_round_trips_through_its_files_and_a_torn_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let history = clean();
    history.save(dir.path()).unwrap();
    let loaded = History::load(dir.path()).unwrap();
    assert_eq!(loaded, history);
    let path = dir.path().join("nodes").join("node0.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"kind\":\"sample\",\"at_");
    std::fs::write(&path, text).unwrap();
    let loaded = History::load(dir.path()).unwrap();
    assert_eq!(loaded.nodes, history.nodes);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(verdicts(&loaded), verdicts(&history));
}

#[test]
fn byzantine_power_beyond_a_third_fails_the_run() {
    let mut history = clean();
    let run = history.run.as_mut().unwrap();
    run.nodes[3].byzantine = Some("equivocate".into());
    let checks = run_all(&history);
    let bound = checks.iter().find(|c| c.name == "fault_bound").unwrap();
    assert_eq!(
        bound.verdict,
        Verdict::Pass,
        "one of four is within f: {}",
        bound.detail
    );
    let run = history.run.as_mut().unwrap();
    run.nodes[2].byzantine = Some("equivocate".into());
    let checks = run_all(&history);
    let bound = checks.iter().find(|c| c.name == "fault_bound").unwrap();
    assert_eq!(bound.verdict, Verdict::Fail);
    assert!(
        bound.detail.contains("node2, node3 hold 20 of 40 power"),
        "{}",
        bound.detail
    );
}

fn inference(node: usize, request: u32, output: Option<&str>) -> InferenceRecord {
    InferenceRecord {
        at_ms: START + u64::from(request) * 1000,
        node: format!("node{node}"),
        request,
        prompt: vec![request, 1, 2],
        max_new_tokens: 4,
        tokens: output.map_or(Vec::new(), |_| vec![7, 8, 9, 10]),
        output_hash: output.map(str::to_string),
        error: output.is_none().then(|| "connection refused".to_string()),
    }
}

/// Three seeded requests to four nodes, every answer the same (node3 unreachable for one).
fn with_inference() -> History {
    let mut history = clean();
    for request in 0..3 {
        for node in 0..4 {
            let answered = !(node == 3 && request == 1);
            let hash = format!("{:02x}", request + 0xa0).repeat(32);
            history
                .inference
                .push(inference(node, request, answered.then_some(hash.as_str())));
        }
    }
    history
}

#[test]
fn identical_inference_outputs_pass_with_the_number_of_requests_compared() {
    let history = with_inference();
    let check = inference_determinism(&history);
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert!(
        check
            .detail
            .starts_with("3 requests compared across 4 honest nodes"),
        "{}",
        check.detail
    );
    assert!(check.detail.contains("1 without one"), "{}", check.detail);
    assert!(
        check.detail.contains("node3 on request 1"),
        "{}",
        check.detail
    );
}

#[test]
fn one_differing_inference_output_fails_naming_the_node_and_the_request() {
    let mut history = with_inference();
    let victim = history
        .inference
        .iter_mut()
        .find(|r| r.node == "node2" && r.request == 2)
        .unwrap();
    victim.output_hash = Some("ff".repeat(32));
    let detail = only_failure(&history, "inference_determinism");
    assert!(detail.contains("request 2:"), "{detail}");
    assert!(detail.contains("node2 ffffffffffff"), "{detail}");
    assert!(detail.contains("node0 a2a2a2a2a2a2"), "{detail}");
    assert!(!detail.contains("request 0"), "{detail}");
}

#[test]
fn a_byzantine_node_s_inference_output_is_not_judged() {
    let mut history = with_inference();
    history.run.as_mut().unwrap().nodes[2].byzantine = Some("equivocate".into());
    for record in history.inference.iter_mut().filter(|r| r.node == "node2") {
        record.output_hash = Some("ff".repeat(32));
    }
    let check = inference_determinism(&history);
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert!(
        check.detail.contains("across 3 honest nodes"),
        "{}",
        check.detail
    );
}

#[test]
fn inference_that_no_two_nodes_answered_fails() {
    let mut history = with_inference();
    for record in history.inference.iter_mut().filter(|r| r.node != "node0") {
        record.output_hash = None;
        record.error = Some("503 weights unavailable".into());
    }
    let detail = only_failure(&history, "inference_determinism");
    assert!(
        detail.contains("no request was answered by two honest nodes"),
        "{detail}"
    );
    assert!(detail.contains("503 weights unavailable"), "{detail}");
}

#[test]
fn inference_records_round_trip_through_the_run_directory() {
    let history = with_inference();
    let dir = tempfile::tempdir().unwrap();
    history.save(dir.path()).unwrap();
    let loaded = History::load(dir.path()).unwrap();
    assert_eq!(loaded.inference, history.inference);
}

fn event(at_s: f64, kind: &str, nodes: &[&str], links: &[(usize, usize)]) -> Event {
    Event {
        at_ms: START + (at_s * 1000.0) as u64,
        kind: kind.into(),
        label: "partition".into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        links: links
            .iter()
            .map(|(a, b)| [format!("node{a}"), format!("node{b}")])
            .collect(),
    }
}

/// Every directed link between `left` and the other nodes of four.
fn apart(left: &[usize]) -> Vec<(usize, usize)> {
    (0..4)
        .flat_map(|a| (0..4).map(move |b| (a, b)))
        .filter(|(a, b)| left.contains(a) != left.contains(b))
        .collect()
}

#[test]
fn a_partition_without_a_quorum_side_fails_when_a_block_is_proposed_and_decided_inside_it() {
    // Blocks come every second (time and first seen at START + h s).
    let mut history = clean();
    history.timeline = vec![
        event(4.5, "cut_in_force", &[], &apart(&[0, 1])),
        event(7.5, "cut_undo", &[], &[]),
    ];
    let detail = only_failure(&history, "partitions_hold");
    assert!(
        detail.contains("height(s) {5, 6, 7}") && detail.contains("t=4.5-7.5 s"),
        "{detail}"
    );
    // The same cut after the last block held.
    history.timeline = vec![
        event(10.5, "cut_in_force", &[], &apart(&[0, 1])),
        event(14.0, "cut_undo", &[], &[]),
    ];
    let check = partitions_hold(&history);
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert!(
        check.detail.contains("1 left no side a quorum"),
        "{check:?}"
    );
}

#[test]
fn a_side_with_a_quorum_may_commit_inside_its_cut() {
    let mut history = clean();
    history.timeline = vec![
        event(4.5, "cut_in_force", &[], &apart(&[3])),
        event(7.5, "cut_undo", &[], &[]),
    ];
    let check = partitions_hold(&history);
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert!(
        check.detail.contains("0 left no side a quorum"),
        "{check:?}"
    );
}

#[test]
fn a_connection_across_a_cut_fails_naming_both_nodes() {
    let mut history = clean();
    history.timeline = vec![
        event(10.5, "cut_in_force", &[], &apart(&[0, 1])),
        event(13.9, "cut_crossing", &["node0", "node2"], &[]),
        event(14.0, "cut_undo", &[], &[]),
    ];
    let detail = only_failure(&history, "partitions_hold");
    assert!(
        detail.contains("node0 held a connection to node2 across 'partition'"),
        "{detail}"
    );
}

#[test]
fn a_block_dated_past_the_bound_or_before_its_parent_fails_block_times() {
    let bound = blyan_node::app::MAX_BLOCK_TIME_AHEAD_MS;
    let mut ahead = clean();
    for (_, records) in ahead.nodes.iter_mut() {
        for record in records.iter_mut() {
            if let NodeRecord::Block {
                height: 4, time_ms, ..
            } = record
            {
                *time_ms += bound + 1;
            }
        }
    }
    let detail = only_failure(&ahead, "block_times");
    assert!(detail.contains("height 4 is dated"), "{detail}");
    let mut backwards = clean();
    for (_, records) in backwards.nodes.iter_mut() {
        for record in records.iter_mut() {
            if let NodeRecord::Block {
                height: 6, time_ms, ..
            } = record
            {
                *time_ms -= 1_500;
            }
        }
    }
    let detail = only_failure(&backwards, "block_times");
    assert!(detail.contains("height 6"), "{detail}");
}

#[test]
fn a_restart_below_the_acknowledged_height_fails_durability_naming_the_node() {
    let restarted = |acknowledged, stored| NodeRecord::Restarted {
        at_ms: 20_000,
        acknowledged,
        stored,
    };
    let mut kept = clean();
    kept.nodes[3].1.push(restarted(7, Some(7)));
    kept.nodes[3].1.push(restarted(9, Some(10)));
    let durability = run_all(&kept)
        .into_iter()
        .find(|c| c.name == "durability")
        .unwrap();
    assert_eq!(durability.verdict, Verdict::Pass, "{durability:?}");
    assert!(
        durability.detail.starts_with("2 power loss(es)"),
        "{durability:?}"
    );
    let mut lost = clean();
    lost.nodes[3].1.push(restarted(9, Some(7)));
    let detail = only_failure(&lost, "durability");
    assert!(
        detail
            .contains("node3 had acknowledged height 9 and started again from 7: 2 block(s) lost"),
        "{detail}"
    );
    let mut silent = clean();
    silent.nodes[2].1.push(restarted(9, None));
    let detail = only_failure(&silent, "durability");
    assert!(
        detail.contains("node2") && detail.contains("did not answer"),
        "{detail}"
    );
}
