//! A bare client of the node's P2P handshake: TCP, multistream-select, TLS 1.3 with libp2p's
//! certificate rules, then yamux negotiation. Used to measure connection and handshake times
//! (`blyan-node bench-p2p`) and by the tests that check what the node accepts and refuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::client::TlsStream;
use libp2p::identity::Keypair;
use libp2p::PeerId;
use multistream_select::{dialer_select_proto, Negotiated, Version};

/// The TCP stream type the probe speaks over.
pub type Tcp = libp2p::tcp::tokio::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("tcp connect: {0}")]
    Connect(std::io::Error),
    #[error("multistream-select: {0}")]
    Negotiation(String),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("certificate: {0}")]
    Certificate(String),
}

/// How long each stage took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub tcp: Duration,
    /// multistream-select of `/tls/1.0.0` plus the TLS 1.3 handshake.
    pub tls: Duration,
}

/// The libp2p TLS client configuration for `keypair`, expecting `remote` when given.
pub fn client_config(keypair: &Keypair, remote: Option<PeerId>) -> rustls::ClientConfig {
    libp2p::tls::make_client_config(keypair, remote).expect("an ed25519 key makes a certificate")
}

/// Connects to `address` and runs the TLS handshake with `config`; returns the stream, the
/// peer id in the server's certificate, and the timings.
pub async fn dial_tls(
    address: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<(TlsStream<Negotiated<Tcp>>, PeerId, Timings), ProbeError> {
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(ProbeError::Connect)?;
    tcp.set_nodelay(true).map_err(ProbeError::Connect)?;
    let connected = Instant::now();
    let (_, negotiated) = dialer_select_proto(
        libp2p::tcp::tokio::TcpStream(tcp),
        ["/tls/1.0.0"],
        Version::V1,
    )
    .await
    .map_err(|error| ProbeError::Negotiation(error.to_string()))?;
    // As libp2p-tls does: no server name (SNI off), the certificate carries the identity.
    let name = rustls::pki_types::ServerName::IpAddress(rustls::pki_types::IpAddr::from(
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    ));
    let stream = futures_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, negotiated)
        .await
        .map_err(ProbeError::Tls)?;
    let done = Instant::now();
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| ProbeError::Certificate("the server sent no certificate".into()))?;
    let peer = libp2p::tls::certificate::parse(certificate)
        .map_err(|error| ProbeError::Certificate(error.to_string()))?
        .peer_id();
    Ok((
        stream,
        peer,
        Timings {
            tcp: connected - start,
            tls: done - connected,
        },
    ))
}

/// The TLS version negotiated on a probe stream.
pub fn protocol_version(stream: &TlsStream<Negotiated<Tcp>>) -> Option<rustls::ProtocolVersion> {
    stream.get_ref().1.protocol_version()
}

/// Negotiates yamux over an established TLS stream: succeeds only if the server accepted the
/// TLS session (a server that refused our certificate has closed it).
pub async fn negotiate_yamux(stream: TlsStream<Negotiated<Tcp>>) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    // Version::V1 waits for the listener's confirmation of the protocol.
    dialer_select_proto(stream, ["/yamux/1.0.0"], Version::V1)
        .await
        .map_err(|error| ProbeError::Negotiation(error.to_string()))?;
    Ok(start.elapsed())
}
