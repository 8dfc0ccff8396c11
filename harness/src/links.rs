//! Every directed P2P link through its own fault proxy (`network.proxy = true`).
//!
//! For each pair where node `i` dials node `j`, a proxy `NODEi_to_NODEj` listens on its own
//! port of one `blyan-chaos-proxy` (a process on loopback, or a container on the devnet
//! network) and forwards to node `j`'s P2P port. Nodes run in the P2P static mode and dial only
//! these proxy addresses, so no consensus traffic bypasses the faults. The harness drives the
//! proxy through its Toxiproxy API over plain HTTP: proxies (populate, enable, disable, reset)
//! and named toxics, `TAG_STREAM`, so that two faults on one link do not collide. (The
//! `toxiproxy_rust` client names toxics by type only and brings a second HTTP stack, reqwest
//! 0.11 with OpenSSL, into the build; `blyan-chaos`'s tests keep it to prove the API compatible.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A toxic a link fault puts on each of its proxies.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkToxic {
    /// The Toxiproxy toxic type: latency, bandwidth, timeout, reset_peer.
    pub kind: String,
    /// Streams it goes on: latency goes downstream only (each round trip crosses it once),
    /// the others both ways.
    pub streams: Vec<&'static str>,
    pub attributes: Vec<(&'static str, u64)>,
}

impl LinkToxic {
    /// Toxiproxy's `timeout` of 0 ms: the data stops and the connection is never closed.
    pub fn black_hole() -> LinkToxic {
        LinkToxic {
            kind: "timeout".into(),
            streams: vec!["upstream", "downstream"],
            attributes: vec![("timeout", 0)],
        }
    }
}

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

/// A proxy as Toxiproxy's API describes it (`POST /populate`, `GET /proxies/NAME`).
#[derive(Debug, Serialize, Deserialize)]
struct ProxyRecord {
    name: String,
    listen: String,
    upstream: String,
    enabled: bool,
}

/// The few calls of Toxiproxy's API the harness makes, with the error naming what failed.
struct ToxiproxyApi {
    api: String,
    http: reqwest::blocking::Client,
}

impl ToxiproxyApi {
    fn new(api: &str) -> ToxiproxyApi {
        ToxiproxyApi {
            api: api.to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client builds"),
        }
    }

    /// Sends a request and reads its JSON answer (`None` for an empty body).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, String> {
        let url = format!("http://{}/{path}", self.api);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .send()
            .map_err(|error| format!("{method} {url}: {error}"))?;
        let status = response.status();
        let text = response
            .text()
            .map_err(|error| format!("{method} {url}: {error}"))?;
        if !status.is_success() {
            return Err(format!("{method} {url}: {status}: {text}"));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| format!("{method} {url}: not JSON ({error}): {text}"))
    }

    fn proxy(&self, name: &str) -> Result<ProxyRecord, String> {
        let answer = self.call(reqwest::Method::GET, &format!("proxies/{name}"), None)?;
        serde_json::from_value(answer.unwrap_or_default())
            .map_err(|error| format!("proxy {name}: {error}"))
    }
}

