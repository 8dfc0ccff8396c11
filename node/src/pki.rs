//! A small certificate authority for the node API's TLS: `blyan-node certs init-ca | issue |
//! revoke | list`, and the automatic renewal a node with the CA key does before its
//! certificate expires.
//!
//! A CA directory holds `ca.crt`, `ca.key` (mode 0600), `ca.crl` (re-signed on every
//! revocation) and `index.json` (every certificate issued: name, serial, kind, expiry,
//! revoked). Issued certificates are `<name>.crt` and `<name>.key` beside them unless an output
//! directory is given. Every file is written to a temporary name and renamed, so a crash leaves
//! the old file or the new one, never half of one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};

/// Why a certificate operation failed; each names the file or the value.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// A node's API server certificate (needs subject alternative names).
    Server,
    /// A client certificate for the admin endpoints.
    Client,
}

/// One issued certificate, as kept in `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub name: String,
    /// Hex, big-endian.
    pub serial: String,
    pub kind: CertKind,
    pub not_after_unix: u64,
    #[serde(default)]
    pub revoked: bool,
}

/// `index.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Index {
    /// The CA's common name (the CA certificate is re-derived from it and the key to sign).
    pub ca_name: String,
    pub crl_number: u64,
    pub issued: Vec<Issued>,
}

/// The CA directory's files.
pub struct CaDir {
    pub dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> CaDir {
        CaDir { dir: dir.into() }
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.dir.join("ca.crl")
    }
    pub fn index(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub fn read_index(&self) -> Result<Index, PkiError> {
        let path = self.index();
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|error| PkiError::Invalid {
            path,
            reason: error.to_string(),
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), PkiError> {
        let text = serde_json::to_string_pretty(index).expect("the index serialises");
        write_atomic(&self.index(), text.as_bytes(), false)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename; `secret` makes it 0600.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    temp.write_all(bytes).map_err(io(path))?;
    temp.as_file().sync_all().map_err(io(path))?;
    temp.persist(path).map_err(|error| PkiError::Io {
        path: path.to_path_buf(),
        source: error.error,
    })?;
    Ok(())
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Certificates start a minute in the past, so a peer whose clock is a little behind accepts
/// them at once.
const BACKDATE: Duration = Duration::from_secs(60);

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

fn ca_params(name: &str, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Blyan devnet");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.not_before = now() - BACKDATE;
    params.not_after = now() + lifetime;
    params
}

/// What `init-ca` made.
#[derive(Debug)]
pub struct CaCreated {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: PathBuf,
}

/// Creates a CA in `dir` (refused when one is there, unless `force`).
pub fn init_ca(
    dir: &Path,
    name: &str,
    lifetime: Duration,
    force: bool,
) -> Result<CaCreated, PkiError> {
    let ca = CaDir::new(dir);
    if ca.key().exists() && !force {
        return Err(PkiError::Usage(format!(
            "{} exists: a CA is already there (pass --force to replace it; every certificate it issued stops verifying)",
            ca.key().display()
        )));
    }
    if name.trim().is_empty() {
        return Err(PkiError::Usage("--name must not be empty".into()));
    }
    let key = KeyPair::generate()?;
    let cert = ca_params(name, lifetime).self_signed(&key)?;
    write_atomic(&ca.key(), key.serialize_pem().as_bytes(), true)?;
    write_atomic(&ca.cert(), cert.pem().as_bytes(), false)?;
    let index = Index {
        ca_name: name.to_string(),
        crl_number: 0,
        issued: Vec::new(),
    };
    write_crl(&ca, &index, &cert, &key)?;
    ca.write_index(&Index {
        crl_number: 1,
        ..index
    })?;
    Ok(CaCreated {
        cert: ca.cert(),
        key: ca.key(),
        crl: ca.crl(),
    })
}

/// The CA certificate object rcgen signs with: the same name and key as `ca.crt` (what a
/// verifier checks), re-derived rather than parsed.
fn signer(ca: &CaDir, index: &Index) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
    let key_path = ca.key();
    let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let key = KeyPair::from_pem(&pem).map_err(|error| PkiError::Invalid {
        path: key_path.clone(),
        reason: format!("not a PEM private key: {error}"),
    })?;
    let cert = ca_params(&index.ca_name, Duration::from_secs(3600)).self_signed(&key)?;
    Ok((cert, key))
}

fn write_crl(
    ca: &CaDir,
    index: &Index,
    cert: &rcgen::Certificate,
    key: &KeyPair,
) -> Result<(), PkiError> {
    let revoked = index
        .issued
        .iter()
        .filter(|issued| issued.revoked)
        .map(|issued| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex::decode(&issued.serial).map_err(
                    |_| PkiError::Invalid {
                        path: ca.index(),
                        reason: format!(
                            "serial {:?} of {:?} is not hex",
                            issued.serial, issued.name
                        ),
                    },
                )?),
                revocation_time: now(),
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let crl = CertificateRevocationListParams {
        this_update: now() - BACKDATE,
        next_update: now() + Duration::from_secs(365 * 24 * 3600),
        crl_number: SerialNumber::from(index.crl_number + 1),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(cert, key)?;
    write_atomic(&ca.crl(), crl.pem()?.as_bytes(), false)
}

/// What to issue.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub name: String,
    pub kind: CertKind,
    /// DNS names and IP addresses (server certificates; `localhost` and 127.0.0.1 by default).
    pub sans: Vec<String>,
    pub lifetime: Duration,
    /// Where `<name>.crt` and `<name>.key` go (default: the CA directory).
    pub out_dir: Option<PathBuf>,
}

/// What `issue` made.
#[derive(Debug)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: String,
    pub not_after_unix: u64,
}

fn check_file_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PkiError::Usage(format!(
            "--name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

fn leaf_params(request: &IssueRequest) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, request.name.as_str());
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial());
    params.not_before = now() - BACKDATE;
    params.not_after = now() + request.lifetime;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    match request.kind {
        CertKind::Server => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let sans = if request.sans.is_empty() {
                vec!["localhost".to_string(), "127.0.0.1".to_string()]
            } else {
                request.sans.clone()
            };
            for san in sans {
                let entry = match san.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(san.clone().try_into().map_err(|_| {
                        PkiError::Usage(format!(
                            "--san {san:?} is neither an IP address nor a DNS name"
                        ))
                    })?),
                };
                params.subject_alt_names.push(entry);
            }
        }
        CertKind::Client => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    Ok(params)
}

