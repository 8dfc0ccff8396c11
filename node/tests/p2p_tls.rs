//! The P2P listener speaks TLS 1.3 only, with libp2p's certificate rules: a client presenting
//! a certificate that is not bound to a peer id is refused, and a server whose certificate is
//! bound to another peer id than the one dialled is refused by the client side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blyan_node::config::P2pConfig;
use blyan_node::p2p::{self, probe};
use libp2p::identity::Keypair;

async fn listener() -> (
    p2p::P2pHandle,
    SocketAddr,
    tokio::sync::mpsc::Receiver<p2p::P2pEvent>,
) {
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        ..P2pConfig::default()
    };
    let (handle, events, bound) = p2p::spawn(Keypair::generate_ed25519(), &config, "tls-test")
        .await
        .expect("swarm starts");
    let address = p2p::bench::socket_of(&bound[0]).expect("a /ip4/../tcp/.. address");
    (handle, address, events)
}

#[tokio::test]
async fn negotiated_protocol_is_tls_1_3_with_the_listeners_peer_id() {
    let (handle, address, _events) = listener().await;
    let client = Keypair::generate_ed25519();
    let config = probe::client_config(&client, Some(handle.local_peer_id));
    let (stream, peer, _) = probe::dial_tls(address, config).await.expect("handshake");
    assert_eq!(peer, handle.local_peer_id);
    assert_eq!(
        probe::protocol_version(&stream),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    probe::negotiate_yamux(stream)
        .await
        .expect("the server accepted our certificate and negotiates yamux");
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_client_certificate_not_bound_to_a_peer_id_is_refused() {
    let (handle, address, _events) = listener().await;
    // A plain self-signed certificate: no libp2p extension binding it to a peer id.
    let generated = rcgen::generate_simple_self_signed(vec!["stranger".into()]).expect("rcgen");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified =
        rustls::sign::CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider)
            .expect("certified key");
    let mut config = probe::client_config(&Keypair::generate_ed25519(), Some(handle.local_peer_id));
    config.client_auth_cert_resolver = Arc::new(Fixed(Arc::new(certified)));
    // With TLS 1.3 the client may finish before the server checks its certificate; either the
    // handshake fails or the server drops the session before any protocol is negotiated.
    let refused = match probe::dial_tls(address, config).await {
        Err(_) => true,
        Ok((stream, _, _)) => {
            tokio::time::timeout(Duration::from_secs(10), probe::negotiate_yamux(stream))
                .await
                .expect("the server answers within 10 s")
                .is_err()
        }
    };
    assert!(
        refused,
        "the server accepted a certificate not bound to a peer id"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peers = handle.info.lock().unwrap().peers.len();
    assert_eq!(
        peers, 0,
        "no peer may be registered from a refused handshake"
    );
}

#[tokio::test]
async fn a_server_bound_to_another_peer_id_is_refused() {
    let (_handle, address, _events) = listener().await;
    let expected = Keypair::generate_ed25519().public().to_peer_id();
    let config = probe::client_config(&Keypair::generate_ed25519(), Some(expected));
    let Err(error) = probe::dial_tls(address, config).await else {
        panic!("the handshake must fail when the certificate's peer id is not the dialled one");
    };
    assert!(matches!(error, probe::ProbeError::Tls(_)), "{error}");
}

/// Two swarms with `config` (listen address and switches) connect; the second dials the first.
async fn connects(listen: &str, quic: bool, noise: bool) -> bool {
    let first_key = Keypair::generate_ed25519();
    let first_config = P2pConfig {
        listen: vec![listen.into()],
        quic,
        noise,
        ..P2pConfig::default()
    };
    let (_first, _first_events, bound) = p2p::spawn(first_key.clone(), &first_config, "switches")
        .await
        .expect("first swarm");
    let second_config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: vec![format!(
            "{}/p2p/{}",
            bound[0],
            first_key.public().to_peer_id()
        )],
        static_mode: true,
        quic,
        noise,
        ..P2pConfig::default()
    };
    let (_second, mut events, _) =
        p2p::spawn(Keypair::generate_ed25519(), &second_config, "switches")
            .await
            .expect("second swarm");
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            if matches!(event, p2p::P2pEvent::Connected(_)) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn quic_and_noise_switches_connect() {
    assert!(
        connects("/ip4/127.0.0.1/udp/0/quic-v1", true, false).await,
        "QUIC"
    );
    assert!(connects("/ip4/127.0.0.1/tcp/0", false, true).await, "Noise");
    assert!(connects("/ip4/127.0.0.1/tcp/0", false, false).await, "TLS");
}
