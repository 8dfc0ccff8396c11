//! The node API over HTTPS with client certificates for the admin endpoints, through the real
//! binary: `certs init-ca | issue | revoke`, a node started with `[api.tls]`, and TLS clients.
//!
//! Shown here: a request without a client certificate to an admin endpoint is refused; a
//! revoked client certificate gets no admin access (revoked before start, and revoked while
//! the node runs); a certificate about to expire is renewed by the node before expiry and
//! clients keep working across the renewal; the rate limit answers 429 and refused inputs are
//! counted in the metrics; deeply nested, oversized, malformed and forged requests get clear
//! errors; a rotated node key is announced at `/identity` with the validator's signature.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ok(output: std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        common::stderr(&output)
    );
    common::stdout(&output)
}

fn certs(args: &[&str]) -> String {
    let mut all = vec!["certs"];
    all.extend_from_slice(args);
    ok(common::node(&all), &all.join(" "))
}

/// A TLS client: trusts the CA, presents `identity` (NAME.crt / NAME.key in the CA dir) if any.
fn client_config(ca: &Path, identity: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca.join("ca.crt")).expect("ca.crt"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = vec![
                CertificateDer::from_pem_file(ca.join(format!("{name}.crt")))
                    .expect("client certificate"),
            ];
            let key = PrivateKeyDer::from_pem_file(ca.join(format!("{name}.key"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
    };
    Arc::new(config)
}

struct Answer {
    status: u16,
    body: String,
    /// The serial (hex) of the certificate the server presented.
    server_serial: String,
}

/// One HTTPS request; Err when the TLS handshake or the exchange fails.
fn https(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
) -> Result<Answer, String> {
    let mut tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("ip name");
    let mut session =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut stream = rustls::Stream::new(&mut session, &mut tcp);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without close_notify after a full answer is fine.
        Err(error) if !raw.is_empty() && error.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(error) => return Err(error.to_string()),
    }
    let server_serial = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| blyan_node::pki::facts_of_der(leaf).ok())
        .map(|facts| facts.serial)
        .unwrap_or_default();
    let response = common::parse_response(&raw);
    if response.status == 0 {
        return Err(format!("no HTTP status in {:?}", response.headers));
    }
    Ok(Answer {
        status: response.status,
        body: response.body,
        server_serial,
    })
}

fn start_node(home: &Path, listen: &str, extra_env: &[(&str, &str)]) -> Node {
    let mut command = Command::new(common::BIN);
    command
        .args([
            "start",
            "--home",
            home.to_str().unwrap(),
            "--api-listen",
            listen,
        ])
        .env("BLYAN_P2P_LISTEN", "/ip4/127.0.0.1/tcp/0")
        .env("BLYAN_CONSENSUS_TIMEOUT_COMMIT_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("BLYAN_") {
            command.env_remove(name);
        }
    }
    for (name, value) in extra_env {
        command.env(name, value);
    }
    Node(command.spawn().expect("start the node"))
}