/// Issues a certificate signed by the CA in `ca_dir` and records it in the index.
pub fn issue(ca_dir: &Path, request: &IssueRequest) -> Result<IssuedFiles, PkiError> {
    check_file_name(&request.name)?;
    if request.lifetime < Duration::from_secs(1) {
        return Err(PkiError::Usage("--valid-for must be at least 1s".into()));
    }
    let out = request
        .out_dir
        .clone()
        .unwrap_or_else(|| ca_dir.to_path_buf());
    let cert_path = out.join(format!("{}.crt", request.name));
    let key_path = out.join(format!("{}.key", request.name));
    sign_into(ca_dir, request, &cert_path, &key_path)
}

/// Signs a new key pair's certificate for `request`, writes the key then the certificate
/// (a crash between the two leaves a certificate whose key does not fit, which a reload
/// refuses, keeping the pair in memory, and the next try repairs), and records it.
fn sign_into(
    ca_dir: &Path,
    request: &IssueRequest,
    cert_path: &Path,
    key_path: &Path,
) -> Result<IssuedFiles, PkiError> {
    let ca = CaDir::new(ca_dir);
    let mut index = ca.read_index()?;
    let (ca_cert, ca_key) = signer(&ca, &index)?;
    let params = leaf_params(request)?;
    let serial = hex::encode(params.serial_number.as_ref().expect("set above").to_bytes());
    let not_after_unix = params.not_after.unix_timestamp().max(0) as u64;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    write_atomic(key_path, key.serialize_pem().as_bytes(), true)?;
    write_atomic(cert_path, cert.pem().as_bytes(), false)?;
    index.issued.push(Issued {
        name: request.name.clone(),
        serial: serial.clone(),
        kind: request.kind,
        not_after_unix,
        revoked: false,
    });
    ca.write_index(&index)?;
    Ok(IssuedFiles {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        serial,
        not_after_unix,
    })
}

/// Revokes every certificate issued under `name` (or the one with serial `name`), re-signs
/// `ca.crl`, and returns the serials revoked.
pub fn revoke(ca_dir: &Path, name: &str) -> Result<Vec<String>, PkiError> {
    let ca = CaDir::new(ca_dir);
    let mut index = ca.read_index()?;
    let wanted = name.to_ascii_lowercase();
    let mut revoked = Vec::new();
    for issued in &mut index.issued {
        if (issued.name == name || issued.serial == wanted) && !issued.revoked {
            issued.revoked = true;
            revoked.push(issued.serial.clone());
        }
    }
    if revoked.is_empty() {
        let known = index
            .issued
            .iter()
            .any(|i| i.name == name || i.serial == wanted);
        return Err(PkiError::Usage(if known {
            format!("{name:?} is already revoked")
        } else {
            format!(
                "no certificate named or numbered {name:?} in {}",
                ca.index().display()
            )
        }));
    }
    let (cert, key) = signer(&ca, &index)?;
    write_crl(&ca, &index, &cert, &key)?;
    index.crl_number += 1;
    ca.write_index(&index)?;
    Ok(revoked)
}

