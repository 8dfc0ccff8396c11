//! A node whose only bootstrap is a DNS seed joins a running devnet: a 3-process devnet, a
//! `blyan-node seeder` answering for its domain from what it crawled and health-checked, and a
//! new full node configured with `p2p.bootstrap_dns` (resolved through the seeder) and no peer
//! address at all; it connects and syncs the chain.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blyan_node::config::Config;
use blyan_node::home::Home;
use blyan_node::seeder::{self, RecordType, SeederConfig, Transport};
use common::{get_json, log_tails, loopback_options, Cleanup};

const DOMAIN: &str = "seed.devnet.test";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn a_node_with_only_a_dns_seed_joins_the_devnet() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let mut options = loopback_options("seeded", base, 3, 7);
    options.wait_height = 3;
    options.wait_timeout = Duration::from_secs(120);
    let state = blyan_harness::process::up(&options, |_| {}).expect("devnet up");
    let _cleanup = Cleanup(base.to_path_buf(), "seeded".into());
    let client = blyan_harness::process::http_client();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seeder = rt
        .block_on(seeder::start(SeederConfig {
            domain: DOMAIN.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            bootstrap: state.nodes.iter().map(|n| n.p2p.parse().unwrap()).collect(),
            health_interval: Duration::from_secs(1),
            crawl_interval: Duration::from_secs(2),
            ttl: 5,
            max_answers: 16,
        }))
        .expect("seeder starts");
    let server = seeder.dns_address;
    let deadline = Instant::now() + Duration::from_secs(30);
    let answers = loop {
        let answer = rt
            .block_on(seeder::query(
                server,
                &format!("_dnsaddr.{DOMAIN}"),
                RecordType::TXT,
                Transport::Udp,
                Duration::from_secs(2),
            ))
            .unwrap();
        if answer.values.len() == 3 {
            break answer.values;
        }
        assert!(
            Instant::now() < deadline,
            "the seeder does not answer the three healthy nodes: {:?}",
            answer.values
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // A new full node: the devnet's genesis, its own keys, no peer address, only the seed.
    let home = Home::new(base.join("newcomer"));
    let init = Command::new(&options.node_bin)
        .args(["init", "--home"])
        .arg(home.root())
        .args(["--moniker", "newcomer", "--chain-id", &state.chain_id])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    std::fs::copy(state.nodes[0].home.join("genesis.json"), home.genesis()).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut config = Config::load(&home.config(), Vec::new()).unwrap();
    config.api.listen = api.clone();
    config.p2p.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", free_port())];
    config.p2p.bootstrap = Vec::new();
    config.p2p.bootstrap_dns = vec![DOMAIN.into()];
    config.p2p.dns_server = server.to_string();
    config.validate("newcomer").unwrap();
    std::fs::write(home.config(), config.template()).unwrap();
    let log = std::fs::File::create(base.join("newcomer.log")).unwrap();
    let _newcomer = Kill(
        Command::new(&options.node_bin)
            .args(["start", "--home"])
            .arg(home.root())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let url = |api: &str| format!("http://{api}/status");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let target = get_json(
            &client,
            &url(state.nodes[0].api.trim_start_matches("http://")),
        )["latest_height"]
            .as_u64()
            .unwrap_or(0);
        let status = client
            .get(url(&api))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok());
        let height = status
            .as_ref()
            .and_then(|s| s["latest_height"].as_u64())
            .unwrap_or(0);
        if height >= 3 && height + 5 >= target {
            eprintln!(
                "seeder answered {answers:?}; the newcomer synced to height {height} (devnet at {target})"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the newcomer did not join: height {height} of {target}; status {status:?}\n{}\n{}",
            std::fs::read_to_string(base.join("newcomer.log")).unwrap_or_default(),
            log_tails(&state)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    rt.block_on(seeder.stop());
}
