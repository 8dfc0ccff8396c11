//! NAT traversal in a Docker devnet (scenarios/nat.toml): nine validators, two public relays,
//! six behind NAT routers built from the host's iptables (four alone behind port-preserving
//! masquerade, two sharing a router that picks a random port per destination), one with a
//! public address behind a firewall that drops inbound connections.
//!
//! - the firewall is real: its node's P2P port does not accept a connection from outside while
//!   a relay's does, and peers observe its own address (no translation);
//! - every node behind NAT or the firewall learns it is private (AutoNAT) and holds
//!   reservations on both relays;
//! - over 100 fresh connection attempts between every pair of them all succeed (relayed, and
//!   upgraded to direct by hole punching where both NATs preserve ports; never across the
//!   random-port router);
//! - the chain commits, and killing one relay does not partition them: their reservations move
//!   to the other relay, the chain goes on, and the pairs still connect.
//!
//! Needs a Docker daemon (a loud skip without one; with `CI=true` a failure).

use std::path::Path;
use std::time::{Duration, Instant};

use blyan_devnet::{daemon, leftovers, one_at_a_time, repo_root, runtime, target_bin};
use blyan_harness::backend::UpSettings;
use blyan_harness::docker;
use blyan_harness::manifest::Manifest;
use blyan_harness::process;
use blyan_harness::testnet::record::DevnetState;

fn net_info(client: &reqwest::blocking::Client, api: &str) -> Option<serde_json::Value> {
    client
        .get(format!("{api}/net_info"))
        .send()
        .ok()?
        .json()
        .ok()
}

fn heights(client: &reqwest::blocking::Client, state: &DevnetState, nodes: &[usize]) -> Vec<u64> {
    process::node_statuses(client, state, nodes)
        .into_iter()
        .map(|s| s.and_then(|s| s["latest_height"].as_u64()).unwrap_or(0))
        .collect()
}

