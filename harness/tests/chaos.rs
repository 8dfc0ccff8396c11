//! Chaos on real node processes: `devnet run` with every P2P link through `blyan-chaos-proxy`,
//! each fault kind's effect measured from `timeline.json` (not trusted from the proxy's API),
//! Byzantine validators and twins, and a seeded random schedule replayed.
//!
//! Needs the workspace binaries: `cargo build --workspace --bins` (CI does).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use blyan_harness::timeline::{self, Entry};

/// Runs `devnet run MANIFEST` in `dir`; returns whether it passed and what it printed.
fn devnet_run(dir: &Path, manifest: &str, salt: u16, extra: &[&str]) -> (bool, String, PathBuf) {
    let path = dir.join("manifest.toml");
    std::fs::write(&path, manifest).unwrap();
    let out = dir.join("run");
    let (api, p2p) = common::free_port_bases(4, salt);
    let output = Command::new(env!("CARGO_BIN_EXE_devnet"))
        .arg("run")
        .arg(&path)
        .args(["--backend", "process", "--poll-ms", "200"])
        .arg("--out")
        .arg(&out)
        .arg("--base")
        .arg(dir.join("devnets"))
        .args(["--api-port-base", &api.to_string()])
        .args(["--p2p-port-base", &p2p.to_string()])
        .args(extra)
        .env_remove("BLYAN_NODE_BIN")
        .output()
        .expect("devnet runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text, out)
}

fn entry<'a>(entries: &'a [Entry], kind: &str) -> &'a Entry {
    entries
        .iter()
        .find(|entry| entry.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in the timeline: {entries:#?}"))
}

fn top(heights: &[Option<u64>]) -> u64 {
    heights.iter().flatten().max().copied().unwrap_or(0)
}

/// These devnets run one at a time: each keeps both cores of a small CI machine busy, and the
/// assertions are about block rates under faults (three at once once left a paused node's
/// three peers committing 2 blocks in 6.8 s instead of about 12).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn every_fault_kind_has_its_measured_effect() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"
name = "chaos-kinds"
validators = 4
duration_s = 62
[network]
proxy = true
[[faults]]
at_s = 2
kind = "latency"
link = ["node0", "node1"]
latency_ms = 100
jitter_ms = 10
duration_s = 13
[[faults]]
at_s = 18
kind = "partition"
shape = "halves"
duration_s = 6
[[faults]]
at_s = 28
kind = "partition"
shape = "majority"
duration_s = 6
[[faults]]
at_s = 37
kind = "pause"
nodes = ["node2"]
duration_s = 5
[[faults]]
at_s = 46
kind = "kill"
nodes = ["node3"]
duration_s = 6
"#;
    let (passed, text, out) = devnet_run(dir.path(), manifest, 1, &[]);
    assert!(passed, "the run's checks pass:\n{text}");
    // Both partitions held: no node held a connection across either (their /net_info just
    // before each heal), and none was decided inside the halves, which left no quorum.
    let row = text
        .lines()
        .find(|line| line.starts_with("partitions_hold "))
        .unwrap_or("");
    assert!(
        row.contains("pass") && row.contains("2 cut(s)") && row.contains("1 left no side a quorum"),
        "{row}\n{text}"
    );
    let entries = timeline::read(&out).expect("timeline.json");
    assert_eq!(entries.len(), 5, "{entries:#?}");

    // Latency: the nodes' own ping over the link rises by 100 ms (+/- 10 jitter, + noise).
    let latency = entry(&entries, "latency");
    let (before, during) = (
        latency.effect.rtt_before_ms.expect("RTT before"),
        latency.effect.rtt_during_ms.expect("RTT during"),
    );
    // At least latency - jitter during it; a clear rise over the (noisy) sample before.
    assert!(
        during >= 88.0 && during - before >= 60.0 && during - before <= 170.0,
        "RTT {before:.1} ms -> {during:.1} ms under a 100 +/- 10 ms toxic"
    );
    assert!(
        latency.effect.committed_during.unwrap() > 10,
        "{latency:#?}"
    );

    // Halves (2 + 2): nothing commits; blocks resume within seconds of the heal.
    let halves = entry(&entries, "partition-halves");
    assert_eq!(halves.links, 8, "halves of 4 cut 8 directed links");
    assert!(
        halves.effect.committed_during.unwrap() <= 1,
        "no quorum on either side: {halves:#?}"
    );
    let resumed = halves.effect.resumed_after_s.expect("blocks resumed");
    assert!(resumed < 15.0, "resumed {resumed} s after the heal");

    // Majority (3 + 1): the majority keeps committing.
    let majority = entry(&entries, "partition-majority");
    assert!(
        majority.effect.committed_during.unwrap() >= 3,
        "the majority commits: {majority:#?}"
    );

    // A paused node falls behind and catches up; a SIGKILLed one restarts and catches up.
    for (kind, index) in [("pause", 2), ("kill", 3)] {
        let fault = entry(&entries, kind);
        let end = &fault.effect.heights_at_end;
        assert!(
            fault.effect.committed_during.unwrap() >= 3,
            "the others go on: {fault:#?}"
        );
        let behind_at_start = fault.effect.heights_at_start[index].unwrap_or(0);
        assert!(
            behind_at_start + 2 <= top(end),
            "{kind}: node{index} fell behind (it was at {behind_at_start}, the others reached {})",
            top(end)
        );
        let caught_up = fault
            .effect
            .caught_up_after_s
            .unwrap_or_else(|| panic!("{kind}: node{index} never caught up: {fault:#?}"));
        assert!(caught_up < 12.0, "{kind}: caught up after {caught_up} s");
    }
}

