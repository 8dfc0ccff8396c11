//! The `blyan-node` binary as a user meets it: init, start, the API, clean shutdown, and
//! one clear error line (with the home left untouched) for each kind of bad input.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use blyan_node::block::{Block, Hash};
use blyan_node::storage::{legacy, Storage, StorageConfig};
use common::{init_home, node, snapshot, stderr, stdout};

fn assert_one_line_error(output: &std::process::Output, needles: &[&str]) {
    assert!(!output.status.success(), "expected failure, got success");
    let text = stderr(output);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got {text:?}");
    assert!(lines[0].starts_with("error: "), "{text:?}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from {text:?}"
        );
    }
}

#[test]
fn version_names_the_commit() {
    let output = node(&["--version"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.starts_with("blyan-node 0.1.0 (commit "), "{text}");
}

#[test]
fn init_writes_private_keys_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    for key in ["keys/node_key.json", "keys/validator_key.json"] {
        let mode = std::fs::metadata(home.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(
        config.contains("# Address of the HTTP API"),
        "settings are documented"
    );
    let before = snapshot(&home);
    let again = node(&["init", "--home", home.to_str().unwrap()]);
    assert_one_line_error(&again, &["already exists", "--force"]);
    assert_eq!(snapshot(&home), before, "a refused init changes nothing");
    let forced = node(&["init", "--home", home.to_str().unwrap(), "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(snapshot(&home), before, "--force replaces the keys");
}

#[test]
fn start_with_a_missing_home_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let output = node(&["start", "--home", missing.to_str().unwrap()]);
    assert_one_line_error(&output, &["nowhere", "does not exist"]);
    assert!(!missing.exists(), "start does not create a home");
}

#[test]
fn corrupt_or_truncated_config_names_the_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let config_path = home.join("config.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let cases = [
        (text[..text.len() / 3].to_string(), "invalid config"),
        (text.replace("[storage]", "[storage\n"), "invalid config"),
        (format!("{text}\nbogus = true\n"), "unknown field `bogus`"),
        (
            text.replace("max_write_buffers = 3", "max_write_buffers = 1"),
            "storage.max_write_buffers",
        ),
        (
            String::from_utf8_lossy(&[0xff, 0xfe, 0x00]).into_owned(),
            "invalid config",
        ),
    ];
    for (content, needle) in cases {
        std::fs::write(&config_path, &content).unwrap();
        let before = snapshot(&home);
        let output = node(&["start", "--home", home.to_str().unwrap()]);
        assert_one_line_error(&output, &["config.toml", needle]);
        assert_eq!(
            snapshot(&home),
            before,
            "a refused start changes nothing ({needle})"
        );
    }
}

#[test]
fn bad_environment_override_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let output = Command::new(common::BIN)
        .args(["start", "--home", home.to_str().unwrap()])
        .env("BLYAN_API_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_one_line_error(&output, &["BLYAN_API_LISTEN", "api.listen"]);
}

/// Sets the schema version as a newer binary would have, through RocksDB directly.
fn mark_newer_schema(data: &Path) {
    let storage = Storage::open(data, &StorageConfig::default()).unwrap();
    let block = Block::new(
        "blyan-devnet",
        1,
        1,
        Hash::ZERO,
        Hash::ZERO,
        vec![b"x".to_vec()],
    );
    storage.commit_block(&block, &[]).unwrap();
    drop(storage);
    let mut options = rocksdb::Options::default();
    options.create_if_missing(false);
    let names = rocksdb::DB::list_cf(&options, data).unwrap();
    let db = rocksdb::DB::open_cf(&options, data, &names).unwrap();
    let metadata = db.cf_handle("metadata").unwrap();
    db.put_cf(metadata, b"schema_version", 99u32.to_be_bytes())
        .unwrap();
}

#[test]
fn database_of_a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    mark_newer_schema(&home.join("data"));
    let before = snapshot(&home.join("data"));
    let output = node(&["start", "--home", home.to_str().unwrap()]);
    assert_one_line_error(
        &output,
        &["data", "schema version 99", "newer than this binary"],
    );
    let after = snapshot(&home.join("data"));
    let unchanged = |files: &[(String, String)]| -> Vec<(String, String)> {
        // RocksDB rewrites its own LOG file on every open; the data files must not change.
        files
            .iter()
            .filter(|(name, _)| !name.starts_with("LOG"))
            .cloned()
            .collect()
    };
    assert_eq!(unchanged(&after), unchanged(&before));
}

#[test]
fn migrate_imports_a_legacy_chain_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let legacy_dir = dir.path().join("legacy");
    legacy::write_sample(&legacy_dir, 25).unwrap();
    let home_arg = home.to_str().unwrap();
    let from = legacy_dir.to_str().unwrap();
    let output = node(&["migrate", "--from", from, "--home", home_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("imported 25 blocks"),
        "{}",
        stdout(&output)
    );
    let again = node(&["migrate", "--from", from, "--home", home_arg]);
    assert!(
        stdout(&again).contains("imported 0 blocks (25 already present)"),
        "{}",
        stdout(&again)
    );

    let tampered_dir = dir.path().join("tampered");
    legacy::write_sample(&tampered_dir, 25).unwrap();
    let victim = tampered_dir.join("blocks/000017.json");
    let text = std::fs::read_to_string(&victim).unwrap();
    std::fs::write(&victim, text.replace("1700000017", "1700000018")).unwrap();
    let fresh = dir.path().join("fresh");
    init_home(&fresh);
    let before = snapshot(&fresh);
    let output = node(&[
        "migrate",
        "--from",
        tampered_dir.to_str().unwrap(),
        "--home",
        fresh.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, &["000017.json", "hash mismatch"]);
    assert_eq!(snapshot(&fresh), before, "nothing written to the home");

    // A home that already holds the first chain refuses an unrelated one.
    let other_dir = dir.path().join("other");
    legacy::write_sample(&other_dir, 3).unwrap();
    let genesis = other_dir.join("blocks/000000.json");
    let mut block: legacy::LegacyBlock =
        serde_json::from_str(&std::fs::read_to_string(&genesis).unwrap()).unwrap();
    block.payload = "another chain".into();
    block.hash = block.computed_hash().to_hex();
    std::fs::write(&genesis, serde_json::to_vec(&block).unwrap()).unwrap();
    let output = node(&[
        "migrate",
        "--from",
        other_dir.to_str().unwrap(),
        "--home",
        home_arg,
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("000001.json") || stderr(&output).contains("another chain"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn node_serves_the_api_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().unwrap();
    let child = Command::new(common::BIN)
        .args([
            "start",
            "--home",
            home.to_str().unwrap(),
            "--api-listen",
            &listen,
            "--log-format",
            "json",
        ])
        .env("BLYAN_P2P_LISTEN", "/ip4/127.0.0.1/tcp/0")
        .env("BLYAN_CONSENSUS_TIMEOUT_COMMIT_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let health = common::wait_for_ok(addr, "/health", Duration::from_secs(30), "node /health");
    assert!(health.body.contains("\"ok\""), "{}", health.body);

    let status = common::http(addr, "GET", "/status", b"").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    for field in [
        "node_id",
        "moniker",
        "latest_height",
        "latest_block_hash",
        "app_hash",
        "version",
    ] {
        assert!(
            status.get(field).is_some(),
            "/status lacks {field}: {status}"
        );
    }
    assert!(
        status["node_id"].as_str().unwrap().starts_with("12D3Koo"),
        "libp2p ed25519 peer id"
    );
    assert_eq!(status["validator"], true, "{status}");
    assert_eq!(status["catching_up"], false, "{status}");
    // A chain of one validator (the genesis `init` writes) commits blocks on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let height = loop {
        let status = common::http(addr, "GET", "/status", b"").unwrap();
        let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
        let height = status["latest_height"].as_u64().unwrap();
        if height >= 3 {
            break height;
        }
        assert!(std::time::Instant::now() < deadline, "no blocks: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let latest = common::http(addr, "GET", "/blocks/latest", b"").unwrap();
    let latest: serde_json::Value = serde_json::from_str(&latest.body).unwrap();
    assert!(latest["height"].as_u64().unwrap() >= height, "{latest}");
    assert_eq!(
        latest["commit"]["signatures"].as_array().unwrap().len(),
        1,
        "{latest}"
    );
    let first = common::http(addr, "GET", "/blocks/1", b"").unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let bad = common::http(addr, "GET", "/blocks/abc", b"").unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    let future = common::http(addr, "GET", "/blocks/999999999", b"").unwrap();
    assert_eq!(future.status, 404, "{}", future.body);

    let missing = common::http(addr, "GET", "/no/such/route", b"").unwrap();
    assert_eq!(missing.status, 404);
    let body: serde_json::Value = serde_json::from_str(&missing.body).unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["detail"].as_str().unwrap().contains("/no/such/route"));

    let wrong_method = common::http(addr, "DELETE", "/status", b"").unwrap();
    assert_eq!(wrong_method.status, 405);
    assert!(
        wrong_method.body.contains("method_not_allowed"),
        "{}",
        wrong_method.body
    );

    let huge = vec![b'x'; 2 << 20];
    let too_large = common::http(addr, "POST", "/checkpoints", &huge).unwrap();
    assert_eq!(too_large.status, 413);
    assert!(
        too_large.body.contains("api.max_body_bytes"),
        "{}",
        too_large.body
    );

    let created = common::http(addr, "POST", "/checkpoints", b"").unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let created: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    let checkpoint_height = created["height"].as_u64().unwrap();
    assert!(home
        .join(format!("checkpoints/{checkpoint_height}"))
        .is_dir());

    let metrics = common::http(addr, "GET", "/metrics", b"").unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("blyan_http_requests_total{"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("blyan_blocks_committed_total"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("route=\"/checkpoints\""),
        "{}",
        metrics.body
    );
    // Where a height's time goes: every decided height reached prevote and precommit first.
    let step_count = |step: &str| -> u64 {
        let prefix = format!("blyan_consensus_step_seconds_count{{step=\"{step}\"}} ");
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in {}", metrics.body))
    };
    let decided = step_count("commit");
    assert!(decided >= 1, "no decided height counted");
    assert!(step_count("precommit") >= decided && step_count("prevote") >= decided);

    // A second node on the same home is refused with a clear message.
    let second = node(&[
        "start",
        "--home",
        home.to_str().unwrap(),
        "--api-listen",
        "127.0.0.1:0",
    ]);
    assert_one_line_error(&second, &["locked", "is a node running"]);

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(
        log.lines().all(|line| line.starts_with('{')),
        "json logs: {log}"
    );
}

#[test]
fn checkpoint_command_snapshots_a_stopped_node() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    {
        let storage = Storage::open(&home.join("data"), &StorageConfig::default()).unwrap();
        let block = Block::new("blyan-devnet", 1, 1, Hash::ZERO, Hash::ZERO, vec![]);
        storage.commit_block(&block, &[]).unwrap();
    }
    let output = node(&["checkpoint", "--home", home.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("checkpoint of height 1"),
        "{}",
        stdout(&output)
    );
    let copy = Storage::open(&home.join("checkpoints/1"), &StorageConfig::default()).unwrap();
    assert_eq!(copy.tip().height, 1);
}

#[test]
fn experts_generate_writes_a_seeded_model_and_refuses_bad_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let home_arg = home.to_str().unwrap();
    let small = "--dim 16 --hidden 8 --layers 2 --experts 3 --vocab 32 --max-seq 16";
    let mut args = vec!["experts", "generate", "--home", home_arg, "--seed", "9"];
    args.extend(small.split(' '));
    args.extend(["--tile-bytes", "512"]);
    let output = node(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("7 files"), "{}", stdout(&output));
    let listed = stdout(&node(&["experts", "list", "--home", home_arg]));
    assert_eq!(listed.lines().count(), 7, "{listed}");
    assert!(
        listed.contains("moe/base") && listed.contains("moe/l1/e2"),
        "{listed}"
    );
    // The same seed writes the same files (same content hashes): nothing new appears.
    let again = node(&args);
    assert!(again.status.success());
    assert_eq!(
        stdout(&node(&["experts", "list", "--home", home_arg])),
        listed
    );

    let bad = |extra: &[&str], needles: &[&str]| {
        let mut args = vec!["experts", "generate", "--home", home_arg];
        args.extend(small.split(' '));
        args.extend(extra);
        assert_one_line_error(&node(&args), needles);
    };
    bad(&["--tile-bytes", "0"], &["tile_bytes", "0"]);
    bad(&["--top-k", "4"], &["top_k 4", "between 1 and 3"]);
    bad(&["--model", "a/b"], &["model"]);
    assert_one_line_error(
        &node(&[
            "experts",
            "list",
            "--home",
            dir.path().join("none").to_str().unwrap(),
        ]),
        &["does not exist"],
    );
}

/// The roadmap's migration from the file-based layout ends in a running node: the imported
/// home starts, serves every legacy block (its record and hash) over the API and keeps
/// committing native blocks on top of them.
#[test]
fn a_migrated_home_starts_serves_the_legacy_blocks_and_commits_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_home(&home);
    let legacy_dir = dir.path().join("legacy");
    let legacy_blocks = legacy::write_sample(&legacy_dir, 3).unwrap();
    let home_arg = home.to_str().unwrap();
    let from = legacy_dir.to_str().unwrap();
    let output = node(&["migrate", "--from", from, "--home", home_arg]);
    assert!(output.status.success(), "{}", stderr(&output));

    // 3 imported blocks, then native ones on top.
    let (mut child, addr) = start_until(&home, 6, Duration::from_secs(30));
    for (index, legacy_block) in legacy_blocks.iter().enumerate() {
        let path = format!("/blocks/{}", index + 1);
        let response = common::http(addr, "GET", &path, b"").unwrap();
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let view: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        let txs = view["txs"].as_array().unwrap();
        assert_eq!(txs.len(), 1, "{path}: {view}");
        let record = hex::decode(txs[0].as_str().unwrap()).unwrap();
        let record: legacy::LegacyBlock = serde_json::from_slice(&record).unwrap();
        assert_eq!(record.hash, legacy_block.hash, "{path}");
        assert_eq!(&record, legacy_block, "{path}");
    }
    // The first native block links to the last imported one and carries a commit.
    let imported = common::http(addr, "GET", "/blocks/3", b"").unwrap();
    let imported: serde_json::Value = serde_json::from_str(&imported.body).unwrap();
    let native = common::http(addr, "GET", "/blocks/4", b"").unwrap();
    let native: serde_json::Value = serde_json::from_str(&native.body).unwrap();
    assert_eq!(native["prev_hash"], imported["hash"], "{native}");
    assert_eq!(
        native["commit"]["signatures"].as_array().map(Vec::len),
        Some(1),
        "{native}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean shutdown: {status}");
}

/// Starts a single-validator node on `home` (fast blocks, loopback) and waits until it has
/// committed `height`; panics with its log if it exits or takes longer than `timeout`.
fn start_until(home: &Path, height: u64, timeout: Duration) -> (std::process::Child, SocketAddr) {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let addr: SocketAddr = listen.parse().unwrap();
    let mut child = Command::new(common::BIN)
        .args([
            "start",
            "--home",
            home.to_str().unwrap(),
            "--api-listen",
            &listen,
        ])
        .env("BLYAN_P2P_LISTEN", "/ip4/127.0.0.1/tcp/0")
        .env("BLYAN_CONSENSUS_TIMEOUT_COMMIT_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut text = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut text).unwrap();
            panic!("the node exited ({status}): {text}");
        }
        let latest = common::http(addr, "GET", "/status", b"")
            .ok()
            .and_then(|status| serde_json::from_str::<serde_json::Value>(&status.body).ok())
            .and_then(|status| status["latest_height"].as_u64());
        if latest.is_some_and(|latest| latest >= height) {
            return (child, addr);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "height {height} not reached within {timeout:?}: {latest:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A database written by the node of the first block encoding (fixture written by commit
/// d90a7e7; see its README) was refused ("unknown block encoding version 1"). It is upgraded
/// in place: the node starts, serves each of the 88 v1 blocks (its stored bytes as the one
/// transaction, whose v1 hashes are the old node's and link up), commits on top, and keeps the
/// v1 database beside the new one.
#[test]
fn a_database_of_the_first_block_encoding_is_upgraded_in_place_and_commits_on_top() {
    use blyan_node::block::V1Block;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let output = node(&[
        "init",
        "--home",
        home.to_str().unwrap(),
        "--chain-id",
        "blyan-v1",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-database/data");
    copy_dir(&fixture, &home.join("data"));

    // 88 upgraded blocks, then native ones on top.
    let (mut child, addr) = start_until(&home, 91, Duration::from_secs(60));
    let block = |height: u64| -> serde_json::Value {
        let response = common::http(addr, "GET", &format!("/blocks/{height}"), b"").unwrap();
        assert_eq!(response.status, 200, "/blocks/{height}: {}", response.body);
        serde_json::from_str(&response.body).unwrap()
    };
    let mut previous = Hash::ZERO;
    for height in 1..=88 {
        let view = block(height);
        let txs = view["txs"].as_array().unwrap();
        assert_eq!(txs.len(), 1, "/blocks/{height}: {view}");
        let v1 = V1Block::decode(&hex::decode(txs[0].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(
            (v1.height, v1.prev_hash),
            (height, previous),
            "v1 block {height}"
        );
        previous = v1.hash;
        match height {
            1 => assert_eq!(
                v1.hash.to_hex(),
                "9175b242f9143a3bb71ce56bc63cf9dca74b65500cc7867f06b4ac052b862b61"
            ),
            88 => assert_eq!(
                v1.hash.to_hex(),
                "9761bb777c543efbe7cb6880ae6a780202f462ea23e5aca05630debbd4fdae13"
            ),
            _ => {}
        }
    }
    // Native blocks follow, the first linked to the last upgraded one.
    let native = block(89);
    assert_eq!(native["prev_hash"], block(88)["hash"], "{native}");
    assert_eq!(
        native["commit"]["signatures"].as_array().map(Vec::len),
        Some(1)
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean shutdown: {status}");
    // The v1 database is kept, untouched but renamed.
    assert!(home.join("data.v1-imported/CURRENT").is_file());
    assert!(!home.join("data.v1").exists());
}
