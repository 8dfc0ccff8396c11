//! The one writer of node homes: keys, `config.toml`, the shared `genesis.json`, the devnet's
//! certificates and funded accounts, for every backend and renderer, from a `DevnetPlan`.

use std::path::Path;
use std::time::Duration;

use blyan_node::config::Config;
use blyan_node::genesis::{Genesis, GenesisAccount, GenesisValidator};
use blyan_node::home::Home;
use blyan_node::keys::{NodeKey, ValidatorKey};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use super::record::{devnet_dir, save_state, AccountEntry, DevnetState, NodeEntry};
use super::{io, DevnetPlan, NatPlan, TestnetError};

fn derive(seed: u64, what: &str, index: usize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"blyan-devnet/keys/v1");
    hasher.update(seed.to_be_bytes());
    hasher.update(what.as_bytes());
    hasher.update((index as u64).to_be_bytes());
    hasher.finalize().into()
}

/// How long the devnet's certificates live (a devnet is rebuilt long before).
const DEVNET_CERT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// The devnet's CA in `pki_dir` and an admin client certificate (`admin.crt`, `admin.key`).
fn write_pki(pki_dir: &Path, name: &str) -> Result<(), TestnetError> {
    use blyan_node::pki;
    let pki_error =
        |error: pki::PkiError| TestnetError::Invalid(format!("devnet certificates: {error}"));
    pki::init_ca(
        pki_dir,
        &format!("Blyan devnet {name} CA"),
        DEVNET_CERT_LIFETIME,
        true,
    )
    .map_err(pki_error)?;
    pki::issue(
        pki_dir,
        &pki::IssueRequest {
            name: "admin".into(),
            kind: pki::CertKind::Client,
            sans: Vec::new(),
            lifetime: DEVNET_CERT_LIFETIME,
            out_dir: None,
        },
    )
    .map_err(pki_error)?;
    Ok(())
}

/// A server certificate for `moniker` (named by the URL's host, 127.0.0.1, localhost and the
/// moniker) with the CA and its CRL copied into `HOME/tls/`, and the `[api.tls]` that uses them.
/// The CA key stays in the devnet's `pki/`, out of the node homes.
fn node_certificate(
    pki_dir: &Path,
    home: &Path,
    moniker: &str,
    listen: &str,
    url: &str,
) -> Result<blyan_node::config::ApiTlsConfig, TestnetError> {
    use blyan_node::pki;
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(host, _)| host.to_string())
        .ok_or_else(|| TestnetError::Invalid(format!("HTTPS URL {url:?} has no host:port")))?;
    let mut sans = vec![host, "127.0.0.1".to_string(), "localhost".to_string()];
    sans.push(moniker.to_string());
    sans.dedup();
    let tls_dir = home.join("tls");
    pki::issue(
        pki_dir,
        &pki::IssueRequest {
            name: moniker.to_string(),
            kind: pki::CertKind::Server,
            sans,
            lifetime: DEVNET_CERT_LIFETIME,
            out_dir: Some(tls_dir.clone()),
        },
    )
    .map_err(|error| TestnetError::Invalid(format!("{moniker} certificate: {error}")))?;
    for file in ["ca.crt", "ca.crl"] {
        std::fs::copy(pki_dir.join(file), tls_dir.join(file)).map_err(io(&tls_dir))?;
    }
    Ok(blyan_node::config::ApiTlsConfig {
        enabled: true,
        listen: listen.to_string(),
        cert_file: format!("tls/{moniker}.crt"),
        key_file: format!("tls/{moniker}.key"),
        client_ca_file: "tls/ca.crt".into(),
        crl_file: "tls/ca.crl".into(),
        ca_key_file: String::new(),
        renew_before_s: 0,
    })
}

