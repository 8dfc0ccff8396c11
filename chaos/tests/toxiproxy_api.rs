//! `blyan-chaos-proxy`'s API against an unchanged Toxiproxy client (`toxiproxy_rust`), its
//! error answers against Toxiproxy's status codes, and each toxic's effect measured on real
//! TCP traffic through the proxy.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use toxiproxy_rust::client::Client;
use toxiproxy_rust::proxy::ProxyPack;

/// Starts the API on a free loopback port in a runtime of its own; returns its address.
fn start_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            blyan_chaos::serve(
                listener,
                blyan_chaos::Store::default(),
                std::future::pending(),
            )
            .await
            .unwrap();
        });
    });
    address
}

/// A TCP echo server on loopback; returns its address.
fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 65536];
                loop {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buffer[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    address
}

/// A server that sends `size` bytes to each client and keeps the connection open for 5 s (a
/// proxy is not required to flush what a toxic still holds once the server has closed).
fn source_server(size: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.write_all(&vec![7u8; size]);
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    address
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn call(method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let client = http();
    let request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        other => panic!("method {other}"),
    };
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Median round trip of a 16-byte message over a fresh connection through `address`.
fn rtt_ms(address: &str) -> f64 {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut samples = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        stream.write_all(b"0123456789abcdef").unwrap();
        let mut got = [0u8; 16];
        stream.read_exact(&mut got).unwrap();
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    samples[2]
}

fn wait_listening(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "{address} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn toxiproxy_client_works_unchanged() {
    let api = start_server();
    let echo = echo_server();
    let client = Client::new(api.as_str());
    wait_listening(&api);
    assert!(client.is_running());
    assert!(
        client.version().unwrap().contains("2.12.0"),
        "version reports the Toxiproxy API it follows"
    );

    let proxies = client
        .populate(vec![
            ProxyPack::new("a".into(), "127.0.0.1:0".into(), echo.clone()),
            ProxyPack::new("b".into(), "127.0.0.1:0".into(), echo.clone()),
        ])
        .unwrap();
    assert_eq!(proxies.len(), 2, "populate answers both proxies");
    let all = client.all().unwrap();
    assert_eq!(all.len(), 2);
    let a = client.find_proxy("a").unwrap();
    assert!(a.proxy_pack.enabled);
    assert!(
        !a.proxy_pack.listen.ends_with(":0"),
        "HOST:0 was given a real port: {}",
        a.proxy_pack.listen
    );
    let listen = a.proxy_pack.listen.clone();
    wait_listening(&listen);
    let before = rtt_ms(&listen);

    // A 100 ms latency toxic on the downstream adds 100 ms to every round trip.
    a.with_latency("downstream".into(), 100, 0, 1.0);
    let toxics = a.toxics().unwrap();
    assert_eq!(toxics.len(), 1);
    assert_eq!(toxics[0].name, "latency_downstream");
    assert_eq!(toxics[0].r#type, "latency");
    assert_eq!(toxics[0].attributes["latency"], 100);
    let during = rtt_ms(&listen);
    assert!(
        during - before >= 95.0 && during - before < 250.0,
        "RTT {before:.1} ms -> {during:.1} ms with a 100 ms latency toxic"
    );

    // Removing every toxic restores the link.
    a.delete_all_toxics().unwrap();
    assert!(a.toxics().unwrap().is_empty());
    let after = rtt_ms(&listen);
    assert!(after < before + 50.0, "RTT back to {after:.1} ms");

    // Disabling cuts the link: open connections are dropped and new ones refused.
    let mut open = TcpStream::connect(&listen).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // One round trip first, so that the proxy has taken the connection on.
    let mut echo = [0u8; 4];
    open.write_all(b"pong").unwrap();
    open.read_exact(&mut echo).unwrap();
    a.disable().unwrap();
    assert!(!client.find_proxy("a").unwrap().proxy_pack.enabled);
    let mut buffer = [0u8; 4];
    let _ = open.write_all(b"ping");
    let read = open.read(&mut buffer);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "an open connection is dropped when the proxy is disabled: {read:?}"
    );
    assert!(
        TcpStream::connect(&listen).is_err(),
        "a disabled proxy refuses connections"
    );
    a.enable().unwrap();
    wait_listening(&listen);
    assert!(rtt_ms(&listen) < 100.0);

    // reset: toxics gone, everything enabled.
    let b = client.find_proxy("b").unwrap();
    b.with_latency("upstream".into(), 50, 10, 1.0);
    b.disable().unwrap();
    client.reset().unwrap();
    let b = client.find_proxy("b").unwrap();
    assert!(b.proxy_pack.enabled && b.toxics().unwrap().is_empty());

    b.delete().unwrap();
    assert_eq!(client.all().unwrap().len(), 1);
}

#[test]
fn errors_answer_with_toxiproxy_status_codes() {
    let api = start_server();
    wait_listening(&api);
    let echo = echo_server();
    let url = |path: &str| format!("http://{api}{path}");

    let (status, body) = call("GET", url("/proxies/nope"), None);
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error": "proxy not found", "status": 404}));
    assert_eq!(call("DELETE", url("/proxies/nope"), None).0, 404);
    assert_eq!(call("GET", url("/proxies/nope/toxics"), None).0, 404);

    let new = json!({"name": "p", "listen": "127.0.0.1:0", "upstream": echo});
    let (status, created) = call("POST", url("/proxies"), Some(new.clone()));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "p");
    assert_eq!(created["enabled"], true);
    let (status, body) = call("POST", url("/proxies"), Some(new));
    assert_eq!(status, 409);
    assert_eq!(body["error"], "proxy already exists");
    let (status, body) = call(
        "POST",
        url("/proxies"),
        Some(json!({"name": "q", "listen": "127.0.0.1:0"})),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "missing required field: upstream");

    let (status, body) = call(
        "POST",
        url("/proxies/p/toxics"),
        Some(json!({"type": "bogus", "attributes": {}})),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Bad toxic type: bogus");
    let (status, body) = call(
        "POST",
        url("/proxies/p/toxics"),
        Some(json!({"type": "latency", "toxicity": 3.0, "attributes": {"latency": 10}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("toxicity"));
    let (status, body) = call(
        "POST",
        url("/proxies/p/toxics"),
        Some(json!({"type": "latency", "attributes": {"latency": 10, "jitter": 20}})),
    );
    assert_eq!(status, 400, "jitter above latency is refused: {body}");
    assert_eq!(
        call(
            "POST",
            url("/proxies/nope/toxics"),
            Some(json!({"type": "noop"}))
        )
        .0,
        404
    );

    let toxic = json!({"name": "slow", "type": "latency", "stream": "upstream", "attributes": {"latency": 10}});
    let (status, body) = call("POST", url("/proxies/p/toxics"), Some(toxic.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attributes"], json!({"latency": 10, "jitter": 0}));
    assert_eq!(body["toxicity"], 1.0);
    assert_eq!(call("POST", url("/proxies/p/toxics"), Some(toxic)).0, 409);
    let (status, body) = call(
        "POST",
        url("/proxies/p/toxics/slow"),
        Some(json!({"attributes": {"latency": 30}})),
    );
    assert_eq!(status, 200);
    assert_eq!(body["attributes"]["latency"], 30);
    assert_eq!(body["stream"], "upstream", "an update keeps the stream");
    assert_eq!(call("GET", url("/proxies/p/toxics/none"), None).0, 404);
    assert_eq!(call("DELETE", url("/proxies/p/toxics/none"), None).0, 404);
    assert_eq!(call("DELETE", url("/proxies/p/toxics/slow"), None).0, 204);
    assert_eq!(call("POST", url("/reset"), None).0, 204);
    let (status, body) = call("POST", url("/populate"), Some(json!([{"name": "r"}])));
    assert_eq!(status, 400, "populate names the missing field: {body}");
    assert_eq!(call("DELETE", url("/proxies/p"), None).0, 204);
    assert_eq!(call("GET", url("/proxies"), None).1, json!({}));
}

/// Adds a toxic through the raw API (the fields the Rust client cannot set).
fn add_toxic(api: &str, proxy: &str, toxic: Value) {
    let (status, body) = call(
        "POST",
        format!("http://{api}/proxies/{proxy}/toxics"),
        Some(toxic),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn toxics_have_their_effect_on_traffic() {
    let api = start_server();
    wait_listening(&api);
    let client = Client::new(api.as_str());
    let source = source_server(100 * 1024);
    let echo = echo_server();
    let made = client
        .populate(vec![
            ProxyPack::new("bw".into(), "127.0.0.1:0".into(), source.clone()),
            ProxyPack::new("limit".into(), "127.0.0.1:0".into(), source.clone()),
            ProxyPack::new("timeout".into(), "127.0.0.1:0".into(), echo.clone()),
            ProxyPack::new("reset".into(), "127.0.0.1:0".into(), echo.clone()),
        ])
        .unwrap();
    let listen = |name: &str| {
        made.iter()
            .find(|proxy| proxy.proxy_pack.name == name)
            .unwrap()
            .proxy_pack
            .listen
            .clone()
    };
    let read_all = |address: String| {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let start = Instant::now();
        let mut got = vec![0u8; 100 * 1024];
        let mut size = 0;
        while size < got.len() {
            match stream.read(&mut got[size..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => size += n,
            }
        }
        (size, start.elapsed().as_secs_f64())
    };

    // bandwidth: 100 KiB at 200 KB/s takes about half a second (unlimited: milliseconds).
    let (size, fast) = read_all(listen("bw"));
    assert_eq!(size, 100 * 1024);
    client
        .find_proxy("bw")
        .unwrap()
        .with_bandwidth("downstream".into(), 200, 1.0);
    let (size, slow) = read_all(listen("bw"));
    assert_eq!(size, 100 * 1024);
    assert!(
        slow >= 0.35 && slow > 5.0 * fast,
        "100 KiB took {fast:.3} s unlimited, {slow:.3} s at 200 KB/s"
    );

    // limit_data: the connection is closed after 1,000 bytes.
    add_toxic(
        &api,
        "limit",
        json!({"type": "limit_data", "attributes": {"bytes": 1000}}),
    );
    // Exactly its bytes, then closed (not the 100 KiB the server sends, and no 5 s wait for the
    // server to close), every time: the link delivers what the toxic passed on before it closes
    // (vendor/noxious/BLYAN.md, patch 5; without it, a loaded machine once saw 0 of 1,000).
    for attempt in 0..20 {
        let (size, took) = read_all(listen("limit"));
        assert_eq!(
            size, 1000,
            "connection {attempt}: limit_data delivers exactly its 1,000 bytes"
        );
        assert!(
            took < 4.0,
            "connection {attempt}: closed at the limit, after {took:.2} s"
        );
    }

    // timeout: no data passes; the connection closes after the timeout.
    add_toxic(
        &api,
        "timeout",
        json!({"type": "timeout", "attributes": {"timeout": 300}}),
    );
    let mut stream = TcpStream::connect(listen("timeout")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    stream.write_all(b"hello").unwrap();
    let mut buffer = [0u8; 5];
    let read = stream.read(&mut buffer);
    let waited = start.elapsed().as_secs_f64();
    assert!(
        matches!(read, Ok(0) | Err(_)) && waited >= 0.25,
        "timeout held the data and closed after {waited:.3} s: {read:?}"
    );

    // reset_peer: the connection is closed after its timeout.
    add_toxic(
        &api,
        "reset",
        json!({"type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 200}}),
    );
    let mut stream = TcpStream::connect(listen("reset")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    let _ = stream.write_all(b"hello");
    let read = stream.read(&mut buffer);
    assert!(
        matches!(read, Ok(0) | Err(_)) && start.elapsed() >= Duration::from_millis(150),
        "reset_peer closed the connection after {:?}: {read:?}",
        start.elapsed()
    );
}

/// A proxy server with one proxy `name` to a listener of this test: (API, the listener, the
/// proxy's listen address).
fn proxy_to_a_server(name: &str) -> (String, TcpListener, String) {
    let api = start_server();
    wait_listening(&api);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap().to_string();
    let (status, body) = call(
        "POST",
        format!("http://{api}/proxies"),
        Some(json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream})),
    );
    assert_eq!(status, 201, "{body}");
    let listen = body["listen"].as_str().unwrap().to_string();
    (api, server, listen)
}

/// Whether `from` gets bytes sent by `to` within 1 s (`to` sends first).
fn delivers(to: &mut TcpStream, from: &mut TcpStream) -> bool {
    from.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    to.write_all(b"ping").unwrap();
    let mut buffer = [0u8; 4];
    from.read_exact(&mut buffer).is_ok()
}

/// A toxic added to (or removed from) a proxy acts on the stream it names also on connections
/// already open: `upstream` is what the client sends, `downstream` what the server sends. (The
/// patched noxious rebuilt a live connection's links with the two directions swapped, so every
/// toxic change on a live connection moved its upstream toxics onto the downstream data: a
/// one-way partition blocked the wrong way round.)
#[test]
fn a_toxic_added_to_a_live_connection_acts_on_the_stream_it_names() {
    let (api, server, listen) = proxy_to_a_server("live");
    let mut client = TcpStream::connect(&listen).unwrap();
    let (mut accepted, _) = server.accept().unwrap();
    assert!(delivers(&mut client, &mut accepted) && delivers(&mut accepted, &mut client));
    let black_hole = |stream: &str| {
        json!({"name": format!("hole_{stream}"), "type": "timeout", "stream": stream,
               "attributes": {"timeout": 0}})
    };
    let remove = |stream: &str| {
        let url = format!("http://{api}/proxies/live/toxics/hole_{stream}");
        assert_eq!(call("DELETE", url, None).0, 204);
    };
    // Three changes in a row, so that a swap on every change would show on the first and third.
    add_toxic(&api, "live", black_hole("upstream"));
    assert!(
        !delivers(&mut client, &mut accepted),
        "upstream toxic: client data still passes"
    );
    assert!(
        delivers(&mut accepted, &mut client),
        "upstream toxic: server data stopped"
    );
    remove("upstream");
    add_toxic(&api, "live", black_hole("downstream"));
    assert!(
        delivers(&mut client, &mut accepted),
        "downstream toxic: client data stopped"
    );
    assert!(
        !delivers(&mut accepted, &mut client),
        "downstream toxic: server data still passes"
    );
}

/// Every open connection of a proxy follows each toxic change, however many changes come: the
/// patched noxious once dropped a client from the proxy's state while rebuilding its links,
/// so that client kept the toxics of the change before and missed every later one.
#[test]
fn a_toxic_change_reaches_every_open_connection() {
    let (api, server, listen) = proxy_to_a_server("many");
    let mut pairs: Vec<(TcpStream, TcpStream)> = (0..4)
        .map(|_| {
            let client = TcpStream::connect(&listen).unwrap();
            (client, server.accept().unwrap().0)
        })
        .collect();
    for (round, stream) in ["upstream", "downstream", "upstream", "downstream"]
        .iter()
        .enumerate()
    {
        let name = format!("hole{round}");
        add_toxic(
            &api,
            "many",
            json!({"name": name, "type": "timeout", "stream": stream,
                   "attributes": {"timeout": 0}}),
        );
        for (k, (client, accepted)) in pairs.iter_mut().enumerate() {
            let (up, down) = (delivers(client, accepted), delivers(accepted, client));
            assert_eq!(
                (up, down),
                (*stream == "downstream", *stream == "upstream"),
                "change {round} ({stream} blocked), connection {k}: client->server {up}, server->client {down}"
            );
        }
        let url = format!("http://{api}/proxies/many/toxics/{name}");
        assert_eq!(call("DELETE", url, None).0, 204);
    }
}
