//! Serving the API: plaintext or HTTPS (rustls, TLS 1.3 only), one task per connection, each
//! request carrying what is known of its client ([`Client`]: address, TLS, verified client
//! certificate) for the admin check.
//!
//! The TLS material (certificate, key, client CA, CRL) is reloaded without a restart: every
//! second the files are checked and, when one changed, a new `rustls::ServerConfig` takes over
//! for new connections (open ones keep theirs). A node that holds the CA key renews its own
//! certificate `renew_before_s` before it expires.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

use crate::config::ApiTlsConfig;
use crate::metrics::{refuse, RefusedInputs};
use crate::pki::{self, CertFacts};

/// Why the TLS material could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field} {path}: {reason}")]
    File {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("api.tls: {0}")]
    Config(String),
}

/// What the API knows of the client of one connection.
#[derive(Clone, Debug)]
pub struct Client {
    pub address: SocketAddr,
    pub tls: bool,
    /// The client certificate, verified against `api.tls.client_ca_file` during the handshake.
    pub certificate: Option<CertFacts>,
}

/// Most connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request headers (and finish the TLS handshake) within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The API's TLS state, shared by the accept loop, the admin check and the renewal task.
pub struct ApiTls {
    config: ApiTlsConfig,
    server: RwLock<Arc<rustls::ServerConfig>>,
    revoked: RwLock<HashSet<String>>,
    facts: RwLock<CertFacts>,
    stamps: Mutex<Vec<Stamp>>,
    pub reloads: AtomicU64,
    pub renewals: AtomicU64,
}

struct Loaded {
    server: rustls::ServerConfig,
    facts: CertFacts,
    revoked: HashSet<String>,
}

fn file_error(field: &'static str, path: &str, reason: impl ToString) -> TlsError {
    TlsError::File {
        field,
        path: PathBuf::from(path),
        reason: reason.to_string(),
    }
}

fn load(config: &ApiTlsConfig) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .map_err(|e| file_error("api.tls.cert_file", &config.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("api.tls.cert_file", &config.cert_file, e))?;
    let Some(leaf) = chain.first() else {
        return Err(file_error(
            "api.tls.cert_file",
            &config.cert_file,
            "holds no certificate",
        ));
    };
    let facts = pki::facts_of_der(leaf)
        .map_err(|e| file_error("api.tls.cert_file", &config.cert_file, e))?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| file_error("api.tls.key_file", &config.key_file, e))?;
    let mut revoked = HashSet::new();
    let verifier = if config.client_ca_file.is_empty() {
        WebPkiClientVerifier::no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&config.client_ca_file)
            .map_err(|e| file_error("api.tls.client_ca_file", &config.client_ca_file, e))?
        {
            let cert =
                cert.map_err(|e| file_error("api.tls.client_ca_file", &config.client_ca_file, e))?;
            roots
                .add(cert)
                .map_err(|e| file_error("api.tls.client_ca_file", &config.client_ca_file, e))?;
        }
        let mut crls = Vec::new();
        if !config.crl_file.is_empty() {
            for crl in CertificateRevocationListDer::pem_file_iter(&config.crl_file)
                .map_err(|e| file_error("api.tls.crl_file", &config.crl_file, e))?
            {
                let crl = crl.map_err(|e| file_error("api.tls.crl_file", &config.crl_file, e))?;
                let (_, parsed) = x509_parser::parse_x509_crl(&crl)
                    .map_err(|e| file_error("api.tls.crl_file", &config.crl_file, e))?;
                for entry in parsed.iter_revoked_certificates() {
                    revoked.insert(hex::encode(entry.raw_serial()));
                }
                crls.push(crl);
            }
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            // Public endpoints need no client certificate; admin ones check for one.
            .allow_unauthenticated()
            .build()
            .map_err(|e| file_error("api.tls.client_ca_file", &config.client_ca_file, e))?
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            file_error(
                "api.tls.key_file",
                &config.key_file,
                format!("does not fit the certificate: {e}"),
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        server,
        facts,
        revoked,
    })
}

impl ApiTls {
    /// Loads the material named by `config` (paths already resolved).
    pub fn new(config: ApiTlsConfig) -> Result<Arc<ApiTls>, TlsError> {
        let loaded = load(&config)?;
        let tls = ApiTls {
            stamps: Mutex::new(Vec::new()),
            config,
            server: RwLock::new(Arc::new(loaded.server)),
            revoked: RwLock::new(loaded.revoked),
            facts: RwLock::new(loaded.facts),
            reloads: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
        };
        *tls.stamps.lock().expect("stamps lock") = tls.current_stamps();
        Ok(Arc::new(tls))
    }