/// Whom node `index` of `count` dials: everyone in devnets of up to 16 nodes; beyond that the
/// nodes at distances 1, 2, 4, 8, ... around the ring (about 2 log2(n) links per node, and any
/// node reaches any other in log2(n) hops), so a 100-node devnet is not 9,900 TLS links.
pub fn bootstrap_peers(index: usize, count: usize) -> Vec<usize> {
    if count <= 16 {
        return (0..count).filter(|other| *other != index).collect();
    }
    let mut peers = Vec::new();
    let mut distance = 1;
    while distance < count {
        let other = (index + distance) % count;
        if !peers.contains(&other) {
            peers.push(other);
        }
        distance *= 2;
    }
    peers
}

/// Writes homes, keys, configs and a shared genesis for every node under `BASE/NAME/` (wiping
/// an earlier devnet of that name) and records the devnet; starts nothing.
pub fn write_devnet(base: &Path, plan: &DevnetPlan) -> Result<DevnetState, TestnetError> {
    let state = write_homes(&devnet_dir(base, &plan.name), plan)?;
    save_state(base, &state)?;
    Ok(state)
}

/// P2P settings of a node in a NAT topology: discovery on (no static mode); public nodes
/// announce their address and relays serve circuits; a node behind NAT (or a firewall)
/// announces nothing, learns it is private (AutoNAT) and reserves slots on the relays. Everyone
/// dials the public nodes directly and the nodes behind NAT through each relay.
fn nat_config(
    p2p: &mut blyan_node::config::P2pConfig,
    index: usize,
    plan: &DevnetPlan,
    nat: &NatPlan,
    keys: &[NodeKey],
) {
    let direct = |other: usize| {
        format!(
            "{}/p2p/{}",
            plan.nodes[other].p2p_address,
            keys[other].peer_id()
        )
    };
    p2p.static_mode = false;
    p2p.relays = nat.relays.iter().map(|&relay| direct(relay)).collect();
    if nat.behind.contains(&index) {
        p2p.external_addresses.clear();
    } else {
        p2p.relay_server = nat.relays.contains(&index);
        // Every node of the devnet dials through the relays, and `devnet nat-probe` opens
        // circuits by the hundred.
        p2p.relay_circuits_per_minute = 600;
    }
    p2p.bootstrap = (0..plan.nodes.len())
        .filter(|other| *other != index)
        .flat_map(|other| {
            if nat.behind.contains(&other) {
                nat.relays
                    .iter()
                    .map(|&relay| {
                        format!(
                            "{}/p2p-circuit/p2p/{}",
                            direct(relay),
                            keys[other].peer_id()
                        )
                    })
                    .collect::<Vec<_>>()
            } else {
                vec![direct(other)]
            }
        })
        .collect();
}