/// The blocks node `index` committed while `fault` was in force.
fn committed_by(fault: &Entry, index: usize) -> u64 {
    let at = |heights: &[Option<u64>]| heights[index].unwrap_or(0);
    at(&fault.effect.heights_at_end).saturating_sub(at(&fault.effect.heights_at_start))
}

#[test]
fn a_oneway_partition_lets_messages_through_in_one_direction_only() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/oneway.toml"),
    )
    .expect("scenarios/oneway.toml");
    let (passed, text, out) = devnet_run(dir.path(), &manifest, 12, &[]);
    assert!(passed, "the run's checks pass:\n{text}");
    let entries = timeline::read(&out).expect("timeline.json");
    let [heard, deaf] = entries.as_slice() else {
        panic!("two faults in the timeline: {entries:#?}");
    };
    assert!(
        heard.label.contains("node1,node2,node3 -> node0 only") && heard.links == 3,
        "{heard:#?}"
    );
    // node0 hears the three (a quorum) while they do not hear it: it commits with them. An
    // isolated node0 would commit nothing here.
    for index in 0..4 {
        assert!(
            committed_by(heard, index) >= 3,
            "node{index} committed {} blocks while node0 was unheard: {heard:#?}",
            committed_by(heard, index)
        );
    }
    // The reverse: node0 is heard but hears nothing; it stalls while the three go on.
    assert!(
        committed_by(deaf, 0) <= 1,
        "node0 heard no one, yet committed {} blocks: {deaf:#?}",
        committed_by(deaf, 0)
    );
    for index in 1..4 {
        assert!(
            committed_by(deaf, index) >= 3,
            "node{index} committed {} blocks while node0 was deaf: {deaf:#?}",
            committed_by(deaf, index)
        );
    }
}

#[test]
fn message_faults_inside_the_node_stall_or_spare_the_chain_as_their_types_say() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/messages.toml"),
    )
    .expect("scenarios/messages.toml");
    let (passed, text, out) = devnet_run(dir.path(), &manifest, 14, &[]);
    assert!(
        passed,
        "the run's checks pass (safety under duplicates and replays):\n{text}"
    );
    let entries = timeline::read(&out).expect("timeline.json");
    let [votes, txs, noise, deaf] = entries.as_slice() else {
        panic!("four faults in the timeline: {entries:#?}");
    };
    assert!(votes.label.contains("drop=1; vote"), "{votes:#?}");
    // Two of four validators send no vote: no quorum, nothing commits.
    assert!(
        votes.effect.committed_during.unwrap() <= 1,
        "votes of node2 and node3 dropped, yet: {votes:#?}"
    );
    // The same two dropping only their transactions: consensus does not need them.
    assert!(txs.effect.committed_during.unwrap() >= 5, "{txs:#?}");
    // Every node duplicating, replaying, reordering and delaying: the chain goes on.
    assert!(noise.effect.committed_during.unwrap() >= 5, "{noise:#?}");
    // node0 dropping all it receives from its three peers: it stops, they go on.
    let gained = |i: usize| match (
        deaf.effect.heights_at_start[i],
        deaf.effect.heights_at_end[i],
    ) {
        (Some(start), Some(end)) => end.saturating_sub(start),
        _ => panic!("node{i} did not answer at the fault's start or end: {deaf:#?}"),
    };
    assert!(gained(0) <= 1 && gained(1) >= 3, "{deaf:#?}");
    assert!(deaf.label.contains("from node1,node2,node3"), "{deaf:#?}");
}