    fn files(&self) -> Vec<&str> {
        let c = &self.config;
        [&c.cert_file, &c.key_file, &c.client_ca_file, &c.crl_file]
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(String::as_str)
            .collect()
    }

    fn current_stamps(&self) -> Vec<Stamp> {
        self.files()
            .into_iter()
            .map(|p| stamp(Path::new(p)))
            .collect()
    }

    /// The server configuration for the next connection.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.read().expect("tls lock").clone()
    }

    /// The serving certificate's facts.
    pub fn certificate(&self) -> CertFacts {
        self.facts.read().expect("tls lock").clone()
    }

    /// Whether the CRL in force lists this serial (hex).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.read().expect("tls lock").contains(serial)
    }

    /// Reloads every file now. On failure the material in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = self.current_stamps();
        let loaded = load(&self.config)?;
        *self.server.write().expect("tls lock") = Arc::new(loaded.server);
        *self.revoked.write().expect("tls lock") = loaded.revoked;
        *self.facts.write().expect("tls lock") = loaded.facts;
        *self.stamps.lock().expect("stamps lock") = stamps;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One maintenance round: renew the certificate when it is due (and the CA key is here),
    /// then reload when a file changed.
    pub fn maintain_once(&self) {
        if !self.config.ca_key_file.is_empty() {
            let facts = self.certificate();
            let left = facts.not_after_unix - pki::unix_now();
            if left <= self.config.renew_before_s as i64 {
                match pki::renew(
                    Path::new(&self.config.cert_file),
                    Path::new(&self.config.key_file),
                    Path::new(&self.config.ca_key_file),
                ) {
                    Ok(new) => {
                        self.renewals.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            old_serial = %facts.serial,
                            serial = %new.serial,
                            expires_in_s = new.not_after_unix - pki::unix_now(),
                            "API certificate renewed"
                        );
                    }
                    Err(error) => {
                        tracing::error!(%error, seconds_left = left, "API certificate renewal failed; retrying in a second")
                    }
                }
            }
        }
        let changed = *self.stamps.lock().expect("stamps lock") != self.current_stamps();
        if changed {
            match self.reload() {
                Ok(()) => {
                    tracing::info!(serial = %self.certificate().serial, "API TLS material reloaded")
                }
                Err(error) => {
                    // Report once per change, keep serving with what is in force.
                    *self.stamps.lock().expect("stamps lock") = self.current_stamps();
                    tracing::error!(%error, "API TLS material not reloaded; the certificate in force stays")
                }
            }
        }
    }

    /// Runs [`ApiTls::maintain_once`] every second, for ever.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let this = self.clone();
            // File and signing work off the async threads.
            let _ = tokio::task::spawn_blocking(move || this.maintain_once()).await;
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves: HTTPS when `tls` is given, else plain
/// HTTP. Each request carries a [`Client`] extension.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ApiTls>>,
    refused: RefusedInputs,
    stop: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(%error, "api accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let client = Client {
                        address,
                        tls: false,
                        certificate: None,
                    };
                    serve_connection(stream, router, client).await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
                    let stream = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            let text = error.to_string();
                            let reason = if text.contains("Revoked") || text.contains("revoked") {
                                "client_certificate_revoked"
                            } else if text.contains("Expired") || text.contains("expired") {
                                "client_certificate_expired"
                            } else if text.contains("certificate") || text.contains("Certificate") {
                                "client_certificate_invalid"
                            } else {
                                "tls_handshake"
                            };
                            refuse(&refused, "connection", reason);
                            tracing::debug!(%address, %error, reason, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            refuse(&refused, "connection", "tls_handshake_timeout");
                            return;
                        }
                    };
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| pki::facts_of_der(leaf).ok());
                    let client = Client {
                        address,
                        tls: true,
                        certificate,
                    };
                    serve_connection(stream, router, client).await
                }
            }
        });
    }
}

async fn serve_connection<S>(stream: S, router: Router, client: Client)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(client.clone());
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(error) = result {
        tracing::trace!(%error, "api connection ended with an error");
    }
}