/// Every node's libp2p key and validator key, derived from the seed (a twin runs the
/// validator key of the node it copies).
fn keys(plan: &DevnetPlan) -> Result<(Vec<NodeKey>, Vec<ValidatorKey>), TestnetError> {
    let count = plan.nodes.len();
    let node_keys: Vec<NodeKey> = (0..count)
        .map(|index| {
            libp2p_identity::Keypair::ed25519_from_bytes(derive(plan.seed, "node", index))
                .map(|keypair| NodeKey { keypair })
                .map_err(|error| TestnetError::Key(error.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let key_index = |index: usize| {
        plan.twins
            .iter()
            .find(|(twin, _)| *twin == plan.nodes[index].moniker)
            .and_then(|(_, of)| plan.nodes.iter().position(|node| &node.moniker == of))
            .unwrap_or(index)
    };
    let validator_keys = (0..count)
        .map(|index| ValidatorKey {
            signing: SigningKey::from_bytes(&derive(plan.seed, "validator", key_index(index))),
        })
        .collect();
    Ok((node_keys, validator_keys))
}

/// The shared genesis: the validators with stake, the funded accounts, the staking rules.
fn genesis(
    plan: &DevnetPlan,
    validator_keys: &[ValidatorKey],
    accounts: &[AccountEntry],
) -> Result<Genesis, TestnetError> {
    let genesis = Genesis {
        chain_id: plan.chain_id.clone(),
        genesis_time_ms: plan.genesis_time_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis() as u64)
                .unwrap_or(0)
        }),
        validators: plan
            .nodes
            .iter()
            .zip(validator_keys)
            .filter(|(node, _)| node.stake > 0)
            .map(|(node, key)| GenesisValidator {
                name: node.moniker.clone(),
                public_key: key.public_hex(),
                power: node.stake,
            })
            .collect(),
        accounts: accounts
            .iter()
            .map(|account| GenesisAccount {
                address: account.address.clone(),
                balance: account.balance,
            })
            .collect(),
        staking: plan.staking.clone(),
    };
    genesis
        .validate("generated genesis")
        .map_err(|error| TestnetError::Invalid(error.to_string()))?;
    Ok(genesis)
}

/// Whom node `index` dials: its bootstrap peers, directly or through their links' proxies.
fn bootstrap(plan: &DevnetPlan, index: usize, node_keys: &[NodeKey]) -> Vec<String> {
    let count = plan.nodes.len();
    bootstrap_peers(index, count)
        .into_iter()
        .map(|other| {
            let address = match &plan.proxy {
                Some(proxy) => {
                    crate::links::tcp_multiaddr(&proxy.dial_host, proxy.port(index, other, count))
                }
                None => plan.nodes[other].p2p_address.clone(),
            };
            format!("{address}/p2p/{}", node_keys[other].peer_id())
        })
        .collect()
}

/// Node `index`'s `config.toml`: addresses, peers, timeouts and its devnet switches.
fn node_config(
    plan: &DevnetPlan,
    index: usize,
    node_keys: &[NodeKey],
    tls: Option<blyan_node::config::ApiTlsConfig>,
) -> Result<Config, TestnetError> {
    let node = &plan.nodes[index];
    let mut config = Config::new(&node.moniker, &plan.chain_id);
    config.api.listen = node.api_listen.clone();
    // Devnets are driven hard on purpose, by one load generator and one checker address.
    config.api.rate_limit_per_s = 0;
    if let Some(tls) = tls {
        config.api.tls = tls;
    }
    config.p2p.listen = vec![node.p2p_listen.clone()];
    config.p2p.external_addresses = vec![node.p2p_address.clone()];
    config.p2p.static_mode = true;
    match &plan.nat {
        Some(nat) => nat_config(&mut config.p2p, index, plan, nat, node_keys),
        None => config.p2p.bootstrap = bootstrap(plan, index, node_keys),
    }
    config.consensus.timeout_commit_ms = plan.timeout_commit_ms;
    config.consensus.timeout_propose_ms = plan.timeout_propose_ms;
    config.consensus.timeout_prevote_ms = plan.timeout_prevote_ms;
    config.consensus.timeout_precommit_ms = plan.timeout_precommit_ms;
    if let Some(interval) = plan.snapshot_interval {
        config.consensus.snapshot_interval = interval;
    }
    if plan.commit_delay_ms > 0 {
        config.devnet.enabled = true;
        config.devnet.commit_delay_ms = plan.commit_delay_ms;
    }
    if plan.equivocators.contains(&node.moniker) {
        config.devnet.enabled = true;
        config.devnet.equivocate_votes = true;
    }
    if let Some((_, settings)) = plan
        .byzantine
        .iter()
        .find(|(name, _)| *name == node.moniker)
    {
        let delay = config.devnet.commit_delay_ms;
        config.devnet = settings.clone();
        config.devnet.enabled = true;
        config.devnet.commit_delay_ms = delay;
    }
    config.log.level = plan.log_level.clone();
    config
        .validate("generated config")
        .map_err(|error| TestnetError::Invalid(error.to_string()))?;
    Ok(config)
}

/// The link proxy's links, one per directed bootstrap link.
fn proxy_info(plan: &DevnetPlan) -> Result<Option<crate::links::ProxyInfo>, TestnetError> {
    let Some(proxy) = &plan.proxy else {
        return Ok(None);
    };
    let count = plan.nodes.len();
    let mut links = Vec::new();
    for from in 0..count {
        for to in bootstrap_peers(from, count) {
            let (source, sink) = (&plan.nodes[from], &plan.nodes[to]);
            let upstream = crate::links::host_port(&sink.p2p_address).ok_or_else(|| {
                TestnetError::Invalid(format!(
                    "{}: the link proxy needs a /ip4/../tcp/.. or /dns4/../tcp/.. P2P address, got {}",
                    sink.moniker, sink.p2p_address
                ))
            })?;
            links.push(crate::links::ProxiedLink {
                from,
                to,
                name: crate::links::link_name(&source.moniker, &sink.moniker),
                listen: format!("{}:{}", proxy.listen_host, proxy.port(from, to, count)),
                upstream,
            });
        }
    }
    Ok(Some(crate::links::ProxyInfo {
        api: proxy.api.clone(),
        pid: None,
        container: None,
        links,
    }))
}

/// Writes `DIR/accounts.json` and one home per node (`DIR/<moniker>/`: keys, config, genesis),
/// wiping DIR first; returns the devnet's description without recording it.
pub fn write_homes(dir: &Path, plan: &DevnetPlan) -> Result<DevnetState, TestnetError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (node_keys, validator_keys) = keys(plan)?;
    let accounts: Vec<AccountEntry> = (0..plan.accounts)
        .map(|index| {
            let key = SigningKey::from_bytes(&derive(plan.seed, "account", index));
            AccountEntry {
                address: hex::encode(key.verifying_key().to_bytes()),
                secret_key: hex::encode(key.to_bytes()),
                balance: plan.account_balance,
            }
        })
        .collect();
    let genesis = genesis(plan, &validator_keys, &accounts)?;
    let accounts_path = dir.join("accounts.json");
    let text = serde_json::to_string_pretty(&accounts).expect("accounts serialise");
    std::fs::write(&accounts_path, text).map_err(io(&accounts_path))?;
    let pki_dir = dir.join("pki");
    if plan.nodes.iter().any(|node| node.api_https.is_some()) {
        write_pki(&pki_dir, &plan.name)?;
    }
    let key_error = |error: blyan_node::keys::KeyError| TestnetError::Key(error.to_string());
    let mut nodes = Vec::with_capacity(plan.nodes.len());
    for (index, node) in plan.nodes.iter().enumerate() {
        let home = Home::new(dir.join(&node.moniker));
        std::fs::create_dir_all(home.root()).map_err(io(home.root()))?;
        node_keys[index]
            .write(&home.node_key(), true)
            .map_err(key_error)?;
        validator_keys[index]
            .write(&home.validator_key(), true)
            .map_err(key_error)?;
        let tls = match &node.api_https {
            Some((listen, url)) => Some(node_certificate(
                &pki_dir,
                home.root(),
                &node.moniker,
                listen,
                url,
            )?),
            None => None,
        };
        let config = node_config(plan, index, &node_keys, tls)?;
        std::fs::write(home.config(), config.template()).map_err(io(&home.config()))?;
        genesis.save(&home.genesis()).map_err(io(&home.genesis()))?;
        nodes.push(NodeEntry {
            index,
            moniker: node.moniker.clone(),
            home: home.root().to_path_buf(),
            api: node.api_url.clone(),
            p2p: format!("{}/p2p/{}", node.p2p_address, node_keys[index].peer_id()),
            peer_id: node_keys[index].peer_id().to_string(),
            validator_key: validator_keys[index].public_hex(),
            validator: node.stake > 0,
            pid: None,
            container: None,
            log: dir.join(format!("{}.log", node.moniker)),
            api_https: node.api_https.as_ref().map(|(_, url)| url.clone()),
            bin: None,
            lazyfs_pid: None,
        });
    }
    Ok(DevnetState {
        name: plan.name.clone(),
        backend: plan.backend,
        chain_id: plan.chain_id.clone(),
        seed: plan.seed,
        node_bin: plan.node_bin.clone(),
        nodes,
        started_ms: genesis.genesis_time_ms,
        network: None,
        proxy: proxy_info(plan)?,
        swarm: None,
        nat: plan.nat.clone(),
    })
}