fn byzantine_manifest(name: &str, nodes: &str) -> String {
    format!("name = \"{name}\"\nduration_s = 18\n{nodes}")
}

fn node(name: &str, extra: &str) -> String {
    format!("[[nodes]]\nname = \"{name}\"\nstake = 1000\n{extra}\n")
}

#[test]
fn honest_nodes_hold_against_an_equivocator_and_twins_but_not_beyond_f() {
    let _serial = one_at_a_time();
    // One equivocating validator of four: safety holds, evidence appears, it is slashed; the
    // three honest nodes answer the run's seeded inference requests bit for bit alike.
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        node("node0", ""),
        node("node1", ""),
        node("node2", ""),
        node("node3", "byzantine = { behaviour = \"equivocate\" }"),
        "[inference]\nseed = 5\ndim = 64\nhidden = 96\nlayers = 2\nexperts = 4\nvocab = 128\n\
         max_seq = 64\ntile_bytes = 49152\nrequests = 6\n"
            .to_string(),
    ]
    .concat();
    let (passed, text, _) = devnet_run(
        dir.path(),
        &byzantine_manifest("one-equivocator", &nodes),
        2,
        &[],
    );
    assert!(passed, "{text}");
    for line in ["safety ", "agreement ", "accountability ", "fault_bound "] {
        let row = text.lines().find(|l| l.starts_with(line)).unwrap_or("");
        assert!(row.contains("pass"), "{line}: {row}\n{text}");
    }
    assert!(text.contains("node3 (50 burned, tombstoned)"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("inference_determinism "))
        .unwrap_or("");
    assert!(
        row.contains("pass") && row.contains("across 3 honest nodes"),
        "{row}\n{text}"
    );
    let compared: u32 = row
        .split_whitespace()
        .skip_while(|word| *word != "pass")
        .nth(1)
        .and_then(|word| word.parse().ok())
        .unwrap_or(0);
    assert!(compared >= 4, "most of the 6 requests compared: {row}");

    // Twins of one validator: the same.
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        node("node0", ""),
        node("node1", ""),
        node("node2", ""),
        node("node3", ""),
        "[[nodes]]\nname = \"node3b\"\ntwin_of = \"node3\"\n".to_string(),
        "[consensus]\ntimeout_commit_ms = 50\n".to_string(),
    ]
    .concat();
    let (passed, text, _) = devnet_run(dir.path(), &byzantine_manifest("twins", &nodes), 3, &[]);
    assert!(passed, "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("accountability "))
        .unwrap_or("");
    assert!(
        row.contains("pass") && row.contains("node3 ("),
        "the twins' double signing is evidence and node3 is punished: {row}\n{text}"
    );

    // Two of four equivocating is beyond f: the run fails and says why.
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        node("node0", ""),
        node("node1", ""),
        node("node2", "byzantine = { behaviour = \"equivocate\" }"),
        node("node3", "byzantine = { behaviour = \"equivocate\" }"),
    ]
    .concat();
    let (passed, text, _) = devnet_run(dir.path(), &byzantine_manifest("beyond-f", &nodes), 4, &[]);
    assert!(!passed, "beyond f must not pass:\n{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("fault_bound "))
        .unwrap_or("");
    assert!(
        row.contains("FAIL") && row.contains("node2, node3 hold 2000 of 4000"),
        "{row}\n{text}"
    );
}