fn wait_https(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(answer) = https(addr, config, "GET", "/health") {
            if answer.status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the HTTPS API did not come up in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tls_section(ca: &Path, node: &str, renew_before_s: u64) -> String {
    let path = |name: &str| ca.join(name).display().to_string();
    format!(
        "\n[api.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\ncrl_file = {:?}\nca_key_file = {:?}\nrenew_before_s = {renew_before_s}\n",
        path(&format!("{node}.crt")),
        path(&format!("{node}.key")),
        path("ca.crt"),
        path("ca.crl"),
        path("ca.key"),
    )
}

/// Adds `[api.tls]` (node0's certificate from `ca`, renewal 60 s before expiry) to the home's
/// config, starts the node and waits until it answers over HTTPS.
fn start_tls_node(home: &Path, ca: &Path) -> (Node, SocketAddr) {
    let mut config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    config.push_str(&tls_section(ca, "node0", 60));
    std::fs::write(home.join("config.toml"), config).unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let addr: SocketAddr = listen.parse().unwrap();
    let node = start_node(home, &listen, &[]);
    wait_https(addr, &client_config(ca, None));
    (node, addr)
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().join("home");
    let ca = dir.path().join("ca");
    common::init_home(&home);
    let out = certs(&[
        "init-ca",
        "--dir",
        ca.to_str().unwrap(),
        "--valid-for",
        "1d",
    ]);
    assert!(out.contains("CA \"Blyan devnet CA\" created"), "{out}");
    (dir, home, ca)
}

#[test]
fn admin_endpoints_need_an_unrevoked_client_certificate() {
    let (_dir, home, ca) = setup();
    let ca_dir = ca.to_str().unwrap();
    certs(&[
        "issue",
        "--dir",
        ca_dir,
        "--name",
        "node0",
        "--san",
        "127.0.0.1,localhost",
    ]);
    certs(&[
        "issue", "--dir", ca_dir, "--name", "admin", "--kind", "client",
    ]);
    certs(&[
        "issue", "--dir", ca_dir, "--name", "mallory", "--kind", "client",
    ]);
    certs(&[
        "issue", "--dir", ca_dir, "--name", "carol", "--kind", "client",
    ]);
    let out = certs(&["revoke", "--dir", ca_dir, "--name", "mallory"]);
    assert!(out.contains("revoked 1 certificate"), "{out}");
    let listed = certs(&["list", "--dir", ca_dir]);
    assert!(
        listed.contains("mallory") && listed.contains("revoked"),
        "{listed}"
    );
    let (_node, addr) = start_tls_node(&home, &ca);
    let anonymous = client_config(&ca, None);

    // Public endpoints need no client certificate.
    let status = https(addr, &anonymous, "GET", "/status").expect("status over TLS");
    assert_eq!(status.status, 200, "{}", status.body);
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = common::http(addr, "GET", "/status", b"");
    assert!(
        plain.map(|r| r.status != 200).unwrap_or(true),
        "plain HTTP was answered on the HTTPS port"
    );

    // No client certificate: refused, with a clear error.
    let refused = https(addr, &anonymous, "POST", "/admin/reload").expect("an answer");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("client_certificate_required"),
        "{}",
        refused.body
    );
    let refused = https(addr, &anonymous, "POST", "/checkpoints").expect("an answer");
    assert_eq!(refused.status, 403, "{}", refused.body);

    // A valid client certificate: admitted.
    let admin = client_config(&ca, Some("admin"));
    let reloaded = https(addr, &admin, "POST", "/admin/reload").expect("admin over TLS");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert!(reloaded.body.contains("serial"), "{}", reloaded.body);
    // Devnet controls are off on a node that is not in devnet mode.
    let devnet = https(addr, &admin, "GET", "/admin/devnet").expect("an answer");
    assert_eq!(devnet.status, 404, "{}", devnet.body);

    // A certificate revoked before the node started: no admin access (the handshake or the
    // request is refused).
    let mallory = client_config(&ca, Some("mallory"));
    match https(addr, &mallory, "POST", "/admin/reload") {
        Err(_) => {}
        Ok(answer) => assert_eq!(
            answer.status, 403,
            "revoked certificate admitted: {}",
            answer.body
        ),
    }

    // Revoked while the node runs: refused within seconds, without a restart.
    let carol = client_config(&ca, Some("carol"));
    assert_eq!(
        https(addr, &carol, "POST", "/admin/reload").unwrap().status,
        200
    );
    certs(&["revoke", "--dir", ca_dir, "--name", "carol"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let admitted =
            matches!(https(addr, &carol, "POST", "/admin/reload"), Ok(a) if a.status == 200);
        if !admitted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a certificate revoked at runtime kept admin access for 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The admin certificate still works after the CRL reload.
    assert_eq!(
        https(addr, &admin, "POST", "/admin/reload").unwrap().status,
        200
    );

    // Refusals are counted by reason.
    let metrics = https(addr, &anonymous, "GET", "/metrics").expect("metrics");
    let count = |source: &str, reason: &str| -> f64 {
        let prefix =
            format!("blyan_refused_inputs_total{{source=\"{source}\",reason=\"{reason}\"}} ");
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("api", "client_certificate_required") >= 2.0,
        "{}",
        metrics.body
    );
    assert!(
        count("connection", "client_certificate_revoked")
            + count("api", "client_certificate_revoked")
            >= 2.0,
        "{}",
        metrics.body
    );
}

#[test]
fn the_certificate_is_renewed_before_expiry_and_clients_keep_working() {
    let (_dir, home, ca) = setup();
    let ca_dir = ca.to_str().unwrap();
    // 66 s of validity from a certificate backdated by 60 s: it is due (renew_before_s = 60)
    // about 6 s after it is issued, and every renewal is due 6 s later again.
    certs(&[
        "issue",
        "--dir",
        ca_dir,
        "--name",
        "node0",
        "--san",
        "127.0.0.1",
        "--valid-for",
        "66s",
    ]);
    let first = blyan_node::pki::facts_of_pem_file(&ca.join("node0.crt")).unwrap();
    let (_node, addr) = start_tls_node(&home, &ca);
    let client = client_config(&ca, None);

    let started = Instant::now();
    let mut serials = Vec::<String>::new();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(16) {
        let answer = https(addr, &client, "GET", "/status").unwrap_or_else(|error| {
            panic!(
                "a request failed across the renewal after {:?}: {error}",
                started.elapsed()
            )
        });
        assert_eq!(answer.status, 200, "{}", answer.body);
        if serials.last() != Some(&answer.server_serial) {
            serials.push(answer.server_serial.clone());
        }
        requests += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        serials.first(),
        Some(&first.serial),
        "the first certificate served"
    );
    assert!(
        serials.len() >= 2,
        "no renewal seen in 16 s ({requests} requests): {serials:?}"
    );
    // Every certificate served was valid when seen: the renewed one expires later.
    let now = blyan_node::pki::facts_of_pem_file(&ca.join("node0.crt")).unwrap();
    assert!(
        now.not_after_unix > first.not_after_unix,
        "{now:?} vs {first:?}"
    );
    assert!(now.not_after_unix > blyan_node::pki::unix_now());
}

#[test]
fn the_rate_limit_answers_429_per_client_address() {
    let (_dir, home, _ca) = setup();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let addr: SocketAddr = listen.parse().unwrap();
    let _node = start_node(
        &home,
        &listen,
        &[
            ("BLYAN_API_RATE_LIMIT_PER_S", "5"),
            ("BLYAN_API_RATE_LIMIT_BURST", "10"),
        ],
    );
    common::wait_for_ok(addr, "/health", Duration::from_secs(30), "node /health");
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(common::http(addr, "GET", "/status", b"").unwrap().status);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        limited >= 20,
        "40 requests at once with a burst of 10: {statuses:?}"
    );
    let limited_body = (0..100)
        .map(|_| common::http(addr, "GET", "/status", b"").unwrap())
        .find(|answer| answer.status == 429)
        .map(|answer| answer.body)
        .expect("a 429 within 100 requests");
    assert!(limited_body.contains("rate_limited"), "{limited_body}");
    // The bucket refills: after a second, requests pass again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        common::http(addr, "GET", "/status", b"").unwrap().status,
        200
    );
    let metrics = common::http(addr, "GET", "/metrics", b"").unwrap();
    assert!(
        metrics
            .body
            .contains("blyan_refused_inputs_total{source=\"api\",reason=\"rate_limited\"}"),
        "{}",
        metrics.body
    );
}

#[test]
fn https_on_its_own_port_leaves_the_plain_api_for_loopback_admin() {
    let (_dir, home, ca) = setup();
    let ca_dir = ca.to_str().unwrap();
    certs(&[
        "issue",
        "--dir",
        ca_dir,
        "--name",
        "node0",
        "--san",
        "127.0.0.1",
    ]);
    let tls_listen = format!("127.0.0.1:{}", common::free_port());
    let mut config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    config.push_str(&tls_section(&ca, "node0", 60));
    config.push_str(&format!("listen = {tls_listen:?}\n"));
    std::fs::write(home.join("config.toml"), config).unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let plain: SocketAddr = listen.parse().unwrap();
    let secure: SocketAddr = tls_listen.parse().unwrap();
    let _node = start_node(&home, &listen, &[]);
    let anonymous = client_config(&ca, None);
    wait_https(secure, &anonymous);
    common::wait_for_ok(plain, "/health", Duration::from_secs(30), "plain /health");
    // Both serve the same API.
    assert_eq!(
        https(secure, &anonymous, "GET", "/status").unwrap().status,
        200
    );
    assert_eq!(
        common::http(plain, "GET", "/status", b"").unwrap().status,
        200
    );
    // Admin: a loopback client over plain HTTP is admitted, HTTPS still wants a certificate.
    let local = common::http(plain, "POST", "/admin/reload", b"").unwrap();
    assert_eq!(local.status, 200, "{}", local.body);
    let anonymous_admin = https(secure, &anonymous, "POST", "/admin/reload").unwrap();
    assert_eq!(anonymous_admin.status, 403, "{}", anonymous_admin.body);
}

#[test]
fn bad_inputs_are_refused_with_a_clear_error_and_counted() {
    use blyan_node::app::Tx;
    let (_dir, home, _ca) = setup();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let addr: SocketAddr = listen.parse().unwrap();
    let _node = start_node(&home, &listen, &[]);
    common::wait_for_ok(addr, "/health", Duration::from_secs(30), "node /health");

    // Deeply nested JSON (100,000 levels): a clear 400, no stack overflow, whether the nesting
    // is where a value is expected or in a field the node ignores.
    let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!("{{\"tx\": {}}}", deep(""));
    let answer = common::http(addr, "POST", "/txs", body.as_bytes()).unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains("bad_request") && answer.body.contains("invalid type"),
        "{}",
        answer.body
    );
    let body = format!("{{\"pad\": {}, \"tx\": \"00\"}}", deep("1"));
    let answer = common::http(addr, "POST", "/txs", body.as_bytes()).unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        common::http(addr, "GET", "/health", b"").unwrap().status,
        200
    );
    // Oversized: 413 before the handler.
    let huge = vec![b' '; 2 << 20];
    assert_eq!(
        common::http(addr, "POST", "/txs", &huge).unwrap().status,
        413
    );
    // A malformed encoding and an invalid signature.
    let garbage = common::http(addr, "POST", "/txs", br#"{"tx": "00ff"}"#).unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.body);
    assert!(garbage.body.contains("malformed"), "{}", garbage.body);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut tx = Tx::transfer("blyan-devnet", &key, [9; 32], 1, 1, 0);
    tx.signature[0] ^= 1;
    let body = format!("{{\"tx\": \"{}\"}}", hex::encode(tx.encode()));
    let forged = common::http(addr, "POST", "/txs", body.as_bytes()).unwrap();
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(forged.body.contains("bad_signature"), "{}", forged.body);

    let metrics = common::http(addr, "GET", "/metrics", b"").unwrap().body;
    for (reason, count) in [
        ("bad_request", 1),
        ("payload_too_large", 1),
        ("malformed", 2),
        ("bad_signature", 1),
    ] {
        let line =
            format!("blyan_refused_inputs_total{{source=\"api\",reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }
}

#[test]
fn a_rotated_node_key_is_announced_with_a_statement_signed_by_the_validator() {
    let (_dir, home, _ca) = setup();
    let out = ok(
        common::node(&["rotate-node-key", "--home", home.to_str().unwrap()]),
        "rotate-node-key",
    );
    let new_id = out
        .lines()
        .find_map(|line| line.trim().strip_prefix("new peer id: "))
        .expect("the new peer id is printed")
        .to_string();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let addr: SocketAddr = listen.parse().unwrap();
    let _node = start_node(&home, &listen, &[]);
    common::wait_for_ok(addr, "/health", Duration::from_secs(30), "node /health");
    let identity: serde_json::Value =
        serde_json::from_str(&common::http(addr, "GET", "/identity", b"").unwrap().body).unwrap();
    assert_eq!(identity["peer_id"], new_id.as_str(), "{identity}");
    assert_eq!(
        identity["rotation"]["new_peer_id"],
        new_id.as_str(),
        "{identity}"
    );
    assert_eq!(identity["rotation_verified"], true, "{identity}");
    // The validator key is the one the chain knows: the node still validates alone.
    let status: serde_json::Value =
        serde_json::from_str(&common::http(addr, "GET", "/status", b"").unwrap().body).unwrap();
    assert_eq!(status["validator"], true, "{status}");
}