/// The facts of a PEM certificate that renewal and the admin check need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    pub serial: String,
    pub common_name: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub sans: Vec<String>,
    pub client: bool,
}

/// Reads the facts of a DER certificate.
pub fn facts_of_der(der: &[u8]) -> Result<CertFacts, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let mut sans = Vec::new();
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        sans.push(std::net::Ipv4Addr::from(octets).to_string());
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        sans.push(std::net::Ipv6Addr::from(octets).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let client = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
    Ok(CertFacts {
        serial: hex::encode(cert.raw_serial()),
        common_name,
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        sans,
        client,
    })
}

/// Reads the facts of the first certificate in a PEM file.
pub fn facts_of_pem_file(path: &Path) -> Result<CertFacts, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).map_err(|error| {
        PkiError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not a PEM certificate: {error}"),
        }
    })?;
    facts_of_der(&der).map_err(|reason| PkiError::Invalid {
        path: path.to_path_buf(),
        reason,
    })
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Renews the certificate at `cert_path` / `key_path` with the CA (`ca_cert` beside `ca_key`):
/// same name, names and lifetime, a new key and serial. Returns the new facts.
pub fn renew(cert_path: &Path, key_path: &Path, ca_key: &Path) -> Result<CertFacts, PkiError> {
    let old = facts_of_pem_file(cert_path)?;
    let ca_dir = ca_key.parent().unwrap_or(Path::new("."));
    let lifetime = (old.not_after_unix - old.not_before_unix - BACKDATE.as_secs() as i64).max(1);
    let request = IssueRequest {
        name: old.common_name.clone(),
        kind: if old.client {
            CertKind::Client
        } else {
            CertKind::Server
        },
        sans: old.sans.clone(),
        lifetime: Duration::from_secs(lifetime as u64),
        out_dir: None,
    };
    sign_into(ca_dir, &request, cert_path, key_path)?;
    facts_of_pem_file(cert_path)
}

/// Parses a lifetime: `90s`, `15m`, `12h`, `30d` (a bare number is days).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "d"),
    };
    let value: u64 = number.parse().map_err(|_| {
        format!("{text:?}: expected a number and a unit, like 90s, 15m, 12h or 30d")
    })?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        "d" => value * 86_400,
        other => return Err(format!("{text:?}: unknown unit {other:?} (s, m, h or d)")),
    };
    if seconds == 0 || seconds > 20 * 365 * 86_400 {
        return Err(format!("{text:?}: must be between 1s and 20 years"));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_revoke_and_renew_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        init_ca(dir.path(), "test CA", Duration::from_secs(86_400), false).expect("init");
        assert!(init_ca(dir.path(), "again", Duration::from_secs(60), false).is_err());
        let server = issue(
            dir.path(),
            &IssueRequest {
                name: "node0".into(),
                kind: CertKind::Server,
                sans: vec!["node0.local".into(), "10.0.0.2".into()],
                lifetime: Duration::from_secs(600),
                out_dir: None,
            },
        )
        .expect("issue");
        let facts = facts_of_pem_file(&server.cert).expect("facts");
        assert_eq!(facts.serial, server.serial);
        assert_eq!(facts.common_name, "node0");
        assert_eq!(
            facts.sans,
            vec!["node0.local".to_string(), "10.0.0.2".to_string()]
        );
        assert!(!facts.client);
        assert!((facts.not_after_unix - unix_now() - 600).abs() <= 2);

        let revoked = revoke(dir.path(), "node0").expect("revoke");
        assert_eq!(revoked, vec![server.serial.clone()]);
        assert!(revoke(dir.path(), "node0").is_err(), "twice");
        assert!(revoke(dir.path(), "nobody").is_err());
        let index = CaDir::new(dir.path()).read_index().expect("index");
        assert_eq!(index.crl_number, 2);

        let renewed =
            renew(&server.cert, &server.key, &CaDir::new(dir.path()).key()).expect("renew");
        assert_ne!(renewed.serial, facts.serial);
        assert_eq!(renewed.sans, facts.sans);
        assert_eq!(
            renewed.not_after_unix - renewed.not_before_unix,
            facts.not_after_unix - facts.not_before_unix
        );
    }

    #[test]
    fn lifetimes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_lifetime("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_lifetime("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_lifetime("30"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_lifetime("0s").is_err());
        assert!(parse_lifetime("5y").is_err());
        assert!(parse_lifetime("soon").is_err());
    }

    #[test]
    fn names_that_would_escape_the_directory_are_refused() {
        for bad in ["../x", "", ".hidden", "a/b"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        check_file_name("node-0.admin").expect("ok");
    }
}