fn wait_api(api: &str, limit: Duration) -> Result<ToxiproxyApi, String> {
    let deadline = Instant::now() + limit;
    loop {
        let client = ToxiproxyApi::new(api);
        // `GET /version` answers plain text.
        let version = client.http.get(format!("http://{api}/version")).send();
        if version.is_ok_and(|answer| answer.status().is_success()) {
            return Ok(client);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the proxy API at {api} did not answer in {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates every link's proxy through the API (Toxiproxy's `POST /populate`).
pub fn populate(info: &ProxyInfo) -> Result<(), String> {
    let client = wait_api(&info.api, Duration::from_secs(20))?;
    let records: Vec<ProxyRecord> = info
        .links
        .iter()
        .map(|link| ProxyRecord {
            name: link.name.clone(),
            listen: link.listen.clone(),
            upstream: link.upstream.clone(),
            enabled: true,
        })
        .collect();
    let body = serde_json::to_value(&records).map_err(|error| error.to_string())?;
    let answer = client
        .call(reqwest::Method::POST, "populate", Some(body))
        .map_err(|error| format!("populate: {error}"))?;
    let made = answer
        .as_ref()
        .and_then(|answer| answer["proxies"].as_array())
        .map_or(0, Vec::len);
    if made != info.links.len() {
        return Err(format!(
            "populate made {made} proxies of {} (see the proxy's log)",
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
    client: ToxiproxyApi,
    names: HashMap<(usize, usize), String>,
}

impl LinkControl {
    pub fn new(info: &ProxyInfo) -> LinkControl {
        LinkControl {
            client: ToxiproxyApi::new(&info.api),
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
            let path = format!("proxies/{name}");
            let body = serde_json::json!({ "enabled": enabled });
            self.client.call(reqwest::Method::POST, &path, Some(body))?;
            let now = self.client.proxy(name)?;
            if now.enabled != enabled {
                return Err(format!("{name}: still enabled = {}", now.enabled));
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
        for name in self.proxies(links) {
            for stream in &toxic.streams {
                self.post_toxic(name, stream, tag, toxic)?;
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
                self.delete_toxic(name, stream, tag)?;
            }
        }
        Ok(())
    }

    /// The proxy streams that carry the data of each directed pair `(from, to)`: the upstream
    /// of `from_to_to` (from dialled to) and the downstream of `to_to_from` (to dialled from).
    fn streams_of<'a>(
        &'a self,
        directions: &'a [(usize, usize)],
    ) -> impl Iterator<Item = (&'a String, &'static str)> {
        directions.iter().flat_map(|&(from, to)| {
            let up = self.names.get(&(from, to)).map(|name| (name, "upstream"));
            let down = self.names.get(&(to, from)).map(|name| (name, "downstream"));
            up.into_iter().chain(down)
        })
    }

    /// Drops the data of each directed pair `(from, to)` in `directions` (a `timeout` toxic of
    /// 0 ms, Toxiproxy's "stop all data, never close", on the streams that carry it), so that
    /// `from`'s bytes no longer reach `to` while `to`'s still reach `from` and both
    /// connections stay open.
    pub fn drop_directions(&self, directions: &[(usize, usize)], tag: &str) -> Result<(), String> {
        let toxic = LinkToxic::black_hole();
        for (name, stream) in self.streams_of(directions) {
            self.post_toxic(name, stream, tag, &toxic)?;
        }
        Ok(())
    }

    /// Undoes [`LinkControl::drop_directions`].
    pub fn restore_directions(
        &self,
        directions: &[(usize, usize)],
        tag: &str,
    ) -> Result<(), String> {
        for (name, stream) in self.streams_of(directions) {
            self.delete_toxic(name, stream, tag)?;
        }
        Ok(())
    }

    fn post_toxic(
        &self,
        name: &str,
        stream: &str,
        tag: &str,
        toxic: &LinkToxic,
    ) -> Result<(), String> {
        let attributes: serde_json::Map<String, serde_json::Value> = toxic
            .attributes
            .iter()
            .map(|(name, value)| (name.to_string(), serde_json::Value::from(*value)))
            .collect();
        let body = serde_json::json!({
            "name": format!("{tag}_{stream}"),
            "type": toxic.kind,
            "stream": stream,
            "toxicity": 1.0,
            "attributes": attributes,
        });
        self.client
            .call(
                reqwest::Method::POST,
                &format!("proxies/{name}/toxics"),
                Some(body),
            )
            .map(|_| ())
    }

    /// Removes the toxic `TAG_STREAM` of proxy `name`; one already gone is fine.
    fn delete_toxic(&self, name: &str, stream: &str, tag: &str) -> Result<(), String> {
        let response = self
            .client
            .http
            .delete(format!(
                "http://{}/proxies/{name}/toxics/{tag}_{stream}",
                self.client.api
            ))
            .send()
            .map_err(|error| format!("{name}: {error}"))?;
        let status = response.status();
        if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
            return Err(format!("{name}: {status}"));
        }
        Ok(())
    }

    /// Every proxy enabled and every toxic removed (Toxiproxy's `POST /reset`).
    pub fn reset(&self) -> Result<(), String> {
        self.client
            .call(reqwest::Method::POST, "reset", None)
            .map(|_| ())
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

    /// The harness's own Toxiproxy calls against `blyan-chaos-proxy` in this process: populate
    /// makes every proxy, a cut disables exactly the links named (and stops their traffic), a
    /// named toxic is added and removed, and reset enables every proxy again.
    #[test]
    fn the_api_client_populates_cuts_restores_and_names_toxics() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let api = listener.local_addr().unwrap().to_string();
        let store = blyan_chaos::Store::default();
        runtime.spawn(blyan_chaos::serve(
            listener,
            store.clone(),
            std::future::pending(),
        ));
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream_at = upstream.local_addr().unwrap().to_string();
        let free_port = || {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().to_string()
        };
        let links: Vec<ProxiedLink> = [(0, 1), (1, 0)]
            .iter()
            .map(|&(from, to)| ProxiedLink {
                from,
                to,
                name: link_name(&format!("node{from}"), &format!("node{to}")),
                listen: free_port(),
                upstream: upstream_at.clone(),
            })
            .collect();
        let info = ProxyInfo {
            api,
            pid: None,
            container: None,
            links: links.clone(),
        };
        populate(&info).unwrap();
        let control = LinkControl::new(&info);
        let enabled = |name: &str| runtime.block_on(store.get(name)).unwrap().enabled;
        assert!(enabled("node0_to_node1") && enabled("node1_to_node0"));

        control.cut(&[(0, 1), (5, 6)]).unwrap();
        assert!(!enabled("node0_to_node1"), "the cut link is disabled");
        assert!(enabled("node1_to_node0"), "the other direction is not");
        let refused = std::net::TcpStream::connect(&links[0].listen);
        assert!(refused.is_err(), "a disabled proxy refuses connections");
        control.restore(&[(0, 1)]).unwrap();
        assert!(enabled("node0_to_node1"));
        assert!(std::net::TcpStream::connect(&links[0].listen).is_ok());

        let toxic = LinkToxic {
            kind: "latency".into(),
            streams: vec!["downstream"],
            attributes: vec![("latency", 50)],
        };
        control.add_toxic(&[(1, 0)], "slow", &toxic).unwrap();
        let toxics = runtime.block_on(store.toxics("node1_to_node0")).unwrap();
        let names: Vec<String> = toxics.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, ["slow_downstream"]);
        let again = control.add_toxic(&[(1, 0)], "slow", &toxic);
        assert!(again.is_err(), "a second toxic of the same name is refused");
        control.remove_toxic(&[(1, 0)], "slow", &toxic).unwrap();
        control.remove_toxic(&[(1, 0)], "slow", &toxic).unwrap();
        assert!(runtime
            .block_on(store.toxics("node1_to_node0"))
            .unwrap()
            .is_empty());

        control.cut(&[(0, 1), (1, 0)]).unwrap();
        control.reset().unwrap();
        assert!(enabled("node0_to_node1") && enabled("node1_to_node0"));
        let unknown = ProxyInfo {
            api: "127.0.0.1:1".into(),
            ..info
        };
        let error = LinkControl::new(&unknown).cut(&[(0, 1)]).unwrap_err();
        assert!(error.contains("127.0.0.1:1"), "{error}");
    }
}
