//! Docker devnets built and run by the harness's own Docker backend: a 10-node devnet reaches
//! height 10 with identical hashes everywhere and leaves no container, network or volume behind;
//! an `up` killed half way leaves nothing after `devnet down`, and neither does a 30-node `up`
//! interrupted with SIGTERM while `down` runs.
//!
//! Needs a Docker daemon. On a laptop without one the tests skip with a loud message; with
//! `CI=true` a missing daemon is a failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blyan_devnet::{daemon, leftovers, one_at_a_time, runtime, target_bin};
use blyan_harness::backend::UpSettings;
use blyan_harness::docker;
use blyan_harness::manifest::Manifest;
use blyan_harness::process;

/// Runs `devnet run PATH --out OUT --base BASE EXTRA...` to its end; whether it passed, and
/// what it printed.
fn devnet_run(path: &Path, out: &Path, base: &Path, extra: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = Command::new(target_bin("devnet"))
        .arg("run")
        .arg(path)
        .args(extra)
        .arg("--out")
        .arg(out)
        .arg("--base")
        .arg(base)
        .env_remove("BLYAN_NODE_BIN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn ten_node_docker_devnet_agrees_and_leaves_nothing_behind() {
    let _serial = one_at_a_time();
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let base = tempfile::tempdir().unwrap();
    let name = format!("ci-ten-{}", std::process::id());
    let mut manifest = Manifest::default_named(&name);
    manifest.validators = Some(10);
    manifest.validate("test").unwrap();
    let mut options = UpSettings::new(base.path(), target_bin("blyan-node"));
    options.wait_height = 10;
    options.wait_timeout = Duration::from_secs(240);
    let started = Instant::now();
    let state = rt
        .block_on(docker::up(&docker, &manifest, &options, |_| {}))
        .unwrap_or_else(|error| panic!("10-node devnet: {error}"));
    eprintln!(
        "10 nodes at height 10 after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let all: Vec<usize> = (0..10).collect();
    let check = process::check_agreement(&state, &all, 10);
    // HTTPS beside the plain API, certificates from the devnet's CA, admin by client certificate.
    let pki = state.nodes[0].home.parent().unwrap().join("pki");
    let https: Vec<_> = state
        .nodes
        .iter()
        .map(|node| {
            let url = node.api_https.clone().unwrap_or_default();
            (
                process::https_status(&pki, false, &url, "GET", "/status"),
                process::https_status(&pki, false, &url, "POST", "/admin/reload"),
                process::https_status(&pki, true, &url, "POST", "/admin/reload"),
            )
        })
        .collect();
    let removed = rt
        .block_on(docker::remove_by_label(&docker, Some(&name)))
        .unwrap();
    check.unwrap();
    for (index, answers) in https.iter().enumerate() {
        assert_eq!(
            answers,
            &(Ok(200), Ok(403), Ok(200)),
            "node{index} over HTTPS"
        );
    }
    assert_eq!((removed.containers, removed.networks), (10, 1));
    assert_eq!(rt.block_on(leftovers(&docker, &name)), (0, 0, 0));
}

#[test]
fn an_up_killed_half_way_leaves_nothing_after_down() {
    let _serial = one_at_a_time();
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let base = tempfile::tempdir().unwrap();
    let name = format!("ci-kill-{}", std::process::id());
    let devnet = target_bin("devnet");
    let mut child = Command::new(&devnet)
        .args([
            "up",
            "--backend",
            "docker",
            "--nodes",
            "6",
            "--name",
            &name,
            "--base",
        ])
        .arg(base.path())
        .arg("--node-bin")
        .arg(target_bin("blyan-node"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL: no chance to clean up) once its first containers exist.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (containers, _, _) = rt.block_on(leftovers(&docker, &name));
        if containers > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "devnet up created no container");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ne!(
        rt.block_on(leftovers(&docker, &name)),
        (0, 0, 0),
        "something to clean up"
    );
    let down = Command::new(&devnet)
        .args(["down", "--name", &name, "--base"])
        .arg(base.path())
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(rt.block_on(leftovers(&docker, &name)), (0, 0, 0));
}

/// A 30-node `up` interrupted with SIGTERM while its containers start (its output going to a
/// file, as in CI), and a `down` run at once while the interrupted `up` is still removing what
/// it made: `up` printed progress lines, cleaned up on the signal, and the one `down` call
/// ends with nothing of the devnet left (it waits for removals already in progress instead of
/// failing with "removal of container ... is already in progress").
#[test]
fn an_up_of_30_nodes_interrupted_mid_start_is_gone_after_one_down() {
    let _serial = one_at_a_time();
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let base = tempfile::tempdir().unwrap();
    let name = format!("ci-term-{}", std::process::id());
    let devnet = target_bin("devnet");
    let log = base.path().join("up.log");
    let mut child = Command::new(&devnet)
        .args([
            "up",
            "--backend",
            "docker",
            "--nodes",
            "30",
            "--name",
            &name,
            "--base",
        ])
        .arg(base.path())
        .arg("--node-bin")
        .arg(target_bin("blyan-node"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (containers, _, _) = rt.block_on(leftovers(&docker, &name));
        if containers >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "devnet up created {containers} containers: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the pid of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let down = Command::new(&devnet)
        .args(["down", "--name", &name, "--base"])
        .arg(base.path())
        .output()
        .unwrap();
    let up = child.wait().unwrap();
    let up_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        down.status.success(),
        "one down: {}\nup: {up_log}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        rt.block_on(leftovers(&docker, &name)),
        (0, 0, 0),
        "{up_log}"
    );
    assert!(!up.success(), "an interrupted up fails: {up_log}");
    assert!(up_log.contains("interrupted"), "{up_log}");
    assert!(
        up_log.lines().any(|line| line.starts_with("containers: ")),
        "progress lines while the output is a file: {up_log}"
    );
}

/// `devnet run` on the Docker backend with every link through the proxy container: a latency
/// toxic raises the nodes' own ping RTT over the link by about its latency, a halves partition
/// stops the chain until it heals, a paused container falls behind and catches up, and nothing
/// (proxy container included) is left behind.
#[test]
fn docker_chaos_run_measures_its_faults_and_leaves_nothing_behind() {
    let _serial = one_at_a_time();
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let dir = tempfile::tempdir().unwrap();
    let name = format!("ci-chaos-{}", std::process::id());
    let manifest = format!(
        r#"
name = "{name}"
backend = "docker"
validators = 4
duration_s = 40
[network]
proxy = true
[[faults]]
at_s = 1
kind = "latency"
link = ["node0", "node1"]
latency_ms = 100
duration_s = 12
[[faults]]
at_s = 15
kind = "partition"
shape = "halves"
duration_s = 5
[[faults]]
at_s = 25
kind = "pause"
nodes = ["node2"]
duration_s = 4
"#
    );
    let path = dir.path().join("chaos.toml");
    std::fs::write(&path, manifest).unwrap();
    let out = dir.path().join("run");
    let (passed, text) = devnet_run(&path, &out, &dir.path().join("devnets"), &[]);
    let left = rt.block_on(leftovers(&docker, &name));
    assert!(passed, "{text}");
    assert_eq!(left, (0, 0, 0), "containers, networks, volumes left");
    let entries = blyan_harness::timeline::read(&out).unwrap();
    let find = |kind: &str| entries.iter().find(|e| e.kind == kind).unwrap();
    let latency = find("latency");
    // The toxic adds 100 ms to every round trip: the RTT during it is at least that, and it
    // rose clearly (the sample before is noisy on a loaded machine: 1-27 ms seen).
    let (before, during) = (
        latency.effect.rtt_before_ms.unwrap(),
        latency.effect.rtt_during_ms.unwrap(),
    );
    assert!(
        during >= 98.0 && during - before >= 60.0 && during - before <= 170.0,
        "RTT {before:.1} -> {during:.1} ms: {latency:#?}"
    );
    let halves = find("partition-halves");
    assert!(halves.effect.committed_during.unwrap() <= 1, "{halves:#?}");
    assert!(halves.effect.resumed_after_s.is_some(), "{halves:#?}");
    // While it held, no container held a connection across it (their /net_info just before
    // the heal) and no block was proposed and decided inside it.
    let row = text
        .lines()
        .find(|line| line.starts_with("partitions_hold "))
        .unwrap_or("");
    assert!(
        row.contains("pass") && row.contains("1 cut(s)") && row.contains("1 left no side a quorum"),
        "{row}\n{text}"
    );
    let pause = find("pause");
    assert!(pause.effect.caught_up_after_s.is_some(), "{pause:#?}");
}

/// Disk faults on Docker (`docs/CHAOS.md`, "Disk faults"): the layers are mounted on the host
/// under the homes the containers bind. node3's full disk stops it (its container exits) and,
/// freed, it starts and catches up; node2's fsyncs held 250 ms put it behind; node1's power loss
/// (container SIGKILLed, unsynced writes dropped) loses no acknowledged block; node4, a full
/// node whose container was created with the devnet but not started, joins with state sync and
/// catches up; and nothing (no container, network or mount) is left behind.
#[test]
fn docker_disks_fill_slow_down_and_lose_power_a_late_joiner_catches_up_nothing_is_left() {
    let _serial = one_at_a_time();
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let dir = tempfile::tempdir().unwrap();
    let name = format!("ci-disks-{}", std::process::id());
    let manifest = format!(
        r#"
name = "{name}"
backend = "docker"
validators = 4
full_nodes = 1
duration_s = 45
[load]
rate = 40
accounts = 8
[[faults]]
at_s = 3
kind = "disk"
mode = "full"
nodes = ["node3"]
duration_s = 6
[[faults]]
at_s = 13
kind = "disk"
mode = "slow"
fsync_ms = 250
nodes = ["node2"]
duration_s = 6
[[faults]]
at_s = 22
kind = "disk"
mode = "power_loss"
nodes = ["node1"]
duration_s = 2
[[faults]]
at_s = 28
kind = "join"
nodes = ["node4"]
"#
    );
    let path = dir.path().join("disks.toml");
    std::fs::write(&path, manifest).unwrap();
    let out = dir.path().join("run");
    let (passed, text) = devnet_run(&path, &out, &dir.path().join("devnets"), &[]);
    let left = rt.block_on(leftovers(&docker, &name));
    assert!(passed, "{text}");
    assert_eq!(left, (0, 0, 0), "containers, networks, volumes left");
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(&dir.path().display().to_string()),
        "a disk layer is still mounted"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("durability "))
        .unwrap_or("");
    assert!(
        row.contains("pass") && row.contains("1 power loss(es)"),
        "{text}"
    );
    let entries = blyan_harness::timeline::read(&out).unwrap();
    let find = |kind: &str| entries.iter().find(|e| e.kind == kind).unwrap();
    let gained = |entry: &blyan_harness::timeline::Entry, i: usize| {
        let start = entry.effect.heights_at_start[i].unwrap_or(0);
        entry.effect.heights_at_end[i].map_or(0, |end| end.saturating_sub(start))
    };
    let full = find("disk-full");
    assert!(gained(full, 3) <= 1 && gained(full, 0) >= 3, "{full:#?}");
    assert!(full.effect.caught_up_after_s.is_some(), "{full:#?}");
    let slow = find("disk-slow");
    assert!(gained(slow, 2) < gained(slow, 0), "{slow:#?}");
    let join = find("join");
    let caught_up = join.effect.caught_up_after_s.unwrap_or(f64::MAX);
    assert!(caught_up < 20.0, "{join:#?}");
    let loss = find("disk-power-loss");
    assert!(
        loss.effect.stored_after[0].unwrap() >= loss.effect.acknowledged[0].unwrap(),
        "{loss:#?}"
    );
}

/// A rolling upgrade on Docker (`devnet run --old-bin`): node0 and node1 start from an image of
/// another build (here the node binary with one byte appended, so its image differs), each is
/// replaced in turn by a container of the devnet's own image with its home and address kept,
/// the checks pass, and the record says which binary each node ran last.
#[test]
fn docker_rolling_upgrade_replaces_containers_with_homes_kept() {
    let _serial = one_at_a_time();
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old-blyan-node");
    let mut bytes = std::fs::read(target_bin("blyan-node")).unwrap();
    bytes.push(b'x');
    std::fs::write(&old, &bytes).unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let name = format!("ci-upgrade-{}", std::process::id());
    let manifest = format!(
        "name = \"{name}\"\nbackend = \"docker\"\nvalidators = 4\nduration_s = 30\n\
         [load]\nrate = 40\naccounts = 8\n"
    );
    let path = dir.path().join("upgrade.toml");
    std::fs::write(&path, manifest).unwrap();
    let base = dir.path().join("devnets");
    let old_bin = [std::ffi::OsStr::new("--old-bin"), old.as_os_str()];
    let (passed, text) = devnet_run(&path, &dir.path().join("run"), &base, &old_bin);
    let left = rt.block_on(leftovers(&docker, &name));
    assert!(passed, "{text}");
    assert_eq!(left, (0, 0, 0), "containers, networks, volumes left");
    for node in ["node0", "node1"] {
        assert!(text.contains(&format!("fault: upgrade {node}")), "{text}");
    }
    let state = blyan_harness::testnet::record::load_state(&base, &name).unwrap();
    let new = target_bin("blyan-node");
    for node in &state.nodes[..2] {
        assert_eq!(node.bin.as_deref(), Some(new.as_path()), "{}", node.moniker);
    }
    // The old build ran from an image of its own.
    let sha = {
        use sha2::Digest;
        hex_of(&sha2::Sha256::digest(&bytes))
    };
    let tag = format!("blyan-node:sha-{}", &sha[..16]);
    assert!(rt.block_on(docker.inspect_image(&tag)).is_ok(), "{tag}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