#[test]
fn a_seeded_random_schedule_replays_exactly_and_keeps_the_chain_safe() {
    let _serial = one_at_a_time();
    let manifest = r#"
name = "nemesis"
validators = 4
duration_s = 24
[network]
proxy = true
[[faults]]
at_s = 1
kind = "random"
seed = 5
duration_s = 20
mean_interval_s = 2
mean_duration_s = 2
kinds = ["kill", "pause", "latency", "partition-halves", "cut"]
"#;
    let mut schedules = Vec::new();
    for salt in [5, 6] {
        let dir = tempfile::tempdir().unwrap();
        let (_, text, out) = devnet_run(dir.path(), manifest, salt, &["--seed", "11"]);
        // Whatever the nemesis did, no honest node forked, disagreed or accepted a bad block.
        for check in ["safety ", "agreement ", "validity "] {
            let row = text.lines().find(|l| l.starts_with(check)).unwrap_or("");
            assert!(row.contains("pass"), "{check}: {row}\n{text}");
        }
        let entries = timeline::read(&out).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(
            entries.len() >= 3,
            "a 20 s window draws several faults:\n{text}"
        );
        for entry in &entries {
            assert!(
                entry.ended_s.is_some(),
                "every fault was healed: {entry:#?}"
            );
        }
        schedules.push(
            entries
                .iter()
                .map(timeline::planned_key)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        schedules[0], schedules[1],
        "the same seed gives the same kinds, targets and times"
    );
}

#[test]
fn an_amnesiac_validator_breaks_no_safety_across_rounds_forced_by_partitions() {
    let _serial = one_at_a_time();
    // node3 forgets its lock at every height (`ignore-locks`); halves partitions push heights
    // into later rounds, where a lock decides what an honest validator may prevote. One
    // amnesiac of four is within f: no honest node may fork or disagree.
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"
name = "amnesia"
duration_s = 40
[network]
proxy = true
[[nodes]]
name = "node0"
[[nodes]]
name = "node1"
[[nodes]]
name = "node2"
[[nodes]]
name = "node3"
byzantine = { behaviour = "ignore-locks" }
[[faults]]
at_s = 3
kind = "partition"
shape = "halves"
duration_s = 4
[[faults]]
at_s = 12
kind = "partition"
shape = "halves"
duration_s = 4
[[faults]]
at_s = 21
kind = "latency"
link = ["node0", "node3"]
latency_ms = 300
jitter_ms = 10
duration_s = 6
"#;
    let (passed, text, out) = devnet_run(dir.path(), manifest, 7, &[]);
    assert!(passed, "{text}");
    for check in ["safety ", "agreement ", "validity ", "fault_bound "] {
        let row = text.lines().find(|l| l.starts_with(check)).unwrap_or("");
        assert!(row.contains("pass"), "{check}: {row}\n{text}");
    }
    // The partitions did force later rounds: the amnesia had locks to ignore.
    let history =
        blyan_harness::history::History::load(&out).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let later_rounds = history
        .nodes
        .iter()
        .flat_map(|(_, records)| records)
        .filter(|record| {
            matches!(record, blyan_harness::history::NodeRecord::Block { round, .. } if *round >= 1)
        })
        .count();
    assert!(
        later_rounds >= 1,
        "no block was decided after round 0: the faults forced no second round\n{text}"
    );
}

#[test]
fn a_fault_the_backend_cannot_do_is_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    // Isolating a node without link proxies disconnects its container: Docker only.
    let manifest = r#"
name = "cannot"
validators = 4
duration_s = 20
[[faults]]
at_s = 2
kind = "isolate"
nodes = ["node1"]
duration_s = 5
"#;
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, manifest).unwrap();
    let check = |backend: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_devnet"))
            .arg("manifest")
            .arg("--check")
            .arg(&path)
            .args(["--backend", backend])
            .output()
            .expect("devnet runs");
        let text = String::from_utf8_lossy(&output.stderr).to_string();
        (output.status.success(), text)
    };
    let (ok, text) = check("docker");
    assert!(ok, "isolate is a Docker fault: {text}");
    for backend in ["process", "swarm"] {
        let (ok, text) = check(backend);
        assert!(!ok, "manifest --check --backend {backend} passed");
        assert!(
            text.contains("faults[0].kind") && text.contains("network.proxy = true"),
            "{backend}: the refusal names the field and the way out: {text}"
        );
    }

    let (passed, text, out) = devnet_run(dir.path(), manifest, 40, &[]);
    assert!(!passed, "devnet run --backend process passed: {text}");
    assert!(text.contains("faults[0].kind"), "{text}");
    assert!(!out.exists(), "the run directory was made: {text}");
    assert!(
        !dir.path().join("devnets").exists(),
        "a devnet was made before the refusal: {text}"
    );
    assert!(!text.contains("starting"), "nodes were started: {text}");
}
