//! The load generator is open loop: when the node stalls (SIGSTOP for 1.5 s), the schedule goes
//! on (every planned transaction is still sent at its time) and the stall shows as latency,
//! measured from when each transaction was due, instead of as a lower request rate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_loadgen::{run, Account, LoadConfig, Progress, Report};
use blyan_node::genesis::{Genesis, GenesisAccount};
use ed25519_dalek::SigningKey;

/// `target/debug/blyan-node`, next to this test's directory (`cargo test --workspace` builds it).
fn node_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug/deps")
        .join("blyan-node");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; it may be stopped, so continue it first.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGCONT);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One validator with `accounts` funded; returns the node and its API URL.
fn start_node(home: &Path, accounts: &[Account]) -> (Node, String) {
    let bin = node_bin();
    let status = Command::new(&bin)
        .args(["init", "--chain-id", "load-1", "--home"])
        .arg(home)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let path = home.join("genesis.json");
    let mut genesis = Genesis::load(&path).unwrap();
    for account in accounts {
        genesis.accounts.push(GenesisAccount {
            address: hex::encode(account.key.verifying_key().to_bytes()),
            balance: 1_000_000,
        });
    }
    genesis.save(&path).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(&bin);
    for (name, _) in std::env::vars() {
        if name.starts_with("BLYAN_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(["start", "--home"])
        .arg(home)
        .env("BLYAN_API_LISTEN", &api)
        .env(
            "BLYAN_P2P_LISTEN",
            format!("/ip4/127.0.0.1/tcp/{}", free_port()),
        )
        .env("BLYAN_CONSENSUS_TIMEOUT_COMMIT_MS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node(child);
    let url = format!("http://{api}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("{url}/status"))
        .ok()
        .and_then(|r| r.json::<serde_json::Value>().ok())
        .and_then(|s| s["latest_height"].as_u64())
        .is_none_or(|h| h < 1)
    {
        assert!(Instant::now() < deadline, "node did not commit a block");
        std::thread::sleep(Duration::from_millis(100));
    }
    (node, url)
}

fn load(url: &str, accounts: &[Account], seconds: u64) -> Report {
    let mut config = LoadConfig::new(
        "load-1",
        vec![url.to_string()],
        200.0,
        Duration::from_secs(seconds),
    );
    config.drain = Duration::from_secs(20);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(run(&config, accounts, Arc::new(Progress::default())))
        .unwrap()
}

#[test]
fn a_stalled_node_shows_as_latency_not_as_a_lower_rate() {
    let accounts: Vec<Account> = (1..=8u8)
        .map(|i| Account {
            key: SigningKey::from_bytes(&[i; 32]),
        })
        .collect();
    let home = tempfile::tempdir().unwrap();
    let (node, url) = start_node(home.path(), &accounts);

    let calm = load(&url, &accounts, 2);
    assert_eq!((calm.sent, calm.planned), (400, 400), "{calm:?}");
    assert_eq!(calm.committed, 400, "{calm:?}");

    // Stall the node from 1.0 s to 2.5 s of a 3 s run.
    let pid = node.0.id() as i32;
    let staller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_000));
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(1_500));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let stalled = load(&url, &accounts, 3);
    staller.join().unwrap();
    eprintln!(
        "calm: submit p99 {:.1} ms, commit p99 {:.1} ms; stalled: submit p99 {:.1} ms, max \
         {:.1} ms, commit p99 {:.1} ms, achieved {:.0} tx/s",
        calm.submit.p99_ms,
        calm.commit.p99_ms,
        stalled.submit.p99_ms,
        stalled.submit.max_ms,
        stalled.commit.p99_ms,
        stalled.achieved_rate
    );
    // Open loop: every transaction went out on schedule, stall or not.
    assert_eq!((stalled.sent, stalled.planned), (600, 600), "{stalled:?}");
    assert!(
        (stalled.achieved_rate - 200.0).abs() < 20.0,
        "the rate held: {stalled:?}"
    );
    assert_eq!(stalled.committed, 600, "{stalled:?}");
    // The stall shows as latency from the due time: the first transactions due in it waited
    // about 1.5 s.
    assert!(stalled.submit.max_ms >= 1_200.0, "{stalled:?}");
    assert!(
        stalled.submit.p99_ms > 3.0 * calm.submit.p99_ms.max(1.0),
        "calm p99 {} ms, stalled p99 {} ms",
        calm.submit.p99_ms,
        stalled.submit.p99_ms
    );
}
