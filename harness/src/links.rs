//! Every directed P2P link through its own fault proxy (`network.proxy = true`).
//!
//! For each pair where node `i` dials node `j`, a proxy `NODEi_to_NODEj` listens on its own
//! port of one `blyan-chaos-proxy` (a process on loopback, or a container on the devnet
//! network) and forwards to node `j`'s P2P port. Nodes run in the P2P static mode and dial only
//! these proxy addresses, so no consensus traffic bypasses the faults. The harness drives the
//! proxy through its Toxiproxy API with the `toxiproxy_rust` client (proxies: populate,
//! enable, disable) and named toxics over plain HTTP (the client names toxics by type only, so
//! two faults on one link would collide).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use toxiproxy_rust::client::Client;
use toxiproxy_rust::proxy::ProxyPack;

use crate::scenario::LinkToxic;

/// One proxied link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedLink {
    pub from: usize,
    pub to: usize,
    pub name: String,
    /// Where the proxy listens (inside its container for Docker).
    pub listen: String,
    /// Node `to`'s P2P address as `HOST:PORT`.
    pub upstream: String,
}

/// The devnet's proxy, as recorded in its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// `HOST:PORT` of the Toxiproxy API from where the harness runs.
    pub api: String,
    /// The proxy process (process backend).
    #[serde(default)]
    pub pid: Option<u32>,
    /// The proxy container (Docker backend).
    #[serde(default)]
    pub container: Option<String>,
    pub links: Vec<ProxiedLink>,
}

/// Where a devnet's proxies go, decided with its plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPlan {
    /// The address nodes dial to reach the proxy.
    pub dial_host: String,
    /// The address the proxies listen on.
    pub listen_host: String,
    /// Link `i -> j` of `n` nodes listens on `port_base + i * n + j`.
    pub port_base: u16,
    /// `HOST:PORT` of the API from where the harness runs.
    pub api: String,
}

impl ProxyPlan {
    pub fn port(&self, from: usize, to: usize, count: usize) -> u16 {
        self.port_base + (from * count + to) as u16
    }
}

/// The links' names: `node0_to_node1`.
pub fn link_name(from: &str, to: &str) -> String {
    format!("{from}_to_{to}")
}

/// `/ip4/A.B.C.D/tcp/P` as `A.B.C.D:P`, `/dns4/NAME/tcp/P` as `NAME:P`.
pub fn host_port(multiaddr: &str) -> Option<String> {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    match parts.as_slice() {
        ["", "ip4" | "dns4", host, "tcp", port, ..] => Some(format!("{host}:{port}")),
        _ => None,
    }
}

/// The multiaddr of `host:port` over TCP: `/ip4/..` for an address, `/dns4/..` for a name.
pub fn tcp_multiaddr(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        format!("/ip4/{host}/tcp/{port}")
    } else {
        format!("/dns4/{host}/tcp/{port}")
    }
}

/// The proxy binary: `BLYAN_CHAOS_PROXY_BIN`, else beside the node binary.
pub fn proxy_bin(node_bin: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("BLYAN_CHAOS_PROXY_BIN") {
        return PathBuf::from(path);
    }
    node_bin.with_file_name("blyan-chaos-proxy")
}

