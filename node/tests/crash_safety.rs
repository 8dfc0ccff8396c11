//! Kills a committing writer with SIGKILL at random points, 50 times, and checks after each kill
//! that every commit the writer acknowledged is present and intact.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use blyan_node::block::Hash;
use blyan_node::storage::{Storage, StorageConfig};
use rand::{Rng, SeedableRng};

struct Round {
    acked: Vec<(u64, Hash)>,
}

/// Starts the writer, lets it acknowledge `acks_before_kill` commits, waits a random few
/// hundred microseconds more (so that the kill lands inside a commit), then SIGKILLs it.
fn run_writer(
    home: &Path,
    size: usize,
    acks_before_kill: usize,
    extra_delay_us: u64,
    no_wal: bool,
) -> Round {
    let mut command = Command::new(common::BIN);
    command
        .args([
            "stress-write",
            "--home",
            home.to_str().unwrap(),
            "--size",
            &size.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if no_wal {
        command.arg("--unsafe-no-wal");
    }
    let mut child = command.spawn().expect("spawn writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("writer says ready").expect("read");
    assert!(
        ready.starts_with("ready "),
        "unexpected first line {ready:?}"
    );
    let mut acked = Vec::new();
    let parse = |line: &str| -> (u64, Hash) {
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("ack"), "line {line:?}");
        let height = parts.next().unwrap().parse().unwrap();
        let hash = Hash::from_hex(parts.next().unwrap()).unwrap();
        (height, hash)
    };
    while acked.len() < acks_before_kill {
        let line = lines.next().expect("writer died early").expect("read");
        acked.push(parse(&line));
    }
    std::thread::sleep(Duration::from_micros(extra_delay_us));
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap writer");
    // Acks already in the pipe were reported before the kill: they count too.
    for line in lines.map_while(Result::ok) {
        if line.starts_with("ack ") {
            acked.push(parse(&line));
        }
    }
    Round { acked }
}

/// Reopens the database and returns the acknowledged commits that are missing or different.
fn lost_commits(home: &Path, acked: &[(u64, Hash)]) -> Vec<u64> {
    let storage =
        Storage::open(&home.join("data"), &StorageConfig::default()).expect("reopen after kill");
    let mut lost = Vec::new();
    for (height, hash) in acked {
        match storage.block(*height).expect("read block") {
            Some(block) if block.hash() == *hash && block.data_hash_matches() => {}
            _ => lost.push(*height),
        }
    }
    let tip = storage.tip();
    if let Some(block) = storage.block(tip.height).expect("read tip") {
        assert_eq!(
            block.hash(),
            tip.hash,
            "tip metadata agrees with the tip block"
        );
    }
    lost
}

fn seed() -> u64 {
    std::env::var("BLYAN_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x5eed_b1a7)
}

#[test]
fn sigkill_during_commits_loses_no_acknowledged_block_in_50_kills() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let sizes = [1024, 64 * 1024, 1 << 20];
    let mut total_acked = 0;
    let mut previous_last = 0;
    for round in 0..50 {
        let size = sizes[round % sizes.len()];
        let acks = rng.gen_range(1..40);
        let delay = rng.gen_range(0..3000);
        let result = run_writer(dir.path(), size, acks, delay, false);
        total_acked += result.acked.len();
        let lost = lost_commits(dir.path(), &result.acked);
        assert!(
            lost.is_empty(),
            "round {round} (seed {seed}, size {size}): acknowledged heights {lost:?} lost after SIGKILL"
        );
        // Heights keep rising across rounds: each writer resumed on top of everything the
        // previous one acknowledged (what survived), one height after another.
        if let Some(first) = result.acked.first() {
            assert!(
                first.0 > previous_last,
                "round {round}: first acknowledged height {} is not above the previous round's last {previous_last}",
                first.0
            );
        }
        for pair in result.acked.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + 1, "round {round}: heights in order");
        }
        if let Some(last) = result.acked.last() {
            previous_last = last.0;
        }
    }
    assert!(previous_last >= 50, "every round committed something");
    eprintln!("50 kills, {total_acked} acknowledged commits, 0 lost (seed {seed})");
}

#[test]
fn the_checker_catches_losses_when_the_wal_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut lost_total = 0;
    for _ in 0..5 {
        let result = run_writer(dir.path(), 1024, 20, 0, true);
        lost_total += lost_commits(dir.path(), &result.acked).len();
    }
    assert!(
        lost_total > 0,
        "without a WAL, SIGKILL must lose acknowledged commits"
    );
}