/// Polls until `wanted` holds for the net info of every node in `nodes`.
fn until_all(
    client: &reqwest::blocking::Client,
    state: &DevnetState,
    nodes: &[usize],
    within: Duration,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Result<Duration, Vec<serde_json::Value>> {
    let start = Instant::now();
    loop {
        let infos: Vec<serde_json::Value> = nodes
            .iter()
            .map(|&i| net_info(client, &state.nodes[i].api).unwrap_or_default())
            .collect();
        if infos.iter().all(&wanted) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(infos.into_iter().map(|i| i["nat"].clone()).collect());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn reserved(info: &serde_json::Value) -> Vec<String> {
    info["nat"]["relays_reserved"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nodes_behind_nat_connect_through_relays_hole_punch_and_survive_a_relay_loss() {
    let _serial = one_at_a_time();
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    let base = tempfile::tempdir().unwrap();
    let name = format!("ci-nat-{}", std::process::id());
    let mut manifest = Manifest::load(&repo_root().join("scenarios/nat.toml")).unwrap();
    manifest.name = name.clone();
    manifest.validate("test").unwrap();
    let mut options = UpSettings::new(base.path(), target_bin("blyan-node"));
    options.wait_height = 3;
    options.wait_timeout = Duration::from_secs(180);
    let state = rt
        .block_on(docker::up(&docker, &manifest, &options, |_| {}))
        .unwrap_or_else(|error| panic!("NAT devnet: {error}"));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exercise(&docker, &rt, &state, base.path())
    }));
    let removed = rt
        .block_on(docker::remove_by_label(&docker, Some(&name)))
        .unwrap();
    let left = rt.block_on(leftovers(&docker, &name));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    // 9 nodes, 7 holders, 5 routers; the public network and 5 NAT homes (the firewall home
    // has no network of its own).
    assert_eq!(removed.containers, 21, "{removed:?}");
    assert_eq!(removed.networks, 6, "{removed:?}");
    assert_eq!(left, (0, 0, 0), "left behind");
}

fn exercise(
    docker: &bollard::Docker,
    rt: &tokio::runtime::Runtime,
    state: &DevnetState,
    base: &Path,
) {
    let client = process::http_client();
    let nat = state.nat.clone().expect("the devnet records its topology");
    assert_eq!(nat.relays, vec![0, 1]);
    assert_eq!(nat.behind, vec![2, 3, 4, 5, 6, 7, 8]);
    let firewalled = &state.nodes[8];
    let host_of = |address: &str| -> std::net::Ipv4Addr {
        address
            .split('/')
            .nth(2)
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 address in {address}"))
    };
    let p2p_port = blyan_harness::docker::P2P_PORT;
    let dial = |address: &str| {
        std::net::TcpStream::connect_timeout(
            &(host_of(address), p2p_port).into(),
            Duration::from_secs(3),
        )
    };
    assert!(
        dial(&state.nodes[1].p2p).is_ok(),
        "a relay's P2P port accepts connections"
    );
    let blocked = dial(&firewalled.p2p);
    assert!(
        blocked.is_err(),
        "the firewall let a connection to {} in",
        firewalled.p2p
    );
    let relay_ids: Vec<String> = nat
        .relays
        .iter()
        .map(|&r| state.nodes[r].peer_id.clone())
        .collect();

    // Every node behind NAT finds itself private and reserves a slot on both relays.
    let private = until_all(
        &client,
        state,
        &nat.behind,
        Duration::from_secs(90),
        |info| {
            info["nat"]["reachability"] == "private" && {
                let mut got = reserved(info);
                got.sort();
                let mut want = relay_ids.clone();
                want.sort();
                got == want
            }
        },
    );
    let private =
        private.unwrap_or_else(|nat| panic!("not all private with two reservations: {nat:#?}"));
    // No translation behind the firewall: peers see the node's own public address.
    let info = net_info(&client, &firewalled.api).unwrap();
    let own = host_of(&firewalled.p2p).to_string();
    let observed: Vec<&str> = info["nat"]["observed_addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        observed.iter().any(|a| a.contains(&format!("/{own}/"))),
        "peers should observe {own} behind a firewall: {observed:?}"
    );
    // The relays are public (they announce their address) and hold no reservation themselves.
    for &relay in &nat.relays {
        let info = net_info(&client, &state.nodes[relay].api).unwrap();
        assert_eq!(info["nat"]["reachability"], "public", "{:#}", info["nat"]);
        assert!(info["nat"]["relay_server"].as_bool().unwrap());
    }

    // Over 100 fresh connections between every pair behind NAT or the firewall.
    let pki = blyan_harness::testnet::record::devnet_dir(base, &state.name).join("pki");
    let report = blyan_harness::docker::nat::probe_pairs(
        state,
        &pki,
        &nat.behind,
        &nat.relays,
        5,
        3000,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(report.attempts >= 100, "{} attempts", report.attempts);
    let failed: Vec<_> = report.samples.iter().filter(|a| !a.connected).collect();
    assert!(failed.is_empty(), "attempts failed: {failed:#?}");
    // Hole punching through the port-preserving NATs, measured over seven runs of this test
    // (each node's own DCUtR successes, which count the probe's too, were 0 to 10): every one of
    // the four nodes tries, and at least three of them succeed at least once (with another of
    // them or with the firewalled node: either way through its own NAT; the shared router's
    // LAN upgrade between node6 and node7 is not counted, it is theirs). Not every pair or node
    // every time: a pair punched again within a couple of minutes fails while the previous
    // connection's 4-tuple is in TIME_WAIT, and a loaded host misses DCUtR's synchronised dial
    // (fresh CI once left one node without a success). Which probe links were upgraded between
    // two of them is printed, not asserted: 2 to 6 in six runs, then 0 of 12 upgrades in a
    // seventh, a full fresh-clone CI run.
    let preserving = [2usize, 3, 4, 5];
    let preserving_names: Vec<&str> = preserving
        .iter()
        .map(|&i| state.nodes[i].moniker.as_str())
        .collect();
    let mut punched_by_nodes = 0u64;
    let mut per_node = Vec::new();
    let mut never_tried = Vec::new();
    let mut never_punched = Vec::new();
    for &index in &preserving {
        let name = state.nodes[index].moniker.as_str();
        let info = net_info(&client, &state.nodes[index].api).unwrap_or_default();
        let own = info["nat"]["hole_punch_successes"].as_u64().unwrap_or(0);
        let own_failed = info["nat"]["hole_punch_failures"].as_u64().unwrap_or(0);
        punched_by_nodes += own;
        per_node.push(format!("{name}: {own} punched, {own_failed} failed"));
        if own + own_failed == 0 {
            never_tried.push(name);
        }
        if own == 0 {
            never_punched.push(name);
        }
    }
    let mut upgraded: Vec<String> = report
        .samples
        .iter()
        .filter(|a| a.direct_ms.is_some() && a.relayed == Some(true))
        .map(|a| format!("{}-{}", a.from, a.to))
        .collect();
    upgraded.sort();
    let between_them = upgraded
        .iter()
        .filter(|pair| pair.split('-').all(|node| preserving_names.contains(&node)))
        .count();
    eprintln!(
        "hole punching: {per_node:?}; probe links upgraded: {upgraded:?} ({between_them} between two port-preserving NATs)"
    );
    assert!(
        never_tried.is_empty(),
        "behind a port-preserving NAT, {never_tried:?} never tried a hole punch: {per_node:?}"
    );
    assert!(
        never_punched.len() <= 1,
        "behind port-preserving NATs, {never_punched:?} never had a relayed link upgraded to direct: {per_node:?}"
    );
    let random_port_home = ["node6", "node7"];
    let punched_through_random: Vec<_> = report
        .samples
        .iter()
        .filter(|a| a.direct_ms.is_some())
        // Between the two of them the LAN connects them directly; across the router it cannot.
        .filter(|a| {
            random_port_home.contains(&a.from.as_str()) != random_port_home.contains(&a.to.as_str())
        })
        .collect();
    assert!(
        punched_through_random.is_empty(),
        "a hole punch through the random-port NAT cannot succeed: {punched_through_random:#?}"
    );
    eprintln!(
        "private with two reservations after {private:?}; {} attempts: {:.1}% connected, {} hole punched ({punched_by_nodes} by the nodes since the start); connect p50 {:.0} ms p99 {:.0} ms",
        report.attempts,
        report.success_rate * 100.0,
        report.hole_punched,
        report.connect_ms_p50,
        report.connect_ms_p99
    );

    // Kill one relay: the chain goes on and the nodes behind NAT move to the other relay.
    let others: Vec<usize> = (1..state.nodes.len()).collect();
    let before = heights(&client, state, &others);
    let container = state.nodes[0].container.clone().expect("a container");
    rt.block_on(docker.kill_container(
        &container,
        None::<bollard::query_parameters::KillContainerOptions>,
    ))
    .unwrap();
    let moved = until_all(
        &client,
        state,
        &nat.behind,
        Duration::from_secs(60),
        |info| reserved(info) == vec![relay_ids[1].clone()],
    );
    let moved = moved
        .unwrap_or_else(|nat| panic!("reservations did not settle on the other relay: {nat:#?}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = heights(&client, state, &others);
        if now.iter().zip(&before).all(|(n, b)| *n >= b + 5) {
            eprintln!("after the relay loss: reservations moved in {moved:?}; heights {before:?} -> {now:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chain did not go on without the relay: {before:?} -> {now:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let after = blyan_harness::docker::nat::probe_pairs(
        state,
        &pki,
        &nat.behind,
        &nat.relays,
        1,
        3000,
        &mut |_, _| {},
    )
    .unwrap();
    let failed: Vec<_> = after.samples.iter().filter(|a| !a.connected).collect();
    assert!(
        failed.is_empty(),
        "after the relay loss, attempts failed: {failed:#?}"
    );
}