/// [`proxy_bin`], or why it is not there.
pub fn existing_proxy_bin(node_bin: &Path) -> Result<PathBuf, String> {
    let bin = proxy_bin(node_bin);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --workspace --bins` or set BLYAN_CHAOS_PROXY_BIN",
            bin.display()
        ))
    }
}

fn wait_api(api: &str, limit: Duration) -> Result<Client, String> {
    let client = Client::new(api);
    let deadline = Instant::now() + limit;
    while !client.is_running() {
        if Instant::now() > deadline {
            return Err(format!(
                "the proxy API at {api} did not answer in {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(client)
}

/// Creates every link's proxy through the API (Toxiproxy's `POST /populate`).
pub fn populate(info: &ProxyInfo) -> Result<(), String> {
    let client = wait_api(&info.api, Duration::from_secs(20))?;
    let packs: Vec<ProxyPack> = info
        .links
        .iter()
        .map(|link| {
            ProxyPack::new(
                link.name.clone(),
                link.listen.clone(),
                link.upstream.clone(),
            )
        })
        .collect();
    let made = client
        .populate(packs)
        .map_err(|error| format!("populate: {error}"))?;
    if made.len() != info.links.len() {
        return Err(format!(
            "populate made {} proxies of {} (see the proxy's log)",
            made.len(),
            info.links.len()
        ));
    }
    Ok(())
}

/// Starts `blyan-chaos-proxy` for a process devnet (API on `info.api`, log beside the nodes')
/// and creates its proxies; returns the pid.
pub fn start_process(node_bin: &Path, dir: &Path, info: &ProxyInfo) -> Result<u32, String> {
    let bin = existing_proxy_bin(node_bin)?;
    let (host, port) = info
        .api
        .rsplit_once(':')
        .ok_or_else(|| format!("bad proxy API address {:?}", info.api))?;
    let log_path = dir.join("chaos-proxy.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|error| format!("{}: {error}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|error| error.to_string())?;
    use std::os::unix::process::CommandExt;
    let child = Command::new(&bin)
        .args(["--host", host, "--port", port, "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|error| format!("{}: {error}", bin.display()))?;
    let pid = child.id();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    if let Err(error) = populate(info) {
        stop_process(pid);
        return Err(error);
    }
    Ok(pid)
}

/// Whether `pid` is a running `blyan-chaos-proxy`.
pub fn is_proxy_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|command| {
        command
            .split(|byte| *byte == 0)
            .next()
            .is_some_and(|first| first.ends_with(b"blyan-chaos-proxy"))
    })
}

/// Stops a proxy process (SIGTERM, SIGKILL after 3 s).
pub fn stop_process(pid: u32) {
    if !is_proxy_process(pid) {
        return;
    }
    // SAFETY: kill(2) on the pid of a proxy this devnet started; no memory is touched.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while is_proxy_process(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_proxy_process(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Faults on links, through the proxy's API.
pub struct LinkControl {
    api: String,
    client: Client,
    http: reqwest::blocking::Client,
    names: HashMap<(usize, usize), String>,
}

impl LinkControl {
    pub fn new(info: &ProxyInfo) -> LinkControl {
        LinkControl {
            api: info.api.clone(),
            client: Client::new(info.api.as_str()),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client builds"),
            names: info
                .links
                .iter()
                .map(|link| ((link.from, link.to), link.name.clone()))
                .collect(),
        }
    }

    /// The proxies of `links` that exist (beyond 16 nodes not every pair is linked).
    fn proxies<'a>(&'a self, links: &'a [(usize, usize)]) -> impl Iterator<Item = &'a String> {
        links.iter().filter_map(|link| self.names.get(link))
    }

    fn set_enabled(&self, links: &[(usize, usize)], enabled: bool) -> Result<(), String> {
        for name in self.proxies(links) {
            let proxy = self.client.find_proxy(name)?;
            if enabled {
                proxy.enable()?;
            } else {
                proxy.disable()?;
            }
            let now = self.client.find_proxy(name)?;
            if now.proxy_pack.enabled != enabled {
                return Err(format!(
                    "{name}: still enabled = {}",
                    now.proxy_pack.enabled
                ));
            }
        }
        Ok(())
    }

    /// Cuts `links`: their proxies are disabled (connections dropped, new ones refused).
    pub fn cut(&self, links: &[(usize, usize)]) -> Result<(), String> {
        self.set_enabled(links, false)
    }

    pub fn restore(&self, links: &[(usize, usize)]) -> Result<(), String> {
        self.set_enabled(links, true)
    }

    /// Adds `toxic` as `TAG_STREAM` to every proxy of `links`.
    pub fn add_toxic(
        &self,
        links: &[(usize, usize)],
        tag: &str,
        toxic: &LinkToxic,
    ) -> Result<(), String> {
        let attributes: serde_json::Map<String, serde_json::Value> = toxic
            .attributes
            .iter()
            .map(|(name, value)| (name.to_string(), serde_json::Value::from(*value)))
            .collect();
        for name in self.proxies(links) {
            for stream in &toxic.streams {
                let body = serde_json::json!({
                    "name": format!("{tag}_{stream}"),
                    "type": toxic.kind,
                    "stream": stream,
                    "toxicity": 1.0,
                    "attributes": attributes,
                });
                let response = self
                    .http
                    .post(format!("http://{}/proxies/{name}/toxics", self.api))
                    .json(&body)
                    .send()
                    .map_err(|error| format!("{name}: {error}"))?;
                if !response.status().is_success() {
                    let status = response.status();
                    return Err(format!(
                        "{name}: {status}: {}",
                        response.text().unwrap_or_default()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Removes what [`LinkControl::add_toxic`] added (a toxic already gone is fine).
    pub fn remove_toxic(
        &self,
        links: &[(usize, usize)],
        tag: &str,
        toxic: &LinkToxic,
    ) -> Result<(), String> {
        for name in self.proxies(links) {
            for stream in &toxic.streams {
                let response = self
                    .http
                    .delete(format!(
                        "http://{}/proxies/{name}/toxics/{tag}_{stream}",
                        self.api
                    ))
                    .send()
                    .map_err(|error| format!("{name}: {error}"))?;
                let status = response.status();
                if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
                    return Err(format!("{name}: {status}"));
                }
            }
        }
        Ok(())
    }

    /// Every proxy enabled and every toxic removed (Toxiproxy's `POST /reset`).
    pub fn reset(&self) -> Result<(), String> {
        self.client.reset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names() {
        assert_eq!(
            host_port("/ip4/10.210.3.4/tcp/26656").as_deref(),
            Some("10.210.3.4:26656")
        );
        assert_eq!(
            host_port("/dns4/blyan-x-node1/tcp/26656").as_deref(),
            Some("blyan-x-node1:26656")
        );
        assert_eq!(tcp_multiaddr("10.0.0.1", 7), "/ip4/10.0.0.1/tcp/7");
        assert_eq!(tcp_multiaddr("proxy", 7), "/dns4/proxy/tcp/7");
        assert_eq!(host_port("/dns/x/tcp/1"), None);
        assert_eq!(link_name("node0", "node3"), "node0_to_node3");
        let plan = ProxyPlan {
            dial_host: "127.0.0.1".into(),
            listen_host: "127.0.0.1".into(),
            port_base: 30000,
            api: "127.0.0.1:29999".into(),
        };
        assert_eq!(plan.port(0, 1, 4), 30001);
        assert_eq!(plan.port(3, 2, 4), 30014);
    }
}
